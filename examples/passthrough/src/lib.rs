//! The simplest processor: every record is processed, nothing is emitted or logged.
//!
//! It imports no ferry capability, which makes it the benchmark guest: its cost is the
//! boundary itself.

use ferry_sdk::{Batch, Context, Error, Outcome, Processor, Record};

/// Marks every record processed.
#[derive(Debug, Default)]
pub struct Passthrough;

impl Processor for Passthrough {
    fn process(&mut self, _record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        Ok(())
    }

    /// Answers the whole batch at once without looking at the records.
    fn process_batch(&mut self, batch: &Batch<'_>, _ctx: &mut Context) -> Vec<Outcome> {
        vec![Outcome::Processed; batch.len()]
    }
}

ferry_sdk::export_processor!(Passthrough);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::testing::{self, TestBatch};

    #[test]
    fn processes_everything() {
        let batch = TestBatch::new("in", 0).record("k", "v").tombstone("k").raw(None, None, [("h", None)]);
        let run = testing::run(&mut Passthrough, &batch);
        assert_eq!(run.outcomes.len(), 3);
        assert!(run.all_processed());
        assert!(run.emitted.is_empty());
        assert!(run.logs.is_empty());
    }

    #[test]
    fn empty_batch() {
        let run = testing::run(&mut Passthrough, &TestBatch::new("in", 0));
        assert!(run.outcomes.is_empty());
    }

    #[test]
    fn per_record_path_agrees() {
        let batch = TestBatch::new("in", 0).record("k", "v").value_only("w");
        let each = testing::Harness::new().run_each(&mut Passthrough, &batch);
        assert_eq!(each, testing::run(&mut Passthrough, &batch));
    }
}
