//! `clipql classify` and `clipql embed`: flags to a `job::Job`, then the
//! job's exit code.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

use crate::cli::{BatchArgs, ClassifyArgs};
use crate::job;
use crate::{EXIT_OK, EXIT_SOME_FAILED, cluster_model_name, model_dir};
use datafusion_clip::OnError;

fn read_labels(args: &ClassifyArgs) -> Result<Vec<String>, DataFusionError> {
    let raw: Vec<String> = match &args.labels_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| {
                DataFusionError::IoError(e).context(format!("reading {}", file.display()))
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => args.labels.clone(),
    };
    let mut seen = std::collections::HashSet::new();
    Ok(raw.into_iter().filter(|l| seen.insert(l.clone())).collect())
}

pub(crate) async fn run_batch(
    mut batch: BatchArgs,
    task: job::Task,
    output: Option<PathBuf>,
) -> Result<u8, DataFusionError> {
    // `--set clip.model=M` / `clip.dtype=D` are `--model M` / `--dtype D`
    // (applied last, as every --set is): the model is resolved, pulled and
    // recorded for --resume like one given by --model.
    let mut rest = Vec::with_capacity(batch.set.len());
    for (key, value) in std::mem::take(&mut batch.set) {
        match key.as_str() {
            "clip.model" => batch.model = Some(value),
            "clip.dtype" => {
                batch.dtype = value
                    .parse()
                    .map_err(|e| DataFusionError::Plan(format!("clip.dtype = {value}: {e}")))?
            }
            _ => rest.push((key, value)),
        }
    }
    batch.set = rest;
    let model = model_dir(batch.model.as_deref(), batch.dtype, batch.quiet).await?;
    let model_name = cluster_model_name(batch.model.as_deref(), &model);
    let job = job::Job {
        cluster: batch.cluster,
        model_name,
        sources: batch.sources,
        task,
        model,
        dtype: batch.dtype,
        output,
        image_column: batch.image_column,
        fail_on_error: batch.on_error == OnError::Fail,
        batch_size: batch.batch_size,
        threads: batch.threads,
        quiet: batch.quiet,
        resume: batch.resume,
        verbose: batch.verbose,
        fast_jpeg: batch.fast_jpeg,
        set: batch.set,
    };
    let summary = job::run(job).await?;
    Ok(if summary.failures() > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

pub(crate) async fn run_classify(args: ClassifyArgs) -> Result<u8, DataFusionError> {
    let task = job::Task::Classify {
        labels: read_labels(&args)?,
        template: args.template,
        top_k: args.top_k,
        threshold: args.threshold,
        with_embeddings: args.with_embeddings,
    };
    run_batch(args.batch, task, args.output).await
}
