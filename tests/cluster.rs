//! ClipQL on a Ballista cluster: a scheduler and executors started as
//! separate `clipql` processes on 127.0.0.1, driven by `clipql sql
//! --cluster` and `clipql classify --cluster` as a user runs them.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/clipql.rs"]
mod clipql_support;
#[allow(dead_code)] // cli.rs uses the rest
#[path = "support/hub.rs"]
mod hub;
#[path = "support/s3.rs"]
mod s3;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use clipql_support::{clipql_command, root};

/// The fixture photos plus one truncated JPEG, in a temporary folder.
fn photos_with_a_bad_one() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("tests/fixtures/photos")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let jpeg = std::fs::read(root().join("tests/fixtures/photos/chelsea.jpg")).unwrap();
    std::fs::write(dir.path().join("truncated.jpg"), &jpeg[..400]).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET, for the scheduler's REST API.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A scheduler and executors, each a `clipql` process logging to a file;
/// all killed on drop.
struct Cluster {
    port: u16,
    scheduler: Child,
    executors: Vec<Child>,
    logs: tempfile::TempDir,
}

impl Cluster {
    /// Starts a scheduler and `n` executors (one task slot each, so that a
    /// multi-task query must use both), with `env` on every process, and
    /// waits until every executor has registered. Executors get `--model
    /// tests/fixtures/model`.
    fn start(n: usize, env: &[(&str, &str)]) -> Self {
        Self::start_with_model(n, env, "tests/fixtures/model")
    }

