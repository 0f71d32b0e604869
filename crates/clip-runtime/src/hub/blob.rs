//! One file of a pull: fetched into `blobs/<hash>.part` (continued with
//! `Range`), hashed whole against the hub's content hash, renamed to its
//! blob and only then linked from the snapshot.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::tokio::ApiError;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::errors::{hub_error, request_failed};
use crate::error::Result;

pub(super) fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

pub(super) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a content-hash ETag is the hash of, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentHash {
    /// 64 hex digits: the SHA-256 of the bytes (LFS files).
    Sha256,
    /// 40 hex digits: the git blob SHA-1 (`blob <len>\0` + bytes).
    GitSha1,
}

pub(super) fn content_etag(etag: &str) -> Option<ContentHash> {
    if is_hex(etag, 64) {
        Some(ContentHash::Sha256)
    } else if is_hex(etag, 40) {
        Some(ContentHash::GitSha1)
    } else {
        None
    }
}

/// The blob a snapshot entry points to, when it is a link into `blobs`.
pub(super) fn pointed_blob(pointer: &Path, blobs: &Path) -> Option<PathBuf> {
    let blob = std::fs::canonicalize(pointer).ok()?;
    (blob.parent() == Some(canonical(blobs).as_path())).then_some(blob)
}

/// Downloads `url` into `blobs/<hash>.part` (continuing one an earlier pull
/// left), verifies it, renames it to its blob and links `pointer` to it.
/// Returns whether the bytes were verified against the hub's content hash
/// (false: the ETag is not one; then the blob is named by our SHA-256).
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_verified(
    api: &hf_hub::api::tokio::Api,
    url: &str,
    commit: &str,
    repo_id: &str,
    name: &str,
    blobs: &Path,
    pointer: &Path,
    etag: &str,
    size: u64,
    progress: bool,
) -> Result<bool> {
    let io = |what: &str, e: std::io::Error| hub_error(repo_id, &format!("{what} {name}: {e}"));
    let hash = content_etag(etag);
    // A stable name for the partial file that is ours, not the server's:
    // the content hash, or else the commit and file it is of, so that a
    // later pull never continues it with another commit's bytes.
    let key = match hash {
        Some(_) => etag.to_ascii_lowercase(),
        None => hex(&Sha256::digest(format!("{commit}\0{name}").as_bytes())),
    };
    std::fs::create_dir_all(blobs).map_err(|e| io("creating the cache folder for", e))?;
    let part = blobs.join(format!("{key}.part"));
    let mut have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if have > size {
        have = 0;
    }
    if progress {
        eprintln!(
            "downloading {name} ({size} bytes{})",
            if have > 0 {
                format!(", {have} already here")
            } else {
                String::new()
            }
        );
    }
    if have < size {
        let mut request = api.client().get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let failed = |e| request_failed(repo_id, name, &ApiError::from(e));
        let mut response = request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?;
        // 206 continues the part; a 200 is the whole file again.
        let append = have > 0 && response.status().as_u16() == 206;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&part)
            .map_err(|e| io("writing", e))?;
        let mut written = if append { have } else { 0 };
        use std::io::Write;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if written + chunk.len() as u64 > size {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(hub_error(
                    repo_id,
                    &format!(
                        "downloading {name}: the hub sent more than the {size} bytes it announced"
                    ),
                ));
            }
            file.write_all(&chunk).map_err(|e| io("writing", e))?;
            written += chunk.len() as u64;
        }
        file.sync_all().map_err(|e| io("writing", e))?;
        if written < size {
            return Err(hub_error(
                repo_id,
                &format!(
                    "downloading {name}: the transfer ended after {written} of {size} bytes; \
                     run the pull again to continue it"
                ),
            ));
        }
    }
    let path = part.clone();
    let expected = etag.to_string();
    let check = tokio::task::spawn_blocking(move || verify_part(&path, hash, &expected, size))
        .await
        .map_err(|e| hub_error(repo_id, &format!("checking {name}: {e}")))?;
    let sha256 = match check {
        Ok(sha256) => sha256,
        Err(reason) => {
            // Leave nothing that looks complete: the next pull fetches it again.
            let _ = std::fs::remove_file(&part);
            return Err(hub_error(
                repo_id,
                &format!(
                    "{name} failed its integrity check ({reason}); the download was deleted, \
                     run the pull again"
                ),
            ));
        }
    };
    let blob = blobs.join(match hash {
        Some(_) => etag.to_ascii_lowercase(),
        None => sha256,
    });
    std::fs::rename(&part, &blob).map_err(|e| io("storing", e))?;
    // The snapshot entry last: it is the record that the blob was verified.
    if let Some(dir) = pointer.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("linking", e))?;
    }
    let _ = std::fs::remove_file(pointer);
    link(&canonical(&blob), pointer).map_err(|e| io("linking", e))?;
    Ok(hash.is_some())
}

#[cfg(unix)]
pub(super) fn link(blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(blob, pointer)
}

#[cfg(not(unix))]
pub(super) fn link(blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, pointer).map(|_| ())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a downloaded file against its size and, where the ETag is a
/// content hash, that hash. Returns the file's SHA-256.
pub(super) fn verify_part(
    path: &Path,
    hash: Option<ContentHash>,
    etag: &str,
    size: u64,
) -> std::result::Result<String, String> {
    let actual = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if actual != size {
        return Err(format!("{actual} bytes, expected {size}"));
    }
    let sha256 = hash_file::<Sha256>(path, None).map_err(|e| e.to_string())?;
    let digest = match hash {
        Some(ContentHash::Sha256) => sha256.clone(),
        Some(ContentHash::GitSha1) => {
            hash_file::<Sha1>(path, Some(format!("blob {size}\0").as_bytes()))
                .map_err(|e| e.to_string())?
        }
        None => return Ok(sha256),
    };
    if digest.eq_ignore_ascii_case(etag) {
        Ok(sha256)
    } else {
        Err(format!("content hash {digest}, expected {etag}"))
    }
}

pub(super) fn hash_file<D: Digest>(path: &Path, prefix: Option<&[u8]>) -> std::io::Result<String> {
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
    Ok(hex(&hasher.finalize()))
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
        let check = |etag: &str, size| verify_part(&path, content_etag(etag), etag, size);
        assert_eq!(check(sha256, 6).as_deref(), Ok(sha256));
        assert_eq!(check(git_sha1, 6).as_deref(), Ok(sha256));
        assert!(check(sha256, 7).unwrap_err().contains("6 bytes"));
        let wrong = sha256.replace('5', "6");
        assert!(check(&wrong, 6).unwrap_err().contains("content hash"));
        // Not a content hash: the size is all that can be checked, and the
        // blob is named by our own SHA-256.
        assert_eq!(check("W/\"abc\"", 6).as_deref(), Ok(sha256));
        assert_eq!(content_etag("../../etc/passwd"), None);
        assert_eq!(content_etag(&"a".repeat(63)), None);
    }
}
