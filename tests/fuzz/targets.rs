//! The fuzz targets' bodies: one function per target, run on every input by
//! `cargo xtask fuzz` (`fuzz_targets/*.rs`) and on every committed corpus
//! file by `cargo test` (`tests/fuzz_corpus.rs`), so that each input once
//! found stays a regression test.
//!
//! Paths are relative to `CARGO_MANIFEST_DIR`, which is `tests/fuzz` for
//! the fuzz crate and `crates/datafusion-clip` for the test: both two levels
//! below the repository root.

use std::sync::{Arc, OnceLock};

use clip_runtime::{DecodeLimits, PreprocessConfig, decode_rgb_at_least};
use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, ListArray, StringArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion::scalar::ScalarValue;

fn preprocess_config() -> &'static PreprocessConfig {
    static CONFIG: OnceLock<PreprocessConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/model/preprocessor_config.json"
        );
        PreprocessConfig::from_file(std::path::Path::new(path))
            .expect("fixture preprocessor_config.json")
    })
}

/// Arbitrary bytes through decoding and CLIP preprocessing: any input gives
/// pixels or an `ImageError`, never a panic, hang or unbounded allocation.
pub fn decode_preprocess(data: &[u8]) {
    // The default limits, but a smaller pixel budget keeps each run fast.
    let limits = DecodeLimits::default().with_max_pixels(16_000_000);
    let config = preprocess_config();
    if let Ok(image) = decode_rgb_at_least(data, &limits, config.min_decoded_side()) {
        let mut out = Vec::new();
        let _ = config.apply(&image, &mut out);
    }
}

fn session_options() -> &'static Arc<ConfigOptions> {
    static CONFIG: OnceLock<Arc<ConfigOptions>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/model");
        let mut config = datafusion_clip::session_config();
        config
            .options_mut()
            .set("clip.model", model)
            .expect("clip.model");
        config
            .options_mut()
            .set("clip.max_image_pixels", "16000000")
            .expect("limit");
        Arc::new(ConfigOptions::clone(config.options()))
    })
}

fn udf(name: &str) -> Arc<ScalarUDF> {
    datafusion_clip::all_functions()
        .into_iter()
        .find(|f| f.name() == name)
        .expect("registered function")
}

/// Arbitrary bytes as a Binary column through `clip_classify`'s and
/// `clip_image_error`'s entry point (`invoke_with_args`), with the fixture
/// model: a bad image is a NULL row with a reason, never a panic or an
/// error for the batch.
pub fn udf_binary(data: &[u8]) {
    // Two rows: the input whole, and its first half.
    let images: ArrayRef = Arc::new(BinaryArray::from_iter_values([
        data,
        &data[..data.len() / 2],
    ]));
    // The labels are fuzzed too: two fixed ones, then up to 8 cut from the
    // input's last 512 bytes at 0xFF bytes (any text: control characters,
    // invalid UTF-8 made lossy, emoji, empty strings).
    let mut texts = vec![
        "a photo of a cat".to_string(),
        "a photo of a dog".to_string(),
    ];
    let tail = &data[data.len().saturating_sub(512)..];
    texts.extend(
        tail.split(|&b| b == 0xFF)
            .skip(1)
            .take(8)
            .map(|t| String::from_utf8_lossy(t).into_owned()),
    );
    let labels = ColumnarValue::Scalar(ScalarValue::List(Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Utf8, true)),
        OffsetBuffer::from_lengths([texts.len()]),
        Arc::new(StringArray::from(texts)),
        None,
    ))));
    let field = |name: &str, dt: DataType| Arc::new(Field::new(name, dt, true));
    let classify = udf("clip_classify")
        .invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::clone(&images)), labels.clone()],
            arg_fields: vec![
                field("image", DataType::Binary),
                field(
                    "labels",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                ),
            ],
            number_rows: 2,
            return_field: field("label", DataType::Utf8),
            config_options: Arc::clone(session_options()),
        })
        .expect("clip_classify never fails a batch in on_error = 'null'");
    let errors = udf("clip_image_error")
        .invoke_with_args(ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(images)],
            arg_fields: vec![field("image", DataType::Binary)],
            number_rows: 2,
            return_field: field("error", DataType::Utf8),
            config_options: Arc::clone(session_options()),
        })
        .expect("clip_image_error never fails");
    let (ColumnarValue::Array(labels), ColumnarValue::Array(errors)) = (classify, errors) else {
        panic!("array results expected");
    };
    // Exactly one of label and reason per row.
    for row in 0..2 {
        assert_ne!(labels.is_null(row), errors.is_null(row), "row {row}");
    }
}
