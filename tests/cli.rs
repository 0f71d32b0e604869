//! The `clipql` binary, run as a user runs it.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/clipql.rs"]
mod clipql_support;
#[path = "support/faulty_proxy.rs"]
mod faulty_proxy;
#[path = "support/hub.rs"]
mod hub;
#[path = "support/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clipql_support::{DEAD_ENDPOINT, clipql_command, root};
use hub::{Fault, StandInHub};
use s3::{S3_KEY, S3_SECRET, S3Server};

/// The S3 stand-in, holding the fixture photos under `photos-bucket/photos/`.
fn s3_server() -> S3Server {
    s3::s3_server(&root().join("tests/fixtures/photos"))
}

/// [`clipql_command`] run through `program pre_args… clipql`, with the same
/// environment and working folder: for a wrapper that sets up the process
/// (a PID namespace, a umask) and then executes `clipql`.
fn clipql_wrapped_in(program: &str, pre_args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(pre_args)
        .arg(env!("CARGO_BIN_EXE_clipql"))
        .current_dir(root());
    with_clipql_env(cmd)
}

/// `cmd` with the environment [`clipql_command`] gives `clipql`.
fn with_clipql_env(mut cmd: Command) -> Command {
    for (k, v) in clipql_command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn clipql(args: &[&str]) -> Output {
    clipql_command().args(args).output().unwrap()
}

/// `clipql` with `--model tests/fixtures/model` added.
fn clipql_fixture(args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend(["--model", "tests/fixtures/model"]);
    clipql(&args)
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

/// The issue's acceptance query: one JSON object per image, agreeing with
/// transformers' pipeline (golden.json) to the project's tolerances.
#[test]
fn jsonl_classification_matches_transformers() {
    let sql = format!(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/'; \
         SELECT name, clip_classify(image, {LABELS}) AS label, clip_scores(image, {LABELS}) AS scores, \
         clip_image_embedding(image) AS emb FROM images ORDER BY name"
    );
    let o = clipql_fixture(&["sql", "--format", "jsonl", "-c", &sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for row in &rows {
        assert_eq!(row["emb"].as_array().unwrap().len(), 16);
    }
    assert_matches_golden(&rows, "name");
}

/// Checks rows with `label` and `scores` against transformers' answers in
/// golden.json, to the end-to-end tolerances: every probability within 1e-3,
/// the same top label where transformers' top-2 margin exceeds 2e-3.
fn assert_matches_golden(rows: &[serde_json::Value], file_column: &str) {
    let golden = golden();
    let labels = golden_labels();
    assert_eq!(rows.len(), 14);
    let mut compared = 0;
    for row in rows {
        let file = row[file_column].as_str().unwrap();
        let name = file.rsplit('/').next().unwrap();
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
        for s in scores {
            let i = labels
                .iter()
                .position(|l| l == s["label"].as_str().unwrap())
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

fn golden() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/golden/golden.json")).unwrap(),
    )
    .unwrap()
}

fn golden_labels() -> Vec<String> {
    golden()["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_format_prints_the_result() {
    let sql = "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/'; \
               SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS label, \
               clip_scores(image, ['a photo of a cat', 'a photo of a horse']) AS scores \
               FROM images WHERE name = 'chelsea.jpg'";
    let table = stdout(&clipql_fixture(&["sql", "--format", "table", "-c", sql]));
    assert!(
        table.contains("| chelsea.jpg | a photo of a horse |"),
        "{table}"
    );
    let csv = stdout(&clipql_fixture(&["sql", "--format", "csv", "-c", sql]));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("name,label,scores"));
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(
            "chelsea.jpg,a photo of a horse,\"[{label: a photo of a horse, score: 0.86"
        ),
        "{row}"
    );
    let json = stdout(&clipql_fixture(&["sql", "--format", "json", "-c", sql]));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["label"], "a photo of a horse");
    assert_eq!(parsed[0]["scores"][1]["label"], "a photo of a cat");
}

#[test]
fn model_comes_from_the_environment_too() {
    let o = clipql_command()
        .args(["sql", "--format", "csv", "-c", "SELECT clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS l FROM read_images('tests/fixtures/photos/chelsea.jpg')"])
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
    let o = clipql_fixture(&["sql", "--format", "jsonl", "-f", file.to_str().unwrap()]);
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
        "sql/examples/tag_photos.sql",
    ] {
        let o = clipql_fixture(&["sql", "--format", "csv", "-f", file]);
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
    // No --model: the default model, which cannot be fetched here.
    assert!(
        err.contains("model Xenova/clip-vit-base-patch32 from the HF hub: the hub at"),
        "{err}"
    );

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

/// A query that needs ONNX Runtime, with `ORT_DYLIB_PATH` set to `lib`.
fn embed_text_with_onnxruntime_at(lib: &Path) -> Output {
    clipql_command()
        .args([
            "sql",
            "--model",
            "tests/fixtures/model",
            "-c",
            "SELECT clip_text_embedding('a cat')",
        ])
        .env("ORT_DYLIB_PATH", lib)
        .output()
        .unwrap()
}

#[test]
fn a_missing_onnx_runtime_names_the_setup_command() {
    let o = embed_text_with_onnxruntime_at(Path::new("/nonexistent/libonnxruntime.so"));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ORT_DYLIB_PATH is set to /nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.contains("cargo xtask setup"), "{err}");
}

/// A stand-in for an ONNX Runtime library, built with the C compiler the
/// build already needs (libjpeg-turbo): `OrtGetApiBase` reporting `version`,
/// or no ONNX Runtime symbols at all.
fn fake_onnxruntime(dir: &Path, version: Option<&str>) -> PathBuf {
    let source = dir.join("fake_ort.c");
    let body = match version {
        Some(v) => format!(
            "typedef struct {{ const void* (*GetApi)(unsigned); const char* (*GetVersionString)(void); }} B;\n\
             static const void* api(unsigned v) {{ (void)v; return 0; }}\n\
             static const char* ver(void) {{ return \"{v}\"; }}\n\
             static B base = {{ api, ver }};\n\
             const B* OrtGetApiBase(void) {{ return &base; }}\n"
        ),
        None => "int not_onnxruntime(void) { return 1; }\n".to_string(),
    };
    std::fs::write(&source, body).unwrap();
    let lib = dir.join(format!("libonnxruntime.so.{}", version.unwrap_or("0")));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    lib
}

#[test]
fn an_incompatible_onnx_runtime_names_both_versions_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (version, expected) in [
        (
            Some("1.10.0"),
            "expected version >= '1.31.x', but got '1.10.0'",
        ),
        (None, "does not export `OrtGetApiBase`"),
    ] {
        let o = embed_text_with_onnxruntime_at(&fake_onnxruntime(dir.path(), version));
        assert_eq!(o.status.code(), Some(1), "{version:?}");
        let err = stderr(&o);
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("cargo xtask setup"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Issue 26, item 5: the real library, planted in a folder anyone can
/// write, is refused, by `ORT_DYLIB_PATH` and beside the executable alike;
/// the error says why and what to do.
#[test]
fn a_library_in_a_world_writable_folder_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let real = root().join(".clipql/onnxruntime/libonnxruntime.so.1.32.0");
    let planted = open.join("libonnxruntime.so.1.32.0");
    std::fs::copy(&real, &planted).unwrap();
    let o = embed_text_with_onnxruntime_at(&planted);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("refusing to load ONNX Runtime from"), "{err}");
    assert!(
        err.contains("is writable by group or others (mode 777)"),
        "{err}"
    );
    assert!(err.contains("chmod go-w"), "{err}");

    // Beside an executable whose folder anyone can write.
    let bin = open.join("bin");
    std::fs::create_dir_all(bin.join(".clipql/onnxruntime")).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(
        &real,
        bin.join(".clipql/onnxruntime/libonnxruntime.so.1.32.0"),
    )
    .unwrap();
    let exe = bin.join("clipql");
    std::fs::copy(env!("CARGO_BIN_EXE_clipql"), &exe).unwrap();
    let o = with_clipql_env(Command::new(&exe))
        .args(["sql", "--model"])
        .arg(root().join("tests/fixtures/model"))
        .args(["-c", "SELECT clip_text_embedding('a cat')"])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is writable by group or others (mode 777)"),
        "{}",
        stderr(&o)
    );
}

/// Issue 14, item 13: a library planted in `.clipql/onnxruntime/` above the
/// current directory (or above the executable) is never loaded; one beside
/// the executable is.
#[test]
fn a_library_planted_above_the_working_directory_is_not_loaded() {
    // The executable outside the checkout, as an installed clipql is: a
    // hard link where the file system allows it, else a copy.
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("clipql");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_clipql"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_clipql"), &exe).unwrap();
    }
    let work = tmp.path().join("shared/work");
    std::fs::create_dir_all(&work).unwrap();
    for planted in [tmp.path(), &tmp.path().join("shared"), &work] {
        let dir = planted.join(".clipql/onnxruntime");
        std::fs::create_dir_all(&dir).unwrap();
        fake_onnxruntime(&dir, Some("1.10.0"));
    }
    let version = |exe: &Path| {
        let o = with_clipql_env(Command::new(exe))
            .arg("--version")
            .env_remove("ORT_DYLIB_PATH")
            .current_dir(&work)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let out = version(&exe);
    let checkout = root().join(".clipql/onnxruntime");
    assert!(out.contains("ONNX Runtime 1.32.0"), "{out}");
    assert!(out.contains(&checkout.display().to_string()), "{out}");

    // Provisioned beside the executable: that one.
    let beside = bin.join(".clipql/onnxruntime");
    std::fs::create_dir_all(&beside).unwrap();
    let real = std::fs::read_dir(&checkout)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".so.1.32.0"))
        .unwrap();
    std::fs::copy(&real, beside.join(real.file_name().unwrap())).unwrap();
    let out = version(&exe);
    assert!(out.contains(&beside.display().to_string()), "{out}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn jsonl_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The batch CLI's acceptance run: classify a folder into Parquet, read it
/// back with `clipql sql`, and agree with transformers.
#[test]
fn classify_a_folder_to_parquet_and_read_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let labels = golden_labels();
    let mut args = vec![
        "classify",
        "tests/fixtures/photos",
        "--model",
        "tests/fixtures/model",
    ];
    args.extend(["--output", out.to_str().unwrap(), "--labels"]);
    args.extend(labels.iter().map(String::as_str));
    let o = clipql(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        files_in(dir.path()),
        vec!["out.parquet"],
        "no partial files left behind"
    );

    let rows = sql_jsonl(&format!("SELECT * FROM '{}'", out.display()));
    for row in &rows {
        assert!(
            row["path"].as_str().unwrap().starts_with("file:///"),
            "{row}"
        );
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["score"], row["scores"][0]["score"]);
    }
    assert_matches_golden(&rows, "path");
}

#[test]
fn classify_writes_jsonl_and_csv_with_template_top_k_and_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("out.jsonl");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "tests/fixtures/photos/page.bmp",
        "--labels",
        "cat",
        "horse",
        "coins",
        "--template",
        "a photo of a {}",
        "--top-k",
        "2",
        "--with-embeddings",
        "--output",
        jsonl.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = jsonl_rows(&jsonl);
    assert_eq!(rows.len(), 2);
    let chelsea = rows
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("/chelsea.jpg"))
        .unwrap();
    // Class names, not prompts; two of the three labels; a 16-dim embedding.
    assert_eq!(chelsea["label"], "horse");
    assert_eq!(chelsea["scores"].as_array().unwrap().len(), 2);
    assert_eq!(chelsea["embedding"].as_array().unwrap().len(), 16);

    let csv = dir.path().join("out.csv");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--labels",
        "a photo of a cat",
        "a photo of a horse",
        "--output",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "path,size,modified,label,score,scores,error");
    assert!(
        lines[1].contains(",a photo of a horse,0.86"),
        "{}",
        lines[1]
    );
    assert_eq!(lines.len(), 2);
}

