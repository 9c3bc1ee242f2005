//! What the brokers hold, read back for the stories: bookmark tables (with who owns
//! each partition), where each order sits, and how many commissions each order got.
//! Every figure a story prints comes from here or from a member's own stats.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::offsets::{self, PartitionLag};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The bookmarks of `group` on every partition of `topic`.
pub fn bookmarks(brokers: &str, group: &str, topic: &str) -> anyhow::Result<Vec<PartitionLag>> {
    offsets::show(brokers, &Default::default(), group, &[topic.to_owned()])
}

/// The committed offset of each partition (0 when there is none yet).
pub fn committed(rows: &[PartitionLag]) -> BTreeMap<i32, i64> {
    rows.iter().map(|r| (r.partition, r.committed.unwrap_or(0))).collect()
}

/// A bookmark table with the owner of each partition.
pub fn table(rows: &[PartitionLag], owner: impl Fn(i32) -> String) -> String {
    let mut out = format!("  {:<10} {:<26} {:>8} {:>10} {:>6}\n", "partition", "owner", "log end", "bookmark", "lag");
    for r in rows {
        let bookmark = r.committed.map_or("-".to_owned(), |c| c.to_string());
        out.push_str(&format!(
            "  {:<10} {:<26} {:>8} {:>10} {:>6}\n",
            format!("{}[{}]", r.topic, r.partition),
            owner(r.partition),
            r.log_end,
            bookmark,
            r.lag()
        ));
    }
    out
}

/// One record read back.
struct Stored {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

/// Every record of `topic` up to its current log end.
fn read_topic(brokers: &str, topic: &str) -> anyhow::Result<Vec<Stored>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ferry-demo-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("failed to create a reader")?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("no metadata for {topic}"))?;
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        if high > 0 {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            ends.insert(p.id(), high);
        }
    }
    consumer.assign(&list).with_context(|| format!("failed to read {topic}"))?;
    let mut out = Vec::new();
    let started = Instant::now();
    while !ends.is_empty() {
        if started.elapsed() > TIMEOUT * 6 {
            bail!("reading {topic} back took too long");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(Stored {
                    partition: m.partition(),
                    offset: m.offset(),
                    value: m.payload().unwrap_or_default().to_vec(),
                });
                if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(error)) => bail!("failed to read {topic}: {error}"),
            None => {}
        }
    }
    Ok(out)
}

/// Where each order sits in `topic`: order id → (partition, offset).
pub fn orders(brokers: &str, topic: &str) -> anyhow::Result<HashMap<String, (i32, i64)>> {
    #[derive(serde::Deserialize)]
    struct Order {
        id: String,
    }
    let mut out = HashMap::new();
    for record in read_topic(brokers, topic)? {
        let order: Order = serde_json::from_slice(&record.value).context("an order without an id")?;
        out.insert(order.id, (record.partition, record.offset));
    }
    Ok(out)
}

/// How many commissions in `topic` carry each order id.
pub fn commissions(brokers: &str, topic: &str) -> anyhow::Result<HashMap<String, u32>> {
    #[derive(serde::Deserialize)]
    struct Commission {
        order_id: String,
    }
    let mut out = HashMap::new();
    for record in read_topic(brokers, topic)? {
        let commission: Commission =
            serde_json::from_slice(&record.value).context("a commission without an order id")?;
        *out.entry(commission.order_id).or_default() += 1;
    }
    Ok(out)
}

/// Orders processed more than once, by input partition: (count, lowest and highest
/// offset). Fails if an order has no commission at all: nothing may be lost.
pub fn duplicates(
    orders: &HashMap<String, (i32, i64)>,
    commissions: &HashMap<String, u32>,
) -> anyhow::Result<BTreeMap<i32, (usize, i64, i64)>> {
    let missing: Vec<&String> = orders.keys().filter(|id| !commissions.contains_key(*id)).take(5).collect();
    if !missing.is_empty() {
        bail!("orders without a commission (lost!): {missing:?}...");
    }
    let mut out: BTreeMap<i32, (usize, i64, i64)> = BTreeMap::new();
    for (id, (partition, offset)) in orders {
        if commissions[id] > 1 {
            let entry = out.entry(*partition).or_insert((0, i64::MAX, i64::MIN));
            entry.0 += commissions[id] as usize - 1;
            entry.1 = entry.1.min(*offset);
            entry.2 = entry.2.max(*offset);
        }
    }
    Ok(out)
}
