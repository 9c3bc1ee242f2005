//! Group-wide deploys through Kafka itself: component versions kept in a compacted
//! topic (`[fleet] components_topic`, default [`DEFAULT_TOPIC`]), which every host of
//! a `group_deploy = true` pipeline follows for its environment (`[fleet]
//! environment`), taking only versions signed by a key it trusts (`[fleet]
//! trusted_keys`).
//!
//! | module | concern |
//! |---|---|
//! | [`record`] | keys, manifests, member reports; chunking and reassembly with every check (pure) |
//! | [`signing`] | publisher keys, their files, signing and verifying manifests |
//! | [`catalog`] | what the topic holds for one pipeline of one environment, manifests judged (pure) |
//! | [`topic`] | reading the topic (no group, no commits), fetching a version's chunks |
//! | [`writer`] | writing it: one partition per pipeline and environment, acks=all |
//! | [`publish`] | `ferry deploy --group`: publish a version, or roll back to an earlier one |
//! | [`prune`] | `ferry versions --group --prune`: tombstones for versions no longer needed |
//! | [`startup`] | which version a host starts on, and why |
//! | [`watch`] | a host following the topic: judge, verify, compile, self-test, switch, retry; member reports |
//! | [`command`] | the command line: `ferry deploy --group`, `ferry versions --group`, `ferry keys` |
//! | [`members`] | `ferry versions --group`: live members of the group, their versions, who lags |
//!
//! A version is written chunk by chunk, then its manifest once every chunk is
//! acknowledged. The manifest carries a sequence number and is signed (Ed25519)
//! over every field; a host takes it only if it is signed by a trusted key, for
//! its environment and pipeline, and outranks every manifest it took before. It
//! then checks chunk count, sizes and the sha256 over the whole before it compiles
//! anything, and deploys exactly as the admin API does ([`super::deploy`]:
//! self-test with this host's limits, probation, switch at a batch boundary). Who
//! may write the topic can disturb deploys (delete records, refuse service), but
//! without a trusted key cannot get a version running.

pub mod catalog;
pub mod command;
pub mod members;
pub mod prune;
pub mod publish;
pub mod record;
pub mod signing;
pub(crate) mod startup;
pub mod topic;
pub(crate) mod watch;
pub mod writer;

/// The components topic unless `[fleet] components_topic` names another.
pub const DEFAULT_TOPIC: &str = "_ferry.components";

/// A number that differs between processes and calls: nanoseconds of the clock
/// mixed with a counter.
pub(crate) fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}", nanos ^ COUNT.fetch_add(1, Ordering::Relaxed).rotate_left(48))
}

/// This machine's host name, for reports and publisher names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The `client.id` ferry gives the consumer of a `group_deploy` pipeline:
/// `<prefix>.<pipeline>.<host>.<pid>.<nonce>`, unique per process, so that
/// `ferry versions --group` can match the group's members (which the coordinator
/// lists with their client ids) to the reports they write.
pub(crate) fn member_client_id(prefix: &str, pipeline: &str) -> String {
    format!("{prefix}.{pipeline}.{}.{}.{}", hostname(), std::process::id(), nonce())
}
