//! A pipeline: one consumer group member running one processor over its input
//! topics, on a thread of its own.
//!
//! | module | concern |
//! |---|---|
//! | [`worker`] | the loop: fetch, dispatch, commit, shut down |
//! | [`intake`] | serving rebalances and errors, taking records into batches |
//! | [`run`] | one batch through the guest, within its time limit, split around faults |
//! | [`settle`] | what each record's outcome means (pure, property-tested) |
//! | [`failure`] | dead letters, halts, rewinds and backoff |
//! | [`partition`] | per-partition state of the loop |
//! | [`shared`] | what the loop shares with Kafka's callbacks: offsets, commits, events |
//! | [`transactions`], `exactly_once`, `held` | exactly-once: a transactional producer per partition, outputs held until their offset can be committed with them |
//! | [`stats`], [`liveness`] | what metrics, the status page and health checks read |

mod exactly_once;
mod failure;
mod held;
mod intake;
pub(crate) mod liveness;
mod partition;
pub mod run;
pub(crate) mod settle;
pub mod shared;
pub mod stats;
pub(crate) mod transactions;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub use failure::backoff;
pub use shared::Shared;
use transactions::Transactions;

use crate::config::{CommitPolicy, PipelineConfig};
use crate::kafka::client::{consumer_config, producer_config, transactional_producer_config};
use crate::kafka::client_log::RepeatedErrors;
use crate::kafka::commit::Committer;
use crate::kafka::context::{FerryContext, SYNC_COMMIT_TIMEOUT};
use crate::kafka::fetch::{FetchQueue, FetchRoute};
use crate::kafka::output::{AckContext, OutputProducer};
use crate::registry::ProcessorSlot;
use crate::sandbox::{Batch, ProcessorInstance, Sandbox};

/// The longest a transactional producer lingers (see `transactional_producer_config`).
const TXN_LINGER_MAX: Duration = Duration::from_millis(100);

/// A running pipeline.
pub struct Pipeline {
    /// Its configuration.
    pub config: Arc<PipelineConfig>,
    /// Its shared state (stats, offsets).
    pub shared: Arc<Shared>,
    /// Its processor versions.
    pub slot: ProcessorSlot,
    thread: JoinHandle<()>,
}

impl Pipeline {
    /// Creates the consumer (and producer, if the pipeline writes anything) and
    /// starts the pipeline thread.
    pub fn start(
        brokers: &str,
        kafka: &BTreeMap<String, String>,
        config: PipelineConfig,
        sandbox: Sandbox,
        slot: ProcessorSlot,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let mut consumer_config = consumer_config(brokers, &config.group, kafka, &config.kafka);
        let shared = Arc::new(if config.exactly_once() {
            // Records of aborted upstream transactions never reach the processor.
            consumer_config.set("isolation.level", "read_committed");
            let reset_to_latest =
                matches!(consumer_config.get("auto.offset.reset"), Some("latest" | "largest" | "end"));
            // Half the commit interval, at most 100 ms; per-batch commits keep 5 ms.
            let linger = match config.commit {
                CommitPolicy::Interval { interval_ms } => Duration::from_millis(interval_ms / 2).min(TXN_LINGER_MAX),
                CommitPolicy::PerBatch => Duration::ZERO,
            };
            let producers = transactional_producer_config(brokers, kafka, config.transaction_timeout_ms, linger);
            // Bounded well inside the host's 15 s shutdown, and a revoke's wait.
            let call_timeout = Duration::from_millis(config.transaction_timeout_ms).min(SYNC_COMMIT_TIMEOUT);
            let transactions = Transactions::new(
                producers,
                &config.transactional_id_prefix,
                &config.group,
                call_timeout,
                reset_to_latest,
            );
            Shared::exactly_once(&config.name, transactions)
        } else {
            Shared::new(&config.name)
        });
        let route = FetchRoute::default();
        let consumer: BaseConsumer<FerryContext> = consumer_config
            .create_with_context(FerryContext { listener: shared.clone(), route: route.clone() })
            .with_context(|| format!("failed to create the consumer of pipeline {}", config.name))?;
        // Before subscribing, so that every assignment is routed to it.
        let fetch = FetchQueue::new(&consumer, &route)
            .with_context(|| format!("failed to create the fetch queue of pipeline {}", config.name))?;
        let mut committer = Committer::new(&consumer);
        committer.signal_to(fetch.wake_signal());
        shared.set_committer(committer);
        let topics: Vec<&str> = config.inputs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("failed to subscribe pipeline {} to {topics:?}", config.name))?;
        let producer: Option<OutputProducer> = if config.exactly_once()
            || (config.output_topics.is_empty() && config.failure.dead_letter_topic.is_none())
        {
            None
        } else {
            Some(
                producer_config(brokers, kafka)
                    .create_with_context(AckContext)
                    .with_context(|| format!("failed to create the producer of pipeline {}", config.name))?,
            )
        };
        let component = slot.current();
        shared.stats.set_version(component.digest());
        let provisions = config.provisions();
        shared.stats.set_guest_log(provisions.log.clone());
        let wants_headers = component.wants_headers();
        let instance =
            ProcessorInstance::new(sandbox.clone(), component, &config.name, provisions.clone(), config.limits())
                .keep_spare();
        let runtime = sandbox.runtime().clone();
        let worker = worker::Worker {
            config: config.clone(),
            fetch,
            consumer,
            shared: shared.clone(),
            producer,
            sandbox,
            slot: slot.clone(),
            instance,
            provisions,
            partitions: BTreeMap::new(),
            batch: Batch { topic: String::new(), partition: 0, count: 0, records: Vec::new() },
            wants_headers,
            client_errors: RepeatedErrors::default(),
            restarted: Vec::new(),
            last_commit: Instant::now(),
            batch_finished: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ferry-{}", config.name))
            .spawn({
                let mark = shared::ThreadMark(shared.clone());
                move || {
                    let _mark = mark;
                    worker.run(&runtime)
                }
            })
            .context("failed to spawn the pipeline thread")?;
        Ok(Self { config, shared, slot, thread })
    }

    /// Waits for the pipeline thread to finish (after shutdown was requested).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!(pipeline = %self.config.name, "pipeline thread panicked");
        }
    }

    /// Whether the pipeline thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}
