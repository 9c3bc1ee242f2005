//! Automatic rollback: a newly deployed version is watched over its first records and
//! put back to the previous one if too many of them fail.

use std::sync::Arc;

use serde::Deserialize;

use super::ProbationView;
use crate::sandbox::ProcessorComponent;

/// `auto_rollback = { records = N, max_failure_rate = 0.2 }` in a pipeline.
///
/// A new version is rolled back as soon as more than `max_failure_rate × records` of
/// the records it handles fail before it has handled `records` of them; reaching
/// `records` within that budget confirms it. A failure is a retry, a reject or a guest
/// fault, counted per attempt. Counting happens per batch, so the batch that crosses
/// `records` counts whole.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRollback {
    /// How many records a new version is watched over.
    pub records: u64,
    /// The share of them allowed to fail, from 0 to 1.
    pub max_failure_rate: f64,
}

impl AutoRollback {
    /// Checks the values; the error names the field under `at`.
    pub fn validate(&self, at: &str) -> anyhow::Result<()> {
        if !(1..=100_000_000).contains(&self.records) {
            anyhow::bail!("{at}.records: must be between 1 and 100000000, got {}", self.records);
        }
        if !(0.0..=1.0).contains(&self.max_failure_rate) {
            anyhow::bail!("{at}.max_failure_rate: must be between 0 and 1, got {}", self.max_failure_rate);
        }
        Ok(())
    }

    /// Failures beyond this many mean a rollback.
    fn budget(&self) -> f64 {
        self.max_failure_rate * self.records as f64
    }
}

/// What the probation concluded after a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ProbationVerdict {
    /// Keep counting.
    Undecided,
    /// It handled enough records within its failure budget.
    Confirmed { records: u64, failures: u64 },
    /// It used up its failure budget: roll it back.
    Failed { records: u64, failures: u64, policy: AutoRollback },
}

/// One version on probation.
#[derive(Debug)]
pub(crate) struct Probation {
    component: Arc<ProcessorComponent>,
    tally: Tally,
}

impl Probation {
    pub(crate) fn new(component: Arc<ProcessorComponent>, policy: AutoRollback) -> Self {
        Self { component, tally: Tally { policy, records: 0, failures: 0 } }
    }

    /// Whether batches run on `ran` count towards this probation.
    pub(crate) fn watches(&self, ran: &Arc<ProcessorComponent>) -> bool {
        Arc::ptr_eq(&self.component, ran)
    }

    /// Adds one batch's counts.
    pub(crate) fn observe(&mut self, records: u64, failures: u64) -> ProbationVerdict {
        self.tally.observe(records, failures)
    }

    pub(crate) fn view(&self) -> ProbationView {
        ProbationView { policy: self.tally.policy, records: self.tally.records, failures: self.tally.failures }
    }
}

/// The counts, and the rule applied to them.
#[derive(Debug, Clone, Copy)]
struct Tally {
    policy: AutoRollback,
    records: u64,
    failures: u64,
}

impl Tally {
    fn observe(&mut self, records: u64, failures: u64) -> ProbationVerdict {
        self.records += records;
        self.failures += failures;
        if self.failures as f64 > self.policy.budget() {
            ProbationVerdict::Failed { records: self.records, failures: self.failures, policy: self.policy }
        } else if self.records >= self.policy.records {
            ProbationVerdict::Confirmed { records: self.records, failures: self.failures }
        } else {
            ProbationVerdict::Undecided
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(policy: AutoRollback, batches: &[(u64, u64)]) -> Vec<ProbationVerdict> {
        let mut tally = Tally { policy, records: 0, failures: 0 };
        batches.iter().map(|&(records, failures)| tally.observe(records, failures)).collect()
    }

    const POLICY: AutoRollback = AutoRollback { records: 100, max_failure_rate: 0.2 };
    #[test]
    fn confirms_a_version_within_its_budget() {
        let v = verdicts(POLICY, &[(50, 10), (50, 10)]);
        assert_eq!(v, vec![ProbationVerdict::Undecided, ProbationVerdict::Confirmed { records: 100, failures: 20 }]);
    }

    #[test]
    fn rolls_back_as_soon_as_the_budget_is_spent() {
        let v = verdicts(POLICY, &[(10, 0), (30, 21)]);
        assert_eq!(v[1], ProbationVerdict::Failed { records: 40, failures: 21, policy: POLICY });
    }

    #[test]
    fn a_zero_rate_tolerates_nothing() {
        let strict = AutoRollback { records: 10, max_failure_rate: 0.0 };
        assert!(matches!(verdicts(strict, &[(5, 1)])[0], ProbationVerdict::Failed { .. }));
        assert!(matches!(verdicts(strict, &[(10, 0)])[0], ProbationVerdict::Confirmed { .. }));
    }

    #[test]
    fn validation_names_the_field() {
        let e = AutoRollback { records: 0, max_failure_rate: 0.5 }.validate("p.auto_rollback").unwrap_err();
        assert!(e.to_string().contains("p.auto_rollback.records"), "{e}");
        let e = AutoRollback { records: 5, max_failure_rate: 1.5 }.validate("p.auto_rollback").unwrap_err();
        assert!(e.to_string().contains("max_failure_rate"), "{e}");
    }
}
