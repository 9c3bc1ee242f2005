//! What the admin server reads from the brokers itself: every input partition's log
//! start and log end, and the group's committed offset, refreshed in the background.
//!
//! One thread serves every pipeline, with one plain `BaseConsumer` per pipeline (its
//! group id set so it can read the group's commits; it never subscribes, so it never
//! joins the group). Each refresh costs one metadata request per input topic and three
//! batched requests (log ends, log starts, committed offsets). Requests never happen
//! on a scrape: `/metrics` and `/api/status` read the last refresh.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::PipelineConfig;
use crate::kafka::tracker::TopicPartition;
use crate::sync::lock;

/// How often the brokers are asked.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Longest one request of a refresh may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One partition as the brokers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerPartition {
    /// Oldest offset still retained.
    pub log_start: Option<i64>,
    /// Offset the next record written will get (high watermark).
    pub log_end: Option<i64>,
    /// The group's committed offset.
    pub committed: Option<i64>,
}

/// The last refresh of one pipeline.
#[derive(Debug, Clone, Default)]
pub struct PipelineLogs {
    /// Every partition of the pipeline's inputs.
    pub partitions: BTreeMap<TopicPartition, BrokerPartition>,
    /// When the last refresh succeeded.
    pub refreshed: Option<Instant>,
    /// Why the last refresh failed, if it did.
    pub error: Option<String>,
}

/// What one pipeline's refresh needs.
struct Target {
    pipeline: String,
    group: String,
    topics: Vec<String>,
    kafka: BTreeMap<String, String>,
    client: Option<BaseConsumer>,
}

type Cache = Arc<Mutex<BTreeMap<String, PipelineLogs>>>;

/// The cache of broker figures and the thread refreshing it. Dropping it stops the
/// thread.
pub struct BrokerView {
    cache: Cache,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BrokerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerView").field("running", &self.thread.is_some()).finish_non_exhaustive()
    }
}

impl BrokerView {
    /// Starts refreshing the figures of `pipelines` from `brokers`, with the host's
    /// client properties under each pipeline's own.
    pub fn start(brokers: &str, kafka: &BTreeMap<String, String>, pipelines: &[PipelineConfig]) -> Self {
        let targets = pipelines
            .iter()
            .map(|p| {
                let mut props = kafka.clone();
                props.extend(p.kafka.clone());
                props.insert("bootstrap.servers".into(), brokers.to_owned());
                Target {
                    pipeline: p.name.clone(),
                    group: p.group.clone(),
                    topics: p.inputs.clone(),
                    kafka: props,
                    client: None,
                }
            })
            .collect();
        let cache = Cache::default();
        let (stop, stopped) = mpsc::channel();
        let writer = cache.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-admin-brokers".into())
            .spawn(move || run(targets, &writer, &stopped))
            .map_err(|error| tracing::error!(%error, "failed to spawn the broker refresher; log ends stay unknown"))
            .ok();
        Self { cache, stop: Some(stop), thread }
    }

    /// A view that never asks the brokers (every log end stays unknown).
    pub fn disabled() -> Self {
        Self { cache: Cache::default(), stop: None, thread: None }
    }

    /// The last refresh of `pipeline`.
    pub fn get(&self, pipeline: &str) -> PipelineLogs {
        lock(&self.cache).get(pipeline).cloned().unwrap_or_default()
    }
}

