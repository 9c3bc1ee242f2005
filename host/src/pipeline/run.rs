//! Running one batch through the guest within its time limit, and splitting it when
//! the guest faults, so the healthy records around a poison record are processed and
//! only the poison record carries the fault.
//!
//! The whole batch, splits included, gets one time limit: a dispatch never holds the
//! pipeline thread longer than that, so the pipeline's other partitions keep flowing
//! past a tenant that hangs. What runs out of time is not split here: records that
//! timed out together are *suspects*, delivered again in smaller batches over later
//! turns of the loop ([`super::settle`]); records the guest did not get to, or got
//! to with less than its full time, are *untried* and delivered again as they were.
//!
//! A call the host stopped to shut down ends the run: the guest is handed nothing
//! after it, so it never sees a later record of the partition while earlier ones it
//! was not given are left for the next owner.

use std::time::Instant;

use ferry_sdk::wire::{self, BatchEncoder};

use crate::sandbox::{Batch, Emitted, GuestFault, Outcome, OutputUsed, ProcessorInstance, StateBatch};

/// What a batch run needs of a guest: one call on a batch, within a deadline and
/// the output limits left, and the partition's state if the pipeline keeps any.
/// [`ProcessorInstance`] is the real one; tests script their own.
pub trait BatchGuest {
    /// The deadline of a call starting now (the guest's time limit per batch).
    fn deadline_from_now(&self) -> Instant;
    /// Processes `batch` (records at `offsets`, ascending) before `deadline`, with the
    /// batch's output limits `used` that far: an outcome per record and what was
    /// emitted, or the fault that ended the call. `state` comes back with the call's
    /// writes kept if it returned, dropped if it faulted.
    fn call(
        &mut self,
        batch: &Batch,
        offsets: &[i64],
        deadline: Instant,
        used: &mut OutputUsed,
        state: &mut Option<StateBatch>,
    ) -> Result<(Vec<Outcome>, Vec<Emitted>), GuestFault>;
}

impl BatchGuest for ProcessorInstance {
    fn deadline_from_now(&self) -> Instant {
        ProcessorInstance::deadline_from_now(self)
    }

    fn call(
        &mut self,
        batch: &Batch,
        offsets: &[i64],
        deadline: Instant,
        used: &mut OutputUsed,
        state: &mut Option<StateBatch>,
    ) -> Result<(Vec<Outcome>, Vec<Emitted>), GuestFault> {
        self.process_within(batch, offsets, deadline, used, state)
            .map(|(reply, outputs)| (reply.into_outcomes().collect(), outputs))
    }
}

/// The result of a batch: an outcome per record, what the parts that returned
/// emitted, and the faults met on the way (for metrics).
#[derive(Debug, Default)]
pub struct BatchRun {
    /// One per record, in batch order.
    pub outcomes: Vec<Outcome>,
    /// What returning calls emitted, each on behalf of its record (or part).
    pub outputs: Vec<Emitted>,
    /// Every fault, including those isolated away.
    pub faults: Vec<GuestFault>,
    /// The partition's state with the writes of the calls that returned.
    pub state: Option<StateBatch>,
}

/// Runs `batch` (whose records have these `offsets`, ascending) through `instance`.
/// `batch` carries the encoded records in and out, so its allocation is reused.
/// `state` is the partition's state, lent to every call of the batch in turn.
pub fn run_batch(
    instance: &mut impl BatchGuest,
    batch: &mut Batch,
    offsets: &[i64],
    state: Option<StateBatch>,
) -> BatchRun {
    // Finding one poison record among n takes about log2(n) faulting calls. The
    // budget allows a few poison records per batch; records still unresolved when it
    // runs out carry the fault and go through the retry policy.
    let mut calls = 2 * (usize::BITS - offsets.len().leading_zeros()) + 2;
    let mut run = BatchRun { outcomes: Vec::with_capacity(offsets.len()), ..BatchRun::default() };
    let limit = instance.deadline_from_now();
    // One output budget for the whole batch, splits included: a batch that faults
    // must not multiply what its calls may make the host hold.
    let mut budget =
        Budget { at: limit, full: limit - Instant::now(), used: OutputUsed::default(), stopped: false, state };
    run_part(instance, batch, offsets, &mut budget, &mut calls, &mut run);
    run.state = budget.state;
    run
}

