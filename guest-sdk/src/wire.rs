//! The flat batch encoding that carries records across the host/guest boundary.
//!
//! A batch travels as one `list<u8>` so the boundary costs one copy per batch instead
//! of several lists and strings per record. The buffer holds `count` records back to
//! back, all integers little-endian:
//!
//! ```text
//! offset: i64, timestamp_ms: i64 (i64::MIN when absent),
//! key_len: u32 (u32::MAX when absent), value_len: u32 (u32::MAX when absent),
//! header_count: u32,
//! key bytes, value bytes,
//! header_count times:
//!     name_len: u32, value_len: u32 (u32::MAX when absent), name bytes (UTF-8), value bytes
//! ```
//!
//! [`BatchEncoder`] writes it (the host uses it); [`decode`] reads it without copying
//! and checks every length against the buffer, so a corrupt buffer gives a
//! [`WireError`], never a wild read. Tenants never need this module: the SDK builds
//! [`Record`](crate::Record) views from it.
//!
//! ```
//! use ferry_sdk::wire::{BatchEncoder, decode};
//!
//! let mut encoder = BatchEncoder::new();
//! encoder.push(7, Some(1_700_000_000_000), Some(b"k"), Some(b"v"), [("trace", Some(&b"1"[..]))]);
//! encoder.push(8, None, None, None, []);
//!
//! let records: Vec<_> = decode(encoder.bytes(), encoder.count())
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(records[0].offset, 7);
//! assert_eq!(records[0].headers().next(), Some(("trace", Some(&b"1"[..]))));
//! assert_eq!(records[1].key, None);
//! ```

use std::fmt;

/// Timestamp value that marks "no timestamp".
pub const ABSENT_TIMESTAMP: i64 = i64::MIN;
/// Length value that marks an absent key, value or header value.
pub const ABSENT_LEN: u32 = u32::MAX;
/// Bytes of the fixed part of a record: offset, timestamp, key length, value length,
/// header count.
pub const RECORD_FIXED_LEN: usize = 8 + 8 + 4 + 4 + 4;
/// Bytes of the fixed part of a header: name length, value length.
pub const HEADER_FIXED_LEN: usize = 4 + 4;

/// Writes records into the flat batch encoding.
///
/// Reuse one encoder across batches with [`clear`](Self::clear): it keeps its
/// allocation, and [`push`](Self::push) never allocates per record once the buffer is
/// large enough.
#[derive(Debug, Default, Clone)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    count: u32,
    /// Where the header count of the record last started sits (`push_header`
    /// counts it up); `None` when there is no record to add headers to.
    open_record: Option<usize>,
}

