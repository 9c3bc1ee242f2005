//! What a pipeline's thread shares with the Kafka callbacks that run elsewhere: the
//! offset tracker, the committer, events for the loop, and the stats. Rebalance
//! callbacks run on the pipeline thread inside `poll`; delivery reports run on the
//! producer's thread.
//!
//! On revoke it waits briefly for the revoked partitions' outputs and dead letters,
//! commits their finished offsets synchronously (bounded), and forgets them: a
//! member never commits for a partition it no longer owns, and a lost assignment is
//! not committed at all.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::stats::PipelineStats;
use super::transactions::Transactions;
use crate::kafka::client_log::PartitionFetch;
use crate::kafka::commit::{CommitResult, Committer};
use crate::kafka::context::{FerryContext, RebalanceListener, SYNC_COMMIT_TIMEOUT};
use crate::kafka::output::{AckListener, Settled};
use crate::kafka::tracker::{Epoch, OffsetTracker, TopicPartition};
use crate::kafka::transaction::Recovery;
use crate::sync::lock;

/// How long a revoke waits for in-flight outputs and dead letters before it commits
/// what is done.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the revoke drain looks again.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// Things callbacks tell the pipeline loop.
#[derive(Debug, Default)]
pub struct Events {
    /// Partitions revoked since the loop last looked.
    pub revoked: Vec<TopicPartition>,
    /// Partitions assigned since the loop last looked.
    pub assigned: Vec<TopicPartition>,
    /// Output records of this assignment could not be delivered: halt it.
    pub delivery_failed: Vec<(TopicPartition, Epoch)>,
    /// Where the consumer fetches its partitions, from its latest statistics.
    pub fetching: Option<Vec<PartitionFetch>>,
}

/// A partition whose transaction did not commit.
#[derive(Debug)]
pub struct FailedTransaction {
    /// The partition.
    pub key: TopicPartition,
    /// How to go on.
    pub recovery: Recovery,
    /// Whether the broker refused an output of the transaction for good (it would
    /// be refused again after a rewind): the partition halts.
    pub refused_for_good: bool,
}

/// How many threads commit a worker's transactions side by side.
const COMMITS_AT_ONCE: usize = 8;

/// One partition's commit: what it commits, with which producer, and how it went.
struct CommitJob<'a> {
    key: TopicPartition,
    epoch: Epoch,
    offset: i64,
    producer: &'a mut crate::kafka::transaction::TxnProducer,
    outcome: Option<(Result<(), Recovery>, Duration)>,
}

/// State shared by the pipeline loop and the Kafka callbacks.
pub struct Shared {
    /// Pipeline name, for logs.
    pub pipeline: String,
    /// Which worker of the pipeline this is, when it runs more than one (for logs
    /// and metrics; `None` keeps one worker's logs as they were).
    pub worker: Option<usize>,
    tracker: Mutex<OffsetTracker>,
    committer: Mutex<Option<Committer>>,
    events: Mutex<Events>,
    /// The transactions of an exactly-once pipeline; `None` for at-least-once.
    transactions: Option<Mutex<Transactions>>,
    /// Counters and gauges for metrics and the status page.
    pub stats: PipelineStats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("pipeline", &self.pipeline).finish_non_exhaustive()
    }
}

