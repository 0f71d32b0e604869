//! The `clip.*` session options.
//!
//! Registered as a DataFusion config extension with prefix `clip`, so they
//! can be set with SQL (`SET clip.model = '/models/clip'`), with
//! `SessionConfig::set_str`, or by the CLI's flags. Values are validated when
//! they are set, so a typo fails at the `SET`, not in the middle of a query.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use clip_runtime::hub::DEFAULT_MODEL;
use clip_runtime::{ClipModel, DecodeLimits, Dtype, GraphOptimization, ModelOptions};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result, config_err};
use datafusion::config::ConfigOptions;

/// What to do with an image that cannot be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Return NULL for that row; `clip_image_error(image)` gives the reason.
    #[default]
    Null,
    /// Fail the query with an error naming the row.
    Fail,
}

impl std::fmt::Display for OnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Fail => "fail",
        })
    }
}

impl std::str::FromStr for OnError {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "null" => Ok(Self::Null),
            "fail" => Ok(Self::Fail),
            _ => Err(format!("must be 'null' or 'fail', got '{s}'")),
        }
    }
}

/// Declares every `clip.*` option once: its field, type, default, the text
/// `SHOW ALL` and the README give for it, how `SET` parses it and how it is
/// shown. [`ClipOptions::keys()`], `entries()`, `set()`, `default_value` and
/// the README's table (checked by a test) all come from here.
macro_rules! clip_options {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $default:expr,
            parse $parse:expr,
            show $show:expr;
    )*) => {
        /// Every `clip.*` option. See [`ClipOptions::keys()`] for their descriptions.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub struct ClipOptions {
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
        }

        impl Default for ClipOptions {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl ClipOptions {
            /// Option names (without the `clip.` prefix) and their doc
            /// comments, as written.
            const DOCS: &'static [(&'static str, &'static str)] = &[
                $((stringify!($field), concat!($($doc, "\n"),+)),)*
            ];

            /// Sets option `key` (without `clip.`) from its SQL text.
            fn set_key(&mut self, key: &str, value: &str) -> Result<()> {
                match key {
                    $(stringify!($field) => {
                        let parse: fn(&str, &str) -> Result<$ty> = $parse;
                        self.$field = parse(key, value)?;
                    })*
                    _ => return Err(Self::unknown_option(key)),
                }
                Ok(())
            }

            /// Option `key`'s value as `SHOW` prints it; `None` when unset.
            fn value_of(&self, key: &str) -> Option<String> {
                match key {
                    $(stringify!($field) => {
                        let show: fn(&$ty) -> Option<String> = $show;
                        show(&self.$field)
                    })*
                    _ => None,
                }
            }
        }
    };
}

