//! Validation of what a guest returns, and what happened to each record. Nothing a
//! guest says is trusted until it passed here: a wrong count, an offset outside the
//! batch or a duplicate is a guest error, never a commit.

use super::bindings::{BatchResult, Status};
use super::fault::GuestFault;
use super::text::sanitize;

/// Longest failure reason kept, in characters.
const MAX_REASON_CHARS: usize = 500;

/// What happened to one record: the one type the host uses for it (the WIT
/// `status` is its wire form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished by the guest.
    Processed,
    /// The guest asked to try again later.
    Retry(String),
    /// The guest rejected it for good.
    Reject(String),
    /// The guest faulted on it (alone, or on every record of a part that could not
    /// be split further).
    Fault(GuestFault),
    /// It was in a call of several records that ran out of time: which of them held
    /// the guest up is not known yet.
    Suspect,
    /// The guest never got to it in full: time ran out earlier in its batch, or the
    /// host is shutting down.
    Untried,
}

impl Outcome {
    /// Whether the record is done.
    pub fn is_processed(&self) -> bool {
        matches!(self, Outcome::Processed)
    }
}

/// A validated batch result: exactly one status per record of the batch.
#[derive(Debug, Clone, Default)]
pub struct BatchReply {
    statuses: Vec<Status>,
    /// (index into the batch, sanitized reason), sorted by index.
    reasons: Vec<(usize, String)>,
}

impl BatchReply {
    /// Checks `result` against the offsets of the batch it answers (ascending).
    pub fn validate(result: BatchResult, offsets: &[i64]) -> Result<Self, String> {
        let BatchResult { statuses, failures } = result;
        if statuses.len() != offsets.len() {
            return Err(format!("returned {} statuses for a batch of {} records", statuses.len(), offsets.len()));
        }
        if failures.len() > offsets.len() {
            return Err(format!("returned {} failures for {} records", failures.len(), offsets.len()));
        }
        let mut reasons = Vec::with_capacity(failures.len());
        for failure in failures {
            let index = offsets
                .binary_search(&failure.offset)
                .map_err(|_| format!("returned a failure for offset {}, which is not in the batch", failure.offset))?;
            if statuses[index] == Status::Processed {
                return Err(format!("returned a failure for offset {} it marked processed", failure.offset));
            }
            reasons.push((index, sanitize(&failure.reason, MAX_REASON_CHARS)));
        }
        reasons.sort_unstable_by_key(|(index, _)| *index);
        if reasons.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("returned two failures for the same offset".to_owned());
        }
        Ok(Self { statuses, reasons })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.statuses.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }

    /// Whether every record was processed.
    pub fn all_processed(&self) -> bool {
        self.reasons.is_empty() && self.statuses.iter().all(|s| *s == Status::Processed)
    }

    /// The outcome of every record, in batch order.
    pub fn into_outcomes(self) -> impl Iterator<Item = Outcome> {
        let mut reasons = self.reasons.into_iter().peekable();
        self.statuses.into_iter().enumerate().map(move |(index, status)| {
            let mut reason = || match reasons.next_if(|(i, _)| *i == index) {
                Some((_, reason)) => reason,
                None => "no reason given".to_owned(),
            };
            match status {
                Status::Processed => Outcome::Processed,
                Status::Retry => Outcome::Retry(reason()),
                Status::Reject => Outcome::Reject(reason()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Failure;

    fn result(statuses: Vec<Status>, failures: Vec<(i64, &str)>) -> BatchResult {
        BatchResult {
            statuses,
            failures: failures.into_iter().map(|(offset, r)| Failure { offset, reason: r.into() }).collect(),
        }
    }

    #[test]
    fn accepts_one_status_per_record() {
        let r = BatchReply::validate(
            result(vec![Status::Processed, Status::Retry, Status::Reject], vec![(11, "later")]),
            &[10, 11, 12],
        )
        .unwrap();
        assert!(!r.all_processed());
        let outcomes: Vec<_> = r.into_outcomes().collect();
        assert_eq!(
            outcomes,
            [Outcome::Processed, Outcome::Retry("later".into()), Outcome::Reject("no reason given".into())]
        );
    }

    #[test]
    fn refuses_a_wrong_count() {
        let err = BatchReply::validate(result(vec![Status::Processed], vec![]), &[1, 2]).unwrap_err();
        assert!(err.contains("1 statuses for a batch of 2"), "{err}");
    }

    #[test]
    fn refuses_foreign_and_duplicate_offsets() {
        let foreign = BatchReply::validate(result(vec![Status::Retry], vec![(99, "x")]), &[1]).unwrap_err();
        assert!(foreign.contains("offset 99"), "{foreign}");
        let dup = BatchReply::validate(result(vec![Status::Retry], vec![(1, "x"), (1, "y")]), &[1]).unwrap_err();
        assert!(dup.contains("same offset") || dup.contains("failures for 1"), "{dup}");
        let processed = BatchReply::validate(result(vec![Status::Processed], vec![(1, "x")]), &[1]).unwrap_err();
        assert!(processed.contains("marked processed"), "{processed}");
    }

    #[test]
    fn sanitizes_reasons() {
        let r = BatchReply::validate(result(vec![Status::Reject], vec![(1, "bad\x1b[2J")]), &[1]).unwrap();
        assert_eq!(r.into_outcomes().next(), Some(Outcome::Reject("bad\u{fffd}[2J".into())));
    }
}