    /// [`Cluster::start`] with `--model MODEL` on the scheduler and the
    /// executors. Each process has its own empty HF cache (`HF_HOME` under
    /// `logs`), as separate machines would.
    fn start_with_model(n: usize, env: &[(&str, &str)], model: &str) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let dir = logs.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let spawn = |args: Vec<String>, name: &str| -> Child {
            let mut cmd = clipql_command();
            cmd.args(&args)
                .envs(env.iter().copied())
                .env("HF_HOME", dir.join(format!("{name}.hf")))
                .stdin(Stdio::null())
                .stdout(log(name))
                .stderr(log(&format!("{name}.err")));
            cmd.spawn().unwrap()
        };
        let scheduler = spawn(
            [
                "scheduler",
                "--bind-host",
                "127.0.0.1",
                "--bind-port",
                &port.to_string(),
                // A killed executor is noticed in seconds, not minutes.
                "--executor-timeout-seconds",
                "6",
                "--expire-dead-executor-interval-seconds",
                "1",
                "--model",
                model,
            ]
            .map(String::from)
            .to_vec(),
            "scheduler.log",
        );
        let mut cluster = Cluster {
            port,
            scheduler,
            executors: Vec::new(),
            logs,
        };
        cluster.wait_for("the scheduler", || {
            http_get(port, "/api/executors").is_some()
        });
        for i in 0..n {
            let executor = spawn(
                [
                    "executor",
                    "--scheduler-host",
                    "127.0.0.1",
                    "--scheduler-port",
                    &port.to_string(),
                    "--bind-host",
                    "127.0.0.1",
                    "--bind-port",
                    &free_port().to_string(),
                    "--bind-grpc-port",
                    &free_port().to_string(),
                    "--bind-health-port",
                    &free_port().to_string(),
                    "--concurrent-tasks",
                    "1",
                    "--executor-heartbeat-interval-seconds",
                    "1",
                    "--model",
                    model,
                ]
                .map(String::from)
                .to_vec(),
                &format!("executor{i}.log"),
            );
            cluster.executors.push(executor);
        }
        cluster.wait_for("the executors to register", || {
            http_get(port, "/api/executors").is_some_and(|body| {
                serde_json::from_str::<Vec<serde_json::Value>>(&body).is_ok_and(|e| e.len() == n)
            })
        });
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn log(&self, name: &str) -> String {
        let mut text = String::new();
        for file in [name.to_string(), format!("{name}.err")] {
            text += &std::fs::read_to_string(self.logs.path().join(file)).unwrap_or_default();
        }
        text
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready() {
            let exited = std::iter::once(&mut self.scheduler)
                .chain(self.executors.iter_mut())
                .any(|c| c.try_wait().unwrap().is_some());
            if exited || Instant::now() > deadline {
                panic!(
                    "waiting for {what}: {}\nscheduler:\n{}\nexecutor0:\n{}",
                    if exited {
                        "a process exited"
                    } else {
                        "timed out"
                    },
                    self.log("scheduler.log"),
                    self.log("executor0.log")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Tasks executor `i` has finished, by Ballista's own log lines.
    fn finished_tasks(&self, i: usize) -> usize {
        self.log(&format!("executor{i}.log"))
            .matches("Finished task")
            .count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn jsonl(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const LABELS: &str = "['a photo of a cat', 'a photo of a dog', 'a photo of a rocket', \
    'a photo of an astronaut', 'a cup of coffee', 'a page of text', 'a photo of coins']";

/// The end-to-end query over `location`, in 4 scan partitions (so 4 tasks).
fn query(location: &str) -> String {
    format!(
        "SET datafusion.execution.target_partitions = 4; \
         CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{location}'; \
         SELECT name, clip_classify(image, {LABELS}) AS label, clip_scores(image, {LABELS}) AS scores, \
         clip_image_error(image) AS error FROM images ORDER BY name"
    )
}

/// The same rows: names, labels, errors exactly; scores to 1e-6 (ONNX
/// Runtime may sum in another order on another thread count).
fn assert_same_rows(local: &[serde_json::Value], cluster: &[serde_json::Value]) {
    assert_eq!(local.len(), cluster.len());
    for (l, c) in local.iter().zip(cluster) {
        assert_eq!(l["name"], c["name"]);
        assert_eq!(l["label"], c["label"], "{}", l["name"]);
        assert_eq!(l["error"], c["error"], "{}", l["name"]);
        let (Some(ls), Some(cs)) = (l["scores"].as_array(), c["scores"].as_array()) else {
            assert_eq!(l["scores"], c["scores"], "{}", l["name"]);
            continue;
        };
        assert_eq!(ls.len(), cs.len());
        for (a, b) in ls.iter().zip(cs) {
            assert_eq!(a["label"], b["label"], "{}", l["name"]);
            let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
            assert!((a - b).abs() < 1e-6, "{}: {a} vs {b}", l["name"]);
        }
    }
}

/// The acceptance check, over a local folder and over S3, in SQL and
/// with `classify`: the same rows as local mode, with tasks on both
/// executors.
#[test]
fn a_cluster_gives_the_same_rows_as_local_mode() {
    let photos = photos_with_a_bad_one();
    let folder = format!("{}/", photos.path().display());
    let server = s3::s3_server(photos.path());
    let settings = s3::settings(&server.endpoint, s3::S3_SECRET);
    let s3_env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = Cluster::start(2, &s3_env);
    let sql = |location: &str, cluster_url: Option<&str>| -> Vec<serde_json::Value> {
        let mut cmd = clipql_command();
        cmd.envs(s3_env.iter().copied()).args([
            "sql",
            "--model",
            "tests/fixtures/model",
            "--format",
            "jsonl",
            "-c",
            &query(location),
        ]);
        if let Some(url) = cluster_url {
            cmd.args(["--cluster", url]);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{location} on {cluster_url:?}: {}\nscheduler:\n{}",
            stderr(&o),
            cluster.log("scheduler.log")
        );
        jsonl(&o)
    };
    let local = sql(&folder, None);
    assert_eq!(local.len(), 15);
    let bad = local.iter().find(|r| r["name"] == "truncated.jpg").unwrap();
    assert!(bad["label"].is_null() && bad["error"].is_string(), "{bad}");

    let before = [cluster.finished_tasks(0), cluster.finished_tasks(1)];
    assert_same_rows(&local, &sql(&folder, Some(&cluster.url())));
    let after = [cluster.finished_tasks(0), cluster.finished_tasks(1)];
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "4 tasks with one slot per executor ran on both: {before:?} -> {after:?}"
    );
    assert_same_rows(
        &local,
        &sql("s3://photos-bucket/photos/", Some(&cluster.url())),
    );

    // `classify` and `embed` write the same files either way; each run
    // exits 3 because one image is corrupt. Rows sorted by path.
    let dir = tempfile::tempdir().unwrap();
    let both = |args: &[&str], name: &str| -> [Vec<serde_json::Value>; 2] {
        [None, Some(cluster.url())].map(|url| {
            let out = dir.path().join(format!("{name}.{}.jsonl", url.is_some()));
            let mut cmd = clipql_command();
            cmd.args(args)
                .args([&folder, "--model", "tests/fixtures/model", "--output"])
                .arg(&out);
            if let Some(url) = &url {
                cmd.args(["--cluster", url]);
            }
            let o = cmd.output().unwrap();
            assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
            let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            rows.sort_by_key(|r| r["path"].as_str().unwrap().to_string());
            rows
        })
    };
    let [local, remote] = both(
        &[
            "classify",
            "--labels",
            "cat",
            "dog",
            "rocket",
            "--template",
            "a photo of a {}",
            "--set",
            "datafusion.execution.target_partitions=4",
        ],
        "classify",
    );
    assert_eq!(local.len(), 15);
    for (l, r) in local.iter().zip(&remote) {
        assert_eq!(l["path"], r["path"]);
        assert_eq!(l["label"], r["label"]);
        assert_eq!(l["error"], r["error"]);
    }

    let [local, remote] = both(&["embed"], "embed");
    assert_eq!(local.len(), 15);
    for (l, r) in local.iter().zip(&remote) {
        assert_eq!(l["path"], r["path"]);
        assert_eq!(l["error"], r["error"]);
        let (Some(le), Some(re)) = (l["embedding"].as_array(), r["embedding"].as_array()) else {
            assert!(l["embedding"].is_null() && r["embedding"].is_null());
            continue;
        };
        assert_eq!(le.len(), re.len());
        for (a, b) in le.iter().zip(re) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-6);
        }
    }
}

/// Issue 16: the same SQL with a SigLIP model gives the same rows on a
/// cluster as locally, and they are SigLIP's: independent sigmoids, which
/// need not sum to 1.
#[test]
fn a_siglip_model_gives_the_same_rows_on_a_cluster() {
    let photos = photos_with_a_bad_one();
    let folder = format!("{}/", photos.path().display());
    let model = "tests/fixtures/siglip/model";
    let cluster = Cluster::start_with_model(2, &[], model);
    let sql = |cluster_url: Option<&str>| -> Vec<serde_json::Value> {
        let mut cmd = clipql_command();
        cmd.args([
            "sql",
            "--model",
            model,
            "--format",
            "jsonl",
            "-c",
            &query(&folder),
        ]);
        if let Some(url) = cluster_url {
            cmd.args(["--cluster", url]);
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cluster_url:?}: {}\nscheduler:\n{}",
            stderr(&o),
            cluster.log("scheduler.log")
        );
        jsonl(&o)
    };
    let local = sql(None);
    assert_eq!(local.len(), 15);
    assert_same_rows(&local, &sql(Some(&cluster.url())));
    let sums: Vec<f64> = local
        .iter()
        .filter_map(|r| r["scores"].as_array())
        .map(|s| s.iter().map(|e| e["score"].as_f64().unwrap()).sum())
        .collect();
    assert!(
        sums.iter().any(|s| (s - 1.0).abs() > 0.1),
        "softmax-like sums: {sums:?}"
    );
}

/// Misuse and failures read as in local mode: a planning error names the
/// fix, a bad image is a NULL with its reason (above), and a table whose S3
/// credentials are in OPTIONS is refused rather than shipped.
#[test]
fn cluster_errors_read_as_in_local_mode() {
    let photos = photos_with_a_bad_one();
    let cluster = Cluster::start(1, &[]);
    let run = |sql: &str| {
        clipql_command()
            .args([
                "sql",
                "--model",
                "tests/fixtures/model",
                "--cluster",
                &cluster.url(),
                "-c",
                sql,
            ])
            .output()
            .unwrap()
    };
    let o = run(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'tests/fixtures/photos/'; \
         SELECT clip_classify(name, ['a', 'b']) FROM images",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("expects the image as Binary"),
        "{}",
        stderr(&o)
    );

    let o = run(
        "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 's3://bucket/photos/' \
         OPTIONS ('aws.access_key_id' 'AKIA-SENTINEL', 'aws.secret_access_key' 'SECRET-SENTINEL', \
         'aws.region' 'us-east-1'); SELECT count(*) FROM images",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("credentials never go into a plan"), "{err}");
    assert!(!err.contains("SECRET-SENTINEL"), "{err}");

    // Strict mode fails the query on the first bad image, naming it; the
    // WHERE on listing columns is applied by the scan on the cluster too.
    let o = run(&format!(
        "SET clip.on_error = 'fail'; \
         CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{}/'; \
         SELECT clip_classify(image, ['a', 'b']) FROM images WHERE name LIKE 't%' AND size < 1000",
        photos.path().display()
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("/truncated.jpg (row 0 of its batch)"), "{err}");
    assert!(err.contains("cannot decode JPEG image"), "{err}");
    assert!(err.contains("SET clip.on_error = 'null'"), "{err}");
    assert!(!err.contains("DataFusionError("), "no Debug text: {err}");
}

/// Killing an executor while a multi-task query runs: Ballista notices the
/// lost executor (missed heartbeats), re-runs its tasks on the survivor and
/// the query completes with every row; it never returns part of the rows.
#[test]
fn killing_an_executor_mid_query_never_loses_rows() {
    let dir = tempfile::tempdir().unwrap();
    let photos = root().join("tests/fixtures/photos");
    let mut expected_names = Vec::new();
    for copy in 0..12 {
        for entry in std::fs::read_dir(&photos).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "LICENSES.md" {
                continue;
            }
            let name = format!("{copy:02}_{}", entry.file_name().to_string_lossy());
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
            expected_names.push(name);
        }
    }
    expected_names.sort();
    let mut cluster = Cluster::start(2, &[]);
    let sql = format!(
        "SET datafusion.execution.target_partitions = 8; SET clip.batch_size = 1; \
         CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{}/'; \
         SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label FROM images",
        dir.path().display()
    );
    let client = clipql_command()
        .args([
            "sql",
            "--model",
            "tests/fixtures/model",
            "--format",
            "jsonl",
            "--cluster",
            &cluster.url(),
            "-c",
            &sql,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill executor 1 as soon as it has started a task of this query.
    let log = cluster.logs.path().join("executor1.log");
    cluster.wait_for("executor 1 to start a task", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Execute task"))
    });
    cluster.executors[1].kill().unwrap();
    cluster.executors[1].wait().unwrap();
    let killed = Instant::now();
    let o = client.wait_with_output().unwrap();
    eprintln!(
        "query ended {:?} after the kill; scheduler: {:?}",
        killed.elapsed(),
        cluster
            .log("scheduler.log")
            .lines()
            .filter(|l| l.contains("Removing executor") || l.contains("lost"))
            .collect::<Vec<_>>()
    );
    if o.status.success() {
        // Every file exactly once (a retried task must not add duplicates
        // while others go missing), each with the label local mode gives.
        let rows = jsonl(&o);
        let mut got: Vec<(String, serde_json::Value)> = rows
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["label"].clone()))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&String> = got.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            expected_names.iter().collect::<Vec<_>>(),
            "a successful query has every file exactly once"
        );
        let local = clipql_command()
            .args([
                "sql",
                "--model",
                "tests/fixtures/model",
                "--format",
                "jsonl",
                "-c",
                &sql,
            ])
            .output()
            .unwrap();
        assert!(local.status.success(), "{}", stderr(&local));
        let mut want: Vec<(String, serde_json::Value)> = jsonl(&local)
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["label"].clone()))
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "the labels of a local run");
    } else {
        let err = stderr(&o);
        assert!(!err.trim().is_empty(), "a failed query says why");
        assert!(
            stdout(&o).trim().is_empty(),
            "no partial result: {}",
            stdout(&o)
        );
        panic!(
            "documented behaviour is that Ballista re-runs the lost tasks, but the query \
             failed: {err}\nscheduler:\n{}",
            cluster.log("scheduler.log")
        );
    }
}

