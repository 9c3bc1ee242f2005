//! Taking records in: serving the consumer's own queue (rebalances, errors), and
//! taking fetched records into their partition's batch, in runs (librdkafka delivers
//! a partition's records in runs, so one map lookup serves many records).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::PipelineConfig;
use crate::kafka::client_log::PartitionFetch;
use crate::kafka::fetch::{Delivered, Fetched};
use crate::kafka::tracker::TopicPartition;

use super::partition::{Admission, PartitionState};
use super::shared::Shared;
use super::stall::StallChange;
use super::worker::Worker;

/// Most events served from the consumer's own queue in one turn (it holds
/// rebalances and errors, a handful at a time).
const CONSUMER_EVENTS_PER_TURN: usize = 16;

impl Worker {
    /// Serves the consumer's own queue: rebalances (whose callbacks run here),
    /// errors, and records of a partition that could not be routed to the fetch
    /// queue (none are expected; they are buffered, and go to the guest when due);
    /// then applies what callbacks reported. Returns the partitions revoked. It
    /// makes no guest call (revokes are told later, [`Worker::tell_revoked`]), so it
    /// can run between any two.
    ///
    /// The consumer is polled at least once per call, events or not: a poll is what
    /// tells librdkafka the application is alive (`max.poll.interval.ms`).
    pub(super) fn serve_events(&mut self) -> Vec<TopicPartition> {
        for served in 0..CONSUMER_EVENTS_PER_TURN {
            if served > 0 && !self.fetch.consumer_events_waiting() {
                break;
            }
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    let delivered = Delivered::of(&message);
                    let key = partition_key(delivered);
                    if !self.accepts(&key) {
                        continue;
                    }
                    // Field by field: `message` borrows the consumer meanwhile.
                    let mut intake = Intake {
                        partitions: &mut self.partitions,
                        shared: &self.shared,
                        config: &self.config,
                        wants_headers: self.wants_headers,
                    };
                    // A full batch is due at once: the loop's next look at due
                    // batches takes it.
                    if intake.take_one(&key, delivered, &mut self.next_due) {
                        self.next_due = Some(Instant::now());
                    }
                }
                Some(Err(error)) => {
                    self.shared.stats.consumer_error();
                    self.client_errors.consumer_error(&self.config.name, &error.to_string());
                }
                None => {}
            }
        }
        self.handle_events()
    }

    /// Applies what the rebalance and delivery callbacks reported.
    fn handle_events(&mut self) -> Vec<TopicPartition> {
        let events = self.shared.take_events();
        self.pause_until_ready(&events.assigned);
        for (topic, partition) in &events.revoked {
            // Buffered records of a revoked partition were never processed: the next
            // owner reads them from the committed offset.
            self.partitions.remove(&(topic.clone(), *partition));
            if let Some(keeper) = self.state.as_mut() {
                // The next owner restores it from the changelog.
                keeper.forget(&(topic.clone(), *partition), None);
                self.shared.stats.state_dropped(topic, *partition);
            }
            self.untold_revokes.push((topic.clone(), *partition));
        }
        for (key, epoch) in events.delivery_failed {
            // Only the assignment the outputs belonged to: a late failure of an
            // earlier one says nothing about this one.
            if self.partitions.get(&key).is_some_and(|state| state.epoch() == epoch) {
                self.halt(&key, "output records could not be delivered".to_owned());
            }
        }
        if let Some(fetching) = events.fetching {
            self.watch_stalls(&fetching);
        }
        events.revoked
    }

    /// Looks for partitions that stopped advancing without an error, in a report of
    /// where the consumer fetches ([`super::stall`]), and says so on the status
    /// page, in `/metrics` and the log (and when they advance again).
    fn watch_stalls(&mut self, fetching: &[PartitionFetch]) {
        let held: HashSet<&TopicPartition> = fetching
            .iter()
            .map(|f| &f.key)
            .filter(|key| self.partitions.get(*key).is_some_and(PartitionState::holds_back) || !self.accepts(key))
            .collect();
        let partitions = &self.partitions;
        let changes = self.stalls.report(
            fetching,
            |key| partitions.get(key).map_or(0, PartitionState::taken),
            |key| held.contains(key),
        );
        for change in changes {
            match change {
                StallChange::Stalled((topic, partition), how) => {
                    self.shared.stats.stalled(&topic, partition, Some(&how));
                    self.shared.stats.note(&topic, partition, None, "stalled", &how);
                    tracing::warn!(pipeline = %self.config.name, %topic, partition, %how, "partition stopped advancing without an error");
                }
                StallChange::Resumed((topic, partition)) => {
                    self.shared.stats.stalled(&topic, partition, None);
                    tracing::info!(pipeline = %self.config.name, %topic, partition, "partition advances again");
                }
            }
        }
    }

    /// Takes the run of records of one partition that starts at `fetched[start]`, up
    /// to the record that fills its batch. Returns how many messages it went through,
    /// and the partition whose batch is full. A run of a partition in `restarted`
    /// (revoked or restarted during this fetch) is passed over.
    pub(super) fn take_run(&mut self, fetched: &Fetched, start: usize) -> (usize, Option<TopicPartition>) {
        let mut run = fetched.iter_from(start);
        let first = run.next().expect("start is within the fetch");
        if first.error().is_some() {
            let key = partition_key(first);
            if !self.restarted.contains(&key) && self.accepts(&key) {
                self.take_error(key, first);
            }
            return (1, None);
        }
        // Within one fetch every message is alive, so equal topic handles mean one topic.
        let (handle, partition) = (first.topic_handle(), first.partition());
        let same = |d: &Delivered<'_>| d.topic_handle() == handle && d.partition() == partition && d.error().is_none();
        let key = partition_key(first);
        if self.restarted.contains(&key) || !self.accepts(&key) {
            // Revoked during this fetch, or (exactly-once) not ready: the records are
            // read again from the committed offset.
            return (1 + run.take_while(same).count(), None);
        }
        // One map lookup for the whole run; per record only the admission check and
        // the encoding.
        let (batch_size, wants_headers) = (self.config.batch_size, self.wants_headers);
        let max_wait = Duration::from_millis(self.config.max_wait_ms);
        let mut intake = self.intake();
        let state = intake.state_for(&key, first.offset());
        let mut taken = 0;
        let mut full = false;
        let mut first_at = None;
        for delivered in std::iter::once(first).chain(run.take_while(same)) {
            taken += 1;
            if take_into(state, delivered, batch_size, wants_headers, &mut first_at) {
                full = true;
                break;
            }
        }
        state.note_taken(taken);
        note_due(first_at, max_wait, &mut self.next_due);
        (taken, full.then_some(key))
    }

    /// What taking a record needs: fields apart from the consumer, whose messages
    /// may be borrowed meanwhile.
    fn intake(&mut self) -> Intake<'_> {
        Intake {
            partitions: &mut self.partitions,
            shared: &self.shared,
            config: &self.config,
            wants_headers: self.wants_headers,
        }
    }

    /// A message that carries an error: an unreadable record is given up on like a
    /// rejected one; records skipped unseen halt the partition where they begin;
    /// anything else is logged (once per kind, then summarized).
    fn take_error(&mut self, key: TopicPartition, delivered: Delivered<'_>) {
        let error = delivered.error().expect("an error message");
        let offset = delivered.offset();
        if let Some(state) = self.partitions.get_mut(&key) {
            state.note_taken(1);
        }
        if delivered.is_unreadable_record() {
            let reason = format!("the record could not be read from Kafka: {error}");
            self.intake().state_for(&key, offset);
            // Keep offset order: what was buffered before it goes to the guest first.
            self.dispatch_buffered(&key);
            let Some(state) = self.partitions.get_mut(&key) else { return };
            if state.has_buffered() {
                // It cannot go yet (retries pending). librdkafka 2.12 reports such a
                // batch again on every fetch, but nothing promises it will (its code
                // means to skip a corrupt batch and go on): the record waits here,
                // and nothing after it is taken meanwhile.
                state.defer_unreadable(offset, reason);
                return;
            }
            self.unreadable(&key, offset, &reason);
        } else if delivered.is_unseen_range() {
            self.intake().state_for(&key, offset);
            // What was buffered before it is processed first (unless retries hold
            // it back: then the bookmark stops before it too).
            self.dispatch_buffered(&key);
            self.unseen(&key, offset, &error.to_string());
        } else {
            self.shared.stats.consumer_error();
            self.client_errors.consumer_error(&self.config.name, &format!("{}[{}]: {error}", key.0, key.1));
        }
    }
}

