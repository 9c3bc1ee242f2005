//! Unit-test a processor natively with `cargo test`, no host and no WebAssembly.
//!
//! Build a batch with [`TestBatch`], run it with a [`Harness`] (which enforces the
//! host's default limits, the topics you grant and the settings you give) and look at
//! the outcomes, the outputs the host would publish and the log lines.
//!
//! ```
//! use ferry_sdk::testing::{Harness, TestBatch};
//! use ferry_sdk::{Context, Error, Processor, Record};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Processor for Echo {
//!     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         ctx.emit_value("echo", record.value().unwrap_or_default())?;
//!         Ok(())
//!     }
//! }
//!
//! let batch = TestBatch::new("in", 0).record("k", "v").value_only("w");
//! let run = Harness::new().allow_topic("echo").run(&mut Echo, &batch);
//! assert!(run.all_processed());
//! assert_eq!(run.emitted[1].value_str(), Some("w"));
//!
//! // The real host refuses topics the pipeline was not granted, with this message.
//! let run = Harness::new().allow_topic("other").run(&mut Echo, &batch);
//! assert!(run.outcomes[0].to_string().contains("\"echo\" is not allowed"));
//! ```
//!
//! In a project with a `ferry.toml`, take the grants, settings and output limits of
//! its pipeline from there with [`Harness::from_config`], so the unit tests fail
//! exactly where the host would refuse something, and
//! [`Run::assert_all_processed`] to fail a test with every reason a record was not
//! processed:
//!
//! ```no_run
//! # use ferry_sdk::testing::{Harness, TestBatch};
//! # #[derive(Default)] struct Echo;
//! # impl ferry_sdk::Processor for Echo {
//! #     fn process(&mut self, _: &ferry_sdk::Record<'_>, _: &mut ferry_sdk::Context) -> Result<(), ferry_sdk::Error> { Ok(()) }
//! # }
//! let harness = Harness::from_config("ferry.toml", "echo").unwrap();
//! let mut echo = harness.processor::<Echo>().unwrap();
//! harness.run(&mut echo, &TestBatch::new("in", 0).record("k", "v")).assert_all_processed();
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::http::{HttpError, Request, Response};
use crate::http_stand_in::{Rule, StandIn};
pub use crate::sink::{Emitted, LogLine};
use crate::sink::{Policy, Sink};
use crate::wire::BatchEncoder;
use crate::{Batch, Context, Outcome, Processor, Settings, TopicPartition, limits};

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

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// One outcome per record, in batch order.
    pub outcomes: Vec<Outcome>,
    /// Outputs the host would publish, in emit order: those of processed records
    /// (and the batch's own, if every record was processed). Refused emits are in
    /// neither list.
    pub emitted: Vec<Emitted>,
    /// Outputs the host would drop, because their record was not processed.
    pub dropped: Vec<Emitted>,
    /// Log lines, in order.
    pub logs: Vec<LogLine>,
}

impl Run {
    /// True when every record was [`Outcome::Processed`].
    pub fn all_processed(&self) -> bool {
        self.outcomes.iter().all(Outcome::is_processed)
    }

    /// Panics unless every record was [`Outcome::Processed`], listing each record
    /// that was not (by its index in the batch) with its outcome and reason: the
    /// reason the host would log, and put in a dead letter's headers.
    #[track_caller]
    pub fn assert_all_processed(&self) {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .enumerate()
            .filter(|(_, outcome)| !outcome.is_processed())
            .map(|(index, outcome)| format!("  record #{index}: {outcome}"))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} records were not processed:\n{}",
            failed.len(),
            self.outcomes.len(),
            failed.join("\n")
        );
    }

    /// Splits what was emitted into published and dropped, as the host does.
    fn new(batch: &Batch<'_>, outcomes: Vec<Outcome>, sink: Sink) -> Self {
        let processed: BTreeSet<i64> =
            batch.iter().zip(&outcomes).filter(|(_, o)| o.is_processed()).map(|(r, _)| r.offset()).collect();
        let all = processed.len() == batch.len();
        let (emitted, dropped) = sink.emitted.into_iter().partition(|e| match e.source {
            Some(offset) => processed.contains(&offset),
            None => all,
        });
        Run { outcomes, emitted, dropped, logs: sink.logs }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Processed => f.write_str("processed"),
            Outcome::Retry(reason) => write!(f, "retry: {reason}"),
            Outcome::Reject(reason) => write!(f, "reject: {reason}"),
        }
    }
}