/// What every call of one batch shares: its deadline and its output limits.
struct Budget {
    at: Instant,
    /// The time limit of one call: a call started with less left and then out of
    /// time did not get its fair share.
    full: std::time::Duration,
    /// How much of the batch's output limits the calls so far used.
    used: OutputUsed,
    /// The host stopped a call: no record after it goes to the guest.
    stopped: bool,
    /// The partition's state, passed from call to call.
    state: Option<StateBatch>,
}

fn run_part(
    instance: &mut impl BatchGuest,
    batch: &mut Batch,
    offsets: &[i64],
    budget: &mut Budget,
    calls: &mut u32,
    run: &mut BatchRun,
) {
    let started = Instant::now();
    if budget.stopped || started >= budget.at {
        run.outcomes.extend(std::iter::repeat_n(Outcome::Untried, offsets.len()));
        return;
    }
    let had_full_time = budget.at - started + std::time::Duration::from_millis(1) >= budget.full;
    match instance.call(batch, offsets, budget.at, &mut budget.used, &mut budget.state) {
        Ok((outcomes, outputs)) => {
            run.outcomes.extend(outcomes);
            run.outputs.extend(outputs);
        }
        // The host is stopping: this part and every later one are left untried, and
        // nothing more of the batch goes to the guest.
        Err(GuestFault::Cancelled) => {
            budget.stopped = true;
            run.outcomes.extend(std::iter::repeat_n(Outcome::Untried, offsets.len()));
        }
        // Nothing to isolate: no record of it ran.
        Err(fault @ GuestFault::PoolFull(_)) => {
            run.faults.push(fault.clone());
            run.outcomes.extend(std::iter::repeat_n(Outcome::Fault(fault), offsets.len()));
        }
        Err(fault @ GuestFault::Timeout(_)) => {
            let outcome = match (had_full_time, offsets.len()) {
                (false, _) => Outcome::Untried,
                (true, 1) => Outcome::Fault(fault.clone()),
                (true, _) => Outcome::Suspect,
            };
            run.faults.push(fault);
            run.outcomes.extend(std::iter::repeat_n(outcome, offsets.len()));
        }
        Err(fault) if offsets.len() == 1 || *calls == 0 => {
            run.faults.push(fault.clone());
            run.outcomes.extend(std::iter::repeat_n(Outcome::Fault(fault), offsets.len()));
        }
        Err(fault) => {
            *calls -= 1;
            run.faults.push(fault);
            isolate(instance, batch, offsets, budget, calls, run);
        }
    }
}