/// Taking records into their partitions' batches.
struct Intake<'w> {
    partitions: &'w mut BTreeMap<TopicPartition, PartitionState>,
    shared: &'w Shared,
    config: &'w PipelineConfig,
    wants_headers: bool,
}

impl Intake<'_> {
    /// Buffers one record in its partition's batch; true when that fills the batch.
    fn take_one(&mut self, key: &TopicPartition, delivered: Delivered<'_>, next_due: &mut Option<Instant>) -> bool {
        let (batch_size, wants_headers) = (self.config.batch_size, self.wants_headers);
        let max_wait = Duration::from_millis(self.config.max_wait_ms);
        let state = self.state_for(key, delivered.offset());
        let mut first_at = None;
        let full = take_into(state, delivered, batch_size, wants_headers, &mut first_at);
        note_due(first_at, max_wait, next_due);
        full
    }

    /// The state of a partition, created (with a new tracking epoch) on the first
    /// record after its assignment.
    fn state_for(&mut self, key: &TopicPartition, first_offset: i64) -> &mut PartitionState {
        if !self.partitions.contains_key(key) {
            let epoch = self.shared.tracker().start(&key.0, key.1, first_offset);
            self.partitions.insert(key.clone(), PartitionState::new(epoch));
        }
        self.partitions.get_mut(key).expect("just inserted")
    }
}

