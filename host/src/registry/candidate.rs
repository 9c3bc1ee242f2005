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
        let t = &mut self.tally;
        t.compared += batch.compared;
        t.equal += batch.equal;
        t.different += batch.different;
        t.skipped += batch.skipped;
        t.skipped_batches += batch.skipped_batches;
        t.state_batches += batch.state_batches;
        t.state_different += batch.state_different;
        let room = self.config.keep_differences.saturating_sub(t.differences.len());
        t.differences.extend(batch.differences.into_iter().take(room));
        let differences = t.different + t.state_different;
        if let Some(m) = self.config.discard_after
            && differences >= m
        {
            return AutoDecision::Discard(format!("{differences} differences, discard_after = {m}"));
        }
        if let Some(n) = self.config.promote_after
            && differences == 0
            && t.equal >= n
        {
            return AutoDecision::Promote(format!("{} records equal and no difference, promote_after = {n}", t.equal));
        }
        AutoDecision::Keep
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
