//! Keyed state as a JSON document: the initial state `ferry test --state` reads and
//! the state `ferry test --state-out` and `ferry dev` write.
//!
//! One object, its members the input partitions (as decimal strings), each holding
//! that partition's entries:
//!
//! ```json
//! {"0": {"k1": "hello", "k2": {"base64": "AQAAAAAAAAA="}, "k3": {"json": {"n": 1}}},
//!  "1": [[{"base64": "/w=="}, "v"]]}
//! ```
//!
//! Entries are an object of key → value when every key is UTF-8 text, or a list of
//! `[key, value]` pairs, which also takes keys of any bytes. Keys and values are
//! written as the fields of sample records are: a string for its UTF-8 bytes,
//! `{"base64": "..."}` for any bytes, `{"json": ...}` for JSON written compactly.
//! Written documents use a string when the bytes are UTF-8 and base64 otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};

use super::records;
use crate::sandbox::capability::state::charge;
use crate::sandbox::{PartitionStore, StateLimits};

/// The state of each input partition that has any.
pub(crate) type States = BTreeMap<i32, PartitionStore>;

/// Reads a state document from `path`, checked against `limits`.
pub(crate) fn read(path: &Path, limits: &StateLimits) -> anyhow::Result<States> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read the state file {}", path.display()))?;
    parse(&text, limits).with_context(|| format!("{} is not a valid state file", path.display()))
}

/// Parses a state document; an entry past one of `limits` is an error, as the
/// guest's write of it would be.
pub(crate) fn parse(text: &str, limits: &StateLimits) -> anyhow::Result<States> {
    let document: Value = serde_json::from_str(text).context("not JSON")?;
    let Value::Object(partitions) = document else {
        bail!("expected an object whose members are partitions (\"0\": {{...}}), got {}", records::kind(&document))
    };
    let mut states = States::new();
    for (name, entries) in partitions {
        let partition: i32 =
            name.parse().ok().filter(|p| *p >= 0).with_context(|| format!("`{name}`: not a partition number"))?;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = match entries {
            Value::Object(map) => map
                .into_iter()
                .map(|(key, value)| Ok((key.clone().into_bytes(), bytes(&value, &format!("{name}.{key}"))?)))
                .collect::<anyhow::Result<_>>()?,
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                    Some([key, value]) => {
                        let at = format!("{name}[{i}]");
                        Ok((bytes(key, &format!("{at} key"))?, bytes(value, &format!("{at} value"))?))
                    }
                    _ => bail!("`{name}[{i}]`: expected a [key, value] pair"),
                })
                .collect::<anyhow::Result<_>>()?,
            other => {
                bail!(
                    "`{name}`: expected an object of key → value or a list of [key, value], got {}",
                    records::kind(&other)
                )
            }
        };
        let store = states.entry(partition).or_default();
        for (key, value) in pairs {
            let shown = records::bytes_json(Some(&key));
            if key.len() > limits.max_key_bytes {
                bail!("partition {partition}, key {shown}: longer than the limit of {} bytes", limits.max_key_bytes);
            }
            if value.len() > limits.max_value_bytes {
                bail!(
                    "partition {partition}, key {shown}: value longer than the limit of {} bytes",
                    limits.max_value_bytes
                );
            }
            if store.bytes() + charge(&key, &value) > limits.partition_bytes {
                bail!("partition {partition}: more state than its limit of {} bytes", limits.partition_bytes);
            }
            store.apply(key, Some(value));
        }
    }
    Ok(states)
}

fn bytes(value: &Value, at: &str) -> anyhow::Result<Vec<u8>> {
    match records::field_bytes(value, at)? {
        Some(bytes) => Ok(bytes),
        None => bail!("`{at}`: null is no value (leave the key out instead)"),
    }
}

/// `states` as a document, one partition per line (partitions without keys left
/// out), which [`parse`] reads back the same.
pub(crate) fn render(states: &States) -> String {
    let mut lines = Vec::new();
    for (partition, store) in states.iter().filter(|(_, s)| s.keys() > 0) {
        let text_keys = store.entries().all(|(k, _)| std::str::from_utf8(k).is_ok());
        let entries = if text_keys {
            let map: Map<String, Value> =
                store.entries().map(|(k, v)| (String::from_utf8(k.to_vec()).expect("checked"), value_of(v))).collect();
            Value::Object(map)
        } else {
            Value::Array(store.entries().map(|(k, v)| Value::Array(vec![value_of(k), value_of(v)])).collect())
        };
        lines.push(format!("{}: {entries}", Value::String(partition.to_string())));
    }
    if lines.is_empty() { "{}\n".to_owned() } else { format!("{{\n{}\n}}\n", lines.join(",\n")) }
}

fn value_of(bytes: &[u8]) -> Value {
    serde_json::from_str(&records::bytes_json(Some(bytes))).expect("bytes_json writes JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_every_encoding_and_back() {
        let text = r#"{"0": {"a": "1", "b": {"base64": "AQI="}, "c": {"json": {"n": 1}}}, "3": [[{"base64": "/w=="}, "x"]], "4": {}}"#;
        let states = parse(text, &StateLimits::default()).unwrap();
        let entries = |p| states[&p].entries().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>();
        assert_eq!(
            entries(0),
            [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![1, 2]), (b"c".to_vec(), br#"{"n":1}"#.to_vec())]
        );
        assert_eq!(entries(3), [(vec![0xff], b"x".to_vec())]);
        let written = render(&states);
        assert_eq!(
            written,
            "{\n\"0\": {\"a\":\"1\",\"b\":\"\\u0001\\u0002\",\"c\":\"{\\\"n\\\":1}\"},\n\"3\": [[{\"base64\":\"/w==\"},\"x\"]]\n}\n"
        );
        let again = parse(&written, &StateLimits::default()).unwrap();
        assert_eq!(again[&0], states[&0]);
        assert_eq!(again[&3], states[&3]);
        assert_eq!(render(&States::new()), "{}\n");
    }

    #[test]
    fn bad_documents_and_entries_past_the_limits_say_where() {
        let limits = StateLimits { partition_bytes: 300, max_key_bytes: 4, max_value_bytes: 4, writes_per_batch: 1 };
        let error = |text: &str| format!("{:#}", parse(text, &limits).unwrap_err());
        assert!(error("[]").starts_with("expected an object whose members are partitions"));
        assert_eq!(error(r#"{"x": {}}"#), "`x`: not a partition number");
        assert_eq!(error(r#"{"0": {"k": null}}"#), "`0.k`: null is no value (leave the key out instead)");
        assert_eq!(error(r#"{"0": [["k"]]}"#), "`0[0]`: expected a [key, value] pair");
        assert_eq!(error(r#"{"0": {"kkkkk": "v"}}"#), "partition 0, key \"kkkkk\": longer than the limit of 4 bytes");
        assert_eq!(error(r#"{"0": {"k": "vvvvv"}}"#), "partition 0, key \"k\": value longer than the limit of 4 bytes");
        assert_eq!(
            error(r#"{"0": {"a": "1", "b": "2", "c": "3"}}"#),
            "partition 0: more state than its limit of 300 bytes"
        );
    }
}
