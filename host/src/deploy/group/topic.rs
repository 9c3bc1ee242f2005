//! Reaching the components topic: a reader that follows the index partition (or
//! every partition) from the beginning without joining any group (it never
//! commits), a fetch of one version's chunks by their locations, and a [`Writer`]
//! ([`super::writer`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::ThreadedProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::catalog::Location;
use super::record::{Key, Refusal};
pub use super::writer::Writer;
use super::writer::{Acks, INDEX_PARTITION};

/// How long a metadata, watermark or fetch request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may go without any record arriving before it gives up (a
/// broker that answers but sends nothing). Reading a large topic takes as long as
/// it takes, as long as records keep coming.
const FETCH_PATIENCE: Duration = Duration::from_secs(60);
/// What librdkafka may hold prefetched for a reader, in KiB: a reader's memory stays
/// near this however large the topic is (its default, 64 MiB per partition, would
/// count against a host for no gain: chunks are read once, in order).
const QUEUED_KIB: &str = "8192";

/// Where the components topic is and how to reach it.
#[derive(Debug, Clone)]
pub struct TopicAccess {
    /// Bootstrap servers.
    pub brokers: String,
    /// librdkafka properties (SASL, TLS...).
    pub kafka: BTreeMap<String, String>,
    /// The topic.
    pub topic: String,
}

/// One record read from the topic: its parsed key (unknown keys are skipped), its
/// value (`None` for a tombstone; empty for a chunk, whose bytes are not copied
/// when the topic is read through) and where it is.
#[derive(Debug)]
pub struct Read {
    /// The key.
    pub key: Key,
    /// The value.
    pub value: Option<Vec<u8>>,
    /// Where.
    pub at: Location,
}