/// The host's words when it refuses to load a component that imports `capability`
/// (`output` or `log`) its pipeline does not grant. Not part of the API: the host's
/// tests check that these are its words.
#[doc(hidden)]
pub fn host_refusal(capability: &str) -> String {
    let hint = match capability {
        "output" => " (list the topics it may write to in the pipeline's `output_topics`)",
        "log" => " (set `allow_log = true`)",
        "state" => " (give the pipeline a `[pipeline.state]` section: its changelog topic and limits)",
        _ => "",
    };
    format!(
        "the component imports capability `ferry:processor/{capability}@0.2.0`, which this pipeline does not grant{hint}"
    )
}

/// Fails the test: the processor used a capability the pipeline does not grant.
#[track_caller]
pub(crate) fn refuse_ungranted(capability: &str) -> ! {
    panic!(
        "the processor uses `{capability}`, and the host would refuse to load it for this pipeline: {}",
        host_refusal(capability)
    )
}

/// Runs one batch under the host's default limits, with every topic allowed.
///
/// # Panics
///
/// If the processor returns a different number of outcomes than the batch has
/// records, which the real host refuses as a guest error.
pub fn run<P: Processor>(processor: &mut P, batch: &TestBatch) -> Run {
    Harness::new().run(processor, batch)
}

/// A stand-in host: the limits the real one enforces per batch (its defaults unless
/// changed), the topics the pipeline grants, its settings, and the partition
/// lifecycle calls.
#[derive(Debug, Clone)]
pub struct Harness {
    policy: Policy,
    settings: Settings,
    /// Partitions the processor was told about, as the host tracks them per instance.
    told: RefCell<BTreeSet<TopicPartition>>,
    /// Each partition's keyed state, as the host keeps it (across instances).
    state: RefCell<BTreeMap<(String, i32), PartitionState>>,
    /// The pipeline's HTTP grant and the test's stand-in services.
    http: StandIn,
}

/// One partition's keyed state: keys to values.
pub type PartitionState = BTreeMap<Vec<u8>, Vec<u8>>;

impl Default for Harness {
    fn default() -> Self {
        Harness {
            policy: Policy {
                allowed_topics: None,
                max_emits: limits::MAX_OUTPUTS_PER_BATCH,
                max_record_bytes: limits::MAX_OUTPUT_BYTES,
                batch_bytes: limits::OUTPUT_BYTES_PER_BATCH,
                output_granted: true,
                log_granted: true,
                state_granted: true,
            },
            settings: Settings::default(),
            told: RefCell::default(),
            state: RefCell::default(),
            http: StandIn::default(),
        }
    }
}

impl Harness {
    /// A harness with the host's default limits and every topic allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// A harness for the pipeline named `pipeline` in the ferry config file at
    /// `path` (a relative path is relative to the crate's directory, where `cargo
    /// test` runs tests): the host's default limits with the pipeline's
    /// `[pipeline.limits]` for outputs, its settings, and its grants.
    ///
    /// The grants are enforced as the host enforces them:
    ///
    /// - an emit to a topic not in `output_topics` fails with
    ///   [`EmitError::TopicNotAllowed`](crate::EmitError::TopicNotAllowed), the
    ///   error the host returns;
    /// - with no `output_topics` at all, an emit panics, and with `allow_log =
    ///   false` so does a log call: the host would refuse to load the component (it
    ///   imports a capability the pipeline does not grant), and the panic says so in
    ///   the host's words.
    ///
    /// ```
    /// # use ferry_sdk::testing::Harness;
    /// let missing = Harness::from_config("no-such-ferry.toml", "p").unwrap_err();
    /// assert!(missing.starts_with("failed to read no-such-ferry.toml"));
    /// ```
    pub fn from_config(path: impl AsRef<Path>, pipeline: &str) -> Result<Self, String> {
        crate::pipeline::read(path.as_ref(), pipeline).and_then(Self::for_pipeline)
    }

