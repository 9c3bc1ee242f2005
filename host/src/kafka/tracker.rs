//! Per-partition offset tracking: which offsets are finished, and how far the
//! committed bookmark may move.
//!
//! Pure code, no Kafka types, so it can be property-tested.
//!
//! The consumer hands us records in offset order. Every batch of newly delivered
//! records becomes a [`Span`] covering `[start, end)`: from the end of the previous
//! span to just past the batch's last record, so offsets the broker skipped
//! (compaction, transaction markers) are covered and never block the bookmark. A span
//! is held back as a whole while its batch is in flight or its output records await
//! broker acknowledgement; afterwards only its unfinished offsets (retry, reject
//! awaiting a dead letter) hold the bookmark back.
//!
//! The watermark is the first unfinished offset, which in Kafka's convention is
//! exactly the offset to commit: the next record a successor must read.
//!
//! A partition can leave this member and come back. Everything that refers to a
//! partition's offsets from outside (output acknowledgements, dead-letter acks,
//! delivery failures) carries the [`Epoch`] of the assignment it belongs to, and is
//! ignored once that assignment is over: a late ack of an earlier assignment never
//! touches the current one.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// One assignment of a partition to this member: a new one each time it is tracked
/// anew (after every revoke).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(u64);

/// Identifies the span created for one batch of newly delivered records, within its
/// assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId {
    epoch: Epoch,
    n: u64,
}

impl SpanId {
    /// The assignment the span belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
}

#[derive(Debug)]
struct Span {
    id: SpanId,
    start: i64,
    end: i64,
    /// Reasons the whole span counts as unfinished (batch in flight, outputs unacked).
    holds: u32,
    /// Its outputs will never be acknowledged (a delivery failed): it stays
    /// unfinished for good, but nothing of it is in flight any more.
    undeliverable: bool,
    /// Offsets in the span that are delivered but not finished.
    open: BTreeSet<i64>,
}

impl Span {
    fn first_unfinished(&self) -> Option<i64> {
        if self.holds > 0 { Some(self.start) } else { self.open.first().copied() }
    }
}

/// Offsets of one partition owned by this member.
#[derive(Debug)]
pub struct PartitionOffsets {
    epoch: Epoch,
    /// The first offset delivered after assignment: where tracking began.
    started_at: i64,
    /// The offset just after the last record ever delivered for this partition.
    position: i64,
    /// Spans in offset order, contiguous, covering `[watermark-ish, position)`.
    spans: VecDeque<Span>,
    /// Unfinished offsets whose dead letter is on its way to the broker.
    dead_letters_in_flight: BTreeSet<i64>,
    /// The last offset we committed (or learned was committed) for this partition.
    committed: Option<i64>,
    next_span: u64,
    /// Where records this member could not see begin (a batch librdkafka skipped):
    /// the bookmark never passes it.
    barrier: Option<i64>,
}

impl PartitionOffsets {
    /// Starts tracking at `first_offset`, the first record delivered after assignment.
    /// Everything before it was committed by a predecessor (or is gone).
    pub fn starting_at(epoch: Epoch, first_offset: i64) -> Self {
        Self {
            epoch,
            started_at: first_offset,
            position: first_offset,
            spans: VecDeque::new(),
            dead_letters_in_flight: BTreeSet::new(),
            committed: None,
            next_span: 0,
            barrier: None,
        }
    }

    /// The assignment these offsets belong to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Where tracking began: the first offset delivered after assignment.
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// The offset after the last record delivered so far.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The last committed offset we know of.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Registers a batch whose newly delivered records end at `last_new_offset`
    /// (inclusive). The whole span counts as unfinished until [`Self::settle`].
    ///
    /// Returns `None` when the batch holds only redeliveries.
    pub fn begin_batch(&mut self, last_new_offset: Option<i64>) -> Option<SpanId> {
        let last = last_new_offset?;
        assert!(last >= self.position, "batch offsets must move forward");
        let id = SpanId { epoch: self.epoch, n: self.next_span };
        self.next_span += 1;
        self.spans.push_back(Span {
            id,
            start: self.position,
            end: last + 1,
            holds: 1,
            undeliverable: false,
            open: BTreeSet::new(),
        });
        self.position = last + 1;
        Some(id)
    }

