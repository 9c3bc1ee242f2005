//! The pipeline's side of keyed state: one in-memory store per owned input
//! partition, restored from the partition's changelog before its first batch,
//! lent to the guest for each batch, and dropped when the partition is revoked or
//! starts again from an earlier offset (a rewind after an aborted transaction, a
//! restart from the bookmark): the next batch restores it again from what the
//! changelog holds, read_committed.
//!
//! The changelog is compacted and co-partitioned with the input: the state of input
//! partition p lives in changelog partition p, a put as (key, value), a delete as a
//! tombstone (key, null). Its records are produced like outputs of the batch that
//! wrote them (see `worker::run_and_settle`), so the bookmark never moves past
//! state that is not durable.
//!
//! A deploy with empty state raises the slot's state generation. At its next batch
//! boundary each worker empties the stores of the partitions it owns and queues a
//! tombstone for every key they held; the tombstones go out with the partition's
//! next finished batch, ahead of its own changes, on the same path (acknowledged
//! before the span is released, or in the same transaction). So the changelog never
//! resurrects an old key once the bookmark has passed that batch; until then a
//! rewind or restart to at or before it empties the restored state again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::tracker::TopicPartition;
use crate::sandbox::{PartitionStore, StateBatch, StateLimits};

/// How long a restore may go without reading anything before it gives up (and is
/// tried again at the partition's next batch).
const RESTORE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest single wait of a restore.
const RESTORE_POLL: Duration = Duration::from_millis(200);

/// The state of every input partition a worker owns.
pub(crate) struct StateKeeper {
    changelog: String,
    limits: StateLimits,
    /// The restore consumer's configuration (no group: it assigns, never commits).
    restore: ClientConfig,
    stores: BTreeMap<TopicPartition, PartitionStore>,
    /// The slot's state generation this worker's stores belong to.
    generation: u64,
    /// Partitions emptied by a deploy whose tombstones are not known to be durable.
    emptying: BTreeMap<TopicPartition, Emptying>,
}

/// A partition emptied by a deploy, until the bookmark passes the batch that
/// carried its tombstones.
#[derive(Debug, Default)]
struct Emptying {
    /// Keys to tombstone with the partition's next finished batch.
    tombstones: std::collections::BTreeSet<Vec<u8>>,
    /// The first offset of the batch that carried them.
    carried_from: Option<i64>,
    /// Empty the store again once it is restored.
    redo: bool,
}

/// What a restore read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Changelog records applied.
    pub records: u64,
    /// Keys in the store after it.
    pub keys: usize,
    /// The store's bytes after it.
    pub bytes: usize,
    /// Keys restored and then dropped again: a deploy with empty state whose
    /// tombstones the changelog may not hold yet.
    pub emptied: usize,
}

impl StateKeeper {
    /// A keeper of state kept in `changelog`, under `limits`, restored through a
    /// consumer of `brokers` with the host's librdkafka properties `kafka`.
    pub(crate) fn new(
        changelog: String,
        limits: StateLimits,
        brokers: &str,
        kafka: &BTreeMap<String, String>,
        generation: u64,
    ) -> Self {
        StateKeeper {
            changelog,
            limits,
            restore: restore_config(brokers, kafka),
            stores: BTreeMap::new(),
            generation,
            emptying: BTreeMap::new(),
        }
    }

    /// Moves to the slot's state `generation`: when it changed (a deploy with empty
    /// state), empties the state of `owned` and returns how many keys it dropped.
    pub(crate) fn follow_generation(
        &mut self,
        generation: u64,
        owned: impl IntoIterator<Item = TopicPartition>,
    ) -> usize {
        if generation == self.generation {
            return 0;
        }
        self.generation = generation;
        let mut owned: std::collections::BTreeSet<TopicPartition> = owned.into_iter().collect();
        owned.extend(self.stores.keys().cloned());
        owned.into_iter().map(|key| self.empty(&key)).sum()
    }

    /// Empties `key`'s state now if it is restored (returns how many keys it held),
    /// else once it is.
    fn empty(&mut self, key: &TopicPartition) -> usize {
        let emptying = self.emptying.entry(key.clone()).or_default();
        emptying.carried_from = None;
        let Some(store) = self.stores.get_mut(key) else {
            emptying.redo = true;
            return 0;
        };
        emptying.redo = false;
        let old = std::mem::take(store);
        let keys = old.keys();
        emptying.tombstones.extend(old.entries().map(|(k, _)| k.to_vec()));
        if emptying.tombstones.is_empty() {
            // Nothing to delete: nothing to make durable either.
            self.emptying.remove(key);
        }
        keys
    }

