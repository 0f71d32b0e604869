//! The process's loaded models: each (folder, options) loaded once and
//! shared, a bounded number kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::ClipModel;
use crate::error::Result;
use crate::options::ModelOptions;

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
