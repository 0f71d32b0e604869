//! `ImageScanExec`: reads image files into record batches.
//!
//! Files are dealt into `target_partitions` groups up front and never split.
//! Each partition emits batches of `clip.batch_size` rows, so a downstream
//! `clip_*` call sees exactly one vision-tower batch per record batch, and
//! only that many files' bytes are in memory per partition. Contents are read
//! only when the `image` column is projected, concurrently within a batch.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
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

/// Column indices of the fixed IMAGE columns.
const PATH: usize = 0;
const NAME: usize = 1;
const SIZE: usize = 2;
const MODIFIED: usize = 3;
const IMAGE: usize = 4;

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

/// Scans a listed set of image files.
#[derive(Debug)]
pub struct ImageScanExec {
    partitions: Vec<Vec<ImageFile>>,
    table_schema: SchemaRef,
    projection: Vec<usize>,
    schema: SchemaRef,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl ImageScanExec {
    /// Deals `files` into at most `target_partitions` contiguous groups.
    pub fn try_new(
        files: Vec<ImageFile>,
        table_schema: SchemaRef,
        projection: Option<Vec<usize>>,
        target_partitions: usize,
        batch_rows: usize,
    ) -> Result<Self> {
        let projection = projection.unwrap_or_else(|| (0..table_schema.fields().len()).collect());
        let schema = Arc::new(table_schema.project(&projection)?);
        let n = target_partitions.clamp(1, files.len().max(1));
        let per = files.len().div_ceil(n).max(1);
        let mut partitions: Vec<Vec<ImageFile>> =
            files.chunks(per).map(<[ImageFile]>::to_vec).collect();
        partitions.resize_with(n, Vec::new);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            partitions,
            table_schema,
            projection,
            schema,
            batch_rows: batch_rows.max(1),
            properties,
        })
    }

    /// Files per partition.
    pub fn partitions(&self) -> &[Vec<ImageFile>] {
        &self.partitions
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
        let files: usize = self.partitions.iter().map(Vec::len).sum();
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ImageScanExec: files={files}, partitions={}, batch_rows={}, projection=[{}]",
                self.partitions.len(),
                self.batch_rows,
                columns.join(", ")
            ),
            DisplayFormatType::TreeRender => write!(f, "files={files}"),
        }
    }
}

async fn read_batch(
    files: Vec<ImageFile>,
    schema: SchemaRef,
    projection: Vec<usize>,
    context: Arc<TaskContext>,
) -> Result<RecordBatch> {
    let images: Option<Vec<_>> = if projection.contains(&IMAGE) {
        let reads = files.iter().map(|f| {
            let context = Arc::clone(&context);
            async move {
                let store = context.runtime_env().object_store(&f.store)?;
                let get = store.get(&f.location).await?;
                get.bytes()
                    .await
                    .map_err(|e| DataFusionError::from(e).context(format!("reading {}", f.url)))
            }
        });
        Some(futures::future::try_join_all(reads).await?)
    } else {
        None
    };
    let columns = projection
        .iter()
        .map(|&i| -> ArrayRef {
            match i {
                PATH => Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.url.as_str()),
                )),
                NAME => Arc::new(StringArray::from_iter_values(
                    files.iter().map(|f| f.name.as_str()),
                )),
                SIZE => Arc::new(UInt64Array::from_iter_values(files.iter().map(|f| f.size))),
                MODIFIED => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(files.iter().map(|f| f.modified))
                        .with_timezone("UTC"),
                ),
                IMAGE => Arc::new(BinaryArray::from_iter_values(
                    images
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(|b| b.as_ref()),
                )),
                p => {
                    Arc::new(StringArray::from_iter(files.iter().map(|f| {
                        f.partition_values.get(p - IMAGE - 1).cloned().flatten()
                    })))
                }
            }
        })
        .collect();
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(files.len())),
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
        vec![]
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
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("ImageScanExec has no children")
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(files) = self.partitions.get(partition) else {
            return internal_err!("ImageScanExec has no partition {partition}");
        };
        let chunks: Vec<Vec<ImageFile>> = files
            .chunks(self.batch_rows)
            .map(<[ImageFile]>::to_vec)
            .collect();
        let schema = Arc::clone(&self.schema);
        let projection = self.projection.clone();
        let stream = futures::stream::iter(chunks)
            .map(move |chunk| {
                read_batch(
                    chunk,
                    Arc::clone(&schema),
                    projection.clone(),
                    Arc::clone(&context),
                )
            })
            // Read the next batch's files while this one is being classified.
            .buffered(2);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}
