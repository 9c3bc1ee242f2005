//! A pipeline: `workers` consumer group members (one by default) running one
//! processor over its input topics, each on a thread of its own. Workers share the
//! compiled component and its deployed version (the [`ProcessorSlot`]), the
//! at-least-once output producer and the guest log's rate limit; each has its own
//! consumer, offsets ([`Shared`]), commits and guest instance, so every offset rule
//! holds per member exactly as it does for members in separate processes.
//!
//! | module | concern |
//! |---|---|
//! | [`worker`] | the loop: fetch, dispatch, commit, shut down |
//! | `leave` | the workers of a pipeline leave their group together, after their last commits |
//! | [`intake`] | serving rebalances and errors, taking records into batches |
//! | [`run`] | one batch through the guest, within its time limit, split around faults |
//! | [`settle`] | what each record's outcome means (pure, property-tested) |
//! | [`failure`] | dead letters, halts, rewinds and backoff |
//! | [`partition`] | per-partition state of the loop |
//! | [`shared`] | what the loop shares with Kafka's callbacks: offsets, commits, events |
//! | [`transactions`], `exactly_once`, `held` | exactly-once: a transactional producer per partition, outputs held until their offset can be committed with them |
//! | `stall` | partitions that stop advancing without an error (pure, from librdkafka's statistics) |
//! | [`stats`], [`liveness`] | what metrics, the status page and health checks read |

mod exactly_once;
mod failure;
mod held;
mod intake;
mod leave;
pub(crate) mod liveness;
mod partition;
pub mod run;
pub(crate) mod settle;
pub mod shared;
mod stall;
pub mod state;
pub mod stats;
pub(crate) mod transactions;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use stats::{StatsSnapshot, Timeline};

/// The longest a transactional producer lingers (see `transactional_producer_config`).
const TXN_LINGER_MAX: Duration = Duration::from_millis(100);

/// A running pipeline: its workers, each a member of the group with its own
/// consumer, guest instance and thread.
pub struct Pipeline {
    /// Its configuration.
    pub config: Arc<PipelineConfig>,
    /// The first worker's shared state (stats, offsets): the pipeline's own when it
    /// runs one worker. [`Pipeline::snapshot`] covers every worker.
    pub shared: Arc<Shared>,
    /// Every worker's shared state, in worker order.
    pub workers: Vec<Arc<Shared>>,
    /// Its processor versions, shared by every worker: a deploy or rollback reaches
    /// each at its next batch boundary.
    pub slot: ProcessorSlot,
    threads: Vec<JoinHandle<()>>,
    /// Stops this pipeline's workers alone (the host's stop flag stops them all).
    stop: Arc<AtomicBool>,
}

/// What every worker of one pipeline shares.
struct Common<'a> {
    brokers: &'a str,
    kafka: &'a BTreeMap<String, String>,
    config: &'a Arc<PipelineConfig>,
    sandbox: &'a Sandbox,
    slot: &'a ProcessorSlot,
    /// At-least-once: one producer for every worker. Each output's delivery report
    /// finds its worker's tracker through its [`AckGroup`](crate::kafka::output::AckGroup),
    /// which names the worker's [`Shared`].
    producer: Option<Arc<OutputProducer>>,
    /// One guest log, so the pipeline's log rate limit holds for all workers together.
    provisions: &'a crate::sandbox::Provisions,
    /// Stops this pipeline's workers (see [`Pipeline::stop`]).
    stop: &'a Arc<AtomicBool>,
    /// Whether each worker keeps a spare instance (the pool has room for them).
    spares: bool,
}

