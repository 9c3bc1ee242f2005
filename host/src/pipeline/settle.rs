//! Settlement: what each record's outcome means for the pipeline. Pure code, no
//! Kafka and no guest, so it is unit- and property-tested like the offset tracker.
//!
//! - `processed`: done; its outputs are published.
//! - `retry`, or a fault on the record alone: delivered again after a backoff, until
//!   the pipeline's `max_attempts`; then given up on.
//! - `reject`: given up on at once (dead-lettered or halted, by policy).
//! - part of a group that ran out of time together (a *suspect*), or never run
//!   because time ran out before it (*untried*): delivered again at once, not counted
//!   as an attempt.
//! - a fault of the host (no instance for the guest): delivered again after a
//!   backoff, not counted as an attempt: healthy records are never dead-lettered or
//!   halted for the host's trouble. Suspects come back in smaller batches until the record that
//!   holds the guest up is alone (and is then charged for its own timeouts).

use crate::sandbox::{GuestFault, Outcome};

use super::stats::BatchCounts;

/// What becomes of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Finished: its outputs are published.
    Done,
    /// To be delivered again. `attempts` counts the attempts charged so far;
    /// `backoff` is false for records the guest did not get to finish in time (a
    /// host fault backs off without being charged).
    Again {
        /// Attempts charged so far.
        attempts: u32,
        /// Wait the policy's backoff first.
        backoff: bool,
    },
    /// At the end of the road: dead-letter or halt.
    GiveUp {
        /// Why, for logs and dead-letter headers.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl Fate {
    /// Whether the record is finished for the bookmark (done).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Fate::Done)
    }
}

/// The settlement of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// One fate per record, in batch order.
    pub fates: Vec<Fate>,
    /// Counts for stats.
    pub counts: BatchCounts,
    /// The records that ran out of time together: the offsets of the first and last,
    /// and the batch size to deliver them in from now on (half as many).
    pub isolate: Option<Isolation>,
}

/// Smaller batches over a range of offsets that timed out together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isolation {
    /// First offset of the range.
    pub first: i64,
    /// Last offset of the range.
    pub last: i64,
    /// At most this many records per batch in it.
    pub batch_size: usize,
}

impl Settlement {
    /// Whether every record is done.
    pub(crate) fn all_done(&self) -> bool {
        self.fates.iter().all(Fate::is_done)
    }
}

