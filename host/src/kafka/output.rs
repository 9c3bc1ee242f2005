//! The producer for output records and dead letters, and the acknowledgements that
//! let input offsets be committed only after what they produced is safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::client_log;
use super::tracker::{Epoch, SpanId};
use crate::sync::lock;

/// What becomes finished once every record of one group is acknowledged: a span of
/// an assignment, and single offsets (redeliveries, dead letters) of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The partition.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The assignment the records belong to: nothing of another one is touched.
    pub epoch: Epoch,
    /// The new span held until the acks arrive.
    pub span: Option<SpanId>,
    /// Individual offsets (redeliveries, dead-lettered records) to finish.
    pub offsets: Vec<i64>,
    /// Whether a record of the group was not delivered.
    pub failed: bool,
}

/// Who hears that a group was acknowledged (the pipeline's shared state). Called on
/// the producer's delivery thread.
pub trait AckListener: Send + Sync {
    /// Every record of a group was acknowledged, or failed.
    fn settled(&self, group: Settled);
}

/// A group of output records whose acknowledgements finish input offsets together.
pub struct AckGroup {
    listener: Arc<dyn AckListener>,
    settled: std::sync::Mutex<Option<Settled>>,
    remaining: AtomicUsize,
    failed: AtomicBool,
}

impl std::fmt::Debug for AckGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckGroup").field("remaining", &self.remaining).finish_non_exhaustive()
    }
}

impl AckGroup {
    /// A group of `count` records whose acknowledgement settles `settled`.
    pub fn new(listener: Arc<dyn AckListener>, settled: Settled, count: usize) -> Arc<Self> {
        Arc::new(Self {
            listener,
            settled: std::sync::Mutex::new(Some(settled)),
            remaining: AtomicUsize::new(count),
            failed: AtomicBool::new(false),
        })
    }

    fn acknowledge(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Relaxed);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let taken = lock(&self.settled).take();
            if let Some(mut settled) = taken {
                settled.failed = self.failed.load(Ordering::Relaxed);
                self.listener.settled(settled);
            }
        }
    }
}

/// Routes delivery reports to their [`AckGroup`].
pub struct AckContext;

/// librdkafka's words about the producer go to the producers' [`ClientLog`](client_log::ClientLog): once
/// per change of state, not once per retry.
impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client_log::producers().log(&"output producer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_log::producers().error(&"output producer", &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        client_log::producers().statistics(&"output producer", statistics);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Arc<AckGroup>>;

    fn delivery(&self, result: &DeliveryResult<'_>, group: Self::DeliveryOpaque) {
        if let Err((error, message)) = result {
            use rdkafka::Message as _;
            tracing::warn!(%error, topic = message.topic(), "output record was not delivered");
        }
        group.acknowledge(result.is_ok());
    }
}

/// The producer of one pipeline.
pub type OutputProducer = ThreadedProducer<AckContext>;

/// An output record to send.
pub struct Outgoing<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Destination partition; `None`: the producer's partitioner picks (by key).
    pub partition: Option<i32>,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value, if any.
    pub value: Option<&'a [u8]>,
    /// Headers in order; a `None` value is a null header.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// A refused record and why, as rdkafka's own `send` returns it (the record comes
/// back so its delivery opaque can still be settled).
pub type Refused<'a, K, P, O> = (KafkaError, BaseRecord<'a, K, P, O>);

/// Hands `record` to `producer`, waiting while librdkafka's local queue is full.
/// Any other error is permanent (too large, unknown topic...) and is returned with
/// the record, never retried.
#[allow(clippy::result_large_err, reason = "the same shape as rdkafka's `ThreadedProducer::send`")]
pub fn send_when_room<'a, C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
) -> Result<(), Refused<'a, K, P, C::DeliveryOpaque>>
where
    C: ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Queues `record`, waiting while librdkafka's queue is full. Fails only on a
/// permanent error (the record's group is then acknowledged as failed).
pub fn send(producer: &OutputProducer, record: Outgoing<'_>, group: &Arc<AckGroup>) {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in &record.headers {
        headers = headers.insert(Header { key, value: *value });
    }
    let mut base = BaseRecord::with_opaque_to(record.topic, Box::new(group.clone())).headers(headers);
    if let Some(partition) = record.partition {
        base = base.partition(partition);
    }
    if let Some(key) = record.key {
        base = base.key(key);
    }
    if let Some(value) = record.value {
        base = base.payload(value);
    }
    if let Err((error, back)) = send_when_room(producer, base) {
        tracing::error!(%error, topic = record.topic, "failed to queue an output record");
        back.delivery_opaque.acknowledge(false);
    }
}
