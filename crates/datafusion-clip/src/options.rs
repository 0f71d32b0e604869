//! The `clip.*` session options.
//!
//! Registered as a DataFusion config extension with prefix `clip`, so they
//! can be set with SQL (`SET clip.model = '/models/clip'`), with
//! `SessionConfig::set_str`, or by the CLI's flags. Values are validated when
//! they are set, so a typo fails at the `SET`, not in the middle of a query.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use clip_runtime::hub::DEFAULT_MODEL;
use clip_runtime::{ClipModel, DecodeLimits, Dtype, GraphOptimization, ModelOptions};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result, config_err};
use datafusion::config::ConfigOptions;

/// What to do with an image that cannot be decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Return NULL for that row; `clip_image_error(image)` gives the reason.
    #[default]
    Null,
    /// Fail the query with an error naming the row.
    Fail,
}

/// Every `clip.*` option. See [`ClipOptions::KEYS`] for their descriptions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClipOptions {
    /// `clip.model`: a model directory or HF repo id (unset: the default model).
    pub model: Option<String>,
    /// `clip.dtype`: `fp32`, `quantized` or `fp16`.
    pub dtype: Dtype,
    /// `clip.batch_size`: images per vision-tower run.
    pub batch_size: usize,
    /// `clip.intra_threads`: ONNX Runtime threads per session (0 = all cores).
    pub intra_threads: usize,
    /// `clip.sessions`: ONNX Runtime sessions per tower.
    pub sessions: usize,
    /// `clip.intra_op_spinning`: whether idle ORT threads spin.
    pub intra_op_spinning: bool,
    /// `clip.graph_optimization`: ORT's graph optimisation level.
    pub graph_optimization: GraphOptimization,
    /// `clip.on_error`: `null` or `fail`.
    pub on_error: OnError,
    /// `clip.max_image_pixels`.
    pub max_image_pixels: u64,
    /// `clip.max_image_bytes`.
    pub max_image_bytes: u64,
    /// `clip.fast_jpeg`: decode large JPEGs at a reduced size.
    pub fast_jpeg: bool,
    /// `clip.logit_scale`: overrides the model's trained scale.
    pub logit_scale: Option<f32>,
    /// `clip.extra_extensions`: more file extensions for IMAGE tables.
    pub extra_extensions: Vec<String>,
}

impl Default for ClipOptions {
    fn default() -> Self {
        let limits = DecodeLimits::default();
        Self {
            model: None,
            dtype: Dtype::Fp32,
            batch_size: 16,
            intra_threads: 0,
            sessions: 1,
            intra_op_spinning: true,
            graph_optimization: GraphOptimization::All,
            on_error: OnError::Null,
            max_image_pixels: limits.max_pixels,
            max_image_bytes: limits.max_bytes,
            fast_jpeg: limits.fast_jpeg,
            logit_scale: None,
            extra_extensions: Vec::new(),
        }
    }
}

impl ConfigExtension for ClipOptions {
    const PREFIX: &'static str = "clip";
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        DataFusionError::Configuration(format!("clip.{key} must be {what}, got '{value}'"))
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => config_err!("clip.{key} must be true or false, got '{value}'"),
    }
}

/// The largest `clip.max_image_bytes`: a scan reads one byte past it, and
/// that must still fit one value of a `Binary` column (under 2 GiB).
const MAX_IMAGE_BYTES: u64 = i32::MAX as u64 - 1;

impl ClipOptions {
    /// The error for a key (without `clip.`) that is not an option.
    fn unknown_option(key: &str) -> DataFusionError {
        let known: Vec<String> = Self::KEYS
            .iter()
            .map(|(k, _)| format!("clip.{k}"))
            .collect();
        DataFusionError::Configuration(format!(
            "unknown option clip.{key}; the clip options are {}",
            known.join(", ")
        ))
    }

