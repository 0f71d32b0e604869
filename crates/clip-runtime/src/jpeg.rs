//! JPEG decoding with libjpeg-turbo's decoder (vendored as mozjpeg).
//!
//! PIL decodes JPEG with libjpeg-turbo (islow IDCT, fancy upsampling), so the
//! pixels transformers sees come from that exact code. Other decoders
//! (zune-jpeg, jpeg-decoder) differ from it by a few levels at edges, which
//! the CLIP pipeline's `logit_scale` of 100 turns into probability errors of
//! up to 1e-2. Decoding with the same library gives the same pixels.
//!
//! libjpeg reports fatal errors by unwinding through `error_exit`; the
//! `mozjpeg` crate turns them into panics with `resume_unwind` (which skips
//! the panic hook), so every call here runs under `catch_unwind`.
//!
//! Truncated files: libjpeg silently pads a file that ends early with gray.
//! PIL refuses such files ("image file is truncated") unless told otherwise,
//! and so do we: the reader records whether libjpeg asked for bytes past the
//! end, and such an image is an error.

use std::io::{BufRead, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use image::RgbImage;
use image::metadata::Orientation;
use mozjpeg::{Decompress, Format, Marker};

use crate::budget::DecodePermit;
use crate::error::ImageError;
use crate::options::DecodeLimits;

/// A byte slice reader that notes when the decoder reads past its end.
struct EndTracking<'a> {
    data: &'a [u8],
    ran_out: Arc<AtomicBool>,
}

impl Read for EndTracking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ran_out.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl BufRead for EndTracking<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.data.is_empty() {
            self.ran_out.store(true, Ordering::Relaxed);
        }
        Ok(self.data)
    }

    fn consume(&mut self, amt: usize) {
        self.data = &self.data[amt.min(self.data.len())..];
    }
}

fn decode_error(message: impl Into<String>) -> ImageError {
    ImageError::Decode {
        format: "JPEG".to_string(),
        message: message.into(),
    }
}

/// The DCT scale (numerator over 8) that decodes a `width` x `height` JPEG
/// smallest while its shorter side stays at least `min_side`: 1/8, 1/4 or
/// 1/2, or 8/8 (full size) when even 1/2 would be too small.
pub(crate) fn dct_scale(width: usize, height: usize, min_side: u32) -> u8 {
    let short = width.min(height);
    [1u8, 2, 4]
        .into_iter()
        .find(|&num| (short * num as usize).div_ceil(8) >= min_side as usize)
        .unwrap_or(8)
}

/// Decodes a JPEG into upright RGB: (pixels, EXIF orientation to apply).
///
/// With `min_side`, libjpeg decodes at a reduced size (its DCT scaling, see
/// [`dct_scale`]) whose shorter side is still at least `min_side`: far less
/// work for a large photo that is about to be shrunk anyway, at the price of
/// pixels that differ slightly from a full decode followed by the resize.
///
/// The decode's share of the memory budget is taken from libjpeg's own
/// reading of the header (the decoder that will decode it, at the size it
/// will decode to), before any pixel buffer exists, and returned with the
/// image. A file whose header libjpeg cannot read is refused before then.
pub(crate) fn decode_jpeg(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_side: Option<u32>,
) -> Result<(RgbImage, Orientation, DecodePermit), ImageError> {
    match catch_unwind(AssertUnwindSafe(|| decode(bytes, limits, min_side))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("libjpeg failed");
            Err(decode_error(
                message.trim_start_matches("libjpeg fatal error: "),
            ))
        }
    }
}

fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_side: Option<u32>,
) -> Result<(RgbImage, Orientation, DecodePermit), ImageError> {
    let ran_out = Arc::new(AtomicBool::new(false));
    let reader = EndTracking {
        data: bytes,
        ran_out: Arc::clone(&ran_out),
    };
    let io = |e: std::io::Error| decode_error(e.to_string());
    let mut decompress = Decompress::with_markers(&[Marker::APP(1), Marker::APP(14)])
        .from_reader(reader)
        .map_err(io)?;
    let (width, height) = decompress.size();
    let pixels = width as u64 * height as u64;
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width: width as u32,
            height: height as u32,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::ZeroSized {
            width: width as u32,
            height: height as u32,
        });
    }
    let mut orientation = Orientation::NoTransforms;
    let mut adobe = false;
    for marker in decompress.markers() {
        match marker.marker {
            Marker::APP(1) => {
                if let Some(exif) = marker.data.strip_prefix(b"Exif\0\0") {
                    orientation = Orientation::from_exif_chunk(exif).unwrap_or(orientation);
                }
            }
            Marker::APP(14) => adobe |= marker.data.starts_with(b"Adobe"),
            _ => {}
        }
    }
    let eighths = min_side.map_or(8, |min_side| dct_scale(width, height, min_side));
    if eighths != 8 {
        decompress.scale(eighths);
    }
    // libjpeg's output size at this scale: ceil(size × eighths / 8).
    let scaled = |side: usize| (side * eighths as usize).div_ceil(8) as u64;
    let permit = DecodePermit::acquire(scaled(width) * scaled(height));
    let (rgb, (width, height)) = match decompress.image().map_err(io)? {
        Format::RGB(mut started) => {
            let size = (started.width(), started.height());
            let data = started.read_scanlines::<u8>().map_err(io)?;
            started.finish().map_err(io)?;
            (data, size)
        }
        Format::Gray(started) => {
            // Replicate gray into RGB as PIL's convert("RGB") does.
            let mut started = started;
            let size = (started.width(), started.height());
            let gray = started.read_scanlines::<u8>().map_err(io)?;
            started.finish().map_err(io)?;
            (gray.iter().flat_map(|&g| [g, g, g]).collect(), size)
        }
        Format::CMYK(mut started) => {
            let size = (started.width(), started.height());
            let cmyk = started.read_scanlines::<u8>().map_err(io)?;
            started.finish().map_err(io)?;
            (cmyk_to_rgb(&cmyk, adobe), size)
        }
    };
    if ran_out.load(Ordering::Relaxed) {
        return Err(decode_error(
            "the file is truncated: it ends before the image data does",
        ));
    }
    let image = RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| decode_error("decoder returned fewer pixels than the header declares"))?;
    Ok((image, orientation, permit))
}

/// PIL's CMYK → RGB (`Convert.c: cmyk2rgb`). Adobe files store CMYK
/// inverted, which PIL undoes on load (`CMYK;I`).
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let v = |i: usize| {
                if inverted {
                    255 - p[i] as u32
                } else {
                    p[i] as u32
                }
            };
            let nk = 255 - v(3);
            [0, 1, 2].map(|c| nk.saturating_sub(muldiv255(v(c), nk)) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_matches_pil_formula() {
        // No ink is white; full black is black; pure cyan is (0, 255, 255).
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), vec![0, 255, 255]);
        assert_eq!(
            cmyk_to_rgb(&[255, 255, 255, 255], true),
            vec![255, 255, 255]
        );
    }

    #[test]
    fn dct_scale_keeps_the_shorter_side_at_least_the_target() {
        // A 4000x3000 phone photo for a 224 target: 1/8 gives 500x375.
        assert_eq!(dct_scale(4000, 3000, 224), 1);
        // 1/8 of 1600x1200 is 150 < 224; 1/4 is 300.
        assert_eq!(dct_scale(1600, 1200, 224), 2);
        // 1/2 of 800x448 is exactly 224.
        assert_eq!(dct_scale(800, 448, 224), 4);
        // Less than twice the target: full size.
        assert_eq!(dct_scale(500, 375, 224), 8);
        assert_eq!(dct_scale(300, 447, 224), 8);
    }

    /// Issue 26, item 4: the budget share comes from libjpeg's header, at
    /// the size libjpeg will decode to (a quarter of the pixels at a DCT
    /// scale of 1/2), not from another parser that may give 0.
    #[test]
    fn the_budget_share_is_what_libjpeg_will_decode() {
        let (w, h) = (1024usize, 768usize);
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(w, h);
        let mut started = c.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&vec![128u8; w * h * 3]).unwrap();
        let bytes = started.finish().unwrap();
        let share = |min_side| {
            let (image, _, permit) =
                decode_jpeg(&bytes, &DecodeLimits::default(), min_side).unwrap();
            (image.dimensions(), permit.bytes())
        };
        let per = crate::BYTES_PER_PIXEL;
        assert_eq!(share(None), ((1024, 768), 1024 * 768 * per));
        // Shorter side 768 for a target of 224: decoded at 4/8.
        assert_eq!(share(Some(224)), ((512, 384), 512 * 384 * per));
    }

    #[test]
    fn garbage_after_the_magic_is_an_error_not_a_panic() {
        let e = decode_jpeg(
            &[0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3],
            &DecodeLimits::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    }
}
