//! Runs the `.slt` files under `sql/` against a DataFusion session with
//! ClipQL registered and `clip.model` set to the committed fixture model.
//!
//! `cargo test --test sqllogictests` runs them all; pass a substring to run
//! only matching files: `cargo test --test sqllogictests -- classify`.
//!
//! Paths in the `.slt` files are relative to the workspace root, which is the
//! working directory here. Target partitions are fixed at 2 so plans are
//! stable on any machine.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct ClipDb {
    ctx: SessionContext,
}

impl ClipDb {
    fn new() -> Result<Self, DataFusionError> {
        let config = datafusion_clip::session_config()
            .with_target_partitions(2)
            .set_str("clip.model", "tests/fixtures/model");
        let ctx = SessionContext::new_with_config(config).enable_url_table();
        datafusion_clip::register_all(&ctx)?;
        Ok(Self { ctx })
    }
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

/// Plans and other multi-line values, as DataFusion's own `.slt` files write
/// them: numbered lines, leading spaces shown as `-`, so that indentation
/// survives the runner's whitespace handling.
fn multiline(value: &str) -> String {
    let lines: Vec<String> = value
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let indent = line.len() - line.trim_start().len();
            format!("{:02}){}{}", i + 1, "-".repeat(indent), line.trim_start())
        })
        .collect();
    format!("\n{}", lines.join("\n"))
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, c)| {
                        let s = f.value(row).to_string();
                        if s.is_empty() && !c.is_null(row) {
                            "(empty)".to_string()
                        } else if s.contains('\n') {
                            multiline(&s)
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl AsyncDB for ClipDb {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await?;
        let schema = df.schema().clone();
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "clipql"
    }
}

/// Compares rendered rows line by line, ignoring trailing whitespace (a
/// multi-line cell leaves a space after the cell before it).
fn validator(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let actual: Vec<String> = actual
        .iter()
        .map(|row| row.join(" "))
        .flat_map(|row| {
            row.lines()
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> = expected.iter().map(|l| l.trim_end().to_string()).collect();
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(&expected)
            .all(|(a, e)| normalizer(a) == normalizer(e))
}

#[tokio::main]
async fn main() -> ExitCode {
    let root = root();
    std::env::set_current_dir(&root).unwrap();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter.is_empty()
                || filter
                    .iter()
                    .any(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let mut runner = Runner::new(|| async { ClipDb::new() });
        runner.with_validator(validator);
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        match runner.run_file_async(file).await {
            Ok(()) => {
                println!("ok     {name}");
                passed += 1;
            }
            Err(e) => {
                println!("FAILED {name}\n{e}\n");
                failed += 1;
            }
        }
    }
    println!("sqllogictests: {passed} passed, {failed} failed");
    if failed == 0 && !files.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
