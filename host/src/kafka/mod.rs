//! Everything that talks to Kafka: client configs, the consumer context that handles
//! rebalances, batch consumption, bounded commits, the output producer, and the offset tracker.

pub mod client;
pub mod client_log;
pub mod commit;
pub mod context;
pub mod fetch;
pub mod offsets;
pub mod output;
pub mod tracker;
pub mod transaction;
