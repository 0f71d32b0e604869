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

use crate::common::{ScoreInput, ScoreOutput, Scoring};
use crate::planning::PlanningContext;

const SCORING: Scoring = Scoring {
    name: "clip_classify",
    usage: "clip_classify(image, ['label 1', 'label 2', ...])",
    input: ScoreInput::Image,
    output: ScoreOutput::TopLabel,
};

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
