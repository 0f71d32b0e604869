//! The committed fuzz corpus (`tests/fuzz/corpus/`), replayed as a plain
//! regression test: every input `cargo xtask fuzz` kept goes through the
//! same target body again, on stable, in CI.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn decode_preprocess_corpus_replays_cleanly() {
    let inputs = corpus("decode_preprocess");
    assert!(inputs.len() > 100, "{} inputs", inputs.len());
    for (name, data) in &inputs {
        eprintln!("decode_preprocess {name}");
        targets::decode_preprocess(data);
    }
}

#[test]
fn udf_binary_corpus_replays_cleanly() {
    let inputs = corpus("udf_binary");
    assert!(inputs.len() > 100, "{} inputs", inputs.len());
    for (name, data) in &inputs {
        eprintln!("udf_binary {name}");
        targets::udf_binary(data);
    }
}
