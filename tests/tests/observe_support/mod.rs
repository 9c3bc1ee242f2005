//! Helpers shared by the suites of the admin server's read-only endpoints: a host on
//! the embedded broker, a bare HTTP client, and waiting for a condition.

#![allow(dead_code)] // each suite uses its own subset

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Ceiling for any awaited event (a broken build fails here; nothing waits this long
/// when things work).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// Body as text.
    pub body: String,
}

/// `GET path` on `addr`, one connection per request.
pub fn get(addr: SocketAddr, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to the admin server at {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answers are not expected");
    Answer { status, content_type, body: body.to_owned() }
}

/// `GET /api/status` as JSON.
pub fn status(addr: SocketAddr) -> serde_json::Value {
    let answer = get(addr, "/api/status");
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).expect("status JSON")
}

/// Calls `probe` every 50 ms until it returns `Ok`; fails after [`PATIENCE`] with
/// `what` and the last `Err` it returned.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if started.elapsed() > PATIENCE => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Writes `values` to one partition and waits for the broker's acks.
pub fn produce(brokers: &str, topic: &str, partition: i32, values: &[&str]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create().expect("a producer");
    for value in values {
        producer
            .send(BaseRecord::to(topic).partition(partition).key(*value).payload(*value))
            .map_err(|(e, _)| e)
            .expect("record queued");
    }
    producer.flush(Duration::from_secs(30)).expect("records acknowledged");
}

/// `n` values `prefix-0`, `prefix-1`, ...
pub fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A config for one host on `brokers` with its admin server on a free port.
pub fn config(brokers: &str, pipelines: &str) -> ferry_host::config::Config {
    let text = format!("brokers = \"{brokers}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{pipelines}");
    ferry_host::config::Config::parse(&text).expect("a valid config")
}

/// A path for a TOML string.
pub fn toml_path(path: &std::path::Path) -> String {
    path.display().to_string().replace('\\', "\\\\")
}

/// A parsed Prometheus exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> type, from `# TYPE`.
    pub types: std::collections::BTreeMap<String, String>,
    /// Families that have a `# HELP`.
    pub helped: std::collections::BTreeSet<String>,
    /// (sample name, sorted `key=value` labels) -> value.
    pub samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)>,
}

impl Exposition {
    /// Parses `text`, failing on lines the format does not allow.
    pub fn parse(text: &str) -> Self {
        let mut e = Self::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                e.helped.insert(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                e.types.insert(name.to_owned(), kind.to_owned());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line}");
                let (series, value) = line.rsplit_once(' ').expect("a sample value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, labels(rest.strip_suffix('}').expect("closing brace"))),
                    None => (series, Default::default()),
                };
                let value = value.parse().unwrap_or_else(|_| panic!("bad sample value in {line}"));
                e.samples.push((name.to_owned(), labels, value));
            }
        }
        e
    }

    /// Samples named `name` whose labels include all of `with`.
    pub fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<(&std::collections::BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, l, v)| (l, *v))
            .collect()
    }

    /// The one sample named `name` with `with`, if exactly one.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, with).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

fn labels(mut text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escaped character").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.to_owned(), value);
        text = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    out
}
