//! The trained `logit_scale`: measured once per combined graph, with a
//! probe, and remembered across processes.

use std::path::Path;

use super::text::TextInputs;
use super::{ClipModel, ModelFamily};
use crate::error::{ClipError, Result};
use crate::options::{Dtype, ModelOptions};
use crate::preprocess::PreprocessConfig;
use crate::scale_cache::ScaleCache;
use crate::score::{Scorer, l2_normalize};
use crate::tokenize::TextTokenizer;
use crate::tower::{RunGate, ThreadConfig, Tower, float_tensor, int_tensor};

impl ClipModel {
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

    /// How this model scores: its family's rule, with `scale` when one is
    /// given (`clip.logit_scale`), else the trained [`Self::logit_scale`].
    pub fn scorer(&self, scale: Option<f32>) -> Result<Scorer> {
        Ok(Scorer {
            rule: self.config.family.scoring_rule(),
            scale: match scale {
                Some(s) => s,
                None => self.logit_scale()?,
            },
        })
    }
}

/// The trained `logit_scale` of the combined graph (`onnx/model*.onnx`):
/// remembered from an earlier process if this very file was measured
/// before (see [`ScaleCache`]), else measured now and remembered.
pub(super) fn trained_logit_scale(
    dir: &Path,
    family: ModelFamily,
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
    let scale = measure_logit_scale(&path, family, options, preprocess, tokenizer)?;
    if let Some(cache) = cache {
        cache.put(&path, scale);
    }
    Ok(scale)
}

/// Runs the combined graph at `path` on a probe and returns the family's
/// logits output (`logits_per_image`) over the cosine: the trained
/// `logit_scale`.
fn measure_logit_scale(
    path: &Path,
    family: ModelFamily,
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
    let logits_port = tower.float_output(family.probe_logits())?;
    let image_port = tower.float_output("image_embeds")?;
    let text_port = tower.float_output("text_embeds")?;

    // Any size the graph takes: the model's own, or ViT-B/32's.
    let (h, w) = preprocess.fixed_size().unwrap_or((224, 224));
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
    let batch = tokenizer.encode_batch(&texts, family.padded_len(fixed))?;
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
