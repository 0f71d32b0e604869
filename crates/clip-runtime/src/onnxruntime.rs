//! Finding and loading the ONNX Runtime shared library.
//!
//! ClipQL links ONNX Runtime dynamically (`ort`'s `load-dynamic`), so the
//! library is looked up at run time, in this order:
//!
//! 1. `ORT_DYLIB_PATH`, a path to the library file;
//! 2. the folder that `cargo xtask setup` fills from the pinned `onnxruntime`
//!    wheel on PyPI, `.clipql/onnxruntime/`, in exactly two places: the
//!    folder the running executable is in (an installed `clipql` with its
//!    library beside it), and, in debug builds only, the source checkout
//!    this crate was built from (`target/debug/clipql` in a checkout; a
//!    release binary may be copied anywhere, so it keeps no path of the
//!    machine that built it). Never the current directory or any other
//!    ancestor: a library planted in `/tmp/.clipql/onnxruntime/` would
//!    otherwise run as the user of every `clipql` started below `/tmp`;
//! 3. otherwise a [`ClipError::RuntimeMissing`] naming the set-up command.
//!
//! Whichever way it is found, a library is loaded only if nobody but root
//! and this user can change it ([`check_trusted`]): the file and every
//! folder above it are owned by root or this user and are not writable by
//! group or others (a folder above the library's own may be world-writable
//! with the sticky bit, as `/tmp` is, since nobody can then rename or
//! replace what another user put in it).
//!
//! `ort` would panic on a failed `dlopen`, so the path is resolved and checked
//! here first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{ClipError, Result};

/// The ONNX Runtime version `cargo xtask setup` provisions.
pub const PINNED_ONNXRUNTIME_VERSION: &str = "1.32.0";

/// The project-local folder (relative to a checkout) holding the library.
pub const PROVISIONED_DIR: &str = ".clipql/onnxruntime";

/// Environment variable that overrides the library location.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

struct Loaded {
    env: ort::environment::Environment,
    path: PathBuf,
    version: String,
}

/// Why loading failed, kept so every later call reports the same error.
#[derive(Debug, Clone)]
enum LoadFailure {
    /// The library is missing or cannot be loaded.
    Missing(String),
    /// The library loaded but the environment could not be created.
    Environment(String),
}

static RUNTIME: OnceLock<std::result::Result<Loaded, LoadFailure>> = OnceLock::new();

/// Where the ONNX Runtime library would be loaded from, without loading it.
pub fn locate_library() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(DYLIB_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return check_trusted(&path).map(|()| path).map_err(missing);
        }
        return Err(missing(format!(
            "{DYLIB_ENV} is set to {}, which is not a file",
            path.display()
        )));
    }
    for dir in provisioned_dirs() {
        if let Some(lib) = library_in(&dir) {
            return check_trusted(&lib).map(|()| lib).map_err(missing);
        }
    }
    Err(missing(format!(
        "{DYLIB_ENV} is unset and no {PROVISIONED_DIR}/libonnxruntime.so* was found \
         beside the executable or in the checkout it was built from ({})",
        provisioned_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The only folders the library is looked up in, without `ORT_DYLIB_PATH`:
/// beside the executable, and in the checkout that built this crate.
fn provisioned_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join(PROVISIONED_DIR));
    }
    #[cfg(debug_assertions)]
    {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        dirs.push(
            checkout
                .canonicalize()
                .unwrap_or(checkout)
                .join(PROVISIONED_DIR),
        );
    }
    dirs
}

/// The user this process runs as: the owner of `/proc/self`. `None` where
/// there is no `/proc`; then only root's files are trusted.
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Whether `lib` may be loaded: nobody but root and this user can change
/// the file, its folder or any folder above (see the module docs). The
/// error says what is wrong and how to mend it.
pub fn check_trusted(lib: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let real = lib
        .canonicalize()
        .map_err(|e| format!("{}: {e}", lib.display()))?;
    let me = current_uid();
    let mut place = Some(real.as_path());
    let mut depth = 0;
    while let Some(path) = place {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = meta.mode();
        let owner_ok = meta.uid() == 0 || Some(meta.uid()) == me;
        // The file and its own folder: nobody else may write at all.
        // Folders above: a sticky world-writable one (/tmp) cannot be used
        // to rename or replace another user's folder.
        let sticky = mode & 0o1000 != 0 && depth >= 2;
        let writable_by_others = mode & 0o022 != 0 && !sticky;
        if !owner_ok || writable_by_others {
            let why = if owner_ok {
                format!("is writable by group or others (mode {:o})", mode & 0o7777)
            } else {
                format!("is owned by another user (uid {})", meta.uid())
            };
            return Err(format!(
                "refusing to load ONNX Runtime from {}: {} {why}, so someone else could \
                 replace the code it runs. Keep the library in a folder only you (or root) \
                 can write (chmod go-w), or run `cargo xtask setup` and use its copy",
                lib.display(),
                path.display()
            ));
        }
        place = path.parent();
        depth += 1;
    }
    Ok(())
}

