//! A stateful processor: counts records per key in the host's keyed state, and
//! emits each record's running count.
//!
//! The counts live in `ctx.state()`, the state of the record's input partition,
//! which the host keeps in a changelog topic and restores when the partition is
//! assigned: they survive traps, recycles, redeploys, restarts and rebalances.
//! With exactly-once delivery each record is counted exactly once; with
//! at-least-once, records after the last commit are counted again after a crash.
//!
//! For each keyed record it emits (key, running count as decimal text) to the topic
//! named by the `output_topic` setting (default `counts`). Records without a key
//! are passed over. Once per batch it logs a summary line.

use ferry_sdk::{Context, Error, Processor, Record, Settings};

/// Counts records per key in state.
#[derive(Debug)]
pub struct Counter {
    output_topic: String,
    batches: u64,
}

impl Default for Counter {
    fn default() -> Self {
        Counter { output_topic: "counts".to_owned(), batches: 0 }
    }
}

impl Counter {
    /// Batches seen by this instance.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

/// The count of `key` so far (the state key is the record key itself).
fn count_of(ctx: &mut Context, key: &[u8]) -> u64 {
    ctx.state().get_u64(key).unwrap_or(0)
}

impl Processor for Counter {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        if let Some(topic) = settings.get("output_topic") {
            self.output_topic = topic.to_owned();
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let Some(key) = record.key() else { return Ok(()) };
        let count = count_of(ctx, key) + 1;
        // A write refused by a limit is not going to fit on a retry either.
        ctx.state().put_u64(key, count).map_err(|e| Error::reject(e.to_string()))?;
        ctx.emit_kv(&self.output_topic, key, count.to_string()).map_err(|e| Error::retry(e.to_string()))?;
        Ok(())
    }

    fn process_batch(&mut self, batch: &ferry_sdk::Batch<'_>, ctx: &mut Context) -> Vec<ferry_sdk::Outcome> {
        let outcomes =
            batch.iter().map(|record| ctx.for_record(&record, |ctx| self.process(&record, ctx)).into()).collect();
        self.batches += 1;
        ctx.info(&format!("counted {} records from {}/{}", batch.len(), batch.topic(), batch.partition()));
        outcomes
    }

    fn self_test(&mut self) -> Result<(), String> {
        if self.output_topic.is_empty() {
            return Err("the output_topic setting is empty".to_owned());
        }
        Ok(())
    }
}

ferry_sdk::export_processor!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::testing::{Harness, TestBatch};

    fn counts(run: &ferry_sdk::testing::Run) -> Vec<(String, String)> {
        run.emitted.iter().map(|e| (e.key_str().unwrap().to_owned(), e.value_str().unwrap().to_owned())).collect()
    }

    #[test]
    fn counts_carry_over_batches_and_instances_per_partition() {
        let host = Harness::new();
        let mut counter = Counter::default();
        let first = TestBatch::new("clicks", 1).record("alice", "x").record("bob", "x").record("alice", "x");
        let run = host.run(&mut counter, &first);
        run.assert_all_processed();
        let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
        assert_eq!(counts(&run), pairs(&[("alice", "1"), ("bob", "1"), ("alice", "2")]));
        // A fresh instance (after a trap, a redeploy, a restart) sees the same state.
        let mut fresh = Counter::default();
        let second = TestBatch::new("clicks", 1).at_offset(3).record("alice", "y").value_only("no key");
        assert_eq!(counts(&host.run(&mut fresh, &second)), pairs(&[("alice", "3")]));
        let other = host.run(&mut fresh, &TestBatch::new("clicks", 2).record("alice", "z"));
        assert_eq!(counts(&other), pairs(&[("alice", "1")]), "partitions are counted apart");
        let state = host.state("clicks", 1);
        assert_eq!(state.get(&b"alice"[..]), Some(&3u64.to_le_bytes().to_vec()));
        assert_eq!(state.get(&b"bob"[..]), Some(&1u64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_batch_that_is_retried_leaves_its_state_as_it_was() {
        let host = Harness::new().allow_topic("elsewhere");
        let mut counter = Counter::default();
        // Emits to `counts` are refused (not an allowed topic): every record retries.
        let run = host.run(&mut counter, &TestBatch::new("clicks", 0).record("a", "1"));
        assert!(!run.all_processed());
        assert!(host.state("clicks", 0).is_empty(), "the writes of an unfinished batch are dropped");
    }

    #[test]
    fn self_test_passes() {
        assert_eq!(Harness::new().self_test::<Counter>(), Ok(()));
    }
}
