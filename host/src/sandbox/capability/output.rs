//! The `output` capability: a processor emits records to the topics its pipeline
//! grants, each on behalf of one input record (or of the whole batch). The host keeps
//! them until the batch returns; the pipeline publishes only those of records that
//! ended processed.
//!
//! Everything an emit makes the host hold is bounded per batch: a record count, a
//! size per record, and a byte budget for the whole batch.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Grants;
use crate::sandbox::bindings::ferry::processor::output as wit;
use crate::sandbox::bindings::{EmitError, OutputRecord};
use crate::sandbox::text::sanitize;

/// The import name.
pub const IMPORT: &str = "ferry:processor/output@0.2.0";

/// `None` if granted, else how to grant it.
pub(super) fn check_grant(grants: &Grants) -> Option<&'static str> {
    grants.output_topics.is_empty().then_some(" (list the topics it may write to in the pipeline's `output_topics`)")
}

/// Per-batch bounds on what a processor may emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most records per batch.
    pub max_records: usize,
    /// Largest record (key + value + header names and values), in bytes.
    pub max_record_bytes: usize,
    /// Most bytes of records per batch.
    pub batch_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            max_records: ferry_sdk::limits::MAX_OUTPUTS_PER_BATCH,
            max_record_bytes: ferry_sdk::limits::MAX_OUTPUT_BYTES,
            batch_bytes: ferry_sdk::limits::OUTPUT_BYTES_PER_BATCH,
        }
    }
}

/// A record a processor emitted, and the input record it belongs to.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// The offset of the input record; `None`: the whole batch.
    pub source: Option<i64>,
    /// The record.
    pub record: OutputRecord,
}

/// The `output` capability's part of a guest's store.
pub struct OutputState {
    topics: Arc<BTreeSet<String>>,
    limits: OutputLimits,
    /// Offsets of the batch being processed, ascending.
    offsets: Vec<i64>,
    emitted: Vec<Emitted>,
    bytes: usize,
}

impl OutputState {
    pub(crate) fn new(topics: Arc<BTreeSet<String>>, limits: OutputLimits) -> Self {
        OutputState { topics, limits, offsets: Vec::new(), emitted: Vec::new(), bytes: 0 }
    }

    /// Starts a batch whose records have these offsets.
    pub(crate) fn begin(&mut self, offsets: &[i64]) {
        self.offsets.clear();
        self.offsets.extend_from_slice(offsets);
        self.emitted.clear();
        self.bytes = 0;
    }

    /// Takes what the batch emitted.
    pub(crate) fn take(&mut self) -> Vec<Emitted> {
        self.bytes = 0;
        std::mem::take(&mut self.emitted)
    }
}

impl wit::Host for OutputState {
    fn emit(&mut self, source: Option<i64>, record: OutputRecord) -> Result<(), EmitError> {
        if !self.topics.contains(&record.topic) {
            return Err(EmitError::TopicNotAllowed(sanitize(&record.topic, 200)));
        }
        if let Some(offset) = source
            && self.offsets.binary_search(&offset).is_err()
        {
            return Err(EmitError::UnknownSource(offset));
        }
        if self.emitted.len() >= self.limits.max_records {
            return Err(EmitError::TooMany);
        }
        let size = size_of(&record);
        if size > self.limits.max_record_bytes {
            return Err(EmitError::TooLarge(self.limits.max_record_bytes as u64));
        }
        if self.bytes + size > self.limits.batch_bytes {
            return Err(EmitError::OverBudget(self.limits.batch_bytes as u64));
        }
        self.bytes += size;
        self.emitted.push(Emitted { source, record });
        Ok(())
    }
}

/// Key, value, header names and values, in bytes: what the limits count.
pub fn size_of(record: &OutputRecord) -> usize {
    let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
    opt(&record.key) + opt(&record.value) + record.headers.iter().map(|h| h.name.len() + opt(&h.value)).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::bindings::ferry::processor::output::Host as _;

    fn record(topic: &str, value: usize) -> OutputRecord {
        OutputRecord { topic: topic.into(), key: None, value: Some(vec![0; value]), headers: vec![] }
    }

    #[test]
    fn every_bound_is_checked_in_order() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned()]));
        let limits = OutputLimits { max_records: 3, max_record_bytes: 10, batch_bytes: 15 };
        let mut state = OutputState::new(topics, limits);
        state.begin(&[4, 5, 9]);
        assert_eq!(state.emit(Some(5), record("nope", 1)), Err(EmitError::TopicNotAllowed("nope".into())));
        assert_eq!(state.emit(Some(6), record("out", 1)), Err(EmitError::UnknownSource(6)));
        assert_eq!(state.emit(Some(4), record("out", 11)), Err(EmitError::TooLarge(10)));
        assert_eq!(state.emit(Some(4), record("out", 10)), Ok(()));
        assert_eq!(state.emit(None, record("out", 6)), Err(EmitError::OverBudget(15)));
        assert_eq!(state.emit(None, record("out", 5)), Ok(()));
        assert_eq!(state.emit(Some(9), record("out", 0)), Ok(()));
        assert_eq!(state.emit(Some(9), record("out", 0)), Err(EmitError::TooMany));
        let sources: Vec<_> = state.take().iter().map(|e| e.source).collect();
        assert_eq!(sources, [Some(4), None, Some(9)]);
        state.begin(&[10]);
        assert_eq!(state.emit(Some(10), record("out", 10)), Ok(()), "the budget is per batch");
    }
}
