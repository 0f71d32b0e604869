//! The `clipql` binary, run as a user runs it.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn clipql(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipql"))
        .args(args)
        .current_dir(root())
        .env_remove("CLIPQL_MODEL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const LABELS: &str = "['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', 'a photo of an astronaut', \
    'a cup of coffee', 'a black and white photo', 'a page of text', 'a photo of coins', 'a photo of a horse']";

#[test]
fn version_names_all_three_components() {
    let o = clipql(&["--version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("clipql {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("DataFusion 55."), "{out}");
    assert!(out.contains("ONNX Runtime 1.32.0"), "{out}");
}

/// The acceptance query: one JSON object per image, agreeing with
/// transformers' pipeline (golden.json) to the project's tolerances.
#[test]
fn jsonl_classification_matches_transformers() {
    let sql = format!(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/'; \
         SELECT name, clip_classify(image, {LABELS}) AS label, clip_scores(image, {LABELS}) AS scores, \
         clip_image_embedding(image) AS emb FROM images ORDER BY name"
    );
    let o = clipql(&[
        "sql",
        "--model",
        "tests/fixtures/model",
        "--format",
        "jsonl",
        "-c",
        &sql,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/golden/golden.json")).unwrap(),
    )
    .unwrap();
    let labels: Vec<&str> = golden["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 14);
    let mut compared = 0;
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let emb: Vec<f64> = row["emb"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(emb.len(), 16);
        let scores = row["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 9);
        assert_eq!(scores[0]["label"], row["label"]);
        if name == "coins_gray16.png" {
            continue; // PIL clips 16-bit gray; see tests/golden.rs
        }
        let case = golden["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["file"] == name)
            .unwrap();
        let cos: f64 = emb
            .iter()
            .zip(case["image_embedding"].as_array().unwrap())
            .map(|(a, b)| a * b.as_f64().unwrap())
            .sum();
        assert!(cos >= 0.999, "{name}: cosine {cos}");
        for s in scores {
            let i = labels
                .iter()
                .position(|l| *l == s["label"].as_str().unwrap())
                .unwrap();
            let expected = case["probabilities"][i].as_f64().unwrap();
            let got = s["score"].as_f64().unwrap();
            assert!(
                (got - expected).abs() <= 1e-3,
                "{name} {}: {got} vs {expected}",
                labels[i]
            );
        }
        if case["top2_margin"].as_f64().unwrap() > 2e-3 {
            assert_eq!(row["label"], case["top_label"], "{name}");
        }
        compared += 1;
    }
    assert_eq!(compared, 13);
}

#[test]
fn every_format_prints_the_result() {
    let sql = "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/'; \
               SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS label, \
               clip_scores(image, ['a photo of a cat', 'a photo of a horse']) AS scores \
               FROM images WHERE name = 'chelsea.jpg'";
    let table = stdout(&clipql(&[
        "sql",
        "--model",
        "tests/fixtures/model",
        "--format",
        "table",
        "-c",
        sql,
    ]));
    assert!(
        table.contains("| chelsea.jpg | a photo of a horse |"),
        "{table}"
    );
    let csv = stdout(&clipql(&[
        "sql",
        "--model",
        "tests/fixtures/model",
        "--format",
        "csv",
        "-c",
        sql,
    ]));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("name,label,scores"));
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(
            "chelsea.jpg,a photo of a horse,\"[{label: a photo of a horse, score: 0.86"
        ),
        "{row}"
    );
    let json = stdout(&clipql(&[
        "sql",
        "--model",
        "tests/fixtures/model",
        "--format",
        "json",
        "-c",
        sql,
    ]));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["label"], "a photo of a horse");
    assert_eq!(parsed[0]["scores"][1]["label"], "a photo of a cat");
}

#[test]
fn model_comes_from_the_environment_too() {
    let o = Command::new(env!("CARGO_BIN_EXE_clipql"))
        .args(["sql", "--format", "csv", "-c", "SELECT clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS l FROM read_images('tests/fixtures/photos/chelsea.jpg')"])
        .current_dir(root())
        .env("CLIPQL_MODEL", "tests/fixtures/model")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "l\na photo of a horse\n");
}

#[test]
fn statements_run_in_order_from_a_file_and_parquet_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("emb.parquet");
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        format!(
            "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/';\n\
             COPY (SELECT name, clip_image_embedding(image) AS embedding FROM images) TO '{}';\n\
             SELECT name, clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a horse']) AS label \
             FROM '{}' WHERE name = 'chelsea.jpg';",
            parquet.display(),
            parquet.display()
        ),
    )
    .unwrap();
    let o = clipql(&[
        "sql",
        "--model",
        "tests/fixtures/model",
        "--format",
        "jsonl",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"name\":\"chelsea.jpg\",\"label\":\"a photo of a horse\"}\n"
    );

    let o = clipql(&[
        "sql",
        "--format",
        "jsonl",
        "-c",
        &format!("SELECT count(*) AS n FROM '{}'", parquet.display()),
    ]);
    assert_eq!(stdout(&o), "{\"n\":14}\n", "{}", stderr(&o));
}

#[test]
fn the_example_queries_run() {
    for file in [
        "sql/examples/classify_photos.sql",
        "sql/examples/embed_once.sql",
    ] {
        let o = clipql(&[
            "sql",
            "--model",
            "tests/fixtures/model",
            "--format",
            "csv",
            "-f",
            file,
        ]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        assert_eq!(
            stdout(&o).lines().count(),
            15,
            "{file}: header plus 14 photos"
        );
    }
}

#[test]
fn errors_print_their_cause_and_exit_non_zero() {
    let o = clipql(&[
        "sql",
        "-c",
        "SELECT clip_classify(image, ['a']) FROM read_images('tests/fixtures/photos/')",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("clip.model is not set"), "{err}");

    let o = clipql(&["sql", "-c", "SELEC 1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SELEC"), "{}", stderr(&o));

    let o = clipql(&[
        "sql",
        "--model",
        "/nonexistent/model",
        "-c",
        "SELECT clip_text_embedding('x')",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/model"), "{}", stderr(&o));

    let o = clipql(&["sql"]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
}

#[test]
fn a_missing_onnx_runtime_names_the_setup_command() {
    let o = Command::new(env!("CARGO_BIN_EXE_clipql"))
        .args([
            "sql",
            "--model",
            "tests/fixtures/model",
            "-c",
            "SELECT clip_text_embedding('a cat')",
        ])
        .current_dir(root())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ORT_DYLIB_PATH is set to /nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.contains("cargo xtask setup"), "{err}");
}
