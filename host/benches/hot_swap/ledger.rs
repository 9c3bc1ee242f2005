//! Reading the versioned guest's ledger back and timing swaps from it.
//!
//! Each ledger entry carries the guest's wall clock when it processed the record
//! (`<partition>:<offset>:<tag>:<batch start>:<unix µs>`), so the time a new version
//! first processed a record, and every gap in the flow, come from the processing
//! itself rather than from when outputs reached the broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One processed record: when, and by which version.
#[derive(Debug, Clone, Copy)]
pub struct Processed {
    pub micros: u64,
    pub tag: u8,
}

/// Every entry of the `ledger` topic, ordered by processing time.
pub fn read(brokers: &str, partitions: i32) -> anyhow::Result<Vec<Processed>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hot-swap-bench-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("ledger reader")?;
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks("ledger", partition, Duration::from_secs(10))?;
        if high > 0 {
            list.add_partition_offset("ledger", partition, Offset::Beginning)?;
            ends.insert(partition, high);
        }
    }
    consumer.assign(&list)?;
    let mut out = Vec::new();
    let started = Instant::now();
    while !ends.is_empty() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("timed out reading the ledger");
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)).transpose()? else { continue };
        let value = std::str::from_utf8(message.payload().unwrap_or_default())?;
        let fields: Vec<&str> = value.split(':').collect();
        let (Some(tag), Some(micros)) = (fields.get(2), fields.get(4)) else {
            bail!("malformed ledger entry {value:?}")
        };
        out.push(Processed { micros: micros.parse()?, tag: tag.as_bytes()[1] });
        if ends.get(&message.partition()).is_some_and(|&end| message.offset() + 1 >= end) {
            ends.remove(&message.partition());
        }
    }
    out.sort_by_key(|p| p.micros);
    Ok(out)
}

/// When the version tagged `tag` first processed a record at or after `since`.
pub fn first_by(ledger: &[Processed], tag: u8, since: u64) -> Option<u64> {
    let from = ledger.partition_point(|p| p.micros < since);
    ledger[from..].iter().find(|p| p.tag == tag).map(|p| p.micros)
}

/// The longest time, in µs, without any record processed inside `[from, to]`.
///
/// Each gap is clipped to the window: a gap that spans the window's edge counts only
/// for its part inside. (Counting whole overlapping gaps put the gap that spans a
/// deploy request into both the baseline window before the request and the pause
/// window after it, so the two read the same.)
pub fn longest_gap(ledger: &[Processed], from: u64, to: u64) -> u64 {
    ledger
        .windows(2)
        .filter(|w| w[1].micros > from && w[0].micros < to)
        .map(|w| w[1].micros.min(to) - w[0].micros.max(from))
        .max()
        .unwrap_or(0)
}
