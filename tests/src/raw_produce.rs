//! Record batches written with a hand-made Produce request: a corrupt one (what a
//! broker disk error or a buggy producer leaves in a log), one in a format no client
//! knows, and records no client library will write on purpose, such as a header name
//! that is not UTF-8. The embedded broker stores batches as they come.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

/// Appends one record batch (one record with `value`) whose CRC is wrong to
/// `topic`/`partition` on the broker at `address` (`host:port`, the partition's
/// leader), and waits for the broker's answer.
pub fn produce_corrupt_batch(address: &str, topic: &str, partition: i32, value: &[u8]) {
    send_batch(address, topic, partition, &record_batch(value, &[], Some(0xdead_beef)));
}

/// Appends, in one request (so that a broker sends them together, even the embedded
/// one, which answers a fetch with one request's batches), a batch of one record
/// with `value` at offset `first` whose CRC is wrong, then one well-formed batch per
/// value of `after` (offsets `first + 1` on).
pub fn produce_corrupt_batch_then(
    address: &str,
    topic: &str,
    partition: i32,
    first: i64,
    value: &[u8],
    after: &[&[u8]],
) {
    let mut request = batch_of(value, &[], Some(0xdead_beef), 1 + after.len() as i32);
    for (i, value) in after.iter().enumerate() {
        let mut batch = record_batch(value, &[], None);
        batch[..8].copy_from_slice(&(first + 1 + i as i64).to_be_bytes());
        request.extend_from_slice(&batch);
    }
    send_batch(address, topic, partition, &request);
}

/// Appends one well-formed record with `value` and one header `name` = `value` given
/// as raw bytes (rdkafka's producer API takes names as `&str`).
pub fn produce_with_raw_header(address: &str, topic: &str, partition: i32, value: &[u8], header: (&[u8], &[u8])) {
    send_batch(address, topic, partition, &record_batch(value, &[header], None));
}

/// Appends one well-formed record with `value` at offset `first`, followed, in the
/// same request, by a record batch in a format no client knows (magic byte 3) that
/// the broker takes to hold offsets `first + 1` to `first + unknown` (the embedded
/// broker counts a request's records from its first batch's header). librdkafka
/// cannot read those records: it says so once (`__NOT_IMPLEMENTED`, at `first + 1`)
/// and moves past the batch; fetched again from inside it, it skips it in silence.
pub fn produce_with_unknown_format_batch(
    address: &str,
    topic: &str,
    partition: i32,
    first: i64,
    value: &[u8],
    unknown: i32,
) {
    let mut request = batch_of(value, &[], None, 1 + unknown);
    let junk = vec![0x5a_u8; 64 * (unknown as usize + 1)];
    request.extend_from_slice(&(first + 1).to_be_bytes()); // base offset
    request.extend_from_slice(&((4 + 1 + junk.len()) as i32).to_be_bytes()); // length
    request.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    request.push(3); // magic: unknown
    request.extend_from_slice(&junk);
    send_batch(address, topic, partition, &request);
}

fn send_batch(address: &str, topic: &str, partition: i32, batch: &[u8]) {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional_id: null
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(&mut body, topic);
    body.extend_from_slice(&1i32.to_be_bytes()); // one partition
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);

    let mut request = Vec::new();
    request.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
    request.extend_from_slice(&3i16.to_be_bytes()); // version 3 (record batches v2)
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string(&mut request, "ferry-tests-raw");
    request.extend_from_slice(&body);

    let mut stream = TcpStream::connect(address).expect("the broker listens");
    stream.write_all(&(request.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(&request).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("the broker answers");
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    // correlation id, topics (1), name, partitions (1), partition, error code
    let name_len = i16::from_be_bytes([answer[8], answer[9]]) as usize;
    let at = 10 + name_len + 4 + 4;
    let error = i16::from_be_bytes([answer[at], answer[at + 1]]);
    assert_eq!(error, 0, "the broker refused the raw batch (error code {error})");
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// CRC-32C (Castagnoli), bit by bit: what a record batch's checksum is.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

/// A v2 record batch of one record with `headers`; its checksum is `crc` if given
/// (a wrong one), the real CRC-32C otherwise.
fn record_batch(value: &[u8], headers: &[(&[u8], &[u8])], crc: Option<u32>) -> Vec<u8> {
    batch_of(value, headers, crc, 1)
}

/// The same, with `count` in the header's record count (a client reads the records
/// that are there; the embedded broker counts offsets by it).
fn batch_of(value: &[u8], headers: &[(&[u8], &[u8])], crc: Option<u32>, count: i32) -> Vec<u8> {
    let mut record = Vec::new();
    record.push(0); // attributes
    varint(&mut record, 0); // timestamp delta
    varint(&mut record, 0); // offset delta
    varint(&mut record, -1); // no key
    varint(&mut record, value.len() as i64);
    record.extend_from_slice(value);
    varint(&mut record, headers.len() as i64);
    for (name, value) in headers {
        varint(&mut record, name.len() as i64);
        record.extend_from_slice(name);
        varint(&mut record, value.len() as i64);
        record.extend_from_slice(value);
    }
    let mut records = Vec::new();
    varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression
    after_crc.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    after_crc.extend_from_slice(&now.to_be_bytes()); // first timestamp
    after_crc.extend_from_slice(&now.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&count.to_be_bytes()); // records
    after_crc.extend_from_slice(&records);

    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset (the broker assigns it)
    let length = 4 + 1 + 4 + after_crc.len(); // leader epoch, magic, crc, the rest
    batch.extend_from_slice(&(length as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.unwrap_or_else(|| crc32c(&after_crc)).to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

#[cfg(test)]
mod tests {
    /// The check value of CRC-32C (RFC 3720).
    #[test]
    fn crc32c_of_the_standard_check_string() {
        assert_eq!(super::crc32c(b"123456789"), 0xe306_9283);
    }
}
