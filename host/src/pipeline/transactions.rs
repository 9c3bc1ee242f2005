//! The transactions of an exactly-once pipeline: one transactional producer per
//! assigned input partition ([`crate::kafka::transaction`] says why per partition),
//! and where each partition stands.
//!
//! A partition takes records only once it is *ready*: its producer was initialized
//! (fencing the previous owner and settling its open transaction), and the consumer
//! was moved to the committed offset read after that. Until then, and again after
//! an abort or a fence, it is paused and whatever it delivers is passed over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use crate::kafka::tracker::TopicPartition;
use crate::kafka::transaction::{Recovery, StartError, TxnProducer};

/// How long a partition waits before its producer is made again after it was
/// fenced: long enough for the consumer to hear that the partition moved (a few
/// heartbeats), so that a member that was stopped does not take it back from its
/// new owner, only to be fenced again.
pub const REFENCE_PAUSE: Duration = Duration::from_secs(5);
/// How long an abort may take where one that does not go through changes nothing
/// (the partition is leaving, or the host is): the next owner's producer aborts it.
pub const LAST_ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failed initialization waits before the next attempt.
pub const INIT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Partition {
    producer: Option<TxnProducer>,
    ready: bool,
    not_before: Instant,
    /// Halted: never made ready again in this assignment.
    halted: bool,
}

/// The transactional producers of one pipeline, by input partition.
pub struct Transactions {
    config: ClientConfig,
    id_prefix: String,
    /// Bound of each blocking transactional call.
    pub call_timeout: Duration,
    /// Where a partition without a committed offset starts: the log end
    /// (`auto.offset.reset` = latest), or its beginning.
    pub reset_to_latest: bool,
    partitions: HashMap<TopicPartition, Partition>,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transactions").field("id_prefix", &self.id_prefix).finish_non_exhaustive()
    }
}

impl Transactions {
    /// Producers made from `config`, with ids `<prefix>.<group>.<topic>.<partition>`.
    pub fn new(config: ClientConfig, prefix: &str, group: &str, call_timeout: Duration, reset_to_latest: bool) -> Self {
        Self {
            config,
            id_prefix: format!("{prefix}.{group}."),
            call_timeout,
            reset_to_latest,
            partitions: HashMap::new(),
        }
    }

    /// The `transactional.id` of a partition.
    pub fn id_of(&self, (topic, partition): &TopicPartition) -> String {
        format!("{}{topic}.{partition}", self.id_prefix)
    }

    /// A partition was assigned: it waits for its producer.
    pub fn assigned(&mut self, key: &TopicPartition, now: Instant) {
        self.partitions.insert(key.clone(), Partition { producer: None, ready: false, not_before: now, halted: false });
    }

    /// A partition left: its producer, if any, goes with it.
    pub fn remove(&mut self, key: &TopicPartition) -> Option<TxnProducer> {
        self.partitions.remove(key).and_then(|p| p.producer)
    }

    /// Whether records of `key` may be taken.
    pub fn is_ready(&self, key: &TopicPartition) -> bool {
        self.partitions.get(key).is_some_and(|p| p.ready)
    }

    /// Partitions waiting to be made ready whose time has come.
    pub fn due(&self, now: Instant) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, p)| !p.ready && !p.halted && p.not_before <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Makes sure `key` has an initialized producer (made and initialized now if it
    /// has none: this fences every earlier producer of the partition). On failure the
    /// partition waits [`INIT_RETRY`], or for good if its configuration is refused.
    pub fn ensure_producer(&mut self, key: &TopicPartition, now: Instant) -> Result<(), StartError> {
        let id = self.id_of(key);
        let (config, timeout) = (&self.config, self.call_timeout);
        let Some(p) = self.partitions.get_mut(key) else { return Err(StartError::Init("not assigned".to_owned())) };
        if p.producer.is_some() {
            return Ok(());
        }
        match TxnProducer::start(config, &id, timeout) {
            Ok(producer) => {
                p.producer = Some(producer);
                Ok(())
            }
            Err(error) => {
                p.not_before = now + INIT_RETRY;
                p.halted |= matches!(error, StartError::Config(_));
                Err(error)
            }
        }
    }

    /// Records of `key` may be taken from now on.
    pub fn mark_ready(&mut self, key: &TopicPartition) {
        if let Some(p) = self.partitions.get_mut(key) {
            p.ready = true;
        }
    }

    /// The producer of a ready partition.
    pub fn producer(&mut self, key: &TopicPartition) -> Option<&mut TxnProducer> {
        self.partitions.get_mut(key).filter(|p| p.ready).and_then(|p| p.producer.as_mut())
    }

    /// Ready partitions, to commit.
    pub fn ready(&self) -> Vec<TopicPartition> {
        self.partitions.iter().filter(|(_, p)| p.ready).map(|(k, _)| k.clone()).collect()
    }

    /// A transaction of `key` failed: the partition is not ready until it was moved
    /// back to its committed offset; after [`Recovery::Recreate`] its producer is
    /// dropped and made again after [`REFENCE_PAUSE`].
    pub fn failed(&mut self, key: &TopicPartition, recovery: &Recovery, now: Instant) {
        let Some(p) = self.partitions.get_mut(key) else { return };
        p.ready = false;
        if let Recovery::Recreate(_) = recovery {
            p.producer = None;
            p.not_before = now + REFENCE_PAUSE;
        }
    }

    /// `key` stays where it is, paused, until it is assigned again: after a
    /// transaction failure that would come back if its records ran again.
    pub fn halt(&mut self, key: &TopicPartition) {
        if let Some(p) = self.partitions.get_mut(key) {
            p.ready = false;
            p.halted = true;
        }
    }

    /// Every producer, for the last commit at shutdown.
    pub fn keys(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }
}
