//! The `output` capability: a processor emits records to the topics its pipeline
//! grants, each on behalf of one input record (or of the whole batch). The host keeps
//! them until the batch returns; the pipeline publishes only those of records that
//! ended processed.
//!
//! Everything an emit makes the host hold is bounded per batch, across every call
//! the batch takes (a batch split to isolate a faulting record included): a record
//! count, a size per record, and a budget for the whole batch that charges what the
//! host really holds, a fixed cost per record and per header on top of their bytes
//! ([`charge`]).
//!
//! `emit` reads its argument from the guest's memory lazily (wasmtime's `WasmStr`
//! and `WasmList`), not through generated bindings that would copy the whole record
//! first: a guest can point a million header names at the same megabyte of its
//! memory, and nothing is copied until the record is known to fit its limits.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use super::Grants;
use crate::sandbox::bindings::{EmitError, Header, OutputRecord};
use crate::sandbox::guest_state::GuestState;
use crate::sandbox::text::sanitize;

/// The import name.
pub const IMPORT: &str = "ferry:processor/output@0.2.0";

/// What the budget charges per output record on top of its bytes: ferry's own copy
/// (the 112-byte [`Emitted`], and up to four heap blocks for topic, key, value and
/// the header list, with the allocator's overhead) and, through the memory formula's
/// factor two, librdkafka's (its message struct, about 180 bytes, and its header
/// list).
pub const RECORD_COST: usize = ferry_sdk::limits::OUTPUT_RECORD_COST;
/// What the budget charges per header on top of its name and value: ferry's 48-byte
/// [`Header`] and up to two heap blocks (name, value) with the allocator's overhead,
/// and, through the factor two, librdkafka's (a pointer and a 40-byte header
/// struct with its copy of the name and value).
pub const HEADER_COST: usize = ferry_sdk::limits::OUTPUT_HEADER_COST;

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
    /// Most bytes per batch, as [`charge`] counts them.
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

/// How much of its limits a batch has used, across every call it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputUsed {
    /// Records accepted.
    pub records: usize,
    /// Bytes charged ([`charge`]).
    pub bytes: usize,
}

/// The `output` capability's part of a guest's store.
pub struct OutputState {
    topics: Arc<BTreeSet<String>>,
    limits: OutputLimits,
    /// Offsets of the batch being processed, ascending.
    offsets: Vec<i64>,
    emitted: Vec<Emitted>,
    used: OutputUsed,
}

impl OutputState {
    pub(crate) fn new(topics: Arc<BTreeSet<String>>, limits: OutputLimits) -> Self {
        OutputState { topics, limits, offsets: Vec::new(), emitted: Vec::new(), used: OutputUsed::default() }
    }

    /// Starts a call over records with these offsets, of a batch that has already
    /// used `used` of its limits in earlier calls.
    pub(crate) fn begin(&mut self, offsets: &[i64], used: OutputUsed) {
        self.offsets.clear();
        self.offsets.extend_from_slice(offsets);
        self.emitted.clear();
        self.used = used;
    }

    /// Takes what the call emitted, and what the batch has used so far.
    pub(crate) fn take(&mut self) -> (Vec<Emitted>, OutputUsed) {
        (std::mem::take(&mut self.emitted), std::mem::take(&mut self.used))
    }

    /// Checks everything about an emit that its size does not decide.
    fn admit(&self, source: Option<i64>, topic: &str) -> Result<(), EmitError> {
        if !self.topics.contains(topic) {
            return Err(EmitError::TopicNotAllowed(sanitize(topic, 200)));
        }
        if let Some(offset) = source
            && self.offsets.binary_search(&offset).is_err()
        {
            return Err(EmitError::UnknownSource(offset));
        }
        if self.used.records >= self.limits.max_records {
            return Err(EmitError::TooMany);
        }
        Ok(())
    }

    /// Checks a record of `size` bytes charged `charged`.
    fn fits(&self, size: usize, charged: usize) -> Result<(), EmitError> {
        if size > self.limits.max_record_bytes {
            return Err(EmitError::TooLarge(self.limits.max_record_bytes as u64));
        }
        if self.used.bytes.saturating_add(charged) > self.limits.batch_bytes {
            return Err(EmitError::OverBudget(self.limits.batch_bytes as u64));
        }
        Ok(())
    }

    /// Keeps an admitted record that fits.
    fn keep(&mut self, source: Option<i64>, record: OutputRecord, charged: usize) {
        self.used.records += 1;
        self.used.bytes += charged;
        self.emitted.push(Emitted { source, record });
    }