    fn for_pipeline(config: crate::pipeline::PipelineConfig) -> Result<Self, String> {
        let mut harness = Harness::new();
        harness.http.granted = config.http_allow.is_some();
        harness.http.allow =
            Some(config.http_allow.iter().flatten().map(|r| Rule::parse(r)).collect::<Result<_, _>>()?);
        harness.policy.output_granted = !config.output_topics.is_empty();
        harness.policy.allowed_topics = Some(config.output_topics.into_iter().collect());
        harness.policy.log_granted = config.allow_log;
        harness.policy.state_granted = config.state;
        harness.policy.max_emits = config.max_outputs_per_batch.unwrap_or(harness.policy.max_emits);
        harness.policy.max_record_bytes = config.max_output_bytes.unwrap_or(harness.policy.max_record_bytes);
        harness.policy.batch_bytes = config.output_bytes_per_batch.unwrap_or(harness.policy.batch_bytes);
        harness.settings = Settings::from_pairs(config.settings);
        Ok(harness)
    }

    /// Allows emitting to `topic`. Once any topic is allowed, emits to other topics
    /// fail with [`EmitError::TopicNotAllowed`](crate::EmitError::TopicNotAllowed),
    /// as on a host whose pipeline lists only these `output_topics`.
    pub fn allow_topic(mut self, topic: impl Into<String>) -> Self {
        self.policy.allowed_topics.get_or_insert_with(BTreeSet::new).insert(topic.into());
        self
    }

    /// Refuses every emit: as if the pipeline had no output topic.
    pub fn deny_all_topics(mut self) -> Self {
        self.policy.allowed_topics = Some(BTreeSet::new());
        self
    }

    /// Allows at most `max` emitted records per batch; later emits fail with
    /// [`EmitError::TooMany`](crate::EmitError::TooMany).
    pub fn max_emits(mut self, max: usize) -> Self {
        self.policy.max_emits = max;
        self
    }

    /// Refuses records whose key, value, header names and header values add up to
    /// more than `bytes`, with [`EmitError::TooLarge`](crate::EmitError::TooLarge).
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.policy.max_record_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// Refuses emits once a batch's outputs add up to more than `bytes`, with
    /// [`EmitError::OverBudget`](crate::EmitError::OverBudget). Each record counts as
    /// the host counts it: its topic and bytes, plus
    /// [`OUTPUT_RECORD_COST`](crate::limits::OUTPUT_RECORD_COST), plus
    /// [`OUTPUT_HEADER_COST`](crate::limits::OUTPUT_HEADER_COST) per header.
    pub fn batch_output_bytes(mut self, bytes: u64) -> Self {
        self.policy.batch_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// Allows HTTP requests to `rule` (`scheme://host[:port]`, as in `[pipeline.http]
    /// allow`). Once any rule is given, requests to other URLs fail with
    /// [`HttpErrorKind::Refused`](crate::http::HttpErrorKind::Refused), as on the host.
    ///
    /// # Panics
    ///
    /// If `rule` is not `scheme://host[:port]`.
    pub fn allow_http(mut self, rule: &str) -> Self {
        let rule = Rule::parse(rule).unwrap_or_else(|e| panic!("{e}"));
        self.http.granted = true;
        self.http.allow.get_or_insert_with(Vec::new).push(rule);
        self
    }

    /// Answers the processor's HTTP requests ([`crate::http`]) with `service`, once
    /// they pass the grants: a stand-in for the services the pipeline calls. It
    /// plays failures too, by returning an [`HttpError`] (a timeout, say).
    ///
    /// ```
    /// use ferry_sdk::http::{self, HttpError, HttpErrorKind, Response};
    /// use ferry_sdk::testing::{Harness, TestBatch};
    /// use ferry_sdk::{Context, Error, Processor, Record, ResultExt};
    ///
    /// #[derive(Default)]
    /// struct Lookup;
    ///
    /// impl Processor for Lookup {
    ///     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
    ///         let key = String::from_utf8_lossy(record.key().unwrap_or_default());
    ///         let answer = http::get(&format!("http://127.0.0.1:8089/names/{key}")).transient()?;
    ///         ctx.emit_value("named", answer.body())?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let harness = Harness::new().allow_http("http://127.0.0.1:8089").http_service(|request| {
    ///     match request.path() {
    ///         Some("/names/1") => Ok(Response::new(200, "one")),
    ///         _ => Err(HttpError::new(HttpErrorKind::Timeout, "no answer")),
    ///     }
    /// });
    /// let run = harness.run(&mut Lookup, &TestBatch::new("in", 0).record("1", "").record("2", ""));
    /// assert_eq!(run.emitted[0].value_str(), Some("one"));
    /// assert!(matches!(run.outcomes[1], ferry_sdk::Outcome::Retry(_)));
    /// ```
    pub fn http_service(mut self, service: impl Fn(&Request) -> Result<Response, HttpError> + 'static) -> Self {
        self.http.service = Some(std::rc::Rc::new(service));
        self
    }

    /// Sets one of the pipeline's settings.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut pairs: Vec<(String, String)> =
            self.settings.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        pairs.push((key.into(), value.into()));
        self.settings = Settings::from_pairs(pairs);
        self
    }

