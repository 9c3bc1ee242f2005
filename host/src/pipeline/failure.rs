//! The end of the road for records, and the way back for retries: dead letters,
//! halts, rewinds after a backoff, and records that are gone or unreadable.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;

use super::worker::Worker;
use crate::config::{FailurePolicy, OnFailure};
use crate::kafka::context::list_of;
use crate::kafka::output::{self, AckGroup, Outgoing, Settled};
use crate::kafka::tracker::TopicPartition;

/// How long a rewind's seek may take before it is tried again.
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
        let outgoing =
            Outgoing { topic: dlq, key: record.and_then(|r| r.key), value: record.and_then(|r| r.value), headers };
        output::send(producer, outgoing, &group);
        self.shared.stats.dead_lettered(topic, *partition);
        self.shared.stats.note(topic, *partition, Some(offset), "dead-letter", reason);
        tracing::warn!(pipeline = %self.config.name, %topic, partition, offset, reason, "record dead-lettered");
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
    pub(super) fn unreadable(&mut self, key: &TopicPartition, offset: i64, reason: &str) {
        let Some(state) = self.partitions.get(key) else { return };
        let epoch = state.epoch();
        // A span of its own, open at this offset: the bookmark stops here until the
        // dead letter is acknowledged.
        {
            let mut tracker = self.shared.tracker();
            let Some(tracked) = tracker.current(&key.0, key.1, epoch) else { return };
            if offset < tracked.position() {
                return;
            }
            let span = tracked.begin_batch(Some(offset)).expect("a new offset");
            tracked.settle(span, [offset], false);
        }
        self.shared.stats.note(&key.0, key.1, Some(offset), "unreadable", reason);
        self.give_up(key, GivenUp { offset, reason, attempts: 1, record: None });
    }

    /// Pauses a partition with records to deliver again, until its rewind is due.
    pub(super) fn schedule_rewind(&mut self, key: &TopicPartition, delay: Duration) {
        let Some(state) = self.partitions.get_mut(key) else { return };
        if !state.needs_rewind() {
            return;
        }
        state.pause_until(Instant::now() + delay);
        let _ = self.consumer.pause(&list_of(std::slice::from_ref(key)));
    }

    /// Rewinds paused partitions whose retry backoff ended (at `now`) to their first
    /// retry, and resumes them.
    pub(super) fn rewind_due_retries(&mut self, now: Instant) {
        let retry_later = Duration::from_millis(self.config.failure.backoff_initial_ms);
        for (key, state) in self.partitions.iter_mut() {
            let Some(first) = state.rewind_due(now) else { continue };
            if let Err(error) = self.consumer.seek(&key.0, key.1, Offset::Offset(first), SEEK_TIMEOUT) {
                tracing::warn!(pipeline = %self.config.name, %error, "seek for retry failed; retrying later");
                state.rewind_failed(now + retry_later);
                continue;
            }
            let _ = self.consumer.resume(&list_of(std::slice::from_ref(key)));
        }
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
