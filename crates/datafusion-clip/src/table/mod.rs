//! The `IMAGE` table: one row per image file under a folder, prefix or glob,
//! read through `object_store`.
//!
//! ```sql
//! CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION 'photos/';
//! CREATE EXTERNAL TABLE pets STORED AS IMAGE PARTITIONED BY (label) LOCATION 'pets/';
//! SELECT * FROM read_images('photos/**/*.jpg');
//! ```
//!
//! Columns: `path` (full URL), `name` (file name), `size` (bytes),
//! `modified` (UTC timestamp), `image` (the file's bytes), `read_error` (why
//! the file could not be read, when `image` is NULL for that reason; NULL
//! when it was read), then any declared Hive-style partition columns
//! (`label=cat/` gives `label = 'cat'`).
//!
//! Only files with image extensions are listed (`jpg jpeg png webp gif bmp
//! tif tiff`, any case); `clip.extra_extensions` or the table option
//! `extra_extensions` adds more. A file is never split, and a query that does
//! not select `image` never reads file contents.

pub(crate) mod listing;
pub(crate) mod read;
pub(crate) mod scan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider, TableProviderFactory,
};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;

use crate::options::ClipOptions;
use crate::table::listing::{ImageFile, select_files};
use crate::table::read::ReadSettings;
use crate::table::scan::ImageScanExec;

/// File extensions an IMAGE table lists by default.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// The table option that adds file extensions (`OPTIONS ('extra_extensions' 'dat')`).
const EXTRA_EXTENSIONS_OPTION: &str = "format.extra_extensions";

/// The column holding each file's bytes.
const IMAGE_COLUMN: &str = "image";

/// The column saying why a file's bytes could not be read (it vanished
/// after the listing, access was denied), where `image` is then NULL.
pub const READ_ERROR_COLUMN: &str = "read_error";

/// The fixed columns, before partition columns.
pub fn image_schema(partition_cols: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(IMAGE_COLUMN, DataType::Binary, true),
        Field::new(READ_ERROR_COLUMN, DataType::Utf8, true),
    ];
    fields.extend(
        partition_cols
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true)),
    );
    Arc::new(Schema::new(fields))
}

/// A table of image files.
#[derive(Debug, Clone)]
pub struct ImageTable {
    pub(crate) locations: Vec<ListingTableUrl>,
    pub(crate) partition_cols: Vec<String>,
    pub(crate) extra_extensions: Vec<String>,
    schema: SchemaRef,
    pub(crate) skip: Arc<HashSet<FileKey>>,
    /// The listing every scan uses, once [`ImageTable::listed`] took it;
    /// `None`: each scan lists the locations anew (a table of `clipql sql`
    /// sees files added since the last query).
    listing: Option<Arc<Vec<ImageFile>>>,
    /// Whether `OPTIONS ('aws.…')` registered a store for this table, which
    /// then exists in this process only (see [`crate::codec`]).
    pub(crate) has_store_options: bool,
}

/// One version of one image file, as `path`, `size` and `modified` show it:
/// a file rewritten in place gets a new key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The full URL (`path`).
    pub path: String,
    /// Bytes (`size`).
    pub size: u64,
    /// Last modification, microseconds since the epoch (`modified`).
    pub modified: i64,
}

/// Parses a location, treating an existing local folder as a folder even
/// without its trailing slash. Globs work in URLs too
/// (`s3://bucket/photos/**/*.jpg`), not only in local paths.
pub fn parse_location(location: &str) -> Result<ListingTableUrl> {
    let has_scheme = location.contains("://");
    if has_scheme && let Some(first_glob) = location.find(['*', '?', '[']) {
        let split = location[..first_glob].rfind('/').map_or(0, |i| i + 1);
        let (prefix, pattern) = location.split_at(split);
        let url = url::Url::parse(prefix).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let glob =
            glob::Pattern::new(pattern).map_err(|e| DataFusionError::External(Box::new(e)))?;
        return ListingTableUrl::try_new(url, Some(glob));
    }
    let location =
        if !has_scheme && !location.ends_with('/') && std::path::Path::new(location).is_dir() {
            format!("{location}/")
        } else {
            location.to_string()
        };
    ListingTableUrl::parse(location)
}

impl ImageTable {
    /// A table over `locations` (folders ending in `/`, files, or globs).
    pub fn try_new(
        locations: &[String],
        partition_cols: Vec<String>,
        extra_extensions: Vec<String>,
    ) -> Result<Self> {
        if locations.is_empty() {
            return plan_err!("an IMAGE table needs a LOCATION, e.g. LOCATION 'photos/'");
        }
        for c in &partition_cols {
            if image_schema(&[]).field_with_name(c).is_ok() {
                return plan_err!("partition column {c} clashes with a built-in IMAGE column");
            }
        }
        Ok(Self::from_parts(
            locations
                .iter()
                .map(|l| parse_location(l))
                .collect::<Result<_>>()?,
            partition_cols,
            extra_extensions,
        ))
    }

