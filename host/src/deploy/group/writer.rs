//! Writing the components topic: every record of a pipeline to one partition, and
//! a wait for the brokers' acknowledgement (`acks=all`) of each.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::sync::lock;

/// How long a metadata request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Counts acknowledgements and keeps the first failure.
#[derive(Default)]
pub struct Acks {
    state: std::sync::Mutex<(u64, Option<String>)>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut state = lock(&self.state);
        state.0 += 1;
        if let Err((error, _)) = result
            && state.1.is_none()
        {
            state.1 = Some(error.to_string());
        }
    }
}

/// Writes records and waits for the broker to acknowledge them.
pub struct Writer {
    pub(super) producer: ThreadedProducer<Acks>,
    pub(super) topic: String,
}

impl Writer {
    /// The partition every record of `pipeline` goes to: the same for every
    /// publisher and host (FNV-1a of the name), so a version's chunks precede its
    /// manifest in one partition's order.
    pub fn partition_for(&self, pipeline: &str) -> anyhow::Result<i32> {
        let started = Instant::now();
        loop {
            let metadata = self
                .producer
                .client()
                .fetch_metadata(Some(&self.topic), TIMEOUT)
                .with_context(|| format!("failed to fetch the metadata of topic {}", self.topic))?;
            let count = metadata.topics().iter().find(|t| t.name() == self.topic).map_or(0, |t| t.partitions().len());
            if count > 0 {
                return Ok(pick_partition(pipeline, count));
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

    /// Writes `records` (key, value or tombstone) to `partition` and waits until
    /// every one is acknowledged; the first failure is the error.
    pub fn write_all(&self, partition: i32, records: &[(String, Option<&[u8]>)], wait: Duration) -> anyhow::Result<()> {
        let before = {
            let mut state = lock(&self.producer.context().state);
            state.1 = None;
            state.0
        };
        for (key, value) in records {
            let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(&self.topic).partition(partition).key(key);
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
        let state = lock(&self.producer.context().state);
        if let Some(error) = &state.1 {
            bail!("the brokers refused a record for topic {}: {error}", self.topic);
        }
        if state.0 - before < records.len() as u64 {
            bail!("not every record for topic {} was acknowledged", self.topic);
        }
        Ok(())
    }
}

/// FNV-1a of `pipeline`, modulo `partitions`.
pub fn pick_partition(pipeline: &str, partitions: usize) -> i32 {
    let hash = pipeline.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    (hash % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_always_gets_the_same_partition() {
        assert_eq!(pick_partition("orders", 1), 0);
        assert_eq!(pick_partition("orders", 7), pick_partition("orders", 7));
        let spread: std::collections::BTreeSet<i32> = (0..64).map(|i| pick_partition(&format!("p{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "names spread over the partitions");
    }
}
