//! The loop of one pipeline: take records in (`intake`), batch them per partition,
//! run each batch through the guest (`run`), settle what each record's outcome
//! means (`settle`), publish the outputs of processed records, apply the failure
//! policy (`failure`), and commit what is finished.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use super::failure::{GivenUp, backoff};
use super::leave::Departure;
use super::partition::{PartitionState, TakenBatch};
use super::run::run_batch;
use super::settle::{Fate, settle};
use super::shared::Shared;
use super::stall::StallWatch;
use super::state::StateKeeper;
use crate::config::{CommitPolicy, PipelineConfig};
use crate::kafka::client_log::RepeatedErrors;
use crate::kafka::context::{FerryContext, SYNC_COMMIT_TIMEOUT};
use crate::kafka::fetch::FetchQueue;
use crate::kafka::output::{self, AckGroup, Outgoing, OutputProducer, Settled};
use crate::kafka::tracker::TopicPartition;
use crate::registry::ProcessorSlot;
use crate::runtime::Runtime;
use crate::sandbox::{Batch, Emitted, OutputRecord, ProcessorInstance, Provisions, Sandbox, short};
use crate::shadow::run::ShadowRunner;

/// How long shutdown waits for in-flight outputs before its final commit.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single wait blocks, so timers and shutdown are noticed.
const MAX_POLL: Duration = Duration::from_millis(50);
/// How often, at most, the loop collects the results of earlier commits between
/// commits (a poll of the commit queue per record is a measurable cost).
const COMMIT_RESULTS_EVERY: Duration = Duration::from_millis(1);
/// With per-batch commits, how often offsets finished by late acknowledgements (no
/// batch ran since) are committed anyway.
const PER_BATCH_LATE_ACKS_EVERY: Duration = Duration::from_millis(50);
/// Most records taken from the fetch queue in one turn of the loop.
const FETCH_MAX: usize = 1024;

/// Everything one pipeline thread owns.
pub(crate) struct Worker {
    pub(super) config: Arc<PipelineConfig>,
    /// Declared before the consumer: its queues must go first.
    pub(super) fetch: FetchQueue,
    pub(super) consumer: BaseConsumer<FerryContext>,
    pub(super) shared: Arc<Shared>,
    /// Shared by every worker of the pipeline (at-least-once).
    pub(super) producer: Option<Arc<OutputProducer>>,
    pub(super) sandbox: Sandbox,
    pub(super) slot: ProcessorSlot,
    pub(super) instance: ProcessorInstance,
    pub(super) provisions: Provisions,
    pub(super) partitions: BTreeMap<TopicPartition, PartitionState>,
    /// The batch passed to the guest; its buffer is reused across batches.
    pub(super) batch: Batch,
    /// Whether batches carry headers (the running processor imports `headers`).
    pub(super) wants_headers: bool,
    pub(super) client_errors: RepeatedErrors,
    /// Partitions restarted from their bookmark, or revoked, during the current
    /// fetch: the rest of their records in it are stale.
    pub(super) restarted: Vec<TopicPartition>,
    /// Revoked partitions the guest has not been told of yet ([`Self::tell_revoked`]).
    pub(super) untold_revokes: Vec<TopicPartition>,
    /// When the earliest buffered batch can become due by time (a lower bound).
    pub(super) next_due: Option<Instant>,
    /// When the results of earlier commits were last collected.
    pub(super) results_polled: Instant,
    /// Partitions that stop advancing without an error.
    pub(super) stalls: StallWatch,
    pub(super) last_commit: Instant,
    /// A batch finished since the last commit (for the per-batch policy).
    pub(super) batch_finished: bool,
    /// Where it waits for the pipeline's other workers before leaving the group.
    pub(super) departure: Departure,
    /// Set to stop this pipeline alone (its start failed; the host's own stop flag
    /// stops every pipeline).
    pub(super) stop: Arc<AtomicBool>,
    /// The state of the owned partitions, for a pipeline with state.
    pub(super) state: Option<StateKeeper>,
    /// The slot's state generation read with the running version.
    pub(super) state_generation: u64,
    /// The shadow version's instance, while the slot has one.
    pub(super) shadow: Option<ShadowRunner>,
}