    /// The tombstones a deploy with empty state left for `key`, to go out with the
    /// finished batch that starts at `first`, ahead of its changes.
    pub(crate) fn take_tombstones(&mut self, key: &TopicPartition, first: i64) -> Vec<Vec<u8>> {
        match self.emptying.get_mut(key) {
            Some(emptying) if !emptying.tombstones.is_empty() && !emptying.redo => {
                emptying.carried_from = Some(first);
                std::mem::take(&mut emptying.tombstones).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// The changelog topic.
    pub(crate) fn changelog(&self) -> &str {
        &self.changelog
    }

    /// Whether `key`'s state is in memory.
    pub(crate) fn is_restored(&self, key: &TopicPartition) -> bool {
        self.stores.contains_key(key)
    }

    /// Restores `key`'s state from its changelog partition, from the beginning to
    /// the end (the last stable offset, read_committed).
    pub(crate) fn restore(&mut self, key: &TopicPartition) -> anyhow::Result<Restored> {
        let (store, records) = restore_partition(&self.restore, &self.changelog, key.1)?;
        self.stores.insert(key.clone(), store);
        // A deploy emptied it, and the changelog may not say so yet.
        let emptied = if self.emptying.get(key).is_some_and(|e| e.redo) { self.empty(key) } else { 0 };
        let store = &self.stores[key];
        Ok(Restored { records, keys: store.keys(), bytes: store.bytes(), emptied })
    }

    /// Keys and bytes of each partition's state in memory.
    pub(crate) fn figures(&self) -> Vec<(TopicPartition, (usize, usize))> {
        self.stores.iter().map(|(k, s)| (k.clone(), (s.keys(), s.bytes()))).collect()
    }

    /// Lends `key`'s state to a batch (it must be restored).
    pub(crate) fn lend(&mut self, key: &TopicPartition) -> StateBatch {
        let store = self.stores.remove(key).expect("state is restored before a batch");
        StateBatch::new(store, self.limits)
    }

    /// Takes a store back after its batch.
    pub(crate) fn give_back(&mut self, key: &TopicPartition, store: PartitionStore) -> (usize, usize) {
        let figures = (store.keys(), store.bytes());
        self.stores.insert(key.clone(), store);
        figures
    }

    /// Drops `key`'s state from memory: the partition was revoked (`from` is `None`)
    /// or starts again at offset `from`.
    pub(crate) fn forget(&mut self, key: &TopicPartition, from: Option<i64>) {
        self.stores.remove(key);
        let Some(emptying) = self.emptying.get_mut(key) else { return };
        match (from, emptying.carried_from) {
            // Revoked: the next owner restores what the changelog holds.
            (None, _) => {
                self.emptying.remove(key);
            }
            // The bookmark is past the batch that carried the tombstones: durable.
            (Some(from), Some(carried)) if from > carried => {
                self.emptying.remove(key);
            }
            // They may be lost with the batch: empty what is restored again.
            _ => {
                emptying.carried_from = None;
                emptying.redo = true;
            }
        }
    }
}

/// The configuration of a consumer that restores state from a changelog: reads
/// read_committed, assigns, never commits.
pub fn restore_config(brokers: &str, kafka: &BTreeMap<String, String>) -> ClientConfig {
    let mut restore = ClientConfig::new();
    for (key, value) in kafka {
        restore.set(key, value);
    }
    restore
        .set("bootstrap.servers", brokers)
        // Required by librdkafka's consumer; never joined (assign, no commits).
        .set("group.id", "ferry-state-restore")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The end of the partition is an empty fetch, which the broker holds back
        // this long (500 ms by default) in case records arrive.
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest");
    restore
}

/// Reads changelog partition `partition` of `topic` into a store.
pub fn restore_partition(config: &ClientConfig, topic: &str, partition: i32) -> anyhow::Result<(PartitionStore, u64)> {
    let consumer: BaseConsumer = config.create().context("failed to create the state restore consumer")?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Beginning).context("failed to name the changelog partition")?;
    // The restore ends at the first end-of-partition event at or past the end
    // taken here, before reading. Neither alone is enough: librdkafka's mock broker
    // reports an end of partition long before the end of a large one, and Tansu
    // reports a high watermark one past the base offset of the last record batch,
    // so the records after the first of that batch lie past it. A transaction
    // still open on the partition (none is, for exactly-once: the partition's
    // producer fenced and aborted the last owner's before this) holds the read back
    // until it ends or the restore gives up.
    let (start, end) = consumer
        .fetch_watermarks(topic, partition, RESTORE_IDLE_TIMEOUT)
        .with_context(|| format!("failed to read the end of changelog partition {topic}/{partition}"))?;
    if start >= end {
        return Ok((PartitionStore::default(), 0));
    }
    consumer.assign(&list).with_context(|| format!("failed to assign changelog partition {topic}/{partition}"))?;
    let mut store = PartitionStore::default();
    let mut records = 0u64;
    let mut next = 0i64;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(RESTORE_POLL) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                records += 1;
                next = message.offset() + 1;
                // Keyless records are not ferry's: nothing to restore from them.
                if let Some(key) = message.key() {
                    store.apply(key.to_vec(), message.payload().map(<[u8]>::to_vec));
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // Past the last data record there may be transaction markers, which
                // are never delivered: the consumer's position counts them.
                let position = consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(topic, partition).and_then(|e| e.offset().to_raw()))
                    .unwrap_or(0);
                if next.max(position) >= end {
                    return Ok((store, records));
                }
            }
            Some(Err(error)) => {
                tracing::debug!(topic, partition, %error, "state restore: consumer error");
                if last_progress.elapsed() > RESTORE_IDLE_TIMEOUT {
                    bail!("restoring state from {topic}/{partition}: {error}");
                }
            }
            None if last_progress.elapsed() > RESTORE_IDLE_TIMEOUT => {
                bail!("restoring state from {topic}/{partition}: nothing read for {RESTORE_IDLE_TIMEOUT:?}")
            }
            None => {}
        }
    }
}