impl Shared {
    /// Fresh state for `pipeline`.
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            worker: None,
            tracker: Mutex::default(),
            committer: Mutex::default(),
            events: Mutex::default(),
            transactions: None,
            stats: PipelineStats::default(),
        }
    }

    /// The same, for worker `worker` of a pipeline that runs more than one.
    pub fn of_worker(self, worker: Option<usize>) -> Self {
        Self { worker, ..self }
    }

    /// Fresh state for an exactly-once pipeline.
    pub fn exactly_once(pipeline: &str, transactions: Transactions) -> Self {
        Self { transactions: Some(Mutex::new(transactions)), ..Self::new(pipeline) }
    }

    /// The transactions, if the pipeline is exactly-once. Only the pipeline thread
    /// (and the rebalance callbacks it runs) takes this lock.
    pub fn transactions(&self) -> Option<MutexGuard<'_, Transactions>> {
        self.transactions.as_ref().map(lock)
    }

    /// Commits the transactions of `only` (or of every ready partition): each
    /// partition's outputs with its watermark as the committed offset. Returns the
    /// partitions whose transaction failed, and how to recover.
    ///
    /// The partitions' transactions are independent (a producer each), and a commit
    /// waits for the broker (the outputs' acknowledgements, then the coordinator):
    /// several commit side by side ([`COMMITS_AT_ONCE`] threads), so that with many
    /// partitions each transaction still commits long before its timeout, and the
    /// loop waits for the slowest commit rather than for their sum.
    pub fn commit_transactions<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[TopicPartition]>,
    ) -> Vec<FailedTransaction> {
        let Some(mut transactions) = self.transactions() else { return Vec::new() };
        let timeout = transactions.call_timeout;
        // What each partition commits: the watermark, which covers every output
        // released into the transaction (they are released only below it). Only
        // where it moved past the last commit and past where tracking began (a
        // transaction with nothing finished in it has nothing to commit), or where a
        // transaction is open.
        let mut due: Vec<(TopicPartition, Epoch, i64)> = Vec::new();
        for key in transactions.ready() {
            if only.is_some_and(|only| !only.contains(&key)) {
                continue;
            }
            let Some((epoch, offset, moved)) = self
                .tracker()
                .get(&key.0, key.1)
                .map(|p| (p.epoch(), p.watermark(), p.commit_candidate().is_some_and(|w| w > p.started_at())))
            else {
                continue;
            };
            if moved || transactions.producer(&key).is_some_and(|p| p.is_open()) {
                due.push((key, epoch, offset));
            }
        }
        if due.is_empty() {
            return Vec::new();
        }
        let Some(group) = consumer.group_metadata() else {
            let recovery = || Recovery::Rewind("the consumer has no group metadata".to_owned());
            return due
                .into_iter()
                .map(|(key, ..)| FailedTransaction { key, recovery: recovery(), refused_for_good: false })
                .collect();
        };
        let keys: Vec<TopicPartition> = due.iter().map(|(key, ..)| key.clone()).collect();
        let mut jobs: Vec<CommitJob<'_>> = transactions
            .producers_mut(&keys)
            .into_iter()
            .filter_map(|(key, producer)| {
                let (_, epoch, offset) = due.iter().find(|(k, ..)| *k == key)?;
                Some(CommitJob { key, epoch: *epoch, offset: *offset, producer, outcome: None })
            })
            .collect();
        let run = |jobs: &mut [CommitJob<'_>]| {
            for job in jobs {
                let started = Instant::now();
                let result = job.producer.commit(&job.key.0, job.key.1, job.offset, &group, timeout);
                job.outcome = Some((result, started.elapsed()));
            }
        };
        if jobs.len() == 1 {
            run(&mut jobs);
        } else {
            let per_thread = jobs.len().div_ceil(COMMITS_AT_ONCE);
            std::thread::scope(|scope| {
                for chunk in jobs.chunks_mut(per_thread) {
                    scope.spawn(|| run(chunk));
                }
            });
        }
        let mut failed = Vec::new();
        for job in jobs {
            match job.outcome {
                Some((Ok(()), took)) => {
                    if let Some(p) = self.tracker().current(&job.key.0, job.key.1, job.epoch) {
                        p.mark_committed(job.offset);
                    }
                    self.stats.committed(&job.key.0, job.key.1, job.offset);
                    self.stats.transaction_committed(took);
                }
                Some((Err(recovery), _)) => {
                    self.stats.transaction_aborted();
                    let refused_for_good = job.producer.refused_for_good();
                    failed.push(FailedTransaction { key: job.key, recovery, refused_for_good });
                }
                None => {
                    let recovery = Recovery::Recreate("the commit's thread ended without an outcome".to_owned());
                    failed.push(FailedTransaction { key: job.key, recovery, refused_for_good: false });
                }
            }
        }
        failed
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
        if self.transactions.is_some() {
            // Exactly-once: offsets move only inside transactions, with their outputs.
            return None;
        }
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

    /// Whether anything of these partitions awaits the broker.
    fn holds_any(&self, partitions: &[TopicPartition]) -> bool {
        let tracker = self.tracker();
        partitions.iter().any(|(t, p)| tracker.get(t, *p).is_some_and(|p| p.has_holds()))
    }

    /// Waits up to `timeout` for every output and dead letter in flight (all
    /// partitions, or `only`); returns whether they all arrived.
    pub fn drain(&self, only: Option<&[TopicPartition]>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let waiting = match only {
                Some(partitions) => self.holds_any(partitions),
                None => self.tracker().iter().any(|(_, p)| p.has_holds()),
            };
            if !waiting {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(DRAIN_POLL);
        }
    }
}