#[test]
fn a_dead_scheduler_is_a_clear_error_within_seconds() {
    let port = free_port();
    let started = Instant::now();
    let o = clipql_command()
        .args([
            "sql",
            "--cluster",
            &format!("df://127.0.0.1:{port}"),
            "-c",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(15));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the Ballista scheduler at df://127.0.0.1:"),
        "{err}"
    );
    assert!(
        err.contains("clipql scheduler --bind-host 127.0.0.1"),
        "{err}"
    );

    let o = clipql_command()
        .args(["sql", "--cluster", "127.0.0.1:50050", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("df://HOST:PORT"), "{}", stderr(&o));
}

/// `--model REPO_ID`: the scheduler and each executor pull the model into
/// their own HF cache at start, and the client sends the repo id, not its
/// own cache path. The rows are those of the same model from a folder.
#[test]
fn executors_pull_a_repo_id_at_start() {
    let hub = hub::StandInHub::start(&[("test/tiny-clip", &root().join("tests/fixtures/model"))]);
    let cluster =
        Cluster::start_with_model(1, &[("HF_ENDPOINT", hub.url.as_str())], "test/tiny-clip");
    for process in ["scheduler.log", "executor0.log"] {
        let snapshot = cluster
            .logs
            .path()
            .join(format!(
                "{process}.hf/hub/models--test--tiny-clip/snapshots"
            ))
            .join(hub::COMMIT);
        assert!(
            snapshot.join("onnx/vision_model.onnx").is_file(),
            "{process} pulled the model"
        );
    }
    let client_home = tempfile::tempdir().unwrap();
    let run = |model: &str, url: Option<&str>| -> Vec<serde_json::Value> {
        let mut cmd = clipql_command();
        cmd.env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", client_home.path())
            .args(["sql", "--model", model, "--format", "jsonl", "-c"])
            .arg(query("tests/fixtures/photos/"));
        if let Some(url) = url {
            cmd.args(["--cluster", url]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        jsonl(&o)
    };
    let local = run("tests/fixtures/model", None);
    assert_eq!(local.len(), 14);
    assert_same_rows(&local, &run("test/tiny-clip", Some(&cluster.url())));
}

/// No credential appears in any output: not in results, EXPLAIN, errors,
/// `--verbose`, or the scheduler's and executor's logs at debug level, on
/// success or on failure. The secrets are sentinels.
#[test]
fn secrets_never_appear_in_errors_logs_or_explain() {
    const TOKEN: &str = "SENTINEL-TOKEN-77e1";
    const WRONG: &str = "SENTINEL-WRONG-SECRET-3c9d";
    let photos = photos_with_a_bad_one();
    let server = s3::s3_server(photos.path());
    let settings = s3::settings(&server.endpoint, s3::S3_SECRET);
    let mut env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("RUST_LOG", "debug"));
    let cluster = Cluster::start(1, &env);
    let mut outputs = Vec::new();
    let mut run = |extra_env: &[(&str, &str)], args: &[&str]| {
        let o = clipql_command()
            .envs(env.iter().copied())
            .envs(extra_env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        // What the process printed (not its arguments, which hold secrets).
        outputs.push(format!("{}\n{}", stdout(&o), stderr(&o)));
        o.status.success()
    };
    let query = "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 's3://photos-bucket/photos/'; \
                 EXPLAIN VERBOSE SELECT name, clip_classify(image, ['a', 'b']) FROM images";
    let url = cluster.url();
    let local_sql = ["sql", "-c", query, "--model", "tests/fixtures/model"];
    let mut cluster_sql = local_sql.to_vec();
    cluster_sql.extend(["--cluster", &url]);
    // Success, locally and on the cluster.
    assert!(run(&[], &local_sql));
    assert!(run(&[], &cluster_sql));
    let classify = [
        "classify",
        "s3://photos-bucket/photos/",
        "--model",
        "tests/fixtures/model",
        "--labels",
        "cat",
        "--verbose",
    ];
    assert!(!run(&[], &classify), "the bad image makes it exit 3");
    let mut on_cluster = classify.to_vec();
    on_cluster.extend(["--cluster", &url]);
    assert!(!run(&[], &on_cluster));
    // Failure: a wrong secret and a session token, locally and on the cluster
    // (the executors keep the right ones, so that query's listing fails on
    // the client only if it lists).
    let bad = [
        ("AWS_SECRET_ACCESS_KEY", WRONG),
        ("AWS_SESSION_TOKEN", TOKEN),
    ];
    assert!(!run(&bad, &classify));
    run(&bad, &cluster_sql);
    // Table OPTIONS carrying them.
    let options = format!(
        "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://photos-bucket/photos/' \
         OPTIONS ('aws.access_key_id' '{}', 'aws.secret_access_key' '{WRONG}', \
         'aws.session_token' '{TOKEN}', 'aws.endpoint' '{}', 'aws.allow_http' 'true'); \
         EXPLAIN SELECT name FROM t; SELECT count(*) FROM t",
        s3::S3_KEY,
        server.endpoint
    );
    assert!(!run(&[], &["sql", "-c", &options]));
    assert!(!run(&[], &["sql", "-c", &options, "--cluster", &url]));

    outputs.push(cluster.log("scheduler.log"));
    outputs.push(cluster.log("executor0.log"));
    assert!(
        outputs[4].contains("403") || outputs[4].to_lowercase().contains("signature"),
        "the wrong secret was used: {}",
        outputs[4]
    );
    assert!(
        outputs[9].contains("Finished task") && outputs[9].contains("DEBUG"),
        "the executor read S3 and logged at debug level"
    );
    // The clients logged at debug level too (RUST_LOG reaches them), so
    // their half of the check reads real logs.
    for (i, client) in outputs[..8].iter().enumerate() {
        assert!(
            client.contains("DEBUG"),
            "client run {i} logged nothing:\n{client}"
        );
    }
    for text in &outputs {
        for secret in [s3::S3_SECRET, TOKEN, WRONG] {
            assert!(!text.contains(secret), "{secret} leaked in:\n{text}");
        }
    }
}

/// Issue 14, item 14: Ballista 55 has no authentication, so the scheduler
/// and executors listen on loopback unless told otherwise, and refuse any
/// other address without `--allow-unauthenticated`.
#[test]
fn cluster_processes_bind_loopback_and_refuse_open_binds_without_the_flag() {
    for process in ["scheduler", "executor"] {
        for host in ["0.0.0.0", "192.168.1.10", "::"] {
            let o = clipql_command()
                .args([
                    process,
                    "--bind-host",
                    host,
                    "--bind-port",
                    &free_port().to_string(),
                ])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(1), "{process} {host}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(err.contains("no authentication"), "{err}");
            assert!(err.contains("--allow-unauthenticated"), "{err}");
        }
    }
    // No --bind-host: the scheduler listens on 127.0.0.1 only (as the
    // kernel's socket table says), where Ballista alone would take 0.0.0.0.
    let port = free_port();
    let mut scheduler = clipql_command()
        .args(["scheduler", "--bind-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let listening = loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap()
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        let found: Vec<String> = table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let (addr, state) = (cols.get(1)?, cols.get(3)?);
                let (ip, p) = addr.rsplit_once(':')?;
                (u16::from_str_radix(p, 16).ok()? == port && *state == "0A").then(|| ip.to_string())
            })
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            scheduler.try_wait().unwrap().is_none(),
            "the scheduler exited"
        );
        assert!(started.elapsed().as_secs() < 30, "not listening");
        std::thread::sleep(Duration::from_millis(50));
    };
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
    assert_eq!(listening, ["0100007F"], "listening on {listening:?}");
}
