//! Models by Hugging Face repo id, from the local HF cache.
//!
//! `--model Xenova/clip-vit-base-patch32` (or `clip.model`) names a repo; it
//! resolves to the snapshot folder of the standard HF cache layout, which
//! `clipql model pull` ([`pull`]) and the `huggingface_hub` tools fill:
//!
//! ```text
//! $HF_HOME/hub/models--Xenova--clip-vit-base-patch32/
//!   refs/main                   -> the commit hash
//!   snapshots/<hash>/onnx/...   -> the files
//! ```
//!
//! `HF_HOME` defaults to `~/.cache/huggingface`; `HF_HUB_CACHE` overrides the
//! `hub` folder itself, as in `huggingface_hub`.

mod blob;
mod errors;
mod pull;
mod record;

pub use pull::{DEFAULT_MODEL, PullReport, PulledFile, ensure_model, pull};

use std::path::{Path, PathBuf};

use crate::error::{ClipError, Result};

/// The HF hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`).
pub fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(home).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Whether `name` looks like a repo id (`owner/name`) rather than a path.
pub fn is_repo_id(name: &str) -> bool {
    let mut parts = name.split('/');
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if valid(a) && valid(b) && a != "." && a != "..")
}

/// A model directory for `name`: an existing folder as is, or a repo id
/// resolved in the HF cache.
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.is_dir() || !is_repo_id(name) {
        return Ok(path.to_path_buf());
    }
    let cache = hub_cache_dir().ok_or_else(|| not_cached(name, None))?;
    let repo = cache.join(format!("models--{}", name.replace('/', "--")));
    let revision = std::fs::read_to_string(repo.join("refs/main"))
        .map_err(|_| not_cached(name, Some(&cache)))?;
    let snapshot = repo.join("snapshots").join(revision.trim());
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(not_cached(name, Some(&cache)))
    }
}

fn not_cached(name: &str, cache: Option<&Path>) -> ClipError {
    let place = cache.map_or_else(
        || "the HF cache (HF_HOME is unset and there is no HOME)".to_string(),
        |c| format!("the HF cache at {}", c.display()),
    );
    ClipError::ModelFileMissing {
        dir: PathBuf::from(name),
        file: "(the model)".into(),
        hint: format!(
            "; {name} is neither a folder nor in {place}. Download it with \
             `clipql model pull {name}` (where the hub is unreachable, pull elsewhere and copy \
             the cache folder here), or pass --model DIR"
        ),
    }
}

/// A model found in the HF cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// `owner/name`.
    pub repo_id: String,
    /// The snapshot folder `refs/main` points to.
    pub path: PathBuf,
}

/// Models in the HF cache that have the ClipQL layout (both towers in some dtype).
pub fn cached_models() -> Vec<CachedModel> {
    let Some(cache) = hub_cache_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return Vec::new();
    };
    let mut models: Vec<CachedModel> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let dir = e.file_name().to_string_lossy().into_owned();
            let repo_id = dir.strip_prefix("models--")?.replacen("--", "/", 1);
            let path = resolve_model(&repo_id).ok()?;
            (!crate::available_dtypes(&path).is_empty()).then_some(CachedModel { repo_id, path })
        })
        .collect();
    models.sort_by(|a, b| a.repo_id.cmp(&b.repo_id));
    models
}

/// The public hub, unless `HF_ENDPOINT` says otherwise.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `HF_HUB_OFFLINE` as `huggingface_hub` reads it (`1`, `ON`, `YES`, `TRUE`).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// The hub's base URL: `HF_ENDPOINT`, else `https://huggingface.co`.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .map_or_else(
            || DEFAULT_ENDPOINT.to_string(),
            |e| e.trim().trim_end_matches('/').to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("Xenova/clip-vit-base-patch32"));
        assert!(is_repo_id("openai/clip-vit-large-patch14"));
        assert!(!is_repo_id("models"));
        assert!(!is_repo_id("./models"));
        assert!(!is_repo_id("../x"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("tests/fixtures/model/"));
    }
}
