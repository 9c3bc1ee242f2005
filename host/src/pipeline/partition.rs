//! What the pipeline loop keeps per assigned partition: the batch being assembled,
//! where new records start, records awaiting another try, and the halt state.
//!
//! Records to try again are kept here, encoded, not read again from Kafka: a retry
//! costs no seek and no fetch, cannot find its record gone from the log (retention,
//! compaction), and works while the brokers are unreachable. While any wait, newer
//! records are buffered but not processed: nothing passes a record that is not done.
//! Only a backlog of [`BACKLOG_BATCHES`] batches pauses the partition in librdkafka
//! (a pause costs a refetch, and a resume up to a second before fetching starts
//! again, so short backoffs never pause).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferry_sdk::wire::{BatchEncoder, RawRecord};

use super::held::Held;
use super::settle::Isolation;
use crate::kafka::tracker::Epoch;
use crate::sandbox::OutputRecord;

/// How many batches' worth of records may wait behind pending retries before the
/// partition is paused.
pub(crate) const BACKLOG_BATCHES: usize = 4;

/// One assigned partition, from the pipeline loop's point of view. Created with its
/// first record after each assignment; dropped when the partition is revoked.
pub(crate) struct PartitionState {
    /// The tracker's assignment this state belongs to.
    epoch: Epoch,
    /// Records waiting to be handed to the guest, already in wire format.
    encoder: BatchEncoder,
    /// Offsets of those records, ascending.
    offsets: Vec<i64>,
    /// When the first buffered record arrived (for `max_wait_ms`).
    first_buffered_at: Option<Instant>,
    /// Offset after the last new record handed to the guest: anything below it was
    /// delivered before.
    position: Option<i64>,
    /// Records to hand to the guest again, encoded, by offset.
    retries: BTreeMap<i64, Vec<u8>>,
    /// Attempts each record was charged so far.
    attempts: HashMap<i64, u32>,
    /// When the records awaiting another try are due.
    retry_due: Option<Instant>,
    /// Smaller batches over a range that timed out together.
    isolation: Option<Isolation>,
    /// Why the partition is halted (paused until it is reassigned), if it is.
    halted: Option<String>,
    /// Paused because too much waits behind pending retries.
    backlogged: bool,
    /// An unreadable record met while retries were pending, and why: it is dealt with
    /// once they are done, and nothing from it on is taken meanwhile (the consumer is
    /// moved back to what follows it then).
    deferred_unreadable: Option<(i64, String)>,
    /// Exactly-once: outputs of finished records above the watermark.
    held: Held<(Option<i32>, OutputRecord)>,
    /// Messages (records and errors) taken from the consumer since the assignment.
    taken: u64,
}

/// What to do with a record just delivered by the consumer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Buffer it for a batch.
    Take,
    /// Delivered before, already buffered, or the partition is halted.
    Skip,
}

