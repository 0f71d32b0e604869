//! The trained `logit_scale`: measured once per combined graph, with a
//! probe, and remembered across processes.

use std::path::Path;

use super::text::TextInputs;
use super::{ClipModel, ModelConfig};
use crate::error::{ClipError, Result};
use crate::options::{Dtype, ModelOptions};
use crate::preprocess::PreprocessConfig;
use crate::scale_cache::ScaleCache;
use crate::score::{Scorer, ScoringRule, TrainedLogits, l2_normalize};
use crate::tokenize::TextTokenizer;
use crate::tower::{RunGate, ThreadConfig, Tower, float_tensor, int_tensor};

/// The trained scale and bias, as the model keeps them.
pub(super) type Trained = TrainedLogits;

impl ClipModel {
    /// The model's trained `logit_scale` (already exponentiated, e.g. 100).
    ///
    /// Split-tower exports do not contain it, and `config.json` only records
    /// `logit_scale_init_value` (2.6592, the value training *started* from).
    /// The trained value lives in the combined export `onnx/model.onnx`,
    /// constant-folded into the multiplier of its `logits_per_image` (and,
    /// for SigLIP, with `logit_bias` added). We measure both once per file:
    /// run the combined graph on a probe image and probe texts, and fit
    /// `logits_per_image = scale · cosine + bias` to the cosines of the
    /// embeddings it returns (by least squares). The result is kept in the ClipQL
    /// cache folder ([`ScaleCache`]), so later processes skip loading the
    /// combined graph.
    pub fn logit_scale(&self) -> Result<f32> {
        self.trained_logits().map(|t| t.scale)
    }

    /// The trained scale and bias (see [`Self::logit_scale`]); the bias is 0
    /// for CLIP.
    pub fn trained_logits(&self) -> Result<TrainedLogits> {
        self.trained
            .clone()
            .map_err(|reason| ClipError::LogitScale {
                dir: self.dir.clone(),
                reason,
            })
    }

    /// How this model scores: its family's rule, with `scale` when one is
    /// given (`clip.logit_scale`), else the trained [`Self::logit_scale`],
    /// and the trained bias.
    pub fn scorer(&self, scale: Option<f32>) -> Result<Scorer> {
        let rule = self.config.family.scoring_rule();
        let trained = match (rule, scale) {
            // A softmax ignores the bias, so a given scale needs no probe.
            (ScoringRule::Softmax, Some(scale)) => TrainedLogits { scale, bias: 0.0 },
            _ => self.trained_logits()?,
        };
        Ok(Scorer {
            rule,
            scale: scale.unwrap_or(trained.scale),
            bias: trained.bias,
        })
    }
}

/// The trained scale and bias of the combined graph (`onnx/model*.onnx`):
/// remembered from an earlier process if this very file was measured
/// before (see [`ScaleCache`]), else measured now and remembered.
pub(super) fn trained_logits(
    dir: &Path,
    config: &ModelConfig,
    options: &ModelOptions,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
) -> Result<TrainedLogits> {
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
    if let Some(trained) = cache.as_ref().and_then(|c| c.get(&path)) {
        return Ok(trained);
    }
    let trained = measure(&path, config, options, preprocess, tokenizer)?;
    if let Some(cache) = cache {
        cache.put(&path, trained);
    }
    Ok(trained)
}

/// Runs the combined graph at `path` on a probe and fits the family's
/// logits output (`logits_per_image`) to the cosines: the trained scale
/// and bias.
fn measure(
    path: &Path,
    config: &ModelConfig,
    options: &ModelOptions,
    preprocess: &PreprocessConfig,
    tokenizer: &TextTokenizer,
) -> Result<TrainedLogits> {
    let family = config.family;
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
    // The combined graph's outputs are normalised, under CLIP's names for
    // every family.
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
        "an empty street at night",
        "a bowl of soup",
    ];
    let batch = tokenizer.encode_batch(&texts, family.padded_len(fixed, config.context_length))?;
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
    let points: Vec<(f32, f32)> = out[2]
        .1
        .chunks_exact(dim.max(1))
        .zip(logits)
        .map(|(t, &logit)| {
            let mut t = t.to_vec();
            l2_normalize(&mut t);
            (crate::score::dot(&image, &t), logit)
        })
        .collect();
    let fitted = match family.scoring_rule() {
        ScoringRule::Softmax => through_origin(&points),
        ScoringRule::Sigmoid => fit(&points),
    };
    fitted.map_err(|message| ClipError::Graph {
        path: path.to_path_buf(),
        message,
    })
}

/// `logit = scale · cosine` (no bias: CLIP's graph has none), from the
/// point with the largest cosine.
fn through_origin(points: &[(f32, f32)]) -> std::result::Result<TrainedLogits, String> {
    let &(cos, logit) = points
        .iter()
        .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
        .ok_or("logits_per_image is empty")?;
    if cos.abs() < 1e-4 {
        return Err("probe embeddings are orthogonal; cannot recover logit_scale".into());
    }
    Ok(TrainedLogits {
        scale: logit / cos,
        bias: 0.0,
    })
}

/// `logit = scale · cosine + bias`, by least squares over the probe's
/// points (exact, for points on one line, up to rounding).
fn fit(points: &[(f32, f32)]) -> std::result::Result<TrainedLogits, String> {
    let n = points.len() as f64;
    let mean = |f: fn(&(f32, f32)) -> f32| points.iter().map(|p| f(p) as f64).sum::<f64>() / n;
    let (mc, ml) = (mean(|p| p.0), mean(|p| p.1));
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for &(c, l) in points {
        sxx += (c as f64 - mc).powi(2);
        sxy += (c as f64 - mc) * (l as f64 - ml);
    }
    // The probe texts' cosines must differ for a slope to exist.
    if points.len() < 2 || sxx.sqrt() < 1e-4 {
        return Err(
            "the probe texts' cosines are all alike; cannot recover logit_scale and logit_bias"
                .into(),
        );
    }
    let scale = sxy / sxx;
    Ok(TrainedLogits {
        scale: scale as f32,
        bias: (ml - scale * mc) as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_scale_and_bias_and_refuses_a_flat_probe() {
        let line = |c: f32| (c, 117.33 * c - 12.93);
        let t = fit(&[line(-0.08), line(-0.02), line(0.05)]).unwrap();
        assert!(
            (t.scale - 117.33).abs() < 1e-2 && (t.bias + 12.93).abs() < 1e-3,
            "{t:?}"
        );
        assert!(fit(&[line(0.1), line(0.1)]).is_err());
        assert!(fit(&[]).is_err());
        let t = through_origin(&[(0.2, 20.0), (-0.01, -1.0)]).unwrap();
        assert_eq!((t.scale, t.bias), (100.0, 0.0));
        assert!(through_origin(&[(0.0, 0.0)]).is_err());
    }
}
