//! The pipeline loop's side of exactly-once: making partitions ready, holding and
//! releasing outputs, committing transactions, and recovering when one fails.
//!
//! The rules, all per partition:
//! - Records are taken only while the partition is ready ([`super::transactions`]).
//! - Outputs and dead letters of a record wait in its partition's hold
//!   ([`super::held`]) until every record before it is finished, then go into the
//!   partition's open transaction.
//! - A commit sends the watermark as the offset, in the same transaction.
//! - A failed transaction is never taken for a success: the partition starts over
//!   from the offset the broker has committed, with a new producer if the old one
//!   was fenced.

use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;

use super::worker::Worker;
use crate::kafka::context::list_of;
use crate::kafka::output::Outgoing;
use crate::kafka::tracker::TopicPartition;
use crate::kafka::transaction::{Recovery, SendError, StartError};
use crate::sandbox::OutputRecord;

/// How long reading a partition's committed offset may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// A partition's committed offset as read, or why it could not be.
type CommittedOffset = (TopicPartition, Result<Offset, String>);

impl Worker {
    /// Whether records of `key` may be taken now (always, for at-least-once).
    pub(super) fn accepts(&self, key: &TopicPartition) -> bool {
        self.shared.transactions().is_none_or(|t| t.is_ready(key))
    }

    /// Newly assigned partitions of an exactly-once pipeline wait, paused, until
    /// they are ready.
    pub(super) fn pause_until_ready(&mut self, assigned: &[TopicPartition]) {
        if self.shared.transactions().is_some() && !assigned.is_empty() {
            let _ = self.consumer.pause(&list_of(assigned));
        }
    }

