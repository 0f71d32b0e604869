//! Downloading a model from the HF hub into the HF cache (`clipql model pull`).
//!
//! The hub's answers are read with the `hf-hub` crate (`HF_ENDPOINT`, the
//! token, the metadata request); the files are written here, in the
//! standard cache layout (`blobs/<hash>`, `snapshots/<commit>/<file>`
//! symlinks, `refs/main`), because what the server says must not decide
//! where a file goes. `hf-hub`'s own download joins the ETag and commit
//! headers into paths unchecked, so a hostile or intercepted `HF_ENDPOINT`
//! answering `ETag: ../../../.bashrc` could write any file the user can.
//!
//! - **Only the files the runtime needs** for one dtype, not the whole repo.
//! - **Names from nothing the server chose freely.** A commit must be 40 hex
//!   digits, or the pull stops before touching the disk. A blob is named by
//!   its content hash: the ETag when it is one (64 hex: the SHA-256 of an LFS
//!   file; 40 hex: a small file's git blob SHA-1), checked against the bytes;
//!   otherwise the SHA-256 we compute, and the pull says that file could not
//!   be verified against the hub.
//! - **Integrity that cannot be skipped.** Bytes arrive in `blobs/<hash>.part`,
//!   are hashed whole, and only then renamed to their blob and linked from the
//!   snapshot: a snapshot entry exists only for a verified file, so a run
//!   killed mid-download or mid-hash leaves a `.part`, never a trusted file.
//!   A mismatch deletes the `.part`.
//! - **Every file, every time.** A file already in the snapshot is hashed
//!   again by each pull, against the hub's hash or the SHA-256 its blob is
//!   named by.
//! - **One commit.** Files are fetched at the commit `main` named, and a
//!   `.part` is keyed by its content hash or else by commit and file.
//! - **Resuming**: a later pull continues a `.part` with a `Range` request,
//!   and files already in the snapshot are not fetched again.
//! - **Complete or not at all.** `.clipql-pull-<dtype>.json` in the snapshot
//!   says a pull is under way, then lists every file it took;
//!   [`ensure_model`] pulls again where it says a pull did not finish.
//! - **`HF_HUB_OFFLINE`**, `HF_HUB_CACHE` and `HF_TOKEN`, as `huggingface_hub`
//!   reads them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::tokio::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::blob::{ContentHash, content_etag, fetch_verified, is_hex, pointed_blob, verify_part};
use super::errors::{
    error_chain, hub_error, is_connect_error, request_failed, status, unreachable,
};
use super::record::{mark_pull, pull_finished};
use super::{endpoint, hub_cache_dir, is_repo_id, offline, resolve_model};
use crate::error::Result;
use crate::{Dtype, available_dtypes};

/// The model used when none is given: the Transformers.js export of OpenAI's
/// CLIP ViT-B/32.
pub const DEFAULT_MODEL: &str = "Xenova/clip-vit-base-patch32";

/// How long the first request to the hub may take before we call it
/// unreachable. Later transfers are not limited: large files take long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One file of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledFile {
    /// The path in the repo, e.g. `onnx/vision_model.onnx`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// False when it was already in the cache.
    pub downloaded: bool,
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The snapshot folder, loadable as a model directory.
    pub dir: PathBuf,
    /// The commit `main` pointed to.
    pub commit: String,
    /// The files, in download order.
    pub files: Vec<PulledFile>,
    /// Why `logit_scale` cannot be measured from this snapshot, if it cannot.
    pub warning: Option<String>,
}

/// The files a model needs for `dtype`, in the order they are fetched. Each
/// inner list is a set of alternatives: the first one the repo has is taken.
/// Required entries fail the pull when the repo has none of them.
fn wanted_files(dtype: Dtype) -> Vec<(Vec<String>, bool)> {
    let one = |f: &str| vec![f.to_string()];
    let mut combined = vec![dtype.file("model")];
    if dtype != Dtype::Fp32 {
        combined.push(Dtype::Fp32.file("model"));
    }
    vec![
        (one("config.json"), true),
        (one("preprocessor_config.json"), true),
        (one("tokenizer.json"), true),
        // Only its pad token is read; older exports lack it.
        (one("tokenizer_config.json"), false),
        (one(&dtype.file("text_model")), true),
        (one(&dtype.file("vision_model")), true),
        // The combined graph, for measuring the trained logit_scale.
        (combined, false),
    ]
}