    /// The whole check, for a record already in host memory.
    #[cfg(test)]
    fn emit(&mut self, source: Option<i64>, record: OutputRecord) -> Result<(), EmitError> {
        self.admit(source, &record.topic)?;
        let charged = charge(&record);
        self.fits(size_of(&record), charged)?;
        self.keep(source, record, charged);
        Ok(())
    }
}

/// Key, value, header names and values, in bytes: what `max_record_bytes` limits.
pub fn size_of(record: &OutputRecord) -> usize {
    let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
    opt(&record.key) + opt(&record.value) + record.headers.iter().map(|h| h.name.len() + opt(&h.value)).sum::<usize>()
}

/// What a record costs the batch's budget: its topic and bytes, plus
/// [`RECORD_COST`], plus [`HEADER_COST`] per header.
pub fn charge(record: &OutputRecord) -> usize {
    RECORD_COST + record.topic.len() + size_of(record) + HEADER_COST * record.headers.len()
}

/// `output-record` as it lies in the guest's memory, read only as far as needed.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawOutputRecord {
    topic: WasmStr,
    key: Option<WasmList<u8>>,
    value: Option<WasmList<u8>>,
    headers: WasmList<RawHeader>,
}

/// `header`, likewise.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawHeader {
    name: WasmStr,
    value: Option<WasmList<u8>>,
}

/// The header at `index` of `headers` (in bounds), read from the guest's memory.
fn header_at(
    store: &mut StoreContextMut<'_, GuestState>,
    headers: &WasmList<RawHeader>,
    index: usize,
) -> wasmtime::Result<RawHeader> {
    headers.get(&mut *store, index).expect("an index below the list's length")
}

/// Links `emit`.
pub(super) fn link(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
    let mut instance = linker.instance(IMPORT)?;
    instance.func_wrap(
        "emit",
        |mut store: StoreContextMut<'_, GuestState>, (source, record): (Option<i64>, RawOutputRecord)| {
            Ok((emit(&mut store, source, &record)?,))
        },
    )?;
    Ok(())
}