impl Drop for BrokerView {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(mut targets: Vec<Target>, cache: &Cache, stopped: &mpsc::Receiver<()>) {
    loop {
        for target in &mut targets {
            if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                return;
            }
            let result = refresh(target);
            let mut cache = lock(cache);
            let entry = cache.entry(target.pipeline.clone()).or_default();
            match result {
                Ok(partitions) => {
                    *entry = PipelineLogs { partitions, refreshed: Some(Instant::now()), error: None };
                }
                Err(error) => {
                    // Keep the last good figures; say why they are getting old.
                    tracing::debug!(pipeline = %target.pipeline, error = format!("{error:#}"), "broker refresh failed");
                    entry.error = Some(format!("{error:#}"));
                }
            }
        }
        match stopped.recv_timeout(REFRESH_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn refresh(target: &mut Target) -> anyhow::Result<BTreeMap<TopicPartition, BrokerPartition>> {
    if target.client.is_none() {
        let mut config = ClientConfig::new();
        for (key, value) in &target.kafka {
            config.set(key, value);
        }
        config
            .set("group.id", &target.group)
            .set("client.id", format!("ferry-admin-{}", target.pipeline))
            .set("enable.auto.commit", "false");
        target.client = Some(config.create().context("failed to create the admin's Kafka client")?);
    }
    let client = target.client.as_ref().expect("just created");
    let mut list = TopicPartitionList::new();
    for topic in &target.topics {
        let metadata = client
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| format!("failed to fetch metadata of topic {topic}"))?;
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                bail!("topic {topic}: {}", rdkafka::error::RDKafkaErrorCode::from(error));
            }
            for p in t.partitions() {
                list.add_partition(t.name(), p.id());
            }
        }
    }
    let mut out: BTreeMap<TopicPartition, BrokerPartition> =
        list.elements().iter().map(|e| ((e.topic().to_owned(), e.partition()), BrokerPartition::default())).collect();
    if out.is_empty() {
        return Ok(out);
    }
    // A ListOffsets "timestamp" of -1 / -2 asks for the log end / start: one batched
    // request per leader instead of two per partition.
    for (query, is_end) in [(Offset::End, true), (Offset::Beginning, false)] {
        let mut asked = list.clone();
        asked.set_all_offsets(query).context("failed to build the offsets query")?;
        let found = client.offsets_for_times(asked, REQUEST_TIMEOUT).context("failed to list log offsets")?;
        for e in found.elements() {
            if let (Offset::Offset(o), Some(p)) = (e.offset(), out.get_mut(&(e.topic().to_owned(), e.partition()))) {
                *(if is_end { &mut p.log_end } else { &mut p.log_start }) = Some(o);
            }
        }
    }
    let committed =
        client.committed_offsets(list, REQUEST_TIMEOUT).context("failed to fetch the group's committed offsets")?;
    for e in committed.elements() {
        if let (Offset::Offset(o), Some(p)) = (e.offset(), out.get_mut(&(e.topic().to_owned(), e.partition()))) {
            p.committed = Some(o);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    use super::*;
    use crate::config::Config;

    fn pipeline(brokers: &str, group: &str, topic: &str) -> PipelineConfig {
        let text = format!(
            "brokers = \"{brokers}\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"{topic}\"]\ngroup = \"{group}\"\ncomponent = \"x.wasm\""
        );
        Config::parse(&text).unwrap().pipelines.remove(0)
    }

    #[test]
    fn reads_log_ends_and_the_groups_commits() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        for i in 0..5 {
            producer.send(BaseRecord::<(), _>::to("t").partition(i % 2).payload("x")).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let committer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "g").create().unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("t", 0, Offset::Offset(2)).unwrap();
        committer.commit(&list, rdkafka::consumer::CommitMode::Sync).unwrap();

        let broker_view = BrokerView::start(&brokers, &BTreeMap::new(), &[pipeline(&brokers, "g", "t")]);
        let started = Instant::now();
        while broker_view.get("p").refreshed.is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "no refresh: {:?}", broker_view.get("p").error);
            std::thread::sleep(Duration::from_millis(20));
        }
        let logs = broker_view.get("p");
        let p0 = logs.partitions[&("t".to_owned(), 0)];
        let p1 = logs.partitions[&("t".to_owned(), 1)];
        assert_eq!(p0, BrokerPartition { log_start: Some(0), log_end: Some(3), committed: Some(2) });
        assert_eq!(p1, BrokerPartition { log_start: Some(0), log_end: Some(2), committed: None });
        // Dropping the view stops its refresher (and returns: the test would hang
        // otherwise).
        drop(broker_view);
    }
}