    /// The default of option `key` (`clip.batch_size` or `batch_size`), as
    /// `SET` takes it: `''` for one that is unset by default.
    pub fn default_value(key: &str) -> Result<String> {
        let name = key.strip_prefix("clip.").unwrap_or(key);
        Self::default()
            .entries()
            .into_iter()
            .find(|e| e.key.strip_prefix("clip.") == Some(name))
            .map(|e| e.value.unwrap_or_default())
            .ok_or_else(|| Self::unknown_option(name))
    }

    /// Option names (without the `clip.` prefix) and what they do.
    pub const KEYS: &'static [(&'static str, &'static str)] = &[
        (
            "model",
            "Model directory in the HF / Transformers.js ONNX layout, or an HF repo id in the HF cache. Unset: Xenova/clip-vit-base-patch32 from the HF cache.",
        ),
        (
            "dtype",
            "Tower files to load: fp32 (default), quantized or fp16.",
        ),
        ("batch_size", "Images per vision-tower run (default 16)."),
        (
            "intra_threads",
            "ONNX Runtime threads per session; 0 (default) divides the cores between the sessions.",
        ),
        (
            "sessions",
            "ONNX Runtime sessions per tower (default 1); more lets partitions infer concurrently.",
        ),
        (
            "intra_op_spinning",
            "true (default, as in ONNX Runtime): idle ORT threads spin briefly between parallel sections, about 30% faster here; false lets them sleep.",
        ),
        (
            "graph_optimization",
            "ONNX Runtime graph optimisation level: all (default), extended, basic or none.",
        ),
        (
            "on_error",
            "null (default): an undecodable image gives NULL; fail: the query fails naming the row.",
        ),
        (
            "max_image_pixels",
            "Images whose header declares more pixels are refused before decoding (default 89478485, PIL's limit).",
        ),
        (
            "max_image_bytes",
            "Images with more encoded bytes are refused (default 268435456).",
        ),
        (
            "fast_jpeg",
            "true: decode a JPEG at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) when that still covers the model's input; much faster on large photos, embeddings differ slightly (default false).",
        ),
        (
            "logit_scale",
            "Overrides the model's trained logit_scale (measured from onnx/model.onnx); empty to unset.",
        ),
        (
            "extra_extensions",
            "Comma-separated file extensions IMAGE tables list besides the image ones, e.g. 'dat,bin'.",
        ),
    ];

    /// The options in `config`, or the defaults when the extension is absent.
    pub fn from_config(config: &ConfigOptions) -> Self {
        config.extensions.get::<Self>().cloned().unwrap_or_default()
    }

    /// The decode limits these options set.
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits::default()
            .with_max_pixels(self.max_image_pixels)
            .with_max_bytes(self.max_image_bytes)
            .with_fast_jpeg(self.fast_jpeg)
    }

    /// The model options these options set.
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions::default()
            .with_dtype(self.dtype)
            .with_intra_threads(self.intra_threads)
            .with_sessions(self.sessions)
            .with_spinning(self.intra_op_spinning)
            .with_graph_optimization(self.graph_optimization)
    }

    /// The model directory, or a planning error saying how to set it. A
    /// repo id (`Xenova/clip-vit-base-patch32`) resolves in the HF cache;
    /// with `clip.model` unset, the default model does, if it was pulled.
    /// Planning never downloads: `clipql` pulls before it plans.
    pub fn model_dir(&self, function: &str) -> Result<PathBuf> {
        match &self.model {
            Some(m) => clip_runtime::hub::resolve_model(m)
                .map_err(|e| DataFusionError::Plan(format!("{function}: clip.model: {e}"))),
            None => clip_runtime::hub::resolve_model(DEFAULT_MODEL).map_err(|_| {
                DataFusionError::Plan(format!(
                    "{function} needs a model, but clip.model is not set and the default model \
                     {DEFAULT_MODEL} is not in the HF cache. Run \
                     SET clip.model = '/path/to/model-dir' (a folder with onnx/vision_model.onnx, \
                     onnx/text_model.onnx, tokenizer.json, ...) or an HF repo id, pass --model \
                     to clipql, or download the default with \
                     `clipql model pull {DEFAULT_MODEL}`"
                ))
            }),
        }
    }

    /// `clip.model`, or the default model's repo id when it is unset.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }

    /// The shared model, loading it on first use.
    pub fn model(&self, function: &str) -> Result<Arc<ClipModel>> {
        let dir = self.model_dir(function)?;
        clip_runtime::load_shared(&dir, self.model_options()).map_err(|e| {
            DataFusionError::External(Box::new(e))
                .context(format!("{function}: loading clip.model"))
        })
    }

    /// `clip.logit_scale` if set, else the model's trained value.
    pub fn logit_scale(&self, model: &ClipModel) -> Result<f32> {
        match self.logit_scale {
            Some(s) => Ok(s),
            None => model
                .logit_scale()
                .map_err(|e| DataFusionError::External(Box::new(e))),
        }
    }
}

