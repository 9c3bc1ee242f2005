//! The loop of one pipeline: poll records, batch them per partition, run them
//! through the guest, apply the failure policy, produce outputs, and commit what is
//! finished.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use ferry_sdk::wire::BatchEncoder;

use super::partition::{Admission, PartitionState};
use super::stats::BatchCounts;
use super::verdict::{Verdict, run_batch};
use crate::config::{CommitPolicy, FailurePolicy, OnFailure, PipelineConfig};
use crate::kafka::context::{FerryContext, SYNC_COMMIT_TIMEOUT, Shared};
use crate::kafka::fetch::{Delivered, FetchQueue, Fetched};
use crate::kafka::output::{self, AckGroup, Outgoing, OutputProducer};
use crate::registry::ProcessorSlot;
use crate::sandbox::{Batch, ProcessorInstance, Sandbox};

/// How long shutdown waits for in-flight outputs before its final commit.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a single poll blocks, so timers and shutdown are noticed.
const MAX_POLL: Duration = Duration::from_millis(50);
/// How often, at most, the loop collects the results of earlier commits between
/// commits (a poll of the commit queue per record is a measurable cost).
const COMMIT_RESULTS_EVERY: Duration = Duration::from_millis(1);

/// Everything one pipeline thread owns.
pub struct Worker {
    pub(super) config: Arc<PipelineConfig>,
    /// Declared before the consumer: its queues must go first.
    pub(super) fetch: FetchQueue,
    pub(super) consumer: BaseConsumer<FerryContext>,
    pub(super) shared: Arc<Shared>,
    pub(super) producer: Option<OutputProducer>,
    pub(super) sandbox: Sandbox,
    pub(super) slot: ProcessorSlot,
    pub(super) instance: ProcessorInstance,
    pub(super) partitions: BTreeMap<(String, i32), PartitionState>,
    /// The batch passed to the guest; its buffer is reused across batches.
    pub(super) batch: Batch,
    pub(super) last_commit: Instant,
    /// A batch finished since the last commit (for the per-batch policy).
    pub(super) batch_finished: bool,
}

