//! Options that pick a model's files and shape its ONNX sessions, and the
//! limits every image is decoded under.

use std::fmt;
use std::str::FromStr;

use crate::error::ClipError;

/// Which tower files to load: `onnx/<tower>{,_quantized,_fp16}.onnx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `vision_model.onnx`, `text_model.onnx`.
    #[default]
    Fp32,
    /// `*_quantized.onnx` (dynamically int8-quantized weights).
    Quantized,
    /// `*_fp16.onnx` (half-precision weights; float16 inputs are converted).
    Fp16,
}

impl Dtype {
    /// The file-name suffix of this variant.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Fp32 => "",
            Self::Quantized => "_quantized",
            Self::Fp16 => "_fp16",
        }
    }

    /// The ONNX file of a tower (`vision_model`, `text_model`, `model`).
    pub fn file(self, tower: &str) -> String {
        format!("onnx/{tower}{}.onnx", self.suffix())
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Quantized => "quantized",
            Self::Fp16 => "fp16",
        })
    }
}

impl FromStr for Dtype {
    type Err = ClipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Ok(Self::Fp32),
            "quantized" | "q8" | "int8" => Ok(Self::Quantized),
            "fp16" | "float16" => Ok(Self::Fp16),
            _ => Err(ClipError::InvalidOption {
                name: "dtype".into(),
                value: s.into(),
                message: "expected fp32, quantized or fp16".into(),
            }),
        }
    }
}

/// ONNX Runtime's graph optimisation level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GraphOptimization {
    /// No graph rewrites.
    None,
    /// Constant folding and redundant-node removal.
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything ORT has, including layout optimisations (its default).
    #[default]
    All,
}

impl fmt::Display for GraphOptimization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Basic => "basic",
            Self::Extended => "extended",
            Self::All => "all",
        })
    }
}

impl FromStr for GraphOptimization {
    type Err = ClipError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "disable" => Ok(Self::None),
            "basic" => Ok(Self::Basic),
            "extended" => Ok(Self::Extended),
            "all" => Ok(Self::All),
            _ => Err(ClipError::InvalidOption {
                name: "graph_optimization".into(),
                value: s.into(),
                message: "expected none, basic, extended or all".into(),
            }),
        }
    }
}

/// How a model is loaded. Two loads with equal options share one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ModelOptions {
    /// Tower file variant.
    pub dtype: Dtype,
    /// ONNX Runtime intra-op threads per session; 0 means one per core.
    pub intra_threads: usize,
    /// Sessions per tower. Each can run one batch at a time; more sessions
    /// let concurrent partitions infer in parallel at the cost of memory.
    pub sessions: usize,
    /// Whether idle ONNX Runtime worker threads spin briefly between the
    /// parallel sections of a run instead of sleeping (ORT's own default).
    /// On by default: the vision tower ran about 30% faster with it on the
    /// benchmark machine, and decoding still overlaps inference because
    /// threads sleep once a run ends (BENCHMARKS.md has the measurement).
    pub spinning: bool,
    /// ONNX Runtime's graph optimisation level.
    pub graph_optimization: GraphOptimization,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            dtype: Dtype::Fp32,
            intra_threads: 0,
            sessions: 1,
            spinning: true,
            graph_optimization: GraphOptimization::All,
        }
    }
}

impl ModelOptions {
    /// Sets [`ModelOptions::dtype`].
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Sets [`ModelOptions::intra_threads`].
    pub fn with_intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = threads;
        self
    }

    /// Sets [`ModelOptions::spinning`].
    pub fn with_spinning(mut self, spinning: bool) -> Self {
        self.spinning = spinning;
        self
    }

    /// Sets [`ModelOptions::graph_optimization`].
    pub fn with_graph_optimization(mut self, level: GraphOptimization) -> Self {
        self.graph_optimization = level;
        self
    }

    /// Sets [`ModelOptions::sessions`].
    pub fn with_sessions(mut self, sessions: usize) -> Self {
        self.sessions = sessions.max(1);
        self
    }

    /// Intra-op threads with 0 resolved to the number of cores, divided
    /// between the sessions so that they never oversubscribe the machine.
    pub fn resolved_intra_threads(&self) -> usize {
        if self.intra_threads > 0 {
            return self.intra_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.sessions.max(1)).max(1)
    }
}

/// Limits applied to every image before and during decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// Largest accepted width × height. Defaults to PIL's `MAX_IMAGE_PIXELS`
    /// (89,478,485), the bound deployed CLIP pipelines already live with.
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes. Defaults to 256 MiB.
    pub max_bytes: u64,
    /// Decode a JPEG at a reduced size (libjpeg's DCT scaling by 1/2, 1/4 or
    /// 1/8) when its shorter side stays at least as long as the model's
    /// resize target: several times less decoding for large photos, with
    /// embeddings that differ slightly from a full decode's (BENCHMARKS.md
    /// measures by how much). Off by default: the default is transformers'
    /// pixels. [`crate::decode_rgb`] alone, which knows no target, ignores it.
    pub fast_jpeg: bool,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 89_478_485,
            max_bytes: 256 * 1024 * 1024,
            fast_jpeg: false,
        }
    }
}

impl DecodeLimits {
    /// Sets [`DecodeLimits::max_pixels`].
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// Sets [`DecodeLimits::max_bytes`].
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`DecodeLimits::fast_jpeg`].
    pub fn with_fast_jpeg(mut self, fast_jpeg: bool) -> Self {
        self.fast_jpeg = fast_jpeg;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_round_trips_and_names_files() {
        for d in [Dtype::Fp32, Dtype::Quantized, Dtype::Fp16] {
            assert_eq!(d.to_string().parse::<Dtype>().unwrap(), d);
        }
        assert_eq!(
            Dtype::Quantized.file("vision_model"),
            "onnx/vision_model_quantized.onnx"
        );
        assert_eq!(Dtype::Fp32.file("text_model"), "onnx/text_model.onnx");
        let err = "int4".parse::<Dtype>().unwrap_err().to_string();
        assert!(err.contains("expected fp32, quantized or fp16"), "{err}");
    }

    #[test]
    fn threads_are_shared_between_sessions() {
        let o = ModelOptions::default().with_intra_threads(3);
        assert_eq!(o.resolved_intra_threads(), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let o = ModelOptions::default().with_sessions(cores * 2);
        assert_eq!(o.resolved_intra_threads(), 1);
    }
}
