//! The stories' embedded broker, and orders arriving at a steady pace while the
//! members run (so that a crash happens mid-stream, not after the fact).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::kafka::output::send_when_room;

/// librdkafka's mock cluster, in this process; members in other processes reach it
/// over loopback.
pub struct Broker {
    _cluster: MockCluster<'static, DefaultProducerContext>,
    /// Bootstrap servers.
    pub brokers: String,
}

impl Broker {
    /// Starts a one-broker cluster with `topics` (name, partitions).
    pub fn start(topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(1).context("failed to start the embedded broker")?;
        for (topic, partitions) in topics {
            cluster.create_topic(topic, *partitions, 1).with_context(|| format!("failed to create topic {topic}"))?;
        }
        let brokers = cluster.bootstrap_servers();
        Ok(Self { _cluster: cluster, brokers })
    }
}

/// Order `i` of a story: well-formed, so that every order becomes a commission.
pub fn order(i: usize) -> (String, String) {
    let agents = ["alice", "bob", "carol", "dave", "erin"];
    let id = format!("o-{i}");
    let value = format!(
        r#"{{"id":"{id}","agent":"{}","amount_cents":{}}}"#,
        agents[i % agents.len()],
        1000 + (i * 7919) % 90_000
    );
    (id, value)
}

/// Orders being produced by a thread of their own.
pub struct Flow {
    sent: Arc<AtomicUsize>,
    count: usize,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Flow {
    /// Produces `count` orders to `topic` at `rate` per second, order `i` to
    /// partition `i % partitions` (so the bookmark tables stay easy to read).
    pub fn start(brokers: &str, topic: &str, partitions: i32, count: usize, rate: u32) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()
            .context("failed to create the orders producer")?;
        let sent = Arc::new(AtomicUsize::new(0));
        let topic = topic.to_owned();
        let thread = std::thread::Builder::new()
            .name("demo-orders".into())
            .spawn({
                let sent = sent.clone();
                move || {
                    let started = Instant::now();
                    for i in 0..count {
                        let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let (id, value) = order(i);
                        let record = BaseRecord::to(&topic).partition(i as i32 % partitions).key(&id).payload(&value);
                        send_when_room(&producer, record)
                            .map_err(|(error, _)| error)
                            .context("failed to produce an order")?;
                        sent.store(i + 1, Ordering::Relaxed);
                    }
                    producer.flush(Duration::from_secs(30)).context("failed to flush the orders")?;
                    Ok(())
                }
            })
            .context("failed to start the orders thread")?;
        Ok(Self { sent, count, thread })
    }

    /// Orders handed to the producer so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether at least `part` of the orders were sent.
    pub fn past(&self, part: f64) -> bool {
        self.sent() as f64 >= self.count as f64 * part
    }

    /// Waits until every order is acknowledged by the broker.
    pub fn finish(self) -> anyhow::Result<usize> {
        self.thread.join().map_err(|_| anyhow!("the orders thread panicked"))??;
        Ok(self.count)
    }
}
