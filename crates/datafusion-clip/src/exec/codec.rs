//! Plan serialisation: the `IMAGE` table and ClipQL's execution plan nodes as
//! `datafusion-proto` extension codecs.
//!
//! A distributed engine (Ballista) ships plans as protobuf. Built-in nodes
//! serialise themselves; ours go through these codecs:
//! - [`ClipLogicalCodec`] encodes an [`ImageTable`] in a logical plan (the
//!   client sends the scheduler the query's logical plan);
//! - [`ClipPhysicalCodec`] encodes [`ImageScanExec`] (its input, the file
//!   listing, is a plain in-memory source that DataFusion encodes) and
//!   [`ClipMetricsExec`] in a physical plan (the scheduler sends executors
//!   their tasks).
//!
//! Each wraps an inner codec and passes everything that is not ours to it,
//! so ClipQL composes with another engine's codecs (Ballista's, say):
//!
//! ```
//! use std::sync::Arc;
//! use datafusion_clip::{ClipLogicalCodec, ClipPhysicalCodec};
//! use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
//! use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
//!
//! let logical = ClipLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}));
//! let physical = ClipPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}));
//! ```
//!
//! Scalar functions travel by name: every process registers them (with
//! [`crate::register_all`] or [`crate::all_functions`]), and a function reads
//! the `clip.*` options of the session that runs it.
//!
//! Our payloads are JSON behind a 0xFF-led tag. No protobuf message starts
//! with 0xFF (it would be field 31 of the invalid wire type 7), so the tag
//! never collides with what an inner codec writes.
//!
//! An IMAGE table created with S3 credentials in `OPTIONS ('aws.…')` is not
//! encoded: credentials never go into a plan. On a cluster, each process
//! resolves S3 credentials from its own environment, as in local mode.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference, plan_err};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    AggregateUDF, Extension, HigherOrderUDF, LogicalPlan, ScalarUDF, WindowUDF,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::exec::metrics::ClipMetricsExec;
use crate::table::read::ReadSettings;
use crate::table::scan::ImageScanExec;
use crate::table::{FileKey, ImageTable, image_schema};

/// Leads every payload of ours; the digit is the wire version.
const TAG: &[u8] = b"\xffclipql2";

/// What our payloads hold.
#[derive(Debug, Serialize, Deserialize)]
enum Node {
    ImageTable(TableWire),
    ImageScan(ScanWire),
    Metrics(MetricsWire),
}

