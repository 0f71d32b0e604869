//! The job's sources, registered as the `images` table: image files or
//! Parquet with an image column.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion_clip::{FileKey, ImageTable};

use super::Job;
use crate::output::resume::Previous;

fn is_parquet_source(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    lower.ends_with(".parquet") || lower.ends_with(".parquet/")
}

/// What [`register_sources`] found.
pub(super) struct Sources {
    /// The rows the query will read, for progress: the row count of Parquet
    /// sources (from their metadata), or the image files listed less those
    /// `--resume` skips. `None` when nothing was counted (on a cluster, with
    /// no progress bar and no `--resume`, the client lists nothing).
    pub(super) rows: Option<usize>,
    /// Files the previous run finished that are still there (`--resume`).
    pub(super) resumed: HashSet<FileKey>,
}

/// Registers `images (path, size, modified, image, read_error)` over the
/// sources: an IMAGE table for image files, or a view over Parquet with an
/// image column.
pub(super) async fn register_sources(
    ctx: &SessionContext,
    job: &Job,
    previous: Option<&Previous>,
    show_progress: bool,
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
        let mut rows = None;
        // One listing per run, which the progress bar counts, --resume
        // matches and (locally) the scan reads. A cluster's scheduler plans
        // the scan and lists there, so the client lists only when it needs
        // the listing itself.
        if job.cluster.is_none() || previous.is_some() || show_progress {
            table = table.listed(&ctx.state()).await?;
            let keys = table.file_keys(&ctx.state()).await?;
            if let Some(previous) = previous {
                resumed = keys
                    .iter()
                    .filter(|k| previous.done.contains(k))
                    .cloned()
                    .collect();
                table = table.with_skip(resumed.clone());
            }
            rows = Some(keys.len() - resumed.len());
        }
        ctx.register_table("images", Arc::new(table))?;
        return Ok(Sources { rows, resumed });
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
        rows: Some(rows as usize),
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
