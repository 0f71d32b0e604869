//! Scanning an IMAGE table: a file listing, then [`ImageScanExec`] reading
//! the files' bytes.
//!
//! The plan has two nodes:
//!
//! ```text
//! ImageScanExec: files=14, partitions=2, projection=[name, image]
//!   DataSourceExec: partitions=2, partition_sizes=[1, 1]
//! ```
//!
//! The leaf is an in-memory listing (one row per file: the table's columns
//! except `image`, plus where the file lives), dealt into
//! `target_partitions` contiguous groups up front and cut into batches of
//! `clip.batch_size` rows, or fewer where their files total more than
//! [`MAX_BATCH_BYTES`]. [`ImageScanExec`] keeps that batching, so a
//! downstream `clip_*` call sees exactly one vision-tower batch per record
//! batch and only that many files' bytes are in memory per partition.
//! Contents are read only when `image` is projected, concurrently within a
//! batch, and the next batch is read while this one is classified.
//!
//! A file is never split. The listing is a plain `MemorySourceConfig`, which
//! a distributed engine knows how to serialise and to slice: Ballista gives
//! each task only its partitions' rows of the listing, so many files become
//! several tasks and every file is read by exactly one.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DataFusionError, Result, exec_err, internal_err};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::ClipOptions;
use crate::origin::image_column;

/// The most file bytes one batch reads, unless one file alone needs more.
///
/// It bounds the bytes a partition holds (this batch and the next) however
/// large the files are, and keeps a batch's `image` column well under the
/// 2 GiB that one `Binary` column can hold.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// Index of the `size` column in the table schema and the listing.
const SIZE: usize = 2;
/// Index of the `image` column in the table schema.
const IMAGE: usize = 4;
/// Index of the `read_error` column in the table schema: the last of the
/// two columns that only reading the files gives.
const READ_ERROR: usize = 5;

/// The listing's extra columns, after the table's columns less `image`:
/// the object store URL and the location within it.
const STORE_COLUMN: &str = "__clipql_store";
const LOCATION_COLUMN: &str = "__clipql_location";

/// One listed file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    /// Full URL (`file:///...`, `s3://bucket/...`).
    pub url: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, microseconds since the epoch (UTC).
    pub modified: i64,
    /// Location within its object store.
    pub location: object_store::path::Path,
    /// The object store it lives in.
    pub store: ObjectStoreUrl,
    /// Values of the declared partition columns.
    pub partition_values: Vec<Option<String>>,
}

impl ImageFile {
    /// Which version of which file this is.
    pub fn key(&self) -> crate::FileKey {
        crate::FileKey {
            path: self.url.clone(),
            size: self.size,
            modified: self.modified,
        }
    }
}

/// The listing's schema for a table schema: every column but `image` and
/// `read_error`, then the store and location.
fn listing_schema(table_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = table_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| !(IMAGE..=READ_ERROR).contains(i))
        .map(|(_, f)| f.as_ref().clone())
        .collect();
    fields.push(Field::new(STORE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(LOCATION_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The listing rows of `files`, as one record batch.
fn listing_batch(files: &[ImageFile], schema: &SchemaRef) -> Result<RecordBatch> {
    let partition_cols = schema.fields().len() - IMAGE - 2;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.url.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.name.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.size))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(files.iter().map(|f| f.modified))
                .with_timezone("UTC"),
        ),
    ];
    for p in 0..partition_cols {
        columns.push(Arc::new(StringArray::from_iter(
            files
                .iter()
                .map(|f| f.partition_values.get(p).cloned().flatten()),
        )));
    }
    columns.push(Arc::new(StringArray::from_iter_values(
        files.iter().map(|f| f.store.as_str()),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        files.iter().map(|f| f.location.as_ref()),
    )));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(files.len())),
    )?)
}

/// The files whose listing row satisfies a predicate over the table's
/// columns other than `image`; `predicate` plans it against that schema.
///
/// An IMAGE table applies such `WHERE` clauses here, before any bytes are
/// read: `WHERE label = 'cat'` reads only the cats.
pub(crate) fn select_files(
    files: Vec<ImageFile>,
    table_schema: &Schema,
    predicate: impl FnOnce(&DFSchema) -> Result<Arc<dyn PhysicalExpr>>,
) -> Result<Vec<ImageFile>> {
    let schema = listing_schema(table_schema);
    let predicate = predicate(&DFSchema::try_from(Arc::clone(&schema))?)?;
    let listing = listing_batch(&files, &schema)?;
    let keep = predicate
        .evaluate(&listing)?
        .into_array(listing.num_rows())?;
    let Some(keep) = keep.as_boolean_opt() else {
        return internal_err!(
            "an IMAGE table filter gave {}, not booleans",
            keep.data_type()
        );
    };
    Ok(files
        .into_iter()
        .zip(keep.iter())
        .filter_map(|(file, keep)| (keep == Some(true)).then_some(file))
        .collect())
}