impl Worker {
    /// Runs until the runtime is asked to stop, then drains and commits.
    pub(crate) fn run(mut self, runtime: &Runtime) {
        let batch_size = self.config.batch_size;
        let max_wait = Duration::from_millis(self.config.max_wait_ms);
        // Records arrive up to FETCH_MAX at a time (kafka::fetch), so per-turn work is
        // spread over many records, and they are taken in per-partition runs (one map
        // lookup per run). Per record: no clock read and no allocation. Batches due by
        // `max_wait_ms` are looked for only once the earliest can be due (`next_due`, a
        // lower bound). Every guest call, whatever makes it, is followed by
        // `between_guest_calls`.
        let mut now = Instant::now();
        while !runtime.stopping() && !self.stop.load(Ordering::Relaxed) {
            self.serve_events();
            self.tell_revoked();
            self.prepare_transactions(now);
            if self.dispatch_due_retries(now) {
                // Records buffered while retries waited may go now.
                self.next_due = self.earliest_due(max_wait);
            }
            // Partitions revoked or restarted while this fetch is being worked through
            // are listed in `restarted`: their remaining records in it are passed over
            // (the partition's owner reads them again from the committed offset).
            self.restarted.clear();
            let fetched = self.fetch.fetch(FETCH_MAX);
            let taken = fetched.len();
            let mut at = 0;
            while at < taken {
                let (run, full) = self.take_run(&fetched, at);
                at += run;
                if let Some(full) = full {
                    self.dispatch(&full);
                }
            }
            self.fetch.recycle(fetched);
            self.pause_backlogs();
            now = Instant::now();
            self.shared.stats.liveness().turned(now);
            if self.next_due.is_some_and(|due| now >= due) {
                let due: Vec<_> = self
                    .partitions
                    .iter()
                    .filter(|(_, s)| s.is_due(batch_size, max_wait, now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    self.dispatch(&key);
                }
                now = Instant::now();
                self.next_due = self.earliest_due(max_wait);
            }
            self.maybe_commit(now);
            if taken == 0 && !self.fetch.consumer_events_waiting() {
                // Nothing to do: the time to have a fresh instance ready for the batch
                // after a trap or a recycle (at most once per instance gone live).
                self.instance.prepare_spare();
                self.fetch.wait(self.poll_timeout(max_wait, Instant::now()));
                now = Instant::now();
                // The wait drained the wake-ups of all three queues, and librdkafka
                // signals a queue again only once it has been served: serve the commit
                // queue now (the next turn serves the other two), or a commit result
                // that woke us would sit unseen, with no further wake-up, until the
                // next look (up to MAX_POLL later), holding back the next commit.
                self.results_polled = now;
                let _ = self.shared.poll_commits();
            }
        }
        self.shut_down();
    }

    /// What must happen after every guest call, whatever made it (a full batch, a
    /// batch due by time, due retries, a revoke told to the guest), before the next:
    /// a guest call takes up to its time limit, and one turn of the loop can make
    /// many. The group expects a member to poll within `max.poll.interval.ms`, so the
    /// consumer is served here (rebalances, errors, and the poll that says the member
    /// is alive), the loop's liveness is noted, and finished offsets are committed by
    /// the pipeline's policy (exactly-once: its transactions). So the longest a
    /// member goes without a poll is one guest call, its time limit, plus the host's
    /// work on its result. Partitions revoked here are passed over in the rest of
    /// the fetch being worked through.
    pub(super) fn between_guest_calls(&mut self) {
        let now = Instant::now();
        self.shared.stats.liveness().turned(now);
        let revoked = self.serve_events();
        self.restarted.extend(revoked);
        self.maybe_commit(now);
    }

    /// Tells the guest of the partitions revoked since it was last told, one call
    /// each, with what must happen between guest calls after each.
    pub(super) fn tell_revoked(&mut self) {
        while !self.untold_revokes.is_empty() {
            let (topic, partition) = self.untold_revokes.remove(0);
            if let Some(shadow) = self.shadow.as_mut() {
                shadow.revoked(&topic, partition);
            }
            if self.instance.revoked(&topic, partition) {
                self.between_guest_calls();
            }
        }
    }

    /// The partition starts again from an earlier offset in this member (a rewind
    /// after an aborted transaction, a restart from the first unfinished record):
    /// the guest is told `revoked` before it sees any record again, then `assigned`
    /// with the first replayed batch. So what a guest keeps of a partition always
    /// comes from one unbroken run of its log, never from records a rewind undid
    /// (an aborted transaction's records would otherwise count twice).
    pub(super) fn forget_in_guest(&mut self, key: &TopicPartition, from: Option<i64>) {
        // The same for its state: the records after the bookmark run again against the
        // state the changelog holds (read_committed: an aborted transaction's writes
        // are not in it).
        if let Some(keeper) = self.state.as_mut() {
            keeper.forget(key, Some(from.unwrap_or(i64::MIN)));
        }
        if !self.untold_revokes.contains(key) {
            self.untold_revokes.push(key.clone());
        }
    }

    /// When the earliest buffered batch becomes due by time.
    fn earliest_due(&self, max_wait: Duration) -> Option<Instant> {
        self.partitions.values().filter_map(|s| s.buffered_since()).min().map(|t| t + max_wait)
    }

    fn poll_timeout(&self, max_wait: Duration, now: Instant) -> Duration {
        self.partitions
            .values()
            .filter_map(|s| s.buffered_since().map(|t| (t + max_wait).saturating_duration_since(now)))
            .chain(self.partitions.values().filter_map(|s| s.retry_due().map(|t| t.saturating_duration_since(now))))
            .fold(MAX_POLL, Duration::min)
    }

    /// Runs the buffered batch of one partition through the guest and settles it.
    pub(super) fn dispatch(&mut self, key: &TopicPartition) {
        // The guest hears of revokes before any batch of a partition given back.
        self.tell_revoked();
        self.refresh_processor();
        if !self.partitions.get(key).is_some_and(PartitionState::can_dispatch_buffer) || !self.ensure_state(key) {
            return;
        }
        let Some(state) = self.partitions.get_mut(key) else { return };
        if !state.can_dispatch_buffer() {
            return;
        }
        let taken = state.take_batch(self.config.batch_size, std::mem::take(&mut self.batch.records));
        self.run_and_settle(key, taken);
    }

    /// Runs everything buffered for one partition through the guest, batch after
    /// batch, unless retries pending hold it back.
    pub(super) fn dispatch_buffered(&mut self, key: &TopicPartition) {
        while self.partitions.get(key).is_some_and(PartitionState::can_dispatch_buffer) {
            self.dispatch(key);
        }
    }

    /// Runs the due retries of one partition through the guest and settles them.
    pub(super) fn dispatch_retries(&mut self, key: &TopicPartition, now: Instant) {
        self.tell_revoked();
        self.refresh_processor();
        if !self.partitions.contains_key(key) || !self.ensure_state(key) {
            return;
        }
        let Some(state) = self.partitions.get_mut(key) else { return };
        let Some(taken) = state.take_due_retries(self.config.batch_size, now) else { return };
        self.run_and_settle(key, taken);
    }

    /// Runs a batch taken from `key` through the guest; publishes the outputs of
    /// processed records, keeps records to try again, gives up on the rest, and
    /// tells the tracker.
    fn run_and_settle(&mut self, key: &TopicPartition, taken: TakenBatch) {
        let started = Instant::now();
        let epoch = self.partitions[key].epoch();
        let TakenBatch { count, records, offsets, old_position, last_new } = taken;
        // One span per batch: every event below (faults, dead letters, guest logs) carries it.
        let _batch_span = tracing::info_span!(
            "batch",
            pipeline = %self.config.name,
            worker = self.shared.worker,
            topic = %key.0,
            partition = key.1,
            first_offset = offsets[0],
            last_offset = offsets[offsets.len() - 1],
            records = offsets.len()
        )
        .entered();
        let span = self
            .shared
            .tracker()
            .current(&key.0, key.1, epoch)
            .expect("a partition with state is tracked")
            .begin_batch(last_new);
        self.batch.topic.clone_from(&key.0);
        self.batch.partition = key.1;
        self.batch.count = count;
        self.batch.records = records;

        let lent = self.state.as_mut().map(|keeper| keeper.lend(key));
        let live_started = Instant::now();
        let mut run = run_batch(&mut self.instance, &mut self.batch, &offsets, lent);
        if let Some(shadow) = self.shadow.as_mut() {
            // The same batch through the shadow version: compared, never published.
            let tally = shadow.follow(&mut self.batch, &offsets, &mut run, live_started.elapsed());
            self.slot.shadow_observe(shadow.component(), self.instance.component(), tally);
        }
        for fault in &run.faults {
            self.shared.stats.fault(fault);
            self.shared.stats.note(&key.0, key.1, None, &fault.kind().to_string(), &fault.to_string());
            if fault.is_the_hosts() {
                tracing::error!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %fault, "host fault; the batch is tried again, its records not charged");
            } else {
                tracing::warn!(pipeline = %self.config.name, topic = %key.0, partition = key.1, %fault, "guest fault");
            }
        }
        let state = self.partitions.get_mut(key).expect("partition still assigned");
        let mut settlement = settle(&offsets, &run.outcomes, |o| state.attempts(o), self.config.failure.max_attempts);
        // State: a batch's writes take effect only if every record of it finished;
        // otherwise they are dropped and the whole batch is delivered again (its
        // processed records too, whose outputs are dropped with them), since the
        // host cannot tell which record made which write.
        let mut changes = Vec::new();
        if let (Some(lent), Some(keeper)) = (run.state.take(), self.state.as_mut()) {
            let finished = !settlement.fates.iter().any(|f| matches!(f, Fate::Again { .. }));
            if !finished {
                for (&offset, fate) in offsets.iter().zip(settlement.fates.iter_mut()) {
                    if fate.is_done() {
                        *fate = Fate::Again { attempts: state.attempts(offset), backoff: true };
                        settlement.counts.processed -= 1;
                    }
                }
            }
            let (store, applied) = lent.finish(finished);
            changes = applied;
            if finished {
                // A deploy with empty state: its tombstones go first.
                let tombstones = keeper.take_tombstones(key, offsets[0]);
                if !tombstones.is_empty() {
                    let emptied = tombstones.into_iter().map(|k| (k, None));
                    changes = emptied.chain(changes).collect();
                }
            }
            let (keys, bytes) = keeper.give_back(key, store);
            self.shared.stats.state_figures(&key.0, key.1, keys, bytes, false);
        }
        let is_new = |offset: i64| old_position.is_none_or(|p| offset >= p);

        // Outputs belong to their records: only those of processed ones go out. (The
        // set of finished offsets is built only when something was emitted and not
        // everything finished: most batches need neither.)
        let all_done = settlement.all_done();
        let publish: Vec<Emitted> = if run.outputs.is_empty() || all_done {
            run.outputs
        } else {
            let done: HashSet<i64> =
                offsets.iter().zip(&settlement.fates).filter(|(_, f)| f.is_done()).map(|(o, _)| *o).collect();
            run.outputs.into_iter().filter(|e| e.source.is_some_and(|source| done.contains(&source))).collect()
        };
        let mut unfinished_new = Vec::new();
        let mut redelivered_done = Vec::new();
        let mut given_up = Vec::new();
        let mut again = Vec::new();
        let mut needs_backoff = None;
        for (&offset, fate) in offsets.iter().zip(settlement.fates) {
            match fate {
                Fate::Done => {
                    state.forget_retry(offset);
                    if !is_new(offset) {
                        redelivered_done.push(offset);
                    }
                }
                Fate::Again { attempts, backoff } => {
                    again.push((offset, attempts));
                    if backoff {
                        // A host fault is charged nothing, and backs off all the same.
                        needs_backoff = needs_backoff.max(Some(attempts.max(1)));
                    } else {
                        needs_backoff = needs_backoff.max(Some(0));
                    }
                    if is_new(offset) {
                        unfinished_new.push(offset);
                    }
                }
                Fate::GiveUp { reason, attempts } => {
                    state.forget_retry(offset);
                    if is_new(offset) {
                        unfinished_new.push(offset);
                    }
                    given_up.push((offset, reason, attempts));
                }
            }
        }
        if let Some(isolation) = settlement.isolate {
            state.isolate(isolation);
        }

        // Exactly-once: outputs wait for the watermark instead of acks (the
        // transaction's commit covers their delivery).
        let exactly_once = self.config.exactly_once();
        let await_acks = (!publish.is_empty() || !changes.is_empty()) && !exactly_once;
        // Settle before sending anything: an ack may arrive at once on another thread.
        {
            let mut tracker = self.shared.tracker();
            let tracked = tracker.current(&key.0, key.1, epoch).expect("tracked");
            if let Some(span) = span {
                tracked.settle(span, unfinished_new, await_acks);
            }
            if !await_acks {
                for &offset in &redelivered_done {
                    tracked.finish(offset);
                }
            }
        }
        if exactly_once {
            let last = offsets[offsets.len() - 1];
            for Emitted { source, record } in publish {
                self.hold_output(key, source.unwrap_or(last), None, record);
            }
            // State joins the partition's transaction with the batch's outputs.
            let changelog = self.state.as_ref().map(|k| k.changelog().to_owned());
            for (state_key, value) in changes {
                let topic = changelog.clone().expect("changes come from a pipeline with state");
                let record = OutputRecord { topic, key: Some(state_key), value, headers: Vec::new() };
                self.hold_output(key, last, Some(key.1), record);
            }
        } else if await_acks {
            let producer = self.producer.as_ref().expect("a pipeline with output topics has a producer");
            let settled = Settled {
                topic: key.0.clone(),
                partition: key.1,
                epoch,
                span,
                offsets: redelivered_done,
                failed: false,
            };
            let group = AckGroup::new(self.shared.clone(), settled, publish.len() + changes.len());
            // State changes go to the changelog partition of the input partition,
            // acknowledged with the batch's outputs before its span is released.
            if let Some(keeper) = self.state.as_ref() {
                for (state_key, value) in &changes {
                    let outgoing = Outgoing {
                        topic: keeper.changelog(),
                        partition: Some(key.1),
                        key: Some(state_key),
                        value: value.as_deref(),
                        headers: Vec::new(),
                    };
                    output::send(producer, outgoing, &group);
                }
            }
            for Emitted { record, .. } in &publish {
                let outgoing = Outgoing {
                    topic: &record.topic,
                    partition: None,
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers: record.headers.iter().map(|h| (h.name.as_str(), h.value.as_deref())).collect(),
                };
                output::send(producer, outgoing, &group);
            }
        }

        if !given_up.is_empty() || !again.is_empty() {
            // Records kept for another try, and dead letters, carry their content,
            // read from the batch buffer.
            let buffer = std::mem::take(&mut self.batch.records);
            let records: Vec<_> = ferry_sdk::wire::decode(&buffer, self.batch.count)
                .collect::<Result<_, _>>()
                .expect("the host encoded this batch");
            let record_at = |offset: &i64| records[offsets.binary_search(offset).expect("offset of this batch")];
            if let Some(state) = self.partitions.get_mut(key) {
                for (offset, attempts) in &again {
                    state.keep_for_retry(&record_at(offset), *attempts);
                }
            }
            for (offset, reason, attempts) in &given_up {
                let given = GivenUp { offset: *offset, reason, attempts: *attempts, record: Some(record_at(offset)) };
                self.give_up(key, given);
            }
            drop(records);
            self.batch.records = buffer;
        }
        if exactly_once {
            self.release_outputs(key);
        }
        if let Some(attempts) = needs_backoff {
            let delay = if attempts == 0 { Duration::ZERO } else { backoff(&self.config.failure, attempts) };
            self.schedule_retries(key, Instant::now() + delay);
        }
        let position = offsets[offsets.len() - 1] + 1;
        self.shared.stats.batch(&key.0, key.1, position, settlement.counts, started.elapsed());
        let failures = settlement.counts.retried + settlement.counts.failed;
        self.slot.observe(self.instance.component(), settlement.counts.processed + failures, failures);
        // Committed by `maybe_commit`, right after this batch (one request for the
        // batches that finish while one is in flight).
        self.batch_finished = true;
        drop(_batch_span);
        self.between_guest_calls();
    }

