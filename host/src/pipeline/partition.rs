//! What the pipeline loop keeps per assigned partition: the batch being assembled,
//! and the retry and halt state.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use ferry_sdk::wire::BatchEncoder;

/// One assigned partition, from the pipeline loop's point of view.
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// Records waiting to be handed to the guest, already in wire format.
    pub encoder: BatchEncoder,
    /// Offsets of those records, ascending.
    pub offsets: Vec<i64>,
    /// When the first buffered record arrived (for `max_wait_ms`).
    pub first_buffered_at: Option<Instant>,
    /// Offset after the last new record handed to the guest: anything below it is a
    /// redelivery, wanted only if it awaits a retry.
    pub position: Option<i64>,
    /// Offsets to process again, and how often each was attempted.
    pub retry: BTreeSet<i64>,
    pub attempts: HashMap<i64, u32>,
    /// When the paused partition is rewound to its first retry.
    pub retry_due: Option<Instant>,
    /// Why the partition is halted (paused until it is reassigned), if it is.
    pub halted: Option<String>,
}

/// What to do with a record just delivered by the consumer.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Buffer it for the next batch.
    Take,
    /// Already finished, in flight, or not wanted now.
    Skip,
}

impl PartitionState {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            encoder: BatchEncoder::new(),
            offsets: Vec::new(),
            first_buffered_at: None,
            position: None,
            retry: BTreeSet::new(),
            attempts: HashMap::new(),
            retry_due: None,
            halted: None,
        }
    }

    /// Decides whether a delivered record belongs in the next batch.
    pub fn admit(&self, offset: i64) -> Admission {
        if self.halted.is_some() || self.retry_due.is_some() {
            // Paused: whatever still arrives is delivered again after the rewind.
            return Admission::Skip;
        }
        if self.offsets.last().is_some_and(|&last| offset <= last) {
            return Admission::Skip;
        }
        match self.position {
            Some(position) if offset < position => {
                if self.retry.contains(&offset) {
                    Admission::Take
                } else {
                    Admission::Skip
                }
            }
            _ => Admission::Take,
        }
    }

    /// Forgets the retry state of a record that is finished one way or the other;
    /// returns how often it had been attempted before. Free when nothing awaits a
    /// retry, which is the common case (it runs for every record).
    pub fn forget_retry(&mut self, offset: i64) -> u32 {
        if self.retry.is_empty() && self.attempts.is_empty() {
            return 0;
        }
        self.retry.remove(&offset);
        self.attempts.remove(&offset).unwrap_or(0)
    }

    /// Whether the buffered batch should go to the guest now.
    pub fn is_due(&self, batch_size: usize, max_wait: std::time::Duration, now: Instant) -> bool {
        !self.offsets.is_empty()
            && (self.offsets.len() >= batch_size
                || self.first_buffered_at.is_some_and(|t| now.duration_since(t) >= max_wait))
    }

    /// Drops buffered records (they are delivered again after a rewind or to the
    /// next owner).
    pub fn discard_buffer(&mut self) {
        self.encoder.clear();
        self.offsets.clear();
        self.first_buffered_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeliveries_are_taken_only_when_awaiting_retry() {
        let mut p = PartitionState::new("t", 0);
        assert_eq!(p.admit(0), Admission::Take);
        p.position = Some(10);
        p.retry.insert(5);
        assert_eq!(p.admit(4), Admission::Skip);
        assert_eq!(p.admit(5), Admission::Take);
        assert_eq!(p.admit(10), Admission::Take);
        p.offsets.push(10);
        assert_eq!(p.admit(10), Admission::Skip, "already buffered");
        p.halted = Some("x".into());
        assert_eq!(p.admit(11), Admission::Skip);
    }
}
