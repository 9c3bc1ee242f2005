//! Counters and gauges of one pipeline, written by the pipeline thread and the Kafka
//! callbacks, read by metrics, the status page and the demo.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::liveness::Liveness;
use crate::kafka::client_log::{BrokersDown, ClientLog, ClientLogOwner};
use crate::kafka::tracker::TopicPartition;
use crate::sandbox::{GuestFault, TenantLog};
use crate::sync::lock;

/// Upper bounds of the batch latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000];

/// How many recent failures the status page shows.
const RECENT_FAILURES: usize = 50;

/// Per-partition figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Whether this member owns the partition now.
    pub assigned: bool,
    /// Next offset the consumer will read (last delivered + 1).
    pub position: Option<i64>,
    /// Last offset committed by this member.
    pub committed: Option<i64>,
    /// Records processed by the guest.
    pub processed: u64,
    /// Records marked retry.
    pub retried: u64,
    /// Records rejected.
    pub failed: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Why the partition is halted, if it is.
    pub halted: Option<String>,
    /// How it stopped advancing without an error, if it did (see `pipeline::stall`).
    pub stalled: Option<String>,
    /// Its keyed state in memory, for a pipeline with state.
    pub state: Option<StateFigures>,
}

/// A partition's keyed state in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateFigures {
    /// Keys held.
    pub keys: usize,
    /// Bytes held, as the state limits count them.
    pub bytes: usize,
    /// Being restored from the changelog now.
    pub restoring: bool,
}

/// One failure, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureNote {
    /// Seconds since the epoch.
    pub at_unix: u64,
    /// Where.
    pub topic: String,
    /// Where.
    pub partition: i32,
    /// Which record, if one.
    pub offset: Option<i64>,
    /// What happened: "reject", "retry", "dead-letter", "halt", or a fault kind.
    pub kind: String,
    /// Why.
    pub reason: String,
}

/// When things first and last happened (see [`PipelineStats::timeline`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeline {
    /// The first partition assignment.
    pub first_assignment: Option<Instant>,
    /// The first batch: when it finished, and the records it processed.
    pub first_batch: Option<(Instant, u64)>,
    /// When the latest batch finished.
    pub last_batch: Option<Instant>,
    /// When the latest commit result that moved an offset came back.
    pub last_commit: Option<Instant>,
}

impl Timeline {
    /// The timeline of several workers together: the first assignment and first batch
    /// of any of them, and the latest batch and commit result of all.
    pub fn merge(timelines: impl IntoIterator<Item = Timeline>) -> Timeline {
        timelines.into_iter().fold(Timeline::default(), |a, b| Timeline {
            first_assignment: a.first_assignment.into_iter().chain(b.first_assignment).min(),
            first_batch: a.first_batch.into_iter().chain(b.first_batch).min_by_key(|(at, _)| *at),
            last_batch: a.last_batch.max(b.last_batch),
            last_commit: a.last_commit.max(b.last_commit),
        })
    }
}

/// All figures of one pipeline worker (of the pipeline, when it runs one).
#[derive(Debug, Default)]
pub struct PipelineStats {
    batches: AtomicU64,
    processed: AtomicU64,
    timeline: Mutex<Timeline>,
    rebalances: AtomicU64,
    commit_failures: AtomicU64,
    transactions_committed: AtomicU64,
    transaction_commit_us: AtomicU64,
    transactions_aborted: AtomicU64,
    consumer_errors: AtomicU64,
    recycles: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    faults: Mutex<BTreeMap<String, u64>>,
    partitions: Mutex<BTreeMap<TopicPartition, PartitionStats>>,
    recent: Mutex<VecDeque<FailureNote>>,
    version: Mutex<String>,
    liveness: Liveness,
    guest_log: Mutex<Option<Arc<TenantLog>>>,
    http_meter: Mutex<Option<Arc<crate::sandbox::capability::http::HttpMeter>>>,
    /// What librdkafka said about the consumer, and whether its brokers are down.
    client_log: ClientLog,
}