/// `emit`: every limit is checked from the record's shape and lengths before
/// anything of it is copied into host memory. A string that is not UTF-8 traps, as
/// the generated bindings would.
fn emit(
    store: &mut StoreContextMut<'_, GuestState>,
    source: Option<i64>,
    raw: &RawOutputRecord,
) -> wasmtime::Result<Result<(), EmitError>> {
    let topic = raw.topic.to_str(&*store)?.into_owned();
    let output = &store.data().output;
    if let Err(refused) = output.admit(source, &topic) {
        return Ok(Err(refused));
    }
    let list_len = |list: &Option<WasmList<u8>>| list.as_ref().map_or(0, WasmList::len);
    let (key_len, value_len, headers) = (list_len(&raw.key), list_len(&raw.value), raw.headers.len());
    // What the record costs at least, before its headers are looked at (a million of
    // them are refused without reading one).
    let fixed = RECORD_COST + topic.len() + key_len + value_len;
    let at_least = fixed.saturating_add(HEADER_COST.saturating_mul(headers));
    if let Err(refused) = output.fits(key_len + value_len, at_least) {
        return Ok(Err(refused));
    }
    // Two passes over the headers, reading each in place: their sizes, then (if the
    // record fits) their copies.
    let mut header_bytes = 0usize;
    for index in 0..headers {
        let header = header_at(store, &raw.headers, index)?;
        header_bytes += header.name.to_str(&*store)?.len() + list_len(&header.value);
    }
    let size = key_len + value_len + header_bytes;
    let charged = at_least + header_bytes;
    if let Err(refused) = store.data().output.fits(size, charged) {
        return Ok(Err(refused));
    }
    let bytes = |store: &StoreContextMut<'_, GuestState>, list: &Option<WasmList<u8>>| {
        list.as_ref().map(|l| l.as_le_slice(store).to_vec())
    };
    let mut copied = Vec::with_capacity(headers);
    for index in 0..headers {
        let header = header_at(store, &raw.headers, index)?;
        copied.push(Header { name: header.name.to_str(&*store)?.into_owned(), value: bytes(store, &header.value) });
    }
    let record = OutputRecord { topic, key: bytes(store, &raw.key), value: bytes(store, &raw.value), headers: copied };
    debug_assert_eq!(charge(&record), charged);
    store.data_mut().output.keep(source, record, charged);
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, value: usize) -> OutputRecord {
        OutputRecord { topic: topic.into(), key: None, value: Some(vec![0; value]), headers: vec![] }
    }

    fn headers(n: usize) -> Vec<Header> {
        (0..n).map(|_| Header { name: String::new(), value: None }).collect()
    }

    #[test]
    fn every_bound_is_checked_in_order() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned()]));
        let cost = RECORD_COST + "out".len();
        let limits = OutputLimits { max_records: 2, max_record_bytes: 10, batch_bytes: 15 + 2 * cost };
        let mut state = OutputState::new(topics, limits);
        state.begin(&[4, 5, 9], OutputUsed::default());
        assert_eq!(state.emit(Some(5), record("nope", 1)), Err(EmitError::TopicNotAllowed("nope".into())));
        assert_eq!(state.emit(Some(6), record("out", 1)), Err(EmitError::UnknownSource(6)));
        assert_eq!(state.emit(Some(4), record("out", 11)), Err(EmitError::TooLarge(10)));
        assert_eq!(state.emit(Some(4), record("out", 10)), Ok(()));
        assert_eq!(state.emit(None, record("out", 6)), Err(EmitError::OverBudget(limits.batch_bytes as u64)));
        assert_eq!(state.emit(None, record("out", 5)), Ok(()));
        assert_eq!(state.emit(Some(9), record("out", 0)), Err(EmitError::TooMany));
        let (emitted, used) = state.take();
        let sources: Vec<_> = emitted.iter().map(|e| e.source).collect();
        assert_eq!(sources, [Some(4), None]);
        assert_eq!(used, OutputUsed { records: 2, bytes: 15 + 2 * cost });
        state.begin(&[10], OutputUsed::default());
        assert_eq!(state.emit(Some(10), record("out", 10)), Ok(()), "a new batch starts with its whole budget");
    }

    /// Empty headers cost what the host holds for them: a record of 400,000 of them
    /// was once charged nothing.
    #[test]
    fn records_and_headers_are_charged_what_the_host_holds() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned()]));
        let mut empty = record("out", 0);
        assert_eq!(charge(&empty), RECORD_COST + 3);
        empty.headers = headers(400_000);
        assert_eq!(charge(&empty), RECORD_COST + 3 + 400_000 * HEADER_COST);
        let mut state = OutputState::new(topics, OutputLimits::default());
        state.begin(&[0], OutputUsed::default());
        let budget = OutputLimits::default().batch_bytes as u64;
        assert_eq!(state.emit(Some(0), empty), Err(EmitError::OverBudget(budget)));
        let fits = (OutputLimits::default().batch_bytes - RECORD_COST - 3) / HEADER_COST;
        let mut largest = record("out", 0);
        largest.headers = headers(fits);
        assert_eq!(state.emit(Some(0), largest.clone()), Ok(()));
        assert_eq!(state.emit(Some(0), record("out", 0)), Err(EmitError::OverBudget(budget)), "the budget is spent");
    }

    /// The fixed costs cover ferry's own copy of a record and of a header: its struct
    /// and its heap blocks, each with glibc's 16-byte header rounded up (up to 24
    /// bytes more than asked). librdkafka's copy is the formula's second share.
    #[test]
    fn the_fixed_costs_cover_the_hosts_own_copies() {
        const BLOCK_OVERHEAD: usize = 24;
        assert!(HEADER_COST >= std::mem::size_of::<Header>() + 2 * BLOCK_OVERHEAD);
        assert!(RECORD_COST >= std::mem::size_of::<Emitted>() + 4 * BLOCK_OVERHEAD);
    }

    /// The budget is the batch's, whatever the number of calls it takes (a batch
    /// split around a faulting record runs several).
    #[test]
    fn the_budget_carries_across_the_calls_of_a_batch() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned()]));
        let limits = OutputLimits { max_records: 2, max_record_bytes: 100, batch_bytes: 1 << 20 };
        let mut state = OutputState::new(topics, limits);
        state.begin(&[1, 2], OutputUsed::default());
        assert_eq!(state.emit(Some(1), record("out", 1)), Ok(()));
        let (_, used) = state.take();
        state.begin(&[2], used);
        assert_eq!(state.emit(Some(2), record("out", 1)), Ok(()));
        let (_, used) = state.take();
        state.begin(&[2], used);
        assert_eq!(state.emit(Some(2), record("out", 1)), Err(EmitError::TooMany), "two per batch, not per call");
    }
}
