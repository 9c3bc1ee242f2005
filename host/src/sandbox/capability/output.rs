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
//!
//! `emit-many` takes many records in one flat buffer, so an interpreter guest pays
//! its bindings' per-call cost once per batch instead of once per record; `limits`
//! tells such a guest what `emit` would allow, so it can raise the same refusal the
//! moment its tenant emits. Each record of the buffer is checked and kept exactly as
//! `emit` checks and keeps one ([`OutputState::check`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, WasmList, WasmStr};

use super::Grants;
use crate::sandbox::bindings::ferry::processor::output::OutputLimits as WitLimits;
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

    /// Checks everything about an emit that its size does not decide, for a batch
    /// that has used `used`.
    fn admit(&self, used: OutputUsed, source: Option<i64>, topic: &str) -> Result<(), EmitError> {
        if !self.topics.contains(topic) {
            return Err(EmitError::TopicNotAllowed(sanitize(topic, 200)));
        }
        if let Some(offset) = source
            && self.offsets.binary_search(&offset).is_err()
        {
            return Err(EmitError::UnknownSource(offset));
        }
        if used.records >= self.limits.max_records {
            return Err(EmitError::TooMany);
        }
        Ok(())
    }

    /// Checks a record of `size` bytes charged `charged`, for a batch that has used
    /// `used`.
    fn fits(&self, used: OutputUsed, size: usize, charged: usize) -> Result<(), EmitError> {
        if size > self.limits.max_record_bytes {
            return Err(EmitError::TooLarge(self.limits.max_record_bytes as u64));
        }
        if used.bytes.saturating_add(charged) > self.limits.batch_bytes {
            return Err(EmitError::OverBudget(self.limits.batch_bytes as u64));
        }
        Ok(())
    }

    /// The whole check of a record whose shape is known, in `emit`'s order: what
    /// its size does not decide, then its key and value against the size limit and
    /// its fixed cost against the budget (before any header is read), then its
    /// whole size and charge. Returns the charge.
    fn check(&self, used: OutputUsed, source: Option<i64>, topic: &str, shape: &Shape) -> Result<usize, EmitError> {
        self.admit(used, source, topic)?;
        let fixed = RECORD_COST + topic.len() + shape.key_len + shape.value_len;
        let at_least = fixed.saturating_add(HEADER_COST.saturating_mul(shape.headers));
        self.fits(used, shape.key_len + shape.value_len, at_least)?;
        let charged = at_least.saturating_add(shape.header_bytes);
        self.fits(used, shape.key_len + shape.value_len + shape.header_bytes, charged)?;
        Ok(charged)
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
        self.admit(self.used, source, &record.topic)?;
        let charged = charge(&record);
        self.fits(self.used, size_of(&record), charged)?;
        self.keep(source, record, charged);
        Ok(())
    }

    /// `limits`: the bounds and what the batch has used of them.
    fn limits(&self) -> WitLimits {
        WitLimits {
            topics: self.topics.iter().cloned().collect(),
            max_records: self.limits.max_records as u64,
            records_used: self.used.records as u64,
            max_record_bytes: self.limits.max_record_bytes as u64,
            batch_bytes: self.limits.batch_bytes as u64,
            bytes_used: self.used.bytes as u64,
            record_cost: RECORD_COST as u64,
            header_cost: HEADER_COST as u64,
        }
    }
}

/// The lengths of a record that its checks need.
#[derive(Debug, Default)]
struct Shape {
    key_len: usize,
    value_len: usize,
    headers: usize,
    /// Header names and values, in bytes.
    header_bytes: usize,
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
    instance
        .func_wrap("limits", |store: StoreContextMut<'_, GuestState>, (): ()| Ok((store.data().output.limits(),)))?;
    instance.func_wrap("emit-many", |mut store: StoreContextMut<'_, GuestState>, (outputs,): (WasmList<u8>,)| {
        Ok((emit_many(&mut store, &outputs)?,))
    })?;
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
    if let Err(refused) = output.admit(output.used, source, &topic) {
        return Ok(Err(refused));
    }
    let list_len = |list: &Option<WasmList<u8>>| list.as_ref().map_or(0, WasmList::len);
    let (key_len, value_len, headers) = (list_len(&raw.key), list_len(&raw.value), raw.headers.len());
    // What the record costs at least, before its headers are looked at (a million of
    // them are refused without reading one).
    let fixed = RECORD_COST + topic.len() + key_len + value_len;
    let at_least = fixed.saturating_add(HEADER_COST.saturating_mul(headers));
    if let Err(refused) = output.fits(output.used, key_len + value_len, at_least) {
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
    let output = &store.data().output;
    if let Err(refused) = output.fits(output.used, size, charged) {
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

/// A record of an `emit-many` buffer.
struct Parsed<'a> {
    source: Option<i64>,
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// Names and values.
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
    shape: Shape,
}

/// Reads `emit-many`'s buffer. An error names what is malformed.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.buf.len()).ok_or("runs past its end")?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A length, or `None` for `u32::MAX` (absent).
    fn optional_len(&mut self) -> Result<Option<usize>, &'static str> {
        Ok(match self.u32()? {
            u32::MAX => None,
            len => Some(len as usize),
        })
    }

