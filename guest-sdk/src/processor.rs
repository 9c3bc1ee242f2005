//! The trait a tenant implements.

use crate::{Batch, Context, Record};

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done: the host may commit past this record.
    Processed,
    /// Not done, try again later (a downstream was unavailable, ...). The reason is
    /// kept in the host's logs.
    Retry(String),
    /// Never going to work (malformed input, ...): the host dead-letters the record or
    /// halts, by policy. The reason is kept in logs and dead-letter headers.
    Reject(String),
}

impl Outcome {
    /// `Outcome::Retry` with any string-like reason.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry(reason.into())
    }

    /// `Outcome::Reject` with any string-like reason.
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject(reason.into())
    }

    /// True for [`Outcome::Processed`].
    pub fn is_processed(&self) -> bool {
        matches!(self, Outcome::Processed)
    }
}

/// A stream processor.
///
/// The host gives the processor one [`Batch`] at a time, all from one
/// topic-partition, and commits an input offset only once that record and every
/// record before it is finished.
///
/// # Lifetime and state
///
/// Inside a component, [`export_processor!`](crate::export_processor) keeps one
/// instance of the type in a static. It is created with [`Default`] when the first
/// batch arrives and lives as long as the WebAssembly instance, so fields carry state
/// from one batch to the next. That state is memory only: it is lost whenever the host
/// replaces the instance — after any trap (a panic, running out of memory or time),
/// when it recycles an instance whose memory grew too large, on redeploy and on
/// restart. Records are delivered again after such a loss if they were not committed,
/// so state must be rebuildable from the stream (or be a cache).
pub trait Processor: Default + 'static {
    /// Handles one record.
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Outcome;

    /// Handles a batch and returns exactly one outcome per record, in batch order.
    ///
    /// The default calls [`process`](Self::process) for each record. Override it to
    /// work on the whole batch at once; returning a different number of outcomes is a
    /// bug that the host reports as a guest error.
    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        batch.iter().map(|record| self.process(&record, ctx)).collect()
    }

    /// A check the host runs before it switches to a new version of the processor;
    /// an `Err` refuses the deploy. It runs on a fresh instance made with [`Default`],
    /// which is then dropped, so it does not disturb the instance processing batches.
    fn self_test(&mut self) -> Result<(), String> {
        Ok(())
    }
}
