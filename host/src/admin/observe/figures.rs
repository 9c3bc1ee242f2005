//! One picture of every pipeline for metrics, health and the status page: the
//! pipeline's own figures merged with what the brokers report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::broker_view::{BrokerPartition, PipelineLogs};
use crate::admin::AdminState;
use crate::config::PipelineConfig;
use crate::kafka::tracker::TopicPartition;
use crate::pipeline::liveness::LivenessSnapshot;
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
    /// Thread and loop state.
    pub liveness: LivenessSnapshot,
    /// Its own counters.
    pub stats: StatsSnapshot,
    /// Time since the brokers were last read, if ever.
    pub broker_age: Option<Duration>,
    /// Why the last broker read failed, if it did.
    pub broker_error: Option<String>,
    /// Every partition known to the pipeline or the brokers, in order.
    pub partitions: Vec<PartitionFigures>,
    /// What a `group_deploy` pipeline knows of the components topic.
    pub group: Option<GroupStatus>,
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
}

/// Reads every pipeline of `state` now.
pub(crate) fn gather(state: &AdminState) -> Vec<PipelineFigures> {
    state
        .pipelines
        .iter()
        .map(|view| {
            let stats = view.shared.stats.snapshot();
            let logs = state.broker_view.get(&view.config.name);
            let mut figures = figures(
                view.config.clone(),
                view.slot.current().digest().to_owned(),
                view.shared.stats.liveness().snapshot(),
                stats,
                &logs,
            );
            figures.group = view.slot.group_status();
            figures
        })
        .collect()
}

/// Joins a pipeline's own figures with the brokers'.
pub(crate) fn figures(
    config: Arc<PipelineConfig>,
    deployed: String,
    liveness: LivenessSnapshot,
    stats: StatsSnapshot,
    logs: &PipelineLogs,
) -> PipelineFigures {
    PipelineFigures {
        config,
        running: stats.version.clone(),
        deployed,
        liveness,
        partitions: merge(&stats.partitions, &logs.partitions),
        stats,
        broker_age: logs.refreshed.map(|at| at.elapsed()),
        broker_error: logs.error.clone(),
        group: None,
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
                log_start: b.log_start,
                log_end,
                position: own.position,
                committed,
                lag,
                processed: own.processed,
                failed: own.failed,
                retried: own.retried,
                dead_lettered: own.dead_lettered,
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