impl ExtensionOptions for ClipOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim();
        match key {
            "model" => self.model = (!v.is_empty()).then(|| v.to_string()),
            "dtype" => {
                self.dtype = v.parse().map_err(|_| {
                    DataFusionError::Configuration(format!(
                        "clip.dtype must be fp32, quantized or fp16, got '{value}'"
                    ))
                })?
            }
            "batch_size" => {
                let n: usize = parse_num(key, v, "a positive integer")?;
                if n == 0 {
                    return config_err!("clip.batch_size must be at least 1");
                }
                self.batch_size = n;
            }
            "intra_threads" => {
                self.intra_threads = parse_num(key, v, "a non-negative integer (0 = all cores)")?
            }
            "sessions" => {
                let n: usize = parse_num(key, v, "a positive integer")?;
                if n == 0 {
                    return config_err!("clip.sessions must be at least 1");
                }
                self.sessions = n;
            }
            "on_error" => {
                self.on_error = match v.to_ascii_lowercase().as_str() {
                    "null" => OnError::Null,
                    "fail" => OnError::Fail,
                    _ => {
                        return config_err!(
                            "clip.on_error must be 'null' or 'fail', got '{value}'"
                        );
                    }
                }
            }
            "max_image_pixels" => self.max_image_pixels = parse_num(key, v, "a pixel count")?,
            "max_image_bytes" => {
                let n: u64 = parse_num(key, v, "a byte count")?;
                if n > MAX_IMAGE_BYTES {
                    return config_err!(
                        "clip.max_image_bytes must be at most {MAX_IMAGE_BYTES} (one image value \
                         holds under 2 GiB), got '{value}'"
                    );
                }
                self.max_image_bytes = n;
            }
            "fast_jpeg" => self.fast_jpeg = parse_bool(key, value)?,
            "intra_op_spinning" => self.intra_op_spinning = parse_bool(key, value)?,
            "graph_optimization" => self.graph_optimization = v.parse().map_err(|_| {
                DataFusionError::Configuration(format!(
                    "clip.graph_optimization must be all, extended, basic or none, got '{value}'"
                ))
            })?,
            "logit_scale" => {
                self.logit_scale = if v.is_empty() {
                    None
                } else {
                    let s: f32 = parse_num(key, v, "a positive number, e.g. 100")?;
                    if !(s.is_finite() && s > 0.0) {
                        return config_err!(
                            "clip.logit_scale must be a positive number, got '{value}'"
                        );
                    }
                    Some(s)
                }
            }
            "extra_extensions" => {
                self.extra_extensions = v
                    .split(',')
                    .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            }
            _ => return Err(Self::unknown_option(key)),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let value = |key: &str| -> Option<String> {
            match key {
                "model" => self.model.clone(),
                "dtype" => Some(self.dtype.to_string()),
                "batch_size" => Some(self.batch_size.to_string()),
                "intra_threads" => Some(self.intra_threads.to_string()),
                "sessions" => Some(self.sessions.to_string()),
                "intra_op_spinning" => Some(self.intra_op_spinning.to_string()),
                "graph_optimization" => Some(self.graph_optimization.to_string()),
                "on_error" => Some(match self.on_error {
                    OnError::Null => "null".into(),
                    OnError::Fail => "fail".into(),
                }),
                "max_image_pixels" => Some(self.max_image_pixels.to_string()),
                "max_image_bytes" => Some(self.max_image_bytes.to_string()),
                "fast_jpeg" => Some(self.fast_jpeg.to_string()),
                "logit_scale" => self.logit_scale.map(|s| s.to_string()),
                "extra_extensions" => Some(self.extra_extensions.join(",")),
                _ => None,
            }
        };
        Self::KEYS
            .iter()
            .map(|(key, description)| ConfigEntry {
                key: format!("clip.{key}"),
                value: value(key),
                description,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_entries() {
        let mut o = ClipOptions::default();
        for (key, value) in [
            ("model", "/m"),
            ("dtype", "quantized"),
            ("batch_size", "4"),
            ("intra_threads", "2"),
            ("sessions", "2"),
            ("intra_op_spinning", "off"),
            ("graph_optimization", "Basic"),
            ("fast_jpeg", "true"),
            ("on_error", "FAIL"),
            ("max_image_pixels", "100"),
            ("max_image_bytes", "200"),
            ("logit_scale", "50"),
            ("extra_extensions", ".DAT, bin"),
        ] {
            o.set(key, value).unwrap();
        }
        let entries = o.entries();
        assert_eq!(entries.len(), ClipOptions::KEYS.len());
        let get = |k: &str| entries.iter().find(|e| e.key == k).unwrap().value.clone();
        assert_eq!(get("clip.on_error").as_deref(), Some("fail"));
        assert_eq!(get("clip.extra_extensions").as_deref(), Some("dat,bin"));
        assert_eq!(get("clip.intra_op_spinning").as_deref(), Some("false"));
        assert_eq!(get("clip.graph_optimization").as_deref(), Some("basic"));
        assert_eq!(
            o.limits(),
            DecodeLimits::default()
                .with_max_pixels(100)
                .with_max_bytes(200)
                .with_fast_jpeg(true)
        );
        let m = o.model_options();
        assert!(!m.spinning);
        assert_eq!(m.graph_optimization, GraphOptimization::Basic);
        assert!(o.set("graph_optimization", "max").is_err());
        assert!(o.set("intra_op_spinning", "yes please").is_err());
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        let mut o = ClipOptions::default();
        for (key, value, expect) in [
            ("on_error", "maybe", "'null' or 'fail'"),
            ("dtype", "int4", "fp32, quantized or fp16"),
            ("batch_size", "0", "at least 1"),
            ("batch_size", "x", "positive integer"),
            ("logit_scale", "-1", "positive number"),
            ("nonsense", "1", "unknown option clip.nonsense"),
            ("max_image_bytes", "2147483647", "at most 2147483646"),
        ] {
            let err = o.set(key, value).unwrap_err().to_string();
            assert!(err.contains(expect), "{key}={value}: {err}");
        }
        assert_eq!(o, ClipOptions::default());
    }

    #[test]
    fn defaults_are_given_as_set_takes_them() {
        assert_eq!(ClipOptions::default_value("clip.batch_size").unwrap(), "16");
        assert_eq!(ClipOptions::default_value("on_error").unwrap(), "null");
        assert_eq!(ClipOptions::default_value("clip.model").unwrap(), "");
        let mut o = ClipOptions::default();
        o.set("logit_scale", "50").unwrap();
        o.set(
            "logit_scale",
            &ClipOptions::default_value("logit_scale").unwrap(),
        )
        .unwrap();
        assert_eq!(o, ClipOptions::default());
        let err = ClipOptions::default_value("clip.nonsense")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option clip.nonsense; the clip options are clip.model"),
            "{err}"
        );
    }
}