impl super::worker::Worker {
    /// The partitions this worker owns: assigned, tracked, or with state in memory.
    fn owned_partitions(&self) -> Vec<TopicPartition> {
        let mut owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        if let Ok(assignment) = self.consumer.assignment() {
            owned.extend(assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())));
        }
        owned
    }

    /// Makes sure `key`'s state is in memory before a batch of it runs: restores it
    /// from the changelog when it is not (first batch since the partition was
    /// assigned, or since it started again from its bookmark). False when the
    /// restore failed: the batch waits, and the restore is tried again at the next.
    pub(super) fn ensure_state(&mut self, key: &TopicPartition) -> bool {
        let generation = self.state_generation;
        match self.state.as_ref() {
            None => return true,
            Some(keeper) if keeper.generation != generation => {
                let owned = self.owned_partitions();
                let keeper = self.state.as_mut().expect("checked");
                let dropped = keeper.follow_generation(generation, owned);
                tracing::info!(pipeline = %self.config.name, worker = self.shared.worker, keys = dropped, "keyed state emptied for the new version; each key is tombstoned with its partition's next batch");
                for (key, store) in self.state.iter().flat_map(|k| k.figures()) {
                    self.shared.stats.state_figures(&key.0, key.1, store.0, store.1, false);
                }
            }
            Some(_) => {}
        }
        let Some(keeper) = self.state.as_mut() else { return true };
        if keeper.is_restored(key) {
            return true;
        }
        let started = Instant::now();
        self.shared.stats.state_figures(&key.0, key.1, 0, 0, true);
        let restored = keeper.restore(key);
        let changelog = keeper.changelog().to_owned();
        let done = match restored {
            Ok(Restored { records, keys, bytes, emptied }) => {
                self.shared.stats.state_figures(&key.0, key.1, keys, bytes, false);
                tracing::info!(
                    pipeline = %self.config.name,
                    topic = %key.0,
                    partition = key.1,
                    changelog,
                    records,
                    keys,
                    bytes,
                    took_ms = started.elapsed().as_millis() as u64,
                    "state restored"
                );
                if emptied > 0 {
                    tracing::info!(pipeline = %self.config.name, topic = %key.0, partition = key.1, keys = emptied, "state emptied again after the restore: the deploy with empty state is not yet past the bookmark");
                }
                true
            }
            Err(error) => {
                self.shared.stats.note(&key.0, key.1, None, "state-restore", &format!("{error:#}"));
                tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, changelog, error = %format!("{error:#}"), "state not restored; the partition waits and tries again");
                false
            }
        };
        // A restore holds the thread like a guest call does.
        self.between_guest_calls();
        done && self.state.as_ref().is_some_and(|k| k.is_restored(key))
    }
}

