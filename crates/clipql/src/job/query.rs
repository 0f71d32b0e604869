//! The query a task runs, and how its batches become output rows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

use super::Task;
use super::summary::Summary;

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The output schema: with `tags` (`--threshold`) after `error`.
pub(super) fn output_schema(embedding: Option<&Field>, tags: bool) -> SchemaRef {
    let mut fields = key_fields();
    fields.extend([
        Field::new("label", DataType::Utf8, true),
        Field::new("score", DataType::Float32, true),
        Field::new("scores", datafusion_clip::scores_type(), true),
        Field::new("error", DataType::Utf8, true),
    ]);
    if tags {
        fields.push(Field::new("tags", datafusion_clip::utf8_list_type(), true));
    }
    if let Some(e) = embedding {
        fields.push(e.clone().with_name("embedding"));
    }
    Arc::new(Schema::new(fields))
}

/// `path`, `size`, `modified`: which version of which file a row is about
/// (`size` and `modified` are NULL for rows from Parquet sources).
fn key_fields() -> Vec<Field> {
    vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, true),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]
}

pub(super) struct Reshaper {
    /// Prompt → class name, when `--template` made the prompts; without
    /// one, `clip_scores`'s list is the output as it is.
    names: Option<std::collections::HashMap<String, String>>,
    /// `--threshold`: the batch has `tags` after `error`, and a label under
    /// it is no answer.
    pub(super) threshold: Option<f32>,
    pub(super) schema: SchemaRef,
}

impl Reshaper {
    /// `path, size, modified, scores (over prompts, top-k already applied
    /// by clip_scores), error [, tags] [, embedding]` → the output batch.
    pub(super) fn reshape(
        &self,
        batch: &RecordBatch,
        summary: &mut Summary,
    ) -> Result<RecordBatch> {
        let scores = batch.column(3).as_list::<i32>();
        let errors = batch.column(4).as_string::<i32>();
        let mut score: Vec<Option<f32>> = Vec::with_capacity(batch.num_rows());
        let entries = scores.values().as_struct();
        let prompts = entries.column(0).as_string::<i32>();
        let probs = entries.column(1).as_primitive::<Float32Type>();
        let name_of = |prompt: &'_ str| match &self.names {
            Some(names) => names.get(prompt).map_or(prompt, String::as_str).to_string(),
            None => prompt.to_string(),
        };
        let mut label: Vec<Option<String>> = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if scores.is_null(row) {
                summary.record_failure(batch, errors, row)?;
                label.push(None);
                score.push(None);
                continue;
            }
            summary.classified += 1;
            // clip_scores lists a row's most likely label first.
            let first = scores.value_offsets()[row] as usize;
            let has_any = scores.value_length(row) > 0;
            let answers = has_any && self.threshold.is_none_or(|t| probs.value(first) >= t);
            if has_any && !answers {
                summary.abstained += 1;
            }
            label.push(answers.then(|| name_of(prompts.value(first))));
            score.push(has_any.then(|| probs.value(first)));
        }
        let scores_out = match &self.names {
            None => Arc::clone(batch.column(3)),
            Some(_) => {
                let renamed: Vec<Option<Vec<(String, f32)>>> = (0..batch.num_rows())
                    .map(|row| {
                        (!scores.is_null(row)).then(|| {
                            let start = scores.value_offsets()[row] as usize;
                            let end = scores.value_offsets()[row + 1] as usize;
                            (start..end)
                                .map(|i| (name_of(prompts.value(i)), probs.value(i)))
                                .collect()
                        })
                    })
                    .collect();
                datafusion_clip::scores_array(
                    renamed
                        .iter()
                        .map(|r| r.as_ref().map(|r| r.iter().map(|(l, s)| (l.as_str(), *s)))),
                )?
            }
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::clone(batch.column(0)),
            Arc::clone(batch.column(1)),
            Arc::clone(batch.column(2)),
            Arc::new(StringArray::from(label)),
            Arc::new(Float32Array::from(score)),
            scores_out,
            Arc::clone(batch.column(4)),
        ];
        let mut rest = 5;
        if self.threshold.is_some() {
            columns.push(self.tag_names(batch.column(rest))?);
            rest += 1;
        }
        if batch.num_columns() > rest {
            columns.push(Arc::clone(batch.column(rest)));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// `clip_tags`' prompts as the class names they were made from.
    fn tag_names(&self, tags: &ArrayRef) -> Result<ArrayRef> {
        let Some(names) = &self.names else {
            return Ok(Arc::clone(tags));
        };
        let tags = tags.as_list::<i32>();
        let values = tags.values().as_string::<i32>();
        let rows: Vec<Option<Vec<&str>>> = (0..tags.len())
            .map(|row| {
                (!tags.is_null(row)).then(|| {
                    let (start, end) = (
                        tags.value_offsets()[row] as usize,
                        tags.value_offsets()[row + 1] as usize,
                    );
                    (start..end)
                        .map(|i| {
                            let prompt = values.value(i);
                            names.get(prompt).map_or(prompt, String::as_str)
                        })
                        .collect()
                })
            })
            .collect();
        datafusion_clip::utf8_lists(rows)
    }
}

