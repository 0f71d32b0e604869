//! The batch commands, `clipql classify` and `clipql embed`: one row out per
//! image in, written incrementally to Parquet, CSV or JSON Lines.
//!
//! The work is planned through DataFusion with the same functions as SQL,
//! e.g. for `classify`:
//!
//! ```sql
//! SELECT path, size, modified, scores,
//!        CASE WHEN scores IS NULL
//!             THEN coalesce(read_error, clip_image_error(image), 'no answer, …') END AS error
//! FROM (SELECT path, size, modified, image, read_error, clip_scores(image, [prompts]) AS scores
//!       FROM <IMAGE table>)
//! ```
//!
//! and each result batch is reshaped here (class names instead of prompts,
//! top-k) and appended to the output as it arrives. There is deliberately no
//! `ORDER BY`: a sort would hold every row until the last image, so memory
//! would grow with the collection and an interrupted run would have written
//! nothing. Files get rows in the order partitions finish them; the table
//! printed to stdout (already held in memory) is sorted by path.

mod query;
mod settings;
mod sources;
mod summary;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;

use crate::output::resume::{Previous, SETTINGS_KEY};
use crate::output::sink::Output;
use crate::session;
use query::{output_schema, plan_task};
use settings::job_settings;
use sources::register_sources;
pub use summary::Summary;
use summary::{Progress, breakdown, count_embed_failures};

/// What a batch command computes per image.
#[derive(Debug)]
pub enum Task {
    /// `clipql classify`.
    Classify {
        /// Class names (or full prompts when there is no template).
        labels: Vec<String>,
        /// `a photo of a {}`: wraps each class name into the text CLIP sees.
        /// Several: a prompt ensemble per class (`clip_prompts`).
        template: Vec<String>,
        /// Keep only the k best labels in `scores`.
        top_k: Option<usize>,
        /// `--threshold`: the score the answer must reach, and a `tags`
        /// column of every label that reaches it.
        threshold: Option<f32>,
        /// Add the image embedding to each row.
        with_embeddings: bool,
    },
    /// `clipql embed`: `path`, `embedding`, `error`.
    Embed,
}

/// A batch job (parsed by `main`).
#[derive(Debug)]
pub struct Job {
    /// Folders, globs or files.
    pub sources: Vec<String>,
    /// What to compute.
    pub task: Task,
    /// Model directory (resolved and pulled by `main`).
    pub model: PathBuf,
    /// `clip.model` as the cluster's processes resolve it (with `cluster`).
    pub model_name: String,
    /// A Ballista scheduler (`df://HOST:PORT`) to run on instead of locally.
    pub cluster: Option<String>,
    /// Which tower files to load.
    pub dtype: clip_runtime::Dtype,
    /// Output file; its extension picks the format. None: a table on stdout.
    pub output: Option<PathBuf>,
    /// The image column of Parquet sources (detected when absent).
    pub image_column: Option<String>,
    /// Stop at the first bad image instead of recording it.
    pub fail_on_error: bool,
    /// Images per vision-tower run.
    pub batch_size: Option<usize>,
    /// ONNX Runtime threads.
    pub threads: Option<usize>,
    /// No progress bar or summary.
    pub quiet: bool,
    /// Skip the images an earlier run over the same output finished.
    pub resume: bool,
    /// Decode large JPEGs at a reduced size (`clip.fast_jpeg`).
    pub fast_jpeg: bool,
    /// Any other session options (`clip.*`, `datafusion.*`), set last.
    pub set: Vec<(String, String)>,
    /// Print where the time went (the model's work, as `EXPLAIN ANALYZE`
    /// reports it) at the end.
    pub verbose: bool,
}