    fn bytes(&mut self, len: Option<usize>) -> Result<Option<&'a [u8]>, &'static str> {
        len.map(|len| self.take(len)).transpose()
    }

    fn text(&mut self, len: usize) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.take(len)?).map_err(|_| "holds a name that is not UTF-8")
    }

    /// The next record. Its header table is read only up to what the buffer holds,
    /// so a claimed count cannot make the host allocate more than the guest sent.
    fn record(&mut self) -> Result<Parsed<'a>, &'static str> {
        let source = match self.i64()? {
            i64::MIN => None,
            offset => Some(offset),
        };
        let topic_len = self.u32()? as usize;
        let (key_len, value_len) = (self.optional_len()?, self.optional_len()?);
        let count = self.u32()? as usize;
        let topic = self.text(topic_len)?;
        let (key, value) = (self.bytes(key_len)?, self.bytes(value_len)?);
        // Each header takes at least 8 bytes of the buffer.
        let mut headers = Vec::with_capacity(count.min((self.buf.len() - self.at) / 8));
        let mut header_bytes = 0usize;
        for _ in 0..count {
            let (name_len, value_len) = (self.u32()? as usize, self.optional_len()?);
            let name = self.text(name_len)?;
            let value = self.bytes(value_len)?;
            header_bytes += name.len() + value.map_or(0, <[u8]>::len);
            headers.push((name, value));
        }
        let shape = Shape {
            key_len: key.map_or(0, <[u8]>::len),
            value_len: value.map_or(0, <[u8]>::len),
            headers: count,
            header_bytes,
        };
        Ok(Parsed { source, topic, key, value, headers, shape })
    }
}

/// Records `emit-many` accepted, with their sources and charges.
type Accepted = Vec<(Option<i64>, OutputRecord, usize)>;

/// `emit-many`: each record is checked as `emit` checks it, in order, against what
/// the batch has used including the records before it in the buffer; the buffer is
/// read in the guest's memory and only accepted records are copied. A buffer that
/// does not parse traps, as a malformed argument would.
fn emit_many(
    store: &mut StoreContextMut<'_, GuestState>,
    outputs: &WasmList<u8>,
) -> wasmtime::Result<Result<(), (u32, EmitError)>> {
    let (accepted, refused) = accept_many(&store.data().output, outputs.as_le_slice(&*store))?;
    let output = &mut store.data_mut().output;
    for (source, record, charged) in accepted {
        output.keep(source, record, charged);
    }
    Ok(refused.map_or(Ok(()), Err))
}

