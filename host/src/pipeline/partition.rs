//! What the pipeline loop keeps per assigned partition: the batch being assembled,
//! where new records start, and the retry, isolation and halt state.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ferry_sdk::wire::BatchEncoder;

use super::settle::Isolation;
use crate::kafka::tracker::Epoch;

/// One assigned partition, from the pipeline loop's point of view. Created with its
/// first record after each assignment; dropped when the partition is revoked.
pub struct PartitionState {
    /// The tracker's assignment this state belongs to.
    epoch: Epoch,
    /// Records waiting to be handed to the guest, already in wire format.
    encoder: BatchEncoder,
    /// Offsets of those records, ascending.
    offsets: Vec<i64>,
    /// When the first buffered record arrived (for `max_wait_ms`).
    first_buffered_at: Option<Instant>,
    /// Offset after the last new record handed to the guest: anything below it is a
    /// redelivery, wanted only if it awaits a retry.
    position: Option<i64>,
    /// Offsets to deliver again, and how many attempts each was charged.
    retry: BTreeSet<i64>,
    attempts: HashMap<i64, u32>,
    /// While paused for a retry: when the partition is rewound to its first retry.
    retry_due: Option<Instant>,
    /// A redelivery pass is under way (the partition was rewound and has not reached
    /// its position again): a retry offset the pass goes past is gone from the log.
    rewinding: bool,
    /// Smaller batches over a range that timed out together.
    isolation: Option<Isolation>,
    /// Why the partition is halted (paused until it is reassigned), if it is.
    halted: Option<String>,
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
    /// State for a partition whose tracking started under `epoch`.
    pub fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            encoder: BatchEncoder::new(),
            offsets: Vec::new(),
            first_buffered_at: None,
            position: None,
            retry: BTreeSet::new(),
            attempts: HashMap::new(),
            retry_due: None,
            rewinding: false,
            isolation: None,
            halted: None,
        }
    }

    /// The tracker's assignment this state belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
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
            Some(position) if offset < position && !self.retry.contains(&offset) => Admission::Skip,
            _ => Admission::Take,
        }
    }

    /// During a redelivery pass, the retry offsets below `offset` that were neither
    /// delivered nor are waiting in the buffer: the log no longer holds them
    /// (retention or compaction removed them during the backoff). They are
    /// forgotten here and returned, for the caller to finish.
    pub fn vanished_before(&mut self, offset: i64) -> Vec<i64> {
        if !self.rewinding || self.retry_due.is_some() {
            return Vec::new();
        }
        if self.position.is_none_or(|p| offset >= p) {
            self.rewinding = false;
        }
        let gone: Vec<i64> =
            self.retry.range(..offset).copied().filter(|o| self.offsets.binary_search(o).is_err()).collect();
        for o in &gone {
            self.retry.remove(o);
            self.attempts.remove(o);
        }
        gone
    }

    /// Buffers one record (already encoded by `push`); true when the batch is full.
    pub fn buffer(
        &mut self,
        offset: i64,
        batch_size: usize,
        push: impl FnOnce(&mut BatchEncoder),
        now: impl FnOnce() -> Instant,
    ) -> bool {
        push(&mut self.encoder);
        self.offsets.push(offset);
        if self.first_buffered_at.is_none() {
            self.first_buffered_at = Some(now());
        }
        self.offsets.len() >= self.batch_limit(batch_size)
    }

    /// The most records the next batch may hold: smaller over a range that is being
    /// isolated.
    fn batch_limit(&self, batch_size: usize) -> usize {
        match (self.isolation, self.offsets.first()) {
            (Some(iso), Some(&first)) if first <= iso.last => iso.batch_size.min(batch_size),
            _ => batch_size,
        }
    }

    /// When the first buffered record arrived, if any is buffered.
    pub fn first_buffered_at(&self) -> Option<Instant> {
        self.first_buffered_at
    }

    /// Whether the buffered batch should go to the guest now.
    pub fn is_due(&self, batch_size: usize, max_wait: Duration, now: Instant) -> bool {
        !self.offsets.is_empty()
            && (self.offsets.len() >= self.batch_limit(batch_size)
                || self.first_buffered_at.is_some_and(|t| now.duration_since(t) >= max_wait))
    }

    /// Takes the buffered batch: its offsets, its encoded records and count, and the
    /// last offset of a record new to this assignment (not a redelivery), moving the
    /// position past it.
    pub fn take_batch(&mut self, reuse: Vec<u8>) -> TakenBatch {
        let offsets = std::mem::take(&mut self.offsets);
        let encoder = std::mem::replace(&mut self.encoder, BatchEncoder::from_vec(reuse));
        self.first_buffered_at = None;
        let old_position = self.position;
        let last_new = offsets.iter().rev().copied().find(|&o| old_position.is_none_or(|p| o >= p));
        if let Some(last) = last_new {
            self.position = Some(last + 1);
        }
        if let Some(iso) = self.isolation
            && offsets.last().is_some_and(|&last| last >= iso.last)
            && self.retry.range(iso.first..=iso.last).next().is_none()
        {
            // Past the range, and nothing in it awaits another try.
            self.isolation = None;
        }
        TakenBatch { count: encoder.count(), records: encoder.into_bytes(), offsets, old_position, last_new }
    }

    /// Attempts record `offset` was charged so far.
    pub fn attempts(&self, offset: i64) -> u32 {
        if self.attempts.is_empty() { 0 } else { self.attempts.get(&offset).copied().unwrap_or(0) }
    }

    /// Forgets the retry state of a record that is finished one way or the other.
    /// Free when nothing awaits a retry, which is the common case.
    pub fn forget_retry(&mut self, offset: i64) {
        if self.retry.is_empty() && self.attempts.is_empty() {
            return;
        }
        self.retry.remove(&offset);
        self.attempts.remove(&offset);
    }

    /// Marks `offset` for another delivery, charged `attempts` so far.
    pub fn schedule_retry(&mut self, offset: i64, attempts: u32) {
        self.retry.insert(offset);
        if attempts > 0 {
            self.attempts.insert(offset, attempts);
        }
    }

    /// Delivers records of this range in smaller batches from now on.
    pub fn isolate(&mut self, isolation: Isolation) {
        self.isolation = Some(isolation);
    }

    /// Whether records await another delivery and no rewind is scheduled yet.
    pub fn needs_rewind(&self) -> bool {
        self.halted.is_none() && !self.retry.is_empty() && self.retry_due.is_none()
    }

    /// Schedules the rewind at `due`: the partition is paused meanwhile (the caller
    /// pauses the consumer) and its buffer dropped (delivered again after the rewind).
    pub fn pause_until(&mut self, due: Instant) {
        self.retry_due = Some(due);
        self.discard_buffer();
    }

    /// If the rewind is due at `now`: the offset to seek to (the first retry), and
    /// the pass begins.
    pub fn rewind_due(&mut self, now: Instant) -> Option<i64> {
        if self.retry_due.is_none_or(|due| due > now) {
            return None;
        }
        self.retry_due = None;
        let first = *self.retry.first()?;
        self.rewinding = true;
        Some(first)
    }

    /// The rewind could not be done (the seek failed): try again at `due`.
    pub fn rewind_failed(&mut self, due: Instant) {
        self.retry_due = Some(due);
        self.rewinding = false;
    }

    /// When the rewind is due, if one is scheduled.
    pub fn retry_due(&self) -> Option<Instant> {
        self.retry_due
    }

    /// Halts the partition (paused until it is reassigned); false if it already was.
    pub fn halt(&mut self, reason: String) -> bool {
        if self.halted.is_some() {
            return false;
        }
        self.discard_buffer();
        self.retry.clear();
        self.attempts.clear();
        self.retry_due = None;
        self.rewinding = false;
        self.halted = Some(reason);
        true
    }

    /// Drops buffered records (they are delivered again after a rewind or to the
    /// next owner).
    pub fn discard_buffer(&mut self) {
        self.encoder.clear();
        self.offsets.clear();
        self.first_buffered_at = None;
    }

    /// Gives the buffered records up to be delivered again (as uncharged retries),
    /// for example to encode them differently.
    pub fn requeue_buffer(&mut self) {
        for &offset in &self.offsets {
            self.retry.insert(offset);
        }
        self.discard_buffer();
    }

    /// Whether records are buffered.
    pub fn has_buffered(&self) -> bool {
        !self.offsets.is_empty()
    }
}