/// Buffers one record in `state`'s batch (if it is admitted); true when that fills
/// the batch. `first_at` is set when the record is the first of a batch.
fn take_into(
    state: &mut PartitionState,
    delivered: Delivered<'_>,
    batch_size: usize,
    wants_headers: bool,
    first_at: &mut Option<Instant>,
) -> bool {
    let offset = delivered.offset();
    if state.admit(offset) != Admission::Take {
        return false;
    }
    state.buffer(
        offset,
        batch_size,
        |encoder| encode(encoder, delivered, wants_headers),
        || *first_at.insert(Instant::now()),
    )
}

/// Moves `next_due` earlier if a batch started at `first_at`.
fn note_due(first_at: Option<Instant>, max_wait: Duration, next_due: &mut Option<Instant>) {
    if let Some(at) = first_at {
        let due = at + max_wait;
        *next_due = Some(next_due.map_or(due, |d| d.min(due)));
    }
}

/// The key of `delivered`'s partition.
fn partition_key(delivered: Delivered<'_>) -> TopicPartition {
    (delivered.topic().into_owned(), delivered.partition())
}

/// Appends `delivered` to the batch being built, with its headers only when the
/// processor reads them.
fn encode(encoder: &mut ferry_sdk::wire::BatchEncoder, delivered: Delivered<'_>, wants_headers: bool) {
    let (offset, timestamp, key, value) =
        (delivered.offset(), delivered.timestamp_ms(), delivered.key(), delivered.value());
    encoder.start_record(offset, timestamp, key, value);
    if !wants_headers {
        return;
    }
    delivered.for_each_header(|name, value| match std::str::from_utf8(name) {
        Ok(name) => encoder.push_header(name, value),
        // A name that is not UTF-8 (Kafka means them to be, but does not check): the
        // record still gets through, invalid bytes replaced.
        Err(_) => encoder.push_header(&String::from_utf8_lossy(name), value),
    });
}
