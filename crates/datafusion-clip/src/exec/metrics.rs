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
use std::time::Duration;

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

    /// The `clip_*` functions the node below calls.
    pub fn functions(&self) -> &BTreeSet<String> {
        &self.functions
    }

    /// Sums the model work of every `ClipMetricsExec` in an executed plan.
    pub fn total(plan: &dyn ExecutionPlan) -> ModelStats {
        let mut total = ModelStats::default();
        let mut add = |m: &MetricsSet| {
            for (name, field) in METRICS {
                let value = m.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
                match field {
                    Field::Count(get) => *get(&mut total) += value,
                    Field::Time(get) => *get(&mut total) += Duration::from_nanos(value),
                }
            }
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

/// Where a metric lives in [`ModelStats`].
#[derive(Clone, Copy)]
enum Field {
    Count(fn(&mut ModelStats) -> &mut u64),
    Time(fn(&mut ModelStats) -> &mut Duration),
}

/// Every metric `ClipMetricsExec` reports, by its `EXPLAIN ANALYZE` name.
const METRICS: [(&str, Field); 11] = [
    ("images_decoded", Field::Count(|s| &mut s.images_decoded)),
    ("decode_errors", Field::Count(|s| &mut s.decode_errors)),
    ("decode_time", Field::Time(|s| &mut s.decode_time)),
    ("batches", Field::Count(|s| &mut s.vision_runs)),
    ("images_embedded", Field::Count(|s| &mut s.images_embedded)),
    ("inference_time", Field::Time(|s| &mut s.vision_time)),
    (
        "image_cache_hits",
        Field::Count(|s| &mut s.image_cache_hits),
    ),
    ("text_tower_runs", Field::Count(|s| &mut s.text_runs)),
    ("texts_embedded", Field::Count(|s| &mut s.texts_embedded)),
    ("text_time", Field::Time(|s| &mut s.text_time)),
    ("text_cache_hits", Field::Count(|s| &mut s.text_cache_hits)),
];

/// A partition's handle on one metric.
enum Handle {
    Count(Count),
    Time(Time),
}

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
        let handles = METRICS
            .iter()
            .map(|(name, field)| {
                let builder = MetricBuilder::new(&self.metrics).with_type(MetricType::Summary);
                match field {
                    Field::Count(_) => Handle::Count(builder.counter(*name, partition)),
                    Field::Time(_) => Handle::Time(builder.subset_time(*name, partition)),
                }
            })
            .collect();
        Ok(Box::pin(MetricsStream {
            input,
            scope: Arc::new(InferenceMetrics::default()),
            reported: ModelStats::default(),
            handles,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct MetricsStream {
    input: SendableRecordBatchStream,
    scope: Arc<InferenceMetrics>,
    reported: ModelStats,
    /// One per entry of [`METRICS`], in order.
    handles: Vec<Handle>,
}

impl MetricsStream {
    /// Moves what the scope counted since the last report into the metrics.
    fn report(&mut self) {
        let mut now = self.scope.snapshot();
        let mut was = std::mem::replace(&mut self.reported, now);
        for ((_, field), handle) in METRICS.iter().zip(&self.handles) {
            match (field, handle) {
                (Field::Count(get), Handle::Count(c)) => {
                    c.add(get(&mut now).saturating_sub(*get(&mut was)) as usize)
                }
                // `Time` rounds every addition up to at least 1ns: add only
                // real time.
                (Field::Time(get), Handle::Time(t)) => {
                    let (now, was) = (*get(&mut now), *get(&mut was));
                    if now > was {
                        t.add_duration(now - was)
                    }
                }
                _ => {}
            }
        }
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