/// How long the changelog check and creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the changelog topic at start: it must have as many partitions as the
/// input (the state of input partition p is changelog partition p); one that is
/// missing is created compacted with that many. A broker that does not serve
/// CreateTopics (librdkafka's mock, or a principal without Create) is not an error
/// here: the changelog's first write tells.
pub(crate) fn ensure_changelog(
    brokers: &str,
    kafka: &BTreeMap<String, String>,
    input: &str,
    changelog: &str,
    runtime: &crate::runtime::Runtime,
) -> anyhow::Result<()> {
    let reader = restore_config(brokers, kafka);
    let consumer: BaseConsumer = reader.create().context("failed to create a metadata reader")?;
    let partitions = |topic: &str| -> anyhow::Result<Option<usize>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .with_context(|| format!("failed to read the metadata of topic {topic}"))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    };
    let Some(inputs) = partitions(input)? else {
        tracing::warn!(input, changelog, "the input topic does not exist yet: the changelog is not checked");
        return Ok(());
    };
    match partitions(changelog)? {
        Some(n) if n == inputs => Ok(()),
        Some(n) => bail!(
            "the state changelog topic {changelog} has {n} partitions and the input {input} has {inputs}: the \
             state of input partition p is changelog partition p, so they must match (recreate the changelog, \
             or name another in state.changelog_topic)"
        ),
        None => {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                reader.create().context("failed to create an admin client")?;
            let topic = NewTopic::new(changelog, inputs as i32, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
                .set("min.compaction.lag.ms", "0");
            let options =
                AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
            match runtime.block_on(admin.create_topics([&topic], &options)) {
                Ok(results) => {
                    for result in results {
                        match result {
                            Ok(name) => {
                                tracing::info!(topic = %name, partitions = inputs, "created the compacted state changelog")
                            }
                            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((name, code)) => {
                                tracing::warn!(topic = %name, error = %code, "the broker did not create the state changelog")
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(topic = changelog, %error, "the broker did not create the state changelog")
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper() -> StateKeeper {
        StateKeeper::new("c".into(), StateLimits::default(), "127.0.0.1:1", &BTreeMap::new(), 0)
    }

    fn tp(p: i32) -> TopicPartition {
        ("in".to_owned(), p)
    }

    /// A keeper whose partition 0 holds `keys` (as if restored).
    fn with_keys(keys: &[&str]) -> StateKeeper {
        let mut keeper = keeper();
        let mut store = PartitionStore::default();
        for key in keys {
            store.apply(key.as_bytes().to_vec(), Some(b"1".to_vec()));
        }
        keeper.stores.insert(tp(0), store);
        keeper
    }

    fn tombstones(keeper: &mut StateKeeper, first: i64) -> Vec<String> {
        keeper.take_tombstones(&tp(0), first).into_iter().map(|k| String::from_utf8(k).unwrap()).collect()
    }

    #[test]
    fn a_new_generation_empties_the_store_and_tombstones_its_keys_once() {
        let mut keeper = with_keys(&["a", "b"]);
        assert_eq!(keeper.follow_generation(0, [tp(0)]), 0, "the same generation changes nothing");
        assert_eq!(keeper.follow_generation(1, [tp(0), tp(1)]), 2);
        assert_eq!(keeper.stores[&tp(0)].keys(), 0, "emptied in memory at once");
        assert_eq!(tombstones(&mut keeper, 10), ["a", "b"]);
        assert_eq!(tombstones(&mut keeper, 11), Vec::<String>::new(), "sent once");
        // The bookmark passed the batch that carried them: a restart keeps them done.
        keeper.forget(&tp(0), Some(11));
        assert!(!keeper.emptying.contains_key(&tp(0)));
    }

    #[test]
    fn a_rewind_to_the_carrying_batch_or_before_empties_the_restored_state_again() {
        let mut keeper = with_keys(&["a", "b"]);
        keeper.follow_generation(1, [tp(0)]);
        assert_eq!(tombstones(&mut keeper, 10), ["a", "b"]);
        keeper.forget(&tp(0), Some(10));
        assert!(keeper.emptying[&tp(0)].redo, "the batch at 10 runs again: its tombstones may be lost");
        // What the next restore brings (here the old keys and one the new version wrote).
        let mut restored = PartitionStore::default();
        for key in ["a", "b", "c"] {
            restored.apply(key.as_bytes().to_vec(), Some(b"1".to_vec()));
        }
        keeper.stores.insert(tp(0), restored);
        assert_eq!(keeper.empty(&tp(0)), 3);
        assert_eq!(tombstones(&mut keeper, 10), ["a", "b", "c"]);
    }

    #[test]
    fn a_partition_not_restored_is_emptied_once_it_is_and_a_revoke_drops_the_duty() {
        let mut keeper = keeper();
        assert_eq!(keeper.follow_generation(1, [tp(2)]), 0);
        assert!(keeper.emptying[&tp(2)].redo, "emptied when restored");
        keeper.forget(&tp(2), None);
        assert!(!keeper.emptying.contains_key(&tp(2)), "the next owner restores what the changelog holds");
        // Restored empty: no tombstones, and no duty left for a later rewind.
        keeper.follow_generation(2, [tp(2)]);
        keeper.stores.insert(tp(2), PartitionStore::default());
        assert_eq!(keeper.empty(&tp(2)), 0);
        assert!(!keeper.emptying.contains_key(&tp(2)));
    }
}