    /// The settings processors get from this harness.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A fresh processor, [`configure`](Processor::configure)d with this harness's
    /// settings, as the host makes one for a new instance.
    pub fn processor<P: Processor>(&self) -> Result<P, String> {
        let mut processor = P::default();
        processor.configure(&self.settings)?;
        Ok(processor)
    }

    /// Runs [`Processor::self_test`] on a fresh, configured processor, as the host
    /// does before a deploy.
    pub fn self_test<P: Processor>(&self) -> Result<(), String> {
        let _http = crate::http_stand_in::install(&self.http);
        self.processor::<P>()?.self_test()
    }

    /// Tells `processor` that `topic`/`partition` was revoked (if it was told about
    /// it), as the host does when the partition moves to another member.
    pub fn revoke<P: Processor>(&self, processor: &mut P, topic: &str, partition: i32) {
        let partition = TopicPartition { topic: topic.to_owned(), partition };
        if self.told.borrow_mut().remove(&partition) {
            processor.revoked(&partition);
        }
    }

    /// Runs one batch through `processor`, which keeps its state for the next run.
    /// The first batch of a partition is preceded by [`Processor::assigned`].
    ///
    /// # Panics
    ///
    /// If the processor returns a different number of outcomes than the batch has
    /// records.
    pub fn run<P: Processor>(&self, processor: &mut P, batch: &TestBatch) -> Run {
        let _http = crate::http_stand_in::install(&self.http);
        let view = batch.batch();
        self.tell_assigned(processor, &view);
        let mut ctx = self.context_for(&view);
        let outcomes = processor.process_batch(&view, &mut ctx);
        assert_eq!(
            outcomes.len(),
            view.len(),
            "process_batch returned {} outcomes for a batch of {} records; the host \
             refuses such an answer",
            outcomes.len(),
            view.len()
        );
        self.keep_state(&view, &outcomes, &mut ctx);
        Run::new(&view, outcomes, ctx.sink)
    }

    /// Runs each record through [`Processor::process`] directly, bypassing an
    /// overridden [`Processor::process_batch`]; useful to check that the two agree.
    pub fn run_each<P: Processor>(&self, processor: &mut P, batch: &TestBatch) -> Run {
        let _http = crate::http_stand_in::install(&self.http);
        let view = batch.batch();
        self.tell_assigned(processor, &view);
        let mut ctx = self.context_for(&view);
        let outcomes: Vec<Outcome> =
            view.iter().map(|record| ctx.for_record(&record, |ctx| processor.process(&record, ctx)).into()).collect();
        self.keep_state(&view, &outcomes, &mut ctx);
        Run::new(&view, outcomes, ctx.sink)
    }

