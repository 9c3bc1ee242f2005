//! Sample records as JSON lines: what `ferry test` and `ferry dev` read, and the form
//! in which both print records, so that a line of output is a line of input for the
//! next processor.
//!
//! One JSON object per line (blank lines are skipped):
//!
//! ```json
//! {"key": "k1", "value": "hello", "headers": {"trace": "abc"}, "partition": 0, "offset": 7, "timestamp": 1735689600000}
//! ```
//!
//! | field | what it holds | when left out |
//! | --- | --- | --- |
//! | `key`, `value` | a string (its UTF-8 bytes), `null`, `{"base64": "..."}` for any bytes, or `{"json": ...}` for JSON written compactly | absent (a record without a value is a tombstone) |
//! | `headers` | `{"name": value, ...}` (in name order) or `[["name", value], ...]` (in this order, names may repeat); values as for `value` | none |
//! | `partition` | the input partition | 0 |
//! | `offset` | the record's offset; must grow within a partition | one past the partition's previous record (0 first) |
//! | `timestamp` | milliseconds since the Unix epoch | none |
//! | `topic` | the input topic | the pipeline's first input |

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

/// The fields a line may have.
const FIELDS: &str = "topic, key, value, headers, partition, offset, timestamp";

/// One sample record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SampleRecord {
    /// The line it was read from (1-based).
    pub line: usize,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms, if any.
    pub timestamp_ms: Option<i64>,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value, if any.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads sample records from `path`; records without a topic get `default_topic`.
pub(crate) fn read(path: &Path, default_topic: &str) -> anyhow::Result<Vec<SampleRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read sample records {}", path.display()))?;
    parse(&text, default_topic).with_context(|| format!("{} is not valid sample input", path.display()))
}

/// Parses JSON lines of sample records.
pub(crate) fn parse(text: &str, default_topic: &str) -> anyhow::Result<Vec<SampleRecord>> {
    let mut records: Vec<SampleRecord> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let mut record = parse_line(line, number, default_topic).with_context(|| format!("line {number}"))?;
        let previous = records.iter().rev().find(|r| r.topic == record.topic && r.partition == record.partition);
        match (record.offset, previous) {
            (-1, previous) => record.offset = previous.map_or(0, |p| p.offset + 1),
            (offset, Some(previous)) if offset <= previous.offset => anyhow::bail!(
                "line {number}: offset {offset} does not follow offset {} of line {} in {}[{}]: offsets grow \
                 within a partition",
                previous.offset,
                previous.line,
                record.topic,
                record.partition
            ),
            _ => {}
        }
        records.push(record);
    }
    if records.is_empty() {
        anyhow::bail!("no records: write one JSON object per line, with any of the fields {FIELDS}");
    }
    Ok(records)
}

fn parse_line(line: &str, number: usize, default_topic: &str) -> anyhow::Result<SampleRecord> {
    let value: Value = serde_json::from_str(line).context("not a JSON object")?;
    let Value::Object(fields) = value else { anyhow::bail!("expected a JSON object, got {}", kind(&value)) };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.split(", ").any(|f| f == k.as_str())) {
        anyhow::bail!("unknown field `{unknown}` (the fields are {FIELDS})");
    }
    let topic = match fields.get("topic") {
        None | Some(Value::Null) => default_topic.to_owned(),
        Some(Value::String(topic)) if !topic.is_empty() => topic.clone(),
        Some(other) => anyhow::bail!("`topic`: expected a topic name, got {}", kind(other)),
    };
    let int = |field: &str| -> anyhow::Result<Option<i64>> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
            Some(other) => anyhow::bail!("`{field}`: expected a whole number, got {}", kind(other)),
        }
    };
    let partition = match int("partition")? {
        None => 0,
        Some(p) => i32::try_from(p).ok().filter(|p| *p >= 0).context("`partition`: expected 0 or more")?,
    };
    let offset = match int("offset")? {
        None => -1,
        Some(o) if o >= 0 => o,
        Some(o) => anyhow::bail!("`offset`: expected 0 or more, got {o}"),
    };
    let headers = match fields.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, v)| Ok((name.clone(), field_bytes(v, &format!("headers.{name}"))?)))
            .collect::<anyhow::Result<_>>()?,
        Some(Value::Array(pairs)) => pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(name), v]) => Ok((name.clone(), field_bytes(v, &format!("headers[{i}]"))?)),
                _ => anyhow::bail!("`headers[{i}]`: expected a [\"name\", value] pair"),
            })
            .collect::<anyhow::Result<_>>()?,
        Some(other) => {
            anyhow::bail!("`headers`: expected an object or a list of [name, value] pairs, got {}", kind(other))
        }
    };
    Ok(SampleRecord {
        line: number,
        topic,
        partition,
        offset,
        timestamp_ms: int("timestamp")?,
        key: fields.get("key").map_or(Ok(None), |v| field_bytes(v, "key"))?,
        value: fields.get("value").map_or(Ok(None), |v| field_bytes(v, "value"))?,
        headers,
    })
}