    /// Makes ready the partitions whose turn it is: an initialized producer (which
    /// fences the previous owner and settles its open transaction), then the
    /// committed offset read from the broker, and the consumer moved there. Each
    /// producer starts on a thread of its own ([`Transactions::start_producers`]),
    /// and a partition goes on as soon as its own has started, while the worker
    /// serves the partitions that are ready; the committed offsets of the
    /// partitions whose producers started meanwhile are read in one request.
    ///
    /// [`Transactions::start_producers`]: super::transactions::Transactions::start_producers
    pub(super) fn prepare_transactions(&mut self, now: Instant) {
        let (failures, with_producers) = match self.shared.transactions() {
            Some(mut transactions) => {
                let due = transactions.due(now);
                if !due.is_empty() {
                    transactions.start_producers(&due, &self.fetch.wake_signal());
                }
                let failures = transactions.take_started(now);
                (failures, transactions.started(now))
            }
            None => return,
        };
        for (key, error) in &failures {
            match error {
                StartError::Config(error) => {
                    self.shared.stats.halted(&key.0, key.1, error);
                    tracing::error!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %error, "partition halted: librdkafka refused the transactional producer's configuration");
                }
                StartError::Refused(error) => {
                    self.shared.stats.halted(&key.0, key.1, error);
                    tracing::error!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %error, "partition halted: the broker refused the transactional producer");
                }
                StartError::Init(error) => {
                    self.shared.stats.note(&key.0, key.1, None, "transaction", error);
                    tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %error, "could not start the partition's transactional producer; trying again");
                }
            }
        }
        if with_producers.is_empty() {
            return;
        }
        let started = Instant::now();
        let offsets = match self.committed_offsets(&with_producers) {
            Ok(offsets) => offsets,
            Err(error) => {
                tracing::warn!(pipeline = %self.config.name, partitions = with_producers.len(), %error, "could not read the committed offsets; trying again");
                if let Some(mut t) = self.shared.transactions() {
                    for key in &with_producers {
                        t.retry_later(key, now);
                    }
                }
                return;
            }
        };
        for (key, from) in offsets {
            let from = match from {
                Ok(from) => from,
                Err(error) => {
                    tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %error, "could not read the committed offset; trying again");
                    if let Some(mut t) = self.shared.transactions() {
                        t.retry_later(&key, now);
                    }
                    continue;
                }
            };
            // Whatever this member held of the partition is void: start from the bookmark.
            self.partitions.remove(&key);
            self.shared.tracker().remove(&key.0, key.1);
            self.restarted.push(key.clone());
            self.forget_in_guest(&key, from.to_raw().filter(|o| *o >= 0));
            // Resume first, then seek, so the seek is the last word on where
            // fetching goes on: a resume may restart a paused partition at the
            // application's position, which after a rewind is past the bookmark.
            // Records of the old position fetched in between are outdated by the
            // seek, and not taken while the partition is not ready anyway.
            let _ = self.consumer.resume(&list_of(std::slice::from_ref(&key)));
            if let Err(error) = self.consumer.seek(&key.0, key.1, from, SEEK_TIMEOUT) {
                tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %error, "could not move to the committed offset; trying again");
                if let Some(mut t) = self.shared.transactions() {
                    t.retry_later(&key, now);
                }
                continue;
            }
            if let Some(mut t) = self.shared.transactions() {
                t.mark_ready(&key);
            }
            tracing::info!(pipeline = %self.config.name, topic = %key.0, partition = key.1, from = ?from, offset_read_ms = started.elapsed().as_millis() as u64, "partition ready for transactions");
        }
    }

    /// The offsets the group committed for `keys`, read now in one request; for a
    /// partition without one, where the consumer's reset policy says (an absolute
    /// offset either way). A partition's own error fails only that partition.
    fn committed_offsets(&self, keys: &[TopicPartition]) -> Result<Vec<CommittedOffset>, String> {
        let list = self
            .consumer
            .committed_offsets(list_of(keys), COMMITTED_TIMEOUT)
            .map_err(|e| format!("reading the committed offsets: {e}"))?;
        let latest = self.shared.transactions().is_some_and(|t| t.reset_to_latest);
        let offsets = keys
            .iter()
            .map(|key| {
                let element = list.elements_for_topic(&key.0).into_iter().find(|e| e.partition() == key.1);
                if let Some(error) = element.as_ref().and_then(|e| e.error().err()) {
                    return (key.clone(), Err(format!("reading the committed offset: {error}")));
                }
                let from = match element.map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => Ok(Offset::Offset(offset)),
                    // No bookmark: the reset policy's end of the log, as an offset, so
                    // the seek is exact and the log says where the partition starts.
                    _ => self
                        .consumer
                        .fetch_watermarks(&key.0, key.1, COMMITTED_TIMEOUT)
                        .map(|(low, high)| Offset::Offset(if latest { high } else { low }))
                        .map_err(|e| format!("reading the log's ends: {e}")),
                };
                (key.clone(), from)
            })
            .collect();
        Ok(offsets)
    }

    /// Holds an output of the record at `offset` of `key` (to `partition` of its
    /// topic, or where the partitioner puts it) until the watermark passes it.
    pub(super) fn hold_output(
        &mut self,
        key: &TopicPartition,
        offset: i64,
        partition: Option<i32>,
        record: OutputRecord,
    ) {
        if let Some(state) = self.partitions.get_mut(key) {
            state.held_mut().hold(offset, (partition, record));
        }
    }

    /// Sends the held outputs of records below the watermark into the partition's
    /// transaction. A record that is not taken would leave a hole in the
    /// transaction: it is aborted. Where the record is refused for good the
    /// partition halts, as at-least-once halts on an output that cannot be
    /// delivered; where the transaction takes nothing now (an abortable state, a
    /// fenced producer) the partition starts again from its committed offset.
    pub(super) fn release_outputs(&mut self, key: &TopicPartition) {
        let Some(state) = self.partitions.get_mut(key) else { return };
        if state.held_mut().is_empty() {
            return;
        }
        let epoch = state.epoch();
        let Some(watermark) = self.shared.tracker().current(&key.0, key.1, epoch).map(|p| p.watermark()) else {
            return;
        };
        let released = state.held_mut().release_below(watermark);
        let refused = {
            let Some(mut transactions) = self.shared.transactions() else { return };
            let Some(producer) = transactions.producer(key) else { return };
            released.iter().find_map(|(partition, record)| {
                let outgoing = Outgoing {
                    topic: &record.topic,
                    partition: *partition,
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers: record.headers.iter().map(|h| (h.name.as_str(), h.value.as_deref())).collect(),
                };
                producer.send(outgoing).err()
            })
        };
        match refused {
            Some(SendError::Refused(reason)) => self.transaction_failed(key, Recovery::Rewind(reason), true),
            Some(SendError::Transaction(recovery)) => self.transaction_failed(key, recovery, false),
            None => {}
        }
    }

    /// Commits the partitions' transactions (all, or `only`), and starts over the
    /// partitions whose transaction failed.
    pub(super) fn commit_transactions(&mut self, only: Option<&[TopicPartition]>) {
        for failed in self.shared.commit_transactions(&self.consumer, only) {
            self.transaction_failed(&failed.key, failed.recovery, failed.refused_for_good);
        }
    }

    /// A transaction of `key` did not commit: abort what is open, drop everything
    /// this member holds of the partition, pause it, and let
    /// [`Self::prepare_transactions`] start it again from the committed offset.
    /// With `halt` (an output refused for good, which would be refused again) the
    /// partition stays paused at its committed offset instead, and says why.
    pub(super) fn transaction_failed(&mut self, key: &TopicPartition, recovery: Recovery, halt: bool) {
        let now = Instant::now();
        let mut recovery = recovery;
        if let Some(mut transactions) = self.shared.transactions() {
            let timeout = transactions.call_timeout;
            if let Some(producer) = transactions.producer(key)
                && let Err(error) = producer.abort(timeout)
            {
                recovery = Recovery::Recreate(format!("{}; abort failed: {error}", recovery.reason()));
            }
            transactions.failed(key, &recovery, now);
            if halt {
                transactions.halt(key);
            }
        }
        let kind = match recovery {
            Recovery::Rewind(_) => "transaction-aborted",
            Recovery::Recreate(_) => "producer-replaced",
        };
        self.shared.stats.note(&key.0, key.1, None, kind, recovery.reason());
        tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, reason = recovery.reason(), recreate = matches!(recovery, Recovery::Recreate(_)), "transaction not committed; the partition starts again from its committed offset");
        let _ = self.consumer.pause(&list_of(std::slice::from_ref(key)));
        self.partitions.remove(key);
        self.shared.tracker().remove(&key.0, key.1);
        self.restarted.push(key.clone());
        if halt {
            let reason = format!("outputs could not be delivered in a transaction: {}", recovery.reason());
            self.shared.stats.halted(&key.0, key.1, &reason);
            tracing::error!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %reason, "partition halted at its committed offset");
        }
    }
}
