//! Many queries at once in one process, sharing one model through the
//! library API, as a platform team's server would run them.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// Eight different queries: other labels, other functions, per-row labels,
/// the bad-input corpus.
fn queries() -> Vec<String> {
    let labels = [
        "['a photo of a cat', 'a photo of a dog']",
        "['a rocket', 'an astronaut', 'coffee']",
        "['coins', 'a page of text', 'a clock', 'a horse']",
    ];
    let mut q: Vec<String> = labels
        .iter()
        .map(|l| {
            format!(
                "SELECT name, clip_classify(image, {l}) AS label, clip_scores(image, {l}) AS scores \
                 FROM photos ORDER BY name"
            )
        })
        .collect();
    q.push("SELECT name, clip_image_embedding(image) AS e FROM photos ORDER BY name".into());
    q.push(
        "SELECT name, clip_classify(image, CASE WHEN size % 2 = 0 THEN ['even', 'odd'] \
         ELSE ['a', 'b', 'c'] END) AS label FROM photos ORDER BY name"
            .into(),
    );
    q.push(
        "SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) AS label, \
         clip_image_error(image) AS error FROM corpus ORDER BY name"
            .into(),
    );
    q.push("SELECT clip_text_embedding('a photo of a cat') AS t".into());
    q.push("SELECT count(*), count(clip_classify(image, ['x', 'y'])) FROM corpus".into());
    q
}

async fn run(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Peak resident set of this process, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_queries_match_sequential_runs() {
    let config = datafusion_clip::session_config()
        .set_str("clip.model", &format!("{ROOT}/model"))
        .set_str("clip.batch_size", "4");
    let ctx = SessionContext::new_with_config(config);
    datafusion_clip::register_all(&ctx).unwrap();
    for (name, folder) in [("photos", "photos"), ("corpus", "corpus")] {
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE {name} STORED AS IMAGE LOCATION '{ROOT}/{folder}/'"
        ))
        .await
        .unwrap();
    }
    let queries = queries();
    assert_eq!(queries.len(), 8);

    let mut sequential = Vec::new();
    for q in &queries {
        sequential.push(run(&ctx, q).await);
    }
    let after_sequential = peak_rss_mib();

    // All eight at once, three times over; a deadlock would hit the timeout.
    for round in 0..3 {
        let tasks: Vec<_> = queries
            .iter()
            .cloned()
            .map(|q| {
                let ctx = ctx.clone();
                tokio::spawn(async move { run(&ctx, &q).await })
            })
            .collect();
        let results =
            tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: 8 concurrent queries still running after 300 s")
                });
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(
                result.unwrap(),
                sequential[i],
                "round {round}, query {i}: {}",
                queries[i]
            );
        }
    }
    // Concurrency shares the model rather than loading it per query: the
    // peak grows by batches in flight, not by models.
    let growth = peak_rss_mib() - after_sequential;
    assert!(
        growth < 256.0,
        "peak RSS grew by {growth:.0} MiB under 8 concurrent queries"
    );
}