impl RebalanceListener for Shared {
    fn revoking(&self, consumer: &BaseConsumer<FerryContext>, revoked: Vec<TopicPartition>, lost: bool) {
        self.stats.rebalanced();
        if lost {
            // Another member may already own them: committing now could move its
            // bookmark backwards. Forget them; what was not committed is redelivered.
            tracing::warn!(pipeline = %self.pipeline, worker = self.worker, partitions = ?revoked, "assignment lost; not committing");
        } else {
            for FailedTransaction { key, recovery, .. } in self.commit_transactions(consumer, Some(&revoked)) {
                tracing::warn!(pipeline = %self.pipeline, topic = %key.0, partition = key.1, reason = recovery.reason(), "revoke: the last transaction did not commit; the next owner processes its records");
            }
            if !self.drain(Some(&revoked), REVOKE_DRAIN_TIMEOUT) {
                tracing::warn!(pipeline = %self.pipeline, partitions = ?revoked, "revoke: outputs still in flight after {} s; committing what is finished", REVOKE_DRAIN_TIMEOUT.as_secs());
            }
            self.commit_sync(consumer, Some(&revoked), SYNC_COMMIT_TIMEOUT);
        }
        if let Some(mut transactions) = self.transactions() {
            // Lost, or the commit above failed: nothing of it may become visible.
            transactions.close(&revoked);
        }
        let mut tracker = self.tracker();
        for (topic, partition) in &revoked {
            tracker.remove(topic, *partition);
            self.stats.revoked(topic, *partition);
        }
        drop(tracker);
        tracing::info!(pipeline = %self.pipeline, worker = self.worker, partitions = ?revoked, "partitions revoked");
        lock(&self.events).revoked.extend(revoked);
    }

    fn assigned(&self, partitions: &[TopicPartition]) {
        self.stats.liveness().joined();
        if let Some(mut transactions) = self.transactions() {
            let now = Instant::now();
            for key in partitions {
                transactions.assigned(key, now);
            }
        }
        for (topic, partition) in partitions {
            self.stats.assigned(topic, *partition);
        }
        tracing::info!(pipeline = %self.pipeline, worker = self.worker, ?partitions, "partitions assigned");
        lock(&self.events).assigned.extend_from_slice(partitions);
    }

    fn rebalance_error(&self, error: &str) {
        tracing::warn!(pipeline = %self.pipeline, worker = self.worker, %error, "rebalance error");
    }

    fn fetching(&self, partitions: Vec<PartitionFetch>) {
        lock(&self.events).fetching = Some(partitions);
    }
}

impl AckListener for Shared {
    fn settled(&self, group: Settled) {
        let Settled { topic, partition, epoch, span, offsets, failed } = group;
        let mut tracker = self.tracker();
        // The partition may have been revoked (and even given back) meanwhile: then
        // this belongs to an assignment that is over, and touches nothing.
        let Some(p) = tracker.current(&topic, partition, epoch) else { return };
        if failed {
            // Never commit past records whose outputs are not safe: keep the span
            // held and halt the partition; a restart redelivers from the commit.
            // Nothing more will come for it: a revoke does not wait for it.
            if let Some(span) = span {
                p.undeliverable(span);
            }
            for &offset in &offsets {
                p.dead_letter_failed(offset);
            }
            drop(tracker);
            lock(&self.events).delivery_failed.push(((topic, partition), epoch));
            return;
        }
        if let Some(span) = span {
            p.release(span);
        }
        for &offset in &offsets {
            p.finish(offset);
        }
    }
}

