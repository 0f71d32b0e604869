//! One file per `clipql` command: what it does with its parsed flags.

pub(crate) mod batch;
pub(crate) mod cluster;
pub(crate) mod model;
pub(crate) mod sql;