impl BatchEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty encoder whose buffer can hold `bytes` bytes without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: Vec::with_capacity(bytes), count: 0, open_record: None }
    }

    /// Appends one record.
    ///
    /// `timestamp_ms` of `Some(i64::MIN)` is indistinguishable from `None` on the wire.
    ///
    /// # Panics
    ///
    /// If a key, value, header name or header value is 4 GiB or longer, or if the
    /// batch already holds `u32::MAX` records or `u32::MAX` headers in this record.
    pub fn push<'h, H>(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) where
        H: IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    {
        self.start_record(offset, timestamp_ms, key, value);
        for (name, value) in headers {
            self.push_header(name, value);
        }
    }

    /// Appends one record without headers; [`push_header`](Self::push_header) adds
    /// them. For a host that reads a record's headers one at a time.
    ///
    /// # Panics
    ///
    /// As [`push`](Self::push).
    pub fn start_record(&mut self, offset: i64, timestamp_ms: Option<i64>, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.count = self.count.checked_add(1).expect("ferry wire: more than u32::MAX records in one batch");
        let key_len = key.map_or(0, <[u8]>::len);
        let value_len = value.map_or(0, <[u8]>::len);
        self.buf.reserve(RECORD_FIXED_LEN + key_len + value_len);
        // The fixed part is assembled on the stack and appended in one copy: the
        // encoder runs once per record on the host's consume loop.
        let mut fixed = [0u8; RECORD_FIXED_LEN];
        fixed[0..8].copy_from_slice(&offset.to_le_bytes());
        fixed[8..16].copy_from_slice(&timestamp_ms.unwrap_or(ABSENT_TIMESTAMP).to_le_bytes());
        fixed[16..20].copy_from_slice(&wire_len(key, "key").to_le_bytes());
        fixed[20..24].copy_from_slice(&wire_len(value, "value").to_le_bytes());
        // fixed[24..28] is the header count, counted up by `push_header`.
        self.open_record = Some(self.buf.len() + 24);
        self.buf.extend_from_slice(&fixed);
        if let Some(key) = key {
            self.buf.extend_from_slice(key);
        }
        if let Some(value) = value {
            self.buf.extend_from_slice(value);
        }
    }

    /// Appends a header to the record last started with
    /// [`start_record`](Self::start_record) (or [`push`](Self::push)).
    ///
    /// # Panics
    ///
    /// If no record was started since the last [`clear`](Self::clear) (or the last
    /// record came from [`push_encoded`](Self::push_encoded)), if the name or value
    /// is 4 GiB or longer, or if the record already has `u32::MAX` headers.
    pub fn push_header(&mut self, name: &str, value: Option<&[u8]>) {
        let count_at = self.open_record.expect("ferry wire: push_header without a record started");
        let count = self.buf[count_at..count_at + 4].try_into().map(u32::from_le_bytes).expect("four bytes");
        let count = count.checked_add(1).expect("ferry wire: more than u32::MAX headers in one record");
        self.buf[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        let value_len = value.map_or(0, <[u8]>::len);
        self.buf.reserve(HEADER_FIXED_LEN + name.len() + value_len);
        let mut fixed = [0u8; HEADER_FIXED_LEN];
        fixed[0..4].copy_from_slice(&wire_len(Some(name.as_bytes()), "header name").to_le_bytes());
        fixed[4..8].copy_from_slice(&wire_len(value, "header value").to_le_bytes());
        self.buf.extend_from_slice(&fixed);
        self.buf.extend_from_slice(name.as_bytes());
        if let Some(value) = value {
            self.buf.extend_from_slice(value);
        }
    }

    /// Appends one record already in the wire encoding: exactly the bytes
    /// [`push`](Self::push) wrote for it (see [`RawRecord::encoded`]), for a host that
    /// keeps records aside and batches them again.
    ///
    /// # Panics
    ///
    /// If `record` is not exactly one well-formed record.
    pub fn push_encoded(&mut self, record: &[u8]) {
        validate(record, 1).expect("ferry wire: push_encoded takes exactly one encoded record");
        self.count = self.count.checked_add(1).expect("ferry wire: more than u32::MAX records in one batch");
        self.buf.extend_from_slice(record);
        self.open_record = None;
    }

    /// How many records were pushed since the last [`clear`](Self::clear).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True when no record was pushed since the last [`clear`](Self::clear).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded records.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets every record but keeps the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.open_record = None;
    }

    /// The encoded records, giving up the encoder.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// An empty encoder that reuses `buf`'s allocation (for example the buffer
    /// [`into_bytes`](Self::into_bytes) returned for the previous batch).
    pub fn from_vec(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self { buf, count: 0, open_record: None }
    }
}

fn wire_len(bytes: Option<&[u8]>, what: &str) -> u32 {
    match bytes {
        None => ABSENT_LEN,
        Some(bytes) => match u32::try_from(bytes.len()) {
            Ok(len) if len != ABSENT_LEN => len,
            _ => panic!("ferry wire: {what} of {} bytes does not fit the batch encoding", bytes.len()),
        },
    }
}

