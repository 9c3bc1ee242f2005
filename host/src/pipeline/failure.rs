//! The end of the road for records, and the way back for retries: dead letters,
//! halts, unreadable records, pausing a partition while its retries wait, and
//! restarting a partition from its bookmark.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;

use super::partition::PartitionState;
use super::worker::Worker;
use crate::config::{FailurePolicy, OnFailure};
use crate::kafka::context::list_of;
use crate::kafka::output::{self, AckGroup, Outgoing, Settled};
use crate::kafka::tracker::TopicPartition;
use crate::sandbox::{Header, OutputRecord};

/// How long a restart's seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Exponential backoff for the given attempt count, capped.
pub fn backoff(policy: &FailurePolicy, attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(30);
    Duration::from_millis(policy.backoff_initial_ms.saturating_mul(factor).min(policy.backoff_max_ms))
}

/// A record given up on: its offset, why, how often it was tried, and its content
/// (absent when it could not even be read).
pub(super) struct GivenUp<'r> {
    pub offset: i64,
    pub reason: &'r str,
    pub attempts: u32,
    pub record: Option<ferry_sdk::wire::RawRecord<'r>>,
}

impl Worker {
    /// Applies the end of the road to a record: dead-letter it or halt the partition.
    pub(super) fn give_up(&mut self, key: &TopicPartition, given_up: GivenUp<'_>) {
        let (topic, partition) = key;
        let GivenUp { offset, reason, attempts, record } = given_up;
        let OnFailure::DeadLetter = self.config.failure.on_failure else {
            self.halt(key, format!("offset {offset}: {reason}"));
            return;
        };
        let Some(epoch) = self.partitions.get(key).map(|s| s.epoch()) else { return };
        let dlq = self.config.failure.dead_letter_topic.as_deref().expect("validated");
        let attempts = attempts.to_string();
        let partition_text = partition.to_string();
        let offset_text = offset.to_string();
        let digest = self.instance.component().digest().to_owned();
        let mut headers: Vec<(&str, Option<&[u8]>)> = record.map(|r| r.headers().collect()).unwrap_or_default();
        headers.extend([
            ("ferry.reason", Some(reason.as_bytes())),
            ("ferry.pipeline", Some(self.config.name.as_bytes())),
            ("ferry.component", Some(digest.as_bytes())),
            ("ferry.attempts", Some(attempts.as_bytes())),
            ("ferry.topic", Some(topic.as_bytes())),
            ("ferry.partition", Some(partition_text.as_bytes())),
            ("ferry.offset", Some(offset_text.as_bytes())),
        ]);
        self.shared.stats.dead_lettered(topic, *partition);
        self.shared.stats.note(topic, *partition, Some(offset), "dead-letter", reason);
        tracing::warn!(pipeline = %self.config.name, %topic, partition, offset, reason, "record dead-lettered");
        if self.config.exactly_once() {
            // The dead letter is the record's output: it waits for the watermark, and
            // the record counts as finished (the transaction covers the delivery).
            let letter = OutputRecord {
                topic: dlq.to_owned(),
                key: record.and_then(|r| r.key).map(<[u8]>::to_vec),
                value: record.and_then(|r| r.value).map(<[u8]>::to_vec),
                headers: headers
                    .iter()
                    .map(|(name, value)| Header { name: (*name).to_owned(), value: value.map(<[u8]>::to_vec) })
                    .collect(),
            };
            if let Some(tracked) = self.shared.tracker().current(topic, *partition, epoch) {
                tracked.finish(offset);
            }
            self.hold_output(key, offset, None, letter);
            self.release_outputs(key);
            return;
        }
        if let Some(tracked) = self.shared.tracker().current(topic, *partition, epoch) {
            tracked.dead_letter_sent(offset);
        }
        let producer = self.producer.as_ref().expect("a pipeline with a dead-letter topic has a producer");
        let settled = Settled {
            topic: topic.clone(),
            partition: *partition,
            epoch,
            span: None,
            offsets: vec![offset],
            failed: false,
        };
        let group = AckGroup::new(self.shared.clone(), settled, 1);
        let outgoing = Outgoing {
            topic: dlq,
            partition: None,
            key: record.and_then(|r| r.key),
            value: record.and_then(|r| r.value),
            headers,
        };
        output::send(producer, outgoing, &group);
    }

    /// Pauses a partition for good (until it is reassigned) and reports why.
    pub(super) fn halt(&mut self, key: &TopicPartition, reason: String) {
        let Some(state) = self.partitions.get_mut(key) else { return };
        if !state.halt(reason.clone()) {
            return;
        }
        let (topic, partition) = key;
        let _ = self.consumer.pause(&list_of(std::slice::from_ref(key)));
        self.shared.stats.halted(topic, *partition, &reason);
        self.shared.stats.note(topic, *partition, None, "halt", &reason);
        tracing::error!(pipeline = %self.config.name, %topic, partition, %reason, "partition halted; nothing past it is committed");
    }