/// A batch taken from a partition's buffer.
pub struct TakenBatch {
    /// Records in the batch.
    pub count: u32,
    /// The records, encoded.
    pub records: Vec<u8>,
    /// Their offsets, ascending.
    pub offsets: Vec<i64>,
    /// The position before this batch: offsets below it are redeliveries.
    pub old_position: Option<i64>,
    /// The last offset new to this assignment, if any.
    pub last_new: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PartitionState {
        PartitionState::new(crate::kafka::tracker::OffsetTracker::default().start("t", 0, 0))
    }

    fn fill(p: &mut PartitionState, offsets: impl IntoIterator<Item = i64>, batch_size: usize) -> Vec<bool> {
        offsets
            .into_iter()
            .map(|o| p.buffer(o, batch_size, |e| e.push(o, None, None, None, []), Instant::now))
            .collect()
    }

    #[test]
    fn redeliveries_are_taken_only_when_awaiting_retry() {
        let mut p = state();
        assert_eq!(p.admit(0), Admission::Take);
        fill(&mut p, 0..10, 100);
        let taken = p.take_batch(Vec::new());
        assert_eq!((taken.old_position, taken.last_new), (None, Some(9)));
        p.schedule_retry(5, 1);
        assert_eq!(p.admit(4), Admission::Skip);
        assert_eq!(p.admit(5), Admission::Take);
        assert_eq!(p.admit(10), Admission::Take);
        fill(&mut p, [10], 100);
        assert_eq!(p.admit(10), Admission::Skip, "already buffered");
        assert!(p.halt("x".into()));
        assert_eq!(p.admit(11), Admission::Skip);
        assert!(!p.halt("again".into()));
    }