/// Downloads what the runtime needs of `repo_id` (for `dtype`) into the HF
/// cache and returns the snapshot folder. Files already there are skipped;
/// each new file is integrity-checked. `progress` draws a bar per file on
/// stderr.
pub async fn pull(repo_id: &str, dtype: Dtype, progress: bool) -> Result<PullReport> {
    if !is_repo_id(repo_id) {
        return Err(hub_error(
            repo_id,
            "not a repo id: expected owner/name, e.g. Xenova/clip-vit-base-patch32",
        ));
    }
    if offline() {
        return Err(hub_error(
            repo_id,
            "HF_HUB_OFFLINE is set, so nothing is downloaded. Unset it, or pull where the \
             hub is reachable and copy the HF cache folder here",
        ));
    }
    let cache_dir = hub_cache_dir().ok_or_else(|| {
        hub_error(
            repo_id,
            "no HF cache folder: set HF_HOME (or HF_HUB_CACHE), or HOME",
        )
    })?;
    let cache = Cache::new(cache_dir.clone());
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint())
        .with_token(token)
        .with_progress(progress)
        .build()
        .map_err(|e| hub_error(repo_id, &e.to_string()))?;
    let repo = Repo::model(repo_id.to_string());
    let remote = api.repo(repo.clone());
    let local = cache.repo(repo);

    let mut files = Vec::new();
    let mut commit: Option<String> = None;
    let mut warning = None;
    let mut unverified: Vec<String> = Vec::new();
    for (index, (alternatives, required)) in wanted_files(dtype).into_iter().enumerate() {
        let mut found = None;
        for name in &alternatives {
            let url = remote.url(name);
            let meta = if index == 0 {
                // The first request tells whether the hub is there at all.
                tokio::time::timeout(CONNECT_TIMEOUT, api.metadata(&url))
                    .await
                    .map_err(|_| unreachable(repo_id, "no answer in 30 s"))?
            } else {
                api.metadata(&url).await
            };
            match meta {
                Ok(meta) => {
                    found = Some((name.clone(), meta));
                    break;
                }
                Err(e) if status(&e) == Some(404) => continue,
                Err(e) if index == 0 && is_connect_error(&e) => {
                    return Err(unreachable(repo_id, &error_chain(&e)));
                }
                Err(e) => return Err(request_failed(repo_id, name, &e)),
            }
        }
        let Some((name, meta)) = found else {
            if required {
                return Err(hub_error(
                    repo_id,
                    &format!(
                        "the repo has no {} at main, so it is not a CLIP model in the \
                         Transformers.js ONNX layout{}",
                        alternatives.join(" or "),
                        if name_is_tower(&alternatives[0]) {
                            " for this dtype (try another --dtype)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if alternatives.iter().any(|a| a.ends_with("model.onnx")) {
                warning = Some(format!(
                    "the repo has no {}: logit_scale cannot be measured; \
                     SET clip.logit_scale (100 for OpenAI's CLIP) before scoring",
                    alternatives.join(" or ")
                ));
            }
            continue;
        };
        match &commit {
            None => commit = Some(meta.commit_hash().to_string()),
            Some(c) if c != meta.commit_hash() => {
                return Err(hub_error(
                    repo_id,
                    "main moved to a new commit during the download; run the pull again",
                ));
            }
            Some(_) => {}
        }
        let size = meta.size() as u64;
        // Nothing the server sent is a path until it is checked.
        if !is_hex(meta.commit_hash(), 40) {
            return Err(hub_error(
                repo_id,
                &format!(
                    "the hub answered {name} with commit {:?}, which is not a commit id \
                     (40 hex digits); nothing was written. Check HF_ENDPOINT ({})",
                    meta.commit_hash(),
                    endpoint()
                ),
            ));
        }
        let pointer = local.pointer_path(meta.commit_hash()).join(&name);
        let blobs = local
            .blob_path("x")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // A file already in the snapshot is hashed again, every pull: a size
        // is no proof, and the entry may come from a pull that never verified
        // it (an older clipql, another tool, a later change on disk). Its
        // blob is named by its content hash: the hub's, or (for an ETag that
        // is not one) the SHA-256 this pull computed when it stored it.
        let cached = pointed_blob(&pointer, &blobs).filter(|b| {
            std::fs::metadata(b).is_ok_and(|m| m.len() == size)
                && content_etag(meta.etag())
                    .is_none_or(|_| b.file_name() == Some(meta.etag().as_ref()))
        });
        let present = match cached {
            Some(blob) => {
                // What its bytes must hash to.
                let named = blob
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let check = match content_etag(meta.etag()) {
                    Some(hash) => Some((hash, meta.etag().to_string())),
                    None => is_hex(&named, 64).then_some((ContentHash::Sha256, named)),
                };
                let path = blob.clone();
                let verified = match check {
                    Some((hash, expected)) => tokio::task::spawn_blocking(move || {
                        verify_part(&path, Some(hash), &expected, size)
                    })
                    .await
                    .is_ok_and(|r| r.is_ok()),
                    None => false,
                };
                if !verified {
                    let _ = std::fs::remove_file(&pointer);
                    let _ = std::fs::remove_file(&blob);
                }
                verified
            }
            None => false,
        };
        if files.is_empty() {
            // From the first file on, the snapshot says a pull of this dtype
            // is under way, until the pull has every file it wants.
            mark_pull(&local.pointer_path(meta.commit_hash()), dtype, None)
                .map_err(|e| hub_error(repo_id, &format!("writing the pull's record: {e}")))?;
        }
        if !present {
            // The file at this very commit (not `main`, which may move), and
            // a partial download kept under the commit and file it is of.
            let at_commit = api.repo(Repo::with_revision(
                repo_id.to_string(),
                RepoType::Model,
                meta.commit_hash().to_string(),
            ));
            let verified = fetch_verified(
                &api,
                &at_commit.url(&name),
                meta.commit_hash(),
                repo_id,
                &name,
                &blobs,
                &pointer,
                meta.etag(),
                size,
                progress,
            )
            .await?;
            if !verified {
                unverified.push(name.clone());
            }
        }
        files.push(PulledFile {
            name,
            size,
            downloaded: !present,
        });
    }
    let commit = commit.ok_or_else(|| hub_error(repo_id, "nothing to download"))?;
    if !unverified.is_empty() {
        let note = format!(
            "the hub sent no content hash for {}, so {} could not be verified against it \
             (only its size was checked)",
            unverified.join(", "),
            if unverified.len() == 1 { "it" } else { "they" }
        );
        warning = Some(match warning {
            Some(w) => format!("{w}; {note}"),
            None => note,
        });
    }
    // `hf-hub` points refs/main at the commit after each file; a pull that
    // skipped every file must do it too (the ref may be missing or stale).
    local
        .create_ref(&commit)
        .map_err(|e| hub_error(repo_id, &format!("writing refs/main: {e}")))?;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    mark_pull(&local.pointer_path(&commit), dtype, Some(&names))
        .map_err(|e| hub_error(repo_id, &format!("writing the pull's record: {e}")))?;
    Ok(PullReport {
        dir: local.pointer_path(&commit),
        commit,
        files,
        warning,
    })
}

/// The model directory for `name` (a folder, or a repo id), pulling a repo
/// that is not in the cache (or lacks `dtype`) unless `HF_HUB_OFFLINE` is set.
pub async fn ensure_model(name: &str, dtype: Dtype, progress: bool) -> Result<PathBuf> {
    let cached = resolve_model(name);
    if !is_repo_id(name) || Path::new(name).is_dir() {
        return cached;
    }
    if let Ok(dir) = &cached
        && available_dtypes(dir).contains(&dtype)
        && pull_finished(dir, dtype)
    {
        return Ok(dir.clone());
    }
    if offline() {
        return match cached {
            Ok(dir) => Ok(dir),
            Err(e) => Err(hub_error(
                name,
                &format!("{e}; HF_HUB_OFFLINE is set, so it was not downloaded"),
            )),
        };
    }
    pull(name, dtype, progress).await.map(|r| r.dir)
}

fn name_is_tower(name: &str) -> bool {
    name.contains("vision_model") || name.contains("text_model")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_files_follow_the_dtype() {
        let names: Vec<String> = wanted_files(Dtype::Quantized)
            .into_iter()
            .flat_map(|(alts, _)| alts)
            .collect();
        assert!(names.contains(&"onnx/vision_model_quantized.onnx".to_string()));
        assert!(names.contains(&"onnx/text_model_quantized.onnx".to_string()));
        assert!(names.ends_with(&[
            "onnx/model_quantized.onnx".to_string(),
            "onnx/model.onnx".to_string()
        ]));
        let fp32 = wanted_files(Dtype::Fp32);
        assert_eq!(fp32.last().unwrap().0, vec!["onnx/model.onnx".to_string()]);
    }
}
