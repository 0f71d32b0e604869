//! CLIP zero-shot image classification for Apache DataFusion.
//!
//! One call registers everything:
//!
//! ```
//! use datafusion::prelude::*;
//!
//! # #[tokio::main]
//! # async fn main() -> datafusion::error::Result<()> {
//! # let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
//! let ctx = SessionContext::new_with_config(datafusion_clip::session_config());
//! datafusion_clip::register_all(&ctx)?;
//! ctx.sql(&format!("SET clip.model = '{root}/model'")).await?;
//! ctx.sql(&format!("CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{root}/photos/'")).await?;
//! let df = ctx
//!     .sql("SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label FROM images")
//!     .await?;
//! assert_eq!(df.collect().await?.iter().map(|b| b.num_rows()).sum::<usize>(), 14);
//! # Ok(()) }
//! ```
//!
//! What is registered:
//! - the scalar functions `clip_classify`, `clip_scores`, `clip_tags`,
//!   `clip_image_embedding`, `clip_text_embedding`,
//!   `clip_classify_embedding`, `clip_scores_embedding`,
//!   `clip_tags_embedding`, `clip_prompts` (prompt ensembles) and
//!   `clip_image_error`;
//! - the `IMAGE` table format (`CREATE EXTERNAL TABLE ... STORED AS IMAGE`)
//!   and the `read_images` table function;
//! - the `clip.*` options ([`ClipOptions`]);
//! - [`ClipMetricsRule`], which makes `EXPLAIN ANALYZE` show the model's work
//!   (images decoded, decode and inference time, batches, text-tower runs,
//!   cache hits) on a [`ClipMetricsExec`] above each node that calls a
//!   `clip_*` function.
//!
//! Errors are DataFusion's own: `plan_err!` for misuse found at planning time,
//! `exec_err!` for failures while running. Per-image problems are not errors
//! unless `clip.on_error = 'fail'`.

mod exec;
mod functions;
mod options;
mod origin;
mod planning;
mod store;
mod table;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionContext;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::prelude::SessionConfig;

pub use exec::codec::{ClipLogicalCodec, ClipPhysicalCodec};
pub use exec::metrics::{ClipMetricsExec, ClipMetricsRule};
pub use functions::{
    ClipClassify, ClipClassifyEmbedding, ClipImageEmbedding, ClipImageError, ClipPrompts,
    ClipScores, ClipScoresEmbedding, ClipTags, ClipTagsEmbedding, ClipTextEmbedding,
    MAX_LABEL_BYTES, MAX_LABELS, NEED_NO_MODEL, PREFIX, all_functions, is_clip_function,
    needs_model, scores_array, scores_type, show_functions, utf8_list_type, utf8_lists,
};
pub use options::{ClipOptions, OnError};
pub use store::object_stores::{self, ClipObjectStoreRegistry, runtime_env};
pub use table::listing::ImageFile;
pub use table::read::ReadSettings;
pub use table::scan::{ImageScanExec, MAX_BATCH_BYTES};
pub use table::{
    FileKey, IMAGE_EXTENSIONS, ImageTable, ImageTableFactory, READ_ERROR_COLUMN, ReadImages,
    image_schema, parse_location,
};

/// A `SessionConfig` with the `clip.*` options registered, for
/// `SessionContext::new_with_config`. [`register_all`] adds them too, but
/// only a config built with them can be given `clip.*` values up front.
pub fn session_config() -> SessionConfig {
    SessionConfig::new().with_option_extension(ClipOptions::default())
}

/// `RESET clip.<name>`: sets the option back to its default, as `SET` would.
///
/// DataFusion 55's `RESET` knows only `datafusion.*` keys (for `clip.*` it
/// fails with `Could not find config namespace "clip"`). A host that runs
/// statements itself can call this for a `LogicalPlan::Statement(
/// Statement::ResetVariable(..))` whose key starts with `clip.`, as
/// `clipql sql` does.
pub async fn reset_option(ctx: &SessionContext, key: &str) -> Result<()> {
    let value = ClipOptions::default_value(key)?;
    ctx.sql(&format!("SET {key} = '{}'", value.replace('\'', "''")))
        .await?
        .collect()
        .await?;
    Ok(())
}

/// Registers ClipQL's functions, the `IMAGE` table format, `read_images` and
/// the `clip.*` options in `ctx`.
pub fn register_all(ctx: &SessionContext) -> Result<()> {
    let state_ref = ctx.state_ref();
    let mut state = state_ref.write();
    if state
        .config()
        .options()
        .extensions
        .get::<ClipOptions>()
        .is_none()
    {
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(ClipOptions::default());
    }
    for (name, factory) in table::factories() {
        state.table_factories_mut().insert(name, factory);
    }
    if !state
        .physical_optimizers()
        .iter()
        .any(|r| r.name() == ClipMetricsRule.name())
    {
        *state = SessionStateBuilder::new_from_existing(state.clone())
            .with_physical_optimizer_rule(Arc::new(ClipMetricsRule))
            .build();
    }
    let config = state.config().options().clone();
    for udf in all_functions() {
        let udf = udf
            .inner()
            .with_updated_config(&config)
            .map(Arc::new)
            .unwrap_or(udf);
        state.register_udf(udf)?;
    }
    drop(state);
    ctx.register_udtf("read_images", Arc::new(ReadImages));
    Ok(())
}