/// Reads the bytes of the files its input lists, and projects the table's
/// columns (see the module docs).
#[derive(Debug)]
pub struct ImageScanExec {
    input: Arc<dyn ExecutionPlan>,
    table_schema: SchemaRef,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// Cuts `files` into batches of at most `rows` files whose reads (each at
/// most `read_cap` bytes) total at most [`MAX_BATCH_BYTES`]; a file that
/// alone reads more is a batch by itself.
fn batches(files: &[ImageFile], rows: usize, read_cap: u64) -> Vec<&[ImageFile]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, file) in files.iter().enumerate() {
        let read = file.size.min(read_cap);
        if i > start && (i - start >= rows || bytes.saturating_add(read) > MAX_BATCH_BYTES) {
            batches.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(read);
    }
    if start < files.len() {
        batches.push(&files[start..]);
    }
    batches
}

impl ImageScanExec {
    /// Deals `files` into at most `target_partitions` contiguous groups of
    /// batches of `batch_rows` files (fewer where they total more than
    /// [`MAX_BATCH_BYTES`]), and scans them. `max_image_bytes` is
    /// `clip.max_image_bytes`: a file is read no further than one byte past it.
    pub fn try_new(
        files: Vec<ImageFile>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        target_partitions: usize,
        batch_rows: usize,
        max_image_bytes: u64,
    ) -> Result<Self> {
        let n = target_partitions.clamp(1, files.len().max(1));
        let per = files.len().div_ceil(n).max(1);
        let listing = listing_schema(&table_schema);
        let read_cap = max_image_bytes.saturating_add(1);
        let mut partitions: Vec<Vec<RecordBatch>> = files
            .chunks(per)
            .map(|group| {
                batches(group, batch_rows.max(1), read_cap)
                    .into_iter()
                    .map(|batch| listing_batch(batch, &listing))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        partitions.resize_with(n, Vec::new);
        let input = MemorySourceConfig::try_new_exec(&partitions, listing, None)?;
        Self::try_with_input(input, table_schema, projection)
    }

    /// Reads what `input` lists (rows of the listing schema that
    /// [`ImageScanExec::try_new`] builds), as a decoded plan does.
    pub fn try_with_input(
        input: Arc<dyn ExecutionPlan>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let expected = listing_schema(&table_schema);
        if input.schema().fields() != expected.fields() {
            return internal_err!(
                "ImageScanExec: the listing has columns {:?}, expected {:?}",
                input.schema().fields(),
                expected.fields()
            );
        }
        let projection = projection.unwrap_or_else(|| (0..table_schema.fields().len()).collect());
        let schema = Arc::new(table_schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(
                input.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            input,
            table_schema,
            projection,
            schema,
            properties,
        })
    }

    /// Files listed for this scan, if its input is the in-memory listing.
    pub fn file_count(&self) -> usize {
        self.input
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| {
                let source: &dyn std::any::Any = exec.data_source().as_ref();
                source.downcast_ref::<MemorySourceConfig>().map(|m| {
                    m.partitions()
                        .iter()
                        .flatten()
                        .map(RecordBatch::num_rows)
                        .sum()
                })
            })
            .unwrap_or(0)
    }

    /// The unprojected table schema.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// Indices of the projected columns in the table schema.
    pub fn projection(&self) -> &[usize] {
        &self.projection
    }
}

impl DisplayAs for ImageScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ImageScanExec: files={}, partitions={}, projection=[{}]",
                self.file_count(),
                self.properties.output_partitioning().partition_count(),
                columns.join(", ")
            ),
            DisplayFormatType::TreeRender => write!(f, "files={}", self.file_count()),
        }
    }
}