/// Why a buffer is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends inside a record.
    Truncated {
        /// Index of the record in the batch (0-based).
        record: u32,
        /// The part of the record that does not fit.
        field: &'static str,
    },
    /// A header name is not valid UTF-8.
    HeaderNameNotUtf8 {
        /// Index of the record in the batch (0-based).
        record: u32,
        /// Index of the header in the record (0-based).
        header: u32,
    },
    /// Bytes remain after the last record the count announced.
    TrailingBytes {
        /// The record count of the batch.
        count: u32,
        /// How many bytes remain.
        extra: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { record, field } => {
                write!(f, "corrupt batch: buffer ends inside the {field} of record {record}")
            }
            WireError::HeaderNameNotUtf8 { record, header } => {
                write!(f, "corrupt batch: name of header {header} of record {record} is not UTF-8")
            }
            WireError::TrailingBytes { count, extra } => {
                write!(f, "corrupt batch: {extra} bytes left after the {count} records announced")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// One decoded record: plain fields borrowing the batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Offset in the partition.
    pub offset: i64,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RawRecord<'a> {
    /// The record in the wire encoding, on its own (for
    /// [`BatchEncoder::push_encoded`]).
    pub fn encoded(&self) -> Vec<u8> {
        let mut encoder = BatchEncoder::new();
        encoder.push(self.offset, self.timestamp_ms, self.key, self.value, self.headers());
        encoder.into_bytes()
    }

    /// The headers in wire order. They were checked when the record was decoded.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.headers, remaining: self.header_count }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }
}

/// Iterator over the headers of a [`RawRecord`]: `(name, value)` pairs.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The record was validated when decoded, so this cannot fail; it is still
        // checked (safely) rather than trusted.
        let mut reader = Reader { rest: self.rest };
        let header = reader.header_fast().expect("ferry wire: header changed after validation");
        self.rest = reader.rest;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// Decodes `count` records from `bytes` without copying.
///
/// The iterator yields `Ok` for each well-formed record, then an `Err` and nothing
/// more if the buffer is corrupt: too short for a record, a header name that is not
/// UTF-8, or bytes left over after the last record.
pub fn decode(bytes: &[u8], count: u32) -> Records<'_> {
    Records { reader: Reader { rest: bytes }, index: 0, count, done: false }
}

/// Checks that `bytes` holds exactly `count` well-formed records.
pub fn validate(bytes: &[u8], count: u32) -> Result<(), WireError> {
    decode(bytes, count).try_for_each(|record| record.map(drop))
}

/// Iterator returned by [`decode`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    reader: Reader<'a>,
    index: u32,
    count: u32,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RawRecord<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.count {
            self.done = true;
            return match self.reader.rest.len() {
                0 => None,
                extra => Some(Err(WireError::TrailingBytes { count: self.count, extra })),
            };
        }
        let result = self.reader.record(self.index);
        self.index += 1;
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            let n = (self.count - self.index) as usize;
            (0, Some(n + 1))
        }
    }
}

