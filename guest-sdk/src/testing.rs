//! Unit-test a processor natively with `cargo test`, no host and no WebAssembly.
//!
//! Build a batch with [`TestBatch`], run it with [`run`] (or a [`Harness`] that
//! imitates the host's limits) and look at the outcomes, the emitted records and the
//! log lines.
//!
//! ```
//! use ferry_sdk::testing::{self, TestBatch};
//! use ferry_sdk::{Context, Outcome, Processor, Record};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Processor for Echo {
//!     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Outcome {
//!         match ctx.emit("echo", record.key(), record.value()) {
//!             Ok(()) => Outcome::Processed,
//!             Err(e) => Outcome::Retry(e.to_string()),
//!         }
//!     }
//! }
//!
//! let batch = TestBatch::new("in", 0).record("k", "v").value_only("w");
//! let run = testing::run(&mut Echo, &batch);
//! assert!(run.all_processed());
//! assert_eq!(run.emitted[1].value_str(), Some("w"));
//!
//! // The real host refuses topics the pipeline was not granted.
//! let run = testing::Harness::new().allow_topic("other").run(&mut Echo, &batch);
//! assert!(matches!(run.outcomes[0], Outcome::Retry(_)));
//! ```

use crate::context::native::Policy;
use crate::wire::BatchEncoder;
use crate::{Batch, Context, Level, Outcome, Processor};

/// A batch built in a test. Offsets start at 0 and go up by one per record unless
/// [`at_offset`](Self::at_offset) says otherwise; records have no timestamp unless
/// [`timestamp`](Self::timestamp) sets one.
#[derive(Debug, Clone)]
pub struct TestBatch {
    topic: String,
    partition: i32,
    next_offset: i64,
    timestamp_ms: Option<i64>,
    encoder: BatchEncoder,
}

impl TestBatch {
    /// An empty batch from `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TestBatch { topic: topic.into(), partition, next_offset: 0, timestamp_ms: None, encoder: BatchEncoder::new() }
    }

    /// Gives the next record this offset (later ones follow from it).
    pub fn at_offset(mut self, offset: i64) -> Self {
        self.next_offset = offset;
        self
    }

    /// Gives the following records this timestamp (`None` for none).
    pub fn timestamp(mut self, timestamp_ms: impl Into<Option<i64>>) -> Self {
        self.timestamp_ms = timestamp_ms.into();
        self
    }

    /// Adds a record with a key and a value.
    pub fn record(self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.raw(Some(key.as_ref()), Some(value.as_ref()), [])
    }

    /// Adds a record with a value and no key.
    pub fn value_only(self, value: impl AsRef<[u8]>) -> Self {
        self.raw(None, Some(value.as_ref()), [])
    }

    /// Adds a record with a key and no value (a tombstone).
    pub fn tombstone(self, key: impl AsRef<[u8]>) -> Self {
        self.raw(Some(key.as_ref()), None, [])
    }

    /// Adds a record with a key, a value and headers whose values are all present.
    pub fn record_with_headers<N, V>(
        self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self
    where
        N: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let headers: Vec<(N, V)> = headers.into_iter().collect();
        self.raw(
            Some(key.as_ref()),
            Some(value.as_ref()),
            headers.iter().map(|(name, value)| (name.as_ref(), Some(value.as_ref()))),
        )
    }

    /// Adds a record where anything may be absent.
    pub fn raw<'h>(
        mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Self {
        self.encoder.push(self.next_offset, self.timestamp_ms, key, value, headers);
        self.next_offset += 1;
        self
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.encoder.count() as usize
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.encoder.is_empty()
    }

    /// The batch as the processor sees it.
    pub fn batch(&self) -> Batch<'_> {
        Batch::from_wire(&self.topic, self.partition, self.encoder.count(), self.encoder.bytes())
            .expect("TestBatch always encodes a valid batch")
    }
}

/// A record the processor emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Destination topic.
    pub topic: String,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value, if any.
    pub value: Option<Vec<u8>>,
    /// Headers in the order given.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Emitted {
    /// The key as UTF-8, if present and valid.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8, if present and valid.
    pub fn value_str(&self) -> Option<&str> {
        self.value.as_deref().and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A line the processor logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// The message as logged (the real host truncates and sanitizes it).
    pub message: String,
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// One outcome per record, in batch order.
    pub outcomes: Vec<Outcome>,
    /// Records the host accepted, in emit order. Refused emits are not here.
    pub emitted: Vec<Emitted>,
    /// Log lines, in order.
    pub logs: Vec<LogLine>,
}

impl Run {
    /// True when every record was [`Outcome::Processed`].
    pub fn all_processed(&self) -> bool {
        self.outcomes.iter().all(Outcome::is_processed)
    }
}

/// Runs one batch with no limits: every topic is allowed.
///
/// # Panics
///
/// If the processor returns a different number of outcomes than the batch has
/// records, which the real host refuses as a guest error.
pub fn run<P: Processor>(processor: &mut P, batch: &TestBatch) -> Run {
    Harness::new().run(processor, batch)
}

/// A stand-in host with the limits the real one enforces per batch.
#[derive(Debug, Clone, Default)]
pub struct Harness {
    policy: Policy,
}

impl Harness {
    /// A harness with no limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows emitting to `topic`. Once any topic is allowed, emits to other topics
    /// fail with [`EmitError::TopicNotAllowed`](crate::EmitError::TopicNotAllowed).
    pub fn allow_topic(mut self, topic: impl Into<String>) -> Self {
        self.policy.allowed_topics.get_or_insert_with(Vec::new).push(topic.into());
        self
    }