#[derive(Debug, Serialize, Deserialize)]
struct TableWire {
    locations: Vec<LocationWire>,
    partition_cols: Vec<String>,
    extra_extensions: Vec<String>,
    skip: Vec<(String, u64, i64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LocationWire {
    url: String,
    glob: Option<String>,
}

/// The scan's own settings; its input (the file listing) is a plain
/// in-memory source that DataFusion's codec encodes.
#[derive(Debug, Serialize, Deserialize)]
struct ScanWire {
    partition_cols: Vec<String>,
    projection: Vec<usize>,
    /// As planned ([`ReadSettings`]): an executor reads as the scheduler
    /// planned, whatever its own defaults.
    max_image_bytes: u64,
    strict: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct MetricsWire {
    functions: Vec<String>,
}

fn encode(node: &Node, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(TAG);
    serde_json::to_writer(buf, node).map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Our node if `buf` is one of ours, `None` if it belongs to the inner codec.
fn decode(buf: &[u8]) -> Result<Option<Node>> {
    let Some(body) = buf.strip_prefix(TAG) else {
        if buf.first() == Some(&0xff) && buf.starts_with(b"\xffclipql") {
            return plan_err!(
                "this plan was encoded by another ClipQL version (wire tag {:?}); \
                 run the same clipql version on the client, scheduler and executors",
                String::from_utf8_lossy(&buf[1..buf.len().min(TAG.len())])
            );
        }
        return Ok(None);
    };
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| DataFusionError::External(Box::new(e)).context("decoding a ClipQL plan node"))
}

fn encode_table(table: &ImageTable) -> Result<Node> {
    if table.has_store_options {
        return plan_err!(
            "this IMAGE table was created with S3 settings in OPTIONS ('aws.…'), which stay on \
             this machine: credentials never go into a plan. To read it on a cluster, give the \
             scheduler and every executor the settings through the AWS_* environment variables \
             or an AWS profile, and create the table without the aws.* OPTIONS"
        );
    }
    Ok(Node::ImageTable(TableWire {
        locations: table
            .locations
            .iter()
            .map(|l| LocationWire {
                url: l.as_str().to_string(),
                glob: l.get_glob().as_ref().map(|g| g.as_str().to_string()),
            })
            .collect(),
        partition_cols: table.partition_cols.clone(),
        extra_extensions: table.extra_extensions.clone(),
        skip: table
            .skip
            .iter()
            .map(|k| (k.path.clone(), k.size, k.modified))
            .collect(),
    }))
}

fn decode_table(wire: TableWire) -> Result<ImageTable> {
    let locations = wire
        .locations
        .into_iter()
        .map(|l| {
            let url =
                url::Url::parse(&l.url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let glob = l
                .glob
                .map(|g| glob::Pattern::new(&g))
                .transpose()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            ListingTableUrl::try_new(url, glob)
        })
        .collect::<Result<Vec<_>>>()?;
    let skip: HashSet<FileKey> = wire
        .skip
        .into_iter()
        .map(|(path, size, modified)| FileKey {
            path,
            size,
            modified,
        })
        .collect();
    Ok(
        ImageTable::from_parts(locations, wire.partition_cols, wire.extra_extensions)
            .with_skip(skip),
    )
}

fn encode_scan(scan: &ImageScanExec) -> Node {
    let fixed = image_schema(&[]).fields().len();
    Node::ImageScan(ScanWire {
        partition_cols: scan
            .table_schema()
            .fields()
            .iter()
            .skip(fixed)
            .map(|f| f.name().clone())
            .collect(),
        projection: scan.projection().to_vec(),
        max_image_bytes: scan.read_settings().max_image_bytes,
        strict: scan.read_settings().strict,
    })
}

/// Encodes [`ImageTable`]s and passes everything else to an inner codec.
#[derive(Debug)]
pub struct ClipLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl ClipLogicalCodec {
    /// Ours, on top of `inner` (DataFusion's default, or Ballista's).
    pub fn new(inner: Arc<dyn LogicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl LogicalExtensionCodec for ClipLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match decode(buf)? {
            Some(Node::ImageTable(wire)) => Ok(Arc::new(decode_table(wire)?)),
            Some(other) => plan_err!("expected an IMAGE table for {table_ref}, got {other:?}"),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match node.downcast_ref::<ImageTable>() {
            Some(table) => encode(&encode_table(table)?, buf),
            None => self.inner.try_encode_table_provider(table_ref, node, buf),
        }
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_higher_order_function(
        &self,
        name: &str,
        buf: &[u8],
    ) -> Result<Arc<HigherOrderUDF>> {
        self.inner.try_decode_higher_order_function(name, buf)
    }

    fn try_encode_higher_order_function(
        &self,
        node: &HigherOrderUDF,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_higher_order_function(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// Encodes [`ImageScanExec`] and [`ClipMetricsExec`] and passes everything
/// else to an inner codec.
#[derive(Debug)]
pub struct ClipPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl ClipPhysicalCodec {
    /// Ours, on top of `inner` (DataFusion's default, or Ballista's).
    pub fn new(inner: Arc<dyn PhysicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl PhysicalExtensionCodec for ClipPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match decode(buf)? {
            Some(Node::ImageScan(wire)) => match inputs {
                [input] => Ok(Arc::new(ImageScanExec::try_with_input(
                    Arc::clone(input),
                    image_schema(&wire.partition_cols),
                    Some(wire.projection),
                    ReadSettings {
                        max_image_bytes: wire.max_image_bytes,
                        strict: wire.strict,
                    },
                )?)),
                _ => plan_err!("ImageScanExec has one input, the plan has {}", inputs.len()),
            },
            Some(Node::Metrics(wire)) => match inputs {
                [input] => Ok(Arc::new(ClipMetricsExec::new(
                    Arc::clone(input),
                    wire.functions.into_iter().collect::<BTreeSet<_>>(),
                ))),
                _ => plan_err!(
                    "ClipMetricsExec has one input, the plan has {}",
                    inputs.len()
                ),
            },
            Some(other) => plan_err!("{other:?} is not an execution plan"),
            None => self.inner.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(scan) = node.downcast_ref::<ImageScanExec>() {
            return encode(&encode_scan(scan), buf);
        }
        if let Some(metrics) = node.downcast_ref::<ClipMetricsExec>() {
            return encode(
                &Node::Metrics(MetricsWire {
                    functions: metrics.functions().iter().cloned().collect(),
                }),
                buf,
            );
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_higher_order_function(
        &self,
        name: &str,
        buf: &[u8],
    ) -> Result<Arc<HigherOrderUDF>> {
        self.inner.try_decode_higher_order_function(name, buf)
    }

    fn try_encode_higher_order_function(
        &self,
        node: &HigherOrderUDF,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_higher_order_function(node, buf)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.inner.try_decode_expr(buf, inputs, ctx)
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        self.inner.try_encode_expr(node, buf, ctx)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
    use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;

    const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/photos/");

    fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(crate::session_config());
        crate::register_all(&ctx).unwrap();
        ctx
    }

    /// A plan survives the trip through protobuf: the same plan text, and
    /// the decoded physical plan runs (every file once).
    #[tokio::test]
    async fn plans_round_trip_through_protobuf() {
        let ctx = context();
        let table = ImageTable::try_new(&[PHOTOS.to_string()], vec![], vec![])
            .unwrap()
            .with_skip(HashSet::from([FileKey {
                path: "file:///nowhere/x.jpg".into(),
                size: 1,
                modified: 2,
            }]));
        ctx.register_table("images", Arc::new(table)).unwrap();
        let df = ctx
            .sql("SELECT name, size FROM images ORDER BY name")
            .await
            .unwrap();

        let logical = df.logical_plan().clone();
        let codec = ClipLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}));
        let bytes = logical_plan_to_bytes_with_extension_codec(&logical, &codec).unwrap();
        let decoded =
            logical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &codec).unwrap();
        assert_eq!(format!("{logical}"), format!("{decoded}"));

        let physical = df.create_physical_plan().await.unwrap();
        // A metrics wrapper, as ClipMetricsRule plants one, travels too.
        let physical: Arc<dyn ExecutionPlan> = Arc::new(ClipMetricsExec::new(
            physical,
            BTreeSet::from(["clip_classify".to_string()]),
        ));
        let codec = ClipPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}));
        let bytes =
            physical_plan_to_bytes_with_extension_codec(Arc::clone(&physical), &codec).unwrap();
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &codec).unwrap();
        let text = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        assert_eq!(text(&physical), text(&decoded));
        assert!(
            text(&decoded).contains("ImageScanExec: files=14"),
            "{}",
            text(&decoded)
        );
        let rows: usize = collect(decoded, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 14);
    }

    /// Issue 15, item 2: a scan reads as it was planned. Its read settings
    /// travel in the plan, and a process with other options (here the
    /// defaults) runs it with the planner's.
    #[tokio::test]
    async fn a_scan_reads_as_planned_wherever_it_runs() {
        let planner = context();
        planner
            .sql("SET clip.max_image_bytes = 1234")
            .await
            .unwrap();
        planner.sql("SET clip.on_error = 'fail'").await.unwrap();
        let table = ImageTable::try_new(&[PHOTOS.to_string()], vec![], vec![]).unwrap();
        planner.register_table("images", Arc::new(table)).unwrap();
        let physical = planner
            .sql("SELECT name, image FROM images")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let codec = ClipPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}));
        let bytes = physical_plan_to_bytes_with_extension_codec(physical, &codec).unwrap();
        let executor = context();
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &executor.task_ctx(), &codec)
                .unwrap();
        fn scan_of(plan: &Arc<dyn ExecutionPlan>) -> Option<ReadSettings> {
            plan.downcast_ref::<ImageScanExec>()
                .map(ImageScanExec::read_settings)
                .or_else(|| plan.children().into_iter().find_map(scan_of))
        }
        assert_eq!(
            scan_of(&decoded),
            Some(ReadSettings {
                max_image_bytes: 1234,
                strict: true
            })
        );
        // Files are read one byte past the planned cap, not the executor's
        // 256 MiB default.
        let lengths: Vec<usize> = collect(decoded, executor.task_ctx())
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                let images = b.column(1).as_binary::<i32>();
                (0..b.num_rows())
                    .map(|r| images.value(r).len())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(lengths.len(), 14);
        assert!(lengths.iter().all(|&n| n == 1235), "{lengths:?}");
    }

    #[tokio::test]
    async fn store_credentials_never_go_into_a_plan() {
        let ctx = context();
        ctx.sql(
            "CREATE EXTERNAL TABLE s3images STORED AS IMAGE LOCATION 's3://bucket/photos/' \
             OPTIONS ('aws.access_key_id' 'AKIA', 'aws.secret_access_key' 'SENTINEL-SECRET', \
             'aws.region' 'us-east-1')",
        )
        .await
        .unwrap();
        let plan = ctx
            .sql("SELECT name FROM s3images")
            .await
            .unwrap()
            .logical_plan()
            .clone();
        let codec = ClipLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}));
        let e = logical_plan_to_bytes_with_extension_codec(&plan, &codec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials never go into a plan"), "{e}");
        assert!(!e.contains("SENTINEL-SECRET"), "{e}");
    }

    #[test]
    fn payloads_of_another_version_are_refused_by_name() {
        let e = decode(b"\xffclipql9{}").unwrap_err().to_string();
        assert!(e.contains("another ClipQL version"), "{e}");
        assert!(
            decode(b"\x0a\x02hi").unwrap().is_none(),
            "not ours: the inner codec's"
        );
    }
}