impl TopicAccess {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.kafka {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// A consumer that only ever assigns partitions: its group id (prefix
    /// `ferry-components-reader-`) is unique and never joined or committed to.
    /// (Tried without a group id: the hosts of the fleet test then never came up.)
    fn consumer(&self) -> anyhow::Result<BaseConsumer> {
        let mut config = self.client_config();
        config
            .set("group.id", format!("ferry-components-reader-{}-{}", std::process::id(), super::nonce()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", QUEUED_KIB)
            .set("fetch.max.bytes", "4194304");
        config.create().context("failed to create a reader of the components topic")
    }

    /// A reader of the index partition (manifests and member reports, see
    /// [`super::writer`]) from the beginning, not yet assigned when the topic does
    /// not exist (see [`Reader::refresh`]): what a host reads.
    pub fn reader(&self) -> anyhow::Result<Reader> {
        self.reader_of(false)
    }

    /// A reader of every partition from the beginning: the index and every
    /// version's chunks (their keys: what rollbacks and pruning need).
    pub fn reader_of_all(&self) -> anyhow::Result<Reader> {
        self.reader_of(true)
    }

    fn reader_of(&self, all: bool) -> anyhow::Result<Reader> {
        let mut reader = Reader { consumer: self.consumer()?, topic: self.topic.clone(), partitions: Vec::new(), all };
        reader.refresh()?;
        Ok(reader)
    }

    /// Reads the records at `locations` (one version's chunks, by index) and checks
    /// each is still the chunk it was: a chunk deleted or compacted away since is
    /// [`Refusal::MissingChunk`]. Broker errors, and `stopping()` turning true (the
    /// host shuts down), are [`FetchError::Kafka`], to be retried.
    pub fn fetch(
        &self,
        expected: &dyn Fn(u32) -> Key,
        locations: &BTreeMap<u32, Location>,
        chunks: u32,
        stopping: &dyn Fn() -> bool,
    ) -> Result<BTreeMap<u32, Vec<u8>>, FetchError> {
        let consumer = self.consumer().map_err(FetchError::Kafka)?;
        let mut wanted: HashMap<Location, u32> = locations.iter().map(|(i, at)| (*at, *i)).collect();
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        let mut list = TopicPartitionList::new();
        for at in locations.values() {
            let end = last.entry(at.partition).or_insert(at.offset);
            *end = (*end).max(at.offset);
        }
        for partition in last.keys() {
            let first = locations.values().filter(|at| at.partition == *partition).map(|at| at.offset).min();
            let first = first.expect("a partition with a wanted chunk");
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(first))
                .map_err(|e| FetchError::Kafka(e.into()))?;
        }
        consumer.assign(&list).map_err(|e| FetchError::Kafka(e.into()))?;
        let mut out = BTreeMap::new();
        let mut progress = Instant::now();
        while !last.is_empty() {
            if stopping() {
                return Err(FetchError::Kafka(anyhow::anyhow!("stopped while reading chunks")));
            }
            if progress.elapsed() > FETCH_PATIENCE {
                return Err(FetchError::Kafka(anyhow::anyhow!(
                    "reading {} chunks of topic {}: nothing came for {} s",
                    locations.len(),
                    self.topic,
                    FETCH_PATIENCE.as_secs()
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
            let message = message.map_err(|e| FetchError::Kafka(e.into()))?;
            progress = Instant::now();
            let at = Location { partition: message.partition(), offset: message.offset() };
            if let Some(index) = wanted.remove(&at) {
                let key = message.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(Key::parse);
                match (key, message.payload()) {
                    (Some(key), Some(payload)) if key == expected(index) => {
                        out.insert(index, payload.to_vec());
                    }
                    _ => return Err(FetchError::Refused(Refusal::MissingChunk { index, chunks })),
                }
            }
            if last.get(&at.partition).is_some_and(|end| at.offset >= *end) {
                last.remove(&at.partition);
            }
        }
        // Offsets skipped over: compacted away between the index and the fetch.
        if let Some(index) = wanted.into_values().min() {
            return Err(FetchError::Refused(Refusal::MissingChunk { index, chunks }));
        }
        Ok(out)
    }

    /// A producer that waits for `acks=all` on every record it writes.
    pub fn writer(&self) -> anyhow::Result<Writer> {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000");
        let producer: ThreadedProducer<Acks> =
            config.create_with_context(Acks::default()).context("failed to create a writer of the components topic")?;
        Ok(Writer { producer, topic: self.topic.clone() })
    }

    /// Creates the topic compacted, with two partitions (the index, and one for
    /// chunks), unless it exists. Existence is asked by a consumer, which
    /// never makes a broker auto-create the topic (uncompacted). A broker that does
    /// not serve CreateTopics (librdkafka's mock, or a principal without Create) is
    /// not an error: the write that follows tells whether the topic is there.
    pub fn ensure_topic(&self, runtime: &crate::runtime::Runtime) {
        match self.reader() {
            Ok(reader) if reader.has_partitions() => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "cannot tell whether the components topic exists")
            }
        }
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = match self.client_config().create() {
            Ok(admin) => admin,
            Err(error) => {
                tracing::warn!(%error, "cannot create an admin client to create the components topic");
                return;
            }
        };
        // Compaction only cleans closed segments: hourly segments let the chunks of
        // pruned versions go within hours rather than the default week.
        let topic = NewTopic::new(&self.topic, 2, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            .set("min.compaction.lag.ms", "0")
            .set("segment.ms", "3600000");
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
        match runtime.block_on(admin.create_topics([&topic], &options)) {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(name) => tracing::info!(topic = %name, "created the compacted components topic"),
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            tracing::warn!(topic = %name, error = %code, "the broker did not create the components topic")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(topic = %self.topic, %error, "the broker did not create the components topic"),
        }
    }
}

/// Why chunks could not be fetched.
#[derive(Debug)]
pub enum FetchError {
    /// The topic does not hold them (a refusal: the running version stays).
    Refused(Refusal),
    /// The brokers could not be read (try again later).
    Kafka(anyhow::Error),
}

/// A reader of the topic: of its index partition, or of every partition.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    all: bool,
}

impl Reader {
    /// Assigns partitions that appeared since the last look (the topic was created,
    /// or, for a reader of all, grew), from the beginning.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), TIMEOUT)
            .with_context(|| format!("failed to fetch the metadata of topic {}", self.topic))?;
        let mut partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| self.all || *p == INDEX_PARTITION)
            .collect();
        partitions.sort_unstable();
        if partitions.len() > self.partitions.len() {
            let mut list = TopicPartitionList::new();
            for partition in partitions.iter().filter(|p| !self.partitions.contains(p)) {
                list.add_partition_offset(&self.topic, *partition, Offset::Beginning)?;
            }
            self.consumer.incremental_assign(&list).context("failed to assign the components topic")?;
            self.partitions = partitions;
        }
        Ok(())
    }

    /// Whether the topic exists (has partitions assigned).
    pub fn has_partitions(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// The next record, waiting at most `wait`.
    pub fn next(&self, wait: Duration) -> anyhow::Result<Option<Read>> {
        loop {
            let Some(message) = self.consumer.poll(wait) else { return Ok(None) };
            let message = message.with_context(|| format!("failed to read topic {}", self.topic))?;
            if let Some(read) = read(&message) {
                return Ok(Some(read));
            }
        }
    }

    /// Reads everything written before this call, handing each record to `each`.
    pub fn read_to_end(&self, mut each: impl FnMut(Read)) -> anyhow::Result<()> {
        let mut ends = BTreeMap::new();
        for partition in &self.partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, *partition, TIMEOUT)
                .with_context(|| format!("failed to read the log end of {}[{partition}]", self.topic))?;
            if high > low {
                ends.insert(*partition, high);
            }
        }
        let mut progress = Instant::now();
        while !ends.is_empty() {
            if progress.elapsed() > FETCH_PATIENCE {
                bail!("reading topic {} to its end: nothing came for {} s", self.topic, FETCH_PATIENCE.as_secs());
            }
            if let Some(message) = self.consumer.poll(Duration::from_millis(100)) {
                let message = message.with_context(|| format!("failed to read topic {}", self.topic))?;
                progress = Instant::now();
                let (partition, offset) = (message.partition(), message.offset());
                if let Some(read) = read(&message) {
                    each(read);
                }
                if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
                    ends.remove(&partition);
                }
            } else {
                // A compacted tail can end before the log end: ask where we are.
                let position = self.consumer.position()?;
                ends.retain(|partition, end| {
                    !matches!(position.find_partition(&self.topic, *partition).map(|e| e.offset()),
                        Some(Offset::Offset(at)) if at >= *end)
                });
            }
        }
        Ok(())
    }
}

fn read(message: &BorrowedMessage<'_>) -> Option<Read> {
    let key = Key::parse(std::str::from_utf8(message.key()?).ok()?)?;
    let value = match key {
        Key::Chunk { .. } => message.payload().map(|_| Vec::new()),
        _ => message.payload().map(<[u8]>::to_vec),
    };
    Some(Read { key, value, at: Location { partition: message.partition(), offset: message.offset() } })
}
