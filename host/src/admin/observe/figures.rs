//! One picture of every pipeline for metrics, health and the status page: the
//! pipeline's own figures merged with what the brokers report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::broker_view::{BrokerPartition, PipelineLogs};
use crate::admin::AdminState;
use crate::config::PipelineConfig;
use crate::kafka::tracker::TopicPartition;
use crate::pipeline::liveness::{LivenessSnapshot, ThreadState};
use crate::pipeline::stats::{PartitionStats, StatsSnapshot};
use crate::registry::GroupStatus;

/// Everything shown about one pipeline.
#[derive(Debug, Clone)]
pub(crate) struct PipelineFigures {
    /// Its configuration.
    pub config: Arc<PipelineConfig>,
    /// Digest of the component its batches run on now.
    pub running: String,
    /// Digest of the component deployed (taken up at the next batch).
    pub deployed: String,
    /// Thread and loop state of the pipeline as a whole: its least healthy worker's
    /// (see [`worst`]).
    pub liveness: LivenessSnapshot,
    /// Its own counters, every worker's added up.
    pub stats: StatsSnapshot,
    /// Each worker, in order (one for a pipeline with `workers = 1`).
    pub workers: Vec<WorkerFigures>,
    /// Time since the brokers were last read, if ever.
    pub broker_age: Option<Duration>,
    /// Why the last broker read failed, if it did.
    pub broker_error: Option<String>,
    /// Every partition known to the pipeline or the brokers, in order.
    pub partitions: Vec<PartitionFigures>,
    /// What a `group_deploy` pipeline knows of the components topic.
    pub group: Option<GroupStatus>,
    /// Its shadow version and the comparison so far, while it has one.
    pub shadow: Option<crate::registry::ShadowView>,
}

/// One worker of a pipeline: a member of its group with a thread of its own.
#[derive(Debug, Clone)]
pub(crate) struct WorkerFigures {
    /// Its index, from 0.
    pub index: usize,
    /// Digest of the component its batches run on now.
    pub running: String,
    /// Its thread and loop state.
    pub liveness: LivenessSnapshot,
    /// The partitions it owns now.
    pub assigned: Vec<TopicPartition>,
    /// Records it processed since start.
    pub processed: u64,
    /// Batches it ran since start.
    pub batches: u64,
}

impl WorkerFigures {
    fn of(index: usize, liveness: LivenessSnapshot, stats: &StatsSnapshot) -> Self {
        WorkerFigures {
            index,
            running: stats.version.clone(),
            liveness,
            assigned: stats.partitions.iter().filter(|(_, p)| p.assigned).map(|(k, _)| k.clone()).collect(),
            processed: stats.partitions.values().map(|p| p.processed).sum(),
            batches: stats.batches,
        }
    }
}

/// The pipeline's state from its workers': a thread that died or stopped, a worker
/// not in its group yet, and the oldest loop turn count for the whole pipeline.
pub(crate) fn worst(workers: &[LivenessSnapshot]) -> LivenessSnapshot {
    let thread = [ThreadState::Died, ThreadState::Stopped]
        .into_iter()
        .find(|state| workers.iter().any(|w| w.thread == *state))
        .unwrap_or(ThreadState::Running);
    LivenessSnapshot {
        thread,
        joined: workers.iter().all(|w| w.joined),
        since_last_turn: workers.iter().filter_map(|w| w.since_last_turn).max(),
    }
}

/// One partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartitionFigures {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Whether this member owns it now.
    pub assigned: bool,
    /// Why it is halted, if it is.
    pub halted: Option<String>,
    /// How it stopped advancing without an error, if it did.
    pub stalled: Option<String>,
    /// Oldest retained offset.
    pub log_start: Option<i64>,
    /// Next offset to be written; never below the committed offset or position.
    pub log_end: Option<i64>,
    /// Next offset this member reads.
    pub position: Option<i64>,
    /// The group's bookmark: the newer of this member's last commit and the broker's.
    pub committed: Option<i64>,
    /// Records not yet committed: log end − committed (log start when nothing is).
    pub lag: Option<i64>,
    /// Records processed.
    pub processed: u64,
    /// Records rejected.
    pub failed: u64,
    /// Records marked retry.
    pub retried: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Its keyed state in memory, for a pipeline with state.
    pub state: Option<crate::pipeline::stats::StateFigures>,
}

/// Reads every pipeline of `state` now.
pub(crate) fn gather(state: &AdminState) -> Vec<PipelineFigures> {
    state
        .pipelines
        .iter()
        .map(|view| {
            let workers = view.workers.iter().map(|w| (w.stats.liveness().snapshot(), w.stats.snapshot())).collect();
            let logs = state.broker_view.get(&view.config.name);
            let mut figures =
                workers_figures(view.config.clone(), view.slot.current().digest().to_owned(), workers, &logs);
            figures.group = view.slot.group_status();
            figures.shadow = view.slot.shadow_view();
            figures
        })
        .collect()
}

