//! Zero-copy views over the records of a batch.

use std::fmt;

use crate::wire::{self, RawRecord, WireError};

pub use crate::wire::Headers;

/// A batch of records from one topic-partition, in offset order.
///
/// The records are views into one buffer the host copied in; nothing is copied again.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    topic: &'a str,
    partition: i32,
    count: u32,
    records: &'a [u8],
    /// The records, when they were decoded while being checked (see
    /// [`Batch::decode_into`]): iterating then does not read the buffer again.
    decoded: Option<&'a [RawRecord<'a>]>,
}

impl<'a> Batch<'a> {
    /// Wraps an encoded batch (see [`wire`](crate::wire)) after checking that it holds
    /// exactly `count` well-formed records.
    pub fn from_wire(topic: &'a str, partition: i32, count: u32, records: &'a [u8]) -> Result<Self, WireError> {
        wire::validate(records, count)?;
        Ok(Self { topic, partition, count, records, decoded: None })
    }

    /// [`Batch::from_wire`] that keeps what checking the records decoded in `out`,
    /// so that the batch is read once (the component's entry point, per batch).
    pub(crate) fn decode_into(
        topic: &'a str,
        partition: i32,
        count: u32,
        records: &'a [u8],
        out: &'a mut Vec<RawRecord<'a>>,
    ) -> Result<Self, WireError> {
        out.clear();
        out.reserve(count as usize);
        for record in wire::decode(records, count) {
            out.push(record?);
        }
        Ok(Self { topic, partition, count, records, decoded: Some(out) })
    }

    /// The topic every record of the batch comes from.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The partition every record of the batch comes from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records, in offset order.
    pub fn iter(&self) -> Records<'a> {
        let source = match self.decoded {
            Some(decoded) => Source::Decoded(decoded.iter()),
            None => Source::Wire(wire::decode(self.records, self.count)),
        };
        Records { topic: self.topic, partition: self.partition, source, remaining: self.count }
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("len", &self.count)
            .finish_non_exhaustive()
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = Record<'a>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterator over the records of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    topic: &'a str,
    partition: i32,
    source: Source<'a>,
    remaining: u32,
}

/// Where a batch's records come from: decoded already, or read from the buffer.
#[derive(Debug, Clone)]
enum Source<'a> {
    Decoded(std::slice::Iter<'a, RawRecord<'a>>),
    Wire(wire::Records<'a>),
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let next = match &mut self.source {
            Source::Decoded(records) => records.next().copied().map(Ok),
            Source::Wire(records) => records.next(),
        };
        let raw = match next {
            Some(Ok(raw)) => raw,
            // `Batch::from_wire` validated the buffer, so this is unreachable; it is
            // still a clean panic rather than a wild read.
            Some(Err(e)) => panic!("ferry-sdk: {e}"),
            None => panic!("ferry-sdk: batch ended early"),
        };
        Some(Record { topic: self.topic, partition: self.partition, raw })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// One input record: a view into the batch buffer.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    topic: &'a str,
    partition: i32,
    raw: RawRecord<'a>,
}

impl<'a> Record<'a> {
    /// The topic the record was read from.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.raw.offset
    }

    /// The record's timestamp in milliseconds since the Unix epoch, if it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.raw.timestamp_ms
    }

    /// The key, or `None` for a record without a key (distinct from an empty key).
    pub fn key(&self) -> Option<&'a [u8]> {
        self.raw.key
    }

    /// The value, or `None` for a tombstone (distinct from an empty value).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.raw.value
    }

    /// The headers as `(name, value)` pairs, in the order they were produced.
    /// Names may repeat.
    ///
    /// A processor that reads headers imports the host's `headers` capability, and
    /// only then does the host put headers in its batches.
    pub fn headers(&self) -> Headers<'a> {
        #[cfg(target_arch = "wasm32")]
        ask_for_headers();
        self.raw.headers()
    }

    /// The value of the first header called `name`, or `None` if there is no such
    /// header or its value is absent.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).and_then(|(_, value)| value)
    }
}

