//! What a run tells its user: the progress line, the summary of how it
//! went, and `--verbose`'s breakdown of where the time went.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::error::{DataFusionError, Result};

/// How a finished job went.
#[derive(Debug, Default)]
pub struct Summary {
    /// Images with a label.
    pub classified: u64,
    /// Of those, images whose best score is under `--threshold` (their
    /// `label` is NULL, with no error).
    pub abstained: u64,
    /// Rows copied from an earlier run (`--resume`).
    pub resumed: u64,
    /// Images without one, by reason.
    pub failed: BTreeMap<String, u64>,
    /// `--on-error fail`: the first failed image stops the job, naming its
    /// file. (The session runs with `clip.on_error = 'null'`, so that the
    /// failure arrives as a row, with its path, instead of as a function
    /// error that knows only the image's bytes.)
    pub(super) fail_fast: bool,
}

impl Summary {
    /// Number of failed images.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Counts a failed row under the reason in its `error` column, or with
    /// `fail_fast` stops with an error naming the row's file (`path`, the
    /// batch's first column).
    pub(super) fn record_failure(
        &mut self,
        batch: &RecordBatch,
        errors: &StringArray,
        row: usize,
    ) -> Result<()> {
        let reason = if errors.is_null(row) {
            "unknown error"
        } else {
            errors.value(row)
        };
        if self.fail_fast {
            let path =
                clip_runtime::printable_reason(&array_value_to_string(batch.column(0), row)?);
            return Err(DataFusionError::Execution(format!(
                "{path}: {reason}. Stopped by --on-error fail; without it, such an image gets \
                 a NULL label and its reason in `error`, and the job goes on"
            )));
        }
        *self.failed.entry(reason.to_string()).or_default() += 1;
        Ok(())
    }
}

/// A one-line progress display on stderr.
pub(super) struct Progress {
    pub(super) enabled: bool,
    pub(super) total: usize,
    pub(super) done: usize,
    pub(super) start: Instant,
}

impl Progress {
    pub(super) fn update(&mut self, rows: usize) {
        self.done += rows;
        if !self.enabled {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(self.done)) as f64 / rate
        } else {
            0.0
        };
        let width = 30;
        let filled = (width * self.done).checked_div(self.total).unwrap_or(width);
        eprint!(
            "\r[{}{}] {}/{} images, {:.1} img/s, ETA {:.0}s   ",
            "#".repeat(filled),
            "-".repeat(width - filled.min(width)),
            self.done,
            self.total,
            rate,
            eta
        );
        let _ = std::io::stderr().flush();
    }
}

/// `embed` rows pass through; only the failures are counted.
pub(super) fn count_embed_failures(batch: &RecordBatch, summary: &mut Summary) -> Result<()> {
    let embeddings = batch.column(3);
    let errors = batch.column(4).as_string::<i32>();
    for row in 0..batch.num_rows() {
        if embeddings.is_null(row) {
            summary.record_failure(batch, errors, row)?;
        } else {
            summary.classified += 1;
        }
    }
    Ok(())
}

/// `--verbose`: where the time went.
pub(super) fn breakdown(
    work: &clip_runtime::ModelStats,
    planned: std::time::Duration,
    first_row: Option<std::time::Duration>,
    elapsed: std::time::Duration,
    rows: u64,
) -> String {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let per = |d: std::time::Duration, n: u64| secs(d) * 1e3 / n.max(1) as f64;
    let first = first_row.map_or("no rows".to_string(), |d| {
        format!("first row after {:.2}s", secs(d))
    });
    format!(
        "run: planned in {:.2}s, {first} (model load included), {rows} rows in {:.2}s \
         ({:.1} rows/s)\n\
         decode + preprocess: {} images, {} failed, {:.2}s ({:.1} ms/image, summed over threads)\n\
         vision tower: {} batches, {} images, {:.2}s ({:.1} ms/image)\n\
         text tower: {} runs, {} texts, {:.2}s\n\
         caches: {} image hits, {} text hits\n\
         {}",
        secs(planned),
        secs(elapsed),
        rows as f64 / secs(elapsed).max(1e-3),
        work.images_decoded + work.decode_errors,
        work.decode_errors,
        secs(work.decode_time),
        per(work.decode_time, work.images_decoded + work.decode_errors),
        work.vision_runs,
        work.images_embedded,
        secs(work.vision_time),
        per(work.vision_time, work.images_embedded),
        work.text_runs,
        work.texts_embedded,
        secs(work.text_time),
        work.image_cache_hits,
        work.text_cache_hits,
        peak_rss().map_or(String::new(), |kb| format!(
            "peak RSS: {:.0} MB\n",
            kb as f64 / 1024.0
        )),
    )
}

/// This process's peak resident set (`VmHWM`, in KiB), where Linux says it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