    /// Records the outcome of a batch: `unfinished` are offsets of the span that were
    /// not finished (retry, reject). The span stays held if `keep_held` (its output
    /// records await acknowledgement); call [`Self::release`] when they are acked.
    pub fn settle(&mut self, span: SpanId, unfinished: impl IntoIterator<Item = i64>, keep_held: bool) {
        let Some(s) = self.spans.iter_mut().find(|s| s.id == span) else {
            return;
        };
        s.open.extend(unfinished.into_iter().filter(|o| (s.start..s.end).contains(o)));
        if !keep_held {
            s.holds = s.holds.saturating_sub(1);
        }
        self.drop_finished_spans();
    }

    /// Releases the hold of a span whose output records were acknowledged. A span
    /// of another assignment, or one already released, is left alone.
    pub fn release(&mut self, span: SpanId) {
        if let Some(s) = self.spans.iter_mut().find(|s| s.id == span) {
            s.holds = s.holds.saturating_sub(1);
        }
        self.drop_finished_spans();
    }

    /// Notes that a span's outputs failed to deliver: it stays held (the bookmark
    /// never passes it; the partition's next owner processes it again), but no
    /// acknowledgement will come for it, so a revoke's drain does not wait for it.
    pub fn undeliverable(&mut self, span: SpanId) {
        if let Some(s) = self.spans.iter_mut().find(|s| s.id == span) {
            s.undeliverable = true;
        }
    }

    /// Marks a redelivered or dead-lettered offset as finished.
    pub fn finish(&mut self, offset: i64) {
        self.dead_letters_in_flight.remove(&offset);
        if let Some(span) = self.span_of_mut(offset) {
            span.open.remove(&offset);
        }
        self.drop_finished_spans();
    }

    /// Notes that an unfinished offset's dead letter was sent: revoke waits for it.
    pub fn dead_letter_sent(&mut self, offset: i64) {
        self.dead_letters_in_flight.insert(offset);
    }

    /// Notes that a dead letter will not be acknowledged (delivery failed): the
    /// offset stays unfinished, and nothing waits for it any more.
    pub fn dead_letter_failed(&mut self, offset: i64) {
        self.dead_letters_in_flight.remove(&offset);
    }

    /// The first unfinished offset: everything before it is finished. This is the
    /// offset to commit (Kafka commits the next offset to read).
    pub fn watermark(&self) -> i64 {
        let watermark = self.spans.iter().find_map(Span::first_unfinished).unwrap_or(self.position);
        self.barrier.map_or(watermark, |barrier| watermark.min(barrier))
    }

    /// Records from `offset` on could not be seen (librdkafka reported that it could
    /// not read them, and which they are is unknown): the bookmark never passes
    /// `offset`, nor anything not yet handed to the guest (what is buffered before it
    /// was never processed). Nothing later lifts it; the partition's next owner reads
    /// from the bookmark.
    pub fn bar(&mut self, offset: i64) {
        let at = offset.min(self.position);
        self.barrier = Some(self.barrier.map_or(at, |barrier| barrier.min(at)));
    }

    /// The offset to commit now, if it moved past what was committed.
    pub fn commit_candidate(&self) -> Option<i64> {
        let watermark = self.watermark();
        (self.committed.is_none_or(|c| watermark > c)).then_some(watermark)
    }

    /// Notes that `offset` was committed.
    pub fn mark_committed(&mut self, offset: i64) {
        if self.committed.is_none_or(|c| offset > c) {
            self.committed = Some(offset);
        }
    }

    /// The unfinished offsets below `position`, outside held spans, lowest first.
    pub fn open_offsets(&self) -> impl Iterator<Item = i64> + '_ {
        self.spans.iter().filter(|s| s.holds == 0).flat_map(|s| s.open.iter().copied())
    }

    /// Whether anything awaits the broker or the guest: a span in flight or
    /// awaiting output acks, or a dead letter on its way. A revoke drains these
    /// before its final commit. (A span whose outputs failed awaits nothing.)
    pub fn has_holds(&self) -> bool {
        !self.dead_letters_in_flight.is_empty() || self.spans.iter().any(|s| s.holds > 0 && !s.undeliverable)
    }

    fn span_of_mut(&mut self, offset: i64) -> Option<&mut Span> {
        let idx = self.spans.partition_point(|s| s.end <= offset);
        self.spans.get_mut(idx).filter(|s| s.start <= offset)
    }

    fn drop_finished_spans(&mut self) {
        while self.spans.front().is_some_and(|s| s.first_unfinished().is_none()) {
            self.spans.pop_front();
        }
    }
}