impl PipelineStats {
    /// A partition was assigned.
    pub fn assigned(&self, topic: &str, partition: i32) {
        lock(&self.timeline).first_assignment.get_or_insert_with(Instant::now);
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_owned(), partition)).or_default();
        p.assigned = true;
        p.halted = None;
        p.stalled = None;
    }

    /// A partition was revoked.
    pub fn revoked(&self, topic: &str, partition: i32) {
        if let Some(p) = lock(&self.partitions).get_mut(&(topic.to_owned(), partition)) {
            p.assigned = false;
            p.halted = None;
            p.stalled = None;
        }
    }

    /// A partition's state in memory: its size, or that it is being restored.
    pub fn state_figures(&self, topic: &str, partition: i32, keys: usize, bytes: usize, restoring: bool) {
        let mut parts = lock(&self.partitions);
        parts.entry((topic.to_owned(), partition)).or_default().state = Some(StateFigures { keys, bytes, restoring });
    }

    /// A partition's state left memory (revoked).
    pub fn state_dropped(&self, topic: &str, partition: i32) {
        if let Some(p) = lock(&self.partitions).get_mut(&(topic.to_owned(), partition)) {
            p.state = None;
        }
    }

    /// Whether a partition's state is being restored now.
    pub fn restoring(&self) -> bool {
        lock(&self.partitions).values().any(|p| p.state.is_some_and(|s| s.restoring))
    }

    /// A rebalance took partitions away.
    pub fn rebalanced(&self) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
    }

    /// A commit landed.
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_owned(), partition)).or_default();
        if p.committed.is_none_or(|c| offset > c) {
            lock(&self.timeline).last_commit = Some(Instant::now());
        }
        p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
    }

    /// A commit failed.
    pub fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A partition's transaction committed (exactly-once), its commit taking `took`.
    pub fn transaction_committed(&self, took: Duration) {
        self.transactions_committed.fetch_add(1, Ordering::Relaxed);
        self.transaction_commit_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A partition's transaction was aborted, or its producer given up on
    /// (exactly-once): its records are processed again from the committed offset.
    pub fn transaction_aborted(&self) {
        self.transactions_aborted.fetch_add(1, Ordering::Relaxed);
    }

    /// The consumer reported an error (a broker down, a partition error, ...).
    pub fn consumer_error(&self) {
        self.consumer_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records processed over all partitions since start: one atomic read, for
    /// watchers that poll often (the benchmarks).
    pub fn processed_total(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// When partitions were first assigned and when the first and the latest batch
    /// finished, so a watcher that looks now and then still knows exactly when.
    pub fn timeline(&self) -> Timeline {
        *lock(&self.timeline)
    }

    /// A batch finished in `elapsed` with these counts.
    pub fn batch(&self, topic: &str, partition: i32, position: i64, counts: BatchCounts, elapsed: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.processed.fetch_add(counts.processed, Ordering::Relaxed);
        let us = elapsed.as_micros() as u64;
        let bucket = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        {
            let now = Instant::now();
            let mut times = lock(&self.timeline);
            times.first_batch.get_or_insert((now, counts.processed));
            times.last_batch = Some(now);
        }
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_owned(), partition)).or_default();
        p.position = Some(p.position.map_or(position, |q| q.max(position)));
        p.processed += counts.processed;
        p.retried += counts.retried;
        p.failed += counts.failed;
    }

    /// A record was dead-lettered.
    pub fn dead_lettered(&self, topic: &str, partition: i32) {
        lock(&self.partitions).entry((topic.to_owned(), partition)).or_default().dead_lettered += 1;
    }

    /// A partition was halted.
    pub fn halted(&self, topic: &str, partition: i32, reason: &str) {
        lock(&self.partitions).entry((topic.to_owned(), partition)).or_default().halted = Some(reason.to_owned());
    }

    /// A partition stopped advancing without an error (`Some`: how), or advances again.
    pub fn stalled(&self, topic: &str, partition: i32, how: Option<&str>) {
        lock(&self.partitions).entry((topic.to_owned(), partition)).or_default().stalled = how.map(str::to_owned);
    }

    /// A guest faulted.
    pub fn fault(&self, fault: &GuestFault) {
        *lock(&self.faults).entry(fault.kind().to_string()).or_default() += 1;
        self.recycles.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failure for the status page.
    pub fn note(&self, topic: &str, partition: i32, offset: Option<i64>, kind: &str, reason: &str) {
        let at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(FailureNote {
            at_unix,
            topic: topic.to_owned(),
            partition,
            offset,
            kind: kind.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Sets the running component version (digest).
    pub fn set_version(&self, digest: &str) {
        *lock(&self.version) = digest.to_owned();
    }

    /// The pipeline's outgoing requests, whose counters metrics show.
    pub fn set_http_meter(&self, meter: Arc<crate::sandbox::capability::http::HttpMeter>) {
        *lock(&self.http_meter) = Some(meter);
    }

    /// The pipeline's guest log, whose counters metrics show.
    pub fn set_guest_log(&self, log: Arc<TenantLog>) {
        *lock(&self.guest_log) = Some(log);
    }

    /// Whether the pipeline thread is alive and turning (for `/healthz`, `/readyz`).
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// The consumer's log state: written by its context, read for `brokers_down`.
    pub fn client_log(&self) -> &ClientLog {
        &self.client_log
    }

    /// A consistent copy of everything.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            rebalances: self.rebalances.load(Ordering::Relaxed),
            commit_failures: self.commit_failures.load(Ordering::Relaxed),
            transactions_committed: self.transactions_committed.load(Ordering::Relaxed),
            transaction_commit_us: self.transaction_commit_us.load(Ordering::Relaxed),
            transactions_aborted: self.transactions_aborted.load(Ordering::Relaxed),
            consumer_errors: self.consumer_errors.load(Ordering::Relaxed),
            recycles: self.recycles.load(Ordering::Relaxed),
            latency_buckets: self.latency_buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            faults: lock(&self.faults).clone(),
            partitions: lock(&self.partitions).clone(),
            recent: lock(&self.recent).iter().cloned().collect(),
            version: lock(&self.version).clone(),
            guest_log_lines: lock(&self.guest_log).as_ref().map_or((0, 0), |l| (l.written(), l.dropped())),
            brokers_down: self.client_log.brokers_down(),
            http: lock(&self.http_meter).as_ref().map(|m| {
                let (duration_buckets, duration_sum_us) = m.durations();
                HttpFigures {
                    requests: m.requests(),
                    errors: m.errors(),
                    bytes: m.bytes(),
                    in_flight: m.in_flight(),
                    duration_buckets,
                    duration_sum_us,
                }
            }),
        }
    }
}

/// Per-batch counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Processed records.
    pub processed: u64,
    /// Retry records.
    pub retried: u64,
    /// Rejected records.
    pub failed: u64,
}

/// A copy of a pipeline's figures.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    /// Batches run.
    pub batches: u64,
    /// Rebalances that revoked partitions.
    pub rebalances: u64,
    /// Commits that failed or timed out.
    pub commit_failures: u64,
    /// Transactions committed (exactly-once pipelines).
    pub transactions_committed: u64,
    /// Time spent committing them (sending the offsets and committing), in µs.
    pub transaction_commit_us: u64,
    /// Transactions aborted or lost with their producer (exactly-once pipelines).
    pub transactions_aborted: u64,
    /// Errors the consumer reported.
    pub consumer_errors: u64,
    /// Instances discarded after a fault.
    pub recycles: u64,
    /// Batch latency histogram counts, per [`LATENCY_BUCKETS_US`] plus +Inf.
    pub latency_buckets: Vec<u64>,
    /// Sum of batch latencies.
    pub latency_sum_us: u64,
    /// Guest faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Per-partition figures.
    pub partitions: BTreeMap<TopicPartition, PartitionStats>,
    /// Recent failures, oldest first.
    pub recent: Vec<FailureNote>,
    /// Running component digest.
    pub version: String,
    /// Guest log lines written and dropped by the rate limit, since start.
    pub guest_log_lines: (u64, u64),
    /// Since when, and why, the consumer reaches no broker, if it does not.
    pub brokers_down: Option<BrokersDown>,
    /// Outgoing requests since start (shared by the workers, like the log).
    pub http: Option<HttpFigures>,
}