    #[test]
    fn a_retry_the_log_no_longer_holds_is_noticed_by_the_pass() {
        let mut p = state();
        fill(&mut p, 0..10, 100);
        p.take_batch(Vec::new());
        p.schedule_retry(3, 1);
        p.schedule_retry(7, 1);
        p.pause_until(Instant::now());
        assert_eq!(p.rewind_due(Instant::now()), Some(3));
        // Compaction removed 3: the pass starts at 5.
        assert_eq!(p.vanished_before(5), [3]);
        assert_eq!(p.admit(5), Admission::Skip);
        assert_eq!(p.vanished_before(7), Vec::<i64>::new());
        assert_eq!(p.admit(7), Admission::Take);
        fill(&mut p, [7], 100);
        assert_eq!(p.vanished_before(8), Vec::<i64>::new(), "7 is buffered, not gone");
        assert_eq!(p.attempts(7), 1);
        assert_eq!(p.attempts(3), 0, "forgotten");
    }

    #[test]
    fn an_isolated_range_comes_in_small_batches() {
        let mut p = state();
        p.isolate(Isolation { first: 0, last: 5, batch_size: 2 });
        assert_eq!(fill(&mut p, [0, 1], 100), [false, true]);
        p.take_batch(Vec::new());
        assert_eq!(fill(&mut p, [2, 3], 100), [false, true]);
        p.take_batch(Vec::new());
        assert_eq!(fill(&mut p, [4, 5], 100), [false, true]);
        p.take_batch(Vec::new());
        assert_eq!(fill(&mut p, [6, 7, 8], 100), [false, false, false], "past the range: full batches again");
    }
}
