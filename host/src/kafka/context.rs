//! The consumer context: state shared between the pipeline loop, rebalance
//! callbacks (which run inside `poll` on the pipeline thread) and delivery reports
//! (which run on the producer's thread).
//!
//! On revoke it waits briefly for the revoked partitions' output acks, commits their
//! finished offsets synchronously (bounded), and forgets them: a member never commits
//! for a partition it no longer owns.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::commit::{CommitResult, Committer};
use super::fetch::FetchRoute;
use super::tracker::{OffsetTracker, SpanId, TopicPartition};
use crate::pipeline::stats::PipelineStats;

/// How long a revoke waits for in-flight output acks before committing what is done.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a revoke or shutdown commit may take.
pub const SYNC_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Things callbacks tell the pipeline loop.
#[derive(Debug, Default)]
pub struct Events {
    /// Partitions revoked since the loop last looked.
    pub revoked: Vec<TopicPartition>,
    /// Partitions whose output records could not be delivered: halt them.
    pub delivery_failed: Vec<TopicPartition>,
}

/// State shared by the pipeline loop and the Kafka callbacks.
pub struct Shared {
    /// Pipeline name, for logs.
    pub pipeline: String,
    tracker: Mutex<OffsetTracker>,
    committer: Mutex<Option<Committer>>,
    events: Mutex<Events>,
    /// Counters and gauges for metrics and the status page.
    pub stats: PipelineStats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("pipeline", &self.pipeline).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Fresh state for `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            tracker: Mutex::default(),
            committer: Mutex::default(),
            events: Mutex::default(),
            stats: PipelineStats::default(),
        }
    }

    /// The offset tracker. Never hold it across `poll` or a wait.
    pub fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        lock(&self.tracker)
    }

    /// Takes what callbacks reported since the last call.
    pub fn take_events(&self) -> Events {
        std::mem::take(&mut *lock(&self.events))
    }

    /// Installs the commit queue (once the consumer exists).
    pub fn set_committer(&self, committer: Committer) {
        *lock(&self.committer) = Some(committer);
    }

    /// Destroys the commit queue. librdkafka cannot destroy a client while a queue
    /// of it is alive, so this must happen before the consumer is dropped; later
    /// commit attempts (the final revoke) are no-ops.
    pub fn close_committer(&self) {
        lock(&self.committer).take();
    }

    /// Called when every output record of a group was acknowledged (or failed).
    pub fn outputs_settled(&self, topic: &str, partition: i32, span: Option<SpanId>, offsets: &[i64], failed: bool) {
        if failed {
            // Never commit past records whose outputs are not safe: keep the span
            // held and halt the partition; a restart redelivers from the commit.
            lock(&self.events).delivery_failed.push((topic.to_owned(), partition));
            return;
        }
        let mut tracker = self.tracker();
        // The partition may have been revoked meanwhile: then there is nothing to do.
        if let Some(p) = tracker.get_mut(topic, partition) {
            if let Some(span) = span {
                p.release(span);
            }
            for &offset in offsets {
                p.finish(offset);
            }
        }
    }

    /// Sends an asynchronous commit of every partition whose bookmark moved.
    pub fn commit_async<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let list = self.commit_list(None);
        let mut committer = lock(&self.committer);
        let Some(committer) = committer.as_mut() else { return };
        let results = committer.poll(Duration::ZERO);
        self.apply(results);
        if let Some(list) = list
            && let Err(error) = committer.send(consumer, &list)
        {
            tracing::warn!(pipeline = %self.pipeline, %error, "commit request failed");
        }
    }

    /// Collects results of earlier commits without waiting; returns how many commit
    /// requests are still waiting for theirs.
    pub fn poll_commits(&self) -> usize {
        let (results, in_flight) = match lock(&self.committer).as_mut() {
            Some(committer) => (committer.poll(Duration::ZERO), committer.in_flight()),
            None => return 0,
        };
        self.apply(results);
        in_flight
    }

    /// Commits the finished offsets of `only` (or of every partition) and waits up
    /// to `timeout` for the broker's answer.
    pub fn commit_sync<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[TopicPartition]>,
        timeout: Duration,
    ) {
        let Some(list) = self.commit_list(only) else { return };
        let results = match lock(&self.committer).as_mut() {
            Some(committer) => committer.commit_and_wait(consumer, &list, timeout),
            None => return,
        };
        match results {
            Ok(results) => self.apply(results),
            Err(error) => {
                self.stats.commit_failed();
                tracing::warn!(pipeline = %self.pipeline, %error, "synchronous commit did not complete");
            }
        }
    }

    fn commit_list(&self, only: Option<&[TopicPartition]>) -> Option<TopicPartitionList> {
        let tracker = self.tracker();
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in tracker.commit_candidates() {
            if only.is_none_or(|only| only.iter().any(|(t, p)| t == &topic && *p == partition)) {
                list.add_partition_offset(&topic, partition, Offset::Offset(offset)).expect("valid offset");
            }
        }
        (list.count() > 0).then_some(list)
    }

    fn apply(&self, results: Vec<CommitResult>) {
        if results.is_empty() {
            return;
        }
        let mut tracker = self.tracker();
        for result in results {
            for (topic, partition, offset) in &result.committed {
                if let Some(p) = tracker.get_mut(topic, *partition) {
                    p.mark_committed(*offset);
                }
                self.stats.committed(topic, *partition, *offset);
            }
            if !result.errors.is_empty() {
                self.stats.commit_failed();
                tracing::warn!(pipeline = %self.pipeline, errors = ?result.errors, "commit failed; will retry with the next commit");
            }
        }
    }

    fn on_revoke<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, revoked: Vec<TopicPartition>) {
        self.stats.rebalanced();
        if consumer.assignment_lost() {
            // Another member may already own them: committing now could move its
            // bookmark backwards. Forget them; what was not committed is redelivered.
            tracing::warn!(pipeline = %self.pipeline, partitions = ?revoked, "assignment lost; not committing");
        } else {
            let deadline = Instant::now() + REVOKE_DRAIN_TIMEOUT;
            while self.holds_any(&revoked) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.commit_sync(consumer, Some(&revoked), SYNC_COMMIT_TIMEOUT);
        }
        let mut tracker = self.tracker();
        for (topic, partition) in &revoked {
            tracker.remove(topic, *partition);
            self.stats.revoked(topic, *partition);
        }
        drop(tracker);
        tracing::info!(pipeline = %self.pipeline, partitions = ?revoked, "partitions revoked");
        lock(&self.events).revoked.extend(revoked);
    }

    fn holds_any(&self, partitions: &[TopicPartition]) -> bool {
        let tracker = self.tracker();
        partitions.iter().any(|(t, p)| tracker.get(t, *p).is_some_and(|p| p.has_holds()))
    }
}

/// The consumer context of a pipeline.
pub struct FerryContext {
    /// The shared state.
    pub shared: std::sync::Arc<Shared>,
    /// Where assigned partitions' records go (the pipeline's fetch queue).
    pub route: FetchRoute,
}

impl ClientContext for FerryContext {}

impl ConsumerContext for FerryContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                self.shared.on_revoke(consumer, revoked);
            }
            Rebalance::Assign(list) => {
                self.shared.stats.liveness().joined();
                let assigned: Vec<_> = list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                for (topic, partition) in &assigned {
                    // Before librdkafka starts fetching it (right after this callback).
                    self.route.route(consumer, topic, *partition);
                    self.shared.stats.assigned(topic, *partition);
                }
                tracing::info!(pipeline = %self.shared.pipeline, partitions = ?assigned, "partitions assigned");
            }
            Rebalance::Error(error) => {
                tracing::warn!(pipeline = %self.shared.pipeline, %error, "rebalance error");
            }
        }
    }
}