impl Worker {
    /// Runs until `shutdown` is set, then drains and commits.
    pub fn run(mut self, shutdown: &AtomicBool) {
        let batch_size = self.config.batch_size;
        let max_wait = Duration::from_millis(self.config.max_wait_ms);
        // Records arrive up to FETCH_MAX at a time (kafka::fetch), so per-turn work is
        // spread over many records, and they are taken in per-partition runs (one map
        // lookup per run). Per record: no clock read and no allocation. Batches due by
        // `max_wait_ms` are looked for only once the earliest can be due (`next_due`, a
        // lower bound).
        let mut now = Instant::now();
        let mut next_due: Option<Instant> = None;
        let mut results_polled = now;
        while !shutdown.load(Ordering::Relaxed) {
            self.serve_events(&mut next_due);
            self.rewind_due_retries(now);
            let fetched = self.fetch.fetch(FETCH_MAX);
            let taken = fetched.len();
            // Partitions revoked while this fetch is being worked through: their
            // remaining records belong to the next owner, who reads them from the
            // committed offset.
            let mut gone: Vec<(String, i32)> = Vec::new();
            let mut at = 0;
            while at < taken {
                let (run, full) = take_run(&mut self.partitions, &fetched, at, &mut next_due, &self.config, &gone);
                at += run;
                if let Some(full) = full {
                    self.dispatch(&full);
                    // A batch may take up to the guest's time limit, and a fetch can
                    // fill many: keep rebalances, liveness and commits going between
                    // batches, as the group expects of a member.
                    now = Instant::now();
                    self.shared.stats.liveness().turned(now);
                    gone.extend(self.serve_events(&mut next_due));
                    self.maybe_commit(now, &mut results_polled);
                }
            }
            self.fetch.recycle(fetched);
            now = Instant::now();
            self.shared.stats.liveness().turned(now);
            // A full batch was dispatched as its last record arrived, so only time
            // makes a batch due here.
            if next_due.is_some_and(|due| now >= due) {
                let due: Vec<_> = self
                    .partitions
                    .iter()
                    .filter(|(_, s)| s.is_due(batch_size, max_wait, now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    self.dispatch(&key);
                }
                now = Instant::now();
                next_due = self.partitions.values().filter_map(|s| s.first_buffered_at).min().map(|t| t + max_wait);
            }
            self.maybe_commit(now, &mut results_polled);
            if taken == 0 && !self.fetch.consumer_events_waiting() {
                self.fetch.wait(self.poll_timeout(max_wait, now));
                now = Instant::now();
            }
        }
        self.shut_down();
    }

    /// Serves the consumer's own queue: rebalances (whose callbacks run here),
    /// errors, and records of a partition that could not be routed to the fetch
    /// queue (none are expected); then applies what callbacks reported. Returns the
    /// partitions revoked.
    fn serve_events(&mut self, next_due: &mut Option<Instant>) -> Vec<(String, i32)> {
        for _ in 0..CONSUMER_EVENTS_PER_TURN {
            if !self.fetch.consumer_events_waiting() {
                break;
            }
            let full = match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    // SAFETY: `message` outlives `delivered`, which is used only in this arm.
                    let delivered = unsafe { Delivered::from_raw(message.ptr()) };
                    let key = partition_key(delivered);
                    let state = partition_state(&mut self.partitions, &key);
                    take_record(state, delivered, next_due, &self.config).then_some(key)
                }
                Some(Err(error)) => {
                    tracing::warn!(pipeline = %self.config.name, %error, "consumer error");
                    None
                }
                None => None,
            };
            if let Some(key) = full {
                self.dispatch(&key);
            }
        }
        self.handle_events()
    }

    fn poll_timeout(&self, max_wait: Duration, now: Instant) -> Duration {
        self.partitions
            .values()
            .filter_map(|s| s.first_buffered_at.map(|t| (t + max_wait).saturating_duration_since(now)))
            .chain(self.partitions.values().filter_map(|s| s.retry_due.map(|t| t.saturating_duration_since(now))))
            .fold(MAX_POLL, Duration::min)
    }

    /// Applies what the rebalance and delivery callbacks reported.
    fn handle_events(&mut self) -> Vec<(String, i32)> {
        let events = self.shared.take_events();
        for key in &events.revoked {
            // Buffered records of a revoked partition were never processed: the next
            // owner reads them from the committed offset.
            self.partitions.remove(key);
        }
        for (topic, partition) in events.delivery_failed {
            self.halt(&topic, partition, "output records could not be delivered".to_owned());
        }
        events.revoked
    }

    /// Runs the buffered batch of one partition through the guest.
    fn dispatch(&mut self, key: &(String, i32)) {
        self.refresh_processor();
        let Some(state) = self.partitions.get_mut(key) else { return };
        if state.offsets.is_empty() {
            return;
        }
        let started = Instant::now();
        let offsets = std::mem::take(&mut state.offsets);
        // One span per batch: every event below (faults, dead letters, guest logs) carries it.
        let _batch_span = tracing::info_span!(
            "batch",
            pipeline = %self.config.name,
            topic = %state.topic,
            partition = state.partition,
            first_offset = offsets[0],
            last_offset = offsets[offsets.len() - 1],
            records = offsets.len()
        )
        .entered();
        let old_position = state.position;
        let last_new = offsets.iter().rev().copied().find(|&o| old_position.is_none_or(|p| o >= p));
        if let Some(last) = last_new {
            state.position = Some(last + 1);
        }
        state.first_buffered_at = None;
        let span = self.shared.tracker().entry(&state.topic, state.partition, offsets[0]).begin_batch(last_new);

        // Hand the encoded records to the guest without copying them again.
        let encoder = std::mem::take(&mut state.encoder);
        self.batch.topic.clone_from(&state.topic);
        self.batch.partition = state.partition;
        self.batch.count = encoder.count();
        self.batch.records = encoder.into_bytes();
        let run = run_batch(&mut self.instance, &mut self.batch, &offsets);
        for fault in &run.faults {
            self.shared.stats.fault(fault);
            self.shared.stats.note(
                &self.batch.topic,
                self.batch.partition,
                None,
                &fault.kind().to_string(),
                &fault.to_string(),
            );
            tracing::warn!(pipeline = %self.config.name, topic = %self.batch.topic, partition = self.batch.partition, %fault, "guest fault");
        }

        let config = self.config.clone();
        let policy = &config.failure;
        let state = self.partitions.get_mut(key).expect("partition still assigned");
        let mut counts = BatchCounts::default();
        let mut unfinished_new = Vec::new();
        let mut redelivered_done = Vec::new();
        let mut given_up = Vec::new();
        for (&offset, verdict) in offsets.iter().zip(&run.verdicts) {
            let is_new = old_position.is_none_or(|p| offset >= p);
            let reason = match verdict {
                Verdict::Processed => {
                    counts.processed += 1;
                    if !is_new {
                        redelivered_done.push(offset);
                    }
                    state.forget_retry(offset);
                    continue;
                }
                Verdict::Retry(reason) => reason.clone(),
                Verdict::Fault(fault) => format!("guest fault: {fault}"),
                Verdict::Reject(reason) => {
                    counts.failed += 1;
                    if is_new {
                        unfinished_new.push(offset);
                    }
                    let attempts = state.forget_retry(offset) + 1;
                    given_up.push((offset, reason.clone(), attempts));
                    continue;
                }
            };
            counts.retried += 1;
            if is_new {
                unfinished_new.push(offset);
            }
            let attempts = state.attempts.entry(offset).or_insert(0);
            *attempts += 1;
            if *attempts >= policy.max_attempts {
                let attempts = *attempts;
                state.attempts.remove(&offset);
                state.retry.remove(&offset);
                given_up.push((offset, format!("{reason} (after {attempts} attempts)"), attempts));
            } else {
                state.retry.insert(offset);
            }
        }

        // Settle before sending anything: an ack may arrive at once on another thread.
        let topic = state.topic.clone();
        let partition = state.partition;
        let has_outputs = !run.outputs.is_empty();
        {
            let mut tracker = self.shared.tracker();
            let offsets_state = tracker.get_mut(&topic, partition).expect("tracked");
            if let Some(span) = span {
                offsets_state.settle(span, unfinished_new, has_outputs);
            }
            if !has_outputs {
                for &offset in &redelivered_done {
                    offsets_state.finish(offset);
                }
            }
        }
        if has_outputs {
            let producer = self.producer.as_ref().expect("a pipeline with output topics has a producer");
            let group =
                AckGroup::new(self.shared.clone(), &topic, partition, span, redelivered_done, run.outputs.len());
            for record in &run.outputs {
                let outgoing = Outgoing {
                    topic: &record.topic,
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers: record.headers.iter().map(|h| (h.name.as_str(), h.value.as_deref())).collect(),
                };
                output::send(producer, outgoing, &group);
            }
        }

        for (offset, reason, attempts) in given_up {
            self.give_up(key, offset, &reason, attempts, &offsets);
        }
        let Some(state) = self.partitions.get_mut(key) else { return };
        state.encoder = BatchEncoder::from_vec(std::mem::take(&mut self.batch.records));
        if state.halted.is_none() && !state.retry.is_empty() && state.retry_due.is_none() {
            let attempts = state.retry.iter().filter_map(|o| state.attempts.get(o)).max().copied().unwrap_or(1);
            let delay = backoff(policy, attempts);
            state.retry_due = Some(Instant::now() + delay);
            state.discard_buffer();
            let _ = self.consumer.pause(&single(&topic, partition, Offset::Invalid));
        }
        let position = state.position.unwrap_or(offsets[offsets.len() - 1] + 1);
        self.shared.stats.batch(&topic, partition, position, counts, started.elapsed());
        let failures = counts.retried + counts.failed;
        self.slot.observe(self.instance.component(), counts.processed + failures, failures);
        // Committed by `maybe_commit`, right after this batch or the others that
        // finish in the same turn of the loop (one request for all of them).
        self.batch_finished = true;
    }

    /// Applies the end of the road to a record: dead-letter it or halt the partition.
    fn give_up(&mut self, key: &(String, i32), offset: i64, reason: &str, attempts: u32, batch_offsets: &[i64]) {
        let (topic, partition) = key;
        match self.config.failure.on_failure {
            OnFailure::DeadLetter => {
                let dlq = self.config.failure.dead_letter_topic.as_deref().expect("validated");
                let index = batch_offsets.binary_search(&offset).expect("offset of this batch");
                let record = ferry_sdk::wire::decode(&self.batch.records, self.batch.count)
                    .nth(index)
                    .and_then(Result::ok)
                    .expect("the host encoded this batch");
                let attempts = attempts.to_string();
                let partition_text = partition.to_string();
                let offset_text = offset.to_string();
                let digest = self.instance.component().digest().to_owned();
                let mut headers: Vec<(&str, Option<&[u8]>)> = record.headers().collect();
                headers.extend([
                    ("ferry.reason", Some(reason.as_bytes())),
                    ("ferry.pipeline", Some(self.config.name.as_bytes())),
                    ("ferry.component", Some(digest.as_bytes())),
                    ("ferry.attempts", Some(attempts.as_bytes())),
                    ("ferry.topic", Some(topic.as_bytes())),
                    ("ferry.partition", Some(partition_text.as_bytes())),
                    ("ferry.offset", Some(offset_text.as_bytes())),
                ]);
                let producer = self.producer.as_ref().expect("a pipeline with a dead-letter topic has a producer");
                let group = AckGroup::new(self.shared.clone(), topic, *partition, None, vec![offset], 1);
                output::send(producer, Outgoing { topic: dlq, key: record.key, value: record.value, headers }, &group);
                self.shared.stats.dead_lettered(topic, *partition);
                self.shared.stats.note(topic, *partition, Some(offset), "dead-letter", reason);
                tracing::warn!(pipeline = %self.config.name, %topic, partition, offset, reason, "record dead-lettered");
            }
            OnFailure::Halt => {
                self.halt(topic, *partition, format!("offset {offset}: {reason}"));
            }
        }
    }

    /// Pauses a partition for good (until it is reassigned) and reports why.
    fn halt(&mut self, topic: &str, partition: i32, reason: String) {
        let key = (topic.to_owned(), partition);
        let state = self.partitions.entry(key).or_insert_with(|| PartitionState::new(topic, partition));
        if state.halted.is_some() {
            return;
        }
        state.discard_buffer();
        state.retry.clear();
        state.retry_due = None;
        let _ = self.consumer.pause(&single(topic, partition, Offset::Invalid));
        self.shared.stats.halted(topic, partition, &reason);
        self.shared.stats.note(topic, partition, None, "halt", &reason);
        tracing::error!(pipeline = %self.config.name, %topic, partition, %reason, "partition halted; nothing past it is committed");
        state.halted = Some(reason);
    }

    /// Rewinds paused partitions whose retry backoff ended (at `now`) to their first
    /// retry.
    fn rewind_due_retries(&mut self, now: Instant) {
        for state in self.partitions.values_mut() {
            if state.retry_due.is_none_or(|due| due > now) {
                continue;
            }
            state.retry_due = None;
            let Some(&first) = state.retry.first() else { continue };
            let list = single(&state.topic, state.partition, Offset::Invalid);
            if let Err(error) =
                self.consumer.seek(&state.topic, state.partition, Offset::Offset(first), Duration::from_secs(5))
            {
                tracing::warn!(pipeline = %self.config.name, %error, "seek for retry failed; retrying later");
                state.retry_due = Some(now + Duration::from_millis(self.config.failure.backoff_initial_ms));
                continue;
            }
            let _ = self.consumer.resume(&list);
        }
    }

    fn maybe_commit(&mut self, now: Instant, results_polled: &mut Instant) {
        match self.config.commit {
            CommitPolicy::Interval { interval_ms }
                if now.saturating_duration_since(self.last_commit) >= Duration::from_millis(interval_ms) =>
            {
                self.last_commit = now;
                self.shared.commit_async(&self.consumer);
            }
            // One commit request in flight at a time: batches that finish while it
            // is out ride on the next, sent as soon as its answer is in (which wakes
            // the loop). Per-batch commits also pick up offsets finished by late acks.
            CommitPolicy::PerBatch
                if (self.batch_finished && self.shared.poll_commits() == 0)
                    || now.saturating_duration_since(self.last_commit) >= Duration::from_millis(50) =>
            {
                self.last_commit = now;
                self.batch_finished = false;
                self.shared.commit_async(&self.consumer);
            }
            _ if now.saturating_duration_since(*results_polled) >= COMMIT_RESULTS_EVERY => {
                *results_polled = now;
                let _ = self.shared.poll_commits();
            }
            _ => {}
        }
    }

    /// Switches to a newly deployed version at this batch boundary.
    fn refresh_processor(&mut self) {
        let current = self.slot.current();
        if !Arc::ptr_eq(&current, self.instance.component()) {
            tracing::info!(pipeline = %self.config.name, from = %short(self.instance.component().digest()), to = %short(current.digest()), "switching processor version");
            self.shared.stats.set_version(current.digest());
            self.instance = ProcessorInstance::new(
                self.sandbox.clone(),
                current,
                &self.config.name,
                Arc::new(self.config.grants()),
                self.config.limits(),
            );
        }
    }

    /// Stops taking records, waits for in-flight outputs, commits, leaves the group.
    fn shut_down(mut self) {
        tracing::info!(pipeline = %self.config.name, "shutting down: draining and committing");
        for state in self.partitions.values_mut() {
            state.discard_buffer();
        }
        if let Some(producer) = &self.producer {
            let _ = rdkafka::producer::Producer::flush(producer, SHUTDOWN_DRAIN_TIMEOUT);
        }
        self.shared.commit_sync(&self.consumer, None, SYNC_COMMIT_TIMEOUT);
        self.shared.close_committer();
        // librdkafka cannot destroy a client while a queue of it is alive.
        drop(self.fetch);
        // Dropping the consumer leaves the group; its final revoke commits nothing new.
        drop(self.consumer);
    }
}

