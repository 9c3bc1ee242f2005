//! A topic's log as the broker stores it, read with hand-made Fetch requests, and
//! what a `read_committed` reader may see of it, decided here from the transaction
//! markers in the log.
//!
//! The exactly-once tests judge outputs with this rather than with a client
//! library's `read_committed` consumer: that one trusts the broker's list of aborted
//! transactions, and Tansu (the real broker in these tests) writes the markers but
//! sends an empty list, so aborted records would look committed. Here a
//! transactional batch counts only once a COMMIT marker of its producer follows it
//! in the same partition; an ABORT marker, or no marker yet, hides it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{Read, unique};

/// One record of a log, with what the transaction protocol says about it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The record.
    pub read: Read,
    /// The producer that wrote it in a transaction, if it did.
    pub transactional_producer: Option<i64>,
}

/// A control record: the end of a producer's transaction in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The producer.
    pub producer: i64,
    /// COMMIT (true) or ABORT.
    pub commit: bool,
}

/// Everything a partition's log holds, in offset order.
#[derive(Debug, Default)]
pub struct Log {
    /// Data records.
    pub records: Vec<LogRecord>,
    /// Transaction markers.
    pub markers: Vec<Marker>,
}

/// What a `read_committed` reader sees of `topic`: records written outside
/// transactions, and those of committed transactions; in offset order per partition.
pub fn read_committed(brokers: &str, topic: &str) -> Vec<Read> {
    let mut out = Vec::new();
    for (_, log) in read_logs(brokers, topic) {
        out.extend(committed(&log));
    }
    out
}

/// The visible records of one partition's log.
pub fn committed(log: &Log) -> Vec<Read> {
    let (mut visible, ended) = transactions(log);
    for (marker, records) in ended {
        if marker.commit {
            visible.extend(records);
        }
    }
    visible.sort_by_key(|r| r.offset);
    visible
}

/// The transactions one partition's log ended: each marker with the records it
/// closes (its producer's since that producer's previous marker); first, the records
/// written outside transactions. Records of a transaction still open are in neither.
pub fn transactions(log: &Log) -> (Vec<Read>, Vec<(Marker, Vec<Read>)>) {
    // Each record waits for its producer's next marker in the partition.
    let mut events: Vec<(i64, Option<&LogRecord>, Option<&Marker>)> = log
        .records
        .iter()
        .map(|r| (r.read.offset, Some(r), None))
        .chain(log.markers.iter().map(|m| (m.offset, None, Some(m))))
        .collect();
    events.sort_by_key(|e| e.0);
    let mut pending: HashMap<i64, Vec<Read>> = HashMap::new();
    let mut outside = Vec::new();
    let mut ended = Vec::new();
    for (_, record, marker) in events {
        if let Some(record) = record {
            match record.transactional_producer {
                Some(producer) => pending.entry(producer).or_default().push(record.read.clone()),
                None => outside.push(record.read.clone()),
            }
        }
        if let Some(marker) = marker {
            ended.push((*marker, pending.remove(&marker.producer).unwrap_or_default()));
        }
    }
    (outside, ended)
}

/// Every partition's log of `topic`, read to its high watermark.
pub fn read_logs(brokers: &str, topic: &str) -> Vec<(i32, Log)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", unique("raw")).create().expect("client");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let addresses: HashMap<i32, String> =
        metadata.brokers().iter().map(|b| (b.id(), format!("{}:{}", b.host(), b.port()))).collect();
    let topic_metadata = &metadata.topics()[0];
    let mut logs = Vec::new();
    for p in topic_metadata.partitions() {
        let address = &addresses[&p.leader()];
        logs.push((p.id(), read_partition(address, topic, p.id())));
    }
    logs
}

fn read_partition(address: &str, topic: &str, partition: i32) -> Log {
    let mut stream = TcpStream::connect(address).expect("the broker listens");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut log = Log::default();
    let mut offset = 0i64;
    let mut correlation = 0;
    loop {
        correlation += 1;
        let (high_watermark, records) = fetch(&mut stream, correlation, topic, partition, offset);
        let before = offset;
        let mut bytes = &records[..];
        while let Some(batch) = next_batch(&mut bytes) {
            offset = offset.max(batch.parse_into(partition, &mut log));
        }
        if offset >= high_watermark {
            return log;
        }
        assert!(offset > before, "{topic}[{partition}]: no progress at offset {offset} below {high_watermark}");
    }
}

