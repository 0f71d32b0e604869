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

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::writer::{LineDelimited, LineDelimitedWriter, WriterBuilder};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use datafusion_clip::{FileKey, ImageScanExec, ImageTable};
use futures::StreamExt;

use crate::resume::{Journal, Previous, SETTINGS_KEY};

/// What a batch command computes per image.
#[derive(Debug)]
pub enum Task {
    /// `clipql classify`.
    Classify {
        /// Class names (or full prompts when there is no template).
        labels: Vec<String>,
        /// `a photo of a {}`: wraps each class name into the text CLIP sees.
        template: Option<String>,
        /// Keep only the k best labels in `scores`.
        top_k: Option<usize>,
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

/// How a finished job went.
#[derive(Debug, Default)]
pub struct Summary {
    /// Images with a label.
    pub classified: u64,
    /// Rows copied from an earlier run (`--resume`).
    pub resumed: u64,
    /// Images without one, by reason.
    pub failed: BTreeMap<String, u64>,
    /// `--on-error fail`: the first failed image stops the job, naming its
    /// file. (The session runs with `clip.on_error = 'null'`, so that the
    /// failure arrives as a row, with its path, instead of as a function
    /// error that knows only the image's bytes.)
    fail_fast: bool,
}

impl Summary {
    /// Number of failed images.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Counts a failed row under the reason in its `error` column, or with
    /// `fail_fast` stops with an error naming the row's file (`path`, the
    /// batch's first column).
    fn record_failure(
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    Jsonl,
}

impl Format {
    fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "jsonl" | "ndjson" => Ok(Self::Jsonl),
            _ => Err(DataFusionError::Plan(format!(
                "--output {}: the extension picks the format; use .parquet, .csv or .jsonl",
                path.display()
            ))),
        }
    }
}

/// The output file, written under a temporary name and renamed into place
/// only when complete, so a crash never leaves a half file that looks whole.
enum Sink {
    Parquet(ArrowWriter<File>),
    /// The writer, and whether the header is written yet.
    Csv(BufWriter<File>, bool),
    Jsonl(LineDelimitedWriter<BufWriter<File>>),
    Stdout(Vec<RecordBatch>),
}

struct Output {
    sink: Sink,
    temp: Option<PathBuf>,
    target: Option<PathBuf>,
    journal: Option<Journal>,
}

impl Output {
    fn create(target: Option<&Path>, schema: &SchemaRef) -> Result<Self> {
        let Some(target) = target else {
            return Ok(Self {
                sink: Sink::Stdout(Vec::new()),
                temp: None,
                target: None,
                journal: None,
            });
        };
        let format = Format::from_path(target)?;
        let (file, temp) =
            crate::resume::create_beside(target, ".partial", crate::resume::Access::Umask)?;
        let sink = match format {
            Format::Parquet => Sink::Parquet(ArrowWriter::try_new(file, Arc::clone(schema), None)?),
            Format::Csv => Sink::Csv(BufWriter::new(file), false),
            Format::Jsonl => Sink::Jsonl(
                WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(BufWriter::new(file)),
            ),
        };
        Ok(Self {
            sink,
            temp: Some(temp),
            target: Some(target.to_path_buf()),
            journal: Some(Journal::create(target, schema)?),
        })
    }

    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if let Some(journal) = &mut self.journal {
            journal.append(&batch)?;
        }
        match &mut self.sink {
            Sink::Parquet(w) => w.write(&batch)?,
            Sink::Csv(file, header_written) => {
                crate::output::write_csv(file, &[batch], !*header_written)?;
                *header_written = true;
            }
            Sink::Jsonl(w) => w.write(&batch)?,
            Sink::Stdout(batches) => batches.push(batch),
        }
        Ok(())
    }

    fn finish(self, schema: &SchemaRef) -> Result<()> {
        match self.sink {
            Sink::Parquet(w) => w.into_inner()?.sync_all()?,
            Sink::Csv(mut out, header_written) => {
                if !header_written {
                    crate::output::write_csv(
                        &mut out,
                        &[RecordBatch::new_empty(Arc::clone(schema))],
                        true,
                    )?;
                }
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            Sink::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner()
                    .into_inner()
                    .map_err(|e| e.into_error())?
                    .sync_all()?;
            }
            Sink::Stdout(batches) => {
                let all = concat_batches(schema, &batches)?;
                let order = sort_to_indices(all.column(0), None, None)?;
                let sorted = take_record_batch(&all, &order)?;
                let mut stdout = std::io::stdout().lock();
                crate::output::write(&mut stdout, &[sorted], crate::cli::Format::Table)?;
            }
        }
        if let (Some(temp), Some(target)) = (self.temp, self.target) {
            std::fs::rename(&temp, &target).map_err(|e| {
                DataFusionError::IoError(e).context(format!(
                    "moving the finished output to {}",
                    target.display()
                ))
            })?;
            crate::resume::remove_orphan_partials(&target);
            if let Some(journal) = self.journal {
                journal.remove_all(&target);
            }
        }
        Ok(())
    }

