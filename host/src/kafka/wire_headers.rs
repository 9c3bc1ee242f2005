//! A record's headers read straight from the bytes the broker sent (the Kafka record
//! format v2: a varint count, then per header a varint name length, the name, a
//! varint value length, -1 for null, and the value; varints are zigzag-encoded).
//!
//! librdkafka parses these into a list it allocates per record (a shadow buffer, the
//! list, a copy of every name and value) and frees again: as much work per record as
//! the rest of a plain consumer loop. Walking the bytes in place costs a few varint
//! reads per header. The walk accepts exactly what librdkafka's parse accepts, and a
//! malformed header section yields no headers at all, as librdkafka's does. A name
//! is cut at its first NUL byte, as librdkafka's API gives it (a C string).

/// What librdkafka refuses as a header count.
const MAX_HEADERS: i64 = 100_000;

/// Why a header section could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Calls `visit` with every header's name and value (`None` for a null value), in
/// order, or with none if the section is malformed.
pub(crate) fn for_each(raw: &[u8], mut visit: impl FnMut(&[u8], Option<&[u8]>)) -> Result<(), Malformed> {
    // Checked whole first, so a bad section is all-or-nothing like librdkafka's.
    walk(raw, |_, _| {})?;
    walk(raw, &mut visit)
}

fn walk<'a>(raw: &'a [u8], mut visit: impl FnMut(&'a [u8], Option<&'a [u8]>)) -> Result<(), Malformed> {
    if raw.is_empty() {
        return Ok(());
    }
    let mut rest = raw;
    let count = varint(&mut rest)?;
    if count > MAX_HEADERS {
        return Err(Malformed);
    }
    for _ in 0..count.max(0) {
        let name_len = varint(&mut rest)?;
        let name = take(&mut rest, name_len)?;
        let name = name.iter().position(|&b| b == 0).map_or(name, |nul| &name[..nul]);
        let value = match varint(&mut rest)? {
            -1 => None,
            len => Some(take(&mut rest, len)?),
        };
        visit(name, value);
    }
    Ok(())
}

/// Reads a zigzag varint of at most 64 bits.
fn varint(rest: &mut &[u8]) -> Result<i64, Malformed> {
    let mut unsigned: u64 = 0;
    for (index, &byte) in rest.iter().enumerate().take(10) {
        unsigned |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *rest = &rest[index + 1..];
            return Ok((unsigned >> 1) as i64 ^ -((unsigned & 1) as i64));
        }
    }
    Err(Malformed)
}

/// Takes `len` bytes (a negative length is malformed).
fn take<'a>(rest: &mut &'a [u8], len: i64) -> Result<&'a [u8], Malformed> {
    let len = usize::try_from(len).map_err(|_| Malformed)?;
    if len > rest.len() {
        return Err(Malformed);
    }
    let (taken, after) = rest.split_at(len);
    *rest = after;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Header = (Vec<u8>, Option<Vec<u8>>);

    /// Encodes `headers` as the record format does.
    fn encode(headers: &[Header]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, headers.len() as i64);
        for (name, value) in headers {
            put_varint(&mut out, name.len() as i64);
            out.extend_from_slice(name);
            match value {
                None => put_varint(&mut out, -1),
                Some(value) => {
                    put_varint(&mut out, value.len() as i64);
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    fn put_varint(out: &mut Vec<u8>, n: i64) {
        let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push(zigzag as u8 | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }

    fn read(raw: &[u8]) -> Result<Vec<Header>, Malformed> {
        let mut seen = Vec::new();
        for_each(raw, |name, value| seen.push((name.to_vec(), value.map(<[u8]>::to_vec))))?;
        Ok(seen)
    }

    fn headers() -> impl Strategy<Value = Vec<Header>> {
        prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..20), prop::option::of(prop::collection::vec(any::<u8>(), 0..200))),
            0..12,
        )
    }

    proptest! {
        /// Names come back cut at their first NUL byte, as librdkafka gives them.
        #[test]
        fn reads_back_what_was_encoded(headers in headers()) {
            let expected: Vec<Header> = headers
                .iter()
                .map(|(name, value)| (name.split(|&b| b == 0).next().unwrap_or_default().to_vec(), value.clone()))
                .collect();
            prop_assert_eq!(read(&encode(&headers)).unwrap(), expected);
        }

        /// A section cut anywhere (a truncated record) yields nothing, never part.
        #[test]
        fn a_cut_section_yields_no_headers(headers in headers().prop_filter("some", |h| !h.is_empty()), cut in any::<prop::sample::Index>()) {
            let raw = encode(&headers);
            let cut = 1 + cut.index(raw.len() - 1);
            let mut visited = 0;
            prop_assert_eq!(for_each(&raw[..cut], |_, _| visited += 1), Err(Malformed));
            prop_assert_eq!(visited, 0);
        }
    }

    #[test]
    fn an_empty_or_non_positive_count_is_no_headers() {
        assert_eq!(read(&[]), Ok(vec![]));
        assert_eq!(read(&encode(&[])), Ok(vec![]));
        let mut minus_one = Vec::new();
        put_varint(&mut minus_one, -1);
        assert_eq!(read(&minus_one), Ok(vec![]));
    }

    #[test]
    fn hostile_lengths_are_malformed() {
        let mut huge_count = Vec::new();
        put_varint(&mut huge_count, MAX_HEADERS + 1);
        assert_eq!(read(&huge_count), Err(Malformed));
        // A name length below zero, and a value length below -1.
        for (name_len, value_len) in [(-2, 0), (1, -2)] {
            let mut raw = Vec::new();
            put_varint(&mut raw, 1);
            put_varint(&mut raw, name_len);
            raw.push(b'a');
            put_varint(&mut raw, value_len);
            assert_eq!(read(&raw), Err(Malformed), "{name_len} {value_len}");
        }
        // A varint that never ends.
        assert_eq!(read(&[0xff; 11]), Err(Malformed));
    }
}
