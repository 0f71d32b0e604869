//! `clip_image_error(image) -> Utf8`: why an image cannot be used, or NULL
//! when it can.
//!
//! ```sql
//! SELECT name, clip_classify(image, ['a cat', 'a dog']) AS label, clip_image_error(image) AS error
//! FROM images;
//! ```
//!
//! With the default `clip.on_error = 'null'`, an undecodable image gives NULL
//! from the other functions; this function says why, per row, without
//! failing the query. It decodes with the same limits (`clip.max_image_pixels`,
//! `clip.max_image_bytes`) and needs no model; where one is configured, it
//! also runs that model's whole preprocessing (`clip_runtime::image_error`,
//! the path the model's own input takes: the reduced-size JPEG decode of
//! `clip.fast_jpeg`, the size check and the resize), reading only its
//! `preprocessor_config.json`. A NULL image is not usable
//! either: it gives `no image: the image value is NULL`. An IMAGE table's
//! file that could not be read (it vanished after listing, access was
//! denied) gives that reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use clip_runtime::{ImageError, PreprocessConfig, image_error, printable_reason};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::args::{binary_rows, check_arity, check_image_type};
use super::{Doc, IMAGE_ARGUMENT};
use crate::options::ClipOptions;

/// `clip_image_error(image)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipImageError {
    signature: Signature,
}

impl Default for ClipImageError {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipImageError {
    /// A new instance.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for ClipImageError {
    fn name(&self) -> &str {
        "clip_image_error"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 1, "clip_image_error(image)")?;
        check_image_type(self.name(), &arg_types[0])?;
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(
            Doc {
                description: "Why the image cannot be used (Utf8), or NULL when it can: the reason the other functions gave NULL for it. It decodes with the same `clip.max_image_*` limits, and runs the configured model's preprocessing when `clip.model` is set, the same path the model's input takes; it needs no model. A NULL image gives `no image: the image value is NULL`.",
                syntax: "clip_image_error(image)",
                example: "SELECT name, clip_classify(image, ['a cat', 'a dog']) AS label, clip_image_error(image) AS error FROM images;",
                arguments: &[IMAGE_ARGUMENT],
            }
            .get(&DOC),
        )
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let limits = options.limits();
        // With a model configured, its whole preprocessing too (read from
        // preprocessor_config.json; no ONNX is loaded): the very path the
        // model's input takes (`clip_runtime::image_error`), so a NULL
        // answer always has this reason, whichever step refused the image.
        let preprocess = options
            .model_dir(self.name())
            .ok()
            .and_then(|dir| preprocess_config(&dir));
        let array = args.args[0].to_array(args.number_rows)?;
        let reasons: StringArray = binary_rows(array.as_ref())?
            .into_iter()
            .map(|bytes| match bytes {
                // Decoders' messages can quote the data: each reason is
                // bounded and has no control characters.
                Some(b) => image_error(b, &limits, preprocess.as_deref())
                    .map(|e| printable_reason(&e.to_string())),
                None => Some(ImageError::Null.to_string()),
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(reasons)))
    }
}

/// A model folder's preprocessing config, read once per process (as its
/// model is loaded once), not once per batch.
fn preprocess_config(dir: &std::path::Path) -> Option<Arc<PreprocessConfig>> {
    type Configs = Mutex<HashMap<PathBuf, Option<Arc<PreprocessConfig>>>>;
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let mut configs = CONFIGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    configs
        .entry(dir.to_path_buf())
        .or_insert_with(|| {
            PreprocessConfig::from_file(&dir.join("preprocessor_config.json"))
                .ok()
                .map(Arc::new)
        })
        .clone()
}
