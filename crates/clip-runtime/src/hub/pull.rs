//! Downloading a model from the HF hub into the HF cache (`clipql model pull`).
//!
//! The transfer itself is the `hf-hub` crate's: the standard cache layout
//! (`blobs/<etag>`, `snapshots/<commit>/<file>` symlinks, `refs/main`),
//! `HF_ENDPOINT`, a per-file progress bar, and resuming an interrupted file
//! from its `.sync.part` in 10 MB chunks. What it does not do, we add here:
//!
//! - **Only the files the runtime needs** for one dtype, not the whole repo.
//! - **Integrity.** `hf-hub` writes whatever the server sends (a short body
//!   leaves zeros in a preallocated file). Each new blob is hashed and checked
//!   against its ETag: the SHA-256 for LFS files, the git blob SHA-1 for
//!   small ones. A mismatch deletes the blob, so a re-run fetches it again.
//! - **Skipping** files already in the snapshot, so a re-run after an
//!   interruption costs only what is missing.
//! - **`HF_HUB_OFFLINE`**, `HF_HUB_CACHE` and `HF_TOKEN`, as `huggingface_hub`
//!   reads them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::tokio::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{hub_cache_dir, is_repo_id, resolve_model};
use crate::error::{ClipError, Result};
use crate::{Dtype, available_dtypes};

/// The model used when none is given: the Transformers.js export of OpenAI's
/// CLIP ViT-B/32.
pub const DEFAULT_MODEL: &str = "Xenova/clip-vit-base-patch32";

/// The public hub, unless `HF_ENDPOINT` says otherwise.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How long the first request to the hub may take before we call it
/// unreachable. Later transfers are not limited: large files take long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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
        let pointer = local.pointer_path(meta.commit_hash()).join(&name);
        let blob = local.blob_path(meta.etag());
        let present = std::fs::metadata(&blob).is_ok_and(|m| m.len() == size)
            && std::fs::canonicalize(&pointer).is_ok_and(|p| p == canonical(&blob));
        if !present {
            download_checked(&remote, repo_id, &name, &blob, size).await?;
        }
        files.push(PulledFile {
            name,
            size,
            downloaded: !present,
        });
    }
    let commit = commit.ok_or_else(|| hub_error(repo_id, "nothing to download"))?;
    // `hf-hub` points refs/main at the commit after each file; a pull that
    // skipped every file must do it too (the ref may be missing or stale).
    local
        .create_ref(&commit)
        .map_err(|e| hub_error(repo_id, &format!("writing refs/main: {e}")))?;
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

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Downloads `name` through `hf-hub`, then checks the blob against its ETag.
async fn download_checked(
    remote: &ApiRepo,
    repo_id: &str,
    name: &str,
    expected_blob: &Path,
    size: u64,
) -> Result<()> {
    let pointer = remote
        .download(name)
        .await
        .map_err(|e| request_failed(repo_id, name, &e))?;
    // The pointer is a symlink to blobs/<etag>, named by the ETag the
    // download itself was made against.
    let blob = std::fs::canonicalize(&pointer).unwrap_or_else(|_| expected_blob.to_path_buf());
    let etag = blob
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = blob.clone();
    let check = tokio::task::spawn_blocking(move || verify_blob(&path, &etag, size))
        .await
        .map_err(|e| hub_error(repo_id, &format!("checking {name}: {e}")))?;
    if let Err(reason) = check {
        // Leave nothing that looks complete: the next pull fetches it again.
        let _ = std::fs::remove_file(&pointer);
        let _ = std::fs::remove_file(&blob);
        return Err(hub_error(
            repo_id,
            &format!(
                "{name} failed its integrity check ({reason}); the download was deleted, \
                 run the pull again"
            ),
        ));
    }
    Ok(())
}

/// Checks a downloaded blob against its size and ETag: a 64-hex ETag is the
/// SHA-256 of an LFS file, a 40-hex one the git blob SHA-1 of a small file.
/// Other ETags (some mirrors) are not content hashes; then only the size is
/// checked.
fn verify_blob(path: &Path, etag: &str, size: u64) -> std::result::Result<(), String> {
    let actual = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if actual != size {
        return Err(format!("{actual} bytes, expected {size}"));
    }
    let is_hex = |n: usize| etag.len() == n && etag.bytes().all(|b| b.is_ascii_hexdigit());
    let digest = if is_hex(64) {
        hash_file::<Sha256>(path, None)
    } else if is_hex(40) {
        hash_file::<Sha1>(path, Some(format!("blob {size}\0").as_bytes()))
    } else {
        return Ok(());
    }
    .map_err(|e| e.to_string())?;
    if digest.eq_ignore_ascii_case(etag) {
        Ok(())
    } else {
        Err(format!("content hash {digest}, expected {etag}"))
    }
}

fn hash_file<D: Digest>(path: &Path, prefix: Option<&[u8]>) -> std::io::Result<String> {
    let mut hasher = D::new();
    if let Some(p) = prefix {
        hasher.update(p);
    }
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn is_connect_error(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request())
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn hub_error(repo: &str, message: &str) -> ClipError {
    ClipError::Hub {
        repo: repo.to_string(),
        message: message.to_string(),
    }
}

fn unreachable(repo: &str, reason: &str) -> ClipError {
    hub_error(
        repo,
        &format!(
            "the hub at {} is unreachable ({reason}). Pull where it is reachable \
             (`clipql model pull {repo}`, or `huggingface-cli download {repo}`) and copy the \
             HF cache folder ($HF_HOME/hub) here, or pass --model DIR with a model folder",
            endpoint()
        ),
    )
}

fn request_failed(repo: &str, file: &str, e: &ApiError) -> ClipError {
    let hint = match status(e) {
        Some(401 | 403) => "; the repo may be gated or private: set HF_TOKEN",
        Some(404) => "; check the repo id",
        _ => "",
    };
    hub_error(
        repo,
        &format!("downloading {file}: {}{hint}", error_chain(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_sha256_and_git_sha1_etags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"hello\n").unwrap();
        // `sha256sum` and `git hash-object` of "hello\n".
        let sha256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let git_sha1 = "ce013625030ba8dba906f756967f9e9ca394464a";
        assert_eq!(verify_blob(&path, sha256, 6), Ok(()));
        assert_eq!(verify_blob(&path, git_sha1, 6), Ok(()));
        assert!(
            verify_blob(&path, sha256, 7)
                .unwrap_err()
                .contains("6 bytes")
        );
        let wrong = sha256.replace('5', "6");
        assert!(
            verify_blob(&path, &wrong, 6)
                .unwrap_err()
                .contains("content hash")
        );
        // Not a content hash: the size is all that can be checked.
        assert_eq!(verify_blob(&path, "W/\"abc\"", 6), Ok(()));
    }

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
