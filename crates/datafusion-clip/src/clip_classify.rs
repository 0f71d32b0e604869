//! `clip_classify(image, labels) -> Utf8`: the most likely label for each image.
//!
//! ```sql
//! SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label
//! FROM images;
//! ```
//!
//! `image` is Binary, LargeBinary or BinaryView (the encoded file). `labels`
//! is a list literal or a per-row list column of strings. NULL image → NULL;
//! an undecodable image → NULL (or a query error with `clip.on_error = 'fail'`).

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::common::{
    LabelSets, check_arity, check_image_type, check_labels_literal, check_labels_type,
    embed_image_rows, nullable_field, score_rows, top_labels,
};
use crate::options::ClipOptions;
use crate::planning::PlanningContext;

const USAGE: &str = "clip_classify(image, ['label 1', 'label 2', ...])";

/// `clip_classify(image, labels)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipClassify {
    signature: Signature,
    planning: PlanningContext,
}

impl Default for ClipClassify {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipClassify {
    /// A new instance; `register_all` gives it the session's config.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
            planning: PlanningContext::default(),
        }
    }
}

impl ScalarUDFImpl for ClipClassify {
    fn name(&self) -> &str {
        "clip_classify"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 2, USAGE)?;
        check_image_type(self.name(), &arg_types[0])?;
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
        let images = embed_image_rows(&model, &options, &args.args[0], args.number_rows)?;
        let scored = score_rows(self.name(), &model, &options, &images, &labels)?;
        Ok(ColumnarValue::Array(top_labels(&scored)))
    }
}
