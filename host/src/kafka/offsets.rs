//! Reading and resetting a group's committed offsets: `ferry offsets`, the demo's
//! final table, and the tests' ledgers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a group stands on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset of the next record to be written (high watermark).
    pub log_end: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Records not yet committed by the group.
    pub fn lag(&self) -> i64 {
        self.log_end - self.committed.unwrap_or(0).min(self.log_end)
    }
}

/// Where to move a group's bookmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest retained record.
    Earliest,
    /// The log end: skip everything there is now.
    Latest,
    /// This offset (clamped to the retained range).
    Offset(i64),
    /// The first record at or after this timestamp (ms since the epoch).
    Timestamp(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "earliest" => ResetTo::Earliest,
            "latest" => ResetTo::Latest,
            _ => {
                if let Some(ts) = s.strip_prefix("ts:").or_else(|| s.strip_prefix("timestamp:")) {
                    ResetTo::Timestamp(ts.parse().with_context(|| format!("`{ts}` is not a timestamp in ms"))?)
                } else {
                    let offset: i64 = s
                        .parse()
                        .with_context(|| format!("`{s}` is not earliest, latest, an offset, or ts:<ms since epoch>"))?;
                    if offset < 0 {
                        bail!("offset {offset} is negative");
                    }
                    ResetTo::Offset(offset)
                }
            }
        })
    }
}

/// A consumer that is a client of `group` without joining it.
fn group_client(brokers: &str, kafka: &BTreeMap<String, String>, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    for (k, v) in kafka {
        config.set(k, v);
    }
    config.set("bootstrap.servers", brokers).set("group.id", group).set("enable.auto.commit", "false");
    config.create().context("failed to create a Kafka client")
}

/// The partitions of `topics`, sorted.
fn partitions_of(consumer: &BaseConsumer, topics: &[String]) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("failed to fetch metadata of topic {topic}"))?;
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                bail!("topic {topic}: {error:?}");
            }
            out.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
        }
    }
    out.sort();
    Ok(out)
}

/// The committed offset, log end and lag of `group` on every partition of `topics`.
pub fn show(
    brokers: &str,
    kafka: &BTreeMap<String, String>,
    group: &str,
    topics: &[String],
) -> anyhow::Result<Vec<PartitionLag>> {
    let consumer = group_client(brokers, kafka, group)?;
    let partitions = partitions_of(&consumer, topics)?;
    let mut list = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        list.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(list, TIMEOUT).context("failed to fetch committed offsets")?;
    let mut out = Vec::new();
    for (topic, partition) in partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, TIMEOUT)
            .with_context(|| format!("failed to fetch watermarks of {topic}[{partition}]"))?;
        let committed = committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        out.push(PartitionLag { topic, partition, log_end: high, committed });
    }
    Ok(out)
}

/// Moves `group`'s bookmark on every partition of `topics`. Refuses while the group
/// has members: they would overwrite it with their own commits.
pub fn reset(
    brokers: &str,
    kafka: &BTreeMap<String, String>,
    group: &str,
    topics: &[String],
    to: ResetTo,
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let consumer = group_client(brokers, kafka, group)?;
    let groups = consumer.fetch_group_list(Some(group), TIMEOUT).map_err(|error| unchecked(brokers, group, error))?;
    if let Some(g) = groups.groups().iter().find(|g| g.name() == group)
        && !g.members().is_empty()
    {
        bail!(
            "group {group} has {} active member(s) (state {}): stop them before resetting offsets",
            g.members().len(),
            g.state()
        );
    }
    let partitions = partitions_of(&consumer, topics)?;
    let mut list = TopicPartitionList::new();
    let mut targets = Vec::new();
    for (topic, partition) in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, TIMEOUT)?;
        let offset = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Offset(o) => o.clamp(low, high),
            ResetTo::Timestamp(ts) => {
                let mut query = TopicPartitionList::new();
                query.add_partition_offset(topic, *partition, Offset::Offset(ts))?;
                let found = consumer.offsets_for_times(query, TIMEOUT)?;
                match found.find_partition(topic, *partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
        };
        list.add_partition_offset(topic, *partition, Offset::Offset(offset))?;
        targets.push((topic.clone(), *partition, offset));
    }
    consumer.commit(&list, CommitMode::Sync).context("failed to commit the new offsets")?;
    Ok(targets)
}

/// Why a reset is refused when the group's members could not be listed: which check
/// failed, why, and what to do, in words for someone who has never seen a
/// DescribeGroups request.
fn unchecked(brokers: &str, group: &str, error: KafkaError) -> anyhow::Error {
    let refusal = format!(
        "refusing to reset the offsets of group {group}: ferry could not check that no member of the group is \
         running (a running member would overwrite the new bookmark with its next commit)"
    );
    let why_and_what = match &error {
        KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature) => format!(
            "The brokers at {brokers} do not answer DescribeGroups, the request that lists a group's members. \
             librdkafka's embedded mock broker (the one `ferry demo` and ferry's tests start) is such a broker: \
             its offsets can be shown but not safely reset. Reset against a Kafka broker that answers it \
             (Apache Kafka, Tansu...), after stopping every `ferry run` of group {group}; on the embedded \
             broker, start the demo again to start from scratch."
        ),
        _ => format!(
            "The brokers at {brokers} did not answer the request that lists a group's members. \
             Check that they are up and reachable (`ferry offsets show` reads the same brokers), then try again."
        ),
    };
    anyhow::Error::new(error).context(format!("{refusal}.\n{why_and_what}\nThe brokers' answer"))
}

/// Renders a lag table.
pub fn table(rows: &[PartitionLag]) -> String {
    let mut out = format!("{:<24} {:>9} {:>12} {:>12} {:>8}\n", "topic", "partition", "log-end", "committed", "lag");
    for r in rows {
        let committed = r.committed.map_or("-".to_owned(), |c| c.to_string());
        out.push_str(&format!(
            "{:<24} {:>9} {:>12} {:>12} {:>8}\n",
            r.topic,
            r.partition,
            r.log_end,
            committed,
            r.lag()
        ));
    }
    out
}