/// A bounds-checked little-endian reader over the remaining bytes.
#[derive(Debug, Clone)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, len: usize, record: u32, field: &'static str) -> Result<&'a [u8], WireError> {
        if len > self.rest.len() {
            return Err(WireError::Truncated { record, field });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    fn array<const N: usize>(&mut self, record: u32, field: &'static str) -> Result<[u8; N], WireError> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(WireError::Truncated { record, field })?;
        self.rest = tail;
        Ok(*head)
    }

    #[inline]
    fn u32(&mut self, record: u32, field: &'static str) -> Result<u32, WireError> {
        self.array(record, field).map(u32::from_le_bytes)
    }

    #[inline]
    fn i64(&mut self, record: u32, field: &'static str) -> Result<i64, WireError> {
        self.array(record, field).map(i64::from_le_bytes)
    }

    #[inline]
    fn optional(&mut self, len: u32, record: u32, field: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        if len == ABSENT_LEN { Ok(None) } else { self.take(len as usize, record, field).map(Some) }
    }

    /// The next record. Well-formed records take [`Self::record_fast`]; anything
    /// else is read again field by field, which says exactly what is wrong.
    fn record(&mut self, record: u32) -> Result<RawRecord<'a>, WireError> {
        let start = self.rest;
        if let Some(raw) = self.record_fast() {
            return Ok(raw);
        }
        self.rest = start;
        self.record_checked(record)
    }

    /// A well-formed record with one bounds check per part (the fixed fields, key,
    /// value, each header), or `None` without saying why. Runs for every record the
    /// guest receives, so it is kept lean.
    #[inline]
    fn record_fast(&mut self) -> Option<RawRecord<'a>> {
        let (fixed, rest) = self.rest.split_first_chunk::<RECORD_FIXED_LEN>()?;
        let field = |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
        let offset = i64::from_le_bytes(fixed[0..8].try_into().ok()?);
        let timestamp = i64::from_le_bytes(fixed[8..16].try_into().ok()?);
        let (key_len, value_len, header_count) = (field(16), field(20), field(24));
        self.rest = rest;
        let key = self.optional_fast(key_len)?;
        let value = self.optional_fast(value_len)?;
        let headers_start = self.rest;
        for _ in 0..header_count {
            let (name, _) = self.header_bytes_fast()?;
            // Header names are short and almost always ASCII: check that first.
            if !name.is_ascii() && std::str::from_utf8(name).is_err() {
                return None;
            }
        }
        Some(self.finish(offset, timestamp, key, value, headers_start, header_count))
    }

    /// The record whose headers run from `headers_start` to where the reader is.
    #[inline]
    fn finish(
        &self,
        offset: i64,
        timestamp: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers_start: &'a [u8],
        header_count: u32,
    ) -> RawRecord<'a> {
        let headers_len = headers_start.len() - self.rest.len();
        RawRecord {
            offset,
            timestamp_ms: (timestamp != ABSENT_TIMESTAMP).then_some(timestamp),
            key,
            value,
            headers: &headers_start[..headers_len],
            header_count,
        }
    }

    /// `Some(None)` for an absent field, `Some(Some(bytes))` for a present one,
    /// `None` when the bytes are not there.
    #[inline]
    fn optional_fast(&mut self, len: u32) -> Option<Option<&'a [u8]>> {
        if len == ABSENT_LEN {
            return Some(None);
        }
        let (head, tail) = self.rest.split_at_checked(len as usize)?;
        self.rest = tail;
        Some(Some(head))
    }

    #[cold]
    #[inline(never)]
    fn record_checked(&mut self, record: u32) -> Result<RawRecord<'a>, WireError> {
        let offset = self.i64(record, "offset")?;
        let timestamp = self.i64(record, "timestamp")?;
        let key_len = self.u32(record, "key length")?;
        let value_len = self.u32(record, "value length")?;
        let header_count = self.u32(record, "header count")?;
        let key = self.optional(key_len, record, "key")?;
        let value = self.optional(value_len, record, "value")?;
        let headers_start = self.rest;
        for header in 0..header_count {
            self.header(record, header)?;
        }
        Ok(self.finish(offset, timestamp, key, value, headers_start, header_count))
    }

    /// A well-formed header, or `None` without saying why.
    #[inline]
    fn header_fast(&mut self) -> Option<(&'a str, Option<&'a [u8]>)> {
        let (name, value) = self.header_bytes_fast()?;
        Some((std::str::from_utf8(name).ok()?, value))
    }

    /// A header's name (unchecked) and value, or `None` when they are not there.
    #[inline]
    fn header_bytes_fast(&mut self) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        let (lengths, rest) = self.rest.split_first_chunk::<HEADER_FIXED_LEN>()?;
        let name_len = u32::from_le_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
        let value_len = u32::from_le_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
        self.rest = rest;
        let name = self.optional_fast(name_len).flatten()?;
        let value = self.optional_fast(value_len)?;
        Some((name, value))
    }

    fn header(&mut self, record: u32, header: u32) -> Result<(&'a str, Option<&'a [u8]>), WireError> {
        let name_len = self.u32(record, "header name length")?;
        let value_len = self.u32(record, "header value length")?;
        let name = self.take(name_len as usize, record, "header name")?;
        let value = self.optional(value_len, record, "header value")?;
        let name = std::str::from_utf8(name).map_err(|_| WireError::HeaderNameNotUtf8 { record, header })?;
        Ok((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = (i64, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

    fn encode(records: &[Owned]) -> BatchEncoder {
        let mut encoder = BatchEncoder::new();
        for (offset, ts, key, value, headers) in records {
            encoder.push(
                *offset,
                *ts,
                key.as_deref(),
                value.as_deref(),
                headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())),
            );
        }
        encoder
    }

    fn owned(record: RawRecord<'_>) -> Owned {
        (
            record.offset,
            record.timestamp_ms,
            record.key.map(<[u8]>::to_vec),
            record.value.map(<[u8]>::to_vec),
            record.headers().map(|(n, v)| (n.to_owned(), v.map(<[u8]>::to_vec))).collect(),
        )
    }

    #[test]
    fn layout_is_as_documented() {
        let mut encoder = BatchEncoder::new();
        encoder.push(5, None, Some(b"ab"), None, [("h", Some(&b"xyz"[..])), ("n", None)]);
        let mut expected = Vec::new();
        expected.extend_from_slice(&5i64.to_le_bytes());
        expected.extend_from_slice(&i64::MIN.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(&u32::MAX.to_le_bytes());
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(b"ab");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(b"hxyz");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&u32::MAX.to_le_bytes());
        expected.extend_from_slice(b"n");
        assert_eq!(encoder.bytes(), &expected[..]);
        assert_eq!(encoder.count(), 1);
    }

    #[test]
    fn empty_and_absent_are_distinct() {
        let mut encoder = BatchEncoder::new();
        encoder.push(0, Some(0), Some(b""), Some(b""), [("", Some(&b""[..]))]);
        encoder.push(1, None, None, None, [("", None)]);
        let records: Vec<_> = decode(encoder.bytes(), 2).map(Result::unwrap).collect();
        assert_eq!(records[0].timestamp_ms, Some(0));
        assert_eq!(records[0].key, Some(&b""[..]));
        assert_eq!(records[0].value, Some(&b""[..]));
        assert_eq!(records[0].headers().collect::<Vec<_>>(), [("", Some(&b""[..]))]);
        assert_eq!(records[1].timestamp_ms, None);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value, None);
        assert_eq!(records[1].headers().collect::<Vec<_>>(), [("", None)]);
    }

    #[test]
    fn clear_keeps_the_allocation() {
        let mut encoder = BatchEncoder::with_capacity(1024);
        encoder.push(1, None, Some(&[1; 100]), None, []);
        let capacity = encoder.buf.capacity();
        encoder.clear();
        assert!(encoder.is_empty());
        assert!(encoder.bytes().is_empty());
        assert_eq!(encoder.buf.capacity(), capacity);
        encoder.push(2, None, None, Some(b"v"), []);
        assert_eq!(encoder.count(), 1);
        assert_eq!(decode(encoder.bytes(), 1).next().unwrap().unwrap().offset, 2);
        assert_eq!(encoder.clone().into_bytes(), encoder.bytes());
    }

    #[test]
    fn empty_batch() {
        assert_eq!(decode(&[], 0).count(), 0);
        assert_eq!(validate(&[], 0), Ok(()));
        assert_eq!(validate(&[], 1), Err(WireError::Truncated { record: 0, field: "offset" }));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, None, None, []);
        encoder.push(2, None, None, None, []);
        let err = validate(encoder.bytes(), 1).unwrap_err();
        assert_eq!(err, WireError::TrailingBytes { count: 1, extra: RECORD_FIXED_LEN });
        assert!(err.to_string().contains("28 bytes left"), "{err}");
    }

    #[test]
    fn huge_lengths_are_truncation_not_panics() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1i64.to_le_bytes());
        bytes.extend_from_slice(&1i64.to_le_bytes());
        bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let err = validate(&bytes, 1).unwrap_err();
        assert_eq!(err, WireError::Truncated { record: 0, field: "key" });

        // A header count far larger than the buffer can hold.
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, None, None, []);
        let mut bytes = encoder.into_bytes();
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(validate(&bytes, 1), Err(WireError::Truncated { record: 0, field: "header name length" }));
    }

    #[test]
    fn bad_header_name_is_reported() {
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, None, None, []);
        encoder.push(2, None, None, None, [("ok", None), ("é", None)]);
        let mut bytes = encoder.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        let results: Vec<_> = decode(&bytes, 2).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(results[1], Err(WireError::HeaderNameNotUtf8 { record: 1, header: 1 }));
    }

    #[test]
    #[should_panic(expected = "push_header without a record started")]
    fn a_header_needs_a_record() {
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, None, None, []);
        encoder.clear();
        encoder.push_header("h", None);
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
    }

    fn arb_record() -> impl Strategy<Value = Owned> {
        (
            any::<i64>(),
            proptest::option::of(any::<i64>().prop_filter("absent marker", |t| *t != i64::MIN)),
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec((".{0,12}", arb_bytes()), 0..4),
        )
    }

    proptest! {
        #[test]
        fn roundtrip(records in proptest::collection::vec(arb_record(), 0..20)) {
            let encoder = encode(&records);
            prop_assert_eq!(encoder.count() as usize, records.len());
            let decoded: Vec<Owned> = decode(encoder.bytes(), encoder.count())
                .map(|r| r.map(owned))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(decoded, records);
        }

        /// Headers added one at a time encode exactly as `push` encodes them.
        #[test]
        fn streamed_headers_encode_as_push(records in proptest::collection::vec(arb_record(), 0..10)) {
            let mut streamed = BatchEncoder::new();
            for (offset, ts, key, value, headers) in &records {
                streamed.start_record(*offset, *ts, key.as_deref(), value.as_deref());
                for (name, value) in headers {
                    streamed.push_header(name, value.as_deref());
                }
            }
            let pushed = encode(&records);
            prop_assert_eq!(streamed.bytes(), pushed.bytes());
            prop_assert_eq!(streamed.count() as usize, records.len());
        }

        #[test]
        fn every_truncation_is_an_error(
            records in proptest::collection::vec(arb_record(), 1..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            let encoder = encode(&records);
            let bytes = encoder.bytes();
            let cut = cut.index(bytes.len());
            prop_assert!(validate(&bytes[..cut], encoder.count()).is_err());
        }

        /// The lean path used for every record and the field-by-field one that
        /// explains errors accept exactly the same records, and read them alike:
        /// on valid batches with any byte changed, cut or not.
        #[test]
        fn the_fast_path_agrees_with_the_checked_one(
            records in proptest::collection::vec(arb_record(), 1..4),
            flip in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let encoder = encode(&records);
            let mut bytes = encoder.bytes().to_vec();
            let at = flip.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            let (mut fast, mut checked) = (Reader { rest: &bytes }, Reader { rest: &bytes });
            loop {
                let a = fast.record_fast();
                let b = checked.record_checked(0);
                prop_assert_eq!(a, b.clone().ok());
                if b.is_err() {
                    break;
                }
                prop_assert_eq!(fast.rest.len(), checked.rest.len());
                // What was accepted hands every header out.
                let raw = a.unwrap();
                let mut reader = Reader { rest: raw.headers };
                prop_assert!((0..raw.header_count).all(|_| reader.header_fast().is_some()));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in 0u32..8) {
            // Any outcome is fine as long as it is not a panic, and the iterator ends.
            let n = decode(&bytes, count).take(100).count();
            prop_assert!(n <= count as usize + 1);
        }
    }
}
