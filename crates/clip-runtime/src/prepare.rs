//! From encoded bytes to a model's input: the one path every image takes,
//! and so the one answer to "why is this image unusable".
//!
//! The model embeds what [`prepare_image`] gives it, and `clip_image_error`
//! reports what [`image_error`] finds, which is [`prepare_image`]'s error:
//! the decode (with the same limits and the same reduced-size JPEG rule),
//! the size check and the resize itself. So a NULL answer and its reason
//! can never disagree, whatever step fails.

use image::RgbImage;

use crate::decode::{decode_rgb, decode_rgb_budgeted};
use crate::error::ImageError;
use crate::options::DecodeLimits;
use crate::preprocess::PreprocessConfig;

/// One preprocessed image: CHW `f32` values, and their height and width.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// `3 × height × width` values, channel by channel.
    pub data: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Decodes `bytes` and preprocesses them with `preprocess`: the model's
/// input for one image, or why there is none.
pub fn prepare_image(
    bytes: &[u8],
    limits: &DecodeLimits,
    preprocess: &PreprocessConfig,
) -> Result<PixelValues, ImageError> {
    // The decode's share of the memory budget is held until the resize is
    // done.
    let (rgb, _permit) = decode_rgb_budgeted(bytes, limits, preprocess.min_decoded_side())?;
    pixel_values(&rgb, preprocess)
}

fn pixel_values(rgb: &RgbImage, preprocess: &PreprocessConfig) -> Result<PixelValues, ImageError> {
    let (height, width) = preprocess.output_size(rgb.width(), rgb.height());
    let mut data = Vec::with_capacity(preprocess.fixed_len().unwrap_or(0));
    preprocess.apply(rgb, &mut data)?;
    Ok(PixelValues {
        data,
        height: height as usize,
        width: width as usize,
    })
}

/// Why `bytes` cannot be used, or `None` when they can: [`prepare_image`]'s
/// error with a model's `preprocess`, or the decode's without one.
pub fn image_error(
    bytes: &[u8],
    limits: &DecodeLimits,
    preprocess: Option<&PreprocessConfig>,
) -> Option<ImageError> {
    match preprocess {
        Some(p) => prepare_image(bytes, limits, p).err(),
        None => decode_rgb(bytes, limits).err(),
    }
}