/// Splits a faulting batch in two and runs each half, recursively.
fn isolate(
    instance: &mut impl BatchGuest,
    batch: &Batch,
    offsets: &[i64],
    budget: &mut Budget,
    calls: &mut u32,
    run: &mut BatchRun,
) {
    let started = Instant::now();
    let mid = offsets.len() / 2;
    let records: Vec<_> =
        wire::decode(&batch.records, batch.count).collect::<Result<_, _>>().expect("the host encoded this batch");
    for (range, part_offsets) in [(0..mid, &offsets[..mid]), (mid..offsets.len(), &offsets[mid..])] {
        let mut encoder = BatchEncoder::with_capacity(batch.records.len() / 2);
        for record in &records[range] {
            encoder.push(record.offset, record.timestamp_ms, record.key, record.value, record.headers());
        }
        let mut part = Batch {
            topic: batch.topic.clone(),
            partition: batch.partition,
            count: encoder.count(),
            records: encoder.into_bytes(),
        };
        run_part(instance, &mut part, part_offsets, budget, calls, run);
    }
    tracing::debug!(
        records = offsets.len(),
        micros = started.elapsed().as_micros() as u64,
        "isolated faulting records"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// A guest that goes through its records in order, panics at poison records, and
    /// is stopped by the host from call `stopped_from` on (before it sees a record).
    #[derive(Default)]
    struct Scripted {
        poison: BTreeSet<i64>,
        stopped_from: Option<usize>,
        /// The records each call was handed, in order.
        calls: Vec<Vec<i64>>,
    }

    impl BatchGuest for Scripted {
        fn deadline_from_now(&self) -> Instant {
            Instant::now() + Duration::from_secs(3600)
        }

        fn call(
            &mut self,
            batch: &Batch,
            offsets: &[i64],
            _deadline: Instant,
            _used: &mut OutputUsed,
            _state: &mut Option<StateBatch>,
        ) -> Result<(Vec<Outcome>, Vec<Emitted>), GuestFault> {
            let decoded: Vec<i64> = wire::decode(&batch.records, batch.count).map(|r| r.unwrap().offset).collect();
            assert_eq!(decoded, offsets, "the batch holds the records its offsets name");
            if self.stopped_from.is_some_and(|from| self.calls.len() >= from) {
                self.calls.push(Vec::new());
                return Err(GuestFault::Cancelled);
            }
            let mut handed = Vec::new();
            for &offset in offsets {
                handed.push(offset);
                if self.poison.contains(&offset) {
                    self.calls.push(handed);
                    return Err(GuestFault::Panic("poison".into()));
                }
            }
            self.calls.push(handed);
            Ok((vec![Outcome::Processed; offsets.len()], Vec::new()))
        }
    }

    fn batch_of(offsets: &[i64]) -> Batch {
        let mut encoder = BatchEncoder::new();
        for &offset in offsets {
            encoder.push(offset, None, None, Some(b"v"), []);
        }
        Batch { topic: "in".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() }
    }

    fn run(guest: &mut Scripted, offsets: &[i64]) -> BatchRun {
        run_batch(guest, &mut batch_of(offsets), offsets, None)
    }

    #[test]
    fn a_poison_record_is_isolated_and_its_neighbours_processed() {
        let offsets: Vec<i64> = (100..150).collect();
        let mut guest = Scripted { poison: [116].into(), ..Scripted::default() };
        let run = run(&mut guest, &offsets);
        for (offset, outcome) in offsets.iter().zip(&run.outcomes) {
            assert_eq!(outcome.is_processed(), *offset != 116, "{offset}: {outcome:?}");
        }
        assert!(matches!(run.outcomes[16], Outcome::Fault(GuestFault::Panic(_))));
    }

    /// The host stops while a poison record is being isolated: the half after it is
    /// not handed to the guest (which would then have seen 125.. but never 117..=124),
    /// and nothing of the batch counts.
    #[test]
    fn a_stopped_call_ends_the_run() {
        let offsets: Vec<i64> = (100..150).collect();
        let mut guest = Scripted { poison: [116].into(), stopped_from: Some(1), ..Scripted::default() };
        let run = run(&mut guest, &offsets);
        assert_eq!(guest.calls, [(100..=116).collect::<Vec<_>>(), Vec::new()], "nothing after the stopped call");
        assert!(run.outcomes.iter().all(|o| *o == Outcome::Untried), "{:?}", run.outcomes);
    }

    proptest! {
        /// Whatever the poison records and whenever the host stops: one outcome per
        /// record; a poison record is never processed; without a stop every other
        /// record is processed or faulted with its part (and comes back); after a
        /// stopped call the guest is handed nothing, and the records left untried are
        /// the batch's last ones (the guest never ran a record after one it was not
        /// given).
        #[test]
        fn isolation_keeps_order_and_stops_with_the_host(
            len in 1usize..80,
            poison in prop::collection::btree_set(0i64..80, 0..4),
            stopped_from in prop::option::of(0usize..20),
        ) {
            let offsets: Vec<i64> = (0..len as i64).collect();
            let mut guest = Scripted { poison: poison.clone(), stopped_from, calls: Vec::new() };
            let run = run(&mut guest, &offsets);
            prop_assert_eq!(run.outcomes.len(), len);
            for (offset, outcome) in offsets.iter().zip(&run.outcomes) {
                prop_assert!(!(poison.contains(offset) && outcome.is_processed()), "{}: {:?}", offset, outcome);
            }
            match guest.calls.iter().position(Vec::is_empty) {
                Some(stopped) => {
                    prop_assert_eq!(stopped + 1, guest.calls.len(), "no call after the stopped one: {:?}", guest.calls);
                    let first_untried = run.outcomes.iter().position(|o| *o == Outcome::Untried).expect("a stopped part");
                    prop_assert!(
                        run.outcomes[first_untried..].iter().all(|o| *o == Outcome::Untried),
                        "records after {} ran: {:?}", first_untried, run.outcomes
                    );
                }
                None => {
                    for (offset, outcome) in offsets.iter().zip(&run.outcomes) {
                        prop_assert!(outcome.is_processed() || matches!(outcome, Outcome::Fault(_)), "{}: {:?}", offset, outcome);
                    }
                }
            }
        }
    }
}