#[test]
fn classify_keeps_every_row_and_reports_failures_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/table/",
        "--labels",
        "a photo of a cat",
        "a photo of a horse",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    assert_eq!(
        rows.len(),
        5,
        "one row per image; notes.txt and chelsea_copy.dat are not images"
    );
    let failed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["label"].is_null()).collect();
    assert_eq!(failed.len(), 3);
    for r in failed {
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
}

#[test]
fn verbose_prints_where_the_time_went() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    // tests/fixtures/table/ holds 2 good images and 3 broken ones.
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/table/",
        "--labels",
        "cat",
        "horse",
        "dog",
        "--template",
        "a photo of a {}",
        "--batch-size",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--quiet",
        "--verbose",
        // Small photos decode in full anyway; the flag must be accepted.
        "--fast-jpeg",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let line = |prefix: &str| {
        err.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {err}"))
            .to_string()
    };
    assert!(line("run: ").contains(" 5 rows in "), "{err}");
    assert!(
        // Every image of the 5 rows went through it; 3 failed.
        line("decode + preprocess: ").starts_with("decode + preprocess: 5 images, 3 failed,"),
        "{err}"
    );
    assert!(
        line("vision tower: ").starts_with("vision tower: 2 batches, 2 images,"),
        "{err}"
    );
    assert!(
        line("text tower: ").starts_with("text tower: 1 runs, 3 texts,"),
        "{err}"
    );
    assert!(
        line("caches: ").starts_with("caches: 0 image hits,"),
        "{err}"
    );

    // Without --verbose, and with --quiet: nothing on stderr.
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/",
        "--labels",
        "cat",
        "dog",
        "--output",
        dir.path().join("quiet.jsonl").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn session_options_are_checked_and_set_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let classify = |extra: &[&str]| {
        let mut args = vec![
            "classify",
            "tests/fixtures/photos/",
            "--labels",
            "cat",
            "dog",
            "--quiet",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        clipql_fixture(&args)
    };
    // Refused values: a message naming the option, never a panic.
    for (extra, message) in [
        (
            &["--batch-size", "0"][..],
            "clip.batch_size = 0: clip.batch_size must be at least 1",
        ),
        (
            &["--set", "clip.graph_optimization=max"][..],
            "clip.graph_optimization must be all, extended, basic or none, got 'max'",
        ),
        (
            &["--set", "clip.no_such_thing=1"][..],
            "unknown option clip.no_such_thing",
        ),
    ] {
        let o = classify(extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    let o = classify(&["--set", "no-equals-sign"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected KEY=VALUE"), "{}", stderr(&o));

    // Accepted ones change how the job runs, not what it answers.
    let o = classify(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plain = jsonl_rows(&out);
    let o = classify(&[
        "--set",
        "clip.sessions=2",
        "--set",
        "clip.intra_op_spinning=false",
        "--set",
        "clip.graph_optimization=basic",
        "--set",
        "datafusion.execution.target_partitions=3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let by_path = |rows: &[serde_json::Value]| {
        let mut v: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r["path"].to_string(), r["label"].to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(by_path(&plain), by_path(&jsonl_rows(&out)));
}

#[test]
fn classify_on_error_fail_writes_nothing_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/table/",
        "--on-error",
        "fail",
        "--labels",
        "a photo of a cat",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    // The error names the file and its reason.
    let err = stderr(&o);
    assert!(err.contains("tests/fixtures/table/"), "{err}");
    assert!(err.contains("Stopped by --on-error fail"), "{err}");
    // No output, no partial file: only the journal of the rows finished
    // before the failure, for --resume.
    let left = files_in(dir.path());
    assert!(
        left.iter()
            .all(|f| f.starts_with(".out.parquet.") && f.ends_with(".journal")),
        "left behind: {left:?}"
    );
}

#[test]
fn classify_reads_labels_from_a_file_and_checks_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "# classes\ncat\n\nhorse\ncat\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--labels-file",
        labels.to_str().unwrap(),
        "--template",
        "a photo of a {}",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    assert_eq!(rows[0]["label"], "horse");
    assert_eq!(
        rows[0]["scores"].as_array().unwrap().len(),
        2,
        "comments, blanks and duplicates dropped"
    );

    let bad = dir.path().join("out.xlsx");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos",
        "--labels",
        "cat",
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("use .parquet, .csv or .jsonl"),
        "{}",
        stderr(&o)
    );

    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos",
        "--labels",
        "cat",
        "--template",
        "a photo",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("has no {} for the class name"),
        "{}",
        stderr(&o)
    );

    let o = clipql(&["classify", "tests/fixtures/photos"]);
    assert_eq!(o.status.code(), Some(2), "labels are required");
}

/// Embed once, relabel forever, from the command line.
#[test]
fn embed_then_classify_the_stored_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.parquet");
    let o = clipql_fixture(&[
        "embed",
        "tests/fixtures/table/",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "three broken files: {}",
        stderr(&o)
    );
    let o = clipql_fixture(&[
        "sql",
        "--format",
        "jsonl",
        "-c",
        &format!(
            "SELECT regexp_replace(path, '.*/', '') AS name, \
             clip_classify_embedding(embedding, ['a photo of a cat', 'a photo of a horse']) AS label, \
             error IS NOT NULL AS failed FROM '{}' ORDER BY name",
            out.display()
        ),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    let chelsea = rows.iter().find(|r| r["name"] == "chelsea.jpg").unwrap();
    assert_eq!(chelsea["label"], "a photo of a horse");
    assert_eq!(
        rows.iter()
            .filter(|r| r["failed"] == true && r["label"].is_null())
            .count(),
        3
    );

    let o = clipql_fixture(&["embed", "tests/fixtures/photos"]);
    assert_eq!(o.status.code(), Some(2), "--output is required");
}

/// `clipql` with S3 settings for `endpoint` in the environment (and no
/// others); no credentials when `secret` is empty.
fn s3_command(endpoint: &str, secret: &str) -> Command {
    // clipql_command() has dropped the user's AWS_* variables.
    let mut cmd = clipql_command();
    cmd.envs(s3::settings(endpoint, secret));
    cmd
}

fn clipql_s3(server: &S3Server, secret: &str, args: &[&str]) -> Output {
    s3_command(&server.endpoint, secret)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn classify_over_s3_gives_the_same_rows_as_local() {
    let server = s3_server();
    let dir = tempfile::tempdir().unwrap();
    let (local, remote) = (dir.path().join("local.jsonl"), dir.path().join("s3.jsonl"));
    for (source, out) in [
        ("tests/fixtures/photos/", &local),
        ("s3://photos-bucket/photos/", &remote),
    ] {
        let o = clipql_s3(
            &server,
            S3_SECRET,
            &[
                "classify",
                source,
                "--model",
                "tests/fixtures/model",
                "--labels",
                "cat",
                "dog",
                "rocket",
                "--template",
                "a photo of a {}",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{source}: {}", stderr(&o));
    }
    let strip =
        |rows: Vec<serde_json::Value>| -> Vec<(String, serde_json::Value, serde_json::Value)> {
            rows.into_iter()
                .map(|r| {
                    (
                        r["path"]
                            .as_str()
                            .unwrap()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .to_string(),
                        r["label"].clone(),
                        r["scores"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
    // Rows come in the order the scan finishes them: compare them sorted.
    let sorted = |mut rows: Vec<(String, serde_json::Value, serde_json::Value)>| {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let (local_rows, s3_rows) = (jsonl_rows(&local), jsonl_rows(&remote));
    assert_eq!(s3_rows.len(), 14);
    assert!(
        s3_rows[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("s3://photos-bucket/photos/"),
        "{}",
        s3_rows[0]
    );
    assert_eq!(sorted(strip(local_rows)), sorted(strip(s3_rows)));
}

#[test]
fn sql_reads_lists_and_writes_s3() {
    let server = s3_server();
    let sql = "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 's3://photos-bucket/photos/'; \
               COPY (SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS label FROM images) \
               TO 's3://photos-bucket/results/labels.parquet' STORED AS PARQUET; \
               SELECT (SELECT count(*) FROM read_images('s3://photos-bucket/photos/*.jpg')) AS jpegs, \
                      count(*) AS rows, \
                      sum(CASE WHEN name = 'chelsea.jpg' AND label = 'a photo of a horse' THEN 1 ELSE 0 END) AS chelsea \
               FROM 's3://photos-bucket/results/labels.parquet'";
    let o = clipql_s3(
        &server,
        S3_SECRET,
        &[
            "sql",
            "--model",
            "tests/fixtures/model",
            "--format",
            "jsonl",
            "-c",
            sql,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"jpegs\":5,\"rows\":14,\"chelsea\":1}\n");
}

#[test]
fn s3_credentials_from_table_options() {
    let server = s3_server();
    let sql = format!(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 's3://photos-bucket/photos/' \
         OPTIONS ('aws.access_key_id' '{S3_KEY}', 'aws.secret_access_key' '{S3_SECRET}', \
                  'aws.endpoint' '{}', 'aws.allow_http' 'true', 'aws.region' 'us-east-1'); \
         SELECT count(*) AS n FROM images",
        server.endpoint
    );
    // No credentials in the environment at all: only the OPTIONS carry them.
    let o = clipql_s3(&server, "", &["sql", "--format", "jsonl", "-c", &sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"n\":14}\n");
}

#[test]
fn wrong_s3_credentials_fail_clearly_without_leaking_them() {
    let server = s3_server();
    let wrong = "SENTINEL-WRONG-SECRET-91ac";
    let o = clipql_s3(
        &server,
        wrong,
        &[
            "classify",
            "s3://photos-bucket/photos/",
            "--model",
            "tests/fixtures/model",
            "--labels",
            "cat",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("403") || err.to_lowercase().contains("signature"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !stdout(&o).contains(wrong),
        "secret leaked: {err}"
    );
}

#[test]
fn s3_credentials_region_and_endpoint_from_an_aws_profile() {
    let server = s3_server();
    let aws = tempfile::tempdir().unwrap();
    let credentials = aws.path().join("credentials");
    let config = aws.path().join("config");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\
             [clipql-test]\naws_access_key_id = {S3_KEY}\naws_secret_access_key = {S3_SECRET}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[profile clipql-test]\nregion = us-east-1\nendpoint_url = {}\n",
            server.endpoint
        ),
    )
    .unwrap();
    let run = |profile: &str| {
        let mut cmd = clipql_command();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_PROFILE", profile)
            .env("AWS_ALLOW_HTTP", "true")
            .args([
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT count(*) AS n FROM read_images('s3://photos-bucket/photos/')",
            ])
            .output()
            .unwrap()
    };
    let o = run("clipql-test");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n\n14\n");
    let o = run("absent");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("AWS_PROFILE is absent, but neither"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(S3_SECRET), "secret leaked");
}

/// Parquet sources: a Binary column (read back as BinaryView), an HF-datasets
/// `{bytes, path}` struct, and an explicit `--image-column`.
#[test]
fn classify_parquet_sources_with_an_image_column() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    let hf = dir.path().join("hf.parquet");
    let sql = format!(
        "COPY (SELECT name, image FROM read_images('tests/fixtures/photos/')) TO '{}'; \
         COPY (SELECT named_struct('bytes', image, 'path', name) AS img, image AS thumbnail \
               FROM read_images('tests/fixtures/photos/')) TO '{}'",
        plain.display(),
        hf.display()
    );
    let o = clipql(&["sql", "-c", &sql]);
    assert!(o.status.success(), "{}", stderr(&o));

    let local = dir.path().join("local.jsonl");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos",
        "--labels",
        "cat",
        "horse",
        "--output",
        local.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let by_name = |rows: Vec<serde_json::Value>| -> Vec<(String, serde_json::Value)> {
        let mut v: Vec<_> = rows
            .into_iter()
            .map(|r| {
                (
                    r["path"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_string(),
                    r["scores"].clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let expected = by_name(jsonl_rows(&local));

    for (source, column) in [(&plain, None), (&hf, Some("img"))] {
        let out = dir.path().join("out.jsonl");
        let mut args = vec![
            "classify",
            source.to_str().unwrap(),
            "--model",
            "tests/fixtures/model",
        ];
        args.extend([
            "--labels",
            "cat",
            "horse",
            "--output",
            out.to_str().unwrap(),
        ]);
        if let Some(c) = column {
            args.extend(["--image-column", c]);
        }
        let o = clipql(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            source.display(),
            stderr(&o)
        );
        assert_eq!(by_name(jsonl_rows(&out)), expected, "{}", source.display());
    }

    // Two image columns and no --image-column: a clear error.
    let o = clipql_fixture(&["classify", hf.to_str().unwrap(), "--labels", "cat"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("several image columns [img, thumbnail]; choose one with --image-column"),
        "{}",
        stderr(&o)
    );
    let o = clipql_fixture(&[
        "classify",
        hf.to_str().unwrap(),
        "--image-column",
        "nope",
        "--labels",
        "cat",
    ]);
    assert!(
        stderr(&o).contains("--image-column nope: no such column"),
        "{}",
        stderr(&o)
    );
}

/// An HF cache (`$HF_HOME/hub`) holding the fixture as `clipql/tiny-clip`.
fn hf_home_with_fixture() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--clipql--tiny-clip");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(snapshot.join("onnx")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let model = root().join("tests/fixtures/model");
    for sub in ["", "onnx"] {
        for entry in std::fs::read_dir(model.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), snapshot.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    home
}

fn clipql_with_hf_home(home: &Path, args: &[&str]) -> Output {
    clipql_command()
        .args(args)
        .env("HF_HOME", home)
        .output()
        .unwrap()
}

/// The measured `logit_scale` is remembered per graph file in
/// `$CLIPQL_CACHE_DIR`, used while the file is unchanged, and measured again
/// once it changes.
#[test]
fn logit_scale_is_measured_once_per_graph_file() {
    let home = hf_home_with_fixture();
    let cache = tempfile::tempdir().unwrap();
    let info = || {
        let o = clipql_command()
            .args(["model", "info", "clipql/tiny-clip"])
            .env("HF_HOME", home.path())
            .env("CLIPQL_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let entries = || -> Vec<PathBuf> {
        match std::fs::read_dir(cache.path().join("logit_scale")) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    };
    assert!(entries().is_empty());
    assert!(info().contains("logit_scale: 100.0"));
    let [entry] = entries().try_into().unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&entry).unwrap()).unwrap();
    let measured = json["logits"]["scale"].as_f64().unwrap();
    assert!((measured - 100.0).abs() < 1e-3, "{json}");

    // A remembered value is used as is: plant another one and see it.
    json["logits"]["scale"] = 42.5.into();
    std::fs::write(&entry, json.to_string()).unwrap();
    assert!(info().contains("logit_scale: 42.5"), "{}", info());

    // Once the graph file changes, it is measured again.
    let graph = home
        .path()
        .join("hub/models--clipql--tiny-clip/snapshots/0123abcd/onnx/model.onnx");
    std::fs::File::options()
        .write(true)
        .open(graph)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(10))
        .unwrap();
    assert!(info().contains("logit_scale: 100.0"), "{}", info());
    assert_eq!(entries().len(), 1);
}

#[test]
fn models_by_repo_id_from_the_hf_cache() {
    let home = hf_home_with_fixture();
    let o = clipql_with_hf_home(home.path(), &["model", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("clipql/tiny-clip\tfp32,quantized,fp16\t"),
        "{out}"
    );

    let o = clipql_with_hf_home(home.path(), &["model", "info", "clipql/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = stdout(&o);
    for line in [
        "family: clip",
        "embedding_dim: 16",
        "image_size: 224x224",
        "context_length: 77",
        "logit_scale: 100.0",
        "onnx/vision_model.onnx",
    ] {
        assert!(info.contains(line), "{line} missing from:\n{info}");
    }

    let o = clipql_with_hf_home(
        home.path(),
        &[
            "classify",
            "tests/fixtures/photos/chelsea.jpg",
            "--model",
            "clipql/tiny-clip",
            "--labels",
            "a photo of a cat",
            "a photo of a horse",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("a photo of a horse"), "{}", stdout(&o));

    let o = clipql_with_hf_home(
        home.path(),
        &[
            "sql",
            "--model",
            "clipql/not-here",
            "-c",
            "SELECT clip_text_embedding('a cat')",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "model clipql/not-here from the HF hub: the hub at {DEAD_ENDPOINT} is unreachable"
        )),
        "{err}"
    );
    assert!(err.contains("pass --model DIR"), "{err}");

    // Offline, the cache is all there is, and the error says so.
    let o = clipql_command()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "sql",
            "--model",
            "clipql/not-here",
            "-c",
            "SELECT clip_text_embedding('a')",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("clipql/not-here is neither a folder nor in the HF cache at"),
        "{err}"
    );
    assert!(err.contains("HF_HUB_OFFLINE is set"), "{err}");
}

fn fixture_model() -> PathBuf {
    root().join("tests/fixtures/model")
}

/// `clipql` against a stand-in hub, with `home` as `HF_HOME`.
fn clipql_hub(hub: &StandInHub, home: &Path, args: &[&str]) -> Output {
    clipql_command()
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .unwrap()
}

/// The files a pull fetched the content of (not just probed).
fn bodies(hub: &StandInHub) -> Vec<String> {
    let mut files: Vec<String> = hub
        .take_log()
        .into_iter()
        .filter(|r| r.is_body())
        .map(|r| r.file)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// What `model pull` fetches of a repo in the Transformers.js layout, for
/// fp32: only what the runtime reads.
const FP32_FILES: [&str; 7] = [
    "config.json",
    "onnx/model.onnx",
    "onnx/text_model.onnx",
    "onnx/vision_model.onnx",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

#[test]
fn model_pull_fills_the_hf_cache_from_the_hub() {
    let hub = StandInHub::start(&[("test/tiny-clip", &fixture_model())]);
    let home = tempfile::tempdir().unwrap();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let repo = home.path().join("hub/models--test--tiny-clip");
    let snapshot = repo.join("snapshots").join(hub::COMMIT);
    assert_eq!(stdout(&o).trim(), snapshot.to_string_lossy());
    assert!(
        stderr(&o).contains(&format!(
            "test/tiny-clip (fp32) at commit {}: 7 of 7 files downloaded",
            hub::COMMIT
        )),
        "{}",
        stderr(&o)
    );
    // Only what the runtime needs, for this dtype.
    assert_eq!(bodies(&hub), FP32_FILES);
    // The HF cache layout: refs/main, and snapshot symlinks into blobs/ named
    // by ETag, holding exactly the served bytes.
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        hub::COMMIT
    );
    for file in ["onnx/vision_model.onnx", "tokenizer.json"] {
        let pointer = snapshot.join(file);
        assert!(pointer.symlink_metadata().unwrap().is_symlink(), "{file}");
        let blob = pointer.canonicalize().unwrap();
        assert_eq!(
            blob.parent().unwrap(),
            repo.join("blobs").canonicalize().unwrap()
        );
        assert_eq!(
            std::fs::read(&pointer).unwrap(),
            std::fs::read(fixture_model().join(file)).unwrap(),
            "{file}"
        );
    }

    // Pulled again: nothing is fetched.
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 of 7 files downloaded"),
        "{}",
        stderr(&o)
    );
    assert_eq!(bodies(&hub), Vec::<String>::new());

    // The pulled model lists, shows and classifies, with the hub gone.
    let o = clipql_with_hf_home(home.path(), &["model", "list"]);
    assert!(
        stdout(&o).starts_with("test/tiny-clip\tfp32\t"),
        "{}",
        stdout(&o)
    );
    let o = clipql_with_hf_home(home.path(), &["model", "info", "test/tiny-clip"]);
    assert!(stdout(&o).contains("logit_scale: 100.0"), "{}", stdout(&o));
    let o = clipql_command()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "classify",
            "tests/fixtures/photos/chelsea.jpg",
            "--model",
            "test/tiny-clip",
            "--labels",
            "a photo of a cat",
            "a photo of a horse",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("a photo of a horse"), "{}", stdout(&o));
}

/// Issue 16: a SigLIP repo in the Transformers.js layout
/// (`Xenova/siglip-base-patch16-224`, served by the stand-in hub with the
/// SigLIP fixture's files) pulls the same files as a CLIP one, and the
/// pulled model is a SigLIP: its family, its sigmoid and its bias.
#[test]
fn model_pull_fetches_a_siglip_repo() {
    let siglip = root().join("tests/fixtures/siglip/model");
    let hub = StandInHub::start(&[("Xenova/siglip-base-patch16-224", &siglip)]);
    let home = tempfile::tempdir().unwrap();
    let o = clipql_hub(
        &hub,
        home.path(),
        &["model", "pull", "Xenova/siglip-base-patch16-224"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("7 of 7 files downloaded"),
        "{}",
        stderr(&o)
    );
    assert_eq!(bodies(&hub), FP32_FILES);
    let o = clipql_command()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["model", "info", "Xenova/siglip-base-patch16-224"])
        .output()
        .unwrap();
    let info = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        info.contains("family: siglip")
            && info.contains("scoring: sigmoid (sigmoid per label: independent probabilities)")
            && info.contains("logit_bias: "),
        "{info}"
    );
}

/// Issue 16, item 2: a SigLIP 2 repo (`onnx-community/siglip2-base-patch16-224-ONNX`,
/// served with the SigLIP 2 fixture's files) pulls, says how it tokenises
/// (Gemma's `<pad>` on the right, `<eos>` from tokenizer_config.json), and
/// classifies as transformers' pipeline does (golden.json: chelsea.jpg's top
/// label, margin 0.044).
#[test]
fn model_pull_fetches_a_siglip2_repo_that_classifies_like_the_pipeline() {
    let repo = "onnx-community/siglip2-base-patch16-224-ONNX";
    let hub = StandInHub::start(&[(repo, &root().join("tests/fixtures/siglip2/model"))]);
    let home = tempfile::tempdir().unwrap();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", repo]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(bodies(&hub), FP32_FILES);
    let offline = |args: &[&str]| {
        clipql_command()
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .args(args)
            .output()
            .unwrap()
    };
    let o = offline(&["model", "info", repo]);
    let info = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        info.contains("family: siglip")
            && info.contains(
                "text: padded to the context length with \"<pad>\" on the right; \
                 tokenizer_config.json: nothing first, <eos> last"
            ),
        "{info}"
    );
    let o = offline(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--model",
        repo,
        "--labels",
        "a photo of a cat",
        "a black and white photo",
        "a page of text",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The label column, then its score: golden 0.962488.
    assert!(
        stdout(&o).contains("| a black and white photo | 0.962"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn model_pull_takes_the_dtype_files_and_sends_the_token() {
    let hub = StandInHub::start(&[("test/tiny-clip", &fixture_model())]);
    let home = tempfile::tempdir().unwrap();
    let o = clipql_command()
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_TOKEN", "hf_test_token")
        .args(["model", "pull", "test/tiny-clip", "--dtype", "quantized"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = hub.take_log();
    assert!(
        log.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hf_test_token")),
        "{log:?}"
    );
    let mut fetched: Vec<&str> = log
        .iter()
        .filter(|r| r.is_body())
        .map(|r| r.file.as_str())
        .collect();
    fetched.sort();
    fetched.dedup();
    // The fixture has no model_quantized.onnx: the fp32 combined graph stands in.
    assert_eq!(
        fetched,
        [
            "config.json",
            "onnx/model.onnx",
            "onnx/text_model_quantized.onnx",
            "onnx/vision_model_quantized.onnx",
            "preprocessor_config.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert!(
        log.iter().any(|r| r.file == "onnx/model_quantized.onnx"),
        "asked for the dtype's combined graph first"
    );

    // A repo the hub does not have.
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/absent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert!(stderr(&o).contains("set HF_TOKEN"), "{}", stderr(&o));
}

#[test]
fn an_interrupted_pull_resumes_and_a_corrupt_file_is_refused() {
    let hub = StandInHub::start(&[("test/tiny-clip", &fixture_model())]);
    let home = tempfile::tempdir().unwrap();
    hub.fault("onnx/vision_model.onnx", Fault::StatusOnce(500));
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("downloading onnx/vision_model.onnx"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("500"), "{}", stderr(&o));
    let first = bodies(&hub);
    assert!(first.contains(&"onnx/text_model.onnx".to_string()));

    // The re-run fetches only what the first run did not finish.
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(bodies(&hub), ["onnx/model.onnx", "onnx/vision_model.onnx"]);
    assert!(
        stderr(&o).contains("2 of 7 files downloaded"),
        "{}",
        stderr(&o)
    );

    // Bytes that do not match their ETag are deleted, not kept.
    let home = tempfile::tempdir().unwrap();
    hub.fault("onnx/text_model.onnx", Fault::Corrupt);
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("onnx/text_model.onnx failed its integrity check (content hash"),
        "{err}"
    );
    let snapshot = home
        .path()
        .join("hub/models--test--tiny-clip/snapshots")
        .join(hub::COMMIT);
    assert!(!snapshot.join("onnx/text_model.onnx").exists());
    let blobs: Vec<_> = std::fs::read_dir(home.path().join("hub/models--test--tiny-clip/blobs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    let text_len = std::fs::metadata(fixture_model().join("onnx/text_model.onnx"))
        .unwrap()
        .len();
    assert!(!blobs.contains(&text_len), "corrupt blob left behind");
    hub.clear_faults();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_default_model_is_pulled_on_first_use_or_fails_fast_offline() {
    let hub = StandInHub::start(&[("Xenova/clip-vit-base-patch32", &fixture_model())]);
    let home = tempfile::tempdir().unwrap();
    let classify = [
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--labels",
        "a photo of a cat",
        "a photo of a horse",
    ];

    // No hub: an immediate, actionable error.
    let started = std::time::Instant::now();
    let o = clipql_with_hf_home(home.path(), &classify);
    assert_eq!(o.status.code(), Some(1));
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    let err = stderr(&o);
    for hint in [
        "model Xenova/clip-vit-base-patch32 from the HF hub: the hub at http://127.0.0.1:9 is unreachable",
        "clipql model pull Xenova/clip-vit-base-patch32",
        "pass --model DIR",
    ] {
        assert!(err.contains(hint), "{hint} missing from:\n{err}");
    }
    let o = clipql_command()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(classify)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("HF_HUB_OFFLINE is set"),
        "{}",
        stderr(&o)
    );

    // With the hub: pulled once, then used from the cache.
    let o = clipql_hub(&hub, home.path(), &classify);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("a photo of a horse"), "{}", stdout(&o));
    assert_eq!(bodies(&hub).len(), 7);
    let o = clipql_hub(
        &hub,
        home.path(),
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT clip_classify(image, ['a photo of a cat', 'a photo of a horse']) AS l \
             FROM read_images('tests/fixtures/photos/chelsea.jpg')",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "l\na photo of a horse\n");
    assert!(hub.take_log().is_empty(), "the cached model needs no hub");
}

/// The rows of an Arrow IPC stream, up to a torn tail.
fn journal_rows(path: &Path) -> Vec<(String, u64)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::UInt64Type;
    let file = std::fs::File::open(path).unwrap();
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(file, None).unwrap();
    let mut rows = Vec::new();
    for batch in reader.map_while(Result::ok) {
        let paths = batch.column_by_name("path").unwrap().as_string::<i32>();
        let sizes = batch
            .column_by_name("size")
            .unwrap()
            .as_primitive::<UInt64Type>();
        for r in 0..batch.num_rows() {
            rows.push((paths.value(r).to_string(), sizes.value(r)));
        }
    }
    rows
}

fn journals_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".journal"))
        .collect()
}

/// Overwrites a file with junk of the same length and restores its mtime:
/// only a run that skips it (by path, size and mtime) still labels it.
fn corrupt_in_place(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    std::fs::write(path, vec![0x42u8; meta.len() as usize]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
}

#[test]
fn classify_resume_continues_a_killed_run_and_skips_finished_images() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for copy in 0..12 {
        for entry in std::fs::read_dir(root().join("tests/fixtures/photos")).unwrap() {
            let entry = entry.unwrap();
            if entry.path().extension().is_some_and(|e| e == "md") {
                continue;
            }
            let name = format!("{copy:02}_{}", entry.file_name().to_string_lossy());
            std::fs::copy(entry.path(), photos.join(name)).unwrap();
        }
    }
    let total = std::fs::read_dir(&photos).unwrap().count();
    let out = dir.path().join("out.parquet");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "classify",
            photos.to_str().unwrap(),
            "--model",
            "tests/fixtures/model",
            "--labels",
            "a photo of a cat",
            "a photo of a dog",
            "--batch-size",
            "4",
            "--output",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Kill a run once its journal holds a batch.
    let mut child = clipql_command()
        .args(args(&[]))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let flushed = journals_in(dir.path())
            .iter()
            .any(|j| std::fs::metadata(j).is_ok_and(|m| m.len() > 0));
        if flushed {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(started.elapsed().as_secs() < 120);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "a killed run leaves no output that looks whole"
    );
    let journal = journals_in(dir.path());
    assert_eq!(journal.len(), 1);
    let finished = journal_rows(&journal[0]);
    assert!(
        !finished.is_empty() && finished.len() < total,
        "{}",
        finished.len()
    );

    // A finished image turned to junk (same size and mtime) is not read
    // again; a new image is.
    let done = PathBuf::from(finished[0].0.strip_prefix("file://").unwrap());
    corrupt_in_place(&done);
    std::fs::copy(
        root().join("tests/fixtures/photos/chelsea.jpg"),
        photos.join("new.jpg"),
    )
    .unwrap();
    let o = clipql_command().args(args(&["--resume"])).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(journals_in(dir.path()).is_empty(), "journals are removed");
    let read = |sql: &str| {
        let o = clipql(&["sql", "--format", "jsonl", "-c", sql]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let summary = read(&format!(
        "SELECT count(*) AS n, count(DISTINCT path) AS paths, count(label) AS labelled FROM '{}'",
        out.display()
    ));
    assert_eq!(summary[0]["n"], total + 1);
    assert_eq!(summary[0]["paths"], total + 1);
    assert_eq!(summary[0]["labelled"], total + 1);

    // Against a complete output: a rewritten file (new size) is done again,
    // with its new size; the junk one, now with a new mtime, fails.
    std::fs::copy(root().join("tests/fixtures/photos/page.bmp"), &done).unwrap();
    let o = clipql_command().args(args(&["--resume"])).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let row = read(&format!(
        "SELECT size, label FROM '{}' WHERE path = 'file://{}'",
        out.display(),
        done.display()
    ));
    assert_eq!(
        row[0]["size"],
        std::fs::metadata(&done).unwrap().len(),
        "{row:?}"
    );

    // Other labels: the previous rows are not mixed in.
    let mut other = args(&["--resume"]);
    other[5] = "a photo of a horse".into();
    let o = clipql_command().args(other).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("was made with other settings"),
        "{}",
        stderr(&o)
    );
    // No --output, or a CSV one that cannot be read back.
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos",
        "--labels",
        "a",
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("give --output"), "{}", stderr(&o));
    let csv = dir.path().join("out.csv");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--labels",
        "a",
        "--output",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "--labels",
        "a",
        "--output",
        csv.to_str().unwrap(),
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("only Parquet outputs can be read back"),
        "{}",
        stderr(&o)
    );
}

/// Peak RSS as `classify --verbose` reports it, in MB.
fn peak_rss_mb(o: &Output) -> f64 {
    let err = stderr(o);
    err.lines()
        .find_map(|l| {
            l.strip_prefix("peak RSS: ")?
                .strip_suffix(" MB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak RSS in {err}"))
}

/// Huge files (two 4 GiB sparse files beside a photo) cost their row a NULL
/// and a reason, not their size in memory: the scan reads one byte past
/// clip.max_image_bytes and gives each its own batch.
#[test]
fn huge_files_are_refused_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["huge_a.jpg", "huge_b.png"] {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.set_len(4 << 30).unwrap();
    }
    std::fs::copy(
        root().join("tests/fixtures/photos/chelsea.jpg"),
        dir.path().join("photo.jpg"),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let o = clipql_fixture(&[
        "classify",
        dir.path().to_str().unwrap(),
        "--labels",
        "cat",
        "dog",
        "--verbose",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let path = row["path"].as_str().unwrap();
        if path.ends_with("photo.jpg") {
            assert!(row["error"].is_null(), "{row}");
        } else {
            assert!(row["label"].is_null(), "{row}");
            assert_eq!(
                row["error"],
                "image file is over the 268435456-byte limit (clip.max_image_bytes)"
            );
        }
    }
    let mb = peak_rss_mb(&o);
    eprintln!("peak RSS over two 4 GiB files: {mb} MB");
    assert!(mb < 1024.0, "peak RSS {mb} MB");
}

/// The bad-input corpus through `classify`: one row per file, a NULL label
/// and a specific reason for each bad one (the same reasons as SQL gives,
/// sql/corpus.slt), exit code 3, and peak RSS under 1 GB.
#[test]
fn classify_keeps_a_row_for_every_file_of_the_bad_input_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus.jsonl");
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/corpus/",
        "--labels",
        "cat",
        "dog",
        "--verbose",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), 18);
    let reason = |name: &str| -> Option<String> {
        let row = rows
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no row for {name}"));
        assert_eq!(row["label"].is_null(), !row["error"].is_null(), "{row}");
        row["error"].as_str().map(str::to_string)
    };
    for good in [
        "animated.gif",
        "cmyk.jpg",
        "gray16.png",
        "one_pixel.png",
        "palette.png",
        "retina.tiff",
        "wide_10000x10.png",
    ] {
        assert_eq!(reason(good), None, "{good}");
    }
    for (bad, why) in [
        ("bomb_60000x60000.png", "over the 89478485-pixel limit"),
        ("empty.jpg", "empty image (0 bytes)"),
        (
            "garbage_header.bmp",
            "unsupported or unrecognised image format",
        ),
        ("garbage_header.gif", "cannot decode GIF image"),
        ("garbage_header.webp", "cannot decode WEBP image"),
        ("notes_text.jpg", "the bytes are text, not an image"),
        ("page_html.png", "the bytes are HTML, not an image"),
        (
            "random_bytes.jpg",
            "unsupported or unrecognised image format",
        ),
        (
            "truncated.png",
            "cannot decode PNG image: unexpected end of file",
        ),
        ("truncated_header.jpg", "cannot decode JPEG image"),
        ("truncated_scan.jpg", "the file is truncated"),
    ] {
        let got = reason(bad).unwrap_or_else(|| panic!("{bad} was classified"));
        assert!(got.contains(why), "{bad}: {got}");
    }
    let mb = peak_rss_mb(&o);
    assert!(mb < 1024.0, "peak RSS {mb} MB");

    // Strict mode stops at the first bad file, naming it.
    let o = clipql_fixture(&[
        "classify",
        "tests/fixtures/corpus/",
        "--labels",
        "cat",
        "dog",
        "--on-error",
        "fail",
        "--output",
        dir.path().join("strict.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("tests/fixtures/corpus/") && err.contains("Stopped by --on-error fail"),
        "{err}"
    );
    assert!(!dir.path().join("strict.jsonl").exists());
}

/// `RESET clip.x` puts the option back to its default (DataFusion's own
/// RESET knows only datafusion.* keys); an unknown key lists the options.
#[test]
fn sql_reset_restores_clip_defaults() {
    let o = clipql_fixture(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SET clip.on_error = 'fail'; RESET clip.on_error; \
         SELECT count(clip_classify(image, ['cat', 'dog'])) AS n, count(*) AS rows \
         FROM read_images('tests/fixtures/corpus/')",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n,rows\n7,18\n");

    // Without the RESET, strict mode stops at the first bad file.
    let o = clipql_fixture(&[
        "sql",
        "-c",
        "SET clip.on_error = 'fail'; \
         SELECT count(clip_classify(image, ['cat', 'dog'])) FROM read_images('tests/fixtures/corpus/')",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tests/fixtures/corpus/"),
        "{}",
        stderr(&o)
    );

    let o = clipql(&["sql", "-c", "RESET clip.nonsense"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown option clip.nonsense; the clip options are clip.model"),
        "{}",
        stderr(&o)
    );
}

/// `clipql` over S3 through `proxy`, with a short retry policy.
fn through(proxy: &faulty_proxy::FaultyProxy) -> Command {
    let mut cmd = s3_command(&proxy.endpoint, S3_SECRET);
    cmd.env("CLIPQL_S3_MAX_RETRIES", "4")
        .env("CLIPQL_S3_RETRY_TIMEOUT_SECS", "20");
    cmd
}

/// `classify` over S3 through `proxy`.
fn classify_through(proxy: &faulty_proxy::FaultyProxy, out: &Path) -> Output {
    through(proxy)
        .args([
            "classify",
            "s3://photos-bucket/photos/",
            "--model",
            "tests/fixtures/model",
            "--labels",
            "cat",
            "dog",
            "--batch-size",
            "2",
            "--output",
        ])
        .arg(out)
        .output()
        .unwrap()
}

/// `clipql sql` over S3 through `proxy`: a query over an IMAGE table,
/// printed as JSON lines.
fn sql_through(proxy: &faulty_proxy::FaultyProxy) -> Output {
    through(proxy)
        .args([
            "sql",
            "--model",
            "tests/fixtures/model",
            "--format",
            "jsonl",
            "-c",
            "CREATE EXTERNAL TABLE photos STORED AS IMAGE LOCATION 's3://photos-bucket/photos/'; \
             SET clip.batch_size = 2; \
             SELECT name, clip_classify(image, ['cat', 'dog']) AS label, \
                    clip_image_error(image) AS error FROM photos ORDER BY name",
        ])
        .output()
        .unwrap()
}

/// Transient storage faults (503s, resets, stalls on a third of the
/// connections) cost retries, not rows: the same rows as a clean run.
#[test]
fn transient_s3_faults_are_retried_and_lose_no_row() {
    use faulty_proxy::{Fault, FaultyProxy};
    let server = s3_server();
    let dir = tempfile::tempdir().unwrap();
    let clean = FaultyProxy::start(&server.endpoint, |_| Fault::Pass);
    let o = classify_through(&clean, &dir.path().join("clean.jsonl"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let clean_sql = sql_through(&clean);
    assert_eq!(clean_sql.status.code(), Some(0), "{}", stderr(&clean_sql));
    assert_eq!(
        String::from_utf8_lossy(&clean_sql.stdout).lines().count(),
        14
    );

    let faulty = FaultyProxy::start(&server.endpoint, |i| match i % 6 {
        1 => Fault::Status(503),
        3 => Fault::Reset,
        5 => Fault::Status(500),
        4 if i < 12 => Fault::Stall(Duration::from_millis(700)),
        _ => Fault::Pass,
    });
    let out = dir.path().join("faulty.jsonl");
    let o = classify_through(&faulty, &out);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        faulty.injected() >= 2,
        "faults injected: {}",
        faulty.injected()
    );
    let key = |rows: Vec<serde_json::Value>| {
        let mut rows: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r["path"].to_string(), r["label"].to_string()))
            .collect();
        rows.sort();
        rows
    };
    let expected = key(jsonl_rows(&dir.path().join("clean.jsonl")));
    assert_eq!(expected.len(), 14);
    assert_eq!(key(jsonl_rows(&out)), expected);

    // A SQL query through a fresh faulty proxy: the same output, byte for byte.
    let faulty = FaultyProxy::start(&server.endpoint, |i| match i % 5 {
        1 => Fault::Reset,
        2 => Fault::Status(503),
        4 if i < 10 => Fault::Stall(Duration::from_millis(700)),
        _ => Fault::Pass,
    });
    let o = sql_through(&faulty);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        faulty.injected() >= 2,
        "faults injected: {}",
        faulty.injected()
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&clean_sql.stdout)
    );
}

/// A store that keeps failing fails the run within the retry policy, with
/// the store's error, and leaves no output file behind.
#[test]
fn permanent_s3_faults_fail_clearly_in_bounded_time_without_output() {
    use faulty_proxy::{Fault, FaultyProxy};
    let server = s3_server();
    let dir = tempfile::tempdir().unwrap();
    for (fault, expected) in [
        (Fault::Status(503), "503"),
        (Fault::Reset, "error sending request"),
    ] {
        let proxy = FaultyProxy::start(&server.endpoint, move |_| fault);
        let out = dir.path().join("out.parquet");
        let started = std::time::Instant::now();
        let o = classify_through(&proxy, &out);
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(1), "{fault:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(expected), "{fault:?}: {err}");
        assert!(took < Duration::from_secs(90), "{fault:?} took {took:?}");
        assert!(!out.exists(), "{fault:?} left {}", out.display());
        assert!(
            files_in(dir.path()).iter().all(|f| f.ends_with(".journal")),
            "{fault:?} left {:?}",
            files_in(dir.path())
        );

        // A SQL query fails the same way, and prints no partial result.
        let started = std::time::Instant::now();
        let o = sql_through(&proxy);
        let took = started.elapsed();
        assert_eq!(o.status.code(), Some(1), "{fault:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(expected), "{fault:?}: {err}");
        assert!(took < Duration::from_secs(90), "{fault:?} took {took:?}");
        assert!(o.stdout.is_empty(), "{fault:?} printed {:?}", stdout(&o));
    }
}

/// `clipql` run as PID 1 of a new PID namespace, as in a container: every
/// run gets the same PID. `--kill-child` makes a SIGKILL of the returned
/// child (unshare) kill clipql too.
fn clipql_as_pid_1(args: &[String]) -> Command {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--pid", "--fork", "true"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "this test runs clipql in a PID namespace with util-linux's \
         `unshare --user --map-root-user --pid --fork` (Debian: apt-get install util-linux), \
         which failed here: {probe:?}"
    );
    let mut cmd = clipql_wrapped_in(
        "unshare",
        &[
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
        ],
    );
    cmd.args(args);
    cmd
}

/// Rows in a journal that may be mid-write: none before its schema is in,
/// and only whole batches after it.
fn journal_row_count(path: &Path) -> usize {
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    match datafusion::arrow::ipc::reader::StreamReader::try_new(file, None) {
        Ok(reader) => reader.map_while(Result::ok).map(|b| b.num_rows()).sum(),
        Err(_) => 0,
    }
}

/// The rows `clipql sql --format jsonl -c SQL` prints; it must succeed.
fn sql_jsonl(sql: &str) -> Vec<serde_json::Value> {
    let o = clipql(&["sql", "--format", "jsonl", "-c", sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `path → label` of a classify output, read back with `clipql sql`; also
/// checks that no path has two rows.
fn labels_by_path(out: &Path) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    for row in sql_jsonl(&format!("SELECT path, label FROM '{}'", out.display())) {
        let path = row["path"].as_str().unwrap().to_string();
        let label = row["label"].as_str().unwrap_or("NULL").to_string();
        assert!(labels.insert(path.clone(), label).is_none(), "{path} twice");
    }
    labels
}

/// `dir/photos` holding `n` files, the fixture photos over and over
/// (`000_chelsea.jpg`, `001_coffee_palette.png`, ...).
fn fixture_photo_copies(dir: &Path, n: usize) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/photos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    sources.sort();
    for i in 0..n {
        let src = &sources[i % sources.len()];
        let name = format!("{i:03}_{}", src.file_name().unwrap().to_string_lossy());
        std::fs::copy(src, photos.join(name)).unwrap();
    }
    photos
}

/// Issue 14's end-to-end kill test: 200 images, batches of 4, every run PID 1
/// of its own PID namespace (so a journal named by PID would be truncated by
/// the run resuming it: item 1), SIGKILLed at 5 random moments and resumed
/// each time. The result has exactly one row per image, with an
/// uninterrupted run's labels.
#[test]
fn classify_resume_survives_five_kills_with_a_repeating_pid() {
    let dir = tempfile::tempdir().unwrap();
    let photos = fixture_photo_copies(dir.path(), 200);
    let args = |out: &Path, resume: bool| {
        let mut a: Vec<String> = [
            "classify",
            photos.to_str().unwrap(),
            "--model",
            "tests/fixtures/model",
            "--labels",
            "a photo of a cat",
            "a photo of a dog",
            "a rocket",
            "--batch-size",
            "4",
            "--output",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if resume {
            a.push("--resume".into());
        }
        a
    };

    let reference = dir.path().join("reference.parquet");
    let started = std::time::Instant::now();
    let o = clipql_as_pid_1(&args(&reference, false)).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let full_run = started.elapsed();
    let expected = labels_by_path(&reference);
    assert_eq!(expected.len(), 200);

    // Kill moments: 5 random row counts, in increasing order; each run is
    // killed once its journal (which also gets the rows it copies from the
    // runs before it) holds that many. The seed comes from the clock and is
    // printed, so a failure can be replayed.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-moment seed {seed}, uninterrupted run {full_run:?}");
    let mut moments: Vec<usize> = (0..5)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + (seed % 199) as usize
        })
        .collect();
    moments.sort();
    let out = dir.path().join("out.parquet");
    for (attempt, kill_at) in moments.into_iter().enumerate() {
        let before = journals_in(dir.path());
        let mut child = clipql_as_pid_1(&args(&out, attempt > 0))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let rows = loop {
            let rows = journals_in(dir.path())
                .iter()
                .filter(|j| !before.contains(j))
                .map(|j| journal_row_count(j))
                .max()
                .unwrap_or(0);
            if rows >= kill_at || child.try_wait().unwrap().is_some() {
                break rows;
            }
            assert!(started.elapsed().as_secs() < 300);
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        child.kill().unwrap();
        let status = child.wait().unwrap();
        eprintln!("run {attempt}: killed at {rows} journal rows (aim {kill_at}): {status}");
        assert!(
            status.code().is_none(),
            "run {attempt} finished before its kill: {status}"
        );
    }
    let o = clipql_as_pid_1(&args(&out, true)).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(journals_in(dir.path()).is_empty(), "journals are removed");
    assert_eq!(labels_by_path(&out), expected);
}

/// Issue 14, item 2, as it was reproduced: files deleted while `classify`
/// runs cost their own rows only. Each gets NULL plus "file vanished after
/// listing", every other file its label, and the job exits 3 (some failed),
/// not 1 with no output.
#[test]
fn files_deleted_during_a_run_get_a_reason_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let chelsea = root().join("tests/fixtures/photos/chelsea.jpg");
    for i in 0..200 {
        std::fs::copy(&chelsea, photos.join(format!("{i:03}.jpg"))).unwrap();
    }
    let out = dir.path().join("out.parquet");
    let mut child = clipql_command()
        .args([
            "classify",
            photos.to_str().unwrap(),
            "--model",
            "tests/fixtures/model",
            "--labels",
            "a photo of a cat",
            "a photo of a dog",
            "--batch-size",
            "2",
            "--output",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first rows are out, delete every other file.
    let started = std::time::Instant::now();
    while journals_in(dir.path())
        .iter()
        .all(|j| journal_row_count(j) == 0)
    {
        assert!(child.try_wait().unwrap().is_none(), "ended too soon");
        assert!(started.elapsed().as_secs() < 120);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for i in (1..200).step_by(2) {
        std::fs::remove_file(photos.join(format!("{i:03}.jpg"))).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = sql_jsonl(&format!(
        "SELECT path, label, error FROM '{}'",
        out.display()
    ));
    assert_eq!(rows.len(), 200);
    let mut vanished = 0;
    for row in &rows {
        let path = row["path"].as_str().unwrap();
        let n: usize = path[path.len() - 7..path.len() - 4].parse().unwrap();
        if row["label"].is_null() {
            assert_eq!(
                row["error"], "file vanished after listing (not found when read)",
                "{row}"
            );
            assert_eq!(n % 2, 1, "only deleted files fail: {row}");
            vanished += 1;
        } else {
            assert!(row["error"].is_null(), "{row}");
        }
    }
    assert!(vanished > 0, "no file was read after its deletion");
    eprintln!("{vanished} of 100 deleted files were not read before their deletion");
}

/// Issue 14, items 5 and 4: Parquet and image sources in one run are refused
/// (image folders used to be read as Parquet and add no rows); every Parquet
/// source's schema counts, and disagreeing ones are a clear error; a NULL
/// image in Parquet gets a reason, not label NULL and error NULL.
#[test]
fn mixed_and_disagreeing_sources_are_refused_and_null_images_have_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    let b = dir.path().join("b.parquet");
    let c = dir.path().join("c.parquet");
    let sql = format!(
        "COPY (SELECT name, image FROM read_images('tests/fixtures/photos/')) TO '{}'; \
         COPY (SELECT name, CASE WHEN name = 'chelsea.jpg' THEN NULL ELSE image END AS image, \
               size FROM read_images('tests/fixtures/photos/')) TO '{}'; \
         COPY (SELECT size AS name, image FROM read_images('tests/fixtures/photos/')) TO '{}'",
        a.display(),
        b.display(),
        c.display()
    );
    let o = clipql(&["sql", "-c", &sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    let classify = |sources: &[&Path], out: &Path| {
        let mut args: Vec<String> = vec!["classify".into()];
        args.extend(sources.iter().map(|s| s.to_str().unwrap().to_string()));
        args.extend(
            [
                "--model",
                "tests/fixtures/model",
                "--labels",
                "cat",
                "dog",
                "--output",
                out.to_str().unwrap(),
            ]
            .map(String::from),
        );
        clipql_command().args(args).output().unwrap()
    };
    let out = dir.path().join("out.jsonl");

    let photos = root().join("tests/fixtures/photos");
    let o = classify(&[&a, &photos], &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the sources mix Parquet"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    let o = classify(&[&a, &c], &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the Parquet sources' schemas disagree"),
        "{}",
        stderr(&o)
    );

    // Compatible schemas (b has one more column): every row of both; the
    // NULL image has its reason.
    let o = classify(&[&a, &b], &out);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    let photos_count = std::fs::read_dir(&photos)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".md")
        })
        .count();
    assert_eq!(rows.len(), 2 * photos_count);
    let failed: Vec<_> = rows.iter().filter(|r| r["label"].is_null()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error"], "no image: the image value is NULL");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Issue 14, item 3: `--resume` refuses earlier rows made under any setting
/// that changes results, `--set` included, and under another version of the
/// model's files; the same settings are still resumed.
#[test]
fn resume_refuses_rows_made_with_other_settings_or_model_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&root().join("tests/fixtures/model"), &model);
    let out = dir.path().join("out.parquet");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "classify",
            "tests/fixtures/photos/chelsea.jpg",
            "tests/fixtures/photos/astronaut.png",
            "--labels",
            "cat",
            "dog",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        clipql_command().args(&args).output().unwrap()
    };
    let m = model.to_str().unwrap();
    let o = run(&["--model", m]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["--model", m, "--resume"]);
    assert_eq!(o.status.code(), Some(0), "same settings: {}", stderr(&o));
    let o = run(&["--set", &format!("clip.model={m}"), "--resume"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "--set clip.model is --model: {}",
        stderr(&o)
    );

    let fixture = root().join("tests/fixtures/model");
    for other in [
        vec!["--model", m, "--set", "clip.logit_scale=10", "--resume"],
        vec!["--model", m, "--set", "clip.fast_jpeg=true", "--resume"],
        vec![
            "--model",
            m,
            "--set",
            "clip.max_image_pixels=1000",
            "--resume",
        ],
        vec![
            "--model",
            m,
            "--set",
            "clip.max_image_bytes=1000",
            "--resume",
        ],
        vec!["--model", m, "--set", "clip.dtype=int8", "--resume"],
        vec![
            "--model",
            m,
            "--set",
            &format!("clip.model={}", fixture.display()),
            "--resume",
        ],
    ] {
        let o = run(&other);
        assert_eq!(o.status.code(), Some(1), "{other:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("was made with other settings"),
            "{other:?}: {}",
            stderr(&o)
        );
    }
    // The same folder with a tower file replaced in place.
    let text = model.join("onnx/text_model.onnx");
    let bytes = std::fs::read(&text).unwrap();
    std::fs::write(&text, &bytes).unwrap();
    let o = run(&["--model", m, "--resume"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("was made with other settings"),
        "{}",
        stderr(&o)
    );
}

/// Issue 14, item 15: a mistyped OPTIONS list, whose parser error quotes the
/// token it stopped at, never prints a secret given in it.
#[test]
fn a_mistyped_options_list_never_prints_its_secrets() {
    for options in [
        "('aws.access_key_id' 'AKIDSENTINEL' 'SECRETSENTINEL1234')",
        "('aws.secret_access_key' 'SECRETSENTINEL1234' 'aws.region' 'eu-west-1')",
        "('aws.session_token' 'SECRETSENTINEL1234', 'aws.bogus' 'AKIDSENTINEL')",
        "(aws.secret_access_key = 'SECRETSENTINEL1234' , , )",
        // Issue 26, item 6: a comment with a quote in it before the list.
        "-- don't\n ('aws.access_key_id' 'AKIDSENTINEL' 'SECRETSENTINEL1234')",
        "/* it's */ ('aws.access_key_id' 'AKIDSENTINEL' 'SECRETSENTINEL1234')",
    ] {
        let (comment, options) = match options.find(" (") {
            Some(at) if !options.starts_with('(') => options.split_at(at),
            _ => ("", options),
        };
        let sql = format!(
            "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://bucket/photos/' {comment}\nOPTIONS {options}"
        );
        let o = clipql(&["sql", "-c", &sql]);
        assert_eq!(o.status.code(), Some(1), "{options}: {}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!all.contains("SECRETSENTINEL"), "{options}: {all}");
        assert!(!all.contains("AKIDSENTINEL"), "{options}: {all}");
        assert!(all.contains("error:"), "{all}");
    }
}

/// Issue 14, item 11: a hostile hub's ETag and commit headers never become
/// paths. A commit that is not 40 hex digits stops the pull before anything
/// is written; an ETag that is not a content hash names no file (the blob is
/// named by its SHA-256) and the pull says it could not verify that file.
#[test]
fn a_hostile_hub_cannot_write_outside_the_cache() {
    let hub = StandInHub::start(&[("test/tiny-clip", &fixture_model())]);
    let root_dir = tempfile::tempdir().unwrap();
    let home = root_dir.path().join("hf");
    // blobs/ is home/hub/models--test--tiny-clip/blobs: four levels up is
    // root_dir.
    let escapes = [
        root_dir.path().join("escape"),
        root_dir.path().join("abs-escape"),
    ];
    for (file, etag) in [
        ("tokenizer.json", "../../../../escape"),
        ("onnx/text_model.onnx", "/ABS/abs-escape"),
    ] {
        let etag: &'static str = Box::leak(
            etag.replace("/ABS", &root_dir.path().display().to_string())
                .into_boxed_str(),
        );
        hub.fault(file, Fault::Etag(etag));
    }
    let o = clipql_hub(&hub, &home, &["model", "pull", "test/tiny-clip"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    for escape in &escapes {
        assert!(!escape.exists(), "{} was written", escape.display());
        let mut part = escape.clone().into_os_string();
        part.push(".sync.part");
        assert!(!Path::new(&part).exists());
    }
    assert!(
        err.contains("could not be verified") && err.contains("tokenizer.json"),
        "{err}"
    );
    // The blobs are named by their SHA-256, inside blobs/.
    let snapshot = home
        .join("hub/models--test--tiny-clip/snapshots")
        .join(hub::COMMIT);
    let blob = std::fs::canonicalize(snapshot.join("tokenizer.json")).unwrap();
    let bytes = std::fs::read(fixture_model().join("tokenizer.json")).unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(blob.file_name().unwrap().to_string_lossy(), sha);
    assert!(blob.starts_with(std::fs::canonicalize(&home).unwrap()));

    // A commit that is not one: nothing is written at all.
    hub.clear_faults();
    hub.fault("config.json", Fault::Commit("../../../../owned"));
    let home2 = root_dir.path().join("hf2");
    let o = clipql_hub(&hub, &home2, &["model", "pull", "test/tiny-clip"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a commit id"), "{}", stderr(&o));
    assert!(!root_dir.path().join("owned").exists());
}

/// Issue 14, item 12: a cached file is hashed again by every pull (a right
/// size is no proof), and a pull that was cut off continues its partial file
/// with a Range request instead of accepting or restarting it.
#[test]
fn a_pull_reverifies_cached_files_and_continues_partial_ones() {
    let hub = StandInHub::start(&[("test/tiny-clip", &fixture_model())]);
    let home = tempfile::tempdir().unwrap();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let snapshot = home
        .path()
        .join("hub/models--test--tiny-clip/snapshots")
        .join(hub::COMMIT);
    // The vision tower's blob changes on disk, keeping its size.
    let vision = std::fs::canonicalize(snapshot.join("onnx/vision_model.onnx")).unwrap();
    corrupt_in_place(&vision);
    hub.take_log();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        bodies(&hub),
        ["onnx/vision_model.onnx"],
        "only the changed file again"
    );
    let good = std::fs::read(fixture_model().join("onnx/vision_model.onnx")).unwrap();
    assert_eq!(std::fs::read(&vision).unwrap(), good);

    // A partial download (as a killed pull leaves it) is continued.
    std::fs::remove_file(snapshot.join("onnx/vision_model.onnx")).unwrap();
    std::fs::remove_file(&vision).unwrap();
    let part = vision.with_file_name(format!(
        "{}.part",
        vision.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&part, &good[..good.len() / 2]).unwrap();
    hub.take_log();
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ranges: Vec<_> = hub
        .take_log()
        .into_iter()
        .filter(|r| r.file == "onnx/vision_model.onnx" && r.is_body())
        .map(|r| r.range)
        .collect();
    assert_eq!(ranges, [Some(format!("bytes={}-", good.len() / 2))]);
    assert_eq!(std::fs::read(&vision).unwrap(), good);
    assert!(!part.exists());
}

/// Issue 14, item 8: eight solid-colour PNGs just under clip.max_image_pixels
/// (each small on disk, about 1.3 GB to decode and resize) over 4 partitions
/// share one process-wide decode budget, so peak RSS stays under 2 GB.
#[test]
fn large_images_in_parallel_partitions_share_one_decode_budget() {
    use image::ImageEncoder;
    let dir = tempfile::tempdir().unwrap();
    let side = 9400; // 88.4 MP, under the default 89,478,485
    let image = image::RgbImage::from_pixel(side, side, image::Rgb([200, 30, 128]));
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(image.as_raw(), side, side, image::ExtendedColorType::Rgb8)
    .unwrap();
    drop(image);
    // Eight different files (the model's image cache would answer identical
    // bytes once): the same pixels, each with its own tEXt chunk after IHDR.
    let crc32 = |bytes: &[u8]| {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    };
    for i in 0..8 {
        let mut chunk = b"tEXt".to_vec();
        chunk.extend_from_slice(format!("Comment\0copy {i}").as_bytes());
        let mut file = png[..33].to_vec(); // signature + IHDR
        file.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
        file.extend_from_slice(&chunk);
        file.extend_from_slice(&crc32(&chunk).to_be_bytes());
        file.extend_from_slice(&png[33..]);
        std::fs::write(dir.path().join(format!("big{i}.png")), file).unwrap();
    }
    // Small on disk, as such bombs are: the memory is the decoder's.
    let on_disk = std::fs::metadata(dir.path().join("big0.png"))
        .unwrap()
        .len();
    assert!(on_disk < 2 << 20, "{on_disk} bytes");
    let o = clipql_fixture(&[
        "classify",
        dir.path().to_str().unwrap(),
        "--labels",
        "red",
        "green",
        "--batch-size",
        "1",
        "--set",
        "datafusion.execution.target_partitions=4",
        "--verbose",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rss = peak_rss_mb(&o);
    eprintln!("peak RSS {rss:.0} MB");
    assert!(rss < 2000.0, "peak RSS {rss:.0} MB");
    assert!(
        stderr(&o).contains("decode + preprocess: 8 images, 0 failed"),
        "{}",
        stderr(&o)
    );
}

/// Issue 14, item 4: a failure only the model's preprocessing sees (here a
/// model without a centre crop, and a 1x20000 strip that resizes to 224 x
/// 4,480,000) used to give label NULL and error NULL. `clip_image_error`
/// applies the model's own size check, so every NULL label has a reason.
#[test]
fn a_preprocessing_failure_has_a_reason_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&root().join("tests/fixtures/model"), &model);
    let config = model.join("preprocessor_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["do_center_crop"] = false.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    image::RgbImage::from_pixel(1, 20_000, image::Rgb([90, 90, 90]))
        .save(photos.join("strip.png"))
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let o = clipql(&[
        "classify",
        photos.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--labels",
        "cat",
        "dog",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["label"].is_null());
    let error = rows[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("(no centre crop) would resize this image to 224x4480000"),
        "{:?}",
        rows[0]
    );
}

/// The function names in README.md's function table (`SQL reference` →
/// `Functions`): the reference the SHOW FUNCTIONS test checks against.
fn readme_function_names() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("### Functions\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .find(|chunk| chunk.contains("| function |"))
        .unwrap();
    let mut names: Vec<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `clip_"))
        .map(|l| format!("clip_{}", l.split('(').next().unwrap()))
        .collect();
    names.sort();
    names
}

/// Issue 15 item 4: `SHOW FUNCTIONS` in `clipql sql` lists every function of
/// the README's table, each with its description and syntax, and no other
/// `clip_*` function; it needs no model.
#[test]
fn show_functions_lists_every_clip_function_with_its_documentation() {
    let expected = readme_function_names();
    assert!(expected.len() >= 7, "README function table: {expected:?}");
    let rows = sql_jsonl("SHOW FUNCTIONS LIKE 'clip%'");
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| r["function_name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names, expected);
    for row in &rows {
        let name = row["function_name"].as_str().unwrap();
        let description = row["description"].as_str().unwrap_or_default();
        let syntax = row["syntax_example"].as_str().unwrap_or_default();
        assert!(
            description.len() > 40,
            "{name}: description {description:?}"
        );
        assert!(
            syntax.starts_with(&format!("{name}(")),
            "{name}: syntax {syntax:?}"
        );
    }
    // Naming a function that needs a model runs none: no model is pulled
    // (this test's HF cache is empty and the hub unreachable).
    let one = sql_jsonl("SHOW FUNCTIONS LIKE 'clip_scores'");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0]["syntax_example"], "clip_scores(image, labels[, k])");
    // DataFusion's own functions are still listed as DataFusion lists them.
    let abs = sql_jsonl("SHOW FUNCTIONS LIKE 'abs'");
    assert!(abs.iter().all(|r| r["return_type"].is_string()) && !abs.is_empty());
    // The same documentation is in information_schema.routines.
    let routines = sql_jsonl(
        "SELECT DISTINCT routine_name, description FROM information_schema.routines \
         WHERE routine_name LIKE 'clip_%' ORDER BY routine_name",
    );
    assert_eq!(routines.len(), expected.len());
    assert!(routines.iter().all(|r| r["description"].is_string()));
}

/// Issue 26, item 3: a finished `--output` is readable as any new file of
/// the user's is (the umask's mode, not the 0600 of a private temporary
/// file), and the `.partial` file a killed run left beside it is gone.
#[test]
fn a_finished_output_has_the_umask_mode_and_orphan_partials_go() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (umask, mode) in [("022", 0o644), ("027", 0o640)] {
        let name = format!("out-{umask}.parquet");
        let out = dir.path().join(&name);
        // What a SIGKILLed run leaves: a partial file, named as
        // `create_beside` names them.
        let orphan = dir.path().join(format!(".{name}.kIlLeD.partial"));
        std::fs::write(&orphan, b"PAR1 half a file").unwrap();
        let o = clipql_wrapped_in(
            "sh",
            &["-c", &format!("umask {umask} && exec \"$0\" \"$@\"")],
        )
        .args([
            "classify",
            "tests/fixtures/photos",
            "--model",
            "tests/fixtures/model",
        ])
        .args([
            "--labels",
            "a photo of a cat",
            "a photo of a dog",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let got = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}: mode {got:o}");
        assert!(!orphan.exists(), "the orphan partial file is still there");
    }
    assert_eq!(
        files_in(dir.path()),
        vec!["out-022.parquet", "out-027.parquet"]
    );
}

/// Issue 26, item 1: a row is done only when it has its answer. A row with
/// a NULL label and a NULL error (what a failure no check reported used to
/// write) is computed again by `--resume`, not copied; answered rows are
/// copied.
#[test]
fn resume_recomputes_a_row_without_an_answer() {
    use datafusion::arrow::array::BooleanArray;
    use datafusion::arrow::compute::{concat_batches, nullif};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["chelsea.jpg", "coffee_palette.png", "rocket_cmyk.jpg"] {
        std::fs::copy(
            root().join("tests/fixtures/photos").join(name),
            photos.join(name),
        )
        .unwrap();
    }
    let out = dir.path().join("out.parquet");
    let run = |extra: &[&str]| {
        let o = clipql_command()
            .args([
                "classify",
                photos.to_str().unwrap(),
                "--model",
                "tests/fixtures/model",
            ])
            .args([
                "--labels",
                "a photo of a cat",
                "a cup of coffee",
                "a photo of a rocket",
            ])
            .args(["--output", out.to_str().unwrap(), "--verbose"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stderr(&o)
    };
    run(&[]);
    let answered = labels_by_path(&out);
    assert_eq!(answered.len(), 3);
    assert!(answered.values().all(|l| l != "NULL"), "{answered:?}");

    // The silent row: one answer taken away, its error left NULL.
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let reader = builder.build().unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let all = concat_batches(&schema, &batches).unwrap();
    let paths = all.column_by_name("path").unwrap();
    let paths = paths
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .unwrap();
    let silent: BooleanArray = paths
        .iter()
        .map(|p| Some(p.unwrap().ends_with("coffee_palette.png")))
        .collect();
    let columns = schema
        .fields()
        .iter()
        .zip(all.columns())
        .map(|(f, c)| match f.name().as_str() {
            "label" | "score" | "scores" => nullif(c.as_ref(), &silent).unwrap(),
            _ => std::sync::Arc::clone(c),
        })
        .collect();
    let forged = datafusion::arrow::array::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&out).unwrap(), schema, None).unwrap();
    writer.write(&forged).unwrap();
    writer.close().unwrap();
    assert_eq!(
        labels_by_path(&out)
            .values()
            .filter(|l| *l == "NULL")
            .count(),
        1
    );

    let log = run(&["--resume"]);
    assert_eq!(
        labels_by_path(&out),
        answered,
        "the silent row is answered again"
    );
    assert!(
        log.contains("decode + preprocess: 1 images, 0 failed"),
        "only the silent row is computed again: {log}"
    );
}

/// Issue 26's acceptance run (items 1 and 2): 20 good images, one file
/// forged to look like an unread one (the old placeholder's marker,
/// terminal escapes and 100 kB of text), and one image whose resize fails
/// after the size check (the test-only failpoint, which the binary the
/// tests run has). 22 rows; every NULL label has a bounded, printable
/// reason that no file chose; `--resume` computes the failed rows again and
/// copies the answered ones.
#[test]
fn forged_and_resize_failing_images_get_their_own_reason_and_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let photos = fixture_photo_copies(dir.path(), 20);
    let mut forged = b"\0CLIPQL-UNREADABLE\0\x1b[2J\x1b[31mall is well".to_vec();
    forged.extend(std::iter::repeat_n(b'A', 100_000));
    std::fs::write(photos.join("forged.jpg"), forged).unwrap();
    image::RgbImage::from_pixel(333, 250, image::Rgb([10, 200, 30]))
        .save(photos.join("resize-fails.png"))
        .unwrap();
    let out = dir.path().join("out.parquet");
    let run = |failpoint: bool, extra: &[&str]| {
        let mut cmd = clipql_command();
        cmd.args([
            "classify",
            photos.to_str().unwrap(),
            "--model",
            "tests/fixtures/model",
        ])
        .args(["--labels", "a photo of a cat", "a photo of a rocket"])
        .args(["--output", out.to_str().unwrap(), "--verbose"])
        .args(extra);
        if failpoint {
            cmd.env("CLIPQL_FAILPOINT_RESIZE_WIDTH", "333");
        }
        let o = cmd.output().unwrap();
        assert!(
            !stderr(&o).contains('\u{1b}'),
            "an escape reached the terminal"
        );
        o
    };
    let rows = || {
        sql_jsonl(&format!(
            "SELECT path, label, error FROM '{}' ORDER BY path",
            out.display()
        ))
    };
    let o = run(true, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let first = rows();
    assert_eq!(first.len(), 22);
    let reason = |name: &str| {
        let row = first
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(name))
            .unwrap();
        assert!(row["label"].is_null(), "{row}");
        row["error"].as_str().unwrap().to_string()
    };
    let forged = reason("forged.jpg");
    assert!(
        forged.starts_with("unsupported or unrecognised image format"),
        "{forged}"
    );
    assert!(
        !forged.contains("all is well"),
        "the file chose its reason: {forged}"
    );
    let resize = reason("resize-fails.png");
    assert!(resize.contains("injected failure"), "{resize}");
    for row in &first {
        if row["label"].is_null() {
            let error = row["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "a NULL label without a reason: {row}");
            assert!(error.chars().count() <= 1010, "{row}");
            assert!(!error.chars().any(char::is_control), "{row}");
        }
    }
    assert_eq!(first.iter().filter(|r| r["label"].is_null()).count(), 2);

    // Without the failpoint, --resume computes only the two failed rows.
    let o = run(false, &["--resume"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the forged file still fails: {}",
        stderr(&o)
    );
    let log = stderr(&o);
    assert!(
        log.contains(", 2 rows in "),
        "only the failed rows are computed: {log}"
    );
    assert!(log.contains("vision tower: 1 batches, 1 images"), "{log}");
    let second = rows();
    assert_eq!(second.len(), 22);
    let unlabelled: Vec<&str> = second
        .iter()
        .filter(|r| r["label"].is_null())
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(unlabelled.len(), 1, "{second:?}");
    assert!(unlabelled[0].ends_with("forged.jpg"), "{unlabelled:?}");
}

/// Issue 26, item 7: `model pull` verifies every file, every time, and never
/// mixes commits. With an ETag that is not a content hash: a download cut
/// off at one commit is not continued with the next commit's bytes; a
/// cached file changed in place is hashed, found out and fetched again; and
/// a pull interrupted before its optional `onnx/model.onnx` is not taken as
/// complete by the next use of the model.
#[test]
fn a_pull_verifies_every_file_and_never_mixes_commits() {
    const FILE: &str = "onnx/text_model.onnx";
    const COMMIT_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    copy_dir(&fixture_model(), &a);
    copy_dir(&fixture_model(), &b);
    // Commit B's file differs from A's early on, within what the cut-off
    // transfer of A delivered.
    let mut changed = std::fs::read(b.join(FILE)).unwrap();
    changed[100..200].iter_mut().for_each(|x| *x ^= 0xff);
    std::fs::write(b.join(FILE), &changed).unwrap();

    let hub = StandInHub::start(&[("test/tiny-clip", &a)]);
    let home = tempfile::tempdir().unwrap();
    hub.fault(FILE, Fault::Etag("opaque-etag-1"));
    hub.fault(FILE, Fault::CutAfter(4096));
    let pull = || clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    let o = pull();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // main moves to commit B; the next pull must not build B's file on A's
    // first 4096 bytes.
    hub.publish("test/tiny-clip", &b, COMMIT_B);
    hub.clear_faults();
    hub.fault(FILE, Fault::Etag("opaque-etag-1"));
    let o = pull();
    assert!(o.status.success(), "{}", stderr(&o));
    let snapshot = home
        .path()
        .join("hub/models--test--tiny-clip/snapshots")
        .join(COMMIT_B);
    assert!(
        std::fs::read(snapshot.join(FILE)).unwrap() == changed,
        "the pulled file is not commit B's"
    );

    // The cached file changed in place, same size: the next pull hashes it,
    // finds it out and fetches it again.
    let blob = std::fs::canonicalize(snapshot.join(FILE)).unwrap();
    let mut tampered = changed.clone();
    tampered[1000] ^= 0x01;
    std::fs::write(&blob, &tampered).unwrap();
    hub.take_log();
    let o = pull();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        bodies(&hub),
        [FILE],
        "only the changed file is fetched again"
    );
    assert!(std::fs::read(snapshot.join(FILE)).unwrap() == changed);

    // A pull interrupted before the optional combined graph: the next use
    // of the model pulls the rest instead of taking the snapshot as whole.
    let home = tempfile::tempdir().unwrap();
    hub.publish("test/tiny-clip", &fixture_model(), hub::COMMIT);
    hub.clear_faults();
    hub.fault("onnx/model.onnx", Fault::StatusOnce(500));
    let o = clipql_hub(&hub, home.path(), &["model", "pull", "test/tiny-clip"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    hub.take_log();
    let o = clipql_hub(
        &hub,
        home.path(),
        &[
            "sql",
            "--model",
            "test/tiny-clip",
            "-c",
            "SELECT clip_text_embedding('a cat') IS NOT NULL AS ok",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(bodies(&hub), ["onnx/model.onnx"]);
}

/// Issue 15, item 6, and issue 16: a model of a family ClipQL does not run
/// is refused at load, by `model info` and by a job, naming the families
/// that run (or, for a SigLIP 2 NaFlex checkpoint, what to use instead); it
/// is never scored by another family's rule.
#[test]
fn a_model_of_another_family_is_refused_naming_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&root().join("tests/fixtures/model"), &model);
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    for (model_type, expected) in [
        (
            "blip",
            "model_type \"blip\" is not a family ClipQL runs (it runs: clip, siglip)",
        ),
        (
            "siglip2",
            "model_type \"siglip2\" is not a family ClipQL runs: SigLIP 2 NaFlex checkpoints",
        ),
    ] {
        let other = config.replacen(
            "\"model_type\": \"clip\"",
            &format!("\"model_type\": \"{model_type}\""),
            1,
        );
        assert_ne!(
            config, other,
            "the fixture's config.json names its model_type"
        );
        std::fs::write(model.join("config.json"), other).unwrap();
        check_refused(&model, expected);
    }
}

fn check_refused(model: &Path, expected: &str) {
    let m = model.to_str().unwrap();
    for args in [
        vec!["model", "info", m],
        vec![
            "classify",
            "tests/fixtures/photos/chelsea.jpg",
            "--model",
            m,
            "--labels",
            "cat",
            "dog",
        ],
    ] {
        let o = clipql_command().args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?}: {}", stdout(&o));
        let e = stderr(&o);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
}

/// Issue 16's "done when": `classify` with a SigLIP model, a template and
/// `--threshold`, to Parquet. Each label's score is transformers' sigmoid
/// (tests/fixtures/siglip/golden/golden.json: independent per label, so a
/// subset of its labels keeps its scores), `label` is the top one only where
/// it reaches the threshold (NULL, with no error, elsewhere: "none of
/// these"), and `tags` lists every label that reaches it.
#[test]
fn classify_with_siglip_and_a_threshold_matches_the_pipeline() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/siglip/golden/golden.json")).unwrap(),
    )
    .unwrap();
    let names = ["cat", "dog", "rocket", "horse"];
    let column = |name: &str| {
        golden["labels"]
            .as_array()
            .unwrap()
            .iter()
            .position(|l| l.as_str() == Some(&format!("a photo of a {name}")))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let threshold = 0.5;
    let run = |threshold: &str, more: &[&str]| {
        let mut args = vec![
            "classify",
            "tests/fixtures/photos",
            "--model",
            "tests/fixtures/siglip/model",
            "--labels",
            "cat",
            "dog",
            "rocket",
            "horse",
            "--template",
            "a photo of a {}",
            "--threshold",
            threshold,
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend(more);
        clipql(&args)
    };
    let o = run("0.5", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = sql_jsonl(&format!(
        "SELECT path, label, scores, tags, error FROM '{}'",
        out.display()
    ));
    assert_eq!(rows.len(), 14);
    let mut abstained = 0;
    for row in rows {
        let path = row["path"].as_str().unwrap();
        let file = path.rsplit('/').next().unwrap();
        if file == "coins_gray16.png" {
            continue; // PIL clips 16-bit gray; ClipQL scales it (tests/golden.rs)
        }
        assert!(row["error"].is_null(), "{file}: {row}");
        let case = golden["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["file"] == file)
            .unwrap();
        let theirs = |name: &str| case["probabilities"][column(name)].as_f64().unwrap();
        let ours: std::collections::BTreeMap<String, f64> = row["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["label"].as_str().unwrap().to_string(),
                    s["score"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ours.len(), names.len(), "{file}");
        for name in names {
            let d = (ours[name] - theirs(name)).abs();
            assert!(d <= 1e-3, "{file} {name}: |Δ| {d}");
        }
        let mut reaching: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| theirs(n) >= threshold)
            .collect();
        reaching.sort_by(|a, b| theirs(b).total_cmp(&theirs(a)));
        if names.iter().all(|n| (theirs(n) - threshold).abs() > 2e-3) {
            let tags: Vec<&str> = row["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(tags, reaching, "{file}");
            assert_eq!(row["label"].as_str(), reaching.first().copied(), "{file}");
        }
        if reaching.is_empty() {
            abstained += 1;
        }
    }
    // hubble.webp and rocket_cmyk.jpg: no label over 0.5 (golden.json).
    assert_eq!(abstained, 2);

    // --resume: the same threshold resumes; another one is other results.
    let o = run("0.5", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run("0.3", &["--resume"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was made with other settings"),
        "{}",
        stderr(&o)
    );

    // A threshold that is not a score is refused before any work.
    let o = run("1.5", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "1.5 is out of range: scores are probabilities, so give a number from 0 to 1"
        ),
        "{}",
        stderr(&o)
    );
}

/// Issue 16, item 6: `--template` repeated is a prompt ensemble per class
/// (`clip_prompts`); the output names the class, and the scores are the same
/// computation on transformers' text features (golden/ensembles.json).
#[test]
fn repeated_templates_make_a_prompt_ensemble() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/golden/ensembles.json")).unwrap(),
    )
    .unwrap();
    let mut args = vec![
        "classify",
        "tests/fixtures/photos/chelsea.jpg",
        "tests/fixtures/photos/astronaut.png",
        "tests/fixtures/photos/coffee_progressive.jpg",
        "--model",
        "tests/fixtures/siglip/model",
        "--labels",
    ];
    let classes: Vec<&str> = golden["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    args.extend(&classes);
    for t in golden["templates"].as_array().unwrap() {
        args.extend(["--template", t.as_str().unwrap()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    args.extend(["--output", out.to_str().unwrap()]);
    let o = clipql(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let file = row["path"].as_str().unwrap().rsplit('/').next().unwrap();
        let theirs = &golden["families"]["siglip"]["scores"][file];
        for s in row["scores"].as_array().unwrap() {
            let class = s["label"].as_str().unwrap();
            let i = classes.iter().position(|c| *c == class).unwrap();
            let d = (s["score"].as_f64().unwrap() - theirs[i].as_f64().unwrap()).abs();
            assert!(d <= 1e-3, "{file} {class}: |Δ| {d}");
        }
    }
}
