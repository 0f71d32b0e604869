//! A loaded CLIP model: both towers, the tokenizer, the preprocessing
//! parameters and the text-embedding cache.

mod config;
mod family;
mod logit_scale;
mod registry;
mod text;
mod vision;

use std::collections::HashMap;
use std::hash::RandomState;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{ClipError, ImageError, Result};
use crate::metrics::{InferenceMetrics, ModelStats};
use crate::options::ModelOptions;
use crate::preprocess::PreprocessConfig;
use crate::score::l2_normalize;
use crate::tokenize::{TextTokenizer, TokenizerSettings};
use crate::tower::{Float, Int, Port, RunGate, ThreadConfig, Tower};

use config::require;
pub use config::{ModelConfig, available_dtypes};
pub use family::{ConfigDefaults, Modality, ModelFamily, TextPadding};
use logit_scale::{Trained, trained_logits};
pub use registry::{DEFAULT_MAX_MODELS, load_shared, loaded_models};
pub use text::TEXT_CACHE_CAPACITY;
use text::TextInputs;
use vision::ImageKey;

/// A normalised embedding shared between queries.
pub type Embedding = Arc<[f32]>;

/// A CLIP model loaded from a directory in the HF / Transformers.js ONNX layout.
pub struct ClipModel {
    dir: PathBuf,
    options: ModelOptions,
    config: ModelConfig,
    preprocess: PreprocessConfig,
    tokenizer: TextTokenizer,
    vision: Tower,
    pixel_values: Port<Float>,
    image_embeds: Port<Float>,
    text: Tower,
    input_ids: Port<Int>,
    attention_mask: Option<Port<Int>>,
    text_embeds: Port<Float>,
    /// Fixed sequence length when the text graph declares one.
    text_len: Option<usize>,
    text_cache: Mutex<HashMap<String, Embedding>>,
    /// Serialises cache fills so each distinct text reaches the tower once.
    text_fill: Mutex<()>,
    /// Recent image outcomes by content, so that several functions over the
    /// same images in one query (`clip_classify` and `clip_scores`, say)
    /// decode and embed each image once.
    image_cache: Mutex<HashMap<ImageKey, std::result::Result<Embedding, ImageError>>>,
    image_hashers: (RandomState, RandomState),
    /// Measured (or remembered) at load, before the towers (see
    /// [`ClipModel::logit_scale`]).
    trained: std::result::Result<Trained, String>,
    counters: InferenceMetrics,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClipModel {
    /// Loads a model directory. Prefer [`crate::load_shared`], which loads
    /// each (directory, options) once per process.
    pub fn load(dir: &Path, options: ModelOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ClipError::ModelFileMissing {
                dir: dir.to_path_buf(),
                file: "(the directory itself)".into(),
                hint: "; expected a folder in the HF / Transformers.js ONNX layout \
                       (onnx/vision_model.onnx, onnx/text_model.onnx, tokenizer.json, \
                       preprocessor_config.json, config.json)"
                    .into(),
            });
        }
        let layout_hint = || {
            "; ClipQL reads the HF / Transformers.js ONNX layout, as published for Xenova/clip-vit-base-patch32".to_string()
        };
        let config = ModelConfig::from_file(&require(dir, "config.json", layout_hint)?)?;
        let preprocess =
            PreprocessConfig::from_file(&require(dir, "preprocessor_config.json", layout_hint)?)?;
        let tokenizer_path = require(dir, "tokenizer.json", layout_hint)?;
        let settings = TokenizerSettings::from_dir(dir, config.family.default_pad_token())?;
        let tokenizer =
            TextTokenizer::from_file(&tokenizer_path, config.context_length, &settings)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(ClipError::ModelFile {
                path: tokenizer_path,
                message: format!(
                    "the tokenizer has {} tokens but the text model's vocabulary has {}: \
                     tokenizer.json does not belong to this model",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let dtype_hint = || {
            let have = available_dtypes(dir);
            if have.is_empty() {
                "; no tower files found under onnx/".to_string()
            } else {
                format!(
                    "; this directory has dtype {} (set clip.dtype / --dtype accordingly)",
                    have.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let vision_path = require(dir, &options.dtype.file("vision_model"), dtype_hint)?;
        let text_path = require(dir, &options.dtype.file("text_model"), dtype_hint)?;
        let threads = ThreadConfig {
            intra_threads: options.resolved_intra_threads(),
            sessions: options.sessions,
            spinning: options.spinning,
            optimization: options.graph_optimization,
        };
        // The probe loads the combined graph, as large as both towers: run it
        // before they load, so its memory is gone before theirs is taken.
        // Measured on a full-size ViT-B/32 (fp32), classifying 32 images:
        // peak RSS 1.54 GB with the probe after the towers, 0.89-0.94 GB with
        // it before them, the same as with no probe at all.
        let trained = trained_logits(dir, &config, &options, &preprocess, &tokenizer)
            .map_err(|e| e.to_string());
        // Building a session is mostly single-threaded (parsing, graph
        // optimisation), so the towers load side by side. On a full-size
        // ViT-B/32 (2 cores) that took start-up from 1.8 s to 1.4 s, for
        // 60-120 MB more peak RSS (0.95 GB in all).
        let gate = RunGate::new(threads.sessions);
        let (vision, text) = std::thread::scope(|s| {
            let text = s.spawn(|| Tower::load(&text_path, threads, Arc::clone(&gate)));
            let vision = Tower::load(&vision_path, threads, Arc::clone(&gate));
            let text = text
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (vision, text)
        });
        let (vision, text) = (vision?, text?);
        let pixel_values = vision.float_input(&["pixel_values"])?;
        vision.only_inputs(&["pixel_values"])?;
        let image_embeds =
            vision.float_output_of(config.family.embedding_outputs(Modality::Image))?;
        if let (Some((ch, cw)), [_, _, h, w]) =
            (preprocess.fixed_size(), pixel_values.shape.as_slice())
            && *h > 0
            && *w > 0
            && (*h as u32, *w as u32) != (ch, cw)
        {
            return Err(ClipError::Graph {
                path: vision_path,
                message: format!(
                    "pixel_values is {h}x{w} but preprocessor_config.json makes {ch}x{cw} images"
                ),
            });
        }
        let TextInputs {
            input_ids,
            attention_mask,
            static_len: text_len,
        } = TextInputs::of(&text, &text_path)?;
        text.only_inputs(&["input_ids", "attention_mask"])?;
        let text_embeds = text.float_output_of(config.family.embedding_outputs(Modality::Text))?;
        for (port, path) in [(&image_embeds, &vision_path), (&text_embeds, &text_path)] {
            if let Some(&d) = port.shape.last()
                && d > 0
                && d as usize != config.projection_dim
            {
                return Err(ClipError::Graph {
                    path: path.clone(),
                    message: format!(
                        "{} has dimension {d} but config.json's projection_dim is {}",
                        port.name, config.projection_dim
                    ),
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            options,
            config,
            preprocess,
            tokenizer,
            vision,
            pixel_values,
            image_embeds,
            text,
            input_ids,
            attention_mask,
            text_embeds,
            text_len,
            text_cache: Mutex::new(HashMap::new()),
            text_fill: Mutex::new(()),
            image_cache: Mutex::new(HashMap::new()),
            image_hashers: (RandomState::new(), RandomState::new()),
            trained,
            counters: InferenceMetrics::default(),
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Facts from `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// The preprocessing parameters.
    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Counters since load. For the work of one query or job alone, run it
    /// inside [`crate::InferenceMetrics::scope`].
    pub fn stats(&self) -> ModelStats {
        self.counters.snapshot()
    }

    pub(super) fn split_rows(
        &self,
        tower: &Tower,
        shape: &[i64],
        data: Vec<f32>,
        n: usize,
    ) -> Result<Vec<Embedding>> {
        let dim = self.config.projection_dim;
        if shape != [n as i64, dim as i64] {
            return Err(ClipError::Graph {
                path: tower.path.clone(),
                message: format!(
                    "output has shape {shape:?}, expected [{n}, {dim}] (config.json projection_dim = {dim})"
                ),
            });
        }
        Ok(data
            .chunks_exact(dim)
            .map(|row| {
                let mut row = row.to_vec();
                l2_normalize(&mut row);
                Embedding::from(row)
            })
            .collect())
    }
}