    pub(super) fn maybe_commit(&mut self, now: Instant) {
        if self.config.exactly_once() {
            let due = match self.config.commit {
                CommitPolicy::Interval { interval_ms } => {
                    now.saturating_duration_since(self.last_commit) >= Duration::from_millis(interval_ms)
                }
                CommitPolicy::PerBatch => self.batch_finished,
            };
            if due {
                self.last_commit = now;
                self.batch_finished = false;
                self.commit_transactions(None);
            }
            return;
        }
        match self.config.commit {
            CommitPolicy::Interval { interval_ms }
                if now.saturating_duration_since(self.last_commit) >= Duration::from_millis(interval_ms) =>
            {
                self.last_commit = now;
                self.shared.commit_async(&self.consumer);
            }
            // One commit request in flight at a time: batches that finish while it
            // is out ride on the next, sent as soon as its answer is in (which wakes
            // the loop). Per-batch commits also pick up offsets finished by late acks.
            CommitPolicy::PerBatch
                if (self.batch_finished && self.shared.poll_commits() == 0)
                    || now.saturating_duration_since(self.last_commit) >= PER_BATCH_LATE_ACKS_EVERY =>
            {
                self.last_commit = now;
                self.batch_finished = false;
                self.shared.commit_async(&self.consumer);
            }
            _ if now.saturating_duration_since(self.results_polled) >= COMMIT_RESULTS_EVERY => {
                self.results_polled = now;
                let _ = self.shared.poll_commits();
            }
            _ => {}
        }
    }

