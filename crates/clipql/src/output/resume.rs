//! `--resume`: a re-run costs only the images the last run did not finish.
//!
//! The output is written under a temporary name and renamed only when
//! complete, and a half-written Parquet file has no footer, so an interrupted
//! run leaves nothing readable there. Each run therefore also appends every
//! output batch to a **journal** beside the output,
//! `.NAME.RANDOM.journal` (an Arrow IPC stream, flushed per batch: a crash
//! loses at most the batch in flight). A successful run deletes the journals.
//!
//! Every run creates its journal as a new file with a name no other file has
//! (`O_EXCL`, a random part), never one derived from the process id: in a
//! container every run may be PID 1, and a journal named by PID would be
//! truncated by the very run that is reading it back.
//!
//! `--resume` reads back the rows of the previous complete output (Parquet)
//! and of any journals, keys the successful ones by `path`, `size` and
//! `modified` (a rewritten file gets a new key), and:
//! - leaves those files out of the scan before their bytes are read
//!   ([`datafusion_clip::ImageTable::with_skip`]);
//! - copies their rows into the new output (once each, and only for files
//!   that are still there), then appends the new rows.
//!
//! Failed rows are retried. Previous results made with other settings
//! (labels, template, top-k, task, and every `clip.*` option that changes
//! results, however it was given; the model's files by size and mtime) are
//! refused, not mixed in: each output records its settings in the schema
//! metadata.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType, UInt64Type};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion_clip::FileKey;

/// The schema metadata key holding a job's settings.
pub const SETTINGS_KEY: &str = "clipql.settings";

/// The folder `target` is in.
fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Who may read a file made by [`create_beside`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only this user (0600): a journal, which only `--resume` reads.
    Private,
    /// What the user's umask gives a new file (0666 less the umask, 0644
    /// under umask 022): a partial output, which becomes the output.
    Umask,
}

/// Creates a new file beside `target`, named `.NAME.RANDOM{suffix}`: created
/// with `O_EXCL`, so it is never a file that exists already (an earlier run's
/// journal, say), whatever the process id.
pub fn create_beside(target: &Path, suffix: &str, access: Access) -> Result<(File, PathBuf)> {
    let dir = parent_dir(target);
    let prefix = format!(".{}.", file_name(target));
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(suffix);
    if access == Access::Umask {
        // The mode is given to open(2), so the umask applies, as it does for
        // any new file.
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    }
    builder
        .tempfile_in(&dir)
        .and_then(|f| f.keep().map_err(|e| e.error))
        .map_err(|e| {
            DataFusionError::IoError(e).context(format!(
                "creating a {suffix} file for {} in {}",
                file_name(target),
                dir.display()
            ))
        })
}

