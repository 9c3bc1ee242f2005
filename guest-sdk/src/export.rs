//! Glue between the generated bindings and [`Processor`]. Hidden: only
//! [`export_processor!`](crate::export_processor) uses it.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::__bindings::exports::ferry::processor::handler::{Batch as WitBatch, BatchResult};
use crate::__bindings::ferry::processor::types::{Failure, Status};
use crate::{Batch, Context, Outcome, Processor};

pub use crate::__bindings::exports::ferry::processor::handler::{
    Batch as WireBatch, BatchResult as WireBatchResult, Guest,
};

/// Where `export_processor!` keeps the processor of a component.
pub type Slot<P> = RefCell<Option<P>>;

/// Runs one batch through the processor in `slot`, creating it on first use.
pub fn process<P: Processor>(slot: &'static LocalKey<Slot<P>>, batch: WitBatch) -> BatchResult {
    let view = Batch::from_wire(&batch.topic, batch.partition, batch.count, &batch.records)
        .unwrap_or_else(|e| panic!("ferry-sdk: the host sent a corrupt batch: {e}"));
    let mut ctx = Context::new();
    let outcomes = slot.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.get_or_insert_with(P::default).process_batch(&view, &mut ctx)
    });
    batch_result(&view, outcomes)
}

/// Runs [`Processor::self_test`] on a fresh instance.
pub fn self_test<P: Processor>() -> Result<(), String> {
    P::default().self_test()
}

/// Converts outcomes to the WIT answer. The count is deliberately not checked: the
/// host validates it. Outcomes past the end of the batch get offset -1 in their
/// failure.
pub(crate) fn batch_result(batch: &Batch<'_>, outcomes: Vec<Outcome>) -> BatchResult {
    let statuses: Vec<Status> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Processed => Status::Processed,
            Outcome::Retry(_) => Status::Retry,
            Outcome::Reject(_) => Status::Reject,
        })
        .collect();
    let mut failures = Vec::new();
    if outcomes.iter().any(|o| !o.is_processed()) {
        let mut offsets = batch.iter().map(|record| record.offset());
        for outcome in outcomes {
            let offset = offsets.next().unwrap_or(-1);
            if let Outcome::Retry(reason) | Outcome::Reject(reason) = outcome {
                failures.push(Failure { offset, reason });
            }
        }
    }
    BatchResult { statuses, failures }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BatchEncoder;

    fn batch(encoder: &BatchEncoder) -> Batch<'_> {
        Batch::from_wire("t", 0, encoder.count(), encoder.bytes()).unwrap()
    }

    #[test]
    fn failures_carry_the_record_offset() {
        let mut encoder = BatchEncoder::new();
        for offset in [3, 4, 9] {
            encoder.push(offset, None, None, None, []);
        }
        let result =
            batch_result(&batch(&encoder), vec![Outcome::Processed, Outcome::retry("later"), Outcome::reject("never")]);
        assert_eq!(result.statuses, [Status::Processed, Status::Retry, Status::Reject]);
        let failures: Vec<_> = result.failures.iter().map(|f| (f.offset, f.reason.as_str())).collect();
        assert_eq!(failures, [(4, "later"), (9, "never")]);
    }

    #[test]
    fn wrong_counts_pass_through_for_the_host_to_catch() {
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, None, None, []);
        let result = batch_result(&batch(&encoder), vec![]);
        assert!(result.statuses.is_empty() && result.failures.is_empty());

        let result = batch_result(&batch(&encoder), vec![Outcome::Processed, Outcome::reject("extra")]);
        assert_eq!(result.statuses.len(), 2);
        assert_eq!(result.failures[0].offset, -1);
    }

    #[derive(Default)]
    struct Counting(u32);

    impl Processor for Counting {
        fn process(&mut self, _: &crate::Record<'_>, _: &mut Context) -> Outcome {
            self.0 += 1;
            if self.0.is_multiple_of(2) { Outcome::Processed } else { Outcome::retry(self.0.to_string()) }
        }

        fn self_test(&mut self) -> Result<(), String> {
            if self.0 == 0 { Ok(()) } else { Err("not fresh".into()) }
        }
    }

    thread_local! {
        static SLOT: Slot<Counting> = const { RefCell::new(None) };
    }

    #[test]
    fn state_persists_in_the_slot() {
        let mut encoder = BatchEncoder::new();
        encoder.push(7, None, None, None, []);
        let wit = |encoder: &BatchEncoder| WitBatch {
            topic: "t".into(),
            partition: 0,
            count: encoder.count(),
            records: encoder.bytes().to_vec(),
        };
        let first = process(&SLOT, wit(&encoder));
        assert_eq!(first.failures[0].reason, "1");
        let second = process(&SLOT, wit(&encoder));
        assert_eq!(second.statuses, [Status::Processed]);
        assert_eq!(SLOT.with(|s| s.borrow().as_ref().map(|c| c.0)), Some(2));
        assert_eq!(self_test::<Counting>(), Ok(()));
    }
}