/// A topic-partition this member owns.
pub(crate) type TopicPartition = (String, i32);

/// The offsets of every partition this member currently owns.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionOffsets>,
    epochs: u64,
}

impl OffsetTracker {
    /// The partition's offsets, if it has delivered anything since it was assigned.
    pub fn get(&self, topic: &str, partition: i32) -> Option<&PartitionOffsets> {
        self.partitions.get(&(topic.to_owned(), partition))
    }

    /// Starts tracking a partition at `first_offset`, its first record delivered
    /// since it was assigned, under a new epoch (replacing any earlier tracking).
    pub fn start(&mut self, topic: &str, partition: i32, first_offset: i64) -> Epoch {
        self.epochs += 1;
        let epoch = Epoch(self.epochs);
        self.partitions.insert((topic.to_owned(), partition), PartitionOffsets::starting_at(epoch, first_offset));
        epoch
    }

    /// The partition's offsets, if tracked.
    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionOffsets> {
        self.partitions.get_mut(&(topic.to_owned(), partition))
    }

    /// The partition's offsets, if tracked under `epoch` (and not since replaced).
    pub fn current(&mut self, topic: &str, partition: i32, epoch: Epoch) -> Option<&mut PartitionOffsets> {
        self.get_mut(topic, partition).filter(|p| p.epoch == epoch)
    }

    /// Forgets a partition this member no longer owns.
    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<PartitionOffsets> {
        self.partitions.remove(&(topic.to_owned(), partition))
    }

    /// Every partition whose bookmark can move, with the offset to commit.
    pub fn commit_candidates(&self) -> Vec<(TopicPartition, i64)> {
        let mut out: Vec<_> =
            self.partitions.iter().filter_map(|(tp, p)| p.commit_candidate().map(|o| (tp.clone(), o))).collect();
        out.sort();
        out
    }

    /// Every tracked partition.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &PartitionOffsets)> {
        self.partitions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(first: i64) -> PartitionOffsets {
        PartitionOffsets::starting_at(Epoch(1), first)
    }

    #[test]
    fn clean_batches_move_the_bookmark_to_the_next_offset() {
        let mut p = fresh(0);
        let span = p.begin_batch(Some(9)).unwrap();
        assert_eq!(p.watermark(), 0, "in flight holds the bookmark");
        p.settle(span, [], false);
        assert_eq!(p.watermark(), 10);
        assert_eq!(p.commit_candidate(), Some(10));
        p.mark_committed(10);
        assert_eq!(p.commit_candidate(), None);
    }

    #[test]
    fn a_gap_holds_the_bookmark_at_the_unfinished_record() {
        let mut p = fresh(0);
        let span = p.begin_batch(Some(9)).unwrap();
        p.settle(span, [5], false);
        assert_eq!(p.watermark(), 5);
        assert_eq!(p.open_offsets().collect::<Vec<_>>(), [5], "only record 5 is unfinished");
        p.finish(5);
        assert_eq!(p.watermark(), 10);
    }

    #[test]
    fn outputs_awaiting_acks_hold_the_whole_span() {
        let mut p = fresh(3);
        let span = p.begin_batch(Some(4)).unwrap();
        p.settle(span, [], true);
        assert_eq!(p.watermark(), 3);
        p.release(span);
        assert_eq!(p.watermark(), 5);
    }

