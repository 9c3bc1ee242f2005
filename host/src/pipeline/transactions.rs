//! The transactions of an exactly-once pipeline: one transactional producer per
//! assigned input partition ([`crate::kafka::transaction`] says why per partition),
//! and where each partition stands.
//!
//! A partition takes records only once it is *ready*: its producer was initialized
//! (fencing the previous owner and settling its open transaction), and the consumer
//! was moved to the committed offset read after that. Until then, and again after
//! an abort or a fence, it is paused and whatever it delivers is passed over.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use crate::kafka::tracker::TopicPartition;
use crate::kafka::transaction::{Recovery, StartError, TxnProducer};

/// How long a partition waits before its producer is made again after it was
/// fenced: long enough for the consumer to hear that the partition moved (a few
/// heartbeats), so that a member that was stopped does not take it back from its
/// new owner, only to be fenced again.
pub(crate) const REFENCE_PAUSE: Duration = Duration::from_secs(5);
/// How long an abort may take where one that does not go through changes nothing
/// (the partition is leaving, or the host is): the next owner's producer aborts it.
pub(crate) const LAST_ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failed initialization waits before the next attempt.
pub(crate) const INIT_RETRY: Duration = Duration::from_secs(1);
/// How many producers of one worker start at once (each a librdkafka client with
/// its threads and connections while it starts).
pub(crate) const STARTS_AT_ONCE: usize = 64;

/// The `transactional.id` of a partition of a pipeline:
/// `<prefix>:<bytes in group>:<group>:<topic>:<partition>`.
///
/// It must be injective: two pipelines that share an id fence each other forever
/// (with dots for separators, group `orders.v2` with topic `events` and group
/// `orders` with topic `v2.events` both gave `ferry.orders.v2.events.0`). Neither a
/// prefix (checked by the configuration) nor a topic name (Kafka's rule) holds a
/// `:`, and the group, which may hold anything, is preceded by its length, so the
/// id reads back one way only (the tests read it back).
pub(crate) fn transactional_id(prefix: &str, group: &str, topic: &str, partition: i32) -> String {
    format!("{prefix}:{}:{group}:{topic}:{partition}", group.len())
}

#[derive(Debug)]
struct Partition {
    producer: Option<TxnProducer>,
    /// The producer's start, running on a thread of its own, which hands its result
    /// over here before it wakes the worker.
    starting: Option<Receiver<Result<TxnProducer, StartError>>>,
    ready: bool,
    not_before: Instant,
    /// Halted: never made ready again in this assignment.
    halted: bool,
}

/// A start whose thread ended without a result.
fn panicked() -> StartError {
    StartError::Init("the start panicked".to_owned())
}

/// The producer of a partition that leaves, once its start (if one runs) ended.
fn finish(partition: Partition) -> Option<TxnProducer> {
    match partition.starting {
        Some(start) => start.recv().ok().and_then(Result::ok),
        None => partition.producer,
    }
}

/// The transactional producers of one pipeline, by input partition.
pub struct Transactions {
    config: ClientConfig,
    /// `transactional_id_prefix` of the pipeline.
    id_prefix: String,
    group: String,
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
    /// Producers made from `config`, with ids from [`transactional_id`].
    pub fn new(config: ClientConfig, prefix: &str, group: &str, call_timeout: Duration, reset_to_latest: bool) -> Self {
        Self {
            config,
            id_prefix: prefix.to_owned(),
            group: group.to_owned(),
            call_timeout,
            reset_to_latest,
            partitions: HashMap::new(),
        }
    }

    /// The `transactional.id` of a partition.
    pub fn id_of(&self, (topic, partition): &TopicPartition) -> String {
        transactional_id(&self.id_prefix, &self.group, topic, *partition)
    }

    /// A partition was assigned: it waits for its producer.
    pub fn assigned(&mut self, key: &TopicPartition, now: Instant) {
        let fresh = Partition { producer: None, starting: None, ready: false, not_before: now, halted: false };
        if let Some(earlier) = self.partitions.insert(key.clone(), fresh) {
            // Assigned again without a revoke: a start still running ends first, so
            // that it cannot fence the producer that starts next.
            drop(finish(earlier));
        }
    }