    /// Switches to a newly deployed version (and shadow version) at this batch
    /// boundary.
    fn refresh_processor(&mut self) {
        self.refresh_shadow();
        let (current, state_generation) = self.slot.current_and_state_generation();
        self.state_generation = state_generation;
        if Arc::ptr_eq(&current, self.instance.component()) {
            return;
        }
        tracing::info!(pipeline = %self.config.name, worker = self.shared.worker, from = %short(self.instance.component().digest()), to = %short(current.digest()), "switching processor version");
        self.shared.stats.set_version(current.digest());
        if current.wants_headers() != self.wants_headers {
            // Buffered and retried records were encoded for the other version: read
            // them again from Kafka, from each partition's first unfinished record.
            self.wants_headers = current.wants_headers();
            let keys: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
            for key in keys {
                self.restart_partition(&key);
            }
        }
        self.instance = ProcessorInstance::new(
            self.sandbox.clone(),
            current,
            &self.config.name,
            self.provisions.clone(),
            self.config.limits(),
        )
        .of_worker(self.shared.worker)
        .keep_spare(self.instance.keeps_spare());
    }

    /// Takes up, replaces or drops the shadow version's instance as the slot says.
    fn refresh_shadow(&mut self) {
        let Some(config) = self.config.shadow.as_ref() else { return };
        match (self.slot.shadow(), &self.shadow) {
            (None, None) => {}
            (Some(wanted), Some(running)) if Arc::ptr_eq(&wanted, running.component()) => {}
            (None, Some(_)) => self.shadow = None,
            (Some(wanted), _) => {
                tracing::info!(pipeline = %self.config.name, worker = self.shared.worker, shadow = %short(wanted.digest()), "running a shadow version beside the live one");
                self.shadow =
                    Some(ShadowRunner::new(self.sandbox.clone(), wanted, &self.config, config, self.shared.worker));
            }
        }
    }

