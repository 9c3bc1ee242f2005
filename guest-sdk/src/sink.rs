//! The in-memory stand-in for the host that native builds and [`testing`](crate::testing)
//! run against: it enforces the host's checks and keeps what the processor emitted and logged.

use std::collections::BTreeSet;

use crate::{EmitError, Level, Output};

/// The limits the in-memory host enforces, mirroring the real host's checks
/// (and in the same order).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// `None`: every topic is allowed.
    pub(crate) allowed_topics: Option<BTreeSet<String>>,
    pub(crate) max_emits: usize,
    pub(crate) max_record_bytes: usize,
    pub(crate) batch_bytes: usize,
    /// Whether the pipeline grants the `output` capability at all (lists an
    /// output topic): a component that emits is refused at load time otherwise.
    pub(crate) output_granted: bool,
    /// Whether the pipeline grants the `log` capability (`allow_log`).
    pub(crate) log_granted: bool,
    /// Whether the pipeline keeps state (has a `[pipeline.state]` section).
    pub(crate) state_granted: bool,
}

#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) policy: Policy,
    /// Offsets of the batch being run.
    pub(crate) offsets: BTreeSet<i64>,
    pub(crate) emitted: Vec<Emitted>,
    pub(crate) emitted_bytes: usize,
    pub(crate) logs: Vec<LogLine>,
    /// The batch's partition state, as the batch left it so far.
    pub(crate) state: crate::state::NativeState,
}

impl Sink {
    pub(crate) fn emit(&mut self, source: Option<i64>, out: &Output<'_>) -> Result<(), EmitError> {
        if !self.policy.output_granted {
            crate::testing::refuse_ungranted("output");
        }
        if let Some(allowed) = &self.policy.allowed_topics
            && !allowed.contains(out.topic)
        {
            return Err(EmitError::TopicNotAllowed(out.topic.to_owned()));
        }
        if let Some(offset) = source
            && !self.offsets.contains(&offset)
        {
            return Err(EmitError::UnknownSource(offset));
        }
        if self.emitted.len() >= self.policy.max_emits {
            return Err(EmitError::TooMany);
        }
        if out.size() > self.policy.max_record_bytes {
            return Err(EmitError::TooLarge(self.policy.max_record_bytes as u64));
        }
        let charged = out.charge();
        if self.emitted_bytes + charged > self.policy.batch_bytes {
            return Err(EmitError::OverBudget(self.policy.batch_bytes as u64));
        }
        self.emitted_bytes += charged;
        self.emitted.push(Emitted {
            source,
            topic: out.topic.to_owned(),
            key: out.key.map(<[u8]>::to_vec),
            value: out.value.map(<[u8]>::to_vec),
            headers: out.headers.iter().map(|(n, v)| ((*n).to_owned(), v.map(<[u8]>::to_vec))).collect(),
        });
        Ok(())
    }
}

/// A record the processor emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The offset of the record it belongs to; `None`: the whole batch.
    pub source: Option<i64>,
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
