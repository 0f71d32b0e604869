//! Writing a batch job's rows to its `--output` file (or collecting them
//! for the table on stdout).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::writer::{LineDelimited, LineDelimitedWriter, WriterBuilder};
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;

use super::OutputFormat;
use super::resume::{Access, Journal, create_beside, remove_orphan_partials};

/// The output file, written under a temporary name and renamed into place
/// only when complete, so a crash never leaves a half file that looks whole.
enum Sink {
    Parquet(ArrowWriter<File>),
    /// The writer, and whether the header is written yet.
    Csv(BufWriter<File>, bool),
    Jsonl(LineDelimitedWriter<BufWriter<File>>),
    Stdout(Vec<RecordBatch>),
}

pub(crate) struct Output {
    sink: Sink,
    temp: Option<PathBuf>,
    target: Option<PathBuf>,
    journal: Option<Journal>,
}

impl Output {
    pub(crate) fn create(target: Option<&Path>, schema: &SchemaRef) -> Result<Self> {
        let Some(target) = target else {
            return Ok(Self {
                sink: Sink::Stdout(Vec::new()),
                temp: None,
                target: None,
                journal: None,
            });
        };
        let format = OutputFormat::from_path(target)?;
        let (file, temp) = create_beside(target, ".partial", Access::Umask)?;
        let sink = match format {
            OutputFormat::Parquet => {
                Sink::Parquet(ArrowWriter::try_new(file, Arc::clone(schema), None)?)
            }
            OutputFormat::Csv => Sink::Csv(BufWriter::new(file), false),
            OutputFormat::Jsonl => Sink::Jsonl(
                WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(BufWriter::new(file)),
            ),
            // A table needs every row before its first line; a JSON array,
            // its closing bracket.
            OutputFormat::Table | OutputFormat::Json => {
                drop(file);
                let _ = std::fs::remove_file(&temp);
                return Err(DataFusionError::Plan(format!(
                    "--output {}: {format:?} cannot be written batch by batch; use .parquet, \
                     .csv or .jsonl",
                    target.display()
                )));
            }
        };
        Ok(Self {
            sink,
            temp: Some(temp),
            target: Some(target.to_path_buf()),
            journal: Some(Journal::create(target, schema)?),
        })
    }

    pub(crate) fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if let Some(journal) = &mut self.journal {
            journal.append(&batch)?;
        }
        match &mut self.sink {
            Sink::Parquet(w) => w.write(&batch)?,
            Sink::Csv(file, header_written) => {
                super::print::write_csv(file, &[batch], !*header_written)?;
                *header_written = true;
            }
            Sink::Jsonl(w) => w.write(&batch)?,
            Sink::Stdout(batches) => batches.push(batch),
        }
        Ok(())
    }

    pub(crate) fn finish(self, schema: &SchemaRef) -> Result<()> {
        match self.sink {
            Sink::Parquet(w) => w.into_inner()?.sync_all()?,
            Sink::Csv(mut out, header_written) => {
                if !header_written {
                    super::print::write_csv(
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
                super::print::write(&mut stdout, &[sorted], OutputFormat::Table)?;
            }
        }
        if let (Some(temp), Some(target)) = (self.temp, self.target) {
            std::fs::rename(&temp, &target).map_err(|e| {
                DataFusionError::IoError(e).context(format!(
                    "moving the finished output to {}",
                    target.display()
                ))
            })?;
            remove_orphan_partials(&target);
            if let Some(journal) = self.journal {
                journal.remove_all(&target);
            }
        }
        Ok(())
    }

    /// Removes the partial file after a failure. The journal stays, for
    /// `--resume`.
    pub(crate) fn abandon(self) {
        if let Some(temp) = self.temp {
            drop(self.sink);
            let _ = std::fs::remove_file(temp);
        }
    }
}
