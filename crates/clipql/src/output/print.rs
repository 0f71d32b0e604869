//! Printing results on stdout as a table, CSV, JSON or JSON Lines.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::{DataFusionError, Result};

use super::OutputFormat as Format;

/// Writes `batches` to `out` in `format`.
pub fn write(out: &mut impl Write, batches: &[RecordBatch], format: Format) -> Result<()> {
    match format {
        Format::Table => writeln!(out, "{}", pretty_format_batches(batches)?)?,
        Format::Csv => write_csv(out, batches, true)?,
        Format::Json => {
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut *out);
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
            writeln!(out)?;
        }
        Format::Jsonl => {
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, LineDelimited>(&mut *out);
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
        }
        Format::Parquet => {
            return Err(DataFusionError::Plan(
                "Parquet is binary and is not printed: write it to a file with COPY (...) TO \
                 'out.parquet', or pick --format table, csv, json or jsonl"
                    .into(),
            ));
        }
    }
    out.flush().map_err(DataFusionError::from)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV via arrow's display formatting, so nested values (score lists,
/// embeddings) come out as readable text instead of being refused.
pub fn write_csv(out: &mut impl Write, batches: &[RecordBatch], header: bool) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    if header {
        let names: Vec<String> = first
            .schema()
            .fields()
            .iter()
            .map(|f| csv_field(f.name()))
            .collect();
        writeln!(out, "{}", names.join(","))?;
    }
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| csv_field(&f.value(row).to_string()))
                .collect();
            writeln!(out, "{}", cells.join(","))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
