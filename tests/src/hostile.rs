//! What the hostile-tenant suites share (`hostile.rs` for the Rust chaos guest,
//! `polyglot_hostile.rs` for Python and JavaScript): the broker with hostile records
//! at the head of partition 0, the pipeline's config, the memory budget that config
//! implies, and reading the host's admin endpoints and dead letters.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;

use ferry_host::config::Config;

use crate::{Broker, Embedded, Read, produce, read_all};

/// Partitions of the input topic.
pub const PARTITIONS: i32 = 4;
/// Records per partition.
pub const PER_PARTITION: usize = 30;
pub const MIB: u64 = 1 << 20;
/// The host itself (runtime, engine, librdkafka clients, the admin server), measured
/// idle and rounded up generously: the terms of docs/operators.md's memory formula
/// that do not depend on a pipeline's config.
pub const HOST_BASE: u64 = 160 * MIB;

/// Starts a broker with `in` (4 partitions), `out` and `dlq`, and produces
/// `PER_PARTITION` records to each partition: partition 0 starts with `hostile`, in
/// order, everything else is an ordinary record.
pub fn broker_with(hostile: &[&str]) -> (Embedded, String) {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("out", PARTITIONS);
    broker.create_topic("dlq", 1);
    let values: Vec<String> = (0..PARTITIONS as usize * PER_PARTITION)
        .map(|i| match (i % PARTITIONS as usize, i / PARTITIONS as usize) {
            (0, n) if n < hostile.len() => hostile[n].to_owned(),
            _ => format!("fine {i}"),
        })
        .collect();
    produce(&brokers, "in", PARTITIONS, &values);
    (broker, brokers)
}

/// A hostile pipeline's config: 64 MiB of memory, dead letters after two attempts,
/// an admin server for /metrics.
pub struct HostileConfig<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    pub admin_port: u16,
    pub component: &'a Path,
    pub time_per_batch_ms: u64,
    /// The sandbox's artifact cache, if any.
    pub cache: Option<&'a Path>,
    /// More keys of the pipeline.
    pub extra: &'a str,
}

impl HostileConfig<'_> {
    /// The config file's text.
    pub fn text(&self) -> String {
        let sandbox =
            self.cache.map(|cache| format!("[sandbox]\ncache_dir = \"{}\"", cache.display())).unwrap_or_default();
        format!(
            r#"
            brokers = "{brokers}"
            {sandbox}
            [admin]
            listen = "127.0.0.1:{admin_port}"
            [[pipeline]]
            name = "hostile"
            inputs = ["in"]
            group = "{group}"
            component = "{component}"
            batch_size = 10
            max_wait_ms = 10
            output_topics = ["out"]
            commit = {{ policy = "interval", interval_ms = 100 }}
            limits = {{ memory_mib = 64, time_per_batch_ms = {time} }}
            failure = {{ on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 2, backoff_initial_ms = 10 }}
            {extra}
            "#,
            brokers = self.brokers,
            admin_port = self.admin_port,
            group = self.group,
            component = self.component.display(),
            time = self.time_per_batch_ms,
            extra = self.extra,
        )
    }
}

/// What a pipeline with this config can make the host hold, by docs/operators.md:
/// the host, the component's compiled code when it is mapped from the artifact
/// cache (`artifact_bytes`), the guest's memory and as much again for what one of its
/// calls may copy into the host, a batch's outputs twice (the host's copy and
/// librdkafka's), librdkafka's producer and consumer queues (ferry's defaults).
pub fn budget(text: &str, artifact_bytes: u64) -> u64 {
    let config = Config::parse(text).unwrap();
    let p = &config.pipelines[0];
    let queues = 2 * 32 * MIB;
    HOST_BASE + artifact_bytes + 2 * (p.limits.memory_mib << 20) + 2 * p.limits.output_bytes_per_batch as u64 + queues
}

/// The admin server's whole answer (status line, headers, body) to `GET path`.
pub fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin server");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// The dead letters' source offsets, as (partition, offset).
pub fn dead_lettered(brokers: &str) -> BTreeSet<(i32, i64)> {
    let header = |r: &Read, name: &str| -> i64 { r.header(name).unwrap().parse().unwrap() };
    read_all(brokers, "dlq").iter().map(|r| (header(r, "ferry.partition") as i32, header(r, "ferry.offset"))).collect()
}
