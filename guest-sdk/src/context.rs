//! What a processor can do besides returning outcomes: emit records and log.

use std::fmt;

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
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::TopicNotAllowed(topic) => {
                write!(f, "topic {topic:?} is not allowed for this pipeline")
            }
            EmitError::TooLarge(limit) => {
                write!(f, "record exceeds the size limit of {limit} bytes")
            }
            EmitError::TooMany => f.write_str("batch emitted more records than allowed"),
        }
    }
}

impl std::error::Error for EmitError {}

/// The processor's handle on the host for the duration of one batch.
///
/// In a component each call goes straight to the host. A component only imports the
/// capabilities it uses: one that never calls an `emit` method does not import the
/// `output` interface, one that never logs does not import `log`, and the host only
/// grants what the pipeline's configuration allows.
///
/// Natively (in `cargo test` through [`testing`](crate::testing)) the context records
/// emitted records and log lines in memory instead.
pub struct Context {
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) sink: native::Sink,
    #[cfg(target_arch = "wasm32")]
    _private: (),
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn new() -> Self {
        Context { _private: () }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn new() -> Self {
        Self::with_policy(native::Policy::default())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn with_policy(policy: native::Policy) -> Self {
        Context { sink: native::Sink { policy, emitted: Vec::new(), logs: Vec::new() } }
    }

    /// Queues a record for `topic`. The host produces it after the batch returns and
    /// commits the batch's input offsets only once the broker acknowledged it.
    pub fn emit(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), EmitError> {
        self.emit_with_headers(topic, key, value, [])
    }

    /// Like [`emit`](Self::emit), with headers given as `(name, value)` pairs, for
    /// example `record.headers()` to forward an input record's headers.
    pub fn emit_with_headers<'h, H>(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) -> Result<(), EmitError>
    where
        H: IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::emit(topic, key, value, headers)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.sink.emit(topic, key, value, headers)
        }
    }

    /// Writes a line to the host's logs, under the tenant's own target. The host
    /// truncates long messages and strips control characters.
    pub fn log(&mut self, level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            wasm::log(level, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.sink.logs.push(crate::testing::LogLine { level, message: message.to_owned() });
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
    use super::{EmitError, Level};
    use crate::__bindings::ferry::processor::{log as wit_log, output, types::Header};

    #[inline]
    pub(super) fn emit<'h, H>(
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) -> Result<(), EmitError>
    where
        H: IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    {
        let headers: Vec<Header<'h>> = headers.into_iter().map(|(name, value)| Header { name, value }).collect();
        output::emit(output::OutputRecord { topic, key, value, headers: &headers }).map_err(|e| match e {
            output::EmitError::TopicNotAllowed(topic) => EmitError::TopicNotAllowed(topic),
            output::EmitError::TooLarge(limit) => EmitError::TooLarge(limit),
            output::EmitError::TooMany => EmitError::TooMany,
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

/// In-memory stand-in for the host, used by native builds and [`testing`](crate::testing).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use super::EmitError;
    use crate::testing::{Emitted, LogLine};

    /// The limits the in-memory host enforces, mirroring the real host's checks.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Policy {
        pub(crate) allowed_topics: Option<Vec<String>>,
        pub(crate) max_emits: Option<usize>,
        pub(crate) max_record_bytes: Option<u64>,
    }

    #[derive(Debug)]
    pub(crate) struct Sink {
        pub(crate) policy: Policy,
        pub(crate) emitted: Vec<Emitted>,
        pub(crate) logs: Vec<LogLine>,
    }

    impl Sink {
        pub(crate) fn emit<'h, H>(
            &mut self,
            topic: &str,
            key: Option<&[u8]>,
            value: Option<&[u8]>,
            headers: H,
        ) -> Result<(), EmitError>
        where
            H: IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        {
            if let Some(allowed) = &self.policy.allowed_topics
                && !allowed.iter().any(|t| t == topic)
            {
                return Err(EmitError::TopicNotAllowed(topic.to_owned()));
            }
            let headers: Vec<(String, Option<Vec<u8>>)> =
                headers.into_iter().map(|(name, value)| (name.to_owned(), value.map(<[u8]>::to_vec))).collect();
            if let Some(limit) = self.policy.max_record_bytes {
                let size = key.map_or(0, <[u8]>::len)
                    + value.map_or(0, <[u8]>::len)
                    + headers.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>();
                if size as u64 > limit {
                    return Err(EmitError::TooLarge(limit));
                }
            }
            if let Some(max) = self.policy.max_emits
                && self.emitted.len() >= max
            {
                return Err(EmitError::TooMany);
            }
            self.emitted.push(Emitted {
                topic: topic.to_owned(),
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                headers,
            });
            Ok(())
        }
    }
}