impl Pipeline {
    /// Creates the consumers (and the producer, if the pipeline writes anything) and
    /// starts one thread per worker.
    pub fn start(
        brokers: &str,
        kafka: &BTreeMap<String, String>,
        config: PipelineConfig,
        sandbox: Sandbox,
        slot: ProcessorSlot,
        spares: bool,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        if let Some(changelog) = config.changelog_topic() {
            state::ensure_changelog(brokers, kafka, &config.inputs[0], &changelog, sandbox.runtime())
                .with_context(|| format!("pipeline {} did not start", config.name))?;
        }
        let producer = if config.exactly_once()
            || (config.output_topics.is_empty() && config.failure.dead_letter_topic.is_none() && config.state.is_none())
        {
            // Exactly-once: a transactional producer per partition, owned by the
            // worker that owns the partition.
            None
        } else {
            let producer: OutputProducer = producer_config(brokers, kafka)
                .create_with_context(AckContext)
                .with_context(|| format!("failed to create the producer of pipeline {}", config.name))?;
            Some(Arc::new(producer))
        };
        let provisions = config.provisions();
        let stop = Arc::new(AtomicBool::new(false));
        let common = Common {
            brokers,
            kafka,
            config: &config,
            sandbox: &sandbox,
            slot: &slot,
            producer,
            provisions: &provisions,
            stop: &stop,
            spares,
        };
        // Every worker's place at the gate where they leave the group together, made
        // before any starts: the places of workers that never start are given up
        // (dropped), so that the others do not wait for them.
        let gate = leave::Gate::new(config.workers);
        let mut departures = (0..config.workers).map(|_| leave::Departure::at(&gate)).collect::<Vec<_>>().into_iter();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..config.workers {
            let departure = departures.next().expect("one place per worker");
            match common.start_worker(index, departure) {
                Ok((shared, thread)) => {
                    workers.push(shared);
                    threads.push(thread);
                }
                Err(error) => {
                    drop(departures);
                    let started = threads.len();
                    stop_workers(&stop, threads, &config.name);
                    return Err(error.context(match started {
                        0 => format!("pipeline {} did not start", config.name),
                        n => format!(
                            "pipeline {} did not start; the {n} worker(s) started before this one were stopped \
                             (they committed what they finished and left the group)",
                            config.name
                        ),
                    }));
                }
            }
        }
        Ok(Self { config, shared: workers[0].clone(), workers, slot, threads, stop })
    }

    /// Stops this pipeline alone and waits for its workers: each drains, commits and
    /// leaves the group, as on shutdown.
    pub fn stop(self) {
        stop_workers(&self.stop, self.threads, &self.config.name);
    }

    /// Every worker's figures, added up into the pipeline's (see [`StatsSnapshot::merge`]).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot::merge(self.workers.iter().map(|w| w.stats.snapshot()).collect())
    }

    /// Records processed by every worker since start (one atomic read per worker).
    pub fn processed_total(&self) -> u64 {
        self.workers.iter().map(|w| w.stats.processed_total()).sum()
    }

    /// The first assignment and first batch of any worker, and the latest batch.
    pub fn timeline(&self) -> Timeline {
        Timeline::merge(self.workers.iter().map(|w| w.stats.timeline()))
    }

    /// Whether every worker received an assignment (possibly empty) from the group.
    pub fn joined(&self) -> bool {
        self.workers.iter().all(|w| w.stats.liveness().snapshot().joined)
    }
    /// Waits for every worker thread to finish (after shutdown was requested).
    pub fn join(self) {
        for (index, thread) in self.threads.into_iter().enumerate() {
            if thread.join().is_err() {
                tracing::error!(pipeline = %self.config.name, worker = index, "pipeline thread panicked");
            }
        }
    }

    /// Whether every worker thread has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

/// Asks workers to stop (through `stop`) and waits for their threads.
fn stop_workers(stop: &AtomicBool, threads: Vec<JoinHandle<()>>, pipeline: &str) {
    stop.store(true, Ordering::Relaxed);
    for (index, thread) in threads.into_iter().enumerate() {
        if thread.join().is_err() {
            tracing::error!(pipeline, worker = index, "pipeline thread panicked");
        }
    }
}