impl PartitionState {
    /// State for a partition whose tracking started under `epoch`.
    pub(crate) fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            encoder: BatchEncoder::new(),
            offsets: Vec::new(),
            first_buffered_at: None,
            position: None,
            retries: BTreeMap::new(),
            attempts: HashMap::new(),
            retry_due: None,
            isolation: None,
            halted: None,
            backlogged: false,
            deferred_unreadable: None,
            held: Held::default(),
            taken: 0,
        }
    }

    /// Whether the records waiting behind pending retries call for a pause now
    /// (once: it is remembered until [`Self::take_backlog_pause`] ends it).
    pub(crate) fn needs_backlog_pause(&mut self, batch_size: usize) -> bool {
        let needed = !self.backlogged
            && self.halted.is_none()
            && !self.retries.is_empty()
            && self.offsets.len() >= BACKLOG_BATCHES * batch_size;
        self.backlogged |= needed;
        needed
    }

    /// Whether the partition was paused for its backlog and can resume now (no
    /// retries pending); the pause is forgotten.
    pub(crate) fn end_backlog_pause(&mut self) -> bool {
        let resume = self.backlogged && self.retries.is_empty();
        if resume {
            self.backlogged = false;
        }
        resume
    }

    /// The tracker's assignment this state belongs to.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Decides whether a delivered record belongs in the buffer.
    pub(crate) fn admit(&self, offset: i64) -> Admission {
        if self.halted.is_some()
            || self.offsets.last().is_some_and(|&last| offset <= last)
            || self.position.is_some_and(|position| offset < position)
            || self.deferred_unreadable.as_ref().is_some_and(|(unreadable, _)| offset >= *unreadable)
        {
            return Admission::Skip;
        }
        Admission::Take
    }

    /// Buffers one record (encoded by `push`); true when the batch is full and may
    /// go to the guest (never while retries are pending: nothing newer passes them).
    pub(crate) fn buffer(
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
        self.retries.is_empty() && self.offsets.len() >= self.batch_limit(batch_size, self.offsets[0])
    }

    /// The most records a batch starting at `first` may hold: smaller over a range
    /// that is being isolated.
    fn batch_limit(&self, batch_size: usize, first: i64) -> usize {
        match self.isolation {
            Some(iso) if first <= iso.last => iso.batch_size.min(batch_size),
            _ => batch_size,
        }
    }

    /// When the buffered batch can become due by time, if it can.
    pub(crate) fn buffered_since(&self) -> Option<Instant> {
        self.first_buffered_at.filter(|_| self.retries.is_empty())
    }

    /// Whether the buffered batch should go to the guest now.
    pub(crate) fn is_due(&self, batch_size: usize, max_wait: Duration, now: Instant) -> bool {
        !self.offsets.is_empty()
            && self.retries.is_empty()
            && (self.offsets.len() >= self.batch_limit(batch_size, self.offsets[0])
                || self.first_buffered_at.is_some_and(|t| now.duration_since(t) >= max_wait))
    }

    /// Whether buffered records can go to the guest (none await a retry).
    pub(crate) fn can_dispatch_buffer(&self) -> bool {
        !self.offsets.is_empty() && self.retries.is_empty() && self.halted.is_none()
    }

    /// Takes the buffered batch (up to the batch limit): its offsets, its encoded
    /// records and count, and the last offset new to this assignment, moving the
    /// position past it. What does not fit stays buffered.
    pub(crate) fn take_batch(&mut self, batch_size: usize, reuse: Vec<u8>) -> TakenBatch {
        let limit = self.batch_limit(batch_size, self.offsets[0]);
        let taken = if self.offsets.len() <= limit {
            self.first_buffered_at = None;
            let offsets = std::mem::take(&mut self.offsets);
            let encoder = std::mem::replace(&mut self.encoder, BatchEncoder::from_vec(reuse));
            (offsets, encoder)
        } else {
            // More arrived than one batch holds (while retries were pending): split.
            let rest = self.offsets.split_off(limit);
            let offsets = std::mem::replace(&mut self.offsets, rest);
            let all = std::mem::replace(&mut self.encoder, BatchEncoder::from_vec(reuse));
            let records: Vec<RawRecord<'_>> = ferry_sdk::wire::decode(all.bytes(), all.count())
                .collect::<Result<_, _>>()
                .expect("the host encoded this buffer");
            let mut head = BatchEncoder::with_capacity(all.bytes().len());
            for record in &records[..limit] {
                head.push_encoded(&record.encoded());
            }
            for record in &records[limit..] {
                self.encoder.push_encoded(&record.encoded());
            }
            (offsets, head)
        };
        let (offsets, encoder) = taken;
        let old_position = self.position;
        let last_new = offsets.iter().rev().copied().find(|&o| old_position.is_none_or(|p| o >= p));
        if let Some(last) = last_new {
            self.position = Some(last + 1);
        }
        self.leave_isolation(offsets.last().copied());
        TakenBatch { count: encoder.count(), records: encoder.into_bytes(), offsets, old_position, last_new }
    }

    /// If retries are due at `now`: the next batch of them (up to the batch limit),
    /// all redeliveries.
    pub(crate) fn take_due_retries(&mut self, batch_size: usize, now: Instant) -> Option<TakenBatch> {
        if self.halted.is_some() || self.retry_due.is_none_or(|due| due > now) {
            return None;
        }
        let first = *self.retries.keys().next()?;
        let limit = self.batch_limit(batch_size, first);
        let offsets: Vec<i64> = self.retries.keys().take(limit).copied().collect();
        let mut encoder = BatchEncoder::new();
        for offset in &offsets {
            encoder.push_encoded(&self.retries.remove(offset).expect("a key just listed"));
        }
        if self.retries.is_empty() {
            self.retry_due = None;
        }
        self.leave_isolation(offsets.last().copied());
        Some(TakenBatch {
            count: encoder.count(),
            records: encoder.into_bytes(),
            offsets,
            old_position: self.position,
            last_new: None,
        })
    }

    /// Ends the isolation of a range once a batch went past it and nothing in it
    /// awaits another try.
    fn leave_isolation(&mut self, last_taken: Option<i64>) {
        if let Some(iso) = self.isolation
            && last_taken.is_some_and(|last| last >= iso.last)
            && self.retries.range(iso.first..=iso.last).next().is_none()
        {
            self.isolation = None;
        }
    }

    /// Attempts record `offset` was charged so far.
    pub(crate) fn attempts(&self, offset: i64) -> u32 {
        if self.attempts.is_empty() { 0 } else { self.attempts.get(&offset).copied().unwrap_or(0) }
    }

    /// Forgets what was kept for a record that is finished one way or the other.
    /// Free when nothing awaits a retry, which is the common case.
    pub(crate) fn forget_retry(&mut self, offset: i64) {
        if self.attempts.is_empty() {
            return;
        }
        self.attempts.remove(&offset);
    }

    /// Keeps `record` to hand to the guest again, charged `attempts` so far.
    pub(crate) fn keep_for_retry(&mut self, record: &RawRecord<'_>, attempts: u32) {
        self.retries.insert(record.offset, record.encoded());
        if attempts > 0 {
            self.attempts.insert(record.offset, attempts);
        }
    }

    /// Delivers records of this range in smaller batches from now on.
    pub(crate) fn isolate(&mut self, isolation: Isolation) {
        self.isolation = Some(isolation);
    }

    /// Whether records await another try (the partition is paused meanwhile).
    pub(crate) fn awaits_retries(&self) -> bool {
        !self.retries.is_empty()
    }

    /// Sets when the records kept for another try are due (the earliest wins).
    pub(crate) fn retry_at(&mut self, due: Instant) {
        self.retry_due = Some(self.retry_due.map_or(due, |d| d.min(due)));
    }

    /// When the retries are due, if any wait.
    pub(crate) fn retry_due(&self) -> Option<Instant> {
        self.retry_due
    }

    /// Halts the partition (paused until it is reassigned); false if it already was.
    pub(crate) fn halt(&mut self, reason: String) -> bool {
        if self.halted.is_some() {
            return false;
        }
        self.discard_buffer();
        self.retries.clear();
        self.attempts.clear();
        self.retry_due = None;
        self.deferred_unreadable = None;
        self.halted = Some(reason);
        true
    }

    /// Whether the partition is halted.
    pub(crate) fn is_halted(&self) -> bool {
        self.halted.is_some()
    }

    /// Whether records are buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// Remembers an unreadable record at `offset` until the retries pending before it
    /// are done (the earliest, if several).
    pub(crate) fn defer_unreadable(&mut self, offset: i64, reason: String) {
        if self.deferred_unreadable.as_ref().is_none_or(|(earlier, _)| offset < *earlier) {
            self.deferred_unreadable = Some((offset, reason));
        }
    }

    /// The unreadable record to deal with now, if one waits and nothing before it
    /// does (no retries pending, nothing buffered).
    pub(crate) fn take_deferred_unreadable(&mut self) -> Option<(i64, String)> {
        if self.retries.is_empty() && self.offsets.is_empty() { self.deferred_unreadable.take() } else { None }
    }

    /// Counts `n` messages taken from the consumer.
    pub(crate) fn note_taken(&mut self, n: usize) {
        self.taken += n as u64;
    }

    /// Messages taken from the consumer since the assignment.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// Whether the pipeline holds the partition back itself (halted, or retries
    /// pending), so that it does not advance for good reasons of its own.
    pub(crate) fn holds_back(&self) -> bool {
        self.halted.is_some() || !self.retries.is_empty()
    }

    /// Whether an unreadable record waits for the retries before it.
    pub(crate) fn has_deferred_unreadable(&self) -> bool {
        self.deferred_unreadable.is_some()
    }

    /// Moves the position to `offset`: what lies before it was dealt with without
    /// the guest (an unreadable record).
    pub(crate) fn skip_to(&mut self, offset: i64) {
        self.position = Some(self.position.map_or(offset, |p| p.max(offset)));
    }

    /// Exactly-once: the outputs waiting for the watermark.
    pub(crate) fn held_mut(&mut self) -> &mut Held<(Option<i32>, OutputRecord)> {
        &mut self.held
    }

    /// Drops buffered records (they are delivered again to the next owner).
    pub(crate) fn discard_buffer(&mut self) {
        self.encoder.clear();
        self.offsets.clear();
        self.first_buffered_at = None;
    }
}

