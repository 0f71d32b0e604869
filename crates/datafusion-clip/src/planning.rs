//! What the functions know at planning time.
//!
//! Return types are computed without access to the session config, yet the
//! embedding functions return `FixedSizeList<Float32, D>` with `D` set by the
//! model. DataFusion calls `ScalarUDFImpl::with_updated_config` whenever the
//! session config changes (`SET`, `RESET`, session build), so each function
//! keeps a snapshot of `clip.model` and its `projection_dim` from there. Only
//! `config.json` is read at planning time; the ONNX graphs load on first use.
//!
//! Each function also keeps the model its calls found ([`ModelHandle`]), so
//! that a batch asks the process's model registry only when the model it
//! needs is not the one the last batch used: no path resolution and no
//! registry lock per batch.

use std::sync::{Arc, Mutex, Weak};

use clip_runtime::{ClipModel, ModelOptions};
use datafusion::common::{Result, plan_err};
use datafusion::config::ConfigOptions;

use crate::options::ClipOptions;

/// `clip.model` and its embedding dimension, as of the last config change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct PlanningContext {
    model: Option<String>,
    dim: Option<std::result::Result<usize, String>>,
    /// The model this function's calls last used.
    pub(crate) handle: ModelHandle,
}

/// The model a function's calls last used, with what it was asked for by
/// (`clip.model` and the options that pick a loaded copy). Held weakly: an
/// idle model can still be evicted between queries, and is then looked up
/// (and loaded) again.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelHandle {
    last: Arc<Mutex<Option<Last>>>,
}

type Last = ((Option<String>, ModelOptions), Weak<ClipModel>);

impl ModelHandle {
    /// The model `options` ask for: the one the last call used when they ask
    /// for the same, else the registry's (loading it on first use).
    pub(crate) fn model(&self, options: &ClipOptions, function: &str) -> Result<Arc<ClipModel>> {
        let key = (options.model.clone(), options.model_options());
        {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, model)) = last.as_ref()
                && *k == key
                && let Some(model) = model.upgrade()
            {
                return Ok(model);
            }
        }
        // Outside the lock: a load can take seconds, and concurrent first
        // calls wait for it in the registry's own slot for that model.
        let model = options.model(function)?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, Arc::downgrade(&model)));
        Ok(model)
    }
}

/// Every handle is alike to DataFusion's function equality: what a function
/// computes depends on its config snapshot, not on what it has cached.
impl PartialEq for ModelHandle {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ModelHandle {}

impl std::hash::Hash for ModelHandle {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
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
            handle: ModelHandle::default(),
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

#[cfg(test)]
mod tests {
    use datafusion::config::ExtensionOptions;

    use super::*;

    fn fixture_options(threads: usize) -> ClipOptions {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/model");
        let mut options = ClipOptions::default();
        options.set("model", dir).unwrap();
        options.set("intra_threads", &threads.to_string()).unwrap();
        options
    }

    /// Issue 15, item 7: later batches reuse the model the first found, and
    /// options that pick another copy find that one.
    #[test]
    fn a_handle_reuses_its_model_until_the_options_ask_for_another() {
        let handle = ModelHandle::default();
        let one = fixture_options(3);
        let first = handle.model(&one, "clip_test").unwrap();
        let again = handle.model(&one, "clip_test").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let other = handle.model(&fixture_options(4), "clip_test").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.options().intra_threads, 4);
    }
}