/// A doc comment's text as one line: its `///` lines joined by spaces.
fn describe(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn text_or_unset(_key: &str, value: &str) -> Result<Option<String>> {
    let v = value.trim();
    Ok((!v.is_empty()).then(|| v.to_string()))
}

fn positive(key: &str, value: &str) -> Result<usize> {
    let n: usize = parse_num(key, value.trim(), "a positive integer")?;
    if n == 0 {
        return config_err!("clip.{key} must be at least 1");
    }
    Ok(n)
}

fn shown<T: std::fmt::Display>(v: &T) -> Option<String> {
    Some(v.to_string())
}

clip_options! {
    /// Model directory in the HF / Transformers.js ONNX layout, or an HF repo
    /// id in the HF cache; unset means `Xenova/clip-vit-base-patch32` from the
    /// HF cache. Every function except `clip_image_error` needs one.
    model: Option<String> = None,
        parse text_or_unset,
        show |v| v.clone();
    /// Tower files: `fp32`, `quantized` (`*_quantized.onnx`) or `fp16`
    /// (`*_fp16.onnx`).
    dtype: Dtype = Dtype::Fp32,
        parse |_, value| value.trim().parse().map_err(|_| {
            DataFusionError::Configuration(format!(
                "clip.dtype must be fp32, quantized or fp16, got '{value}'"
            ))
        }),
        show shown;
    /// Images per vision-tower run, and rows per IMAGE-table batch.
    batch_size: usize = 16,
        parse positive,
        show shown;
    /// ONNX Runtime threads per session; 0 divides the cores between the
    /// sessions.
    intra_threads: usize = 0,
        parse |key, value| parse_num(key, value.trim(), "a non-negative integer (0 = all cores)"),
        show shown;
    /// ONNX Runtime sessions per tower; more lets partitions infer
    /// concurrently.
    sessions: usize = 1,
        parse positive,
        show shown;
    /// `true`: idle ONNX Runtime threads spin briefly between parallel
    /// sections (ORT's own default; about 30% faster here); `false` lets them
    /// sleep.
    intra_op_spinning: bool = true,
        parse parse_bool,
        show shown;
    /// ONNX Runtime graph optimisation: `all`, `extended`, `basic` or `none`.
    graph_optimization: GraphOptimization = GraphOptimization::All,
        parse |_, value| value.trim().parse().map_err(|_| {
            DataFusionError::Configuration(format!(
                "clip.graph_optimization must be all, extended, basic or none, got '{value}'"
            ))
        }),
        show shown;
    /// `null`: an image that cannot be used gives NULL, and
    /// `clip_image_error(image)` says why; `fail`: the query fails naming the
    /// file.
    on_error: OnError = OnError::Null,
        parse |_, value| value.parse().map_err(|e| {
            DataFusionError::Configuration(format!("clip.on_error {e}"))
        }),
        show shown;
    /// Images whose header declares more pixels are refused before decoding
    /// (PIL's limit).
    max_image_pixels: u64 = DecodeLimits::default().max_pixels,
        parse |key, value| parse_num(key, value.trim(), "a pixel count"),
        show shown;
    /// Larger encoded files are refused; an IMAGE table reads no more of them
    /// than one byte past this (at most `2147483646`).
    max_image_bytes: u64 = DecodeLimits::default().max_bytes,
        parse |key, value| {
            let n: u64 = parse_num(key, value.trim(), "a byte count")?;
            if n > MAX_IMAGE_BYTES {
                return config_err!(
                    "clip.max_image_bytes must be at most {MAX_IMAGE_BYTES} (one image value \
                     holds under 2 GiB), got '{value}'"
                );
            }
            Ok(n)
        },
        show shown;
    /// `true`: decode a JPEG at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling)
    /// when that still covers the model's input; several times faster on
    /// phone photos, embeddings differ slightly (see BENCHMARKS.md).
    fast_jpeg: bool = DecodeLimits::default().fast_jpeg,
        parse parse_bool,
        show shown;
    /// Overrides the model's trained `logit_scale` (measured from
    /// `onnx/model.onnx`); `''` unsets.
    logit_scale: Option<f32> = None,
        parse |key, value| {
            let v = value.trim();
            if v.is_empty() {
                return Ok(None);
            }
            let s: f32 = parse_num(key, v, "a positive number, e.g. 100")?;
            if !(s.is_finite() && s > 0.0) {
                return config_err!("clip.logit_scale must be a positive number, got '{value}'");
            }
            Ok(Some(s))
        },
        show |v| v.map(|s| s.to_string());
    /// More file extensions for IMAGE tables, comma-separated, e.g.
    /// `'dat,bin'`.
    extra_extensions: Vec<String> = Vec::new(),
        parse |_, value| {
            Ok(value
                .trim()
                .split(',')
                .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect())
        },
        show |v| Some(v.join(","));
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
        let known: Vec<String> = Self::keys()
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

    /// Option names (without the `clip.` prefix) and what they do, in
    /// declaration order.
    pub fn keys() -> &'static [(&'static str, &'static str)] {
        static KEYS: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
        KEYS.get_or_init(|| {
            // Once per process, 13 short strings: `ConfigEntry` wants
            // `&'static str` descriptions.
            Self::DOCS
                .iter()
                .map(|(key, doc)| (*key, &*Box::leak(describe(doc).into_boxed_str())))
                .collect()
        })
    }

    /// Each option's full key, default (as `SET` takes it; `None`: unset)
    /// and description, in declaration order.
    pub fn declared() -> Vec<(String, Option<String>, &'static str)> {
        let defaults = Self::default();
        Self::keys()
            .iter()
            .map(|(key, doc)| (format!("clip.{key}"), defaults.value_of(key), *doc))
            .collect()
    }

    /// The README's options table, rendered from the declarations.
    pub fn markdown_table() -> String {
        let mut table = String::from("| option | default | what |\n|---|---|---|\n");
        for (key, default, what) in Self::declared() {
            let default = match default.as_deref() {
                None => "unset".to_string(),
                Some("") => "empty".to_string(),
                Some(v) => format!("`{v}`"),
            };
            table.push_str(&format!("| `{key}` | {default} | {what} |\n"));
        }
        table
    }

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

    /// How `model` scores labels: its family's rule, scaled by
    /// `clip.logit_scale` if set, else by the model's trained value.
    pub fn scorer(&self, model: &ClipModel) -> Result<clip_runtime::Scorer> {
        model
            .scorer(self.logit_scale)
            .map_err(|e| DataFusionError::External(Box::new(e)))
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
        self.set_key(key, value)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Self::keys()
            .iter()
            .map(|(key, description)| ConfigEntry {
                key: format!("clip.{key}"),
                value: self.value_of(key),
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
        assert_eq!(entries.len(), ClipOptions::keys().len());
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

    /// The README's options table is rendered from the declarations, so a
    /// new or changed option cannot leave it stale.
    #[test]
    fn the_readme_table_is_the_declarations() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let table = ClipOptions::markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's clip.* options table is not the declared one \
             (crates/datafusion-clip/src/options.rs); replace it with:\n\n{table}"
        );
        assert_eq!(table.lines().count(), ClipOptions::keys().len() + 2);
    }

    /// `SHOW ALL` (DataFusion's `information_schema.df_settings`) lists
    /// every declared option with its default and description.
    #[tokio::test]
    async fn show_all_gives_the_declarations() {
        use datafusion::arrow::array::{Array, AsArray};
        let ctx = datafusion::prelude::SessionContext::new_with_config(
            crate::session_config().with_information_schema(true),
        );
        crate::register_all(&ctx).unwrap();
        let batches = ctx
            .sql(
                "SELECT name, value, description FROM information_schema.df_settings \
                  WHERE name LIKE 'clip.%' ORDER BY name",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut shown = Vec::new();
        for b in &batches {
            let column = |i: usize| b.column(i).as_string::<i32>().clone();
            let (names, values, descriptions) = (column(0), column(1), column(2));
            for row in 0..b.num_rows() {
                shown.push((
                    names.value(row).to_string(),
                    (!values.is_null(row)).then(|| values.value(row).to_string()),
                    descriptions.value(row).to_string(),
                ));
            }
        }
        let mut declared: Vec<_> = ClipOptions::declared()
            .into_iter()
            .map(|(k, v, d)| (k, v, d.to_string()))
            .collect();
        declared.sort();
        assert_eq!(shown, declared);
    }
}
