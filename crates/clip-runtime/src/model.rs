//! A loaded CLIP model: both towers, the tokenizer, the preprocessing
//! parameters and the text-embedding cache.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use crate::decode::DecodeLimits;
use crate::error::{ClipError, ImageError, Result};
use crate::metrics::{Event, InferenceMetrics, ModelStats, timed};
use crate::options::{Dtype, ModelOptions};
use crate::prepare::{PixelValues, prepare_image};
use crate::preprocess::PreprocessConfig;
use crate::scale_cache::ScaleCache;
use crate::score::l2_normalize;
use crate::tokenize::TextTokenizer;
use crate::tower::{Float, Int, Port, RunGate, ThreadConfig, Tower, float_tensor, int_tensor};

/// A normalised embedding shared between queries.
pub type Embedding = Arc<[f32]>;

/// Texts per text-tower run when filling the cache.
const TEXT_BATCH: usize = 64;

/// Most texts a model's embedding cache holds (about 128 MiB at 512 dims).
pub const TEXT_CACHE_CAPACITY: usize = 65_536;

/// The parts of `config.json` ClipQL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// Embedding dimension (`projection_dim`).
    pub projection_dim: usize,
    /// Text context length (`text_config.max_position_embeddings`).
    pub context_length: usize,
    /// Text vocabulary size (`text_config.vocab_size`).
    pub vocab_size: usize,
}

#[derive(Deserialize)]
struct ConfigJson {
    projection_dim: Option<usize>,
    text_config: Option<TextConfigJson>,
}

#[derive(Deserialize)]
struct TextConfigJson {
    max_position_embeddings: Option<usize>,
    vocab_size: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfigJson {
    pad_token: Option<serde_json::Value>,
}

impl ModelConfig {
    /// Reads `config.json` of a model directory, without loading any graph.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&require(dir, "config.json", || {
            "; is this a model directory in the HF / Transformers.js ONNX layout?".to_string()
        })?)
    }

    fn from_file(path: &Path) -> Result<Self> {
        let bad = |message: String| ClipError::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let j: ConfigJson = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let t = j.text_config;
        Ok(Self {
            projection_dim: j.projection_dim.unwrap_or(512),
            context_length: t
                .as_ref()
                .and_then(|t| t.max_position_embeddings)
                .unwrap_or(77),
            vocab_size: t.as_ref().and_then(|t| t.vocab_size).unwrap_or(49408),
        })
    }
}

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
    logit_scale: std::result::Result<f32, String>,
    counters: InferenceMetrics,
}

/// Identifies encoded image bytes (with the limits they were decoded under)
/// by length and a 128-bit keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ImageKey {
    len: usize,
    hash: (u64, u64),
    limits: DecodeLimits,
}

/// Most image outcomes a model remembers (a few batches of every partition).
const IMAGE_CACHE_CAPACITY: usize = 1024;

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn require(dir: &Path, file: &str, hint: impl FnOnce() -> String) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClipError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file: file.to_string(),
            hint: hint(),
        })
    }
}