/// A row's `error` when it has no answer: why its file could not be read
/// (the IMAGE table's `read_error`), or why its image is unusable, from the
/// path the model's input takes (`clip_image_error`). Should that find
/// nothing, the row still says it has no answer, so that no NULL answer is
/// ever without a reason (and `--resume` retries it either way).
const REASON: &str = "coalesce(read_error, clip_image_error(image), \
    'no answer, and no reason was found for this image (a ClipQL bug: please report it)')";

/// The query for a task; for `classify`, also how to reshape its batches
/// and which result column holds the embedding.
pub(super) fn plan_task(task: &Task) -> Result<(String, Option<Reshaper>, Option<usize>)> {
    let Task::Classify {
        labels,
        template,
        top_k,
        threshold,
        with_embeddings,
    } = task
    else {
        let sql = format!(
            "SELECT path, size, modified, embedding, \
                   CASE WHEN embedding IS NULL THEN {REASON} END AS error \
                   FROM (SELECT path, size, modified, image, read_error, \
                   clip_image_embedding(image) AS embedding \
                   FROM images)"
        );
        return Ok((sql, None, None));
    };
    if labels.is_empty() {
        return Err(DataFusionError::Plan(
            "no labels: pass --labels 'a photo of a cat' 'a photo of a dog' or --labels-file FILE"
                .into(),
        ));
    }
    if let Some(t) = template.iter().find(|t| !t.contains("{}")) {
        return Err(DataFusionError::Plan(format!(
            "--template {t:?} has no {{}} for the class name; write e.g. 'a photo of a {{}}'"
        )));
    }
    let sql_list = |items: &[String]| {
        format!(
            "[{}]",
            items
                .iter()
                .map(|p| sql_string(p))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let prompts: Vec<String> = match template.as_slice() {
        [t] => labels.iter().map(|l| t.replace("{}", l)).collect(),
        _ => labels.clone(),
    };
    // Several templates: a prompt ensemble per class, named by the class.
    let list = match template.len() {
        0 | 1 => sql_list(&prompts),
        _ => format!("clip_prompts({}, {})", sql_list(labels), sql_list(template)),
    };
    let embedding = if *with_embeddings {
        ", clip_image_embedding(image) AS embedding"
    } else {
        ""
    };
    let k = top_k.map_or_else(String::new, |k| format!(", {k}"));
    // Over every label, whatever --top-k keeps in `scores`.
    let tags = threshold.map_or_else(String::new, |t| {
        format!(", clip_tags(image, {list}, {t}) AS tags")
    });
    let sql = format!(
        "SELECT path, size, modified, scores, \
         CASE WHEN scores IS NULL THEN {REASON} END AS error{tags}{embedding} \
         FROM (SELECT path, size, modified, image, read_error, clip_scores(image, {list}{k}) AS scores \
         FROM images)"
    );
    let reshaper = Reshaper {
        names: (template.len() == 1)
            .then(|| prompts.into_iter().zip(labels.iter().cloned()).collect()),
        threshold: *threshold,
        schema: output_schema(None, threshold.is_some()),
    };
    let embedding_column = 5 + usize::from(threshold.is_some());
    Ok((
        sql,
        Some(reshaper),
        with_embeddings.then_some(embedding_column),
    ))
}
