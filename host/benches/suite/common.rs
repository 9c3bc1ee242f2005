//! Helpers shared by the sections: timing, statistics, resident memory, and an
//! embedded broker with pre-filled topics.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::kafka::output::send_when_room;
use rdkafka::ClientConfig;
use rdkafka::bindings as rd;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The `q` quantile (0..=1) of `values` (which it sorts), nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    assert!(!values.is_empty(), "quantile of nothing");
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() - 1) as f64 * q).round() as usize;
    values[rank]
}

/// Runs `f` `iters` times and returns the mean nanoseconds per call.
pub fn ns_per_call(iters: usize, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iters {
        f();
    }
    black_box(());
    started.elapsed().as_nanos() as f64 / iters as f64
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`, ...) or as a count
/// (`Threads`).
pub fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Builds a guest crate of the workspace (profile `guest`).
pub fn guest(package: &str) -> anyhow::Result<PathBuf> {
    ferry_host::devtools::build_guest(package)
}

/// A TOML string literal for a path.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A name no other run of this process uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The shape of the records a benchmark produces and feeds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Value bytes.
    pub value_len: usize,
}

/// Header name every record carries.
pub const HEADER_NAME: &str = "trace-id";

/// The key, value and header value of record `i`.
pub fn record(shape: Shape, i: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let key = format!("key-{i:08}").into_bytes();
    let value: Vec<u8> = (0..shape.value_len).map(|j| b'a' + ((i as usize + j) % 26) as u8).collect();
    let header = format!("{i:016x}").into_bytes();
    (key, value, header)
}

/// librdkafka's mock cluster, created through a producer that also fills its topics.
pub struct Broker {
    producer: ThreadedProducer<DefaultProducerContext>,
    brokers: String,
}

impl Broker {
    /// A one-broker mock cluster whose consumer groups form without the default
    /// 3 s initial rebalance delay (every run joins a fresh group).
    pub fn start() -> anyhow::Result<Self> {
        Self::with_initial_rebalance_delay(0)
    }

    /// A one-broker mock cluster whose new groups wait `delay_ms` for more members
    /// before their first assignment, as Kafka's `group.initial.rebalance.delay.ms`
    /// (3 s by default) does: members that start together share the first one.
    pub fn with_initial_rebalance_delay(delay_ms: i32) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .context("failed to start the embedded broker")?;
        let brokers = producer.client().mock_cluster().context("the producer has no mock cluster")?.bootstrap_servers();
        // SAFETY: the producer owns the mock cluster and outlives this call; the
        // function only sets a default of the cluster.
        unsafe {
            let handle = rd::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
            if handle.is_null() {
                bail!("the producer has no mock cluster");
            }
            rd::rd_kafka_mock_group_initial_rebalance_delay_ms(handle, delay_ms);
        }
        Ok(Self { producer, brokers })
    }

    /// Bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let cluster = self.producer.client().mock_cluster().context("no mock cluster")?;
        cluster.create_topic(topic, partitions, 1).with_context(|| format!("failed to create topic {topic}"))?;
        Ok(())
    }

    /// Creates `topic` with `partitions` partitions and writes `per_partition`
    /// records of `shape` to each.
    pub fn fill(&self, topic: &str, partitions: i32, per_partition: u64, shape: Shape) -> anyhow::Result<()> {
        self.create(topic, partitions)?;
        self.produce(topic, partitions, per_partition, shape)?;
        self.flush()
    }

    /// Queues `per_partition` records of `shape` to each partition of `topic`.
    pub fn produce(&self, topic: &str, partitions: i32, per_partition: u64, shape: Shape) -> anyhow::Result<()> {
        for i in 0..per_partition * partitions as u64 {
            let (key, value, header) = record(shape, i);
            let headers = OwnedHeaders::new().insert(Header { key: HEADER_NAME, value: Some(&header) });
            let message = BaseRecord::to(topic)
                .partition((i % partitions as u64) as i32)
                .key(&key)
                .payload(&value)
                .headers(headers);
            send_when_room(&self.producer, message)
                .map_err(|(error, _)| error)
                .with_context(|| format!("failed to produce to {topic}"))?;
        }
        Ok(())
    }

    /// Waits until every queued record is written.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.producer.flush(Duration::from_secs(60)).context("failed to write the records")
    }
}

/// CPU time of every thread of this process, by thread name, in ns
/// (`/proc/self/task/*/schedstat`). Threads of the same name are added up.
pub fn thread_cpu() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_owned();
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *out.entry(name).or_insert(0) += ns;
    }
    out
}

/// CPU ms per thread name, largest first.
pub type ThreadCpu = Vec<(String, f64)>;

/// CPU ms per thread name spent since a [`thread_cpu`] reading (threads that ended
/// in between are missing).
pub fn cpu_since(before: &std::collections::BTreeMap<String, u64>) -> ThreadCpu {
    let mut out: ThreadCpu = thread_cpu()
        .into_iter()
        .map(|(name, ns)| {
            let spent = ns.saturating_sub(before.get(&name).copied().unwrap_or(0));
            (name, spent as f64 / 1e6)
        })
        .filter(|(_, ms)| *ms >= 0.5)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// CPU time of the calling thread, in ns (`/proc/thread-self/schedstat`).
pub fn this_thread_cpu() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
