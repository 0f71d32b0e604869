//! Pillow's `Image.resize` on 8-bit RGB, reproduced to the bit.
//!
//! transformers' image processors resize with PIL, so its arithmetic is the
//! reference. Pillow's antialiased filters (`Resample.c`) are separable
//! convolutions whose kernel is stretched by the downscale factor: a
//! horizontal pass into an 8-bit intermediate image, then a vertical pass.
//! Each output pixel's weights are computed in `f64`, normalised to sum to
//! 1, and quantised to 22-bit fixed point; a pass sums `pixel · weight` in
//! `i32` from a rounding offset of one half and clips the top 8 bits to
//! 0..=255. We do the same steps in the same order, so the result is
//! Pillow's, pixel for pixel (`tests/fixtures/golden/pil_resize.json` pins
//! it for every filter). SIMD resizers (`fast_image_resize`, Pillow-SIMD)
//! quantise weights to 16 bits or run `f32`, which moves some pixels by one
//! level, and a level is enough to move a sharp model's scores past our
//! 1e-3 parity bound.
//!
//! [`resize_window`] computes only a window of the resized image (the
//! centre crop): each output pixel's weights depend only on its own
//! position, so the window equals the same region of a full resize.
//! `NEAREST` is Pillow's affine nearest-neighbour transform, whose source
//! position is accumulated in `f64` step by step.

/// PIL resampling filters, by their `Image.Resampling` integer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// 0
    Nearest,
    /// 1
    Lanczos,
    /// 2
    Bilinear,
    /// 3 (CLIP's)
    Bicubic,
    /// 4
    Box,
    /// 5
    Hamming,
}

impl Resample {
    /// From PIL's integer code.
    pub fn from_pil(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }
}

/// Fixed-point bits of a quantised weight (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A filter function and its support (half-width at scale 1), as Pillow's
/// `struct filter`.
type Kernel = (fn(f64) -> f64, f64);