/// A batch taken from a partition: buffered records, or records kept for a retry.
pub(crate) struct TakenBatch {
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
            .map(|o| p.buffer(o, batch_size, |e| e.push(o, None, None, Some(b"v"), []), Instant::now))
            .collect()
    }

    fn raw(offset: i64) -> Vec<u8> {
        let mut e = BatchEncoder::new();
        e.push(offset, None, Some(b"k"), Some(b"v"), []);
        e.into_bytes()
    }

    fn keep(p: &mut PartitionState, offset: i64, attempts: u32) {
        let bytes = raw(offset);
        let record = ferry_sdk::wire::decode(&bytes, 1).next().unwrap().unwrap();
        p.keep_for_retry(&record, attempts);
    }

    #[test]
    fn delivered_records_are_not_taken_again() {
        let mut p = state();
        assert_eq!(p.admit(0), Admission::Take);
        fill(&mut p, 0..10, 100);
        let taken = p.take_batch(100, Vec::new());
        assert_eq!((taken.old_position, taken.last_new), (None, Some(9)));
        assert_eq!(p.admit(4), Admission::Skip);
        assert_eq!(p.admit(10), Admission::Take);
        fill(&mut p, [10], 100);
        assert_eq!(p.admit(10), Admission::Skip, "already buffered");
        assert!(p.halt("x".into()));
        assert_eq!(p.admit(11), Admission::Skip);
        assert!(!p.halt("again".into()));
    }

    #[test]
    fn retries_come_from_memory_before_anything_newer() {
        let mut p = state();
        fill(&mut p, 0..4, 4);
        p.take_batch(4, Vec::new());
        keep(&mut p, 1, 1);
        keep(&mut p, 3, 0);
        let now = Instant::now();
        p.retry_at(now + Duration::from_secs(1));
        assert!(p.awaits_retries());
        // New records are buffered meanwhile, but do not go out.
        assert_eq!(fill(&mut p, 4..8, 4), [false; 4]);
        assert!(!p.is_due(4, Duration::ZERO, now), "nothing passes a pending retry");
        assert!(p.take_due_retries(4, now).is_none(), "not due yet");
        let retried = p.take_due_retries(4, now + Duration::from_secs(1)).unwrap();
        assert_eq!(retried.offsets, [1, 3]);
        assert_eq!((retried.old_position, retried.last_new), (Some(4), None), "redeliveries only");
        let records: Vec<_> =
            ferry_sdk::wire::decode(&retried.records, retried.count).map(|r| r.unwrap().offset).collect();
        assert_eq!(records, [1, 3]);
        assert_eq!(p.attempts(1), 1);
        assert!(!p.awaits_retries());
        assert!(p.is_due(4, Duration::from_secs(60), now), "the buffer may go now");
    }

    #[test]
    fn an_isolated_range_comes_in_small_batches() {
        let mut p = state();
        p.isolate(Isolation { first: 0, last: 5, batch_size: 2 });
        assert_eq!(fill(&mut p, [0, 1], 100), [false, true]);
        p.take_batch(100, Vec::new());
        assert_eq!(fill(&mut p, [2, 3], 100), [false, true]);
        p.take_batch(100, Vec::new());
        assert_eq!(fill(&mut p, [4, 5], 100), [false, true]);
        p.take_batch(100, Vec::new());
        assert_eq!(fill(&mut p, [6, 7, 8], 100), [false, false, false], "past the range: full batches again");
    }

    #[test]
    fn a_buffer_that_grew_past_a_batch_is_split() {
        let mut p = state();
        fill(&mut p, 0..2, 2);
        p.take_batch(2, Vec::new());
        keep(&mut p, 0, 1);
        p.retry_at(Instant::now());
        fill(&mut p, 2..7, 2);
        p.take_due_retries(2, Instant::now()).unwrap();
        let first = p.take_batch(2, Vec::new());
        assert_eq!(first.offsets, [2, 3]);
        let decoded: Vec<_> = ferry_sdk::wire::decode(&first.records, first.count).map(|r| r.unwrap().offset).collect();
        assert_eq!(decoded, [2, 3]);
        let second = p.take_batch(2, Vec::new());
        assert_eq!(second.offsets, [4, 5]);
        assert_eq!(p.take_batch(2, Vec::new()).offsets, [6]);
    }
}
