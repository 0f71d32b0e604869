//! What the functions know at planning time.
//!
//! Return types are computed without access to the session config, yet the
//! embedding functions return `FixedSizeList<Float32, D>` with `D` set by the
//! model. DataFusion calls `ScalarUDFImpl::with_updated_config` whenever the
//! session config changes (`SET`, `RESET`, session build), so each function
//! keeps a snapshot of `clip.model` and its `projection_dim` from there. Only
//! `config.json` is read at planning time; the ONNX graphs load on first use.

use datafusion::common::{Result, plan_err};
use datafusion::config::ConfigOptions;

use crate::options::ClipOptions;

/// `clip.model` and its embedding dimension, as of the last config change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct PlanningContext {
    model: Option<String>,
    dim: Option<std::result::Result<usize, String>>,
}

impl PlanningContext {
    pub(crate) fn from_config(config: &ConfigOptions) -> Self {
        let options = ClipOptions::from_config(config);
        let dim = clip_runtime::hub::resolve_model(options.model_name())
            .and_then(|dir| clip_runtime::ModelConfig::from_dir(&dir))
            .map(|c| c.projection_dim)
            .map_err(|e| e.to_string());
        Self {
            model: options.model,
            dim: Some(dim),
        }
    }

    /// Fails at planning time when no model is configured.
    pub(crate) fn require_model(&self, function: &str) -> Result<()> {
        ClipOptions {
            model: self.model.clone(),
            ..Default::default()
        }
        .model_dir(function)
        .map(|_| ())
    }

    /// The configured model's embedding dimension.
    pub(crate) fn dim(&self, function: &str) -> Result<usize> {
        self.require_model(function)?;
        match &self.dim {
            Some(Ok(d)) => Ok(*d),
            Some(Err(e)) => plan_err!("{function}: cannot read clip.model: {e}"),
            // Only a UDF that never saw a session config (not registered
            // through register_all) has no snapshot.
            None => plan_err!(
                "{function}: the model's embedding dimension is unknown; register the \
                 functions with datafusion_clip::register_all(ctx), which reads clip.*"
            ),
        }
    }

    /// The dimension if a readable model is configured.
    pub(crate) fn dim_if_known(&self) -> Option<usize> {
        self.dim.as_ref().and_then(|d| d.as_ref().ok().copied())
    }
}
