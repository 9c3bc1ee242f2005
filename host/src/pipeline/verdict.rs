//! Running one batch through the guest and turning the answer into a verdict per
//! record. When the guest faults on a batch, the batch is split in halves until the
//! records that cause the fault are alone: the healthy records around a poison
//! record are processed, and only the poison record carries the fault.

use std::time::Instant;

use ferry_sdk::wire::{self, BatchEncoder};

use crate::sandbox::{Batch, GuestFault, Outcome, OutputRecord, ProcessorInstance};

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Finished by the guest.
    Processed,
    /// The guest asked to try again later.
    Retry(String),
    /// The guest rejected it for good.
    Reject(String),
    /// The guest faulted on this record alone.
    Fault(GuestFault),
}

/// The result of a batch: a verdict per record, the outputs of the parts that
/// succeeded, and the faults met on the way (for metrics).
#[derive(Debug, Default)]
pub struct BatchRun {
    pub verdicts: Vec<Verdict>,
    pub outputs: Vec<OutputRecord>,
    pub faults: Vec<GuestFault>,
}

/// Runs `records` (wire format, `offsets` ascending) through `instance`.
///
/// `batch` carries the encoded records in and out, so its allocation is reused.
pub fn run_batch(instance: &mut ProcessorInstance, batch: &mut Batch, offsets: &[i64]) -> BatchRun {
    // Finding one poison record among n takes about log2(n) faulting calls, each as long
    // as the time limit when the guest loops. The budget allows a few poison records per
    // batch and bounds the time one batch can take; records still unresolved when it
    // runs out carry the fault and go through the retry policy.
    let mut fault_budget = 2 * (usize::BITS - offsets.len().leading_zeros()) + 2;
    let mut run = BatchRun { verdicts: Vec::with_capacity(offsets.len()), ..BatchRun::default() };
    run_part(instance, batch, offsets, &mut fault_budget, &mut run);
    run
}

fn run_part(
    instance: &mut ProcessorInstance,
    batch: &mut Batch,
    offsets: &[i64],
    budget: &mut u32,
    run: &mut BatchRun,
) {
    match instance.process(batch, offsets) {
        Ok((reply, outputs)) => {
            run.verdicts.extend((0..reply.len()).map(|i| match reply.outcome(i) {
                Outcome::Processed => Verdict::Processed,
                Outcome::Retry(reason) => Verdict::Retry(reason.to_owned()),
                Outcome::Reject(reason) => Verdict::Reject(reason.to_owned()),
            }));
            run.outputs.extend(outputs);
        }
        Err(fault) if offsets.len() == 1 || *budget == 0 => {
            run.faults.push(fault.clone());
            run.verdicts.extend(std::iter::repeat_n(Verdict::Fault(fault), offsets.len()));
        }
        Err(fault) => {
            *budget -= 1;
            run.faults.push(fault);
            isolate(instance, batch, offsets, budget, run);
        }
    }
}

/// Splits a faulting batch in two and runs each half, recursively.
fn isolate(instance: &mut ProcessorInstance, batch: &Batch, offsets: &[i64], budget: &mut u32, run: &mut BatchRun) {
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
        run_part(instance, &mut part, part_offsets, budget, run);
    }
    tracing::debug!(
        records = offsets.len(),
        micros = started.elapsed().as_micros() as u64,
        "isolated faulting records"
    );
}