/// One Fetch (v4, read_uncommitted: everything, markers included) from `offset`.
/// Returns the high watermark and the record batches.
fn fetch(stream: &mut TcpStream, correlation: i32, topic: &str, partition: i32, offset: i64) -> (i64, Vec<u8>) {
    let mut request = Vec::new();
    request.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    request.extend_from_slice(&4i16.to_be_bytes()); // version 4
    request.extend_from_slice(&correlation.to_be_bytes());
    string(&mut request, "ferry-tests-raw");
    request.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    request.extend_from_slice(&100i32.to_be_bytes()); // max wait ms
    request.extend_from_slice(&0i32.to_be_bytes()); // min bytes
    request.extend_from_slice(&(16i32 << 20).to_be_bytes()); // max bytes
    request.push(0); // isolation: read_uncommitted
    request.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(&mut request, topic);
    request.extend_from_slice(&1i32.to_be_bytes()); // one partition
    request.extend_from_slice(&partition.to_be_bytes());
    request.extend_from_slice(&offset.to_be_bytes());
    request.extend_from_slice(&(16i32 << 20).to_be_bytes()); // partition max bytes
    stream.write_all(&(request.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(&request).unwrap();

    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("the broker answers the fetch");
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    let mut r = Reader(&answer);
    assert_eq!(r.i32(), correlation, "the answer to this fetch");
    r.i32(); // throttle
    assert_eq!(r.i32(), 1, "one topic");
    r.string();
    assert_eq!(r.i32(), 1, "one partition");
    assert_eq!(r.i32(), partition);
    let error = r.i16();
    assert_eq!(error, 0, "{topic}[{partition}] fetch at {offset}: error code {error}");
    let high_watermark = r.i64();
    r.i64(); // last stable offset
    let aborted = r.i32();
    for _ in 0..aborted.max(0) {
        r.i64();
        r.i64();
    }
    let len = r.i32();
    let records = if len > 0 { r.take(len as usize).to_vec() } else { Vec::new() };
    (high_watermark, records)
}

struct Batch<'a> {
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    producer_id: i64,
    count: i32,
    records: &'a [u8],
}

/// The next complete batch; `None` at the end (or at a batch cut off by the size limit).
fn next_batch<'a>(bytes: &mut &'a [u8]) -> Option<Batch<'a>> {
    if bytes.len() < 12 {
        return None;
    }
    let length = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    if bytes.len() < 12 + length {
        return None;
    }
    let (batch, rest) = bytes.split_at(12 + length);
    *bytes = rest;
    let mut r = Reader(batch);
    let base_offset = r.i64();
    r.i32(); // length
    r.i32(); // partition leader epoch
    assert_eq!(r.take(1)[0], 2, "record batch v2");
    r.i32(); // crc
    let attributes = r.i16();
    assert_eq!(attributes & 0x7, 0, "compressed batches are not read here");
    let last_offset_delta = r.i32();
    r.i64(); // first timestamp
    r.i64(); // max timestamp
    let producer_id = r.i64();
    r.i16(); // producer epoch
    r.i32(); // base sequence
    let count = r.i32();
    Some(Batch { base_offset, attributes, last_offset_delta, producer_id, count, records: r.0 })
}

impl Batch<'_> {
    /// Adds the batch's records (or marker) to `log`; returns the offset after it.
    fn parse_into(&self, partition: i32, log: &mut Log) -> i64 {
        let transactional = self.attributes & 0x10 != 0;
        let control = self.attributes & 0x20 != 0;
        let mut r = Reader(self.records);
        for _ in 0..self.count {
            let length = r.varint() as usize;
            let mut rec = Reader(r.take(length));
            rec.take(1); // attributes
            rec.varint(); // timestamp delta
            let offset = self.base_offset + rec.varint();
            let key = rec.bytes();
            let value = rec.bytes();
            if control {
                let key = key.expect("a control record has a key");
                let kind = i16::from_be_bytes([key[2], key[3]]);
                log.markers.push(Marker { partition, offset, producer: self.producer_id, commit: kind == 1 });
                continue;
            }
            let mut headers = Vec::new();
            for _ in 0..rec.varint() {
                let name = rec.bytes().unwrap_or_default();
                let value = rec.bytes().unwrap_or_default();
                headers.push((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()));
            }
            log.records.push(LogRecord {
                read: Read {
                    partition,
                    offset,
                    key: String::from_utf8_lossy(key.unwrap_or_default()).into_owned(),
                    value: String::from_utf8_lossy(value.unwrap_or_default()).into_owned(),
                    headers,
                },
                transactional_producer: transactional.then_some(self.producer_id),
            });
        }
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> &'a [u8] {
        let len = self.i16();
        self.take(len.max(0) as usize)
    }
    fn varint(&mut self) -> i64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.take(1)[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        ((value >> 1) as i64) ^ -((value & 1) as i64)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.varint();
        (len >= 0).then(|| self.take(len as usize))
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, producer: Option<i64>) -> LogRecord {
        LogRecord {
            read: Read { partition: 0, offset, key: String::new(), value: offset.to_string(), headers: Vec::new() },
            transactional_producer: producer,
        }
    }

    #[test]
    fn only_committed_transactions_and_plain_records_are_visible() {
        let log = Log {
            records: vec![
                record(0, Some(7)),
                record(1, Some(8)),
                record(2, None),
                record(4, Some(7)),
                record(6, Some(8)),
            ],
            markers: vec![
                Marker { partition: 0, offset: 3, producer: 8, commit: false },
                Marker { partition: 0, offset: 5, producer: 7, commit: true },
            ],
        };
        let offsets: Vec<i64> = committed(&log).iter().map(|r| r.offset).collect();
        // 1 aborted; 6 still open.
        assert_eq!(offsets, vec![0, 2, 4]);
    }
}
