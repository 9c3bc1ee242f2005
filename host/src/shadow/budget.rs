//! What a shadow may cost the live path: a share of the live version's batch time.
//!
//! The shadow runs after the live version, on the same thread, so every moment it
//! takes delays the next live batch. Its time is kept as a debt, paid down by `share`
//! of every live batch's time; it runs a batch only when it owes nothing, and saves no
//! credit while idle. So over any run the shadow's time stays within `share` of the
//! live time plus one shadow batch (at most its own time limit): a shadow that hangs
//! costs one time limit, then skips batches until the live path has earned it back.

use std::time::Duration;

/// The debt of one worker's shadow.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    share: f64,
    /// Shadow time beyond its share not yet paid down by live time, in seconds.
    debt: f64,
    /// What the current live batch allows the shadow, once the debt is paid.
    allowance: f64,
}

impl Budget {
    /// A budget allowing `share` of the live time.
    pub fn new(share: f64) -> Self {
        Self { share, debt: 0.0, allowance: 0.0 }
    }

    /// The live version ran a batch in `took`: whether the shadow may run it now.
    pub fn live_ran(&mut self, took: Duration) -> bool {
        let earned = self.share * took.as_secs_f64();
        self.allowance = (earned - self.debt).max(0.0);
        self.debt = (self.debt - earned).max(0.0);
        self.debt == 0.0
    }

    /// The shadow ran the batch in `took`: what it took beyond this batch's allowance
    /// is owed.
    pub fn shadow_ran(&mut self, took: Duration) {
        self.debt += (took.as_secs_f64() - self.allowance).max(0.0);
        self.allowance = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the live and shadow batch times: the shadow's total stays within
        /// its share of the live total plus its longest batch, and a shadow as fast
        /// as its share runs every batch.
        #[test]
        fn the_shadow_stays_within_its_share(
            batches in prop::collection::vec((1u64..1000, 0u64..5000), 1..200),
            share in 0.05f64..2.0,
        ) {
            let mut budget = Budget::new(share);
            let (mut live, mut shadow, mut longest) = (0u64, 0u64, 0u64);
            let mut skipped = 0;
            for &(l, s) in &batches {
                live += l;
                if budget.live_ran(Duration::from_micros(l)) {
                    shadow += s;
                    longest = longest.max(s);
                    budget.shadow_ran(Duration::from_micros(s));
                } else {
                    skipped += 1;
                }
            }
            prop_assert!(shadow as f64 <= share * live as f64 + longest as f64 + 1.0, "{} > {} × {} + {}", shadow, share, live, longest);
            let cheap: Vec<_> = batches.iter().map(|&(l, _)| (l, (share * l as f64).floor() as u64)).collect();
            let mut budget = Budget::new(share);
            for (l, s) in cheap {
                prop_assert!(budget.live_ran(Duration::from_micros(l)));
                budget.shadow_ran(Duration::from_micros(s));
            }
            prop_assert!(skipped <= batches.len());
        }
    }

    #[test]
    fn a_hanging_shadow_skips_until_paid_back() {
        let mut budget = Budget::new(0.5);
        assert!(budget.live_ran(Duration::from_millis(10)));
        budget.shadow_ran(Duration::from_millis(100));
        let runs: Vec<bool> = (0..25).map(|_| budget.live_ran(Duration::from_millis(10))).collect();
        // 100 ms, 5 of them within the first batch's share: 95 owed, 5 paid per batch.
        assert_eq!(runs.iter().position(|&r| r), Some(18), "{runs:?}");
    }
}