/// A pipeline's outgoing HTTP since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpFigures {
    /// Requests by matched rule (`-`: none) and end (status class or `error`).
    pub requests: Vec<(String, &'static str, u64)>,
    /// Requests or bodies that ended in an error, by kind.
    pub errors: Vec<(&'static str, u64)>,
    /// Bytes sent and received.
    pub bytes: u64,
    /// Requests started and not finished.
    pub in_flight: u64,
    /// Finished requests per bucket of `http::DURATION_BUCKETS_US` (and one past it).
    pub duration_buckets: Vec<u64>,
    /// Their durations added up, in µs.
    pub duration_sum_us: u64,
}

impl StatsSnapshot {
    /// The figures of a pipeline's workers added up (in worker order): counters are
    /// summed; a partition's offsets come from the worker that owns it now (or the
    /// furthest, if none does); the version is the first worker's (each worker's is
    /// in its own snapshot); the guest log, which the workers share, is counted once.
    pub fn merge(workers: Vec<StatsSnapshot>) -> StatsSnapshot {
        let mut workers = workers.into_iter();
        let Some(mut total) = workers.next() else { return StatsSnapshot::default() };
        for w in workers {
            total.batches += w.batches;
            total.rebalances += w.rebalances;
            total.commit_failures += w.commit_failures;
            total.transactions_committed += w.transactions_committed;
            total.transaction_commit_us += w.transaction_commit_us;
            total.transactions_aborted += w.transactions_aborted;
            total.consumer_errors += w.consumer_errors;
            total.recycles += w.recycles;
            for (sum, count) in total.latency_buckets.iter_mut().zip(&w.latency_buckets) {
                *sum += count;
            }
            total.latency_sum_us += w.latency_sum_us;
            for (kind, count) in w.faults {
                *total.faults.entry(kind).or_default() += count;
            }
            for (key, row) in w.partitions {
                let sum = total.partitions.entry(key).or_default();
                if row.assigned {
                    sum.position = row.position;
                    sum.halted = row.halted;
                } else if !sum.assigned {
                    sum.position = sum.position.max(row.position);
                }
                sum.assigned |= row.assigned;
                sum.committed = sum.committed.max(row.committed);
                sum.processed += row.processed;
                sum.retried += row.retried;
                sum.failed += row.failed;
                sum.dead_lettered += row.dead_lettered;
            }
            total.recent.extend(w.recent);
            total.guest_log_lines = total.guest_log_lines.max(w.guest_log_lines);
            total.http = total.http.take().or(w.http);
            total.brokers_down = match (total.brokers_down.take(), w.brokers_down) {
                (Some(a), Some(b)) => Some(if b.since < a.since { b } else { a }),
                (a, b) => a.or(b),
            };
        }
        total.recent.sort_by_key(|note| note.at_unix);
        let excess = total.recent.len().saturating_sub(RECENT_FAILURES);
        total.recent.drain(..excess);
        total
    }
}

/// The consumer context finds the pipeline's client log through the pipeline.
impl ClientLogOwner for super::Shared {
    fn client_name(&self) -> &str {
        &self.pipeline
    }

    fn client_log(&self) -> &ClientLog {
        self.stats.client_log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(assigned: bool, position: i64, committed: i64, processed: u64) -> PartitionStats {
        PartitionStats {
            assigned,
            position: Some(position),
            committed: Some(committed),
            processed,
            ..Default::default()
        }
    }

    /// Partition 0 moved from worker 0 to worker 1: its offsets are the new owner's,
    /// its counts both workers'.
    #[test]
    fn workers_add_up_and_the_owner_tells_the_offsets() {
        let tp = |p: i32| ("t".to_owned(), p);
        let first = StatsSnapshot {
            batches: 3,
            latency_buckets: vec![1, 2],
            faults: BTreeMap::from([("panic".to_owned(), 1)]),
            partitions: BTreeMap::from([(tp(0), row(false, 40, 40, 40)), (tp(1), row(true, 7, 5, 7))]),
            version: "v1".to_owned(),
            guest_log_lines: (9, 1),
            ..Default::default()
        };
        let second = StatsSnapshot {
            batches: 2,
            latency_buckets: vec![0, 5],
            faults: BTreeMap::from([("panic".to_owned(), 2), ("timeout".to_owned(), 1)]),
            partitions: BTreeMap::from([(tp(0), row(true, 30, 30, 10))]),
            version: "v2".to_owned(),
            guest_log_lines: (9, 1),
            ..Default::default()
        };
        let total = StatsSnapshot::merge(vec![first, second]);
        assert_eq!(total.batches, 5);
        assert_eq!(total.latency_buckets, [1, 7]);
        assert_eq!(total.faults, BTreeMap::from([("panic".to_owned(), 3), ("timeout".to_owned(), 1)]));
        let zero = &total.partitions[&tp(0)];
        assert_eq!((zero.assigned, zero.position, zero.committed, zero.processed), (true, Some(30), Some(40), 50));
        assert_eq!(total.partitions[&tp(1)], row(true, 7, 5, 7));
        assert_eq!(total.version, "v1", "the first worker's");
        assert_eq!(total.guest_log_lines, (9, 1), "one shared log, counted once");
        assert_eq!(StatsSnapshot::merge(Vec::new()).batches, 0);
    }

    #[test]
    fn timelines_take_the_first_start_and_the_latest_batch() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let a = Timeline {
            first_assignment: Some(later),
            first_batch: Some((later, 5)),
            last_batch: Some(later),
            last_commit: None,
        };
        let b = Timeline {
            first_assignment: Some(t0),
            first_batch: Some((t0, 3)),
            last_batch: Some(t0),
            last_commit: Some(later),
        };
        let merged = Timeline::merge([a, b, Timeline::default()]);
        assert_eq!(
            merged,
            Timeline {
                first_assignment: Some(t0),
                first_batch: Some((t0, 3)),
                last_batch: Some(later),
                last_commit: Some(later),
            }
        );
    }
}