fn file_name(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every journal of `target`, from any run.
fn journals(target: &Path) -> Vec<PathBuf> {
    beside(target, ".journal")
}

/// Removes the partial outputs of `target` that killed runs left behind.
/// Called once an output is complete (as the journals are removed then):
/// a run still writing its partial file at that moment would be writing to
/// the same output, which two runs never can do safely anyway.
pub fn remove_orphan_partials(target: &Path) {
    for orphan in beside(target, ".partial") {
        let _ = std::fs::remove_file(orphan);
    }
}

/// Every file beside `target` named by [`create_beside`] with `suffix`.
fn beside(target: &Path, suffix: &str) -> Vec<PathBuf> {
    let prefix = format!(".{}.", file_name(target));
    let dir = parent_dir(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(suffix))
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

/// This run's journal.
pub struct Journal {
    writer: StreamWriter<BufWriter<File>>,
    path: PathBuf,
}

impl Journal {
    /// Starts this run's journal for `target`.
    pub fn create(target: &Path, schema: &SchemaRef) -> Result<Self> {
        let (file, path) = create_beside(target, ".journal", Access::Private)?;
        let writer = StreamWriter::try_new(BufWriter::new(file), schema)?;
        Ok(Self { writer, path })
    }

    /// Appends a batch and flushes it to the OS.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.writer.flush()?;
        Ok(())
    }

    /// After a complete output: removes every journal of `target`.
    pub fn remove_all(self, target: &Path) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.path);
        for old in journals(target) {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// What an earlier run finished, read from its output and journals.
pub struct Previous {
    sources: Vec<PathBuf>,
    /// Successful rows' keys.
    pub done: HashSet<FileKey>,
}

impl Previous {
    /// Reads the keys of `target` and its journals, checking they were made
    /// with `settings`.
    pub fn load(target: &Path, settings: &str) -> Result<Self> {
        let mut sources = Vec::new();
        if target.exists() {
            let is_parquet = target
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
            if !is_parquet {
                return Err(DataFusionError::Plan(format!(
                    "--resume: {} is complete, and only Parquet outputs can be read back \
                     (CSV and JSON Lines cannot carry the scores back). Use a .parquet \
                     --output, or drop --resume to start over",
                    target.display()
                )));
            }
            sources.push(target.to_path_buf());
        }
        sources.extend(journals(target));
        let mut done = HashSet::new();
        for source in &sources {
            for_each_batch(source, settings, &mut |batch| {
                for (row, key) in keys(&batch)? {
                    if succeeded(&batch, row) {
                        done.insert(key);
                    }
                }
                Ok(())
            })?;
        }
        Ok(Self { sources, done })
    }

    /// Streams the previous rows of the files in `keep` to `write`, each
    /// file once.
    pub fn copy(
        &self,
        settings: &str,
        keep: &HashSet<FileKey>,
        schema: &SchemaRef,
        write: &mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<u64> {
        let mut written = HashSet::new();
        let mut count = 0;
        for source in &self.sources {
            for_each_batch(source, settings, &mut |batch| {
                let mut mask = vec![false; batch.num_rows()];
                for (row, key) in keys(&batch)? {
                    if succeeded(&batch, row) && keep.contains(&key) && !written.contains(&key) {
                        mask[row] = true;
                        written.insert(key);
                    }
                }
                let batch = filter_record_batch(&batch, &BooleanArray::from(mask))?;
                if batch.num_rows() > 0 {
                    count += batch.num_rows() as u64;
                    write(RecordBatch::try_new(
                        Arc::clone(schema),
                        batch.columns().to_vec(),
                    )?)?;
                }
                Ok(())
            })?;
        }
        Ok(count)
    }
}

/// Reads a Parquet output or a journal batch by batch. A journal's torn
/// last batch (a crash mid-write) ends it; nothing before it is lost.
fn for_each_batch(
    path: &Path,
    settings: &str,
    f: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let context = |e: DataFusionError| e.context(format!("--resume: reading {}", path.display()));
    let file = File::open(path).map_err(|e| context(DataFusionError::IoError(e)))?;
    let check = |schema: &SchemaRef| match schema.metadata().get(SETTINGS_KEY) {
        Some(s) if s == settings => Ok(()),
        _ => Err(DataFusionError::Plan(format!(
            "--resume: {} was made with other settings (labels, template, top-k, model, \
             dtype or command) or not by clipql; use another --output, or drop --resume \
             to start over",
            path.display()
        ))),
    };
    if path.extension().is_some_and(|e| e == "journal") {
        let Ok(reader) = StreamReader::try_new(BufReader::new(file), None) else {
            // Torn before its schema: it holds no rows.
            return Ok(());
        };
        check(&reader.schema())?;
        for batch in reader {
            match batch {
                Ok(b) => f(b)?,
                Err(_) => break,
            }
        }
    } else {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| context(DataFusionError::ParquetError(Box::new(e))))?;
        check(builder.schema())?;
        for batch in builder.build()? {
            f(batch?)?;
        }
    }
    Ok(())
}

/// `(row, key)` for each row with a full key.
fn keys(batch: &RecordBatch) -> Result<Vec<(usize, FileKey)>> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            DataFusionError::Plan(format!("--resume: previous results lack a {name} column"))
        })
    };
    let mistyped =
        |name: &str| DataFusionError::Plan(format!("--resume: previous {name} has another type"));
    let paths = column("path")?
        .as_string_opt::<i32>()
        .ok_or_else(|| mistyped("path"))?;
    let sizes = column("size")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| mistyped("size"))?;
    let modified = column("modified")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| mistyped("modified"))?;
    Ok((0..batch.num_rows())
        .filter(|&r| !paths.is_null(r) && !sizes.is_null(r) && !modified.is_null(r))
        .map(|r| {
            (
                r,
                FileKey {
                    path: paths.value(r).to_string(),
                    size: sizes.value(r),
                    modified: modified.value(r),
                },
            )
        })
        .collect())
}