    /// A record that exists but cannot be read: no guest can see it, so it is given
    /// up on at once (dead-lettered without content, or halting the partition).
    ///
    /// librdkafka cannot read past such a record (it reports the same batch again on
    /// every fetch), so after a dead letter the consumer is moved past it. The error
    /// names the batch's first offset: when it comes again, the next record of the
    /// batch is the unreadable one, until the consumer is past the batch.
    pub(super) fn unreadable(&mut self, key: &TopicPartition, batch_offset: i64, reason: &str) {
        let Some(state) = self.partitions.get(key) else { return };
        let epoch = state.epoch();
        // A span of its own, open at this offset: the bookmark stops here until the
        // dead letter is acknowledged.
        let offset = {
            let mut tracker = self.shared.tracker();
            let Some(tracked) = tracker.current(&key.0, key.1, epoch) else { return };
            let offset = batch_offset.max(tracked.position());
            let span = tracked.begin_batch(Some(offset)).expect("a new offset");
            tracked.settle(span, [offset], false);
            offset
        };
        self.shared.stats.note(&key.0, key.1, Some(offset), "unreadable", reason);
        self.give_up(key, GivenUp { offset, reason, attempts: 1, record: None });
        if let Some(state) = self.partitions.get_mut(key)
            && !state.is_halted()
        {
            state.skip_to(offset + 1);
            self.restarted.push(key.clone());
            if let Err(error) = self.consumer.seek(&key.0, key.1, Offset::Offset(offset + 1), SEEK_TIMEOUT) {
                self.halt(key, format!("could not move past unreadable offset {offset}: {error}"));
            }
        }
    }

    /// An unreadable record that waited for the retries before it, once they (and
    /// the records buffered before it) are done. What came after it was not taken
    /// meanwhile: the consumer is moved back to it.
    pub(super) fn unreadable_when_due(&mut self, key: &TopicPartition) {
        let Some(state) = self.partitions.get(key) else { return };
        if !state.has_deferred_unreadable() || state.awaits_retries() {
            return;
        }
        self.dispatch_buffered(key);
        let Some((offset, reason)) = self.partitions.get_mut(key).and_then(|s| s.take_deferred_unreadable()) else {
            return;
        };
        self.unreadable(key, offset, &reason);
    }

    /// librdkafka skipped records from `offset` on without saying which: no guest
    /// saw them, and they cannot be dead-lettered one by one. The partition halts
    /// there, whatever the failure policy: nothing at or past `offset` (nor anything
    /// not yet processed before it) is ever committed by this member, and the
    /// status page, `/metrics` and the log say why.
    pub(super) fn unseen(&mut self, key: &TopicPartition, offset: i64, error: &str) {
        let Some(epoch) = self.partitions.get(key).map(PartitionState::epoch) else { return };
        if let Some(tracked) = self.shared.tracker().current(&key.0, key.1, epoch) {
            tracked.bar(offset);
        }
        let reason = format!(
            "records from offset {offset} on were skipped by the Kafka client, which could not read them ({error}); \
             which records they are is unknown, so nothing at or past offset {offset} is committed"
        );
        self.shared.stats.note(&key.0, key.1, Some(offset), "unreadable", &reason);
        self.halt(key, reason);
    }

    /// Records of `key` wait for another try at `due` (newer ones are buffered
    /// meanwhile, not processed).
    pub(super) fn schedule_retries(&mut self, key: &TopicPartition, due: Instant) {
        let Some(state) = self.partitions.get_mut(key) else { return };
        if state.awaits_retries() {
            state.retry_at(due);
        }
    }

    /// Pauses partitions whose backlog behind pending retries grew too large.
    pub(super) fn pause_backlogs(&mut self) {
        let batch_size = self.config.batch_size;
        let full: Vec<TopicPartition> = self
            .partitions
            .iter_mut()
            .filter_map(|(k, s)| s.needs_backlog_pause(batch_size).then(|| k.clone()))
            .collect();
        if !full.is_empty() {
            let _ = self.consumer.pause(&list_of(&full));
        }
    }

    /// Runs the retries that are due (at `now`), one batch per partition per turn,
    /// and resumes partitions that have none left. Returns whether it ran any.
    pub(super) fn dispatch_due_retries(&mut self, now: Instant) -> bool {
        let due: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.retry_due().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let ran = !due.is_empty();
        for key in due {
            self.dispatch_retries(&key, now);
            self.unreadable_when_due(&key);
            if self.partitions.get_mut(&key).is_some_and(|s| s.end_backlog_pause()) {
                let _ = self.consumer.resume(&list_of(std::slice::from_ref(&key)));
            }
        }
        ran
    }

    /// Starts a partition over from its first unfinished record, as a new owner would:
    /// its buffer and retries are dropped, its tracking begins anew, and the consumer
    /// reads from there again (what was finished after that point is processed
    /// again: at-least-once). Records of it still in the fetch being worked through
    /// are passed over.
    pub(super) fn restart_partition(&mut self, key: &TopicPartition) {
        let Some(epoch) = self.partitions.get(key).map(PartitionState::epoch) else { return };
        let Some(from) = self.shared.tracker().current(&key.0, key.1, epoch).map(|p| p.watermark()) else { return };
        if let Err(error) = self.consumer.seek(&key.0, key.1, Offset::Offset(from), SEEK_TIMEOUT) {
            // Going on from where the consumer is would skip [from, position): stop.
            self.halt(key, format!("could not restart at offset {from}: {error}"));
            return;
        }
        self.partitions.remove(key);
        self.shared.tracker().remove(&key.0, key.1);
        self.restarted.push(key.clone());
        self.forget_in_guest(key, Some(from));
        let _ = self.consumer.resume(&list_of(std::slice::from_ref(key)));
        tracing::info!(pipeline = %self.config.name, topic = %key.0, partition = key.1, from, "partition restarted from its first unfinished record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = FailurePolicy { backoff_initial_ms: 100, backoff_max_ms: 1000, ..FailurePolicy::default() };
        let ms: Vec<u128> = (1..=6).map(|a| backoff(&policy, a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&policy, 0).as_millis(), 100);
    }
}