/// Held by the pipeline thread: marks it ended when dropped, also while unwinding.
pub struct ThreadMark(pub Arc<Shared>);

impl Drop for ThreadMark {
    fn drop(&mut self) {
        self.0.stats.liveness().ended(std::thread::panicking());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::liveness::ThreadState;

    fn settled(epoch: Epoch, offsets: Vec<i64>, failed: bool) -> Settled {
        Settled { topic: "t".into(), partition: 0, epoch, span: None, offsets, failed }
    }

    /// A delivery failure of an earlier assignment arrives
    /// after the partition came back; it must neither halt the new assignment nor
    /// leave anything behind for it.
    #[test]
    fn a_late_failure_of_an_earlier_assignment_reports_nothing() {
        let shared = Shared::new("p");
        let old = shared.tracker().start("t", 0, 0);
        shared.tracker().remove("t", 0);
        let new = shared.tracker().start("t", 0, 0);
        shared.settled(settled(old, vec![3], true));
        assert!(shared.take_events().delivery_failed.is_empty(), "nothing to halt");
        shared.settled(settled(new, vec![3], true));
        assert_eq!(shared.take_events().delivery_failed, [(("t".to_owned(), 0), new)]);
    }

    /// A dead letter in flight holds the revoke's drain.
    #[test]
    fn the_drain_waits_for_dead_letters_in_flight() {
        let shared = Shared::new("p");
        let epoch = shared.tracker().start("t", 0, 0);
        {
            let mut tracker = shared.tracker();
            let p = tracker.current("t", 0, epoch).unwrap();
            let span = p.begin_batch(Some(4)).unwrap();
            p.settle(span, [2], false);
            p.dead_letter_sent(2);
        }
        let partitions = [("t".to_owned(), 0)];
        assert!(!shared.drain(Some(&partitions), Duration::ZERO), "the dead letter is still in flight");
        shared.settled(settled(epoch, vec![2], false));
        assert!(shared.drain(Some(&partitions), Duration::ZERO));
        assert_eq!(shared.tracker().get("t", 0).unwrap().commit_candidate(), Some(5));
    }

    /// A span whose outputs failed to deliver stays held for the bookmark, but a
    /// revoke does not wait for acks that will never come (it used to wait its whole
    /// drain timeout, inside the rebalance callback, on every later revoke).
    #[test]
    fn a_span_whose_outputs_failed_holds_the_bookmark_but_not_the_revoke() {
        let shared = Shared::new("p");
        let epoch = shared.tracker().start("t", 0, 0);
        let span = {
            let mut tracker = shared.tracker();
            let p = tracker.current("t", 0, epoch).unwrap();
            let span = p.begin_batch(Some(4)).unwrap();
            p.settle(span, [], true);
            span
        };
        let partitions = [("t".to_owned(), 0)];
        assert!(!shared.drain(Some(&partitions), Duration::ZERO), "the outputs are still in flight");
        shared.settled(Settled { span: Some(span), ..settled(epoch, vec![], true) });
        assert_eq!(shared.take_events().delivery_failed, [(("t".to_owned(), 0), epoch)]);
        assert!(shared.drain(Some(&partitions), Duration::ZERO), "nothing is in flight any more");
        assert_eq!(shared.tracker().get("t", 0).unwrap().watermark(), 0, "the bookmark never passes the span");
    }

    #[test]
    fn a_panicking_thread_is_marked_dead() {
        let shared = Arc::new(Shared::new("p"));
        let mark = ThreadMark(shared.clone());
        let _ = std::thread::spawn(move || {
            let _mark = mark;
            panic!("boom");
        })
        .join();
        assert_eq!(shared.stats.liveness().snapshot().thread, ThreadState::Died);
        drop(ThreadMark(shared.clone()));
        assert_eq!(shared.stats.liveness().snapshot().thread, ThreadState::Stopped);
    }
}
