//! Writing the components topic, and which partition each record goes to:
//!
//! - partition 0, the index, holds every manifest and member report (small, and the
//!   only partition a host reads through);
//! - chunks go to partition `1 + hash(scope) mod (n − 1)` of a topic with `n ≥ 2`
//!   partitions (to partition 0 when it has one), and each manifest says where its
//!   chunks are, so a host fetches exactly those records and never reads other
//!   versions' bytes.
//!
//! Every write waits for the brokers' acknowledgement (`acks=all`) of each record,
//! and returns where each record landed.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::record::Scope;
use crate::sync::lock;

/// How long a metadata request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The partition of manifests and member reports.
pub const INDEX_PARTITION: i32 = 0;

/// Acknowledgements of the records of one write: the offset of each, and the first
/// failure.
#[derive(Default)]
pub struct Acks {
    state: std::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    offsets: Vec<Option<i64>>,
    failure: Option<String>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let mut state = lock(&self.state);
        match result {
            Ok(message) => {
                if let Some(slot) = state.offsets.get_mut(*index) {
                    *slot = Some(message.offset());
                }
            }
            Err((error, _)) => {
                state.failure.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Writes records and waits for the broker to acknowledge them.
pub struct Writer {
    pub(super) producer: ThreadedProducer<Acks>,
    pub(super) topic: String,
}

impl Writer {
    /// How many partitions the topic has (waiting a while for a topic being created).
    pub fn partitions(&self) -> anyhow::Result<usize> {
        let started = Instant::now();
        loop {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(&self.topic), TIMEOUT)
                .with_context(|| format!("failed to fetch the metadata of topic {}", self.topic))?;
            let count = metadata.topics().iter().find(|t| t.name() == self.topic).map_or(0, |t| t.partitions().len());
            if count > 0 {
                return Ok(count);
            }
            if started.elapsed() > TIMEOUT {
                bail!(
                    "topic {} does not exist and was not created: create it (compacted), or grant Create",
                    self.topic
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The partition the chunks of `scope` go to: the same for every publisher.
    pub fn chunk_partition(&self, scope: &Scope) -> anyhow::Result<i32> {
        Ok(chunk_partition(&scope.to_string(), self.partitions()?))
    }

    /// Writes `records` (key, value or tombstone) to `partition` and waits until
    /// every one is acknowledged; the first failure is the error. Returns the offset
    /// of each record, in order.
    pub fn write_all(
        &self,
        partition: i32,
        records: &[(String, Option<&[u8]>)],
        wait: Duration,
    ) -> anyhow::Result<Vec<i64>> {
        *lock(&self.producer.context().state) = AckState { offsets: vec![None; records.len()], failure: None };
        for (index, (key, value)) in records.iter().enumerate() {
            let mut record: BaseRecord<'_, str, [u8], Box<usize>> =
                BaseRecord::with_opaque_to(&self.topic, Box::new(index)).partition(partition).key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            crate::kafka::output::send_when_room(&self.producer, record)
                .map_err(|(error, _)| error)
                .with_context(|| format!("failed to queue record {key} for topic {}", self.topic))?;
        }
        self.producer.flush(wait).map_err(|e: KafkaError| {
            anyhow::Error::new(e).context(format!("the brokers did not acknowledge the records within {wait:?}"))
        })?;
        let state = std::mem::take(&mut *lock(&self.producer.context().state));
        if let Some(error) = &state.failure {
            bail!("the brokers refused a record for topic {}: {error}", self.topic);
        }
        state
            .offsets
            .into_iter()
            .collect::<Option<Vec<i64>>>()
            .with_context(|| format!("not every record for topic {} was acknowledged", self.topic))
    }
}

/// The chunk partition of `scope_name` in a topic of `partitions`: partition 0 is
/// the index, so chunks go to one of the others (FNV-1a of the name), or to 0
/// when there is no other.
pub fn chunk_partition(scope_name: &str, partitions: usize) -> i32 {
    if partitions <= 1 {
        return INDEX_PARTITION;
    }
    let hash = scope_name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    1 + (hash % (partitions as u32 - 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_share_the_index_partition_unless_there_is_only_one() {
        assert_eq!(chunk_partition("prod/orders", 1), 0);
        assert_eq!(chunk_partition("prod/orders", 2), 1);
        assert_eq!(chunk_partition("prod/orders", 7), chunk_partition("prod/orders", 7));
        let spread: std::collections::BTreeSet<i32> = (0..64).map(|i| chunk_partition(&format!("e/p{i}"), 5)).collect();
        assert_eq!(spread, [1, 2, 3, 4].into(), "names spread over the partitions but the index");
    }
}
