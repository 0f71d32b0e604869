//! Zero-shot image classification (CLIP, SigLIP) on ONNX Runtime, with no SQL.
//!
//! `clip-runtime` loads a model exported in the HF / Transformers.js ONNX
//! layout, decodes and preprocesses images the way transformers' image
//! processors do, tokenises text like the model's tokenizer, and scores
//! images against labels as `pipeline("zero-shot-image-classification")`
//! does: for CLIP `softmax(logit_scale · cosine)`, for SigLIP
//! `sigmoid(logit_scale · cosine + logit_bias)` per label ([`ModelFamily`]).
//!
//! ```
//! use clip_runtime::{DecodeLimits, ModelOptions, argmax, load_shared};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
//! # let model_dir = format!("{root}/model");
//! # let photo = format!("{root}/photos/chelsea.jpg");
//! // Any model directory in the HF / Transformers.js ONNX layout.
//! let model = load_shared(model_dir.as_ref(), ModelOptions::default())?;
//! let bytes = std::fs::read(&photo)?;
//! let images = model.embed_images(&[&bytes], 16, &DecodeLimits::default())?;
//! let labels = ["a photo of a cat", "a photo of a horse"];
//! let texts = model.embed_texts(&labels)?;
//! let image = images[0].clone()?; // a per-image Result: bad images are not fatal
//! let probs = model.scorer(None)?.probabilities(&image, &texts);
//! assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
//! println!("{}", labels[argmax(&probs).unwrap()]);
//! # Ok(()) }
//! ```

mod budget;
mod decode;
mod error;
pub mod hub;
mod jpeg;
mod metrics;
mod model;
pub mod onnxruntime;
mod options;
mod prepare;
mod preprocess;
mod resample;
mod scale_cache;
mod score;
mod tokenize;
mod tower;

pub use budget::{
    BYTES_PER_PIXEL, DEFAULT_DECODE_MEMORY, DecodePermit, decode_memory, decode_memory_in_use,
};
pub use decode::{decode_rgb, decode_rgb_at_least, decode_rgb_budgeted};
pub use error::{ClipError, ImageError, MAX_REASON_CHARS, Result, printable_reason};
pub use metrics::{InferenceMetrics, ModelStats};
pub use model::{
    ClipModel, ConfigDefaults, DEFAULT_MAX_MODELS, Embedding, Modality, ModelConfig, ModelFamily,
    TEXT_CACHE_CAPACITY, TextPadding, available_dtypes, load_shared, loaded_models,
};
pub use options::{DecodeLimits, Dtype, GraphOptimization, ModelOptions};
pub use prepare::{PixelValues, image_error, prepare_image};
pub use preprocess::{PreprocessConfig, Resample, ResizeTarget};
pub use scale_cache::{ScaleCache, cache_dir};
pub use score::{
    Scorer, ScoringRule, TrainedLogits, argmax, dot, ensemble, l2_normalize, label_probabilities,
    ranked, sigmoid, softmax, top_k,
};
pub use tokenize::{PaddingSide, SpecialTokens, TextTokenizer, TokenBatch, TokenizerSettings};