/// Most records taken from the fetch queue in one turn of the loop.
const FETCH_MAX: usize = 1024;
/// Most events served from the consumer's own queue in one turn (it holds
/// rebalances and errors, a handful at a time).
const CONSUMER_EVENTS_PER_TURN: usize = 16;

/// Takes the run of records of one partition that starts at `fetched[start]`
/// (librdkafka delivers a partition's records in runs), up to the record that fills
/// its batch. Returns how many messages it went through, and the partition whose
/// batch is full. A message carrying an error, or a run of a partition in `gone`, is
/// passed over.
fn take_run(
    partitions: &mut BTreeMap<(String, i32), PartitionState>,
    fetched: &Fetched,
    start: usize,
    next_due: &mut Option<Instant>,
    config: &PipelineConfig,
    gone: &[(String, i32)],
) -> (usize, Option<(String, i32)>) {
    let mut run = fetched.iter_from(start);
    let first = run.next().expect("start is within the fetch");
    if let Some(error) = first.error() {
        tracing::warn!(pipeline = %config.name, topic = %first.topic(), partition = first.partition(), %error, "consumer error");
        return (1, None);
    }
    // Within one fetch every message is alive, so equal topic handles mean one topic.
    let (handle, partition) = (first.topic_handle(), first.partition());
    let same = |d: &Delivered<'_>| d.topic_handle() == handle && d.partition() == partition && d.error().is_none();
    let key = partition_key(first);
    if gone.contains(&key) {
        return (1 + run.take_while(same).count(), None);
    }
    let state = partition_state(partitions, &key);
    let mut taken = 0;
    for delivered in std::iter::once(first).chain(run.take_while(same)) {
        taken += 1;
        if take_record(state, delivered, next_due, config) {
            return (taken, Some(key));
        }
    }
    (taken, None)
}