    /// The keyed state of `topic`/`partition`, as the batches run so far left it.
    pub fn state(&self, topic: &str, partition: i32) -> PartitionState {
        self.state.borrow().get(&(topic.to_owned(), partition)).cloned().unwrap_or_default()
    }

    /// Starts `topic`/`partition` with this state (as a restore from its changelog would).
    pub fn with_state(self, topic: &str, partition: i32, state: PartitionState) -> Self {
        self.state.borrow_mut().insert((topic.to_owned(), partition), state);
        self
    }

    /// As the host does: a batch's state writes take effect only if every record of
    /// it finished (processed or rejected); otherwise the host delivers the whole
    /// batch again.
    fn keep_state(&self, batch: &Batch<'_>, outcomes: &[Outcome], ctx: &mut Context) {
        let finished = outcomes.iter().all(|o| !matches!(o, Outcome::Retry(_)));
        let written = std::mem::take(&mut ctx.sink.state);
        if finished && written.touched {
            self.state.borrow_mut().insert((batch.topic().to_owned(), batch.partition()), written.map);
        }
    }

    fn tell_assigned<P: Processor>(&self, processor: &mut P, batch: &Batch<'_>) {
        let partition = TopicPartition { topic: batch.topic().to_owned(), partition: batch.partition() };
        if self.told.borrow_mut().insert(partition.clone()) {
            processor.assigned(&partition);
        }
    }

