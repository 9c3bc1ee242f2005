//! Outputs held back until their records are below the watermark (exactly-once).
//!
//! A transaction commits a partition's outputs together with its offset, and the
//! offset can only be the watermark: the first unfinished record. A record finished
//! above a retry that is still pending would have its outputs committed while the
//! offset says it must be read again, and the next owner (after a crash or a
//! rebalance) would publish them a second time. So outputs, and dead letters, wait
//! here until everything before their record is finished; then they go into the
//! partition's transaction, and whatever offset that transaction commits covers
//! them. Records processed again after a rewind start from an empty hold.
//!
//! The hold is bounded by one batch's output budget (`output_bytes_per_batch`) plus
//! its dead letters: while a retry is pending, newer records are buffered but not
//! processed (`super::partition`), so only records of the batch that had the retry
//! can finish above it.
//!
//! Pure, so it can be property-tested.

use std::collections::BTreeMap;

/// Outputs of finished records, by the offset of the record they belong to.
#[derive(Debug)]
pub struct Held<T> {
    by_offset: BTreeMap<i64, Vec<T>>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Self { by_offset: BTreeMap::new() }
    }
}

impl<T> Held<T> {
    /// Holds `item` for the record at `offset`, after any held for it before.
    pub fn hold(&mut self, offset: i64, item: T) {
        self.by_offset.entry(offset).or_default().push(item);
    }

    /// Takes everything held for records below `watermark`, in offset order (and, per
    /// record, in the order held).
    pub fn release_below(&mut self, watermark: i64) -> Vec<T> {
        let kept = self.by_offset.split_off(&watermark);
        std::mem::replace(&mut self.by_offset, kept).into_values().flatten().collect()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever is held and released, in any order: an item leaves only once its
        /// offset is below the watermark given, each item leaves exactly once, in
        /// offset order.
        #[test]
        fn releases_exactly_what_is_below_the_watermark(
            steps in prop::collection::vec((any::<bool>(), 0i64..50), 1..200)
        ) {
            let mut held: Held<(i64, usize)> = Held::default();
            let mut outstanding: Vec<(i64, usize)> = Vec::new();
            let mut released_all = Vec::new();
            for (n, (release, offset)) in steps.into_iter().enumerate() {
                if release {
                    let out = held.release_below(offset);
                    prop_assert!(out.iter().all(|i| i.0 < offset));
                    prop_assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
                    outstanding.retain(|i| !out.contains(i));
                    prop_assert!(outstanding.iter().all(|i| i.0 >= offset), "left behind something below");
                    released_all.extend(out);
                } else {
                    let item = (offset, n);
                    held.hold(offset, item);
                    outstanding.push(item);
                }
            }
            let rest = held.release_below(i64::MAX);
            prop_assert_eq!(rest.len(), outstanding.len());
            released_all.extend(rest);
            let mut ids: Vec<usize> = released_all.iter().map(|i| i.1).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), released_all.len(), "an item left twice");
            prop_assert!(held.is_empty());
        }
    }

    #[test]
    fn keeps_emit_order_within_a_record() {
        let mut held = Held::default();
        held.hold(7, "b");
        held.hold(3, "a");
        held.hold(7, "c");
        assert_eq!(held.release_below(7), vec!["a"]);
        assert_eq!(held.release_below(8), vec!["b", "c"]);
    }
}
