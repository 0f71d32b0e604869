//! Every format ClipQL writes results in, and the writers: [`print`](mod@print) for
//! results printed on stdout (`clipql sql`, a batch job without
//! `--output`), [`sink`] for a batch job's `--output` file.

pub(crate) mod print;
pub(crate) mod resume;
pub(crate) mod sink;

use std::path::Path;

use clap::ValueEnum;
use datafusion::error::{DataFusionError, Result};

/// The one list of output formats. `clipql sql --format` offers those that
/// print; a batch job's `--output` extension picks one of those that stream
/// to a file ([`OutputFormat::from_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header; nested values are written as text.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Parquet: binary, so written to a file only.
    #[value(skip)]
    Parquet,
}

impl OutputFormat {
    /// The format of an `--output` file, from its extension: those that can
    /// be appended to batch by batch.
    pub(crate) fn from_path(path: &Path) -> Result<Self> {
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