/// Which dtypes have both tower files in `dir`.
pub fn available_dtypes(dir: &Path) -> Vec<Dtype> {
    [Dtype::Fp32, Dtype::Quantized, Dtype::Fp16]
        .into_iter()
        .filter(|d| {
            dir.join(d.file("vision_model")).is_file() && dir.join(d.file("text_model")).is_file()
        })
        .collect()
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
        let pad_token = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<TokenizerConfigJson>(&t).ok())
            .and_then(|c| match c.pad_token {
                Some(serde_json::Value::String(s)) => Some(s),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                _ => None,
            });
        let tokenizer =
            TextTokenizer::from_file(&tokenizer_path, config.context_length, pad_token.as_deref())?;
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
        let logit_scale =
            trained_logit_scale(dir, &options, &preprocess, &tokenizer).map_err(|e| e.to_string());
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
        let image_embeds = vision.float_output("image_embeds")?;
        if let (Some((ch, cw)), [_, _, h, w]) = (preprocess.crop, pixel_values.shape.as_slice())
            && *h > 0
            && *w > 0
            && (*h as u32, *w as u32) != (ch, cw)
        {
            return Err(ClipError::Graph {
                path: vision_path,
                message: format!(
                    "pixel_values is {h}x{w} but preprocessor_config.json crops to {ch}x{cw}"
                ),
            });
        }
        let TextInputs {
            input_ids,
            attention_mask,
            static_len: text_len,
        } = TextInputs::of(&text, &text_path)?;
        text.only_inputs(&["input_ids", "attention_mask"])?;
        let text_embeds = text.float_output("text_embeds")?;
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
            logit_scale,
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

    /// Decodes and preprocesses one image into CHW `f32` (`pixel_values`).
    pub fn pixel_values(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> std::result::Result<Vec<f32>, ImageError> {
        self.preprocess_one(bytes, limits).map(|p| p.data)
    }

    fn preprocess_one(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> std::result::Result<PixelValues, ImageError> {
        let (pixels, took) = timed(|| prepare_image(bytes, limits, &self.preprocess));
        Event::Decoded {
            ok: pixels.is_ok(),
            took,
        }
        .record(&self.counters);
        pixels
    }

    /// Embeds encoded images, `batch_size` at a time through the vision tower.
    ///
    /// The outer `Result` is for failures of the model itself; each image has
    /// its own inner `Result`, so one bad image never fails the others.
    /// Images seen recently (same bytes, same limits) are answered from a
    /// small cache instead of being decoded and embedded again.
    pub fn embed_images(
        &self,
        images: &[&[u8]],
        batch_size: usize,
        limits: &DecodeLimits,
    ) -> Result<Vec<std::result::Result<Embedding, ImageError>>> {
        let keys: Vec<ImageKey> = images.iter().map(|b| self.image_key(b, limits)).collect();
        let mut results: Vec<Option<std::result::Result<Embedding, ImageError>>> = {
            let cache = self.image_cache.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let mut first_of: HashMap<ImageKey, usize> = HashMap::new();
        let todo: Vec<usize> = (0..images.len())
            .filter(|&i| results[i].is_none() && *first_of.entry(keys[i]).or_insert(i) == i)
            .collect();
        let hits = images.len() - todo.len();
        if hits > 0 {
            Event::ImageCacheHits(hits as u64).record(&self.counters);
        }
        for chunk in todo.chunks(batch_size.max(1)) {
            let pixels: Vec<_> = chunk
                .iter()
                .map(|&i| self.preprocess_one(images[i], limits))
                .collect();
            let embedded = self.embed_batch(pixels)?;
            let mut cache = self.image_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() + chunk.len() > IMAGE_CACHE_CAPACITY {
                cache.clear();
            }
            for (&i, outcome) in chunk.iter().zip(embedded) {
                cache.insert(keys[i], outcome.clone());
                results[i] = Some(outcome);
            }
        }
        // Duplicates within this call take their first occurrence's outcome.
        let resolved: Vec<_> = (0..images.len())
            .map(|i| {
                results[i]
                    .clone()
                    .or_else(|| results[first_of[&keys[i]]].clone())
            })
            .collect();
        Ok(resolved
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(ImageError::Inference("image was not processed".into())))
            })
            .collect())
    }

    fn image_key(&self, bytes: &[u8], limits: &DecodeLimits) -> ImageKey {
        ImageKey {
            len: bytes.len(),
            hash: (
                self.image_hashers.0.hash_one(bytes),
                self.image_hashers.1.hash_one(bytes),
            ),
            limits: *limits,
        }
    }

    /// Runs one batch of preprocessed images through the vision tower; images
    /// of the usual (cropped) size share one run. Errors pass through in place.
    fn embed_batch(
        &self,
        pixels: Vec<std::result::Result<PixelValues, ImageError>>,
    ) -> Result<Vec<std::result::Result<Embedding, ImageError>>> {
        let mut results: Vec<std::result::Result<Embedding, ImageError>> =
            Vec::with_capacity(pixels.len());
        let mut batch = Vec::new();
        let mut slots = Vec::new();
        let crop = self.preprocess.crop.map(|(h, w)| (h as usize, w as usize));
        for (i, p) in pixels.into_iter().enumerate() {
            match p {
                Ok(p) if Some((p.height, p.width)) == crop => {
                    batch.extend_from_slice(&p.data);
                    slots.push(i);
                    results.push(Err(ImageError::Inference("pending".into())));
                }
                Ok(p) => {
                    // Without a centre crop every image has its own size, so
                    // each runs alone.
                    let mut emb = self.run_vision(p.data, 1, p.height, p.width)?;
                    results.push(Ok(emb.remove(0)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if let (Some((h, w)), false) = (crop, slots.is_empty()) {
            let embeddings = self.run_vision(batch, slots.len(), h, w)?;
            for (slot, emb) in slots.into_iter().zip(embeddings) {
                results[slot] = Ok(emb);
            }
        }
        Ok(results)
    }

    fn run_vision(&self, data: Vec<f32>, n: usize, h: usize, w: usize) -> Result<Vec<Embedding>> {
        let input = float_tensor(
            &self.pixel_values,
            vec![n as i64, 3, h as i64, w as i64],
            data,
        )?;
        let (mut out, took) = self.vision.run(
            vec![(self.pixel_values.name.clone(), input)],
            &[&self.image_embeds],
            "running the vision tower",
        )?;
        let (shape, data) = out.remove(0);
        let embeddings = self.split_rows(&self.vision, &shape, data, n)?;
        Event::Vision {
            images: n as u64,
            took,
        }
        .record(&self.counters);
        Ok(embeddings)
    }

    fn split_rows(
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

    /// Normalised text embeddings, from the cache or the text tower. Each
    /// distinct text runs through the tower once per model, however many
    /// batches or queries ask for it (while the cache holds it: it keeps up to
    /// [`TEXT_CACHE_CAPACITY`] texts and starts afresh when full).
    pub fn embed_texts<'t>(&self, texts: &[&'t str]) -> Result<Vec<Embedding>> {
        let mut found: HashMap<&'t str, Embedding> = HashMap::with_capacity(texts.len());
        let lookup = |found: &mut HashMap<&'t str, Embedding>| {
            let cache = self.cache();
            for &t in texts {
                if let Some(e) = cache.get(t) {
                    found.insert(t, Arc::clone(e));
                }
            }
        };
        lookup(&mut found);
        let mut computed = 0;
        if found.len() < texts.len() {
            let _fill = self.text_fill.lock().unwrap_or_else(|p| p.into_inner());
            // Another caller may have filled some while we waited.
            lookup(&mut found);
            let mut seen = std::collections::HashSet::new();
            let missing: Vec<&str> = texts
                .iter()
                .copied()
                .filter(|t| !found.contains_key(t) && seen.insert(*t))
                .collect();
            for chunk in missing.chunks(TEXT_BATCH) {
                let embeddings = self.run_text(chunk)?;
                computed += chunk.len();
                let mut cache = self.cache();
                if cache.len() + chunk.len() > TEXT_CACHE_CAPACITY {
                    cache.clear();
                }
                for (&t, e) in chunk.iter().zip(embeddings) {
                    cache.insert(t.to_string(), Arc::clone(&e));
                    found.insert(t, e);
                }
            }
        }
        if found.len() > computed {
            Event::TextCacheHits((found.len() - computed) as u64).record(&self.counters);
        }
        texts
            .iter()
            .map(|t| {
                found
                    .get(t)
                    .cloned()
                    .ok_or_else(|| ClipError::Tokenizer(format!("no embedding computed for {t:?}")))
            })
            .collect()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Embedding>> {
        self.text_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_text(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let (embeddings, took) = timed(|| self.run_text_untimed(texts));
        let embeddings = embeddings?;
        Event::Text {
            texts: texts.len() as u64,
            took,
        }
        .record(&self.counters);
        Ok(embeddings)
    }

    fn run_text_untimed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let batch = self.tokenizer.encode_batch(texts, self.text_len)?;
        let shape = vec![batch.rows as i64, batch.len as i64];
        let mut inputs = vec![(
            self.input_ids.name.clone(),
            int_tensor(&self.input_ids, shape.clone(), batch.ids)?,
        )];
        if let Some(mask) = &self.attention_mask {
            inputs.push((mask.name.clone(), int_tensor(mask, shape, batch.mask)?));
        }
        let (mut out, _) = self
            .text
            .run(inputs, &[&self.text_embeds], "running the text tower")?;
        let (shape, data) = out.remove(0);
        self.split_rows(&self.text, &shape, data, texts.len())
    }

    /// The model's trained `logit_scale` (already exponentiated, e.g. 100).
    ///
    /// Split-tower exports do not contain it, and `config.json` only records
    /// `logit_scale_init_value` (2.6592, the value training *started* from).
    /// The trained value lives in the combined export `onnx/model.onnx`,
    /// constant-folded into the multiplier of its `logits_per_image`. We
    /// measure it once per file: run the combined graph on a probe image and
    /// probe texts and divide `logits_per_image` by the cosine of the
    /// embeddings it returns. The result is kept in the ClipQL cache folder
    /// ([`ScaleCache`]), so later processes skip loading the combined graph.
    pub fn logit_scale(&self) -> Result<f32> {
        self.logit_scale
            .clone()
            .map_err(|reason| ClipError::LogitScale {
                dir: self.dir.clone(),
                reason,
            })
    }
}

/// The text inputs of a graph (the text tower, or the combined graph).
struct TextInputs {
    input_ids: Port<Int>,
    attention_mask: Option<Port<Int>>,
    /// The sequence length, if the graph fixes it.
    static_len: Option<usize>,
}

impl TextInputs {
    fn of(tower: &Tower, path: &Path) -> Result<Self> {
        let input_ids = tower
            .int_input(&["input_ids"], true)?
            .ok_or_else(|| ClipError::Graph {
                path: path.to_path_buf(),
                message: "expected an input named input_ids".into(),
            })?;
        let static_len = match input_ids.shape.as_slice() {
            [_, n] if *n > 0 => Some(*n as usize),
            _ => None,
        };
        Ok(Self {
            attention_mask: tower.int_input(&["attention_mask"], false)?,
            input_ids,
            static_len,
        })
    }
}

/// The trained `logit_scale` of the combined graph (`onnx/model*.onnx`):
/// remembered from an earlier process if this very file was measured
/// before (see [`ScaleCache`]), else measured now and remembered.
fn trained_logit_scale(
    dir: &Path,
    options: &ModelOptions,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
) -> Result<f32> {
    let candidates = [options.dtype, Dtype::Fp32, Dtype::Quantized, Dtype::Fp16];
    let path = candidates
        .iter()
        .map(|d| dir.join(d.file("model")))
        .find(|p| p.is_file())
        .ok_or_else(|| ClipError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file: "onnx/model.onnx".into(),
            hint: String::new(),
        })?;
    let cache = ScaleCache::default_location();
    if let Some(scale) = cache.as_ref().and_then(|c| c.get(&path)) {
        return Ok(scale);
    }
    let scale = measure_logit_scale(&path, options, preprocess, tokenizer)?;
    if let Some(cache) = cache {
        cache.put(&path, scale);
    }
    Ok(scale)
}

/// Runs the combined graph at `path` on a probe and returns
/// `logits_per_image / cosine`: the trained `logit_scale`.
fn measure_logit_scale(
    path: &Path,
    options: &ModelOptions,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
) -> Result<f32> {
    let tower = Tower::load(
        path,
        ThreadConfig {
            intra_threads: options.resolved_intra_threads(),
            sessions: 1,
            spinning: false,
            optimization: options.graph_optimization,
        },
        RunGate::new(1),
    )?;
    let pixels_port = tower.float_input(&["pixel_values"])?;
    let TextInputs {
        input_ids: ids_port,
        attention_mask: mask_port,
        static_len: fixed,
    } = TextInputs::of(&tower, path)?;
    let logits_port = tower.float_output("logits_per_image")?;
    let image_port = tower.float_output("image_embeds")?;
    let text_port = tower.float_output("text_embeds")?;

    let (h, w) = preprocess.crop.unwrap_or((224, 224));
    let n = 3 * h as usize * w as usize;
    // A smooth, deterministic probe image in normalised units.
    let probe: Vec<f32> = (0..n)
        .map(|i| ((i % 997) as f32 / 997.0 - 0.5) * 2.0)
        .collect();
    let texts = [
        "a photo of a cat",
        "a diagram of a circuit",
        "the number seven",
    ];
    let batch = tokenizer.encode_batch(&texts, fixed)?;
    let shape = vec![batch.rows as i64, batch.len as i64];
    let mut inputs = vec![
        (
            pixels_port.name.clone(),
            float_tensor(&pixels_port, vec![1, 3, h as i64, w as i64], probe)?,
        ),
        (
            ids_port.name.clone(),
            int_tensor(&ids_port, shape.clone(), batch.ids)?,
        ),
    ];
    if let Some(mask) = &mask_port {
        inputs.push((mask.name.clone(), int_tensor(mask, shape, batch.mask)?));
    }
    let (out, _) = tower.run(
        inputs,
        &[&logits_port, &image_port, &text_port],
        "measuring logit_scale with the combined graph",
    )?;
    let logits = &out[0].1;
    let mut image = out[1].1.clone();
    l2_normalize(&mut image);
    let dim = image.len();
    let (best_cos, best_logit) = out[2]
        .1
        .chunks_exact(dim.max(1))
        .zip(logits)
        .map(|(t, &logit)| {
            let mut t = t.to_vec();
            l2_normalize(&mut t);
            (crate::score::dot(&image, &t), logit)
        })
        .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
        .ok_or_else(|| ClipError::Graph {
            path: path.to_path_buf(),
            message: "logits_per_image is empty".into(),
        })?;
    if best_cos.abs() < 1e-4 {
        return Err(ClipError::Graph {
            path: path.to_path_buf(),
            message: "probe embeddings are orthogonal; cannot recover logit_scale".into(),
        });
    }
    Ok(best_logit / best_cos)
}

/// How many loaded models [`load_shared`] keeps by default
/// (`CLIPQL_MAX_MODELS` overrides it). Each distinct directory and
/// [`ModelOptions`] (dtype, threads, sessions, ...) is a full copy of the
/// weights.
pub const DEFAULT_MAX_MODELS: usize = 4;

type ModelKey = (PathBuf, ModelOptions);

/// One model of the registry: loaded at most once (its mutex is held while
/// it loads, so concurrent first uses wait for that load, and only they).
#[derive(Default)]
struct ModelSlot {
    model: Mutex<Option<Arc<ClipModel>>>,
    last_used: std::sync::atomic::AtomicU64,
    /// Set (under `model`'s lock) when the slot leaves the registry: a
    /// caller that found it just before looks the key up again, so no model
    /// is ever loaded into a slot the registry no longer counts.
    evicted: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct ModelRegistry {
    slots: Mutex<HashMap<ModelKey, Arc<ModelSlot>>>,
    clock: std::sync::atomic::AtomicU64,
}

fn registry() -> &'static ModelRegistry {
    static MODELS: OnceLock<ModelRegistry> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

fn max_models() -> usize {
    std::env::var("CLIPQL_MAX_MODELS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_MAX_MODELS)
}

/// Loads each (directory, options) once per process and shares it.
///
/// At most [`DEFAULT_MAX_MODELS`] (or `CLIPQL_MAX_MODELS`) models stay
/// loaded: loading another evicts the least recently used one that nobody
/// holds (an `Arc` returned here and still alive). Models in use are never
/// evicted, so more can be loaded at once while more are in use. A load
/// holds only its own model's lock: queries on models already loaded, and
/// loads of other models, go on meanwhile.
pub fn load_shared(dir: &Path, options: ModelOptions) -> Result<Arc<ClipModel>> {
    use std::sync::atomic::Ordering;
    let registry = registry();
    let key = (
        dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
        options,
    );
    loop {
        let slot = {
            let mut slots = registry.slots.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(key.clone()).or_default())
        };
        slot.last_used.store(
            registry.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let mut loaded = slot.model.lock().unwrap_or_else(|p| p.into_inner());
        if slot.evicted.load(Ordering::Acquire) {
            continue;
        }
        if let Some(model) = loaded.as_ref() {
            return Ok(Arc::clone(model));
        }
        // A failed load leaves the slot empty: the next use tries again.
        let model = Arc::new(ClipModel::load(dir, options)?);
        *loaded = Some(Arc::clone(&model));
        drop(loaded);
        // Dropped here, after the registry's lock is let go: tearing a model
        // down takes a while, and every batch of every query takes that lock.
        drop(evict_idle(registry, &key, max_models()));
        return Ok(model);
    }
}

/// Takes the least recently used idle models out of the registry until at
/// most `max` are loaded (never `keep`, never one in use or being loaded),
/// and returns them for the caller to drop outside the registry's lock.
fn evict_idle(registry: &ModelRegistry, keep: &ModelKey, max: usize) -> Vec<Arc<ClipModel>> {
    use std::sync::atomic::Ordering;
    let mut evicted = Vec::new();
    let mut slots = registry.slots.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        // A slot being loaded (its lock held) counts as loaded.
        let loaded = slots
            .values()
            .filter(|s| s.model.try_lock().map_or(true, |m| m.is_some()))
            .count();
        if loaded <= max {
            return evicted;
        }
        let idle = slots
            .iter()
            .filter(|(k, _)| *k != keep)
            .filter(|(_, s)| {
                s.model
                    .try_lock()
                    .is_ok_and(|m| m.as_ref().is_some_and(|m| Arc::strong_count(m) == 1))
            })
            .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone());
        let Some(k) = idle else {
            return evicted;
        };
        // Still idle under its own lock (a caller may have taken it since):
        // mark it, take its model out, and only then forget the slot.
        let Some(slot) = slots.get(&k).cloned() else {
            return evicted;
        };
        let Ok(mut model) = slot.model.try_lock() else {
            return evicted;
        };
        if model.as_ref().is_none_or(|m| Arc::strong_count(m) != 1) {
            return evicted;
        }
        slot.evicted.store(true, Ordering::Release);
        evicted.extend(model.take());
        drop(model);
        slots.remove(&k);
    }
}

/// How many models [`load_shared`] holds loaded now.
pub fn loaded_models() -> usize {
    registry()
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|s| s.model.try_lock().map_or(true, |m| m.is_some()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26, item 8: a load in progress holds only its own slot (here
    /// held by the test, as a load stuck reading its files would), so a
    /// query on another, loaded model gets it meanwhile.
    #[test]
    fn a_load_in_progress_blocks_no_other_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model");
        let options = ModelOptions::default().with_intra_threads(5);
        let loaded = load_shared(&dir, options).unwrap();
        let stuck = (
            PathBuf::from("/a/model/still/loading"),
            ModelOptions::default(),
        );
        let slot = Arc::clone(
            registry()
                .slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(stuck.clone())
                .or_default(),
        );
        let loading = slot.model.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = std::sync::mpsc::channel();
        let again = dir.clone();
        std::thread::spawn(move || {
            let _ =
                tx.send(load_shared(&again, options).map(|m| m.embed_texts(&["a cat"]).is_ok()));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(20));
        drop(loading);
        registry()
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stuck);
        assert!(
            answer
                .expect("the loaded model waited for the other load")
                .unwrap(),
            "the loaded model could not embed"
        );
        drop(loaded);
    }
}
