//! `clip_text_embedding(text) -> FixedSizeList<Float32, D>`: the
//! L2-normalised CLIP embedding of each text.
//!
//! ```sql
//! SELECT clip_text_embedding('a photo of a cat') AS cat;
//! ```
//!
//! Texts go through the same cache as labels, so each distinct text runs
//! through the text tower once per model. NULL text → NULL.

use std::collections::HashMap;
use std::sync::OnceLock;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

use super::Doc;
use super::args::check_arity;
use super::results::{embedding_array, embedding_type, nullable_field};
use crate::options::ClipOptions;
use crate::planning::PlanningContext;

/// `clip_text_embedding(text)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipTextEmbedding {
    signature: Signature,
    planning: PlanningContext,
}

impl Default for ClipTextEmbedding {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipTextEmbedding {
    /// A new instance; `register_all` gives it the session's config.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
            planning: PlanningContext::default(),
        }
    }
}

impl ScalarUDFImpl for ClipTextEmbedding {
    fn name(&self) -> &str {
        "clip_text_embedding"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(
            self.name(),
            arg_types,
            1,
            "clip_text_embedding('a photo of a cat')",
        )?;
        match &arg_types[0] {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Ok(arg_types.to_vec())
            }
            other => plan_err!(
                "clip_text_embedding expects a string, got {other}; write clip_text_embedding('a photo of a cat')"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(embedding_type(self.planning.dim(self.name())?))
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(nullable_field(
            self.name(),
            embedding_type(self.planning.dim(self.name())?),
        ))
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        Some(ScalarUDF::new_from_impl(Self {
            planning: PlanningContext::from_config(config),
            ..self.clone()
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(
            Doc {
                description: "The text's L2-normalised CLIP embedding, `FixedSizeList<Float32, D>`, in the same space as `clip_image_embedding`'s. Each distinct text runs through the text tower once per model and process. NULL for a NULL text.",
                syntax: "clip_text_embedding(text)",
                example: "SELECT clip_text_embedding('a photo of a cat') AS cat;",
                arguments: &[("text", "The text to embed (Utf8, LargeUtf8 or Utf8View); the model reads its first 77 tokens.")],
            }
            .get(&DOC),
        )
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let model = self.planning.handle.model(&options, self.name())?;
        let array = args.args[0].to_array(args.number_rows)?;
        let array = cast(&array, &DataType::Utf8)?;
        let texts = array.as_string::<i32>();
        let mut distinct: Vec<&str> = texts.iter().flatten().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let embedded = model
            .embed_texts(&distinct)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let by_text: HashMap<&str, _> = distinct.into_iter().zip(embedded.iter()).collect();
        let rows: Vec<_> = (0..texts.len())
            .map(|i| {
                (!texts.is_null(i))
                    .then(|| by_text.get(texts.value(i)).copied())
                    .flatten()
            })
            .collect();
        Ok(ColumnarValue::Array(embedding_array(&rows, model.dim())?))
    }
}
