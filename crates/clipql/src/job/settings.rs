//! A job's settings that decide its rows: what `--resume` must match.

use std::path::Path;

use super::{Job, Task};

/// Which version of the model's files a run used: each file's size and
/// modification time, so a model folder whose files were replaced in place
/// is another model (a hub snapshot's folder already names its commit).
fn model_files(model: &Path, dtype: clip_runtime::Dtype) -> serde_json::Value {
    let files = [
        dtype.file("vision_model"),
        dtype.file("text_model"),
        // The combined graphs the trained logit_scale is measured from.
        dtype.file("model"),
        clip_runtime::Dtype::Fp32.file("model"),
        "tokenizer.json".into(),
        // Its pad token decides the text tower's input.
        "tokenizer_config.json".into(),
        "preprocessor_config.json".into(),
        "config.json".into(),
    ];
    files
        .iter()
        .map(|name| {
            let stamp = std::fs::metadata(model.join(name)).ok().map(|m| {
                let modified = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}:{modified}", m.len())
            });
            (name.clone(), stamp.into())
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The job's settings that decide its rows: what `--resume` must match.
/// `options` are the session's `clip.*` options after every flag and
/// `--set` is applied, so a `--set` that changes results changes these too.
pub(super) fn job_settings(job: &Job, options: &datafusion_clip::ClipOptions) -> String {
    let task = match &job.task {
        Task::Classify {
            labels,
            template,
            top_k,
            threshold,
            with_embeddings,
        } => {
            let mut task = serde_json::json!({
                "command": "classify",
                "labels": labels,
                // One template as before, so older outputs still resume.
                "template": match template.as_slice() {
                    [] => serde_json::Value::Null,
                    [one] => one.as_str().into(),
                    many => many.into(),
                },
                "top_k": top_k,
                "with_embeddings": with_embeddings,
            });
            // Only when given, so that outputs of runs before --threshold
            // existed still resume.
            if let Some(t) = threshold {
                task["threshold"] = (*t).into();
            }
            task
        }
        Task::Embed => serde_json::json!({ "command": "embed" }),
    };
    serde_json::json!({
        "task": task,
        "model": options.model,
        "model_files": model_files(&job.model, options.dtype),
        "dtype": options.dtype.to_string(),
        "fast_jpeg": options.fast_jpeg,
        "logit_scale": options.logit_scale,
        "max_image_pixels": options.max_image_pixels,
        "max_image_bytes": options.max_image_bytes,
    })
    .to_string()
}
