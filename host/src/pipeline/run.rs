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

use std::time::Instant;

use ferry_sdk::wire::{self, BatchEncoder};

use crate::sandbox::{Batch, Emitted, GuestFault, Outcome, ProcessorInstance};

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
}

/// Runs `batch` (whose records have these `offsets`, ascending) through `instance`.
/// `batch` carries the encoded records in and out, so its allocation is reused.
pub fn run_batch(instance: &mut ProcessorInstance, batch: &mut Batch, offsets: &[i64]) -> BatchRun {
    // Finding one poison record among n takes about log2(n) faulting calls. The
    // budget allows a few poison records per batch; records still unresolved when it
    // runs out carry the fault and go through the retry policy.
    let mut calls = 2 * (usize::BITS - offsets.len().leading_zeros()) + 2;
    let mut run = BatchRun { outcomes: Vec::with_capacity(offsets.len()), ..BatchRun::default() };
    let limit = instance.deadline_from_now();
    let deadline = Deadline { at: limit, full: limit - Instant::now() };
    run_part(instance, batch, offsets, deadline, &mut calls, &mut run);
    run
}

#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The time limit of one call: a call started with less left and then out of
    /// time did not get its fair share.
    full: std::time::Duration,
}

fn run_part(
    instance: &mut ProcessorInstance,
    batch: &mut Batch,
    offsets: &[i64],
    deadline: Deadline,
    calls: &mut u32,
    run: &mut BatchRun,
) {
    let started = Instant::now();
    if started >= deadline.at {
        run.outcomes.extend(std::iter::repeat_n(Outcome::Untried, offsets.len()));
        return;
    }
    let had_full_time = deadline.at - started + std::time::Duration::from_millis(1) >= deadline.full;
    match instance.process(batch, offsets, deadline.at) {
        Ok((reply, outputs)) => {
            run.outcomes.extend(reply.into_outcomes());
            run.outputs.extend(outputs);
        }
        Err(GuestFault::Cancelled) => run.outcomes.extend(std::iter::repeat_n(Outcome::Untried, offsets.len())),
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
            isolate(instance, batch, offsets, deadline, calls, run);
        }
    }
}

/// Splits a faulting batch in two and runs each half, recursively.
fn isolate(
    instance: &mut ProcessorInstance,
    batch: &Batch,
    offsets: &[i64],
    deadline: Deadline,
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
        run_part(instance, &mut part, part_offsets, deadline, calls, run);
    }
    tracing::debug!(
        records = offsets.len(),
        micros = started.elapsed().as_micros() as u64,
        "isolated faulting records"
    );
}
