//! Everything that talks to Kafka: client configs, the consumer context that handles
//! rebalances, batch consumption, bounded commits, the output producer, and the offset tracker;
//! and the bare consume-and-commit loop the benchmarks hold ferry's pipeline to.

pub mod baseline;
pub mod client;
pub(crate) mod client_log;
pub(crate) mod commit;
pub(crate) mod context;
pub(crate) mod fetch;
pub mod offsets;
pub mod output;
pub(crate) mod tracker;
pub(crate) mod transaction;
pub(crate) mod wire_headers;
