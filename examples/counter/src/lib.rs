//! A stateful processor: counts records per key across batches.
//!
//! The counts live in the processor's fields, so they survive from one batch to the
//! next — but only for the life of the WebAssembly instance. When the host replaces
//! the instance (after a trap, a memory recycle, a redeploy or a restart) counting
//! starts again from zero. A real processor would treat such state as a cache or
//! rebuild it.
//!
//! Once per batch it logs a summary line, so it imports the `log` capability (and not
//! `output`: it emits nothing).

use std::collections::BTreeMap;

use ferry_sdk::{Batch, Context, Outcome, Processor, Record};

/// Counts records per key. Records without a key are counted apart.
#[derive(Debug, Default)]
pub struct Counter {
    counts: BTreeMap<Vec<u8>, u64>,
    keyless: u64,
    total: u64,
    batches: u64,
}

impl Counter {
    /// Records seen with this key.
    pub fn count(&self, key: &[u8]) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// All per-key counts, ordered by key.
    pub fn counts(&self) -> &BTreeMap<Vec<u8>, u64> {
        &self.counts
    }

    /// Records seen without a key.
    pub fn keyless(&self) -> u64 {
        self.keyless
    }

    /// Records seen in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Batches seen.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Counts one record with this key.
    pub fn observe(&mut self, key: Option<&[u8]>) {
        match key {
            Some(key) => match self.counts.get_mut(key) {
                Some(count) => *count += 1,
                None => {
                    self.counts.insert(key.to_vec(), 1);
                }
            },
            None => self.keyless += 1,
        }
        self.total += 1;
    }

    fn consistent(&self) -> bool {
        self.counts.values().sum::<u64>() + self.keyless == self.total
    }
}

impl Processor for Counter {
    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Outcome {
        self.observe(record.key());
        Outcome::Processed
    }

    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        let outcomes: Vec<Outcome> = batch.iter().map(|record| self.process(&record, ctx)).collect();
        self.batches += 1;
        ctx.info(&format!(
            "counted {} records from {}/{}; {} distinct keys, {} keyless, {} records in {} batches so far",
            batch.len(),
            batch.topic(),
            batch.partition(),
            self.counts.len(),
            self.keyless,
            self.total,
            self.batches,
        ));
        outcomes
    }

    fn self_test(&mut self) -> Result<(), String> {
        let mut scratch = Counter::default();
        for key in [Some(&b"a"[..]), Some(b"b"), Some(b"a"), None] {
            scratch.observe(key);
        }
        if scratch.count(b"a") != 2 || scratch.count(b"b") != 1 || scratch.keyless() != 1 {
            return Err(format!("counting is broken: {scratch:?}"));
        }
        if !scratch.consistent() || !self.consistent() {
            return Err("counts do not add up to the total".into());
        }
        Ok(())
    }
}

ferry_sdk::export_processor!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::Level;
    use ferry_sdk::testing::{self, TestBatch};

    #[test]
    fn counts_persist_across_batches() {
        let mut counter = Counter::default();
        let first = TestBatch::new("clicks", 1).record("alice", "x").record("bob", "x").record("alice", "x");
        let run = testing::run(&mut counter, &first);
        assert!(run.all_processed());
        assert_eq!(run.outcomes.len(), 3);
        assert!(run.emitted.is_empty());

        let second = TestBatch::new("clicks", 1).at_offset(3).record("alice", "y").value_only("no key");
        testing::run(&mut counter, &second);

        assert_eq!(counter.count(b"alice"), 3);
        assert_eq!(counter.count(b"bob"), 1);
        assert_eq!(counter.count(b"carol"), 0);
        assert_eq!(counter.keyless(), 1);
        assert_eq!(counter.total(), 5);
        assert_eq!(counter.batches(), 2);
        assert_eq!(counter.counts().keys().collect::<Vec<_>>(), [&b"alice".to_vec(), &b"bob".to_vec()]);
    }

    #[test]
    fn logs_one_summary_per_batch() {
        let mut counter = Counter::default();
        let batch = TestBatch::new("clicks", 2).record("a", "1").record("b", "2");
        let run = testing::run(&mut counter, &batch);
        assert_eq!(run.logs.len(), 1);
        assert_eq!(run.logs[0].level, Level::Info);
        assert_eq!(
            run.logs[0].message,
            "counted 2 records from clicks/2; 2 distinct keys, 0 keyless, 2 records in 1 batches so far"
        );

        let run = testing::run(&mut counter, &TestBatch::new("clicks", 2));
        assert_eq!(run.logs.len(), 1);
        assert!(run.logs[0].message.starts_with("counted 0 records"));
    }

    #[test]
    fn self_test_passes() {
        assert_eq!(Counter::default().self_test(), Ok(()));
        let mut used = Counter::default();
        testing::run(&mut used, &TestBatch::new("t", 0).record("k", "v"));
        assert_eq!(used.self_test(), Ok(()));
    }
}