/// The records of `buf` that `output` accepts, up to the first it refuses (and
/// why), or what is malformed about the buffer.
fn accept_many(output: &OutputState, buf: &[u8]) -> wasmtime::Result<(Accepted, Option<(u32, EmitError)>)> {
    let mut reader = Reader { buf, at: 0 };
    let mut used = output.used;
    let mut accepted = Vec::new();
    while reader.at < reader.buf.len() {
        let index = accepted.len();
        let parsed =
            reader.record().map_err(|what| wasmtime::format_err!("emit-many: output {index} of the buffer {what}"))?;
        let charged = match output.check(used, parsed.source, parsed.topic, &parsed.shape) {
            Ok(charged) => charged,
            Err(error) => return Ok((accepted, Some((u32::try_from(index).unwrap_or(u32::MAX), error)))),
        };
        used.records += 1;
        used.bytes += charged;
        let record = OutputRecord {
            topic: parsed.topic.to_owned(),
            key: parsed.key.map(<[u8]>::to_vec),
            value: parsed.value.map(<[u8]>::to_vec),
            headers: parsed
                .headers
                .iter()
                .map(|&(name, value)| Header { name: name.to_owned(), value: value.map(<[u8]>::to_vec) })
                .collect(),
        };
        debug_assert_eq!(charge(&record), charged);
        accepted.push((parsed.source, record, charged));
    }
    Ok((accepted, None))
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

    /// `emit-many`'s buffer for `records`, as the SDKs encode it.
    fn encode(records: &[(Option<i64>, OutputRecord)]) -> Vec<u8> {
        fn len(bytes: &Option<Vec<u8>>) -> u32 {
            bytes.as_ref().map_or(u32::MAX, |b| b.len() as u32)
        }
        let mut buf = Vec::new();
        for (source, record) in records {
            buf.extend(source.unwrap_or(i64::MIN).to_le_bytes());
            buf.extend((record.topic.len() as u32).to_le_bytes());
            buf.extend(len(&record.key).to_le_bytes());
            buf.extend(len(&record.value).to_le_bytes());
            buf.extend((record.headers.len() as u32).to_le_bytes());
            buf.extend(record.topic.as_bytes());
            buf.extend(record.key.iter().flatten());
            buf.extend(record.value.iter().flatten());
            for header in &record.headers {
                buf.extend((header.name.len() as u32).to_le_bytes());
                buf.extend(len(&header.value).to_le_bytes());
                buf.extend(header.name.as_bytes());
                buf.extend(header.value.iter().flatten());
            }
        }
        buf
    }

    /// A buffer of records is accepted exactly as one `emit` per record would accept
    /// them, up to the first refusal, which names its index and the same error.
    #[test]
    fn emit_many_accepts_and_refuses_what_emit_would() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned(), "é".to_owned()]));
        let cost = RECORD_COST + "out".len();
        let limits =
            OutputLimits { max_records: 4, max_record_bytes: 10, batch_bytes: 30 + 4 * cost + HEADER_COST * 2 };
        let with_headers = OutputRecord {
            topic: "é".into(),
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![
                Header { name: "h".into(), value: Some(b"v".to_vec()) },
                Header { name: "".into(), value: None },
            ],
        };
        let cases: Vec<Vec<(Option<i64>, OutputRecord)>> = vec![
            vec![(Some(4), record("out", 10)), (None, with_headers.clone()), (Some(9), record("out", 0))],
            vec![(Some(4), record("out", 1)), (Some(5), record("nope", 1)), (Some(4), record("out", 1))],
            vec![(Some(4), record("out", 1)), (Some(6), record("out", 1))],
            vec![(Some(4), record("out", 11))],
            vec![(Some(4), record("out", 10)), (Some(4), record("out", 10)), (Some(4), record("out", 10))],
            // Over the byte budget on its headers' fixed cost alone.
            vec![(Some(4), record("out", 10)), (Some(5), OutputRecord { headers: headers(10), ..record("out", 0) })],
            // Over the count at the fifth.
            vec![(Some(4), record("out", 0)); 5],
            vec![],
        ];
        let mut seen = BTreeSet::new();
        for records in cases {
            let mut one_by_one = OutputState::new(topics.clone(), limits);
            one_by_one.begin(&[4, 5, 9], OutputUsed::default());
            let mut expected_refusal = None;
            for (index, (source, record)) in records.iter().enumerate() {
                if let Err(error) = one_by_one.emit(*source, record.clone()) {
                    expected_refusal = Some((index as u32, error));
                    break;
                }
            }
            let mut many = OutputState::new(topics.clone(), limits);
            many.begin(&[4, 5, 9], OutputUsed::default());
            let (accepted, refused) = accept_many(&many, &encode(&records)).unwrap();
            assert_eq!(refused, expected_refusal, "{records:?}");
            seen.extend(refused.map(|(_, error)| std::mem::discriminant(&error)).map(|d| format!("{d:?}")));
            for (source, record, charged) in accepted {
                many.keep(source, record, charged);
            }
            let ((expected, expected_used), (got, used)) = (one_by_one.take(), many.take());
            assert_eq!(used, expected_used);
            let pairs = |e: Vec<Emitted>| e.into_iter().map(|e| (e.source, e.record)).collect::<Vec<_>>();
            assert_eq!(pairs(got), pairs(expected));
        }
        assert_eq!(seen.len(), 5, "every kind of refusal is compared");
    }

    /// A buffer that claims more than it holds, or a name that is not UTF-8, is an
    /// error (the call traps); a huge header count allocates nothing up front.
    #[test]
    fn emit_many_refuses_malformed_buffers() {
        let topics = Arc::new(BTreeSet::from(["out".to_owned()]));
        let mut state = OutputState::new(topics, OutputLimits::default());
        state.begin(&[0], OutputUsed::default());
        let good = encode(&[(Some(0), record("out", 3))]);
        for cut in 1..good.len() {
            let error = accept_many(&state, &good[..cut]).unwrap_err().to_string();
            assert!(error.contains("output 0 of the buffer runs past its end"), "{error}");
        }
        let mut bad_topic = good.clone();
        bad_topic[24] = 0xff;
        assert!(accept_many(&state, &bad_topic).unwrap_err().to_string().contains("not UTF-8"));
        let mut many_headers = good;
        many_headers[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(accept_many(&state, &many_headers).is_err());
    }

    /// `limits` reports the bounds and what the batch used, across its calls.
    #[test]
    fn limits_report_what_the_batch_used() {
        let topics = Arc::new(BTreeSet::from(["b".to_owned(), "a".to_owned()]));
        let mut state = OutputState::new(topics, OutputLimits::default());
        state.begin(&[1], OutputUsed { records: 2, bytes: 700 });
        let limits = state.limits();
        assert_eq!(limits.topics, ["a", "b"]);
        assert_eq!((limits.records_used, limits.bytes_used), (2, 700));
        assert_eq!((limits.record_cost, limits.header_cost), (RECORD_COST as u64, HEADER_COST as u64));
        assert_eq!(limits.max_records, OutputLimits::default().max_records as u64);
    }
}
