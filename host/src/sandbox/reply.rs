//! Validation of what a guest returns. Nothing a guest says is trusted until it
//! passed here: a wrong count, an offset outside the batch or a duplicate is a guest
//! error, never a commit.

use super::bindings::{BatchResult, Status};
use super::text::sanitize;

/// Longest failure reason kept, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The host's view of one record's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Finished.
    Processed,
    /// Try again later.
    Retry(&'a str),
    /// Never going to work.
    Reject(&'a str),
}

/// A validated batch result: exactly one status per record of the batch.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    statuses: Vec<Status>,
    /// (index into the batch, sanitized reason), sorted by index.
    reasons: Vec<(usize, String)>,
}

impl Reply {
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

    /// A reply where every record has the same failure (used when a whole batch is
    /// given up on).
    pub fn all(count: usize, status: Status, reason: &str) -> Self {
        Self { statuses: vec![status; count], reasons: (0..count).map(|i| (i, reason.to_owned())).collect() }
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

    /// The outcome of the record at `index`.
    pub fn outcome(&self, index: usize) -> Outcome<'_> {
        let reason = || {
            self.reasons
                .binary_search_by_key(&index, |(i, _)| *i)
                .map_or("no reason given", |at| self.reasons[at].1.as_str())
        };
        match self.statuses[index] {
            Status::Processed => Outcome::Processed,
            Status::Retry => Outcome::Retry(reason()),
            Status::Reject => Outcome::Reject(reason()),
        }
    }

    /// Indexes of records that were not processed, ascending.
    pub fn unfinished(&self) -> impl Iterator<Item = usize> + '_ {
        self.statuses.iter().enumerate().filter(|(_, s)| **s != Status::Processed).map(|(i, _)| i)
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
        let r =
            Reply::validate(result(vec![Status::Processed, Status::Retry], vec![(11, "later")]), &[10, 11]).unwrap();
        assert_eq!(r.outcome(0), Outcome::Processed);
        assert_eq!(r.outcome(1), Outcome::Retry("later"));
        assert_eq!(r.unfinished().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn refuses_a_wrong_count() {
        let err = Reply::validate(result(vec![Status::Processed], vec![]), &[1, 2]).unwrap_err();
        assert!(err.contains("1 statuses for a batch of 2"), "{err}");
    }

    #[test]
    fn refuses_foreign_and_duplicate_offsets() {
        let foreign = Reply::validate(result(vec![Status::Retry], vec![(99, "x")]), &[1]).unwrap_err();
        assert!(foreign.contains("offset 99"), "{foreign}");
        let dup = Reply::validate(result(vec![Status::Retry], vec![(1, "x"), (1, "y")]), &[1]).unwrap_err();
        assert!(dup.contains("same offset") || dup.contains("failures for 1"), "{dup}");
        let processed = Reply::validate(result(vec![Status::Processed], vec![(1, "x")]), &[1]).unwrap_err();
        assert!(processed.contains("marked processed"), "{processed}");
    }

    #[test]
    fn sanitizes_reasons() {
        let r = Reply::validate(result(vec![Status::Reject], vec![(1, "bad\x1b[2J")]), &[1]).unwrap();
        assert_eq!(r.outcome(0), Outcome::Reject("bad\u{fffd}[2J"));
    }
}
