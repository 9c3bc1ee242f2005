//! Test guest: answers one status fewer than the batch has records (a guest bug the
//! host must catch and never commit on).

use ferry_sdk::{Batch, Context, Error, Outcome, Processor, Record};

/// Drops the last outcome of every batch.
#[derive(Debug, Default)]
pub struct BadCount;

impl Processor for BadCount {
    fn process(&mut self, _record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch<'_>, _ctx: &mut Context) -> Vec<Outcome> {
        vec![Outcome::Processed; batch.len().saturating_sub(1)]
    }
}

ferry_sdk::export_processor!(BadCount);