/// Runs the job. Returns how it went; an `Err` is fatal (no output written).
pub async fn run(job: Job) -> Result<Summary> {
    if job.sources.is_empty() {
        return Err(DataFusionError::Plan(
            "no SOURCE: give folders, globs or image files".into(),
        ));
    }
    let started = Instant::now();
    let (sql, mut reshaper, embedding_column) = plan_task(&job.task)?;

    let model = match job.cluster {
        Some(_) => job.model_name.clone(),
        None => job.model.to_string_lossy().into_owned(),
    };
    let mut options: Vec<(String, String)> = vec![
        ("clip.model".into(), model),
        ("clip.dtype".into(), job.dtype.to_string()),
        (
            "clip.on_error".into(),
            // `--on-error fail` is handled row by row (Summary::record_failure).
            "null".into(),
        ),
    ];
    if let Some(b) = job.batch_size {
        options.push(("clip.batch_size".into(), b.to_string()));
    }
    if let Some(t) = job.threads {
        options.push(("clip.intra_threads".into(), t.to_string()));
    }
    if job.fast_jpeg {
        options.push(("clip.fast_jpeg".into(), "true".into()));
    }
    options.extend(job.set.iter().cloned());
    let config = session::config(job.cluster.as_deref(), &options)?;
    let settings = job_settings(
        &job,
        &datafusion_clip::ClipOptions::from_config(config.options()),
    );
    let ctx = session::context(job.cluster.as_deref(), config).await?;
    let previous = match (&job.output, job.resume) {
        (Some(target), true) => Some(Previous::load(target, &settings)?),
        (None, true) => {
            return Err(DataFusionError::Plan(
                "--resume continues an --output file; give --output".into(),
            ));
        }
        (_, false) => None,
    };
    let show_progress = !job.quiet && std::io::stderr().is_terminal();
    let sources = register_sources(&ctx, &job, previous.as_ref(), show_progress).await?;
    let df = ctx.sql(&sql).await?;
    let plan = df.create_physical_plan().await?;
    let total = sources.rows.unwrap_or(0);
    let schema = match &mut reshaper {
        Some(r) => {
            let embedding = embedding_column.map(|i| plan.schema().field(i).clone());
            r.schema = output_schema(embedding.as_ref(), r.threshold.is_some());
            Arc::clone(&r.schema)
        }
        None => plan.schema(),
    };
    // The settings travel in the output's (and journal's) schema, for --resume.
    let schema = Arc::new(
        schema
            .as_ref()
            .clone()
            .with_metadata([(SETTINGS_KEY.to_string(), settings.clone())].into()),
    );
    if let Some(r) = &mut reshaper {
        r.schema = Arc::clone(&schema);
    }
    let mut progress = Progress {
        enabled: show_progress,
        total,
        done: 0,
        start: Instant::now(),
    };
    let mut output = Output::create(job.output.as_deref(), &schema)?;
    let mut summary = Summary {
        fail_fast: job.fail_on_error,
        ..Summary::default()
    };
    let planned = started.elapsed();
    let mut first_row = None;
    let mut stream = execute_stream(Arc::clone(&plan), ctx.task_ctx())?;
    let result: Result<()> = async {
        if let Some(previous) = &previous {
            summary.resumed = previous.copy(&settings, &sources.resumed, &schema, &mut |b| {
                output.write(b)
            })?;
        }
        while let Some(batch) = stream.next().await {
            let batch = match &reshaper {
                Some(r) => r.reshape(&batch?, &mut summary)?,
                None => {
                    let batch =
                        RecordBatch::try_new(Arc::clone(&schema), batch?.columns().to_vec())?;
                    count_embed_failures(&batch, &mut summary)?;
                    batch
                }
            };
            progress.update(batch.num_rows());
            if first_row.is_none() && batch.num_rows() > 0 {
                first_row = Some(started.elapsed());
            }
            output.write(batch)?;
        }
        Ok(())
    }
    .await;
    if progress.enabled {
        eprintln!();
    }
    match result {
        Ok(()) => output.finish(&schema)?,
        Err(e) => {
            output.abandon();
            return Err(e);
        }
    }
    if !job.quiet && std::io::stderr().is_terminal() {
        let secs = progress.start.elapsed().as_secs_f64();
        let total = summary.classified + summary.failures();
        let verb = match job.task {
            Task::Classify { .. } => "classified",
            Task::Embed => "embedded",
        };
        eprintln!(
            "{verb} {} of {total} images ({} failed) in {secs:.1}s ({:.1} img/s)",
            summary.classified,
            summary.failures(),
            total as f64 / secs.max(1e-3)
        );
        if summary.resumed > 0 {
            eprintln!(
                "  {} more from the previous run (--resume)",
                summary.resumed
            );
        }
        if let Task::Classify {
            threshold: Some(t), ..
        } = job.task
            && summary.abstained > 0
        {
            eprintln!(
                "  {} with no label reaching --threshold {t} (label NULL: none of these)",
                summary.abstained
            );
        }
        for (reason, n) in &summary.failed {
            eprintln!("  {n} × {reason}");
        }
    }
    if job.verbose && job.cluster.is_some() {
        eprintln!(
            "--verbose: the model's counters are local-mode only; on a cluster, the \
             scheduler's job view has each stage's metrics (GET /api/job/JOB_ID)"
        );
    } else if job.verbose {
        let work = datafusion_clip::ClipMetricsExec::total(plan.as_ref());
        eprint!(
            "{}",
            breakdown(
                &work,
                planned,
                first_row,
                started.elapsed(),
                progress.done as u64
            )
        );
    }
    Ok(summary)
}