    /// Removes the partial file after a failure. The journal stays, for
    /// `--resume`.
    fn abandon(self) {
        if let Some(temp) = self.temp {
            drop(self.sink);
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The output schema.
fn output_schema(embedding: Option<&Field>) -> SchemaRef {
    let mut fields = key_fields();
    fields.extend([
        Field::new("label", DataType::Utf8, true),
        Field::new("score", DataType::Float32, true),
        Field::new("scores", datafusion_clip::scores_type(), true),
        Field::new("error", DataType::Utf8, true),
    ]);
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

/// Total files the plan will read.
fn count_files(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .downcast_ref::<ImageScanExec>()
        .map_or(0, ImageScanExec::file_count);
    own + plan.children().into_iter().map(count_files).sum::<usize>()
}

struct Reshaper {
    /// Prompt → class name, when `--template` made the prompts; without
    /// one, `clip_scores`'s list is the output as it is.
    names: Option<std::collections::HashMap<String, String>>,
    schema: SchemaRef,
}

impl Reshaper {
    /// `path, size, modified, scores (over prompts, top-k already applied
    /// by clip_scores), error [, embedding]` → the output batch.
    fn reshape(&self, batch: &RecordBatch, summary: &mut Summary) -> Result<RecordBatch> {
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
            label.push(has_any.then(|| name_of(prompts.value(first))));
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
        if batch.num_columns() > 5 {
            columns.push(Arc::clone(batch.column(5)));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// A one-line progress display on stderr.
struct Progress {
    enabled: bool,
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    fn update(&mut self, rows: usize) {
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
fn count_embed_failures(batch: &RecordBatch, summary: &mut Summary) -> Result<()> {
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

fn is_parquet_source(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.ends_with(".parquet") || lower.ends_with(".parquet/")
}

/// Registers `images (path, image, ...)` over the sources: an IMAGE table for
/// image files, or a view over Parquet with an image column. Returns the row
/// count for Parquet (from its metadata), for progress.
/// What [`register_sources`] found.
struct Sources {
    /// The row count of Parquet sources (from their metadata), for progress.
    parquet_rows: Option<usize>,
    /// Files the previous run finished that are still there (`--resume`).
    resumed: HashSet<FileKey>,
}

async fn register_sources(
    ctx: &SessionContext,
    job: &Job,
    previous: Option<&Previous>,
) -> Result<Sources> {
    let parquet = job.image_column.is_some() || job.sources.iter().any(|s| is_parquet_source(s));
    if job.image_column.is_none()
        && let (Some(p), Some(i)) = (
            job.sources.iter().find(|s| is_parquet_source(s)),
            job.sources.iter().find(|s| !is_parquet_source(s)),
        )
    {
        // Never read an image folder as Parquet (it would add no rows).
        return Err(DataFusionError::Plan(format!(
            "the sources mix Parquet ({p}) and image files ({i}); one run reads one kind: \
             run the Parquet sources and the image sources as two jobs, each with its own \
             --output"
        )));
    }
    if !parquet {
        let mut table = ImageTable::try_new(&job.sources, Vec::new(), Vec::new())?;
        let mut resumed = HashSet::new();
        if let Some(previous) = previous {
            resumed = table
                .file_keys(&ctx.state())
                .await?
                .into_iter()
                .filter(|k| previous.done.contains(k))
                .collect();
            table = table.with_skip(resumed.clone());
        }
        ctx.register_table("images", Arc::new(table))?;
        return Ok(Sources {
            parquet_rows: None,
            resumed,
        });
    }
    if previous.is_some() {
        return Err(DataFusionError::Plan(
            "--resume works over image files, keyed by path, size and modification time; \
             rows of Parquet sources have no such identity. Drop --resume"
                .into(),
        ));
    }
    let urls = job
        .sources
        .iter()
        .map(|s| datafusion_clip::parse_location(s))
        .collect::<Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    // The schema of every source, not only the first (which is all that
    // ListingTableConfig::infer_schema reads), merged.
    let mut schemas = Vec::with_capacity(urls.len());
    for (url, source) in urls.iter().zip(&job.sources) {
        let schema = options
            .infer_schema(&ctx.state(), url)
            .await
            .map_err(|e| e.context(format!("reading the Parquet schema of {source}")))?;
        schemas.push(schema.as_ref().clone());
    }
    let schema = Schema::try_merge(schemas).map_err(|e| {
        DataFusionError::Plan(format!(
            "the Parquet sources' schemas disagree ({e}); give sources with one schema, \
             or run them as separate jobs"
        ))
    })?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(Arc::new(schema));
    ctx.register_table("source", Arc::new(ListingTable::try_new(config)?))?;
    let schema = ctx.table("source").await?.schema().as_arrow().clone();
    let (image, path) = image_columns(&schema, job.image_column.as_deref())?;
    ctx.sql(&format!(
        "CREATE VIEW images AS SELECT arrow_cast({path}, 'Utf8') AS path, \
         arrow_cast(NULL, 'UInt64') AS size, arrow_cast(NULL, 'Timestamp(µs, \"UTC\")') AS modified, \
         {image} AS image, arrow_cast(NULL, 'Utf8') AS read_error FROM source"
    ))
    .await?;
    let batches = ctx
        .sql("SELECT count(*) FROM source")
        .await?
        .collect()
        .await?;
    let rows = batches
        .first()
        .map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .unwrap_or(0);
    Ok(Sources {
        parquet_rows: Some(rows as usize),
        resumed: HashSet::new(),
    })
}

fn is_binary(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQL expressions for the image bytes and a row's path in a Parquet
/// source: a binary column, or the HF-datasets struct `{bytes, path}`; the
/// path comes from that struct, a `path`-like string column, or the row
/// number.
fn image_columns(schema: &Schema, requested: Option<&str>) -> Result<(String, String)> {
    let candidates: Vec<&Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref())
        .filter(|f| match f.data_type() {
            DataType::Struct(children) => children
                .iter()
                .any(|c| c.name() == "bytes" && is_binary(c.data_type())),
            dt => is_binary(dt),
        })
        .collect();
    let names = || {
        candidates
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let field = match requested {
        Some(name) => match candidates.iter().find(|f| f.name() == name) {
            Some(f) => *f,
            None if schema.field_with_name(name).is_ok() => {
                return Err(DataFusionError::Plan(format!(
                    "--image-column {name} is not binary image bytes or a {{bytes, path}} struct; \
                     image columns here: [{}]",
                    names()
                )));
            }
            None => {
                return Err(DataFusionError::Plan(format!(
                    "--image-column {name}: no such column; image columns here: [{}]",
                    names()
                )));
            }
        },
        None => match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(DataFusionError::Plan(
                    "no image column in the Parquet source: expected a Binary/BinaryView column or an \
                     HF-datasets {bytes, path} struct"
                        .into(),
                ));
            }
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "several image columns [{}]; choose one with --image-column",
                    names()
                )));
            }
        },
    };
    let col = quote_ident(field.name());
    let row_path = "'row ' || CAST(row_number() OVER () AS VARCHAR)";
    let path_column = ["path", "file_name", "filename", "image_path", "name", "url"]
        .into_iter()
        .find(|n| {
            schema.field_with_name(n).is_ok_and(|f| {
                matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
        })
        .map(quote_ident);
    Ok(match field.data_type() {
        DataType::Struct(children) => {
            let struct_path = children
                .iter()
                .any(|c| c.name() == "path")
                .then(|| format!("{col}['path']"));
            let path = match (struct_path, path_column) {
                (Some(p), _) => format!("coalesce(CAST({p} AS VARCHAR), {row_path})"),
                (None, Some(p)) => format!("CAST({p} AS VARCHAR)"),
                (None, None) => row_path.to_string(),
            };
            (format!("{col}['bytes']"), path)
        }
        _ => (
            col,
            path_column.map_or_else(|| row_path.to_string(), |p| format!("CAST({p} AS VARCHAR)")),
        ),
    })
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
fn plan_task(task: &Task) -> Result<(String, Option<Reshaper>, Option<usize>)> {
    let Task::Classify {
        labels,
        template,
        top_k,
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
    let prompts: Vec<String> = match template {
        Some(t) if !t.contains("{}") => {
            return Err(DataFusionError::Plan(format!(
                "--template {t:?} has no {{}} for the class name; write e.g. 'a photo of a {{}}'"
            )));
        }
        Some(t) => labels.iter().map(|l| t.replace("{}", l)).collect(),
        None => labels.clone(),
    };
    let list = format!(
        "[{}]",
        prompts
            .iter()
            .map(|p| sql_string(p))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let embedding = if *with_embeddings {
        ", clip_image_embedding(image) AS embedding"
    } else {
        ""
    };
    let k = top_k.map_or_else(String::new, |k| format!(", {k}"));
    let sql = format!(
        "SELECT path, size, modified, scores, \
         CASE WHEN scores IS NULL THEN {REASON} END AS error{embedding} \
         FROM (SELECT path, size, modified, image, read_error, clip_scores(image, {list}{k}) AS scores \
         FROM images)"
    );
    let reshaper = Reshaper {
        names: template
            .is_some()
            .then(|| prompts.into_iter().zip(labels.iter().cloned()).collect()),
        schema: output_schema(None),
    };
    Ok((sql, Some(reshaper), with_embeddings.then_some(5)))
}

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
fn job_settings(job: &Job, options: &datafusion_clip::ClipOptions) -> String {
    let task = match &job.task {
        Task::Classify {
            labels,
            template,
            top_k,
            with_embeddings,
        } => serde_json::json!({
            "command": "classify",
            "labels": labels,
            "template": template,
            "top_k": top_k,
            "with_embeddings": with_embeddings,
        }),
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

/// Runs the job. Returns how it went; an `Err` is fatal (no output written).
pub async fn run(job: Job) -> Result<Summary> {
    if job.sources.is_empty() {
        return Err(DataFusionError::Plan(
            "no SOURCE: give folders, globs or image files".into(),
        ));
    }
    let started = Instant::now();
    let (sql, mut reshaper, embedding_column) = plan_task(&job.task)?;

    let mut config = match job.cluster {
        Some(_) => ballista_clip::session_config(),
        None => datafusion_clip::session_config(),
    };
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
    for (key, value) in &options {
        // Not SessionConfig::set_str, which panics on a value it refuses.
        config.options_mut().set(key, value).map_err(|e| match e {
            DataFusionError::Configuration(m) => {
                DataFusionError::Plan(format!("{key} = {value}: {m}"))
            }
            other => other,
        })?;
    }
    let settings = job_settings(
        &job,
        &datafusion_clip::ClipOptions::from_config(config.options()),
    );
    let ctx = match &job.cluster {
        Some(url) => ballista_clip::remote_context(url, config).await?,
        None => {
            let ctx = SessionContext::new_with_config_rt(config, datafusion_clip::runtime_env()?);
            datafusion_clip::register_all(&ctx)?;
            ctx
        }
    };
    let previous = match (&job.output, job.resume) {
        (Some(target), true) => Some(Previous::load(target, &settings)?),
        (None, true) => {
            return Err(DataFusionError::Plan(
                "--resume continues an --output file; give --output".into(),
            ));
        }
        (_, false) => None,
    };
    let sources = register_sources(&ctx, &job, previous.as_ref()).await?;
    let df = ctx.sql(&sql).await?;
    let plan = df.create_physical_plan().await?;
    let show_progress = !job.quiet && std::io::stderr().is_terminal();
    let total = match (sources.parquet_rows, &job.cluster) {
        (Some(rows), _) => rows,
        (None, None) => count_files(&plan),
        // The scan was planned on the scheduler; list here for the bar only.
        (None, Some(_)) if show_progress => match ctx.table_provider("images").await {
            Ok(table) => match table.downcast_ref::<ImageTable>() {
                Some(t) => t.file_keys(&ctx.state()).await.map_or(0, |k| {
                    k.iter().filter(|k| !sources.resumed.contains(k)).count()
                }),
                None => 0,
            },
            Err(_) => 0,
        },
        (None, Some(_)) => 0,
    };
    let schema = match &mut reshaper {
        Some(r) => {
            let embedding = embedding_column.map(|i| plan.schema().field(i).clone());
            r.schema = output_schema(embedding.as_ref());
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

/// `--verbose`: where the time went.
fn breakdown(
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
