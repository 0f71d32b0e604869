//! `CLIPImageProcessor`, reimplemented: resize the shortest edge with PIL's
//! antialiased filters, centre-crop, rescale, normalise, emit CHW `f32`.
//!
//! Every parameter comes from `preprocessor_config.json`; nothing is
//! hard-coded. The resize is Pillow's `Image.resize`, reproduced bit for bit
//! ([`crate::resample`]).

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;

use crate::error::{ClipError, ImageError, Result};

pub use crate::resample::Resample;

/// How to resize before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so the shorter side is this long, keeping the aspect ratio.
    ShortestEdge(u32),
    /// Scale to exactly this height and width.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

/// The parameters of `preprocessor_config.json` that CLIP uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// `do_resize` and `size` (`None` when `do_resize` is false).
    pub resize: Option<ResizeTarget>,
    /// `resample`.
    pub resample: Resample,
    /// `do_center_crop` and `crop_size` as (height, width).
    pub crop: Option<(u32, u32)>,
    /// `do_rescale` and `rescale_factor` (`None` when disabled).
    pub rescale: Option<f32>,
    /// `do_normalize`, `image_mean` and `image_std` (`None` when disabled).
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// Either `224` or `{"shortest_edge": 224}` / `{"height": h, "width": w}`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum SizeJson {
    Int(u32),
    Map {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

#[derive(Deserialize)]
struct PreprocessJson {
    image_processor_type: Option<String>,
    do_resize: Option<bool>,
    size: Option<SizeJson>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeJson>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f32>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

/// What an image processor class does where `preprocessor_config.json` is
/// silent: transformers' defaults for that class.
struct ProcessorDefaults {
    size: SizeJson,
    /// `SiglipImageProcessor` reads a bare integer `size` as a square.
    int_is_square: bool,
    center_crop: bool,
    mean: [f32; 3],
    std: [f32; 3],
}

impl ProcessorDefaults {
    fn of(image_processor_type: Option<&str>) -> std::result::Result<Self, String> {
        match image_processor_type {
            // An export that names no class is taken as CLIP's, as ClipQL
            // always did.
            None | Some("CLIPImageProcessor" | "CLIPImageProcessorFast") => Ok(Self {
                size: SizeJson::Int(224),
                int_is_square: false,
                center_crop: true,
                mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
                std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
            }),
            Some("SiglipImageProcessor" | "SiglipImageProcessorFast") => Ok(Self {
                size: SizeJson::Map {
                    shortest_edge: None,
                    height: Some(224),
                    width: Some(224),
                },
                int_is_square: true,
                center_crop: false,
                mean: [0.5; 3],
                std: [0.5; 3],
            }),
            Some("Siglip2ImageProcessor" | "Siglip2ImageProcessorFast") => Err(
                "Siglip2ImageProcessor is SigLIP 2's NaFlex (variable-resolution) processor, \
                 which ClipQL does not run; use a fixed-resolution SigLIP 2 checkpoint such as \
                 google/siglip2-base-patch16-224 (SiglipImageProcessor)"
                    .into(),
            ),
            Some(other) => Err(format!(
                "image_processor_type {other:?} is not one ClipQL reproduces \
                 (it runs CLIPImageProcessor and SiglipImageProcessor)"
            )),
        }
    }

    fn int_size(&self, n: u32) -> ResizeTarget {
        if self.int_is_square {
            ResizeTarget::Exact {
                height: n,
                width: n,
            }
        } else {
            ResizeTarget::ShortestEdge(n)
        }
    }
}

impl PreprocessConfig {
    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::ModelFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|message| ClipError::ModelFile {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the JSON text of `preprocessor_config.json`.
    ///
    /// Missing keys take the defaults of the class `image_processor_type`
    /// names (`CLIPImageProcessor` when it names none), as transformers does.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let j: PreprocessJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let defaults = ProcessorDefaults::of(j.image_processor_type.as_deref())?;
        let resize = if j.do_resize.unwrap_or(true) {
            Some(match j.size.unwrap_or_else(|| defaults.size.clone()) {
                SizeJson::Int(n) => defaults.int_size(n),
                SizeJson::Map {
                    shortest_edge: Some(n),
                    ..
                } => ResizeTarget::ShortestEdge(n),
                SizeJson::Map {
                    height: Some(height),
                    width: Some(width),
                    ..
                } => ResizeTarget::Exact { height, width },
                SizeJson::Map { .. } => {
                    return Err("`size` needs `shortest_edge` or both `height` and `width`".into());
                }
            })
        } else {
            None
        };
        let resample_code = j.resample.unwrap_or(3);
        let resample = Resample::from_pil(resample_code)
            .ok_or_else(|| format!("`resample` {resample_code} is not a PIL filter (0-5)"))?;
        let crop = if j.do_center_crop.unwrap_or(defaults.center_crop) {
            Some(match j.crop_size.unwrap_or(SizeJson::Int(224)) {
                SizeJson::Int(n) => (n, n),
                SizeJson::Map {
                    height: Some(h),
                    width: Some(w),
                    ..
                } => (h, w),
                SizeJson::Map {
                    shortest_edge: Some(n),
                    ..
                } => (n, n),
                SizeJson::Map { .. } => return Err("`crop_size` needs `height` and `width`".into()),
            })
        } else {
            None
        };
        let rescale = j
            .do_rescale
            .unwrap_or(true)
            .then(|| j.rescale_factor.unwrap_or(1.0 / 255.0));
        let normalize = if j.do_normalize.unwrap_or(true) {
            let three = |v: Option<Vec<f32>>, name: &str, default: [f32; 3]| match v {
                None => Ok(default),
                Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
                Some(v) if v.len() == 1 => Ok([v[0]; 3]),
                Some(v) => Err(format!("`{name}` has {} values, expected 3", v.len())),
            };
            let mean = three(j.image_mean, "image_mean", defaults.mean)?;
            let std = three(j.image_std, "image_std", defaults.std)?;
            if std.contains(&0.0) {
                return Err("`image_std` contains 0".into());
            }
            Some((mean, std))
        } else {
            None
        };
        if let Some((h, w)) = crop
            && (h == 0 || w == 0)
        {
            return Err("`crop_size` has a zero dimension".into());
        }
        // A zero resize target would pass every size check and then fail
        // every image in the resize.
        if matches!(
            resize,
            Some(ResizeTarget::ShortestEdge(0) | ResizeTarget::Exact { height: 0, .. })
                | Some(ResizeTarget::Exact { width: 0, .. })
        ) {
            return Err("`size` has a zero dimension".into());
        }
        Ok(Self {
            resize,
            resample,
            crop,
            rescale,
            normalize,
        })
    }

    /// The shortest side a decoded image needs for the resize to shrink it
    /// (never enlarge it): what reduced-size JPEG decoding must keep. `None`
    /// without a resize.
    pub fn min_decoded_side(&self) -> Option<u32> {
        match self.resize? {
            ResizeTarget::ShortestEdge(edge) => Some(edge),
            ResizeTarget::Exact { height, width } => Some(height.max(width)),
        }
    }

    /// The output (height, width) for an input of this size.
    pub fn output_size(&self, width: u32, height: u32) -> (u64, u64) {
        if let Some((h, w)) = self.crop {
            return (h as u64, w as u64);
        }
        let (w, h) = self.resized_size(width, height);
        (h, w)
    }

    /// Size after the resize step, as (width, height), following transformers'
    /// `get_resize_output_image_size` (the long side is truncated, not rounded).
    /// In `u64`: an extreme aspect ratio can make the long side huge; only the
    /// crop window of it is ever computed.
    fn resized_size(&self, width: u32, height: u32) -> (u64, u64) {
        let (width, height) = (width as u64, height as u64);
        match self.resize {
            None => (width, height),
            Some(ResizeTarget::Exact { height, width }) => (width as u64, height as u64),
            Some(ResizeTarget::ShortestEdge(short)) => {
                let short = short as u64;
                if width <= height {
                    (short, (short * height / width).max(1))
                } else {
                    ((short * width / height).max(1), short)
                }
            }
        }
    }

    /// The (height, width) of every preprocessed image, when it does not
    /// depend on the input: a centre crop's (CLIP), or else an exact
    /// resize's. Images of this size share a vision-tower run.
    pub fn fixed_size(&self) -> Option<(u32, u32)> {
        self.crop.or(match self.resize {
            Some(ResizeTarget::Exact { height, width }) => Some((height, width)),
            _ => None,
        })
    }

    /// Number of `f32` values one preprocessed image occupies (3 × H × W)
    /// when the output size does not depend on the input ([`Self::fixed_size`]).
    pub fn fixed_len(&self) -> Option<usize> {
        self.fixed_size().map(|(h, w)| 3 * h as usize * w as usize)
    }

    /// Resizes packed RGB8 to (`w`, `h`) like Pillow's `Image.resize` and
    /// returns only the `window` (left, top, width, height) of the result.
    fn resize(
        &self,
        src: &[u8],
        from: (u32, u32),
        to: (u64, u64),
        window: (u64, u64, u32, u32),
    ) -> Vec<u8> {
        crate::resample::resize_window(src, from, to, window, self.resample)
    }

    /// The resize, crop window and padding for an image of this size, or
    /// why it cannot be preprocessed: without a centre crop, an extreme
    /// aspect ratio resizes to more pixels than a model input can hold.
    #[allow(clippy::type_complexity)]
    fn window(
        &self,
        w0: u32,
        h0: u32,
    ) -> Result<((u64, u64), (u64, u64), (u64, u64, u64), (u64, u64, u64)), ImageError> {
        if w0 == 0 || h0 == 0 {
            return Err(ImageError::ZeroSized {
                width: w0,
                height: h0,
            });
        }
        let (w, h) = self.resized_size(w0, h0);
        let (ch, cw) = self.crop.map_or((h, w), |(ch, cw)| (ch as u64, cw as u64));
        // transformers' center_crop: the window starts at floor((size - crop) / 2);
        // a crop larger than the image pads it with zeros, ceil((crop - size) / 2)
        // before it.
        let axis = |size: u64, crop: u64| -> (u64, u64, u64) {
            if crop <= size {
                ((size - crop) / 2, crop, 0)
            } else {
                (0, size, (crop - size).div_ceil(2))
            }
        };
        let x = axis(w, cw);
        let y = axis(h, ch);
        const MAX_OUTPUT: u64 = 1 << 28;
        if x.1 * y.1 > MAX_OUTPUT || cw * ch > MAX_OUTPUT {
            return Err(ImageError::ResizedTooLarge {
                width: w,
                height: h,
                pixels: w.saturating_mul(h),
                limit: MAX_OUTPUT,
            });
        }
        Ok(((w, h), (cw, ch), x, y))
    }

    /// Preprocesses one RGB image, appending CHW `f32` values to `out`.
    pub fn apply(&self, image: &RgbImage, out: &mut Vec<f32>) -> Result<(), ImageError> {
        let (w0, h0) = image.dimensions();
        let ((w, h), (cw, ch), (left, win_w, pad_left), (top, win_h, pad_top)) =
            self.window(w0, h0)?;
        let (win_w, win_h) = (win_w as u32, win_h as u32);
        let resized;
        let pixels: &[u8] = if (w, h) == (w0 as u64, h0 as u64) && (win_w, win_h) == (w0, h0) {
            image.as_raw()
        } else {
            #[cfg(feature = "failpoints")]
            failpoint_resize(w0)?;
            resized = self.resize(image.as_raw(), (w0, h0), (w, h), (left, top, win_w, win_h));
            &resized
        };
        let scale = self.rescale.unwrap_or(1.0);
        let (mean, std) = self.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        let (cw, ch) = (cw as usize, ch as usize);
        let (win_w, win_h) = (win_w as usize, win_h as usize);
        let (pad_left, pad_top) = (pad_left as usize, pad_top as usize);
        let plane = ch * cw;
        let base = out.len();
        out.resize(base + 3 * plane, 0.0);
        let dst = &mut out[base..];
        for c in 0..3 {
            let (m, s) = (mean[c], std[c]);
            dst[c * plane..(c + 1) * plane].fill((0.0 - m) / s);
            for y in 0..win_h {
                let row = &mut dst[c * plane + (y + pad_top) * cw + pad_left..][..win_w];
                let src_row = &pixels[y * win_w * 3..][..win_w * 3];
                for (v, p) in row.iter_mut().zip(src_row.iter().skip(c).step_by(3)) {
                    *v = (*p as f32 * scale - m) / s;
                }
            }
        }
        Ok(())
    }
}

/// A test-only fault: with the `failpoints` feature (which only test builds
/// have) and `CLIPQL_FAILPOINT_RESIZE_WIDTH=W`, the resize of every image W
/// pixels wide fails, after the size check has passed: how the tests make
/// a failure that only the full preprocessing sees.
#[cfg(feature = "failpoints")]
fn failpoint_resize(width: u32) -> Result<(), ImageError> {
    static WIDTH: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let failing = WIDTH.get_or_init(|| {
        std::env::var("CLIPQL_FAILPOINT_RESIZE_WIDTH")
            .ok()
            .and_then(|w| w.parse().ok())
    });
    if *failing == Some(width) {
        return Err(ImageError::Inference(format!(
            "resize: injected failure for images {width} pixels wide (CLIPQL_FAILPOINT_RESIZE_WIDTH)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_size_forms_and_defaults() {
        let a = PreprocessConfig::from_json(r#"{"size": 224, "crop_size": 224}"#).unwrap();
        let b = PreprocessConfig::from_json(
            r#"{"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.resize, Some(ResizeTarget::ShortestEdge(224)));
        assert_eq!(a.resample, Resample::Bicubic);
        let c = PreprocessConfig::from_json(
            r#"{"do_resize": false, "do_center_crop": false, "do_normalize": false, "resample": 2}"#,
        )
        .unwrap();
        assert_eq!(c.resize, None);
        assert_eq!(c.crop, None);
        assert_eq!(c.normalize, None);
        assert_eq!(c.resample, Resample::Bilinear);
    }

    /// `SiglipImageProcessor`'s defaults differ from CLIP's: an exact
    /// square resize, no crop, mean and std 0.5. NaFlex and unknown
    /// processors are refused, naming what runs.
    #[test]
    fn the_processor_class_gives_the_defaults() {
        let siglip = PreprocessConfig::from_json(
            r#"{"image_processor_type": "SiglipImageProcessor", "size": 384}"#,
        )
        .unwrap();
        assert_eq!(
            siglip.resize,
            Some(ResizeTarget::Exact {
                height: 384,
                width: 384
            })
        );
        assert_eq!(siglip.crop, None);
        assert_eq!(siglip.normalize, Some(([0.5; 3], [0.5; 3])));
        assert_eq!(siglip.fixed_size(), Some((384, 384)));
        let bare =
            PreprocessConfig::from_json(r#"{"image_processor_type": "SiglipImageProcessor"}"#)
                .unwrap();
        assert_eq!(bare.fixed_size(), Some((224, 224)));
        let naflex =
            PreprocessConfig::from_json(r#"{"image_processor_type": "Siglip2ImageProcessor"}"#)
                .unwrap_err();
        assert!(naflex.contains("NaFlex"), "{naflex}");
        let other =
            PreprocessConfig::from_json(r#"{"image_processor_type": "BlipImageProcessor"}"#)
                .unwrap_err();
        assert!(
            other.contains("CLIPImageProcessor and SiglipImageProcessor"),
            "{other}"
        );
    }

    /// Batching keys on this: a centre crop (CLIP) or an exact resize
    /// (SigLIP-style) gives every image one size; a shortest-edge resize
    /// alone does not.
    #[test]
    fn the_fixed_input_size_comes_from_a_crop_or_an_exact_resize() {
        let size = |json: &str| PreprocessConfig::from_json(json).unwrap().fixed_size();
        assert_eq!(size(r#"{"size": 224, "crop_size": 200}"#), Some((200, 200)));
        assert_eq!(
            size(r#"{"size": {"height": 384, "width": 256}, "do_center_crop": false}"#),
            Some((384, 256))
        );
        assert_eq!(size(r#"{"size": 224, "do_center_crop": false}"#), None);
        assert_eq!(
            PreprocessConfig::from_json(
                r#"{"size": {"height": 384, "width": 256}, "do_center_crop": false}"#
            )
            .unwrap()
            .fixed_len(),
            Some(3 * 384 * 256)
        );
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            r#"{"resample": 9}"#,
            r#"{"image_mean": [0.1, 0.2]}"#,
            r#"{"image_std": [0, 1, 1]}"#,
            r#"{"size": {"height": 3}}"#,
            r#"{"crop_size": 0}"#,
            r#"{"size": 0}"#,
            r#"{"size": {"shortest_edge": 0}}"#,
            r#"{"size": {"height": 224, "width": 0}}"#,
            "not json",
        ] {
            assert!(PreprocessConfig::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shortest_edge_truncates_the_long_side_like_transformers() {
        let c = PreprocessConfig::from_json(r#"{"size": 224}"#).unwrap();
        // int(224 * 451 / 300) = 336; the long side of an extreme image is huge,
        // but only its crop window is ever computed (see the next test).
        assert_eq!(c.resized_size(451, 300), (336, 224));
        assert_eq!(c.resized_size(300, 451), (224, 336));
        assert_eq!(c.resized_size(10000, 10), (224_000, 224));
        assert_eq!(c.resized_size(1, 10000), (224, 2_240_000));
        assert_eq!(c.resized_size(1, 4_000_000_000), (224, 896_000_000_000));
    }

    #[test]
    fn extreme_aspect_ratios_cost_only_the_crop() {
        let c = PreprocessConfig::from_json(r#"{"size": 224, "crop_size": 224}"#).unwrap();
        for (w, h) in [(10_000, 10), (1, 20_000), (3, 1)] {
            let img = RgbImage::from_pixel(w, h, image::Rgb([200, 100, 50]));
            let mut out = Vec::new();
            c.apply(&img, &mut out).unwrap();
            assert_eq!(out.len(), 3 * 224 * 224, "{w}x{h}");
        }
        // Without a crop the whole resized image is the output, so a huge
        // one is refused instead of allocated.
        let c = PreprocessConfig::from_json(r#"{"size": 224, "do_center_crop": false}"#).unwrap();
        let img = RgbImage::from_pixel(1, 20_000, image::Rgb([0, 0, 0]));
        assert!(matches!(
            c.apply(&img, &mut Vec::new()),
            Err(ImageError::ResizedTooLarge { .. })
        ));
    }

    #[test]
    fn crops_pad_with_normalised_zero_when_the_image_is_small() {
        let c = PreprocessConfig::from_json(
            r#"{"do_resize": false, "crop_size": 4, "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5]}"#,
        )
        .unwrap();
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        let mut out = Vec::new();
        c.apply(&img, &mut out).unwrap();
        assert_eq!(out.len(), 3 * 16);
        // rows 1..3, cols 1..3 hold the image (white -> 1.0), the rest is padding (-1.0)
        assert_eq!(out[0], -1.0);
        assert_eq!(out[5], 1.0);
        assert_eq!(out[10], 1.0);
        assert_eq!(out[15], -1.0);
    }
}
