//! Remembers each combined graph's measured `logit_scale` (and `logit_bias`)
//! across processes.
//!
//! Measuring it means loading `onnx/model.onnx`, as large as both towers
//! together: on a full-size ViT-B/32 that was 1.3–2.3 s of a `clipql
//! classify` start-up of 3.5–5 s. The value is a property of the file, so
//! it is measured once per file and kept in the ClipQL cache folder
//! (`$CLIPQL_CACHE_DIR`, else `$XDG_CACHE_HOME/clipql`, else
//! `~/.cache/clipql`), one small JSON file per graph.
//!
//! An entry is used only while the graph file has the same canonical path,
//! length and modification time as when it was measured, so replacing or
//! editing the file measures again. The cache is best effort: an unreadable,
//! corrupt or unwritable cache is the same as an empty one.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::score::TrainedLogits;

/// Bump when the probe changes what it measures, to ignore older entries
/// (2: the bias too).
const PROBE_VERSION: u32 = 2;

/// The ClipQL cache folder: `$CLIPQL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/clipql`, else `~/.cache/clipql`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("CLIPQL_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("clipql"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".cache/clipql"))
}

/// What identifies one version of a graph file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileIdentity {
    path: PathBuf,
    len: u64,
    modified_ns: u128,
}

impl FileIdentity {
    fn of(graph: &Path) -> Option<Self> {
        let path = graph.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        let modified_ns = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(Self {
            path,
            len: meta.len(),
            modified_ns,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    probe_version: u32,
    file: FileIdentity,
    logits: TrainedLogits,
}

/// The `logit_scale` cache in one folder.
#[derive(Debug, Clone)]
pub struct ScaleCache {
    dir: PathBuf,
}

impl ScaleCache {
    /// The cache in [`cache_dir`], if there is one.
    pub fn default_location() -> Option<Self> {
        cache_dir().map(Self::at)
    }

    /// The cache kept under `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn entry_path(&self, file: &FileIdentity) -> PathBuf {
        let digest = Sha256::digest(file.path.as_os_str().as_encoded_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join("logit_scale").join(format!("{name}.json"))
    }

    /// The remembered scale and bias of `graph`, if it was measured on this
    /// very file.
    pub fn get(&self, graph: &Path) -> Option<TrainedLogits> {
        let file = FileIdentity::of(graph)?;
        let text = std::fs::read_to_string(self.entry_path(&file)).ok()?;
        let entry: Entry = serde_json::from_str(&text).ok()?;
        (entry.probe_version == PROBE_VERSION
            && entry.file == file
            && entry.logits.scale.is_finite()
            && entry.logits.scale > 0.0
            && entry.logits.bias.is_finite())
        .then_some(entry.logits)
    }

    /// Remembers `logits` for `graph`. Failing to write is not an error: the
    /// next process measures again.
    pub fn put(&self, graph: &Path, logits: TrainedLogits) {
        let Some(file) = FileIdentity::of(graph) else {
            return;
        };
        let path = self.entry_path(&file);
        let entry = Entry {
            probe_version: PROBE_VERSION,
            file,
            logits,
        };
        let (Some(parent), Ok(text)) = (path.parent(), serde_json::to_string_pretty(&entry)) else {
            return;
        };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        // Write a new file under a name no other file has (O_EXCL, a random
        // part, never the PID, which repeats in containers), then rename it
        // over the entry: concurrent processes never read a half-written
        // entry. A failed write removes the temporary file when it drops.
        let Ok(mut tmp) = tempfile::Builder::new()
            .prefix(".entry.")
            .suffix(".tmp")
            .tempfile_in(parent)
        else {
            return;
        };
        if std::io::Write::write_all(&mut tmp, text.as_bytes()).is_ok() {
            let _ = tmp.persist(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(scale: f32) -> TrainedLogits {
        TrainedLogits { scale, bias: 0.0 }
    }

    fn graph(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("model.onnx");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn remembers_a_scale_per_file_version() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ScaleCache::at(tmp.path().join("cache"));
        let model = graph(tmp.path(), b"graph one");
        assert_eq!(cache.get(&model), None);
        cache.put(&model, scale(100.0));
        assert_eq!(cache.get(&model), Some(scale(100.0)));
        // A different file at the same path (other length) measures again.
        graph(tmp.path(), b"a longer graph two");
        assert_eq!(cache.get(&model), None);
        cache.put(&model, scale(50.0));
        assert_eq!(cache.get(&model), Some(scale(50.0)));
        // Same length, newer modification time: measured again too.
        let f = std::fs::File::options().write(true).open(&model).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert_eq!(cache.get(&model), None);
    }

    /// Issue 26, item 3: the temporary file was `.PID.NAME.tmp`. In a
    /// container every process may be PID 1, so anything at that name (an
    /// entry another process is writing, or a folder) made every write
    /// fail, or two processes write one file.
    #[test]
    fn the_temporary_file_is_never_named_by_the_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ScaleCache::at(tmp.path().join("cache"));
        let model = graph(tmp.path(), b"graph");
        let entry = cache.entry_path(&FileIdentity::of(&model).unwrap());
        let parent = entry.parent().unwrap();
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        let pid_named = parent.join(format!(".{}.{name}.tmp", std::process::id()));
        std::fs::create_dir_all(pid_named.join("in-the-way")).unwrap();
        cache.put(&model, scale(100.0));
        assert_eq!(cache.get(&model), Some(scale(100.0)));
        let mut left: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec![
            name,
            pid_named
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ];
        expected.sort();
        assert_eq!(left, expected, "no temporary file is left behind");
    }

    #[test]
    fn a_broken_cache_is_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        let model = graph(tmp.path(), b"graph");
        let cache = ScaleCache::at(tmp.path().join("cache"));
        cache.put(&model, scale(100.0));
        let entry = cache.entry_path(&FileIdentity::of(&model).unwrap());
        for junk in ["", "{", "{\"probe_version\": 1}", "[1, 2]"] {
            std::fs::write(&entry, junk).unwrap();
            assert_eq!(cache.get(&model), None, "{junk:?}");
        }
        // Nonsense scales and biases are not trusted.
        for bad in [f32::NAN, 0.0, -3.0] {
            cache.put(&model, scale(bad));
            assert_eq!(cache.get(&model), None, "{bad}");
        }
        cache.put(
            &model,
            TrainedLogits {
                scale: 10.0,
                bias: f32::INFINITY,
            },
        );
        assert_eq!(cache.get(&model), None);
        let sigmoid = TrainedLogits {
            scale: 117.3,
            bias: -12.9,
        };
        cache.put(&model, sigmoid);
        assert_eq!(cache.get(&model), Some(sigmoid));
        // A cache folder that cannot be created (a file is in the way).
        let blocked = ScaleCache::at(model.join("not-a-dir"));
        blocked.put(&model, scale(100.0));
        assert_eq!(blocked.get(&model), None);
        // A missing graph has no entry.
        assert_eq!(cache.get(&tmp.path().join("absent.onnx")), None);
    }
}
