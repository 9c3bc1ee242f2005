//! Glue between the generated bindings and [`Processor`]. Hidden: only
//! [`export_processor!`](crate::export_processor) uses it.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::__bindings::exports::ferry::processor::handler::{Batch as WitBatch, BatchResult, TopicPartition as WitTp};
use crate::__bindings::ferry::processor::types::{Failure, Status};
use crate::{Batch, Outcome, Processor, Settings, TopicPartition};

pub use crate::__bindings::exports::ferry::processor::handler::{
    Batch as WireBatch, BatchResult as WireBatchResult, Guest, TopicPartition as WireTopicPartition,
};

/// Where `export_processor!` keeps the processor of a component.
pub type Slot<P> = RefCell<Option<P>>;

/// The processor in `slot`, created and configured on first use.
fn with_processor<P: Processor, R>(slot: &'static LocalKey<Slot<P>>, f: impl FnOnce(&mut P) -> R) -> R {
    slot.with(|slot| {
        let mut slot = slot.borrow_mut();
        let processor = slot.get_or_insert_with(|| configured::<P>().unwrap_or_else(|e| panic!("{e}")));
        f(processor)
    })
}

/// A fresh processor, configured with the pipeline's settings.
fn configured<P: Processor>() -> Result<P, String> {
    let mut processor = P::default();
    #[cfg(target_arch = "wasm32")]
    let settings = Settings::from_host();
    #[cfg(not(target_arch = "wasm32"))]
    let settings = Settings::default();
    processor.configure(&settings).map_err(|e| format!("ferry-sdk: the processor refused its settings: {e}"))?;
    Ok(processor)
}

/// Runs one batch through the processor in `slot`.
pub fn process<P: Processor>(slot: &'static LocalKey<Slot<P>>, batch: WitBatch) -> BatchResult {
    let mut decoded = Vec::new();
    let view = Batch::decode_into(&batch.topic, batch.partition, batch.count, &batch.records, &mut decoded)
        .unwrap_or_else(|e| panic!("ferry-sdk: the host sent a corrupt batch: {e}"));
    #[cfg(target_arch = "wasm32")]
    let mut ctx = crate::Context::new();
    #[cfg(not(target_arch = "wasm32"))]
    let mut ctx = crate::testing::Harness::new().context_for(&view);
    let outcomes = with_processor(slot, |p| p.process_batch(&view, &mut ctx));
    batch_result(&view, outcomes)
}

/// Tells the processor in `slot` that a partition's batches are coming.
pub fn assigned<P: Processor>(slot: &'static LocalKey<Slot<P>>, partition: WitTp) {
    let partition = TopicPartition { topic: partition.topic, partition: partition.partition };
    with_processor(slot, |p| p.assigned(&partition));
}

/// Tells the processor in `slot` that a partition is gone.
pub fn revoked<P: Processor>(slot: &'static LocalKey<Slot<P>>, partition: WitTp) {
    let partition = TopicPartition { topic: partition.topic, partition: partition.partition };
    with_processor(slot, |p| p.revoked(&partition));
}

/// Runs [`Processor::self_test`] on a fresh, configured instance.
pub fn self_test<P: Processor>() -> Result<(), String> {
    configured::<P>()?.self_test()
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
    use crate::{Context, Error, Record};

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
    struct Counting {
        seen: u32,
        partitions: Vec<TopicPartition>,
    }

    impl Processor for Counting {
        fn process(&mut self, _: &Record<'_>, _: &mut Context) -> Result<(), Error> {
            self.seen += 1;
            if self.seen.is_multiple_of(2) { Ok(()) } else { Err(Error::retry(self.seen.to_string())) }
        }

        fn assigned(&mut self, partition: &TopicPartition) {
            self.partitions.push(partition.clone());
        }

        fn revoked(&mut self, partition: &TopicPartition) {
            self.partitions.retain(|p| p != partition);
        }

        fn self_test(&mut self) -> Result<(), String> {
            if self.seen == 0 { Ok(()) } else { Err("not fresh".into()) }
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
        assigned(&SLOT, WitTp { topic: "t".into(), partition: 0 });
        let first = process(&SLOT, wit(&encoder));
        assert_eq!(first.failures[0].reason, "1");
        let second = process(&SLOT, wit(&encoder));
        assert_eq!(second.statuses, [Status::Processed]);
        assert_eq!(SLOT.with(|s| s.borrow().as_ref().map(|c| c.seen)), Some(2));
        revoked(&SLOT, WitTp { topic: "t".into(), partition: 0 });
        assert_eq!(SLOT.with(|s| s.borrow().as_ref().map(|c| c.partitions.len())), Some(0));
        assert_eq!(self_test::<Counting>(), Ok(()));
    }
}
