//! The `clipql` binary as the tests run it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A local address that refuses connections (port 9, discard, unused).
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// This test process's own scratch folder, under cargo's temporary folder
/// for integration tests (never a fixed path shared with other runs, nor
/// the user's `~/.cache`).
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("clipql-tests-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
    })
    .path()
}

/// The `clipql` binary in the repository root, cut off from the user's
/// settings, the real hub and any real S3: no `CLIPQL_*` or `AWS_*`
/// variables and no AWS profile files, an empty HF cache, an `HF_ENDPOINT`
/// nothing listens on, and no `RUST_LOG`.
pub fn clipql_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipql"));
    cmd.current_dir(root())
        .env_remove("CLIPQL_MODEL")
        .env_remove("CLIPQL_CLUSTER")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("RUST_LOG")
        // The measured logit_scale cache: xtask gives the run a fresh one;
        // a bare `cargo test` gets this process's own.
        .env(
            "CLIPQL_CACHE_DIR",
            std::env::var_os("CLIPQL_CACHE_DIR")
                .map_or_else(|| scratch().join("clipql-cache"), PathBuf::from),
        )
        .env("HF_HOME", scratch().join("empty-hf-home"))
        .env("HF_ENDPOINT", DEAD_ENDPOINT);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws/credentials",
    )
    .env("AWS_CONFIG_FILE", "/nonexistent/aws/config");
    cmd
}
