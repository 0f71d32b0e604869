//! The record a pull keeps in the snapshot (`.clipql-pull-<dtype>.json`):
//! that a pull is under way, then every file it took, so that
//! `ensure_model` pulls again where a pull did not finish.

use std::path::{Path, PathBuf};

use crate::Dtype;

/// The record a pull keeps in the snapshot folder for `dtype`: the files it
/// took, once it has every one it wants.
pub(super) fn pull_record(snapshot: &Path, dtype: Dtype) -> PathBuf {
    snapshot.join(format!(".clipql-pull-{dtype}.json"))
}

/// Writes the pull's record: `None` while the pull is under way, then the
/// names of every file it took. Replaced in one rename.
pub(super) fn mark_pull(
    snapshot: &Path,
    dtype: Dtype,
    done: Option<&[&str]>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(snapshot)?;
    let record = serde_json::json!({ "complete": done.is_some(), "files": done.unwrap_or(&[]) });
    let mut tmp = tempfile::Builder::new()
        .prefix(".clipql-pull.")
        .tempfile_in(snapshot)?;
    std::io::Write::write_all(&mut tmp, record.to_string().as_bytes())?;
    tmp.persist(pull_record(snapshot, dtype))
        .map(|_| ())
        .map_err(|e| e.error)
}

/// Whether nothing says a pull of `dtype` into `dir` is unfinished: a
/// snapshot a pull of ours began has every file that pull listed once it
/// had them all (the optional ones included). A snapshot with no record
/// (another tool's, an older clipql's, a copied cache) is judged by its
/// required files alone.
pub(super) fn pull_finished(dir: &Path, dtype: Dtype) -> bool {
    let Ok(text) = std::fs::read_to_string(pull_record(dir, dtype)) else {
        return true;
    };
    let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    record["complete"] == true
        && record["files"].as_array().is_some_and(|files| {
            files
                .iter()
                .all(|f| f.as_str().is_some_and(|f| dir.join(f).is_file()))
        })
}