impl Resample {
    /// Pillow's filter function and support, `None` for nearest.
    fn kernel(self) -> Option<Kernel> {
        Some(match self {
            Self::Nearest => return None,
            Self::Box => (box_filter, 0.5),
            Self::Bilinear => (bilinear_filter, 1.0),
            Self::Hamming => (hamming_filter, 1.0),
            Self::Bicubic => (bicubic_filter, 2.0),
            Self::Lanczos => (lanczos_filter, 3.0),
        })
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes the constants as C `float`s.
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// The quantised weights of some outputs of one axis.
struct Axis {
    /// First source index of each output.
    first: Vec<usize>,
    /// Each output's weights, `taps` apart (zero past its own count).
    weights: Vec<i32>,
    /// Number of source indices of each output.
    count: Vec<usize>,
    taps: usize,
}

impl Axis {
    /// Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` for outputs
    /// `start..start + len` of an axis resized from `src` to `dst` pixels.
    fn new(src: u32, dst: u64, start: u64, len: usize, (filter, support): Kernel) -> Self {
        let scale = src as f64 / dst as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let taps = support.ceil() as usize * 2 + 1;
        let mut axis = Self {
            first: Vec::with_capacity(len),
            weights: vec![0; len * taps],
            count: Vec::with_capacity(len),
            taps,
        };
        let mut k = vec![0.0f64; taps];
        for (i, xx) in (start..start + len as u64).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(src as i64).max(0) as usize;
            let n = xmax.saturating_sub(xmin).min(taps);
            let mut ww = 0.0;
            for (x, w) in k[..n].iter_mut().enumerate() {
                *w = filter(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *w;
            }
            let one = (1u32 << PRECISION_BITS) as f64;
            for (q, &w) in axis.weights[i * taps..][..n].iter_mut().zip(&k[..n]) {
                let w = if ww != 0.0 { w / ww } else { w };
                *q = if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                };
            }
            axis.first.push(xmin);
            axis.count.push(n);
        }
        axis
    }

    /// The source indices outputs of this axis read: `(first, end)`.
    fn span(&self) -> (usize, usize) {
        let first = self.first.iter().copied().min().unwrap_or(0);
        let end = self
            .first
            .iter()
            .zip(&self.count)
            .map(|(f, n)| f + n)
            .max()
            .unwrap_or(0);
        (first, end.max(first))
    }

    fn of(&self, i: usize) -> (usize, &[i32]) {
        (
            self.first[i],
            &self.weights[i * self.taps..][..self.count[i]],
        )
    }
}

/// Pillow's `clip8`: the top bits of a fixed-point sum, clipped to 0..=255.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes packed RGB8 `src` of size `(w0, h0)` to `(w, h)` as Pillow's
/// `Image.resize(..., resample)` does, and returns only the `window`
/// (left, top, width, height) of the result, packed RGB8.
pub(crate) fn resize_window(
    src: &[u8],
    (w0, h0): (u32, u32),
    (w, h): (u64, u64),
    (left, top, cw, ch): (u64, u64, u32, u32),
    resample: Resample,
) -> Vec<u8> {
    let (cw, ch) = (cw as usize, ch as usize);
    let stride = w0 as usize * 3;
    let Some(kernel) = resample.kernel() else {
        return nearest(src, (w0, h0), (w, h), (left, top, cw, ch));
    };
    let need_horizontal = w != w0 as u64;
    let need_vertical = h != h0 as u64;
    // Rows of the source the window's output rows read.
    let vertical = need_vertical.then(|| Axis::new(h0, h, top, ch, kernel));
    let (row0, row_end) = match &vertical {
        Some(v) => v.span(),
        None => (top as usize, top as usize + ch),
    };
    let rows = row_end - row0;

    // Horizontal pass: the window's columns of those rows.
    let horizontal: Vec<u8> = if need_horizontal {
        let axis = Axis::new(w0, w, left, cw, kernel);
        let mut out = Vec::with_capacity(rows * cw * 3);
        for y in row0..row_end {
            let line = &src[y * stride..][..stride];
            for x in 0..cw {
                let (first, weights) = axis.of(x);
                let (mut r, mut g, mut b) = (HALF, HALF, HALF);
                for (p, &k) in line[first * 3..].chunks_exact(3).zip(weights) {
                    r += p[0] as i32 * k;
                    g += p[1] as i32 * k;
                    b += p[2] as i32 * k;
                }
                out.extend([clip8(r), clip8(g), clip8(b)]);
            }
        }
        out
    } else {
        let left = left as usize * 3;
        (row0..row_end)
            .flat_map(|y| &src[y * stride + left..][..cw * 3])
            .copied()
            .collect()
    };

    // Vertical pass over the intermediate rows.
    let Some(vertical) = vertical else {
        return horizontal;
    };
    let line = cw * 3;
    let mut out = Vec::with_capacity(ch * line);
    let mut sums = vec![0i32; line];
    for y in 0..ch {
        let (first, weights) = vertical.of(y);
        sums.fill(HALF);
        for (i, &k) in weights.iter().enumerate() {
            let row = &horizontal[(first + i - row0) * line..][..line];
            for (s, &p) in sums.iter_mut().zip(row) {
                *s += p as i32 * k;
            }
        }
        out.extend(sums.iter().map(|&s| clip8(s)));
    }
    out
}

/// Pillow's `NEAREST` resize: an affine transform whose source position
/// starts half a step in and is accumulated in `f64`, truncated.
fn nearest(
    src: &[u8],
    (w0, h0): (u32, u32),
    (w, h): (u64, u64),
    (left, top, cw, ch): (u64, u64, usize, usize),
) -> Vec<u8> {
    let index = |src_len: u32, dst: u64, start: u64, len: usize| -> Vec<usize> {
        let step = src_len as f64 / dst as f64;
        let mut at = step * 0.5;
        let mut out = Vec::with_capacity(len);
        for i in 0..start + len as u64 {
            if i >= start {
                out.push((at.max(0.0) as usize).min(src_len as usize - 1));
            }
            at += step;
        }
        out
    };
    let xs = index(w0, w, left, cw);
    let ys = index(h0, h, top, ch);
    let stride = w0 as usize * 3;
    let mut out = Vec::with_capacity(cw * ch * 3);
    for &y in &ys {
        let line = &src[y * stride..][..stride];
        for &x in &xs {
            out.extend_from_slice(&line[x * 3..][..3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/generate_shapes.py`'s `pattern`: red ramps along x,
    /// green along y, blue a 7x5 checkerboard (sharp edges, so negative
    /// lobes clip).
    fn pattern(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                out.extend([
                    (x * 255 / (w - 1).max(1)) as u8,
                    (y * 255 / (h - 1).max(1)) as u8,
                    if (x / 7 + y / 5) % 2 == 0 { 255 } else { 0 },
                ]);
            }
        }
        out
    }

    #[derive(serde::Deserialize)]
    struct Case {
        from: (u32, u32),
        to: (u32, u32),
        resample: u32,
        filter: String,
        rgb: String,
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Every filter, down, up, one axis and both, equals Pillow 13's
    /// `Image.resize` byte for byte.
    #[test]
    fn every_filter_is_pillows_to_the_bit() {
        #[derive(serde::Deserialize)]
        struct Doc {
            cases: Vec<Case>,
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/golden/pil_resize.json");
        let doc: Doc = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc.cases.len(), 42);
        for case in doc.cases {
            let (w0, h0) = case.from;
            let (w, h) = case.to;
            let resample = Resample::from_pil(case.resample).unwrap();
            let ours = resize_window(
                &pattern(w0, h0),
                (w0, h0),
                (w as u64, h as u64),
                (0, 0, w, h),
                resample,
            );
            let theirs = hex(&case.rgb);
            let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(
                (ours.len(), differing),
                (theirs.len(), 0),
                "{} {w0}x{h0} -> {w}x{h}",
                case.filter
            );
        }
    }

    /// A window is the same region of the full resize, for every filter.
    #[test]
    fn a_window_equals_that_region_of_the_full_resize() {
        let src = pattern(23, 17);
        for code in 0..=5 {
            let resample = Resample::from_pil(code).unwrap();
            for (w, h) in [(40u32, 30u32), (11, 9), (23, 8), (9, 17)] {
                let full =
                    resize_window(&src, (23, 17), (w as u64, h as u64), (0, 0, w, h), resample);
                for (left, top, cw, ch) in [(1, 2, 5, 3), (0, 0, w, 1), (w - 1, h - 1, 1, 1)] {
                    let window = resize_window(
                        &src,
                        (23, 17),
                        (w as u64, h as u64),
                        (left as u64, top as u64, cw, ch),
                        resample,
                    );
                    let expected: Vec<u8> = (top..top + ch)
                        .flat_map(|y| {
                            let start = ((y * w + left) * 3) as usize;
                            full[start..start + cw as usize * 3].to_vec()
                        })
                        .collect();
                    assert_eq!(
                        window, expected,
                        "filter {code}, {w}x{h}, window {left},{top}"
                    );
                }
            }
        }
    }
}
