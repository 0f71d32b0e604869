//! The image argument at run time: embedding each row's image (through the
//! model's cache) and applying `clip.on_error` to each row's outcome.

use std::sync::Arc;

use clip_runtime::{ClipModel, Embedding, printable_reason};
use datafusion::arrow::array::ArrayRef;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::ColumnarValue;

use super::args::{RowEmbedding, binary_rows};
use crate::options::{ClipOptions, OnError};
use crate::origin::image_source;

/// Embeds every row's image. A scalar image is embedded once and shared.
pub(crate) fn embed_image_rows(
    model: &ClipModel,
    options: &ClipOptions,
    arg: &ColumnarValue,
    rows: usize,
) -> Result<Vec<RowEmbedding>> {
    let (array, broadcast) = match arg {
        ColumnarValue::Array(a) => (Arc::clone(a), false),
        ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
    };
    let bytes = binary_rows(array.as_ref())?;
    let present: Vec<&[u8]> = bytes.iter().flatten().copied().collect();
    let mut embedded = model
        .embed_images(&present, options.batch_size, &options.limits())
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
        .into_iter();
    let per_input: Vec<RowEmbedding> = bytes
        .iter()
        .map(|b| b.and_then(|_| embedded.next()))
        .collect();
    Ok(if broadcast {
        vec![per_input.into_iter().next().flatten(); rows]
    } else {
        per_input
    })
}

/// Applies `clip.on_error` to one row's outcome. `images` is the image
/// argument the outcome came from, if any: a strict-mode error names the
/// row's file when it can be traced.
pub(crate) fn usable<'a>(
    function: &str,
    options: &ClipOptions,
    images: Option<&ArrayRef>,
    row: usize,
    outcome: &'a RowEmbedding,
) -> Result<Option<&'a Embedding>> {
    match outcome {
        None => Ok(None),
        Some(Ok(e)) => Ok(Some(e)),
        Some(Err(e)) => match options.on_error {
            OnError::Null => Ok(None),
            OnError::Fail => {
                let image = match images.and_then(|a| image_source(a.as_ref(), row)) {
                    Some(url) => format!("{} (row {row} of its batch)", printable_reason(&url)),
                    None => format!("in row {row} of its batch"),
                };
                let e = printable_reason(&e.to_string());
                exec_err!(
                    "{function}: the image {image} cannot be used: {e}. \
                     SET clip.on_error = 'null' to get NULL for such images instead, and \
                     clip_image_error(image) for the reason"
                )
            }
        },
    }
}