/// The key of `delivered`'s partition.
fn partition_key(delivered: Delivered<'_>) -> (String, i32) {
    (delivered.topic().into_owned(), delivered.partition())
}

/// The state of a partition, created on its first record.
fn partition_state<'p>(
    partitions: &'p mut BTreeMap<(String, i32), PartitionState>,
    key: &(String, i32),
) -> &'p mut PartitionState {
    if !partitions.contains_key(key) {
        partitions.insert(key.clone(), PartitionState::new(&key.0, key.1));
    }
    partitions.get_mut(key).expect("just inserted")
}

/// Headers read in one pass into a stack array; records with more fall back to a
/// vector.
const INLINE_HEADERS: usize = 16;

/// Buffers one record in its partition's batch; true when that fills the batch.
fn take_record(
    state: &mut PartitionState,
    delivered: Delivered<'_>,
    next_due: &mut Option<Instant>,
    config: &PipelineConfig,
) -> bool {
    let offset = delivered.offset();
    if state.admit(offset) != Admission::Take {
        return false;
    }
    let (timestamp, key, value) = (delivered.timestamp_ms(), delivered.key(), delivered.value());
    let mut inline: [(&[u8], Option<&[u8]>); INLINE_HEADERS] = [(&[], None); INLINE_HEADERS];
    let (mut count, mut all_utf8, mut more) = (0, true, false);
    for header in delivered.headers() {
        if count == INLINE_HEADERS {
            more = true;
            break;
        }
        all_utf8 &= std::str::from_utf8(header.0).is_ok();
        inline[count] = header;
        count += 1;
    }
    if all_utf8 && !more {
        // SAFETY: every name was just checked.
        let headers =
            inline[..count].iter().map(|&(name, value)| (unsafe { std::str::from_utf8_unchecked(name) }, value));
        state.encoder.push(offset, timestamp, key, value, headers);
    } else {
        // Kafka header names are meant to be UTF-8; a producer that broke that still
        // gets its record through, with the invalid bytes replaced.
        let headers: Vec<(Cow<'_, str>, Option<&[u8]>)> =
            delivered.headers().map(|(name, value)| (String::from_utf8_lossy(name), value)).collect();
        state.encoder.push(offset, timestamp, key, value, headers.iter().map(|(n, v)| (n.as_ref(), *v)));
    }
    state.offsets.push(offset);
    if state.first_buffered_at.is_none() {
        let due = *state.first_buffered_at.insert(Instant::now()) + Duration::from_millis(config.max_wait_ms);
        *next_due = Some(next_due.map_or(due, |d| d.min(due)));
    }
    state.offsets.len() >= config.batch_size
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn single(topic: &str, partition: i32, offset: Offset) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, offset).expect("valid offset");
    list
}

/// Exponential backoff for the given attempt count, capped.
pub fn backoff(policy: &FailurePolicy, attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(30);
    Duration::from_millis(policy.backoff_initial_ms.saturating_mul(factor).min(policy.backoff_max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = FailurePolicy { backoff_initial_ms: 100, backoff_max_ms: 1000, ..FailurePolicy::default() };
        let ms: Vec<u128> = (1..=6).map(|a| backoff(&policy, a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