/// Reads at most `read_cap` bytes of an object, counting the bytes that
/// arrive, not trusting the listing: an object that grew or was replaced by
/// a bigger one after it was listed is still cut at the cap. Where the
/// listing already says it is over, only the cap is asked for.
async fn read_capped(
    store: &dyn object_store::ObjectStore,
    location: &object_store::path::Path,
    listed_size: u64,
    read_cap: u64,
) -> object_store::Result<bytes::Bytes> {
    if listed_size >= read_cap {
        match store.get_range(location, 0..read_cap).await {
            // Shorter now than listed (truncated since): the range is past
            // its end. Read what is there, still no further than the cap.
            Err(e) if is_range_error(&e) => {}
            other => return other,
        }
    }
    let mut stream = store.get(location).await?.into_stream();
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = read_cap - total;
        let chunk = if chunk.len() as u64 > room {
            chunk.slice(..room as usize)
        } else {
            chunk
        };
        total += chunk.len() as u64;
        chunks.push(chunk);
        if total >= read_cap {
            break;
        }
    }
    Ok(match <[bytes::Bytes; 1]>::try_from(chunks) {
        // One chunk (a local file, a small object) is used without a copy.
        Ok([one]) => one,
        Err(chunks) => {
            let mut all = Vec::with_capacity(total as usize);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            bytes::Bytes::from(all)
        }
    })
}

/// Whether a ranged read failed because the range is past the object's end
/// (the local store's "out of range", HTTP 416 "range not satisfiable").
fn is_range_error(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("out of range")
            || text.contains("range not satisfiable")
            || text.contains("requested range")
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// The reason to give one row, when reading its object failed in a way
/// that no retry mends and that concerns that object alone: it is gone, or
/// this reader may not read it. Anything else (the store down, every retry
/// spent, a refused connection) is `None`, and fails the query.
fn lasting_object_error(e: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => return Some(VANISHED),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return Some(ACCESS_DENIED),
        _ => {}
    }
    // The local store reports a failed open as a generic error around the
    // operating system's. Only there: an OS error deep inside a network
    // store's error (a firewall making `connect` fail with EPERM) is an
    // outage, not this file's permissions.
    let E::Generic {
        store: "LocalFileSystem",
        ..
    } = e
    else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::NotFound => return Some(VANISHED),
                std::io::ErrorKind::PermissionDenied => return Some(ACCESS_DENIED),
                _ => {}
            }
        }
        source = err.source();
    }
    None
}

/// The reason for a listed file that is not there when read.
pub const VANISHED: &str = "file vanished after listing (not found when read)";
/// The reason for a listed file this process may not read.
pub const ACCESS_DENIED: &str = "access denied when reading the file";

/// The output batch for one batch of listing rows. A file is read no
/// further than `read_cap` bytes (`clip.max_image_bytes + 1`): one over the
/// limit only far enough for the functions to see that it is, never whole.
/// With `strict` (`clip.on_error = 'fail'`), a file that cannot be read
/// fails the query; otherwise its row gets `read_error`.
async fn read_batch(
    listing: RecordBatch,
    schema: SchemaRef,
    projection: Vec<usize>,
    read_cap: u64,
    strict: bool,
    context: Arc<TaskContext>,
) -> Result<RecordBatch> {
    let n = listing.num_columns();
    let urls = listing.column(0).as_string::<i32>().clone();
    let reads = projection.iter().any(|i| (IMAGE..=READ_ERROR).contains(i));
    let contents: Option<(ArrayRef, ArrayRef)> = if reads {
        let sizes = listing.column(SIZE).as_primitive::<UInt64Type>();
        let stores = listing.column(n - 2).as_string::<i32>();
        let locations = listing.column(n - 1).as_string::<i32>();
        let reads = (0..listing.num_rows()).map(|row| {
            let context = Arc::clone(&context);
            let url = urls.value(row).to_string();
            let size = sizes.value(row);
            let store = stores.value(row).to_string();
            let location = locations.value(row).to_string();
            async move {
                let store = context
                    .runtime_env()
                    .object_store(ObjectStoreUrl::parse(&store)?)?;
                let location = object_store::path::Path::parse(&location)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                match read_capped(store.as_ref(), &location, size, read_cap).await {
                    Ok(bytes) => Ok(Ok(bytes)),
                    Err(e) => match lasting_object_error(&e) {
                        Some(reason) if strict => exec_err!(
                            "{}: {reason}. SET clip.on_error = 'null' to get a NULL image \
                             for such files instead, and the reason in read_error",
                            clip_runtime::printable_reason(&url)
                        ),
                        // This row only: the query goes on.
                        Some(reason) => Ok(Err(reason)),
                        None => Err(DataFusionError::from(e).context(format!("reading {url}"))),
                    },
                }
            }
        });
        let read = futures::future::try_join_all(reads).await?;
        let reasons: StringArray = read.iter().map(|r| r.as_ref().err().copied()).collect();
        let urls = urls.iter().map(|u| u.unwrap_or_default().to_string());
        let images = image_column(urls.collect(), read.into_iter().map(Result::ok).collect())?;
        Some((images, Arc::new(reasons)))
    } else {
        None
    };
    let columns = projection
        .iter()
        .map(|&i| match (i, &contents) {
            (IMAGE, Some((images, _))) => Ok(Arc::clone(images)),
            (READ_ERROR, Some((_, reasons))) => Ok(Arc::clone(reasons)),
            (IMAGE | READ_ERROR, None) => {
                Err(DataFusionError::Internal("file contents not read".into()))
            }
            // The listing has every other column, in table order.
            (i, _) if i < IMAGE => Ok(Arc::clone(listing.column(i))),
            (i, _) => Ok(Arc::clone(listing.column(i - 2))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(listing.num_rows())),
    )?)
}

