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

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use super::listing::{ImageFile, listing_batch, listing_schema};
use super::read::{ReadSettings, read_batch};

/// The most file bytes one batch reads, unless one file alone needs more.
///
/// It bounds the bytes a partition holds (this batch and the next) however
/// large the files are, and keeps a batch's `image` column well under the
/// 2 GiB that one `Binary` column can hold.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// Reads the bytes of the files its input lists, and projects the table's
/// columns (see the module docs).
#[derive(Debug)]
pub struct ImageScanExec {
    input: Arc<dyn ExecutionPlan>,
    table_schema: SchemaRef,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    read: ReadSettings,
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
    /// [`MAX_BATCH_BYTES`]), and scans them as `read` says.
    pub fn try_new(
        files: Vec<ImageFile>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        target_partitions: usize,
        batch_rows: usize,
        read: ReadSettings,
    ) -> Result<Self> {
        let n = target_partitions.clamp(1, files.len().max(1));
        let per = files.len().div_ceil(n).max(1);
        let listing = listing_schema(&table_schema);
        let read_cap = read.read_cap();
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
        Self::try_with_input(input, table_schema, projection, read)
    }

    /// Reads what `input` lists (rows of the listing schema that
    /// [`ImageScanExec::try_new`] builds), as a decoded plan does.
    pub fn try_with_input(
        input: Arc<dyn ExecutionPlan>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        read: ReadSettings,
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
            read,
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

    /// How it reads its files, as planned.
    pub fn read_settings(&self) -> ReadSettings {
        self.read
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
                self.read,
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
        let read_cap = self.read.read_cap();
        // Strict mode: an unreadable file fails the query here.
        let strict = self.read.strict;
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
    use datafusion::arrow::array::AsArray;
    use datafusion::execution::object_store::ObjectStoreUrl;

    use super::*;
    use crate::table::read::VANISHED;

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
        let scan = ImageScanExec::try_new(
            files,
            schema,
            Some(vec![1, 6]),
            3,
            2,
            ReadSettings {
                max_image_bytes: u64::MAX,
                strict: false,
            },
        )
        .unwrap();
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
}