/// Calls the host's `headers.enabled` once per instance: the call is what makes the
/// component import `headers`, which is what makes the host send them.
#[cfg(target_arch = "wasm32")]
fn ask_for_headers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ASKED: AtomicBool = AtomicBool::new(false);
    if !ASKED.swap(true, Ordering::Relaxed) {
        let enabled = crate::__bindings::ferry::processor::headers::enabled();
        debug_assert!(enabled, "the host imports headers but sends none");
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.raw.offset)
            .field("timestamp_ms", &self.raw.timestamp_ms)
            .field("key", &self.raw.key)
            .field("value", &self.raw.value)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::BatchEncoder;

    /// The entry point's batch (decoded while checked) reads as the buffer does, and
    /// refuses what `from_wire` refuses.
    #[test]
    fn a_decoded_batch_reads_as_the_buffer() {
        let mut encoder = BatchEncoder::new();
        encoder.push(10, Some(99), Some(b"k1"), Some(b"v1"), [("a", Some(&b"1"[..])), ("b", None)]);
        encoder.push(12, None, None, None, []);
        let bytes = encoder.bytes();
        let mut out = Vec::new();
        let decoded = Batch::decode_into("t", 3, 2, bytes, &mut out).unwrap();
        let read = Batch::from_wire("t", 3, 2, bytes).unwrap();
        type Header<'a> = (&'a str, Option<&'a [u8]>);
        fn view<'a>(batch: &Batch<'a>) -> Vec<(&'a str, i32, RawRecord<'a>, Vec<Header<'a>>)> {
            batch.iter().map(|r| (r.topic(), r.partition(), r.raw, r.headers().collect())).collect()
        }
        assert_eq!(view(&decoded), view(&read));
        assert_eq!(decoded.iter().len(), 2);
        for (count, cut) in [(3, bytes.len()), (1, bytes.len()), (2, bytes.len() - 1)] {
            let mut out = Vec::new();
            assert!(Batch::decode_into("t", 3, count, &bytes[..cut], &mut out).is_err());
            assert!(Batch::from_wire("t", 3, count, &bytes[..cut]).is_err());
        }
    }

    #[test]
    fn views_read_the_buffer() {
        let mut encoder = BatchEncoder::new();
        encoder.push(
            10,
            Some(99),
            Some(b"k1"),
            Some(b"v1"),
            [("a", Some(&b"1"[..])), ("b", None), ("a", Some(&b"2"[..]))],
        );
        encoder.push(12, None, None, None, []);
        let batch = Batch::from_wire("t", 3, encoder.count(), encoder.bytes()).unwrap();
        assert_eq!(batch.topic(), "t");
        assert_eq!(batch.partition(), 3);
        assert_eq!(batch.len(), 2);
        assert!(!batch.is_empty());

        let records: Vec<_> = batch.iter().collect();
        assert_eq!(batch.iter().len(), 2);
        let first = records[0];
        assert_eq!(first.topic(), "t");
        assert_eq!(first.partition(), 3);
        assert_eq!(first.offset(), 10);
        assert_eq!(first.timestamp_ms(), Some(99));
        assert_eq!(first.key(), Some(&b"k1"[..]));
        assert_eq!(first.value(), Some(&b"v1"[..]));
        assert_eq!(first.header("a"), Some(&b"1"[..]));
        assert_eq!(first.header("b"), None);
        assert_eq!(first.header("zz"), None);
        assert_eq!(first.headers().count(), 3);
        assert!(format!("{first:?}").contains("offset: 10"));

        let second = records[1];
        assert_eq!(second.offset(), 12);
        assert_eq!(second.timestamp_ms(), None);
        assert_eq!(second.key(), None);
        assert_eq!(second.value(), None);
        assert_eq!(second.headers().next(), None);
        assert_eq!((&batch).into_iter().map(|r| r.offset()).sum::<i64>(), 22);
    }

    #[test]
    fn corrupt_buffers_are_refused() {
        let mut encoder = BatchEncoder::new();
        encoder.push(1, None, Some(b"key"), None, []);
        let bytes = encoder.bytes();
        assert!(Batch::from_wire("t", 0, 2, bytes).is_err());
        assert!(Batch::from_wire("t", 0, 0, bytes).is_err());
        assert!(Batch::from_wire("t", 0, 1, &bytes[..bytes.len() - 1]).is_err());
        let empty = Batch::from_wire("t", 0, 0, &[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.iter().next().map(|r| r.offset()), None);
    }
}
