//! ferry: a Kafka consumer host that runs tenant stream processors as WebAssembly
//! components and commits only the offsets they report as finished.
//!
//! The layout follows the data, leaves first:
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | `ferry.toml`: the serde model, validated field by field |
//! | [`runtime`] | the one tokio runtime ferry owns, and the stop flag |
//! | [`sandbox`] | the wasmtime engine, components, capabilities, instances, faults |
//! | [`kafka`] | client configs, the consumer context, batch fetching, commits, the producer, the pure offset tracker, `ferry offsets` |
//! | [`pipeline`] | one consumer group member: the loop, settlement of outcomes, failures, stats |
//! | [`registry`] | the versions each pipeline runs, probation and rollback |
//! | [`shadow`] | a candidate version run beside the live one, and the comparison of the two |
//! | [`deploy`] | new versions in: the admin API endpoints, `ferry deploy`, watched directories |
//! | [`admin`] | the HTTP server: health, metrics, the status page |
//! | [`host`] | all of it running, and a bounded shutdown |
//! | [`tenant`] | the tenant's tools: `ferry new`, `build`, `test`, `dev` |
//! | [`cli`], [`demo`], [`devtools`] | the `ferry` command |
//!
//! Dependencies point down this table (`config` uses the sandbox's types; nothing
//! below `pipeline` knows it exists). `docs/architecture.md` follows one record from
//! poll to commit.

#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod cli;
pub mod config;
pub(crate) mod demo;
pub mod deploy;
pub mod devtools;
pub mod host;
pub mod kafka;
pub mod pipeline;
pub mod registry;
pub(crate) mod runtime;
pub mod sandbox;
pub mod shadow;
mod sync;
pub(crate) mod tenant;