/// The library file in a provisioned folder, if there is one.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    // Prefer the fully versioned name (libonnxruntime.so.1.32.0) over links.
    candidates.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    candidates.into_iter().next()
}

fn missing(reason: String) -> ClipError {
    ClipError::RuntimeMissing {
        reason,
        min_minor: ort::MINOR_VERSION,
    }
}

fn load() -> std::result::Result<Loaded, LoadFailure> {
    let path = locate_library().map_err(|e| match e {
        ClipError::RuntimeMissing { reason, .. } => LoadFailure::Missing(reason),
        other => LoadFailure::Missing(other.to_string()),
    })?;
    let builder = ort::init_from(&path).map_err(|e| LoadFailure::Missing(e.to_string()))?;
    let env = builder
        .with_name("clipql")
        .with_telemetry(false)
        .build()
        .map_err(|e| LoadFailure::Environment(e.to_string()))?;
    let version = version_from_build_info(ort::info())
        .or_else(|| version_from_file_name(&path))
        .unwrap_or_else(|| "unknown".to_string());
    Ok(Loaded { env, path, version })
}

fn loaded() -> Result<&'static Loaded> {
    RUNTIME
        .get_or_init(load)
        .as_ref()
        .map_err(|failure| match failure {
            LoadFailure::Missing(reason) => missing(reason.clone()),
            LoadFailure::Environment(message) => ClipError::Onnx {
                context: "creating the ONNX Runtime environment".to_string(),
                message: message.clone(),
            },
        })
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    loaded().map(|l| &l.env)
}

/// Facts about the loaded ONNX Runtime, for `--version` and diagnostics.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The library that was loaded.
    pub path: PathBuf,
    /// Its version, e.g. `1.32.0`.
    pub version: String,
}

/// Loads ONNX Runtime if needed and describes it.
pub fn runtime_info() -> Result<RuntimeInfo> {
    loaded().map(|l| RuntimeInfo {
        path: l.path.clone(),
        version: l.version.clone(),
    })
}

/// `ORT Build Info: git-branch=rel-1.32.0, ...` → `1.32.0`.
fn version_from_build_info(info: &str) -> Option<String> {
    let start = info.find("rel-")? + 4;
    let rest = &info[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

/// `libonnxruntime.so.1.32.0` → `1.32.0`.
fn version_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let v = name.strip_prefix("libonnxruntime.so.")?;
    (v.split('.').count() == 3).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            version_from_build_info("ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc"),
            Some("1.32.0".to_string())
        );
        assert_eq!(version_from_build_info("no branch"), None);
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so.1.32.0")),
            Some("1.32.0".to_string())
        );
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so")),
            None
        );
    }

    /// Issue 26, item 5: a library in a folder others can write is refused,
    /// wherever it is found; one in a private folder is accepted.
    #[test]
    fn a_library_others_can_replace_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        // A library of `file_mode` in a new folder of `dir_mode`.
        let tmp = tempfile::tempdir().unwrap();
        let library = |name: &str, dir_mode: u32, file_mode: u32| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            chmod(&dir, dir_mode);
            let lib = dir.join("libonnxruntime.so.1.32.0");
            std::fs::write(&lib, b"").unwrap();
            chmod(&lib, file_mode);
            lib
        };
        let planted = library("open", 0o777, 0o644);
        let err = check_trusted(&planted).unwrap_err();
        assert!(
            err.contains("is writable by group or others (mode 777)"),
            "{err}"
        );
        assert!(
            err.contains(&tmp.path().join("open").display().to_string()),
            "{err}"
        );
        check_trusted(&library("private", 0o755, 0o644)).unwrap();
        // The file itself writable by others.
        let err = check_trusted(&library("file", 0o755, 0o666)).unwrap_err();
        assert!(err.contains("(mode 666)"), "{err}");
        // A sticky world-writable folder directly holding the library is
        // refused too: anyone may add a file there.
        assert!(check_trusted(&library("sticky", 0o1777, 0o644)).is_err());
    }

    #[test]
    fn finds_the_versioned_library_in_a_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ort");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libonnxruntime.so.1"), b"").unwrap();
        std::fs::write(dir.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(dir.join("README"), b"").unwrap();
        assert_eq!(library_in(&dir), Some(dir.join("libonnxruntime.so.1.32.0")));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(library_in(&dir), None);
    }
}