    /// A table over parsed, checked locations.
    pub(crate) fn from_parts(
        locations: Vec<ListingTableUrl>,
        partition_cols: Vec<String>,
        extra_extensions: Vec<String>,
    ) -> Self {
        Self {
            locations,
            schema: image_schema(&partition_cols),
            partition_cols,
            extra_extensions,
            skip: Arc::default(),
            listing: None,
            has_store_options: false,
        }
    }

    /// Leaves these file versions out of every scan, before their bytes are
    /// read (`clipql classify --resume` skips what an earlier run did).
    pub fn with_skip(mut self, skip: HashSet<FileKey>) -> Self {
        self.skip = Arc::new(skip);
        self
    }

    /// Lists the locations now, once, for every later scan and
    /// [`ImageTable::file_keys`] of this table: one run (`clipql classify`)
    /// then reads the files its progress counted and its `--resume`
    /// matched, and lists them once. The listing is not sent to a cluster:
    /// its scheduler plans the scan, and lists there.
    pub async fn listed(mut self, state: &dyn Session) -> Result<Self> {
        self.listing = None;
        self.listing = Some(Arc::new(self.list_all(state).await?));
        Ok(self)
    }

    /// Lists the files a scan would read now (skipped ones included), or
    /// gives the listing [`ImageTable::listed`] took.
    pub async fn file_keys(&self, state: &dyn Session) -> Result<Vec<FileKey>> {
        Ok(self
            .list_all(state)
            .await?
            .into_iter()
            .map(|f| f.key())
            .collect())
    }

    fn accepts(&self, name: &str, session_extra: &[String]) -> bool {
        let Some((_, ext)) = name.rsplit_once('.') else {
            return false;
        };
        let ext = ext.to_ascii_lowercase();
        IMAGE_EXTENSIONS.contains(&ext.as_str())
            || self.extra_extensions.contains(&ext)
            || session_extra.contains(&ext)
    }

    /// Hive-style `col=value` directory segments between the table root and the file.
    fn partition_values(
        &self,
        url: &ListingTableUrl,
        location: &object_store::path::Path,
    ) -> Vec<Option<String>> {
        let segments: Vec<&str> = url
            .strip_prefix(location)
            .map(|s| s.collect())
            .unwrap_or_default();
        let dirs = &segments[..segments.len().saturating_sub(1)];
        self.partition_cols
            .iter()
            .map(|col| {
                dirs.iter().find_map(|seg| {
                    seg.split_once('=')
                        .filter(|(k, _)| k == col)
                        .map(|(_, v)| v.to_string())
                })
            })
            .collect()
    }

    /// The files to scan: the listing less the skipped ones.
    async fn list(&self, state: &dyn Session) -> Result<Vec<ImageFile>> {
        let mut files = self.list_all(state).await?;
        if !self.skip.is_empty() {
            files.retain(|f| !self.skip.contains(&f.key()));
        }
        Ok(files)
    }

    async fn list_all(&self, state: &dyn Session) -> Result<Vec<ImageFile>> {
        if let Some(listing) = &self.listing {
            return Ok(listing.as_ref().clone());
        }
        let session_extra = ClipOptions::from_config(state.config_options()).extra_extensions;
        let mut files = Vec::new();
        for url in &self.locations {
            let store = state.runtime_env().object_store(url.object_store())?;
            let metas: Vec<_> = url
                .list_all_files(state, store.as_ref(), "")
                .await?
                .try_collect()
                .await?;
            for meta in metas {
                let name = meta.location.filename().unwrap_or_default().to_string();
                if !self.accepts(&name, &session_extra) {
                    continue;
                }
                files.push(ImageFile {
                    url: format!("{}{}", url.object_store().as_str(), meta.location),
                    partition_values: self.partition_values(url, &meta.location),
                    name,
                    size: meta.size,
                    modified: meta.last_modified.timestamp_micros(),
                    location: meta.location,
                    store: url.object_store(),
                });
            }
        }
        files.sort_by(|a, b| a.url.cmp(&b.url));
        files.dedup_by(|a, b| a.url == b.url);
        Ok(files)
    }
}

#[async_trait]
impl TableProvider for ImageTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters that read neither `image` nor `read_error` (which only
    /// reading the file gives) are applied to the file listing,
    /// exactly, before any file is read. Those that are volatile or call a
    /// `clip_*` function (a model at planning time) are left to a filter node.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        filters
            .iter()
            .map(|f| {
                let reads_image = f
                    .column_refs()
                    .iter()
                    .any(|c| c.name == IMAGE_COLUMN || c.name == READ_ERROR_COLUMN);
                let calls_clip = f.exists(|e| {
                    Ok(matches!(e, Expr::ScalarFunction(call) if crate::functions::is_clip_function(call.name())))
                })?;
                Ok(if reads_image || calls_clip || f.is_volatile() {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Exact
                })
            })
            .collect()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut files = self.list(state).await?;
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            files = select_files(files, &self.schema, |schema| {
                state.create_physical_expr(predicate, schema)
            })?;
        }
        if let Some(limit) = limit {
            files.truncate(limit);
        }
        let options = ClipOptions::from_config(state.config_options());
        let partitions = state.config_options().execution.target_partitions.max(1);
        Ok(Arc::new(ImageScanExec::try_new(
            files,
            Arc::clone(&self.schema),
            projection.cloned(),
            partitions,
            options.batch_size,
            ReadSettings::from_options(&options),
        )?))
    }
}

