//! Partitions that stop advancing without an error: librdkafka fetches them, the
//! log holds records past where it fetches, and none arrive. (librdkafka 2.12 does
//! this, in silence, when it refetches a batch it skips from inside it.) Nothing
//! reports it, so it is watched for in librdkafka's statistics: pure code, fed one
//! report at a time.
//!
//! A partition is stalled when several reports in a row ([`QUIET_REPORTS`]) find
//! its fetch position unmoved, the log's end past it, librdkafka's queue of fetched
//! records empty, and nothing of it taken by the pipeline since the last report,
//! while the pipeline does not hold it back itself (a halt, retries pending, a
//! pause for a backlog or a transaction).

use std::collections::HashMap;

use crate::kafka::client_log::PartitionFetch;
use crate::kafka::tracker::TopicPartition;

/// Reports in a row that find a partition stuck before it counts as stalled (with
/// ferry's `statistics.interval.ms` of 5 s: 15 s).
pub(crate) const QUIET_REPORTS: u32 = 3;

/// What changed with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StallChange {
    /// The partition stopped advancing: why, in words.
    Stalled(TopicPartition, String),
    /// It advances again.
    Resumed(TopicPartition),
}

/// The partitions a consumer fetches, watched across statistics reports.
#[derive(Debug, Default)]
pub(crate) struct StallWatch {
    watched: HashMap<TopicPartition, Watch>,
}

#[derive(Debug)]
struct Watch {
    next_offset: i64,
    taken: u64,
    quiet: u32,
    stalled: bool,
}

impl StallWatch {
    /// Takes one report: `taken(key)` is how many records (and errors) of the
    /// partition the pipeline has taken so far, `held(key)` whether it holds the
    /// partition back itself. Partitions no longer in the report are forgotten (a
    /// stalled one is told resumed).
    pub(crate) fn report(
        &mut self,
        fetches: &[PartitionFetch],
        taken: impl Fn(&TopicPartition) -> u64,
        held: impl Fn(&TopicPartition) -> bool,
    ) -> Vec<StallChange> {
        let mut changes = Vec::new();
        self.watched.retain(|key, watch| {
            let kept = fetches.iter().any(|f| f.key == *key);
            if !kept && watch.stalled {
                changes.push(StallChange::Resumed(key.clone()));
            }
            kept
        });
        for fetch in fetches {
            let taken = taken(&fetch.key);
            let Some(watch) = self.watched.get_mut(&fetch.key) else {
                // The first report of it: what the next ones compare with.
                let watch = Watch { next_offset: fetch.next_offset, taken, quiet: 0, stalled: false };
                self.watched.insert(fetch.key.clone(), watch);
                continue;
            };
            let stuck = fetch.next_offset == watch.next_offset
                && taken == watch.taken
                && fetch.end_offset > fetch.next_offset
                && fetch.queued == 0
                && !held(&fetch.key);
            watch.next_offset = fetch.next_offset;
            watch.taken = taken;
            if !stuck {
                watch.quiet = 0;
                if std::mem::take(&mut watch.stalled) {
                    changes.push(StallChange::Resumed(fetch.key.clone()));
                }
                continue;
            }
            watch.quiet += 1;
            if watch.quiet >= QUIET_REPORTS && !watch.stalled {
                watch.stalled = true;
                changes.push(StallChange::Stalled(
                    fetch.key.clone(),
                    format!(
                        "not advancing, with no error: the Kafka client fetches from offset {}, the log holds \
                         records up to offset {}, and none arrive",
                        fetch.next_offset,
                        fetch.end_offset - 1
                    ),
                ));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(next_offset: i64, end_offset: i64, queued: i64) -> PartitionFetch {
        PartitionFetch { key: ("t".to_owned(), 0), next_offset, end_offset, queued }
    }

    fn key() -> TopicPartition {
        ("t".to_owned(), 0)
    }

    #[test]
    fn a_partition_stuck_behind_the_log_end_stalls_after_quiet_reports_and_resumes() {
        let mut watch = StallWatch::default();
        let report = |watch: &mut StallWatch, f: PartitionFetch, taken: u64| watch.report(&[f], |_| taken, |_| false);
        assert!(report(&mut watch, fetch(5, 9, 0), 0).is_empty(), "the first report is a baseline");
        for _ in 1..QUIET_REPORTS {
            assert!(report(&mut watch, fetch(5, 9, 0), 0).is_empty());
        }
        let stalled = report(&mut watch, fetch(5, 9, 0), 0);
        assert!(matches!(&stalled[..], [StallChange::Stalled(k, why)] if *k == key() && why.contains("offset 5")));
        assert!(report(&mut watch, fetch(5, 9, 0), 0).is_empty(), "told once");
        assert_eq!(report(&mut watch, fetch(6, 9, 0), 0), [StallChange::Resumed(key())]);
    }

    #[test]
    fn progress_a_backlog_the_log_end_or_a_hold_is_no_stall() {
        /// A report's fetch and the records taken by then, at report `i`; and whether
        /// the pipeline holds the partition back.
        type Case<'a> = (&'a dyn Fn(u32) -> PartitionFetch, &'a dyn Fn(u32) -> u64, bool);
        let cases: [Case<'_>; 5] = [
            (&|i| fetch(5 + i64::from(i), 99, 0), &|_| 0, false),
            (&|_| fetch(5, 99, 0), &|i| u64::from(i), false),
            (&|_| fetch(5, 5, 0), &|_| 0, false),
            (&|_| fetch(5, 99, 3), &|_| 0, false),
            (&|_| fetch(5, 99, 0), &|_| 0, true),
        ];
        for (n, (fetch, taken, held)) in cases.into_iter().enumerate() {
            let mut watch = StallWatch::default();
            for i in 0..3 * QUIET_REPORTS {
                let changes = watch.report(&[fetch(i)], |_| taken(i), |_| held);
                assert!(changes.is_empty(), "case {n}, report {i}: {changes:?}");
            }
        }
    }

    #[test]
    fn a_stalled_partition_that_goes_is_told_resumed() {
        let mut watch = StallWatch::default();
        for _ in 0..=QUIET_REPORTS {
            watch.report(&[fetch(5, 9, 0)], |_| 0, |_| false);
        }
        assert_eq!(watch.report(&[], |_| 0, |_| false), [StallChange::Resumed(key())]);
    }
}
