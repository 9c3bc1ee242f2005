//! The fastest consume-and-commit loop librdkafka allows, as a yardstick for ferry's
//! pipeline: the benchmarks run both on the same topic. It consumes the way ferry
//! does (every assigned partition's fetch queue forwarded to one queue, drained up to
//! 1024 records at a time, [`super::fetch`]) and commits on ferry's per-batch policy
//! (after every fetch, one request in flight, the next sent as soon as the last is
//! answered, [`super::commit`]), and does nothing else: no guest, no batches per
//! partition, no offset tracker, no outputs. It touches each record's key, value and
//! offset, and commits each partition's last offset + 1.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::commit::Committer;
use super::fetch::{FetchQueue, FetchRoute};
use crate::sync::lock;

/// Records taken from the queue at a time, as ferry's pipeline takes them.
const FETCH_MAX: usize = 1024;

/// When things happened in a [`consume_and_commit`] run.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRun {
    /// The group's first assignment.
    pub assigned: Instant,
    /// The record after `flowing_after` records arrived.
    pub flowing: Instant,
    /// The last record arrived.
    pub last_record: Instant,
    /// The commit result that covered every record arrived.
    pub last_commit: Instant,
}

/// Routes assigned partitions to the fetch queue, and remembers the first assignment.
struct Context {
    route: FetchRoute,
    assigned: Mutex<Option<Instant>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            lock(&self.assigned).get_or_insert_with(Instant::now);
            for element in list.elements() {
                self.route.route(consumer, element.topic(), element.partition());
            }
        }
    }
}

/// Consumes `records` records of `topics` as a member of the group `config` names,
/// committing as it goes, until a commit covering all of them is acknowledged. Gives
/// up after `patience`.
pub fn consume_and_commit(
    config: &ClientConfig,
    topics: &[&str],
    records: u64,
    flowing_after: u64,
    patience: Duration,
) -> anyhow::Result<BaselineRun> {
    let route = FetchRoute::default();
    let consumer: BaseConsumer<Context> = config
        .create_with_context(Context { route: route.clone(), assigned: Mutex::new(None) })
        .context("failed to create the baseline consumer")?;
    let mut queue = FetchQueue::new(&consumer, &route).context("failed to create the fetch queue")?;
    let mut committer = Committer::new(&consumer);
    committer.signal_to(queue.wake_signal());
    consumer.subscribe(topics).context("failed to subscribe")?;

    let started = Instant::now();
    // Next offset per (topic handle, partition); topic names looked up once per handle.
    let mut next: HashMap<(usize, i32), i64> = HashMap::new();
    let mut names: HashMap<usize, String> = HashMap::new();
    let (mut seen, mut committed) = (0u64, 0i64);
    let (mut flowing, mut last_record, mut last_commit) = (None, None, None);
    let mut uncommitted = false;
    while last_commit.is_none() {
        if started.elapsed() > patience {
            bail!("the baseline consumer read {seen} of {records} records and committed {committed}");
        }
        if queue.consumer_events_waiting() {
            // Rebalances and errors; records all come through the fetch queue.
            if let Some(Err(error)) = consumer.poll(Duration::ZERO) {
                tracing::warn!(%error, "baseline consumer");
            }
        }
        let fetched = queue.fetch(FETCH_MAX);
        let taken = fetched.len();
        for message in fetched.iter_from(0) {
            if message.error().is_some() {
                continue;
            }
            black_box((message.key(), message.value()));
            let handle = message.topic_handle().addr();
            names.entry(handle).or_insert_with(|| message.topic().into_owned());
            next.insert((handle, message.partition()), message.offset() + 1);
            seen += 1;
            if seen == flowing_after {
                flowing = Some(Instant::now());
            }
        }
        queue.recycle(fetched);
        if taken > 0 {
            uncommitted = true;
            if seen >= records && last_record.is_none() {
                last_record = Some(Instant::now());
            }
        }
        for result in committer.poll(Duration::ZERO) {
            if !result.errors.is_empty() {
                tracing::warn!(errors = ?result.errors, "baseline commit");
            }
            committed = committed.max(result.committed.iter().map(|(_, _, offset)| offset).sum());
            if committed >= records as i64 {
                last_commit = Some(Instant::now());
            }
        }
        if uncommitted && committer.in_flight() == 0 {
            let mut list = TopicPartitionList::new();
            for (&(handle, partition), &offset) in &next {
                list.add_partition_offset(&names[&handle], partition, Offset::Offset(offset))?;
            }
            committer.send(&consumer, &list).map_err(|error| anyhow::anyhow!("commit refused: {error}"))?;
            uncommitted = false;
        } else if taken == 0 {
            queue.wait(Duration::from_millis(10));
        }
    }
    let assigned = lock(&consumer.context().assigned).context("never assigned")?;
    let last_record = last_record.context("no last record")?;
    drop(queue);
    Ok(BaselineRun {
        assigned,
        flowing: flowing.unwrap_or(assigned),
        last_record,
        last_commit: last_commit.context("no last commit")?,
    })
}
