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

use crate::common::{
    LabelSets, check_arity, check_embedding_type, check_labels_literal, check_labels_type,
    nullable_field, score_rows, stored_embeddings, top_labels,
};
use crate::options::ClipOptions;
use crate::planning::PlanningContext;

const USAGE: &str = "clip_classify_embedding(embedding, ['label 1', 'label 2', ...])";

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
        "clip_classify_embedding"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 2, USAGE)?;
        check_embedding_type(self.name(), &arg_types[0], self.planning.dim_if_known())?;
        check_labels_type(self.name(), &arg_types[1])?;
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.planning.require_model(self.name())?;
        check_labels_literal(self.name(), args.scalar_arguments.get(1).copied().flatten())?;
        Ok(nullable_field(self.name(), DataType::Utf8))
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        Some(ScalarUDF::new_from_impl(Self {
            planning: PlanningContext::from_config(config),
            ..self.clone()
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let model = options.model(self.name())?;
        let labels = LabelSets::from_arg(&args.args[1])?;
        let embeddings = stored_embeddings(&args.args[0], args.number_rows)?;
        let scored = score_rows(self.name(), &model, &options, &embeddings, &labels)?;
        Ok(ColumnarValue::Array(top_labels(&scored)))
    }
}