    /// Stops taking records, waits for in-flight outputs, commits, leaves the group.
    fn shut_down(mut self) {
        let started = Instant::now();
        tracing::info!(pipeline = %self.config.name, worker = self.shared.worker, "shutting down: draining and committing");
        for state in self.partitions.values_mut() {
            state.discard_buffer();
        }
        if !self.shared.drain(None, SHUTDOWN_DRAIN_TIMEOUT) {
            tracing::warn!(pipeline = %self.config.name, "shutdown: outputs still in flight; committing what is finished");
        }
        self.shared.commit_sync(&self.consumer, None, SYNC_COMMIT_TIMEOUT);
        self.commit_transactions(None);
        if let Some(mut transactions) = self.shared.transactions() {
            // What did not commit above must never become visible.
            let keys = transactions.keys();
            transactions.close(&keys);
        }
        // Leaving starts a rebalance, which would refuse the other workers' last
        // commits: leave once all have committed (they drain and commit meanwhile, so
        // this stays within the same bound).
        let deadline = started + SHUTDOWN_DRAIN_TIMEOUT + SYNC_COMMIT_TIMEOUT;
        if !self.departure.wait_for_the_others(deadline) {
            tracing::warn!(pipeline = %self.config.name, worker = self.shared.worker, "shutdown: other workers still committing; leaving the group anyway");
        }
        self.shared.close_committer();
        // librdkafka cannot destroy a client while a queue of it is alive.
        drop(self.fetch);
        // Dropping the consumer leaves the group; its final revoke commits nothing new.
        drop(self.consumer);
    }
}