/// Whether a row has its answer: scores (`classify`; with `--threshold` its
/// `label` may be NULL, none of the labels reaching it), a label, or else an
/// embedding (`embed`). Only such a row is done; any other is computed
/// again, whatever its `error` says (a NULL answer without a reason is
/// still no answer).
fn succeeded(batch: &RecordBatch, row: usize) -> bool {
    ["scores", "label", "embedding"]
        .iter()
        .find_map(|c| batch.column_by_name(c))
        .is_some_and(|answer| answer.is_valid(row))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray, UInt64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(schema: &SchemaRef, paths: &[&str]) -> RecordBatch {
        let n = paths.len();
        answered(schema, paths, vec![Some("cat"); n], vec![None; n])
    }

    /// Rows of `paths` with these labels and errors.
    fn answered(
        schema: &SchemaRef,
        paths: &[&str],
        labels: Vec<Option<&str>>,
        errors: Vec<Option<&str>>,
    ) -> RecordBatch {
        let n = paths.len();
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(StringArray::from(paths.to_vec())),
                Arc::new(UInt64Array::from(vec![7u64; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![1i64; n]).with_timezone("UTC")),
                Arc::new(StringArray::from(labels)),
                Arc::new(StringArray::from(errors)),
            ],
        )
        .unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(
            Schema::new(vec![
                Field::new("path", DataType::Utf8, false),
                Field::new("size", DataType::UInt64, true),
                Field::new(
                    "modified",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
                Field::new("label", DataType::Utf8, true),
                Field::new("error", DataType::Utf8, true),
            ])
            .with_metadata([(SETTINGS_KEY.to_string(), "s".to_string())].into()),
        )
    }

    /// Issue 14, item 1: a run with the PID of the run it resumes (every run
    /// in a container may be PID 1; here both are this process) must not
    /// truncate the journal it reads back before copying its rows.
    #[test]
    fn a_new_journal_never_truncates_the_one_being_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let schema = schema();
        let mut killed = Journal::create(&target, &schema).unwrap();
        killed.append(&batch(&schema, &["a", "b"])).unwrap();
        drop(killed);

        let previous = Previous::load(&target, "s").unwrap();
        assert_eq!(previous.done.len(), 2);
        // What `clipql classify --resume` does next: start its own journal
        // and partial output, then copy the previous rows.
        let _journal = Journal::create(&target, &schema).unwrap();
        let _partial = create_beside(&target, ".partial", Access::Umask).unwrap();
        let mut copied = Vec::new();
        let n = previous
            .copy("s", &previous.done, &schema, &mut |b| {
                copied.push(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2, "every finished row is copied back");
        assert_eq!(journals(&target).len(), 2, "two journals, one per run");
    }

    /// Issue 26, item 1: a row is done only when it has its answer. A NULL
    /// label without a reason (a failure no check reported) used to count
    /// as done, and every later resume copied it instead of retrying it.
    #[test]
    fn only_rows_with_an_answer_are_done() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let schema = schema();
        let mut killed = Journal::create(&target, &schema).unwrap();
        let rows = answered(
            &schema,
            &["labelled", "silent", "failed"],
            vec![Some("cat"), None, None],
            vec![None, None, Some("cannot decode PNG image")],
        );
        killed.append(&rows).unwrap();
        drop(killed);
        let done = Previous::load(&target, "s").unwrap().done;
        let paths: Vec<&str> = done.iter().map(|k| k.path.as_str()).collect();
        assert_eq!(paths, ["labelled"]);
    }

    #[test]
    fn files_beside_the_target_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let (_, a) = create_beside(&target, ".partial", Access::Umask).unwrap();
        let (_, b) = create_beside(&target, ".partial", Access::Umask).unwrap();
        assert_ne!(a, b);
        for p in [&a, &b] {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(".out.parquet.") && name.ends_with(".partial"),
                "{name}"
            );
            assert_eq!(p.parent(), Some(dir.path()));
        }
    }
}