/// The bytes a field's JSON value stands for.
pub(crate) fn field_bytes(value: &Value, field: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let expected = "a string, null, {\"base64\": \"...\"} or {\"json\": ...}";
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.as_bytes().to_vec())),
        Value::Object(map) if map.len() == 1 => match map.iter().next() {
            Some((tag, Value::String(encoded))) if tag == "base64" => BASE64
                .decode(encoded.trim())
                .map(Some)
                .with_context(|| format!("`{field}`: not valid base64 (standard alphabet, with padding)")),
            Some((tag, json)) if tag == "json" => Ok(Some(json.to_string().into_bytes())),
            _ => anyhow::bail!("`{field}`: expected {expected}"),
        },
        other => anyhow::bail!("`{field}`: expected {expected}, got {}", kind(other)),
    }
}

/// How a JSON value is named in an error ("a number", "a list", ...).
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `bytes` as a sample-record field: a JSON string when it is UTF-8, `null` when
/// absent, else `{"base64":"..."}`.
pub(crate) fn bytes_json(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_owned()).to_string(),
            Err(_) => {
                let mut map = Map::new();
                map.insert("base64".to_owned(), Value::String(BASE64.encode(bytes)));
                Value::Object(map).to_string()
            }
        },
    }
}

/// A record as one JSON line, fields in a fixed order: `topic`, then those of
/// `position` (`partition`, `offset`, `timestamp`) that are given, `key`, `value`,
/// and `headers` when there are any.
pub(crate) fn record_json<'a>(
    topic: &str,
    position: &[(&str, Option<i64>)],
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> String {
    let mut line = format!("{{\"topic\":{}", Value::String(topic.to_owned()));
    for (name, number) in position {
        if let Some(number) = number {
            let _ = write!(line, ",\"{name}\":{number}");
        }
    }
    let _ = write!(line, ",\"key\":{},\"value\":{}", bytes_json(key), bytes_json(value));
    let headers: Vec<String> = headers
        .into_iter()
        .map(|(name, value)| format!("[{},{}]", Value::String(name.to_owned()), bytes_json(value)))
        .collect();
    if !headers.is_empty() {
        let _ = write!(line, ",\"headers\":[{}]", headers.join(","));
    }
    line.push('}');
    line
}

impl SampleRecord {
    /// The record as a JSON line of sample input.
    pub(crate) fn to_json(&self) -> String {
        record_json(
            &self.topic,
            &[
                ("partition", Some(self.partition.into())),
                ("offset", Some(self.offset)),
                ("timestamp", self.timestamp_ms),
            ],
            self.key.as_deref(),
            self.value.as_deref(),
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_its_defaults() {
        let text = r#"
{"key": "k1", "value": "hello"}

{"value": {"base64": "AAH/"}, "headers": {"b": "2", "a": null}, "timestamp": 5}
{"key": null, "value": null, "partition": 1, "offset": 10}
{"topic": "other", "value": {"json": {"id": 1, "tags": ["x"]}}, "headers": [["t", "1"], ["t", {"base64": "AA=="}]]}
{"partition": 1}
"#;
        let records = parse(text, "in").unwrap();
        let positions: Vec<_> = records.iter().map(|r| (r.line, r.topic.as_str(), r.partition, r.offset)).collect();
        assert_eq!(
            positions,
            [(2, "in", 0, 0), (4, "in", 0, 1), (5, "in", 1, 10), (6, "other", 0, 0), (7, "in", 1, 11)]
        );
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[1].value.as_deref(), Some(&[0, 1, 255][..]));
        assert_eq!(records[1].headers, [("a".to_owned(), None), ("b".to_owned(), Some(b"2".to_vec()))]);
        assert_eq!(records[1].timestamp_ms, Some(5));
        assert_eq!((records[2].key.as_ref(), records[2].value.as_ref()), (None, None));
        assert_eq!(records[3].value.as_deref(), Some(&br#"{"id":1,"tags":["x"]}"#[..]));
        assert_eq!(records[3].headers, [("t".to_owned(), Some(b"1".to_vec())), ("t".to_owned(), Some(vec![0]))]);
    }

    #[test]
    fn printed_records_read_back_the_same() {
        let text = r#"{"topic":"in","partition":2,"offset":3,"timestamp":9,"key":"k","value":{"base64":"/w=="},"headers":[["h",null],["h","\n"]]}"#;
        let records = parse(text, "x").unwrap();
        assert_eq!(records[0].to_json(), text);
        assert_eq!(parse(&records[0].to_json(), "x").unwrap(), records);
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text, "in").unwrap_err())
    }

    #[test]
    fn bad_input_says_which_line_and_field() {
        assert_eq!(error("{\"vaule\": \"x\"}"), format!("line 1: unknown field `vaule` (the fields are {FIELDS})"));
        assert!(
            error("{\"key\": 1}").starts_with("line 1: `key`: expected a string, null"),
            "{}",
            error("{\"key\": 1}")
        );
        assert!(error("not json").starts_with("line 1: not a JSON object"));
        assert_eq!(error("[1]"), "line 1: expected a JSON object, got a list");
        assert!(error("{\"value\": {\"base64\": \"!!\"}}").starts_with("line 1: `value`: not valid base64"));
        assert_eq!(error("{\"partition\": -1}"), "line 1: `partition`: expected 0 or more");
        assert_eq!(
            error("{\"offset\": 5}\n{\"offset\": 5}"),
            "line 2: offset 5 does not follow offset 5 of line 1 in in[0]: offsets grow within a partition"
        );
        assert_eq!(error("{\"headers\": [[\"a\"]]}"), "line 1: `headers[0]`: expected a [\"name\", value] pair");
        assert!(error("\n\n").starts_with("no records"));
    }
}
