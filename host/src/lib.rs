//! ferry: a Kafka consumer host that runs tenant stream processors as WebAssembly
//! components and commits only the offsets they report as finished.
//!
//! The layout follows the data: [`config`] describes pipelines, [`kafka`] owns the
//! consumer, commits and producer, [`sandbox`] runs guests safely, [`pipeline`]
//! joins them per partition, [`registry`] holds the versions being run.

pub mod admin;
pub mod cli;
pub mod cli_deploy;
pub mod config;
pub mod demo;
pub mod devtools;
pub mod host;
pub mod kafka;
pub mod pipeline;
pub mod registry;
pub mod sandbox;
pub mod watch;