/// Creates IMAGE tables for `CREATE EXTERNAL TABLE ... STORED AS IMAGE`.
#[derive(Debug, Default)]
pub struct ImageTableFactory;

#[async_trait]
impl TableProviderFactory for ImageTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        if !cmd.schema.fields().is_empty() {
            return plan_err!(
                "IMAGE tables have fixed columns (path, name, size, modified, image, read_error); \
                 remove the column list from CREATE EXTERNAL TABLE {}",
                cmd.name
            );
        }
        let mut extra = Vec::new();
        for (key, value) in &cmd.options {
            if key.starts_with(crate::store::object_stores::AWS_OPTION_PREFIX) {
                continue;
            } else if key == EXTRA_EXTENSIONS_OPTION {
                extra = value
                    .split(',')
                    .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect();
            } else {
                return plan_err!(
                    "unknown IMAGE table option '{}'; the options are 'extra_extensions', \
                     e.g. OPTIONS ('extra_extensions' 'dat,bin'), and S3 settings such as 'aws.region'",
                    key.strip_prefix("format.").unwrap_or(key)
                );
            }
        }
        let mut table =
            ImageTable::try_new(&cmd.locations, cmd.table_partition_cols.clone(), extra)?;
        // S3 settings in OPTIONS register a store for the table's bucket,
        // on top of what the environment provides.
        let aws = crate::store::object_stores::aws_options(&cmd.options);
        if !aws.is_empty() {
            table.has_store_options = true;
            for url in &table.locations {
                if matches!(url.scheme(), "s3" | "s3a") {
                    let url: &url::Url = url.as_ref();
                    let store = crate::store::object_stores::s3_store(url, &aws)?;
                    state.runtime_env().register_object_store(url, store);
                }
            }
        }
        Ok(Arc::new(table))
    }
}

/// `read_images('<folder/, file or glob>')`: the IMAGE table as a table function.
#[derive(Debug, Default)]
pub struct ReadImages;

impl TableFunctionImpl for ReadImages {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let location = match args.exprs() {
            [
                Expr::Literal(
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::LargeUtf8(Some(s))
                    | ScalarValue::Utf8View(Some(s)),
                    _,
                ),
            ] => s.clone(),
            _ => {
                return plan_err!(
                    "read_images takes one string literal: a folder ending in '/', a file, or a glob, \
                     e.g. read_images('photos/') or read_images('photos/**/*.jpg')"
                );
            }
        };
        Ok(Arc::new(ImageTable::try_new(
            &[location],
            Vec::new(),
            Vec::new(),
        )?))
    }
}

/// The IMAGE factory keyed as DataFusion looks it up.
pub(crate) fn factories() -> HashMap<String, Arc<dyn TableProviderFactory>> {
    HashMap::from([(
        "IMAGE".to_string(),
        Arc::new(ImageTableFactory) as Arc<dyn TableProviderFactory>,
    )])
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Issue 15, item 2: one listing per run. A listed table's scans read
    /// what it listed, not what is there by the time they plan.
    #[tokio::test]
    async fn a_listed_table_scans_what_it_listed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.jpg", "b.png"] {
            std::fs::write(dir.path().join(name), b"not an image").unwrap();
        }
        let state = SessionContext::new_with_config(crate::session_config()).state();
        let location = format!("{}/", dir.path().display());
        let table = ImageTable::try_new(&[location], Vec::new(), Vec::new()).unwrap();
        let listed = table.clone().listed(&state).await.unwrap();
        std::fs::write(dir.path().join("c.jpg"), b"added after the listing").unwrap();

        assert_eq!(listed.file_keys(&state).await.unwrap().len(), 2);
        // A new session, since DataFusion's own listing cache would answer
        // this one's next listing from the first.
        let fresh = || SessionContext::new_with_config(crate::session_config());
        assert_eq!(table.file_keys(&fresh().state()).await.unwrap().len(), 3);
        for (name, table, rows) in [("listed", listed, 2), ("live", table, 3)] {
            let ctx = fresh();
            ctx.register_table(name, Arc::new(table)).unwrap();
            let batches = ctx
                .sql(&format!("SELECT count(*) FROM {name}"))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
            assert_eq!(count, rows, "{name}");
        }
    }
}
