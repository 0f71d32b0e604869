//! `clip_classify_embedding(embedding, labels) -> Utf8`: `clip_classify` for a
//! stored image embedding, with no image decode.
//!
//! ```sql
//! SELECT path, clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a dog'])
//! FROM 'embeddings.parquet';
//! ```
//!
//! `embedding` is what `clip_image_embedding` returned (FixedSizeList), or a
//! List/LargeList of floats as other tools write them; it is re-normalised.

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::common::{ScoreInput, ScoreOutput, Scoring};
use crate::planning::PlanningContext;

const SCORING: Scoring = Scoring {
    name: "clip_classify_embedding",
    usage: "clip_classify_embedding(embedding, ['label 1', 'label 2', ...])",
    input: ScoreInput::Embedding,
    output: ScoreOutput::TopLabel,
};

/// `clip_classify_embedding(embedding, labels)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipClassifyEmbedding {
    signature: Signature,
    planning: PlanningContext,
}

impl Default for ClipClassifyEmbedding {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipClassifyEmbedding {
    /// A new instance; `register_all` gives it the session's config.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
            planning: PlanningContext::default(),
        }
    }
}

impl ScalarUDFImpl for ClipClassifyEmbedding {
    fn name(&self) -> &str {
        SCORING.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        SCORING.coerce_types(&self.planning, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(SCORING.return_type())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        SCORING.return_field(&self.planning, args)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        Some(ScalarUDF::new_from_impl(Self {
            planning: PlanningContext::from_config(config),
            ..self.clone()
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        SCORING.invoke(args)
    }
}
