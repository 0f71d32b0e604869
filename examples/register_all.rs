//! Embedding ClipQL in your own DataFusion application.
//!
//! A platform team that already runs DataFusion needs one call,
//! `datafusion_clip::register_all(&ctx)`, to get the `clip_*` functions, the
//! `IMAGE` table format and the `clip.*` options in its own `SessionContext`.
//!
//! Run it from the repository root (CI does):
//!
//! ```text
//! cargo run -p datafusion-clip --example register_all
//! ```
//!
//! It classifies the committed fixture photos with the committed fixture
//! model and checks the answers against what HF transformers said.

use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::error::Result;
use datafusion::prelude::*;

#[tokio::main]
async fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("tests/fixtures/model");
    let photos = root.join("tests/fixtures/photos");

    // Your own session: any config, any other tables and functions.
    let config = datafusion_clip::session_config().set_str("clip.model", &model.to_string_lossy());
    let ctx = SessionContext::new_with_config(config);
    datafusion_clip::register_all(&ctx)?;

    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{}/'",
        photos.display()
    ))
    .await?;
    let labels = "['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a photo of an astronaut', \
                  'a cup of coffee', 'a black and white photo', 'a page of text', 'a photo of coins', 'a photo of a horse']";
    let df = ctx
        .sql(&format!(
            "SELECT name, clip_classify(image, {labels}) AS label FROM images \
             WHERE name IN ('chelsea.jpg', 'astronaut.png', 'page.bmp') ORDER BY name"
        ))
        .await?;
    let batches = df.collect().await?;
    datafusion::arrow::util::pretty::print_batches(&batches)?;

    // Check against the transformers reference the fixtures were made with.
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("tests/fixtures/golden/golden.json"),
    )?)
    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let expected = |file: &str| -> String {
        golden["images"]
            .as_array()
            .and_then(|images| images.iter().find(|i| i["file"] == file))
            .and_then(|i| i["top_label"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut checked = 0;
    for batch in &batches {
        let names = batch.column(0).as_string::<i32>();
        let labels = batch.column(1).as_string::<i32>();
        for row in 0..batch.num_rows() {
            let (name, label) = (names.value(row), labels.value(row));
            assert_eq!(label, expected(name), "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "expected three classified photos");
    println!("register_all example: {checked} labels agree with HF transformers");
    Ok(())
}
