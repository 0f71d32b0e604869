//! ClipQL's execution-plan machinery beyond the scan: `EXPLAIN ANALYZE`
//! metrics for model work, and the codecs that ship plans to a cluster.

pub(crate) mod codec;
pub(crate) mod metrics;