    /// Refuses every emit: as if the pipeline had no output topic.
    pub fn deny_all_topics(mut self) -> Self {
        self.policy.allowed_topics = Some(Vec::new());
        self
    }

    /// Allows at most `max` emitted records per batch; later emits fail with
    /// [`EmitError::TooMany`](crate::EmitError::TooMany).
    pub fn max_emits(mut self, max: usize) -> Self {
        self.policy.max_emits = Some(max);
        self
    }

    /// Refuses records whose key, value, header names and header values add up to
    /// more than `bytes`, with [`EmitError::TooLarge`](crate::EmitError::TooLarge).
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.policy.max_record_bytes = Some(bytes);
        self
    }

    /// Runs one batch through `processor`, which keeps its state for the next run.
    ///
    /// # Panics
    ///
    /// If the processor returns a different number of outcomes than the batch has
    /// records.
    pub fn run<P: Processor>(&self, processor: &mut P, batch: &TestBatch) -> Run {
        let view = batch.batch();
        let mut ctx = Context::with_policy(self.policy.clone());
        let outcomes = processor.process_batch(&view, &mut ctx);
        assert_eq!(
            outcomes.len(),
            view.len(),
            "process_batch returned {} outcomes for a batch of {} records; the host \
             refuses such an answer",
            outcomes.len(),
            view.len()
        );
        Run { outcomes, emitted: ctx.sink.emitted, logs: ctx.sink.logs }
    }

    /// Runs each record through [`Processor::process`] directly, bypassing an
    /// overridden [`Processor::process_batch`]; useful to check that the two agree.
    pub fn run_each<P: Processor>(&self, processor: &mut P, batch: &TestBatch) -> Run {
        let view = batch.batch();
        let mut ctx = Context::with_policy(self.policy.clone());
        let outcomes = view.iter().map(|record| processor.process(&record, &mut ctx)).collect();
        Run { outcomes, emitted: ctx.sink.emitted, logs: ctx.sink.logs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmitError, Record};

    #[derive(Default)]
    struct Forward {
        seen: usize,
    }

    impl Processor for Forward {
        fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Outcome {
            self.seen += 1;
            ctx.debug(&format!("offset {}", record.offset()));
            let topic = record
                .header("to")
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_else(|| "out".to_owned());
            match ctx.emit_with_headers(&topic, record.key(), record.value(), record.headers()) {
                Ok(()) => Outcome::Processed,
                Err(e) => Outcome::Retry(e.to_string()),
            }
        }
    }

    #[test]
    fn records_emits_and_logs() {
        let batch = TestBatch::new("in", 2)
            .at_offset(100)
            .timestamp(5)
            .record("k", "v")
            .record_with_headers("k2", "v2", [("to", "elsewhere")])
            .tombstone("gone")
            .raw(None, None, [("n", None)]);
        assert_eq!(batch.len(), 4);
        let view = batch.batch();
        let offsets: Vec<_> = view.iter().map(|r| r.offset()).collect();
        assert_eq!(offsets, [100, 101, 102, 103]);
        assert!(view.iter().all(|r| r.timestamp_ms() == Some(5)));

        let mut p = Forward::default();
        let run = run(&mut p, &batch);
        assert!(run.all_processed());
        assert_eq!(p.seen, 4);
        assert_eq!(run.emitted.len(), 4);
        assert_eq!(run.emitted[0].topic, "out");
        assert_eq!(run.emitted[0].key_str(), Some("k"));
        assert_eq!(run.emitted[1].topic, "elsewhere");
        assert_eq!(run.emitted[1].headers, [("to".to_owned(), Some(b"elsewhere".to_vec()))]);
        assert_eq!(run.emitted[2].value, None);
        assert_eq!(run.emitted[3].headers, [("n".to_owned(), None)]);
        assert_eq!(run.logs.len(), 4);
        assert_eq!(run.logs[0], LogLine { level: Level::Debug, message: "offset 100".into() });
    }

    #[test]
    fn harness_limits() {
        let batch = TestBatch::new("in", 0).record("k", "v").record("k", "a much longer value").record("k", "v");
        let mut p = Forward::default();

        let run = Harness::new().allow_topic("out").max_emits(1).run(&mut p, &batch);
        assert_eq!(run.outcomes[0], Outcome::Processed);
        assert_eq!(run.outcomes[2], Outcome::Retry(EmitError::TooMany.to_string()));

        let run = Harness::new().max_record_bytes(4).run(&mut p, &batch);
        assert_eq!(run.outcomes[0], Outcome::Processed);
        assert_eq!(run.outcomes[1], Outcome::Retry(EmitError::TooLarge(4).to_string()));

        let run = Harness::new().deny_all_topics().run(&mut p, &batch);
        assert!(run.emitted.is_empty());
        assert_eq!(run.outcomes[0], Outcome::Retry(EmitError::TopicNotAllowed("out".into()).to_string()));
    }

    #[derive(Default)]
    struct Short;

    impl Processor for Short {
        fn process(&mut self, _: &Record<'_>, _: &mut Context) -> Outcome {
            Outcome::Processed
        }

        fn process_batch(&mut self, _: &Batch<'_>, _: &mut Context) -> Vec<Outcome> {
            Vec::new()
        }
    }

    #[test]
    #[should_panic(expected = "returned 0 outcomes for a batch of 1 records")]
    fn wrong_count_is_caught() {
        run(&mut Short, &TestBatch::new("t", 0).record("k", "v"));
    }
}
