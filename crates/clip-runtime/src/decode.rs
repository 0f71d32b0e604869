//! Image decoding: bytes in, upright 8-bit RGB out, or a per-image reason.
//!
//! Matches what transformers' `load_image` + `convert("RGB")` produce for the
//! same file (JPEG goes through libjpeg-turbo's decoder, as in PIL; see
//! `jpeg.rs`):
//! - the EXIF orientation is applied (`ImageOps.exif_transpose`);
//! - alpha is dropped, not composited (PIL's `convert("RGB")` does the same);
//! - palettes are expanded, grayscale is replicated to three channels;
//! - animated formats give their first frame.
//!
//! One deliberate difference: PIL clips 16-bit grayscale (`I;16`) to 8 bits,
//! turning most of the image white. We scale 16-bit samples to 8 bits instead.
//!
//! Dimensions are checked from the header before any pixel buffer exists, so a
//! decompression bomb costs a header read, not an allocation.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::budget::DecodePermit;
use crate::error::ImageError;
use crate::options::DecodeLimits;

fn format_name(format: Option<ImageFormat>) -> String {
    format.map_or_else(
        || "unknown".to_string(),
        |f| format!("{f:?}").to_ascii_uppercase(),
    )
}

/// Decodes an encoded image into upright 8-bit RGB, at full size.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    decode_rgb_at_least(bytes, limits, None)
}

/// [`decode_rgb`] for an image about to be shrunk so that its shorter side is
/// `min_side` ([`crate::PreprocessConfig::min_decoded_side`]): with
/// [`DecodeLimits::fast_jpeg`], a JPEG may come out smaller than stored, its
/// shorter side no shorter than `min_side`.
pub fn decode_rgb_at_least(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_side: Option<u32>,
) -> Result<RgbImage, ImageError> {
    decode_rgb_budgeted(bytes, limits, min_side).map(|(image, _permit)| image)
}

/// [`decode_rgb_at_least`], also returning the share of the process's decode
/// memory budget ([`crate::DecodePermit`]) the image took: hold it until the
/// image's pixel values are made, so that the resize counts too.
pub fn decode_rgb_budgeted(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_side: Option<u32>,
) -> Result<(RgbImage, DecodePermit), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::FileTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::UnsupportedFormat(format!(": {e}")))?;
    let format = reader.format();
    let Some(format) = format else {
        return Err(ImageError::UnsupportedFormat(sniff_hint(bytes)));
    };
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Gif
            | ImageFormat::Bmp
            | ImageFormat::Tiff
    ) {
        return Err(ImageError::UnsupportedFormat(format!(
            " ({}); ClipQL reads JPEG, PNG, WebP, GIF, BMP and TIFF",
            format_name(Some(format))
        )));
    }
    if format == ImageFormat::Jpeg {
        let min_side = min_side.filter(|_| limits.fast_jpeg);
        // libjpeg sizes its own decode and takes the budget for it.
        let (mut image, orientation, permit) = crate::jpeg::decode_jpeg(bytes, limits, min_side)?;
        if orientation != image::metadata::Orientation::NoTransforms {
            let mut dynamic = DynamicImage::ImageRgb8(image);
            dynamic.apply_orientation(orientation);
            image = into_rgb8(dynamic);
        }
        return Ok((image, permit));
    }
    let decode_err = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImageError::Decode {
            format: format_name(Some(format)),
            message: format!("exceeds decoder memory limits: {e}"),
        },
        image::ImageError::Unsupported(u) => ImageError::UnsupportedFormat(format!(" ({u})")),
        other => ImageError::Decode {
            format: format_name(Some(format)),
            message: other.to_string(),
        },
    };
    let mut reader = reader;
    let mut decoder_limits = Limits::default();
    // Generous headroom over the pixel limit for decoders' own buffers; the
    // explicit pixel check below is what refuses bombs.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(16).max(64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::ZeroSized { width, height });
    }
    let permit = DecodePermit::acquire(pixels);
    // A broken EXIF block should not cost the image: treat it as upright.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    image.apply_orientation(orientation);
    Ok((into_rgb8(image), permit))
}

/// PIL-style `convert("RGB")`, except that 16-bit samples are scaled, not clipped.
fn into_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        // `image` drops alpha without compositing, and maps 16-bit/float
        // samples onto 0..=255 by scaling: what we want in every case.
        other => other.to_rgb8(),
    }
}

/// A hint for bytes no decoder recognised: text and HTML are common mistakes.
fn sniff_hint(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(512)];
    let text = head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if !text {
        return String::new();
    }
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    if lower.contains("<html") || lower.contains("<!doctype") {
        " (the bytes are HTML, not an image)".to_string()
    } else {
        " (the bytes are text, not an image)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn empty_and_garbage_get_reasons() {
        let l = DecodeLimits::default();
        assert_eq!(decode_rgb(b"", &l), Err(ImageError::Empty));
        let e = decode_rgb(&[0x13, 0x37, 0, 1, 2, 3, 4, 5], &l).unwrap_err();
        assert!(matches!(e, ImageError::UnsupportedFormat(_)), "{e}");
        let e = decode_rgb(b"<!DOCTYPE html><html><body>404</body></html>", &l).unwrap_err();
        assert!(e.to_string().contains("HTML"), "{e}");
    }

    #[test]
    fn truncated_png_is_a_decode_error() {
        let bytes = png(64, 64);
        let e = decode_rgb(&bytes[..bytes.len() / 2], &DecodeLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::Decode { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot decode PNG image"), "{e}");
    }

    #[test]
    fn limits_refuse_before_decoding() {
        let bytes = png(100, 100);
        let l = DecodeLimits::default().with_max_pixels(99 * 100);
        assert_eq!(
            decode_rgb(&bytes, &l),
            Err(ImageError::TooManyPixels {
                width: 100,
                height: 100,
                pixels: 10_000,
                limit: 9_900
            })
        );
        let l = DecodeLimits::default().with_max_bytes(10);
        assert!(matches!(
            decode_rgb(&bytes, &l),
            Err(ImageError::FileTooLarge { .. })
        ));
        assert_eq!(
            decode_rgb(&bytes, &DecodeLimits::default())
                .unwrap()
                .dimensions(),
            (100, 100)
        );
    }

    #[test]
    fn sixteen_bit_gray_is_scaled_not_clipped() {
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(4, 4, image::Luma([32768]));
        let mut out = Vec::new();
        DynamicImage::ImageLuma16(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        let rgb = decode_rgb(&out, &DecodeLimits::default()).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [128, 128, 128]);
    }
}
