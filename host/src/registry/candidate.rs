//! A shadow version beside the running one: it runs every batch after the running
//! version, and the comparison of the two accumulates here until an operator (or the
//! pipeline's `promote_after` / `discard_after`) promotes or discards it.

use std::sync::Arc;

use super::{AutoRollback, Version};
use crate::sandbox::ProcessorComponent;
use crate::shadow::{Difference, ShadowConfig, Tally};

/// The shadow of a slot.
#[derive(Debug)]
pub(super) struct Candidate {
    pub(super) version: Version,
    pub(super) config: ShadowConfig,
    pub(super) tally: Tally,
    /// The probation it goes on when promoted.
    pub(super) auto_rollback: Option<AutoRollback>,
    /// The running version it is compared against (the comparison starts over when
    /// another version becomes current).
    pub(super) against: Arc<ProcessorComponent>,
}

/// What a promotion or a discard decided on its own, after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AutoDecision {
    Keep,
    Promote(String),
    Discard(String),
}

impl Candidate {
    /// Adds one batch's comparison, keeping the first differences; then applies the
    /// pipeline's automatic rules.
    pub(super) fn add(&mut self, batch: Tally) -> AutoDecision {
        merge(&mut self.tally, batch, self.config.keep_differences);
        decide(&self.config, &self.tally)
    }

    /// The comparison in one line, for the version history.
    pub(super) fn summary(&self) -> String {
        let t = &self.tally;
        format!(
            "{} compared, {} equal, {} different, {} skipped ({} batches); state: {} batches, {} different",
            t.compared, t.equal, t.different, t.skipped, t.skipped_batches, t.state_batches, t.state_different
        )
    }
}

/// Adds one batch's comparison to `tally`, keeping the first `keep` differences.
fn merge(tally: &mut Tally, batch: Tally, keep: usize) {
    tally.compared += batch.compared;
    tally.equal += batch.equal;
    tally.different += batch.different;
    tally.skipped += batch.skipped;
    tally.skipped_batches += batch.skipped_batches;
    tally.shadow_timeouts += batch.shadow_timeouts;
    tally.state_batches += batch.state_batches;
    tally.state_different += batch.state_different;
    let room = keep.saturating_sub(tally.differences.len());
    tally.differences.extend(batch.differences.into_iter().take(room));
}

/// What the pipeline's `discard_after` and `promote_after` say of `tally`: a
/// discard once the differences (records and state batches) reach `discard_after`;
/// a promotion once `promote_after` records compared equal with no difference at all.
fn decide(config: &ShadowConfig, tally: &Tally) -> AutoDecision {
    let differences = tally.different + tally.state_different;
    if let Some(m) = config.discard_after
        && differences >= m
    {
        return AutoDecision::Discard(format!("{differences} differences, discard_after = {m}"));
    }
    if let Some(n) = config.promote_after
        && differences == 0
        && tally.equal >= n
    {
        return AutoDecision::Promote(format!("{} records equal and no difference, promote_after = {n}", tally.equal));
    }
    AutoDecision::Keep
}

/// What [`super::ProcessorSlot::shadow_view`] reports.
#[derive(Debug, Clone)]
pub struct ShadowView {
    /// The shadow version.
    pub version: Version,
    /// The version it is compared against.
    pub against: String,
    /// The comparison so far.
    pub tally: Tally,
    /// Its rules.
    pub config: ShadowConfig,
}

impl ShadowView {
    /// The first differences kept.
    pub fn differences(&self) -> &[Difference] {
        &self.tally.differences
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::Difference;

    fn batch(equal: u64, different: u64, state_different: u64) -> Tally {
        let difference = |offset| Difference {
            topic: "in".into(),
            partition: 0,
            offset,
            last_offset: offset,
            aspects: vec!["outputs"],
            live: String::new(),
            shadow: String::new(),
            diff: String::new(),
        };
        Tally {
            compared: equal + different,
            equal,
            different,
            state_batches: 1,
            state_different,
            differences: (0..different as i64).map(difference).collect(),
            ..Tally::default()
        }
    }

    #[test]
    fn promotes_after_enough_equal_records_and_never_after_a_difference() {
        let config = ShadowConfig { promote_after: Some(100), ..ShadowConfig::default() };
        let mut tally = Tally::default();
        merge(&mut tally, batch(60, 0, 0), 20);
        assert_eq!(decide(&config, &tally), AutoDecision::Keep);
        merge(&mut tally, batch(40, 0, 0), 20);
        assert!(matches!(decide(&config, &tally), AutoDecision::Promote(_)));
        merge(&mut tally, batch(0, 0, 1), 20);
        assert_eq!(decide(&config, &tally), AutoDecision::Keep, "a state difference rules it out");
    }

    #[test]
    fn discards_once_the_differences_reach_the_limit_and_keeps_the_first() {
        let config = ShadowConfig { discard_after: Some(5), keep_differences: 3, ..ShadowConfig::default() };
        let mut tally = Tally::default();
        merge(&mut tally, batch(10, 2, 1), config.keep_differences);
        assert_eq!(decide(&config, &tally), AutoDecision::Keep);
        merge(&mut tally, batch(10, 2, 0), config.keep_differences);
        assert!(matches!(decide(&config, &tally), AutoDecision::Discard(_)));
        assert_eq!((tally.compared, tally.equal, tally.different), (24, 20, 4));
        assert_eq!(tally.differences.len(), 3);
    }
}