impl ExecutionPlan for ImageScanExec {
    fn name(&self) -> &'static str {
        "ImageScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::try_with_input(
                input,
                Arc::clone(&self.table_schema),
                Some(self.projection.clone()),
            )?)),
            Err(children) => internal_err!("ImageScanExec has one input, got {}", children.len()),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = Arc::clone(&self.schema);
        let projection = self.projection.clone();
        let options = ClipOptions::from_config(context.session_config().options());
        let read_cap = options.max_image_bytes.saturating_add(1);
        // Strict mode: an unreadable file fails the query here.
        let strict = options.on_error == crate::OnError::Fail;
        let stream =
            input
                .map(move |listing| {
                    let schema = Arc::clone(&schema);
                    let projection = projection.clone();
                    let context = Arc::clone(&context);
                    async move {
                        read_batch(listing?, schema, projection, read_cap, strict, context).await
                    }
                })
                // Read the next batch's files while this one is being classified.
                .buffered(2);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: usize) -> ImageFile {
        ImageFile {
            url: format!("file:///photos/{i}.jpg"),
            name: format!("{i}.jpg"),
            size: i as u64,
            modified: 0,
            location: object_store::path::Path::from(format!("photos/{i}.jpg")),
            store: ObjectStoreUrl::local_filesystem(),
            partition_values: vec![Some(format!("p{i}"))],
        }
    }

    #[test]
    fn batches_end_at_batch_rows_or_the_byte_budget() {
        let sized = |sizes: &[u64]| -> Vec<ImageFile> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| ImageFile { size, ..file(i) })
                .collect()
        };
        let lengths = |files: &[ImageFile], rows, cap| -> Vec<usize> {
            batches(files, rows, cap).iter().map(|b| b.len()).collect()
        };
        const MIB: u64 = 1024 * 1024;
        // Small files: rows decide.
        assert_eq!(lengths(&sized(&[MIB; 5]), 2, u64::MAX), [2, 2, 1]);
        // 100 MiB files: two fit the budget, the third starts a batch.
        assert_eq!(lengths(&sized(&[100 * MIB; 5]), 16, u64::MAX), [2, 2, 1]);
        // A file over the budget is a batch of its own, and never empty.
        assert_eq!(
            lengths(&sized(&[MIB, 5 * MAX_BATCH_BYTES, MIB]), 16, u64::MAX),
            [1, 1, 1]
        );
        // Files read only to the cap count only that much.
        assert_eq!(lengths(&sized(&[10 * MAX_BATCH_BYTES; 4]), 16, MIB), [4]);
        assert!(batches(&[], 16, u64::MAX).is_empty());
    }

    #[tokio::test]
    async fn every_file_once_in_batches_of_batch_rows() {
        let files: Vec<_> = (0..10).map(file).collect();
        let schema = crate::image_schema(&["label".to_string()]);
        let scan = ImageScanExec::try_new(files, schema, Some(vec![1, 6]), 3, 2, u64::MAX).unwrap();
        assert_eq!(scan.file_count(), 10);
        let ctx = Arc::new(TaskContext::default());
        let mut names = Vec::new();
        for p in 0..3 {
            let batches: Vec<RecordBatch> = scan
                .execute(p, Arc::clone(&ctx))
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
                .await;
            assert!(batches.iter().all(|b| b.num_rows() <= 2), "{p}");
            for b in batches {
                let name = b.column(0).as_string::<i32>();
                let label = b.column(1).as_string::<i32>();
                for r in 0..b.num_rows() {
                    assert_eq!(
                        label.value(r),
                        format!("p{}", name.value(r).trim_end_matches(".jpg"))
                    );
                    names.push(name.value(r).to_string());
                }
            }
        }
        assert_eq!(
            names,
            (0..10).map(|i| format!("{i}.jpg")).collect::<Vec<_>>()
        );
    }

    /// A context as `clipql sql` makes one, over the fixture model.
    fn context() -> datafusion::prelude::SessionContext {
        let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
            crate::session_config(),
            crate::runtime_env().unwrap(),
        );
        crate::register_all(&ctx).unwrap();
        ctx
    }

    /// Issue 14, items 2 and 7: after the listing, one file is deleted, one
    /// is replaced by a directory, and one grows past `clip.max_image_bytes`.
    /// The deleted ones get NULL plus a reason and the query goes on; the
    /// grown one is read only to the limit + 1 bytes. In strict mode the
    /// query fails, naming the file.
    #[tokio::test]
    async fn files_that_change_after_listing_cost_only_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let photo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/photos/chelsea.jpg");
        for name in ["a.jpg", "b.jpg", "c.jpg"] {
            std::fs::copy(&photo, dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("d.jpg"), b"tiny").unwrap();
        // Listed over the limit, truncated before it is read (issue 26,
        // item 8): its row only, with what is there.
        std::fs::write(dir.path().join("e.jpg"), vec![0u8; 100_000]).unwrap();
        let ctx = context();
        let model =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/model");
        ctx.sql(&format!("SET clip.model = '{}'", model.display()))
            .await
            .unwrap();
        ctx.sql("SET clip.max_image_bytes = 40000").await.unwrap();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION '{}/'",
            dir.path().display()
        ))
        .await
        .unwrap();
        let query = "SELECT name, length(encode(image, 'hex')) / 2 AS bytes, read_error, \
                     clip_image_error(image) AS error, \
                     clip_image_embedding(image) IS NULL AS no_embedding FROM t ORDER BY name";
        // The listing is taken when the plan is made.
        let plan = ctx
            .sql(query)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("b.jpg")).unwrap();
        std::fs::remove_file(dir.path().join("c.jpg")).unwrap();
        std::fs::create_dir(dir.path().join("c.jpg")).unwrap();
        std::fs::write(dir.path().join("d.jpg"), vec![0u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("e.jpg"), b"tiny").unwrap();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let row = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>().join("|"))
                .unwrap()
        };
        assert_eq!(row("a.jpg"), "|a.jpg|35042|||false|", "{text}");
        // Issue 26, item 2: an unread file's image is NULL (never made-up
        // bytes), and `read_error` says why.
        for name in ["b.jpg", "c.jpg"] {
            assert_eq!(
                row(name),
                format!("|{name}||{VANISHED}|no image: the image value is NULL|true|"),
                "{text}"
            );
        }
        assert_eq!(
            row("d.jpg"),
            "|d.jpg|40001||image file is over the 40000-byte limit (clip.max_image_bytes)|true|",
            "{text}"
        );
        assert_eq!(
            row("e.jpg"),
            "|e.jpg|4||unsupported or unrecognised image format (the bytes are text, not an image)|true|",
            "{text}"
        );

        // Strict mode: the query fails, naming the file.
        ctx.sql("SET clip.on_error = 'fail'").await.unwrap();
        let plan = ctx
            .sql("SELECT name, clip_image_embedding(image) FROM t WHERE name = 'a.jpg'")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("a.jpg")).unwrap();
        let err = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(VANISHED), "{err}");
        assert!(err.contains("a.jpg"), "{err}");
    }

    #[test]
    fn only_lasting_per_object_errors_become_a_row_reason() {
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403".into(),
        };
        assert_eq!(lasting_object_error(&denied), Some(ACCESS_DENIED));
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(lasting_object_error(&local), Some(ACCESS_DENIED));
        let gone = object_store::Error::NotFound {
            path: "x".into(),
            source: "404".into(),
        };
        assert_eq!(lasting_object_error(&gone), Some(VANISHED));
        // An OS permission error inside a network store's error (EPERM
        // from connect, a firewall) is an outage (issue 26, item 8).
        let firewalled = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(lasting_object_error(&firewalled), None);
        // The store itself failing (retries spent, connection refused) fails
        // the query.
        let outage = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(lasting_object_error(&outage), None);
    }
}
