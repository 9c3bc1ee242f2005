//! What a processor can do besides returning outcomes: emit records and log.

use std::fmt;

use crate::Record;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the processor handled.
    Warn,
    /// Something failed.
    Error,
}

/// Why the host refused an emitted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitError {
    /// The pipeline's configuration does not allow producing to this topic.
    TopicNotAllowed(String),
    /// The record exceeds the host's size limit; carries the limit in bytes.
    TooLarge(u64),
    /// The batch already emitted as many records as the host allows.
    TooMany,
    /// The batch's outputs reached the host's byte budget; carries the budget.
    OverBudget(u64),
    /// The output was attributed to an offset that is not in the current batch.
    UnknownSource(i64),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::TopicNotAllowed(topic) => write!(
                f,
                "topic {topic:?} is not allowed for this pipeline (the operator lists the topics it may write \
                 to in the pipeline's `output_topics`)"
            ),
            EmitError::TooLarge(limit) => write!(f, "record exceeds the size limit of {limit} bytes"),
            EmitError::TooMany => f.write_str("batch emitted more records than allowed"),
            EmitError::OverBudget(budget) => write!(f, "batch outputs exceed the budget of {budget} bytes"),
            EmitError::UnknownSource(offset) => write!(f, "offset {offset} is not a record of this batch"),
        }
    }
}

impl std::error::Error for EmitError {}

/// An output record to emit with [`Context::emit`], when
/// [`emit_kv`](Context::emit_kv) and [`emit_value`](Context::emit_value) are not
/// enough: a missing key or value, or headers.
///
/// ```
/// # use ferry_sdk::Output;
/// let trace_id = "abc";
/// let out = Output::to("audit").key("user-1").header("trace-id", trace_id).tombstone();
/// # let _ = out;
/// ```
#[derive(Debug, Clone)]
pub struct Output<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> Output<'a> {
    /// An output to `topic` with no key, no value and no headers yet.
    pub fn to(topic: &'a str) -> Self {
        Output { topic, key: None, value: None, headers: Vec::new() }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.value = Some(value.as_ref());
        self
    }

    /// Sets the key, or leaves it absent for `None` (for example `record.key()`).
    pub fn optional_key(mut self, key: Option<&'a [u8]>) -> Self {
        self.key = key;
        self
    }

    /// Sets the value, or leaves it absent (a tombstone) for `None`.
    pub fn optional_value(mut self, value: Option<&'a [u8]>) -> Self {
        self.value = value;
        self
    }

    /// Leaves the value absent: a tombstone for compacted topics.
    pub fn tombstone(mut self) -> Self {
        self.value = None;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'a str, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.headers.push((name, Some(value.as_ref())));
        self
    }

    /// Adds headers given as `(name, value)` pairs, for example `record.headers()`
    /// to forward an input record's headers.
    pub fn headers(mut self, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Key, value and headers in bytes, as the host counts a record's size.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len)
            + self.value.map_or(0, <[u8]>::len)
            + self.headers.iter().map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len)).sum::<usize>()
    }

    /// What the record costs its batch's output budget, as the host charges it.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn charge(&self) -> usize {
        crate::limits::OUTPUT_RECORD_COST
            + self.topic.len()
            + self.size()
            + crate::limits::OUTPUT_HEADER_COST * self.headers.len()
    }
}

/// The processor's handle on the host for the duration of one batch.
///
/// Every output belongs to an input record: in [`Processor::process`](crate::Processor::process)
/// to the record being processed, in an overridden `process_batch` to the whole batch
/// unless emitted inside [`for_record`](Self::for_record). The host publishes an
/// output only if its record ends processed (for the whole batch: if every record
/// does).
///
/// In a component each call goes straight to the host. A component only imports the
/// capabilities it uses: one that never emits does not import the `output` interface,
/// one that never logs does not import `log`, and the host only grants what the
/// pipeline's configuration allows.
///
/// Natively (in `cargo test` through [`testing`](crate::testing)) the context records
/// emitted records and log lines in memory instead.
pub struct Context {
    /// The offset outputs are attributed to; `None`: the whole batch.
    source: Option<i64>,
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) sink: crate::sink::Sink,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Context {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn new() -> Self {
        Context { source: None }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn with_sink(sink: crate::sink::Sink) -> Self {
        Context { source: None, sink }
    }

    /// Runs `f` with outputs attributed to `record`: they are published only if
    /// `record` ends processed.
    pub fn for_record<R>(&mut self, record: &Record<'_>, f: impl FnOnce(&mut Context) -> R) -> R {
        let outer = self.source.replace(record.offset());
        let result = f(self);
        self.source = outer;
        result
    }

    /// Emits `value` with no key to `topic`.
    pub fn emit_value(&mut self, topic: &str, value: impl AsRef<[u8]>) -> Result<(), EmitError> {
        self.emit(Output::to(topic).value(value.as_ref()))
    }

    /// Emits `key` and `value` to `topic`.
    pub fn emit_kv(&mut self, topic: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), EmitError> {
        self.emit(Output::to(topic).key(key.as_ref()).value(value.as_ref()))
    }

    /// Queues an output record. The host produces it after the batch returns, if
    /// its record ends processed, and commits the record's offset only once the
    /// broker acknowledged it.
    pub fn emit(&mut self, output: Output<'_>) -> Result<(), EmitError> {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::emit(self.source, &output)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.sink.emit(self.source, &output)
        }
    }

    /// The keyed state of the batch's input partition (see [`State`](crate::State)).
    pub fn state(&mut self) -> crate::State<'_> {
        crate::State::of(self)
    }

    /// Writes a line to the host's logs, under the tenant's own target. The host
    /// truncates long messages, strips control characters and rate-limits each
    /// pipeline's logs.
    pub fn log(&mut self, level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::log(level, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            if !self.sink.policy.log_granted {
                crate::testing::refuse_ungranted("log");
            }
            self.sink.logs.push(crate::sink::LogLine { level, message: message.to_owned() });
        }
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&mut self, message: &str) {
        self.log(Level::Trace, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&mut self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&mut self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&mut self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&mut self, message: &str) {
        self.log(Level::Error, message);
    }
}

/// Direct calls to the WIT imports. Each is only linked, and so only imported by the
/// component, when the processor calls the method that uses it.
#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::{EmitError, Level, Output};
    use crate::__bindings::ferry::processor::{log as wit_log, output, types::Header};

    #[inline]
    pub(super) fn emit(source: Option<i64>, out: &Output<'_>) -> Result<(), EmitError> {
        let headers: Vec<Header<'_>> = out.headers.iter().map(|&(name, value)| Header { name, value }).collect();
        let record = output::OutputRecord { topic: out.topic, key: out.key, value: out.value, headers: &headers };
        output::emit(source, record).map_err(|e| match e {
            output::EmitError::TopicNotAllowed(topic) => EmitError::TopicNotAllowed(topic),
            output::EmitError::TooLarge(limit) => EmitError::TooLarge(limit),
            output::EmitError::TooMany => EmitError::TooMany,
            output::EmitError::OverBudget(budget) => EmitError::OverBudget(budget),
            output::EmitError::UnknownSource(offset) => EmitError::UnknownSource(offset),
        })
    }

    #[inline]
    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit_log::Level::Trace,
            Level::Debug => wit_log::Level::Debug,
            Level::Info => wit_log::Level::Info,
            Level::Warn => wit_log::Level::Warn,
            Level::Error => wit_log::Level::Error,
        };
        wit_log::log(level, message);
    }
}