/// Joins the figures of a pipeline with one worker with the brokers' (for tests).
#[cfg(test)]
pub(crate) fn figures(
    config: Arc<PipelineConfig>,
    deployed: String,
    liveness: LivenessSnapshot,
    stats: StatsSnapshot,
    logs: &PipelineLogs,
) -> PipelineFigures {
    workers_figures(config, deployed, vec![(liveness, stats)], logs)
}

/// Joins a pipeline's workers' figures, added up, with the brokers'.
pub(crate) fn workers_figures(
    config: Arc<PipelineConfig>,
    deployed: String,
    workers: Vec<(LivenessSnapshot, StatsSnapshot)>,
    logs: &PipelineLogs,
) -> PipelineFigures {
    let each: Vec<WorkerFigures> = workers
        .iter()
        .enumerate()
        .map(|(index, (liveness, stats))| WorkerFigures::of(index, *liveness, stats))
        .collect();
    let liveness = worst(&each.iter().map(|w| w.liveness).collect::<Vec<_>>());
    let stats = StatsSnapshot::merge(workers.into_iter().map(|(_, stats)| stats).collect());
    PipelineFigures {
        config,
        running: stats.version.clone(),
        deployed,
        liveness,
        partitions: merge(&stats.partitions, &logs.partitions),
        stats,
        workers: each,
        broker_age: logs.refreshed.map(|at| at.elapsed()),
        broker_error: logs.error.clone(),
        group: None,
        shadow: None,
    }
}

/// One row per partition known to either side.
pub(crate) fn merge(
    ours: &BTreeMap<TopicPartition, PartitionStats>,
    broker: &BTreeMap<TopicPartition, BrokerPartition>,
) -> Vec<PartitionFigures> {
    let mut keys: Vec<&TopicPartition> = ours.keys().chain(broker.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let own = ours.get(key).cloned().unwrap_or_default();
            let b = broker.get(key).copied().unwrap_or_default();
            let committed = own.committed.max(b.committed);
            // The broker's log end may be up to one refresh old; what was read or
            // committed since proves it is at least that far.
            let log_end = b.log_end.map(|end| end.max(own.position.unwrap_or(end)).max(committed.unwrap_or(end)));
            let start = b.log_start.unwrap_or(0);
            let lag = log_end.map(|end| (end - committed.unwrap_or(start).max(start)).max(0));
            PartitionFigures {
                topic: key.0.clone(),
                partition: key.1,
                assigned: own.assigned,
                halted: own.halted,
                stalled: own.stalled,
                log_start: b.log_start,
                log_end,
                position: own.position,
                committed,
                lag,
                processed: own.processed,
                failed: own.failed,
                retried: own.retried,
                dead_lettered: own.dead_lettered,
                state: own.state,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    #[test]
    fn merges_our_figures_with_the_brokers() {
        let ours = BTreeMap::from([
            (
                tp(0),
                PartitionStats {
                    assigned: true,
                    position: Some(12),
                    committed: Some(10),
                    processed: 12,
                    ..Default::default()
                },
            ),
            // Read past what the last broker refresh saw.
            (tp(1), PartitionStats { assigned: true, position: Some(9), committed: Some(9), ..Default::default() }),
        ]);
        let broker = BTreeMap::from([
            (tp(0), BrokerPartition { log_start: Some(0), log_end: Some(20), committed: Some(8) }),
            (tp(1), BrokerPartition { log_start: Some(0), log_end: Some(7), committed: Some(7) }),
            // Another member's partition: the broker knows a newer commit.
            (tp(2), BrokerPartition { log_start: Some(5), log_end: Some(30), committed: None }),
        ]);
        let rows = merge(&ours, &broker);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[0].committed, rows[0].log_end, rows[0].lag, rows[0].processed),
            (Some(10), Some(20), Some(10), 12)
        );
        assert_eq!((rows[1].committed, rows[1].log_end, rows[1].lag), (Some(9), Some(9), Some(0)));
        assert_eq!(
            (rows[2].assigned, rows[2].committed, rows[2].lag),
            (false, None, Some(25)),
            "lag counts from the log start"
        );
    }

    #[test]
    fn unknown_log_end_means_unknown_lag() {
        let ours =
            BTreeMap::from([(tp(0), PartitionStats { assigned: true, committed: Some(3), ..Default::default() })]);
        let rows = merge(&ours, &BTreeMap::new());
        assert_eq!((rows[0].log_end, rows[0].lag, rows[0].committed), (None, None, Some(3)));
    }
}