    /// The partitions in `keys` leave: each producer aborts what it has open (a
    /// transaction that did not commit must never become visible) and is closed.
    /// Side by side: a producer takes tens of milliseconds to close, and a revoke or
    /// a shutdown of hundreds of partitions must stay within its bound.
    pub fn close(&mut self, keys: &[TopicPartition]) {
        let producers: Vec<TxnProducer> = keys.iter().filter_map(|key| self.remove(key)).collect();
        let per_thread = producers.len().div_ceil(STARTS_AT_ONCE).max(1);
        let mut producers = producers.into_iter();
        std::thread::scope(|scope| {
            loop {
                let chunk: Vec<TxnProducer> = producers.by_ref().take(per_thread).collect();
                if chunk.is_empty() {
                    break;
                }
                scope.spawn(move || {
                    for mut producer in chunk {
                        let _ = producer.abort(LAST_ABORT_TIMEOUT);
                    }
                });
            }
        });
    }

    /// A partition left: its producer, if any, goes with it (one still starting
    /// first ends its start: a start that went on after the partition moved would
    /// fence its next owner).
    pub fn remove(&mut self, key: &TopicPartition) -> Option<TxnProducer> {
        self.partitions.remove(key).and_then(finish)
    }

    /// Whether records of `key` may be taken.
    pub fn is_ready(&self, key: &TopicPartition) -> bool {
        self.partitions.get(key).is_some_and(|p| p.ready)
    }

