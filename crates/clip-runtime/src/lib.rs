//! CLIP zero-shot image classification on ONNX Runtime, with no SQL.
//!
//! `clip-runtime` loads a CLIP model exported in the HF / Transformers.js ONNX
//! layout, decodes and preprocesses images the way transformers'
//! `CLIPImageProcessor` does, tokenises text like `CLIPTokenizer`, and scores
//! images against labels as `pipeline("zero-shot-image-classification")`
//! does: `softmax(logit_scale · cosine)`.
//!
//! ```no_run
//! use clip_runtime::{DecodeLimits, ModelOptions, label_probabilities, load_shared};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = load_shared("models/clip-vit-base-patch32".as_ref(), ModelOptions::default())?;
//! let bytes = std::fs::read("cat.jpg")?;
//! let images = model.embed_images(&[&bytes], 16, &DecodeLimits::default())?;
//! let labels = model.embed_texts(&["a photo of a cat", "a photo of a dog"])?;
//! let image = images[0].clone()?;
//! let probs = label_probabilities(&image, &labels, model.logit_scale()?);
//! println!("{probs:?}");
//! # Ok(()) }
//! ```

mod decode;
mod error;
mod jpeg;
mod model;
pub mod onnxruntime;
mod options;
mod preprocess;
mod score;
mod tokenize;
mod tower;

pub use decode::{DecodeLimits, decode_rgb};
pub use error::{ClipError, ImageError, Result};
pub use model::{
    ClipModel, Embedding, ModelConfig, ModelStats, TEXT_CACHE_CAPACITY, available_dtypes,
    load_shared,
};
pub use options::{Dtype, ModelOptions};
pub use preprocess::{PreprocessConfig, Resample, ResizeTarget};
pub use score::{argmax, dot, l2_normalize, label_probabilities, ranked, softmax};
pub use tokenize::{TextTokenizer, TokenBatch};
