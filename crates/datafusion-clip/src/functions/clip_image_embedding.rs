//! `clip_image_embedding(image) -> FixedSizeList<Float32, D>`: the
//! L2-normalised CLIP embedding of each image (`D` is the model's
//! `projection_dim`, 512 for ViT-B/32).
//!
//! ```sql
//! CREATE TABLE embeddings AS
//! SELECT path, clip_image_embedding(image) AS embedding FROM images;
//! ```
//!
//! Store these once, then label them any number of times with
//! `clip_classify_embedding` without decoding an image again.

use std::sync::OnceLock;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

use super::args::{check_arity, check_image_type, image_array};
use super::images::{embed_image_rows, usable};
use super::results::{embedding_array, embedding_type, nullable_field};
use super::{Doc, IMAGE_ARGUMENT};
use crate::options::ClipOptions;
use crate::planning::PlanningContext;

/// `clip_image_embedding(image)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipImageEmbedding {
    signature: Signature,
    planning: PlanningContext,
}

impl Default for ClipImageEmbedding {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipImageEmbedding {
    /// A new instance; `register_all` gives it the session's config.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Stable),
            planning: PlanningContext::default(),
        }
    }
}

impl ScalarUDFImpl for ClipImageEmbedding {
    fn name(&self) -> &str {
        "clip_image_embedding"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(self.name(), arg_types, 1, "clip_image_embedding(image)")?;
        check_image_type(self.name(), &arg_types[0])?;
        Ok(arg_types.to_vec())
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
                description: "The image's L2-normalised CLIP embedding, `FixedSizeList<Float32, D>` with `D` the model's `projection_dim` (512 for ViT-B/32). Store it once, then label it any number of times with `clip_classify_embedding`. NULL for a NULL image or one that cannot be used (see `clip_image_error`).",
                syntax: "clip_image_embedding(image)",
                example: "CREATE TABLE embeddings AS SELECT path, clip_image_embedding(image) AS embedding FROM images;",
                arguments: &[IMAGE_ARGUMENT],
            }
            .get(&DOC),
        )
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let options = ClipOptions::from_config(&args.config_options);
        let model = self.planning.handle.model(&options, self.name())?;
        let outcomes = embed_image_rows(&model, &options, &args.args[0], args.number_rows)?;
        let images = image_array(&args.args[0]);
        let rows = outcomes
            .iter()
            .enumerate()
            .map(|(row, outcome)| usable(self.name(), &options, images, row, outcome))
            .collect::<Result<Vec<_>>>()?;
        Ok(ColumnarValue::Array(embedding_array(&rows, model.dim())?))
    }
}
