//! The trait a tenant implements, and what a record's handling can end in.

use std::fmt;

use crate::{Batch, Context, Record, Settings};

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done: the host may commit past this record and publishes its outputs.
    Processed,
    /// Not done, try again later (a downstream was unavailable, ...). The reason is
    /// kept in the host's logs; outputs emitted for the record are dropped.
    Retry(String),
    /// Never going to work (malformed input, ...): the host dead-letters the record or
    /// halts, by policy. The reason is kept in logs and dead-letter headers; outputs
    /// emitted for the record are dropped.
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

impl From<Result<(), Error>> for Outcome {
    fn from(result: Result<(), Error>) -> Self {
        match result {
            Ok(()) => Outcome::Processed,
            Err(Error { transient: true, reason }) => Outcome::Retry(reason),
            Err(Error { transient: false, reason }) => Outcome::Reject(reason),
        }
    }
}

/// Why a record was not processed: [`Processor::process`]'s error.
///
/// Any [`std::error::Error`] converts into it with `?` and rejects the record (it
/// will not work next time either); mark errors that may pass with
/// [`transient`](ResultExt::transient) (or build one with [`Error::retry`]) and the
/// host tries the record again later.
///
/// ```
/// use ferry_sdk::{Error, ResultExt};
///
/// fn parse(text: &str) -> Result<u32, Error> {
///     Ok(text.parse::<u32>()?) // a malformed number: reject
/// }
/// fn call_downstream() -> Result<(), std::io::Error> {
///     Err(std::io::Error::other("connection refused"))
/// }
/// fn handle() -> Result<(), Error> {
///     call_downstream().transient()?; // may work later: retry
///     Ok(())
/// }
/// assert!(!parse("x").unwrap_err().is_transient());
/// assert!(handle().unwrap_err().is_transient());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    transient: bool,
    reason: String,
}

impl Error {
    /// Try the record again later.
    pub fn retry(reason: impl Into<String>) -> Self {
        Error { transient: true, reason: reason.into() }
    }

    /// Give up on the record: dead-letter it or halt, by the pipeline's policy.
    pub fn reject(reason: impl Into<String>) -> Self {
        Error { transient: false, reason: reason.into() }
    }

    /// Whether the record will be tried again.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The reason, as logged (and kept in dead-letter headers).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::reject(error.to_string())
    }
}

/// `?` helpers that say how an error should end a record.
pub trait ResultExt<T> {
    /// On error, try the record again later.
    fn transient(self) -> Result<T, Error>;
    /// On error, reject the record with `context: error` as the reason.
    fn reject_with(self, context: &str) -> Result<T, Error>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, Error> {
        self.map_err(|e| Error::retry(e.to_string()))
    }

    fn reject_with(self, context: &str) -> Result<T, Error> {
        self.map_err(|e| Error::reject(format!("{context}: {e}")))
    }
}

impl<T> ResultExt<T> for Option<T> {
    fn transient(self) -> Result<T, Error> {
        self.ok_or_else(|| Error::retry("a value was missing"))
    }

    fn reject_with(self, context: &str) -> Result<T, Error> {
        self.ok_or_else(|| Error::reject(context.to_owned()))
    }
}

/// One partition of an input topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `record` comes from.
    pub fn of(record: &Record<'_>) -> Self {
        TopicPartition { topic: record.topic().to_owned(), partition: record.partition() }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
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
/// instance of the type. It is created with [`Default`] and then
/// [`configure`](Self::configure)d with the pipeline's settings when the instance
/// first needs it, and lives as long as the WebAssembly instance, so fields carry state
/// from one batch to the next. That state is memory only: it is lost whenever the host
/// replaces the instance — after any trap (a panic, running out of memory or time),
/// when it recycles an instance whose memory grew too large, on redeploy and on
/// restart. Records are delivered again after such a loss if they were not committed,
/// so state must be rebuildable from the stream (or be a cache).
///
/// One instance serves every partition the pipeline owns. The host calls
/// [`assigned`](Self::assigned) before an instance's first batch of a partition and
/// [`revoked`](Self::revoked) when the partition moves to another member or starts
/// again from its committed offset (after an aborted transaction, say): keep
/// per-partition state in a [`PerPartition`](crate::PerPartition) (or key it by
/// partition and drop it in `revoked`), so a partition's state never outlives its
/// ownership, and never holds records that will be delivered again.
pub trait Processor: Default + 'static {
    /// Handles one record: `Ok` marks it processed. Outputs emitted through `ctx`
    /// belong to this record and are published only if it ends processed.
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error>;

    /// Handles a batch and returns exactly one outcome per record, in batch order.
    ///
    /// The default calls [`process`](Self::process) for each record. Override it to
    /// work on the whole batch at once; returning a different number of outcomes is a
    /// bug that the host reports as a guest error. Here outputs belong to the whole
    /// batch (published only if every record ends processed) unless emitted through
    /// [`Context::for_record`].
    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        batch.iter().map(|record| ctx.for_record(&record, |ctx| self.process(&record, ctx)).into()).collect()
    }

    /// Reads the pipeline's settings, once per instance, before anything else runs.
    /// An `Err` is a configuration problem: the host refuses the deploy (the
    /// self-test configures too) and faults batches until it is fixed.
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        let _ = settings;
        Ok(())
    }

    /// A partition's first batch in this instance is coming.
    fn assigned(&mut self, partition: &TopicPartition) {
        let _ = partition;
    }

    /// A partition moved to another member, or starts again from its committed
    /// offset: forget what was kept for it.
    fn revoked(&mut self, partition: &TopicPartition) {
        let _ = partition;
    }

    /// A check the host runs before it switches to a new version of the processor;
    /// an `Err` refuses the deploy. It runs on a fresh, configured instance, which is
    /// then dropped, so it does not disturb the instance processing batches.
    fn self_test(&mut self) -> Result<(), String> {
        Ok(())
    }
}