    /// Partitions waiting to be made ready whose time has come.
    pub fn due(&self, now: Instant) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, p)| !p.ready && !p.halted && p.not_before <= now && p.starting.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Starts a producer for each of `keys` that has none, each on a thread of its
    /// own, at most [`STARTS_AT_ONCE`] at a time: an initialization waits on the
    /// broker (up to 3 × the call timeout while it settles a previous owner's
    /// transaction), and the partitions' producers are independent, so a worker
    /// given 64 partitions goes on serving those that are ready while the others
    /// start. Each start that ends writes to `wake`, the worker's wake-up signal;
    /// [`Self::take_started`] collects them.
    pub fn start_producers(&mut self, keys: &[TopicPartition], wake: &Arc<UnixStream>) {
        let mut room = STARTS_AT_ONCE.saturating_sub(self.partitions.values().filter(|p| p.starting.is_some()).count());
        for key in keys {
            if room == 0 {
                return;
            }
            let id = self.id_of(key);
            let Some(p) = self.partitions.get_mut(key).filter(|p| p.producer.is_none() && p.starting.is_none()) else {
                continue;
            };
            let (config, timeout, wake) = (self.config.clone(), self.call_timeout, wake.clone());
            let (result, starting) = mpsc::channel();
            p.starting = Some(starting);
            std::thread::spawn(move || {
                // The partition takes the result, or waits for it when it leaves.
                let _ = result.send(TxnProducer::start(&config, &id, timeout));
                // A full signal already wakes the worker.
                let _ = (&*wake).write(b"!");
            });
            room -= 1;
        }
    }

    /// Takes the producers whose start ended: each started one is the partition's,
    /// and a partition whose start failed waits [`INIT_RETRY`], or for good if its
    /// configuration or the broker refuses it for good. Returns the failures.
    pub fn take_started(&mut self, now: Instant) -> Vec<(TopicPartition, StartError)> {
        let mut failures = Vec::new();
        for (key, p) in &mut self.partitions {
            let result = match p.starting.as_ref().map(Receiver::try_recv) {
                None | Some(Err(TryRecvError::Empty)) => continue,
                Some(Ok(result)) => result,
                Some(Err(TryRecvError::Disconnected)) => Err(panicked()),
            };
            p.starting = None;
            match result {
                Ok(producer) => p.producer = Some(producer),
                Err(error) => {
                    p.not_before = now + INIT_RETRY;
                    p.halted |= matches!(error, StartError::Config(_) | StartError::Refused(_));
                    failures.push((key.clone(), error));
                }
            }
        }
        failures
    }

    /// Partitions due to be made ready whose producer has started: next, their
    /// committed offsets.
    pub fn started(&self, now: Instant) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.producer.is_some() && !p.ready && !p.halted && p.not_before <= now)
            .map(|(k, _)| k.clone())
            .collect()
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

    /// The producers of those of `keys` that are ready, each borrowed on its own
    /// (so their transactions can commit side by side).
    pub fn producers_mut(&mut self, keys: &[TopicPartition]) -> Vec<(TopicPartition, &mut TxnProducer)> {
        self.partitions
            .iter_mut()
            .filter(|(key, p)| p.ready && keys.contains(key))
            .filter_map(|(key, p)| Some((key.clone(), p.producer.as_mut()?)))
            .collect()
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

    /// Making `key` ready failed after its producer started (reading the committed
    /// offset, the seek): try again after [`INIT_RETRY`], not at once.
    pub fn retry_later(&mut self, key: &TopicPartition, now: Instant) {
        if let Some(p) = self.partitions.get_mut(key) {
            p.ready = false;
            p.not_before = now + INIT_RETRY;
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The parts of an id, read back: `None` where it is not one [`transactional_id`] makes.
    pub(super) fn read_back(id: &str) -> Option<(String, String, String, i32)> {
        let (prefix, rest) = id.split_once(':')?;
        let (length, rest) = rest.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let group = rest.get(..length)?;
        let (topic, partition) = rest.get(length..)?.strip_prefix(':')?.split_once(':')?;
        Some((prefix.to_owned(), group.to_owned(), topic.to_owned(), partition.parse().ok()?))
    }

    /// Partitions start on their own: one whose start runs is not started again,
    /// each is taken once its producer is up (the worker woken for it, the result
    /// there before the wake-up), and a partition that leaves while its start runs
    /// is closed only after the start ended, so that no start goes on to fence the
    /// partition's next owner.
    #[test]
    fn partitions_start_on_their_own_and_a_close_waits_for_a_start_still_running() {
        use std::io::Read as _;

        let cluster = rdkafka::mocking::MockCluster::<rdkafka::producer::DefaultProducerContext>::new(1).unwrap();
        let config = crate::kafka::client::transactional_producer_config(
            &cluster.bootstrap_servers(),
            &std::collections::BTreeMap::new(),
            10_000,
            Duration::from_millis(5),
        );
        let mut transactions = Transactions::new(config, "ferry", "g", Duration::from_secs(10), false);
        let keys: Vec<TopicPartition> = (0..4).map(|p| ("in".to_owned(), p)).collect();
        let now = Instant::now();
        for key in &keys {
            transactions.assigned(key, now);
        }
        let (wake, mut woken) = UnixStream::pair().unwrap();
        let wake = Arc::new(wake);
        transactions.start_producers(&keys[..3], &wake);
        let due = transactions.due(now);
        assert_eq!(due, vec![keys[3].clone()], "the partitions whose starts run are not due again");
        let mut started = Vec::new();
        while started.len() < 3 {
            woken.read_exact(&mut [0]).unwrap();
            assert!(transactions.take_started(now).is_empty(), "no start fails");
            started = transactions.started(now);
        }
        started.sort();
        assert_eq!(started, keys[..3].to_vec());
        assert!(keys[..3].iter().all(|key| !transactions.is_ready(key)), "ready only once moved to the bookmark");

        // Closed while its start runs: the close takes the started producer (and
        // aborts and drops it), so nothing of the start outlives the partition.
        transactions.start_producers(&keys[3..], &wake);
        transactions.close(&keys[3..]);
        assert!(!transactions.keys().contains(&keys[3]), "the partition left");
        woken.read_exact(&mut [0]).unwrap();
    }

    #[test]
    fn the_ids_that_collided_with_dots_differ() {
        assert_ne!(
            transactional_id("ferry", "orders.v2", "events", 0),
            transactional_id("ferry", "orders", "v2.events", 0)
        );
        assert_eq!(transactional_id("ferry", "orders", "events", 3), "ferry:6:orders:events:3");
    }

    proptest! {
        /// Every id reads back to the pipeline and partition it was made for, so no
        /// two different ones share an id.
        #[test]
        fn an_id_names_one_partition_of_one_pipeline(
            prefix in "[A-Za-z0-9._-]{1,20}",
            group in "\\PC{0,30}",
            topic in "[A-Za-z0-9._-]{1,30}",
            partition in 0..100_000i32,
        ) {
            let id = transactional_id(&prefix, &group, &topic, partition);
            prop_assert_eq!(read_back(&id), Some((prefix, group, topic, partition)));
        }

        /// Ids of two different partitions or pipelines differ, including where the
        /// group holds separators.
        #[test]
        fn different_pipelines_get_different_ids(
            a in ("[a-z.:]{1,6}", "[a-z.:]{1,6}", 0..3i32),
            b in ("[a-z.:]{1,6}", "[a-z.:]{1,6}", 0..3i32),
        ) {
            // The topic alphabet has no `:`: keep it out of the topic, as Kafka does.
            let (ta, tb) = (a.1.replace(':', "_"), b.1.replace(':', "_"));
            prop_assume!((&a.0, &ta, a.2) != (&b.0, &tb, b.2));
            prop_assert_ne!(transactional_id("p", &a.0, &ta, a.2), transactional_id("p", &b.0, &tb, b.2));
        }
    }
}