    #[test]
    fn skipped_offsets_do_not_block() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(2)).unwrap();
        // offsets 3..=6 compacted away; the next batch starts at 7
        let b = p.begin_batch(Some(8)).unwrap();
        p.settle(b, [], false);
        assert_eq!(p.watermark(), 0);
        p.settle(a, [], false);
        assert_eq!(p.watermark(), 9);
    }

    #[test]
    fn later_spans_do_not_pass_an_earlier_unfinished_one() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(4)).unwrap();
        let b = p.begin_batch(Some(9)).unwrap();
        p.settle(a, [2], false);
        p.settle(b, [], false);
        assert_eq!(p.watermark(), 2);
    }

    /// A partition leaves with outputs unacked, comes back
    /// to the same member, and the old ack arrives. It must not release the new
    /// assignment's span of the same number.
    #[test]
    fn a_late_ack_of_an_earlier_assignment_releases_nothing() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.start("t", 0, 0);
        let old_span = tracker.current("t", 0, old).unwrap().begin_batch(Some(9)).unwrap();
        tracker.current("t", 0, old).unwrap().settle(old_span, [], true);
        tracker.remove("t", 0);

        let new = tracker.start("t", 0, 0);
        assert_ne!(old, new);
        let p = tracker.current("t", 0, new).unwrap();
        let new_span = p.begin_batch(Some(9)).unwrap();
        p.settle(new_span, [4], true);
        assert!(tracker.current("t", 0, old).is_none(), "the old epoch finds nothing");
        let p = tracker.get_mut("t", 0).unwrap();
        p.release(old_span);
        p.finish(4);
        assert_eq!(p.watermark(), 0, "the new span is still held for its own outputs");
        p.release(new_span);
        assert_eq!(p.watermark(), 10);
    }

    #[test]
    fn settling_a_dropped_span_changes_nothing() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(4)).unwrap();
        p.settle(a, [], false);
        assert_eq!(p.watermark(), 5);
        p.settle(a, [2], false);
        p.settle(a, [], true);
        assert_eq!(p.watermark(), 5);
        assert!(!p.has_holds());
        assert_eq!(p.begin_batch(None), None, "a batch of redeliveries only opens no span");
        assert_eq!(p.watermark(), 5);
    }

    #[test]
    fn dead_letters_in_flight_are_holds_for_the_revoke_drain() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(4)).unwrap();
        p.settle(a, [3], false);
        assert!(!p.has_holds());
        p.dead_letter_sent(3);
        assert!(p.has_holds(), "the revoke must wait for the dead letter");
        p.finish(3);
        assert!(!p.has_holds());
        assert_eq!(p.watermark(), 5);
    }

    #[test]
    fn an_undeliverable_span_holds_the_bookmark_but_awaits_nothing() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(4)).unwrap();
        p.settle(a, [], true);
        let b = p.begin_batch(Some(9)).unwrap();
        p.settle(b, [], false);
        assert!(p.has_holds());
        p.undeliverable(a);
        assert!(!p.has_holds(), "no acknowledgement will come");
        assert_eq!(p.watermark(), 0, "its records are not finished");
    }

    #[test]
    fn a_bar_holds_the_bookmark_at_what_was_not_seen() {
        let mut p = fresh(0);
        let a = p.begin_batch(Some(4)).unwrap();
        p.settle(a, [], false);
        // Records 5..9 were buffered, never handed to the guest, when offset 12 turned
        // out unreadable.
        p.bar(12);
        assert_eq!(p.watermark(), 5, "nothing past what the guest finished");
        let b = p.begin_batch(Some(20)).unwrap();
        p.settle(b, [], false);
        assert_eq!(p.watermark(), 5, "not even records finished later");
        let mut q = fresh(0);
        let c = q.begin_batch(Some(9)).unwrap();
        q.settle(c, [], true);
        q.bar(3);
        q.release(c);
        assert_eq!(q.watermark(), 3, "an offset already delivered holds the bookmark too");
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        /// Deliver `n` new records (with `skip` offsets missing before them) and
        /// settle them with these unfinished positions, optionally held for acks.
        Batch { skip: u8, n: u8, unfinished: Vec<u8>, held: bool },
        /// A batch of redeliveries only: no new span.
        Redeliveries,
        /// Finish the k-th open offset.
        Finish(u8),
        /// Finish the k-th delivered offset, whatever its state (finished already,
        /// or inside a span still held).
        FinishAny(u8),
        /// Release the k-th held span.
        Release(u8),
        /// Release the k-th span released before, again.
        ReleaseAgain(u8),
        /// Release a span number of an earlier assignment.
        ReleaseStale(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 1u8..20, prop::collection::vec(0u8..20, 0..4), any::<bool>())
                .prop_map(|(skip, n, unfinished, held)| Step::Batch { skip, n, unfinished, held }),
            1 => Just(Step::Redeliveries),
            2 => any::<u8>().prop_map(Step::Finish),
            1 => any::<u8>().prop_map(Step::FinishAny),
            2 => any::<u8>().prop_map(Step::Release),
            1 => any::<u8>().prop_map(Step::ReleaseAgain),
            1 => any::<u8>().prop_map(Step::ReleaseStale),
        ]
    }

    proptest! {
        /// The bookmark never passes an unfinished record and always reaches the
        /// first unfinished one: checked against a naive model of every offset.
        #[test]
        fn watermark_is_the_first_unfinished_offset(steps in prop::collection::vec(step(), 1..80)) {
            let mut p = PartitionOffsets::starting_at(Epoch(2), 100);
            // model: offset -> finished?; skipped offsets do not exist
            let mut model: Vec<(i64, bool)> = Vec::new();
            // held spans: id, their offsets, and which of them are open
            let mut held: Vec<(SpanId, Vec<i64>, Vec<i64>)> = Vec::new();
            let mut released: Vec<SpanId> = Vec::new();
            let mut next = 100i64;
            let mut last_watermark = 100;
            for s in steps {
                match s {
                    Step::Batch { skip, n, unfinished, held: keep } => {
                        next += i64::from(skip);
                        let offsets: Vec<i64> = (next..next + i64::from(n)).collect();
                        next += i64::from(n);
                        let span = p.begin_batch(offsets.last().copied()).unwrap();
                        let open: Vec<i64> = unfinished.iter().filter(|&&u| u < n).map(|&u| offsets[usize::from(u)]).collect();
                        for &o in &offsets {
                            model.push((o, !keep && !open.contains(&o)));
                        }
                        p.settle(span, open.clone(), keep);
                        if keep {
                            held.push((span, offsets, open));
                        }
                    }
                    Step::Redeliveries => prop_assert_eq!(p.begin_batch(None), None),
                    Step::Finish(k) => {
                        let open: Vec<i64> = p.open_offsets().collect();
                        if !open.is_empty() {
                            let o = open[usize::from(k) % open.len()];
                            p.finish(o);
                            model.iter_mut().filter(|(m, _)| *m == o).for_each(|e| e.1 = true);
                        }
                    }
                    Step::FinishAny(k) => {
                        if !model.is_empty() {
                            let o = model[usize::from(k) % model.len()].0;
                            // Open in a held span: finished for itself, the span still holds.
                            let in_held_open = held.iter_mut().find(|(_, _, open)| open.contains(&o));
                            match in_held_open {
                                Some((_, _, open)) => open.retain(|&x| x != o),
                                None if p.open_offsets().any(|x| x == o) => {
                                    model.iter_mut().filter(|(m, _)| *m == o).for_each(|e| e.1 = true);
                                }
                                None => {}
                            }
                            p.finish(o);
                        }
                    }
                    Step::Release(k) => {
                        if !held.is_empty() {
                            let (span, offsets, open) = held.remove(usize::from(k) % held.len());
                            p.release(span);
                            released.push(span);
                            model.iter_mut().filter(|(m, _)| offsets.contains(m) && !open.contains(m)).for_each(|e| e.1 = true);
                        }
                    }
                    Step::ReleaseAgain(k) => {
                        if !released.is_empty() {
                            p.release(released[usize::from(k) % released.len()]);
                        }
                    }
                    Step::ReleaseStale(k) => p.release(SpanId { epoch: Epoch(1), n: u64::from(k) % 16 }),
                }
                // The bookmark may stop anywhere between the last existing finished
                // offset and the first unfinished one: offsets in between do not exist.
                let first_unfinished = model.iter().find(|(_, done)| !done).map_or(next, |(o, _)| *o);
                let last_finished_below = model.iter().filter(|(o, _)| *o < first_unfinished).map(|(o, _)| *o).max().unwrap_or(99);
                let w = p.watermark();
                prop_assert!(w > last_finished_below && w <= first_unfinished,
                    "watermark {} outside ({}, {}]", w, last_finished_below, first_unfinished);
                prop_assert!(p.watermark() >= last_watermark, "the bookmark never moves back");
                last_watermark = p.watermark();
            }
        }
    }
}
