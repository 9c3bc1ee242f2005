//! A stateful processor: counts records per key, per input partition, across batches.
//!
//! The counts live in the processor's fields, so they survive from one batch to the
//! next — but only for the life of the WebAssembly instance, and only while this
//! member owns the partition:
//!
//! - one instance serves every partition of the pipeline, so the counts are kept per
//!   partition ([`PerPartition`]), never mixed;
//! - when a partition moves to another member, [`Processor::revoked`] drops its
//!   counts: the new owner starts from what it reads, not from a stale copy here;
//! - when the host replaces the instance (after a trap, a memory recycle, a redeploy
//!   or a restart) counting starts again from zero. A real processor would treat such
//!   state as a cache or rebuild it from the stream.
//!
//! Once per batch it logs a summary line, so it imports the `log` capability (and not
//! `output`: it emits nothing).

use std::collections::BTreeMap;

use ferry_sdk::{Batch, Context, Error, Outcome, PerPartition, Processor, Record, TopicPartition};

/// The counts of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Records seen per key.
    pub by_key: BTreeMap<Vec<u8>, u64>,
    /// Records seen without a key.
    pub keyless: u64,
    /// Records seen in all.
    pub total: u64,
}

impl Counts {
    /// Counts one record with this key.
    pub fn observe(&mut self, key: Option<&[u8]>) {
        match key {
            Some(key) => match self.by_key.get_mut(key) {
                Some(count) => *count += 1,
                None => {
                    self.by_key.insert(key.to_vec(), 1);
                }
            },
            None => self.keyless += 1,
        }
        self.total += 1;
    }

    /// Records seen with this key.
    pub fn count(&self, key: &[u8]) -> u64 {
        self.by_key.get(key).copied().unwrap_or(0)
    }

    fn consistent(&self) -> bool {
        self.by_key.values().sum::<u64>() + self.keyless == self.total
    }
}

/// Counts records per key and partition.
#[derive(Debug, Default)]
pub struct Counter {
    partitions: PerPartition<Counts>,
    batches: u64,
}

impl Counter {
    /// The counts of `topic`/`partition`, if this instance saw any of its records
    /// since it was assigned.
    pub fn counts(&self, topic: &str, partition: i32) -> Option<&Counts> {
        self.partitions.get(topic, partition)
    }

    /// Batches seen.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

impl Processor for Counter {
    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        self.partitions.of(record).observe(record.key());
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        let counts = self.partitions.entry(batch.topic(), batch.partition());
        for record in batch {
            counts.observe(record.key());
        }
        self.batches += 1;
        let summary = format!(
            "counted {} records from {}/{}; {} distinct keys, {} keyless, {} records of this partition so far",
            batch.len(),
            batch.topic(),
            batch.partition(),
            counts.by_key.len(),
            counts.keyless,
            counts.total,
        );
        ctx.info(&summary);
        vec![Outcome::Processed; batch.len()]
    }

    fn revoked(&mut self, partition: &TopicPartition) {
        self.partitions.revoke(partition);
    }

    fn self_test(&mut self) -> Result<(), String> {
        let mut scratch = Counts::default();
        for key in [Some(&b"a"[..]), Some(b"b"), Some(b"a"), None] {
            scratch.observe(key);
        }
        if scratch.count(b"a") != 2 || scratch.count(b"b") != 1 || scratch.keyless != 1 || !scratch.consistent() {
            return Err(format!("counting is broken: {scratch:?}"));
        }
        Ok(())
    }
}

ferry_sdk::export_processor!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::Level;
    use ferry_sdk::testing::{Harness, TestBatch};

    #[test]
    fn counts_persist_across_batches_per_partition() {
        let host = Harness::new();
        let mut counter = Counter::default();
        let first = TestBatch::new("clicks", 1).record("alice", "x").record("bob", "x").record("alice", "x");
        let run = host.run(&mut counter, &first);
        assert!(run.all_processed());
        assert_eq!(run.outcomes.len(), 3);
        assert!(run.emitted.is_empty());

        let second = TestBatch::new("clicks", 1).at_offset(3).record("alice", "y").value_only("no key");
        host.run(&mut counter, &second);
        host.run(&mut counter, &TestBatch::new("clicks", 2).record("alice", "z"));

        let one = counter.counts("clicks", 1).unwrap();
        assert_eq!((one.count(b"alice"), one.count(b"bob"), one.count(b"carol")), (3, 1, 0));
        assert_eq!((one.keyless, one.total), (1, 5));
        assert_eq!(counter.counts("clicks", 2).unwrap().total, 1, "partitions are counted apart");
        assert_eq!(counter.batches(), 3);
    }

    #[test]
    fn a_revoked_partition_forgets_its_counts() {
        let host = Harness::new();
        let mut counter = Counter::default();
        host.run(&mut counter, &TestBatch::new("clicks", 0).record("a", "1"));
        host.run(&mut counter, &TestBatch::new("clicks", 1).record("a", "1"));
        host.revoke(&mut counter, "clicks", 0);
        assert_eq!(counter.counts("clicks", 0), None);
        assert_eq!(counter.counts("clicks", 1).unwrap().total, 1);
        // Given back later, it starts from zero.
        host.run(&mut counter, &TestBatch::new("clicks", 0).at_offset(7).record("a", "1"));
        assert_eq!(counter.counts("clicks", 0).unwrap().total, 1);
    }

    #[test]
    fn logs_one_summary_per_batch() {
        let host = Harness::new();
        let mut counter = Counter::default();
        let batch = TestBatch::new("clicks", 2).record("a", "1").record("b", "2");
        let run = host.run(&mut counter, &batch);
        assert_eq!(run.logs.len(), 1);
        assert_eq!(run.logs[0].level, Level::Info);
        assert_eq!(
            run.logs[0].message,
            "counted 2 records from clicks/2; 2 distinct keys, 0 keyless, 2 records of this partition so far"
        );

        let run = host.run(&mut counter, &TestBatch::new("clicks", 2));
        assert_eq!(run.logs.len(), 1);
        assert!(run.logs[0].message.starts_with("counted 0 records"));
    }

    #[test]
    fn self_test_passes() {
        assert_eq!(Harness::new().self_test::<Counter>(), Ok(()));
    }
}