/// Settles a batch: `outcomes[i]` is what happened to the record at `offsets[i]`,
/// `attempts_before(o)` how many attempts record `o` was charged before, and
/// `max_attempts` the pipeline's limit.
pub(crate) fn settle(
    offsets: &[i64],
    outcomes: &[Outcome],
    attempts_before: impl Fn(i64) -> u32,
    max_attempts: u32,
) -> Settlement {
    assert_eq!(offsets.len(), outcomes.len(), "one outcome per record");
    let mut counts = BatchCounts::default();
    let mut suspects: Vec<i64> = Vec::new();
    let fates = offsets
        .iter()
        .zip(outcomes)
        .map(|(&offset, outcome)| {
            let before = attempts_before(offset);
            let charge = |reason: String| {
                let attempts = before + 1;
                if attempts >= max_attempts {
                    Fate::GiveUp { reason: format!("{reason} (after {attempts} attempts)"), attempts }
                } else {
                    Fate::Again { attempts, backoff: true }
                }
            };
            match outcome {
                Outcome::Processed => {
                    counts.processed += 1;
                    Fate::Done
                }
                Outcome::Retry(reason) => {
                    counts.retried += 1;
                    charge(reason.clone())
                }
                Outcome::Fault(GuestFault::PoolFull(_)) => Fate::Again { attempts: before, backoff: true },
                Outcome::Fault(fault) => {
                    counts.retried += 1;
                    charge(format!("guest fault: {fault}"))
                }
                Outcome::Reject(reason) => {
                    counts.failed += 1;
                    Fate::GiveUp { reason: reason.clone(), attempts: before + 1 }
                }
                Outcome::Suspect => {
                    suspects.push(offset);
                    Fate::Again { attempts: before, backoff: false }
                }
                Outcome::Untried => Fate::Again { attempts: before, backoff: false },
            }
        })
        .collect();
    let isolate = match (suspects.first(), suspects.last()) {
        (Some(&first), Some(&last)) => Some(Isolation { first, last, batch_size: suspects.len().div_ceil(2) }),
        _ => None,
    };
    Settlement { fates, counts, isolate }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn outcomes_become_fates() {
        let offsets = [10, 11, 12, 13];
        let outcomes = [
            Outcome::Processed,
            Outcome::Retry("later".into()),
            Outcome::Reject("never".into()),
            Outcome::Fault(GuestFault::Panic("boom".into())),
        ];
        let s = settle(&offsets, &outcomes, |o| if o == 13 { 2 } else { 0 }, 3);
        assert_eq!(
            s.fates,
            [
                Fate::Done,
                Fate::Again { attempts: 1, backoff: true },
                Fate::GiveUp { reason: "never".into(), attempts: 1 },
                Fate::GiveUp { reason: "guest fault: guest panicked: boom (after 3 attempts)".into(), attempts: 3 },
            ]
        );
        assert_eq!((s.counts.processed, s.counts.retried, s.counts.failed), (1, 2, 1));
        assert!(!s.all_done());
        assert_eq!(s.isolate, None);
    }

    /// A fault of the host (a full instance pool) is no attempt of the records: at
    /// their last attempt they come back, after a backoff, instead of being given up.
    #[test]
    fn a_fault_of_the_host_backs_off_without_charging_the_records() {
        let offsets = [7, 8];
        let host = Outcome::Fault(GuestFault::PoolFull("instance pool full".into()));
        let s = settle(&offsets, &[host.clone(), host], |_| 2, 3);
        assert_eq!(s.fates, [Fate::Again { attempts: 2, backoff: true }, Fate::Again { attempts: 2, backoff: true }]);
        assert_eq!(s.counts, BatchCounts::default(), "nothing for the version's failure rate either");
    }

    #[test]
    fn records_that_ran_out_of_time_together_come_back_in_halves_uncharged() {
        let offsets = [5, 6, 7, 8, 9];
        let outcomes = [Outcome::Processed, Outcome::Suspect, Outcome::Suspect, Outcome::Suspect, Outcome::Untried];
        let s = settle(&offsets, &outcomes, |_| 1, 3);
        assert_eq!(s.fates[1], Fate::Again { attempts: 1, backoff: false });
        assert_eq!(s.fates[4], Fate::Again { attempts: 1, backoff: false });
        assert_eq!(s.isolate, Some(Isolation { first: 6, last: 8, batch_size: 2 }));
        assert_eq!(s.counts.processed, 1);
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Processed),
            Just(Outcome::Retry("r".into())),
            Just(Outcome::Reject("x".into())),
            Just(Outcome::Fault(GuestFault::Timeout(5))),
            Just(Outcome::Suspect),
            Just(Outcome::Untried),
            Just(Outcome::Fault(GuestFault::PoolFull("instance pool full".into()))),
        ]
    }

    proptest! {
        /// Only processed records are done; nobody is charged more than one attempt
        /// per batch, nor for time it did not get; nothing retries past the limit.
        #[test]
        fn fates_follow_the_policy(
            outcomes in prop::collection::vec(outcome(), 0..40),
            before in prop::collection::vec(0u32..6, 40),
            max in 1u32..6,
        ) {
            let offsets: Vec<i64> = (0..outcomes.len() as i64).map(|i| 100 + 2 * i).collect();
            let before_of = |o: i64| before[((o - 100) / 2) as usize].min(max - 1);
            let s = settle(&offsets, &outcomes, before_of, max);
            prop_assert_eq!(s.fates.len(), offsets.len());
            for ((&o, outcome), fate) in offsets.iter().zip(&outcomes).zip(&s.fates) {
                let b = before_of(o);
                prop_assert_eq!(fate.is_done(), outcome.is_processed());
                match fate {
                    Fate::Done => {}
                    Fate::Again { attempts, backoff } => {
                        prop_assert!(*attempts < max, "a record is delivered again only below the limit");
                        let untimely = matches!(outcome, Outcome::Suspect | Outcome::Untried);
                        let hosts = matches!(outcome, Outcome::Fault(GuestFault::PoolFull(_)));
                        prop_assert_eq!(*attempts, if untimely || hosts { b } else { b + 1 });
                        prop_assert_eq!(*backoff, !untimely);
                    }
                    Fate::GiveUp { attempts, .. } => {
                        prop_assert!(!matches!(outcome, Outcome::Fault(GuestFault::PoolFull(_))), "never for the host's fault");
                        prop_assert_eq!(*attempts, b + 1);
                        prop_assert!(matches!(outcome, Outcome::Reject(_)) || *attempts >= max);
                    }
                }
            }
            let suspects: Vec<i64> = offsets.iter().zip(&outcomes).filter(|(_, o)| **o == Outcome::Suspect).map(|(o, _)| *o).collect();
            match s.isolate {
                None => prop_assert!(suspects.is_empty()),
                Some(iso) => {
                    prop_assert_eq!((iso.first, iso.last), (suspects[0], suspects[suspects.len() - 1]));
                    prop_assert!(iso.batch_size >= 1 && iso.batch_size < suspects.len().max(2));
                }
            }
        }
    }
}
