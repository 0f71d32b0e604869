//! What a model folder holds: the files ClipQL needs, which dtypes it has,
//! and the facts read from `config.json` and `tokenizer_config.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ModelFamily;
use crate::error::{ClipError, Result};
use crate::options::Dtype;

/// The parts of `config.json` ClipQL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The family `model_type` names.
    pub family: ModelFamily,
    /// Embedding dimension (CLIP's `projection_dim`; SigLIP's
    /// `text_config.projection_size`).
    pub projection_dim: usize,
    /// Text context length (`text_config.max_position_embeddings`).
    pub context_length: usize,
    /// Text vocabulary size (`text_config.vocab_size`).
    pub vocab_size: usize,
}

#[derive(Deserialize)]
struct ConfigJson {
    model_type: Option<String>,
    projection_dim: Option<usize>,
    text_config: Option<TextConfigJson>,
}

#[derive(Deserialize)]
struct TextConfigJson {
    max_position_embeddings: Option<usize>,
    vocab_size: Option<usize>,
    /// SigLIP's text head width (its embedding dimension), else `hidden_size`.
    projection_size: Option<usize>,
    hidden_size: Option<usize>,
}

impl ModelConfig {
    /// Reads `config.json` of a model directory, without loading any graph.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&require(dir, "config.json", || {
            "; is this a model directory in the HF / Transformers.js ONNX layout?".to_string()
        })?)
    }

    pub(super) fn from_file(path: &Path) -> Result<Self> {
        let bad = |message: String| ClipError::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let j: ConfigJson = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let family = ModelFamily::from_model_type(j.model_type.as_deref()).map_err(bad)?;
        let defaults = family.config_defaults();
        let t = j.text_config;
        // CLIP names the embedding width `projection_dim`; SigLIP has no
        // projection apart from its text head, whose width is the text
        // tower's `projection_size` (by default its `hidden_size`).
        let projection_dim = match family {
            ModelFamily::Clip => j.projection_dim,
            ModelFamily::Siglip => t.as_ref().and_then(|t| t.projection_size.or(t.hidden_size)),
        };
        Ok(Self {
            family,
            projection_dim: projection_dim.unwrap_or(defaults.projection_dim),
            context_length: t
                .as_ref()
                .and_then(|t| t.max_position_embeddings)
                .unwrap_or(defaults.context_length),
            vocab_size: t
                .as_ref()
                .and_then(|t| t.vocab_size)
                .unwrap_or(defaults.vocab_size),
        })
    }
}

pub(super) fn require(dir: &Path, file: &str, hint: impl FnOnce() -> String) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(json: &str) -> Result<ModelConfig> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        ModelConfig::from_dir(dir.path())
    }

    #[test]
    fn the_family_comes_from_model_type_and_gives_the_defaults() {
        let c = config_of(r#"{"model_type": "clip"}"#).unwrap();
        assert_eq!(
            (c.family, c.projection_dim, c.context_length, c.vocab_size),
            (ModelFamily::Clip, 512, 77, 49408)
        );
        let c =
            config_of(r#"{"projection_dim": 768, "text_config": {"max_position_embeddings": 64}}"#)
                .unwrap();
        assert_eq!(
            (c.family, c.projection_dim, c.context_length),
            (ModelFamily::Clip, 768, 64)
        );
    }

    #[test]
    fn siglip_reads_its_width_from_the_text_head() {
        let c = config_of(r#"{"model_type": "siglip"}"#).unwrap();
        assert_eq!(
            (c.family, c.projection_dim, c.context_length, c.vocab_size),
            (ModelFamily::Siglip, 768, 64, 32000)
        );
        let c = config_of(
            r#"{"model_type": "siglip", "projection_dim": 3,
                "text_config": {"hidden_size": 1152, "vocab_size": 256000}}"#,
        )
        .unwrap();
        assert_eq!((c.projection_dim, c.vocab_size), (1152, 256000));
        let c = config_of(
            r#"{"model_type": "siglip", "text_config": {"hidden_size": 32, "projection_size": 16}}"#,
        )
        .unwrap();
        assert_eq!(c.projection_dim, 16);
    }

    #[test]
    fn a_model_of_another_family_is_refused_with_what_runs() {
        let e = config_of(r#"{"model_type": "blip", "projection_dim": 768}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.json")
                && e.contains("\"blip\"")
                && e.contains("it runs: clip, siglip"),
            "{e}"
        );
    }
}
