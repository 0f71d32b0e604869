//! `EXPLAIN ANALYZE` for the model work a query does.
//!
//! Scalar functions cannot report metrics themselves, so [`ClipMetricsRule`]
//! (a physical optimizer rule that [`crate::register_all`] adds) puts a
//! [`ClipMetricsExec`] directly above every plan node whose own expressions
//! call a `clip_*` function. While that node runs, the wrapper holds a
//! [`clip_runtime::InferenceMetrics`] scope on the polling thread; the model
//! counts its work there (functions run synchronously inside the node's
//! `poll_next`), and the wrapper reports it as the node's metrics:
//!
//! ```text
//! ClipMetricsExec: functions=[clip_classify], metrics=[images_decoded=14,
//!   decode_time=41ms, batches=1, inference_time=12ms, text_tower_runs=1, ...]
//!   ProjectionExec: expr=[name@0 as name, clip_classify(image@1, ...)]
//! ```
//!
//! The counts are per query: every execution has its own scopes.

use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use clip_runtime::{InferenceMetrics, ModelStats};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricType, MetricsSet, Time,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// The `clip_*` functions (of `ours`) that a node's own expressions call.
fn clip_functions(plan: &dyn ExecutionPlan, ours: &[String]) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    plan.apply_expressions(&mut |expr: &Arc<dyn PhysicalExpr>| {
        expr.apply(|e| {
            if let Some(f) = e.downcast_ref::<ScalarFunctionExpr>()
                && ours.iter().any(|n| n == f.name())
            {
                names.insert(f.name().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })?;
    Ok(names)
}

/// Wraps every node that calls a `clip_*` function in a [`ClipMetricsExec`].
/// Runs after DataFusion's own rules, so nothing rearranges the wrappers.
#[derive(Debug, Default)]
pub struct ClipMetricsRule;

impl PhysicalOptimizerRule for ClipMetricsRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ours: Vec<String> = crate::all_functions()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        plan.transform_up(|node| {
            if let Some(wrapper) = node.downcast_ref::<ClipMetricsExec>() {
                // Optimised twice: the node below was wrapped again.
                if wrapper.input.is::<ClipMetricsExec>() {
                    return Ok(Transformed::yes(Arc::clone(&wrapper.input)));
                }
                return Ok(Transformed::no(node));
            }
            let functions = clip_functions(node.as_ref(), &ours)?;
            if functions.is_empty() {
                Ok(Transformed::no(node))
            } else {
                Ok(Transformed::yes(Arc::new(ClipMetricsExec::new(
                    node, functions,
                ))))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "clip_metrics"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Reports the model work of the node below it (see the module docs). It
/// changes nothing about the data: same schema, partitioning and order.
#[derive(Debug)]
pub struct ClipMetricsExec {
    input: Arc<dyn ExecutionPlan>,
    functions: BTreeSet<String>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl ClipMetricsExec {
    /// Wraps `input`, which calls `functions`.
    pub fn new(input: Arc<dyn ExecutionPlan>, functions: BTreeSet<String>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            functions,
            metrics: ExecutionPlanMetricsSet::new(),
            properties,
        }
    }

    /// The node whose work this reports.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// Sums the model work of every `ClipMetricsExec` in an executed plan.
    pub fn total(plan: &dyn ExecutionPlan) -> ModelStats {
        let mut total = ModelStats::default();
        let mut add = |m: &MetricsSet| {
            let count = |name: &str| m.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
            let time = |name: &str| std::time::Duration::from_nanos(count(name));
            total.images_decoded += count(IMAGES_DECODED);
            total.decode_errors += count(DECODE_ERRORS);
            total.decode_time += time(DECODE_TIME);
            total.vision_runs += count(BATCHES);
            total.images_embedded += count(IMAGES_EMBEDDED);
            total.vision_time += time(INFERENCE_TIME);
            total.image_cache_hits += count(IMAGE_CACHE_HITS);
            total.text_runs += count(TEXT_RUNS);
            total.texts_embedded += count(TEXTS_EMBEDDED);
            total.text_time += time(TEXT_TIME);
            total.text_cache_hits += count(TEXT_CACHE_HITS);
        };
        fn walk(plan: &dyn ExecutionPlan, add: &mut dyn FnMut(&MetricsSet)) {
            if let Some(m) = plan
                .downcast_ref::<ClipMetricsExec>()
                .and_then(ExecutionPlan::metrics)
            {
                add(&m);
            }
            for child in plan.children() {
                walk(child.as_ref(), add);
            }
        }
        walk(plan, &mut add);
        total
    }
}

const IMAGES_DECODED: &str = "images_decoded";
const DECODE_ERRORS: &str = "decode_errors";
const DECODE_TIME: &str = "decode_time";
const BATCHES: &str = "batches";
const IMAGES_EMBEDDED: &str = "images_embedded";
const INFERENCE_TIME: &str = "inference_time";
const IMAGE_CACHE_HITS: &str = "image_cache_hits";
const TEXT_RUNS: &str = "text_tower_runs";
const TEXTS_EMBEDDED: &str = "texts_embedded";
const TEXT_TIME: &str = "text_time";
const TEXT_CACHE_HITS: &str = "text_cache_hits";

impl DisplayAs for ClipMetricsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let functions = self
            .functions
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "ClipMetricsExec: functions=[{functions}]")
            }
            DisplayFormatType::TreeRender => write!(f, "functions={functions}"),
        }
    }
}

impl ExecutionPlan for ClipMetricsExec {
    fn name(&self) -> &'static str {
        "ClipMetricsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
            Ok([input]) => Ok(Arc::new(Self::new(input, self.functions.clone()))),
            Err(c) => internal_err!("ClipMetricsExec takes 1 child, got {}", c.len()),
        }
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            Arc::clone(&self.input),
            self.functions.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let counter = |name: &'static str| {
            MetricBuilder::new(&self.metrics)
                .with_type(MetricType::Summary)
                .counter(name, partition)
        };
        let time = |name: &'static str| {
            MetricBuilder::new(&self.metrics)
                .with_type(MetricType::Summary)
                .subset_time(name, partition)
        };
        Ok(Box::pin(MetricsStream {
            input,
            scope: Arc::new(InferenceMetrics::default()),
            reported: ModelStats::default(),
            out: PartitionMetrics {
                images_decoded: counter(IMAGES_DECODED),
                decode_errors: counter(DECODE_ERRORS),
                decode_time: time(DECODE_TIME),
                batches: counter(BATCHES),
                images_embedded: counter(IMAGES_EMBEDDED),
                inference_time: time(INFERENCE_TIME),
                image_cache_hits: counter(IMAGE_CACHE_HITS),
                text_runs: counter(TEXT_RUNS),
                texts_embedded: counter(TEXTS_EMBEDDED),
                text_time: time(TEXT_TIME),
                text_cache_hits: counter(TEXT_CACHE_HITS),
            },
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct PartitionMetrics {
    images_decoded: Count,
    decode_errors: Count,
    decode_time: Time,
    batches: Count,
    images_embedded: Count,
    inference_time: Time,
    image_cache_hits: Count,
    text_runs: Count,
    texts_embedded: Count,
    text_time: Time,
    text_cache_hits: Count,
}

struct MetricsStream {
    input: SendableRecordBatchStream,
    scope: Arc<InferenceMetrics>,
    reported: ModelStats,
    out: PartitionMetrics,
}

impl MetricsStream {
    /// Moves what the scope counted since the last report into the metrics.
    fn report(&mut self) {
        let now = self.scope.snapshot();
        let was = std::mem::replace(&mut self.reported, now);
        let count = |c: &Count, now: u64, was: u64| c.add(now.saturating_sub(was) as usize);
        // `Time` rounds every addition up to at least 1ns: add only real time.
        let time = |t: &Time, now: std::time::Duration, was: std::time::Duration| {
            if now > was {
                t.add_duration(now - was)
            }
        };
        let o = &self.out;
        count(&o.images_decoded, now.images_decoded, was.images_decoded);
        count(&o.decode_errors, now.decode_errors, was.decode_errors);
        time(&o.decode_time, now.decode_time, was.decode_time);
        count(&o.batches, now.vision_runs, was.vision_runs);
        count(&o.images_embedded, now.images_embedded, was.images_embedded);
        time(&o.inference_time, now.vision_time, was.vision_time);
        count(
            &o.image_cache_hits,
            now.image_cache_hits,
            was.image_cache_hits,
        );
        count(&o.text_runs, now.text_runs, was.text_runs);
        count(&o.texts_embedded, now.texts_embedded, was.texts_embedded);
        time(&o.text_time, now.text_time, was.text_time);
        count(&o.text_cache_hits, now.text_cache_hits, was.text_cache_hits);
    }
}

impl Stream for MetricsStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = InferenceMetrics::scope(&this.scope, || this.input.poll_next_unpin(cx));
        this.report();
        poll
    }
}

impl RecordBatchStream for MetricsStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

    async fn context() -> SessionContext {
        let config = crate::session_config()
            .with_target_partitions(2)
            .set_str("clip.model", &format!("{ROOT}/model"));
        let ctx = SessionContext::new_with_config(config);
        crate::register_all(&ctx).unwrap();
        // A second registration must not wrap nodes twice.
        crate::register_all(&ctx).unwrap();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE images STORED AS IMAGE LOCATION '{ROOT}/photos/'"
        ))
        .await
        .unwrap();
        ctx
    }

    /// The metrics line of `EXPLAIN ANALYZE`'s `ClipMetricsExec`.
    async fn analyze(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx
            .sql(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ClipMetricsExec"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        lines[0].to_string()
    }

    fn metric(line: &str, name: &str) -> String {
        let start = line
            .find(&format!(" {name}="))
            .or_else(|| line.find(&format!("[{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        let value = &line[start + name.len() + 2..];
        value[..value.find([',', ']']).unwrap()].to_string()
    }

    #[tokio::test]
    async fn explain_analyze_reports_each_querys_own_model_work() {
        let ctx = context().await;
        // Batches of 4 over 2 partitions of 7 photos: 2 vision runs each.
        ctx.sql("SET clip.batch_size = 4").await.unwrap();
        // Other tests in this process share the default model and its
        // caches; this option makes a model of this test's own.
        ctx.sql("SET clip.sessions = 3").await.unwrap();
        let sql = "SELECT name, clip_classify(image, ['a photo of a cat', 'a photo of a dog']) FROM images";
        let first = analyze(&ctx, sql).await;
        assert_eq!(metric(&first, "images_decoded"), "14", "{first}");
        assert_eq!(metric(&first, "decode_errors"), "0", "{first}");
        assert_eq!(metric(&first, "images_embedded"), "14", "{first}");
        assert_eq!(metric(&first, "batches"), "4", "{first}");
        assert_eq!(metric(&first, "text_tower_runs"), "1", "{first}");
        assert_eq!(metric(&first, "texts_embedded"), "2", "{first}");
        for time in ["decode_time", "inference_time", "text_time"] {
            let t = metric(&first, time);
            assert!(t.ends_with('s') && !t.starts_with("0ns"), "{time} = {t}");
        }

        // The same query again: the labels come from the text cache and the
        // photos from the recent-image cache; nothing of the first query's
        // work is counted again.
        let second = analyze(&ctx, sql).await;
        assert_eq!(metric(&second, "text_tower_runs"), "0", "{second}");
        assert_ne!(metric(&second, "text_cache_hits"), "0", "{second}");
        assert_eq!(metric(&second, "image_cache_hits"), "14", "{second}");
        assert_eq!(metric(&second, "images_decoded"), "0", "{second}");
        assert_eq!(metric(&second, "batches"), "0", "{second}");
    }

    #[tokio::test]
    async fn filters_are_measured_and_queries_without_clip_functions_untouched() {
        let ctx = context().await;
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx
                    .sql(sql)
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap();
                datafusion::physical_plan::displayable(plan.as_ref())
                    .indent(false)
                    .to_string()
            }
        };
        let shown = plan("SELECT name FROM images WHERE clip_image_error(image) IS NULL").await;
        assert!(
            shown.contains("ClipMetricsExec: functions=[clip_image_error]\n  FilterExec"),
            "{shown}"
        );
        let shown = plan("SELECT name FROM images").await;
        assert!(!shown.contains("ClipMetricsExec"), "{shown}");
    }

    #[tokio::test]
    async fn total_sums_an_executed_plan() {
        let ctx = context().await;
        let df = ctx
            .sql("SELECT clip_image_embedding(image) FROM images")
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 14);
        let total = ClipMetricsExec::total(plan.as_ref());
        assert_eq!(total.images_decoded + total.image_cache_hits, 14);
        assert_eq!(total.images_embedded, total.images_decoded);
        assert_eq!(total.text_runs, 0);
    }
}