impl Common<'_> {
    /// Who worker `index` is, in errors.
    fn member(&self, index: usize) -> String {
        match self.config.workers {
            1 => format!("pipeline {}", self.config.name),
            _ => format!("pipeline {} (worker {index})", self.config.name),
        }
    }

    /// Creates worker `index`'s consumer, commit queue and guest instance (and its
    /// transactional producers, for exactly-once) and starts its thread.
    fn start_worker(&self, index: usize, departure: leave::Departure) -> anyhow::Result<(Arc<Shared>, JoinHandle<()>)> {
        let Self { brokers, kafka, config, .. } = *self;
        let who = self.member(index);
        let label = (config.workers > 1).then_some(index);
        let mut consumer_config = consumer_config(brokers, &config.group, kafka, &config.worker_kafka(kafka, index));
        let shared = Arc::new(
            if config.exactly_once() {
                // Records of aborted upstream transactions never reach the processor.
                consumer_config.set("isolation.level", "read_committed");
                let reset_to_latest =
                    matches!(consumer_config.get("auto.offset.reset"), Some("latest" | "largest" | "end"));
                // Half the commit interval, at most 100 ms; per-batch commits keep 5 ms.
                let linger = match config.commit {
                    CommitPolicy::Interval { interval_ms } => {
                        Duration::from_millis(interval_ms / 2).min(TXN_LINGER_MAX)
                    }
                    CommitPolicy::PerBatch => Duration::ZERO,
                };
                let producers = transactional_producer_config(brokers, kafka, config.transaction_timeout_ms, linger);
                // Bounded well inside the host's 15 s shutdown, and a revoke's wait.
                let call_timeout = Duration::from_millis(config.transaction_timeout_ms).min(SYNC_COMMIT_TIMEOUT);
                // The transactional id names the partition, which one member owns at
                // a time: workers need no ids of their own.
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
            }
            .of_worker(label),
        );
        let route = FetchRoute::default();
        let consumer: BaseConsumer<FerryContext> = consumer_config
            .create_with_context(FerryContext { listener: shared.clone(), route: route.clone() })
            .with_context(|| format!("failed to create the consumer of {who}"))?;
        // Before subscribing, so that every assignment is routed to it.
        let fetch =
            FetchQueue::new(&consumer, &route).with_context(|| format!("failed to create the fetch queue of {who}"))?;
        let mut committer = Committer::new(&consumer);
        committer.signal_to(fetch.wake_signal());
        shared.set_committer(committer);
        let topics: Vec<&str> = config.inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).with_context(|| format!("failed to subscribe {who} to {topics:?}"))?;
        let component = self.slot.current();
        shared.stats.set_version(component.digest());
        shared.stats.set_guest_log(self.provisions.log.clone());
        shared.stats.set_http_meter(self.provisions.http_meter.clone());
        let wants_headers = component.wants_headers();
        let instance = ProcessorInstance::new(
            self.sandbox.clone(),
            component,
            &config.name,
            self.provisions.clone(),
            config.limits(),
        )
        .of_worker(label)
        .keep_spare(self.spares);
        let runtime = self.sandbox.runtime().clone();
        let state_generation = self.slot.current_and_state_generation().1;
        let worker = worker::Worker {
            config: (*config).clone(),
            fetch,
            consumer,
            shared: shared.clone(),
            producer: self.producer.clone(),
            sandbox: self.sandbox.clone(),
            slot: self.slot.clone(),
            instance,
            provisions: self.provisions.clone(),
            partitions: BTreeMap::new(),
            batch: Batch { topic: String::new(), partition: 0, count: 0, records: Vec::new() },
            wants_headers,
            client_errors: RepeatedErrors::default(),
            restarted: Vec::new(),
            untold_revokes: Vec::new(),
            next_due: None,
            results_polled: Instant::now(),
            stalls: Default::default(),
            last_commit: Instant::now(),
            batch_finished: false,
            departure,
            stop: self.stop.clone(),
            state: config.changelog_topic().map(|changelog| {
                state::StateKeeper::new(changelog, config.limits().state, brokers, kafka, state_generation)
            }),
            state_generation,
            shadow: None,
        };
        let name = match label {
            None => format!("ferry-{}", config.name),
            Some(index) => format!("ferry-{}-{index}", config.name),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn({
                let mark = shared::ThreadMark(shared.clone());
                move || {
                    let _mark = mark;
                    worker.run(&runtime)
                }
            })
            .with_context(|| format!("failed to spawn the thread of {who}"))?;
        Ok((shared, thread))
    }
}