    /// A context for one batch, with this harness's limits.
    pub(crate) fn context_for(&self, batch: &Batch<'_>) -> Context {
        Context::with_sink(Sink {
            policy: self.policy.clone(),
            offsets: batch.iter().map(|r| r.offset()).collect(),
            emitted: Vec::new(),
            emitted_bytes: 0,
            logs: Vec::new(),
            state: crate::state::NativeState::lent(
                self.state.borrow().get(&(batch.topic().to_owned(), batch.partition())).cloned().unwrap_or_default(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmitError, Error, Level, Output, Record};

    #[derive(Default)]
    struct Forward {
        seen: usize,
    }

    impl Processor for Forward {
        fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            self.seen += 1;
            ctx.debug(&format!("offset {}", record.offset()));
            let topic = record.header("to").map(|t| String::from_utf8_lossy(t).into_owned());
            let out = Output::to(topic.as_deref().unwrap_or("out"))
                .optional_key(record.key())
                .optional_value(record.value())
                .headers(record.headers());
            ctx.emit(out).map_err(|e| Error::retry(e.to_string()))?;
            if record.value() == Some(b"fail") { Err(Error::reject("asked to fail")) } else { Ok(()) }
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
        assert_eq!(run.emitted[0].source, Some(100));
        assert_eq!(run.emitted[0].key_str(), Some("k"));
        assert_eq!(run.emitted[1].topic, "elsewhere");
        assert_eq!(run.emitted[1].headers, [("to".to_owned(), Some(b"elsewhere".to_vec()))]);
        assert_eq!(run.emitted[2].value, None);
        assert_eq!(run.emitted[3].headers, [("n".to_owned(), None)]);
        assert_eq!(run.logs.len(), 4);
        assert_eq!(run.logs[0], LogLine { level: Level::Debug, message: "offset 100".into() });
    }

    #[test]
    fn outputs_of_unprocessed_records_are_dropped() {
        let batch = TestBatch::new("in", 0).value_only("a").value_only("fail").value_only("b");
        let run = run(&mut Forward::default(), &batch);
        assert_eq!(run.outcomes[1], Outcome::reject("asked to fail"));
        let published: Vec<_> = run.emitted.iter().map(|e| e.source).collect();
        assert_eq!(published, [Some(0), Some(2)]);
        assert_eq!(run.dropped.len(), 1);
        assert_eq!(run.dropped[0].source, Some(1));
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

        // Each record costs its bytes, its topic and a fixed cost, as on the host.
        let first = crate::limits::OUTPUT_RECORD_COST + "out".len() + "kv".len();
        let budget = (first + 4) as u64;
        let run = Harness::new().batch_output_bytes(budget).run(&mut p, &batch);
        assert_eq!(run.outcomes[0], Outcome::Processed);
        assert_eq!(run.outcomes[1], Outcome::Retry(EmitError::OverBudget(budget).to_string()));

        let run = Harness::new().deny_all_topics().run(&mut p, &batch);
        assert!(run.emitted.is_empty());
        assert_eq!(run.outcomes[0], Outcome::Retry(EmitError::TopicNotAllowed("out".into()).to_string()));
    }

    #[derive(Default)]
    struct Short;

    impl Processor for Short {
        fn process(&mut self, _: &Record<'_>, _: &mut Context) -> Result<(), Error> {
            Ok(())
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

    #[derive(Debug, Default)]
    struct Configured {
        topic: String,
        told: Vec<String>,
    }

    impl Processor for Configured {
        fn process(&mut self, _: &Record<'_>, _: &mut Context) -> Result<(), Error> {
            Ok(())
        }

        fn configure(&mut self, settings: &Settings) -> Result<(), String> {
            self.topic = settings.require("topic")?.to_owned();
            Ok(())
        }

        fn assigned(&mut self, partition: &TopicPartition) {
            self.told.push(format!("+{partition}"));
        }

        fn revoked(&mut self, partition: &TopicPartition) {
            self.told.push(format!("-{partition}"));
        }

        fn self_test(&mut self) -> Result<(), String> {
            if self.topic.is_empty() { Err("not configured".into()) } else { Ok(()) }
        }
    }

    #[test]
    fn settings_and_lifecycle() {
        let missing = Harness::new().processor::<Configured>().unwrap_err();
        assert_eq!(missing, "setting `topic` is required but the pipeline does not set it");
        let harness = Harness::new().setting("topic", "out");
        assert_eq!(harness.self_test::<Configured>(), Ok(()));
        let mut p = harness.processor::<Configured>().unwrap();
        assert_eq!(p.topic, "out");
        harness.run(&mut p, &TestBatch::new("t", 0).value_only("a"));
        harness.run(&mut p, &TestBatch::new("t", 0).value_only("b"));
        harness.run(&mut p, &TestBatch::new("t", 1).value_only("c"));
        harness.revoke(&mut p, "t", 0);
        harness.revoke(&mut p, "t", 7);
        assert_eq!(p.told, ["+t/0", "+t/1", "-t/0"]);
    }

    const CONFIG: &str = r#"
        brokers = "127.0.0.1:9092"
        [[pipeline]]
        name = "p"
        inputs = ["in"]
        group = "g"
        component = "p.wasm"
        output_topics = ["out"]
        allow_log = false
        settings = { topic = "out" }
        limits = { max_outputs_per_batch = 2 }
    "#;

    fn from_config(text: &str) -> Harness {
        Harness::for_pipeline(crate::pipeline::parse(text, "p").unwrap()).unwrap()
    }

    /// Emits each value to the topic in its `to` header, or `out`; never logs.
    #[derive(Default)]
    struct Quiet;

    impl Processor for Quiet {
        fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let topic = record.header("to").map(std::str::from_utf8).transpose()?.unwrap_or("out");
            ctx.emit(Output::to(topic).optional_value(record.value()))?;
            Ok(())
        }
    }

    #[test]
    fn a_config_grants_its_topics_settings_and_limits() {
        let harness = from_config(CONFIG);
        assert_eq!(harness.settings().get("topic"), Some("out"));
        let batch = TestBatch::new("in", 0)
            .value_only("a")
            .record_with_headers("k", "b", [("to", "elsewhere")])
            .value_only("c")
            .value_only("d");
        let run = harness.run(&mut Quiet, &batch);
        assert_eq!(run.outcomes[0], Outcome::Processed);
        assert_eq!(run.outcomes[1], Outcome::reject(EmitError::TopicNotAllowed("elsewhere".into()).to_string()));
        assert_eq!(run.outcomes[2], Outcome::Processed);
        assert_eq!(run.outcomes[3], Outcome::reject(EmitError::TooMany.to_string()), "max_outputs_per_batch = 2");
        let failed = std::panic::catch_unwind(|| run.assert_all_processed()).unwrap_err();
        let message = failed.downcast_ref::<String>().unwrap();
        assert!(message.starts_with("2 of 4 records were not processed:"), "{message}");
        assert!(
            message.contains("record #1: reject: topic \"elsewhere\" is not allowed for this pipeline"),
            "{message}"
        );
    }

    #[test]
    #[should_panic(expected = "the processor uses `log`, and the host would refuse to load it for this pipeline: \
                               the component imports capability `ferry:processor/log@0.2.0`, which this pipeline \
                               does not grant (set `allow_log = true`)")]
    fn logging_without_allow_log_fails_like_the_host() {
        from_config(CONFIG).run(&mut Forward::default(), &TestBatch::new("in", 0).value_only("a"));
    }

    #[test]
    #[should_panic(expected = "the component imports capability `ferry:processor/output@0.2.0`, which this pipeline \
                               does not grant (list the topics it may write to in the pipeline's `output_topics`)")]
    fn emitting_without_output_topics_fails_like_the_host() {
        let config = CONFIG.replace("output_topics = [\"out\"]", "");
        from_config(&config).run(&mut Quiet, &TestBatch::new("in", 0).value_only("a"));
    }

    /// GETs the URL in each value and emits the answer's body (or the error's kind).
    #[derive(Default)]
    struct Fetch;

    impl Processor for Fetch {
        fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let url = std::str::from_utf8(record.value().unwrap_or_default())?;
            let answer = match crate::http::get(url) {
                Ok(response) => format!("{} {}", response.status(), response.text().unwrap_or_default()),
                Err(e) => format!("{:?}", e.kind()),
            };
            ctx.emit_value("out", answer)?;
            Ok(())
        }
    }

    #[test]
    fn http_requests_pass_the_configs_rules_before_the_tests_service() {
        let config = CONFIG.replace("max_outputs_per_batch = 2", "max_outputs_per_batch = 10");
        let config =
            format!("{config}\n        http = {{ allow = [\"http://127.0.0.1:8089\", \"https://*.example.com\"] }}");
        let harness = from_config(&config).http_service(|request| {
            Ok(Response::new(200, format!("{} {}", request.method(), request.path().unwrap())))
        });
        let batch = TestBatch::new("in", 0)
            .value_only("http://127.0.0.1:8089/a?b")
            .value_only("http://127.0.0.1:8090/")
            .value_only("https://api.example.com/x")
            .value_only("https://example.com/x")
            .value_only("not a url");
        let run = harness.run(&mut Fetch, &batch);
        let answers: Vec<_> = run.emitted.iter().map(|e| e.value_str().unwrap()).collect();
        assert_eq!(answers, ["200 GET /a?b", "Refused", "200 GET /x", "Refused", "Invalid"]);
        // Without a service, granted requests fail; outside a harness, every one does.
        let run = from_config(&config).run(&mut Fetch, &TestBatch::new("in", 0).value_only("http://127.0.0.1:8089/"));
        assert_eq!(run.emitted[0].value_str(), Some("Failed"));
        assert_eq!(crate::http::get("http://127.0.0.1:8089/").unwrap_err().kind(), crate::http::HttpErrorKind::Failed);
    }

    #[test]
    #[should_panic(expected = "imports `wasi:http/outgoing-handler`, which this pipeline does not grant")]
    fn a_request_without_an_http_section_fails_like_the_host() {
        from_config(CONFIG).run(&mut Fetch, &TestBatch::new("in", 0).value_only("http://127.0.0.1:8089/"));
    }
}
