//! State kept per input partition, dropped when the partition is revoked.

use std::collections::HashMap;

use crate::{Record, TopicPartition};

/// One `T` per input partition, created on first use.
///
/// A processor instance serves every partition its pipeline owns; keeping state in
/// a `PerPartition` and calling [`revoke`](Self::revoke) from
/// [`Processor::revoked`](crate::Processor::revoked) makes sure one partition's
/// state is never mixed with another's, and never outlives its ownership.
///
/// ```
/// use ferry_sdk::{PerPartition, TopicPartition};
///
/// let mut counts: PerPartition<u64> = PerPartition::default();
/// *counts.entry("clicks", 0) += 1;
/// *counts.entry("clicks", 1) += 5;
/// counts.revoke(&TopicPartition { topic: "clicks".into(), partition: 1 });
/// assert_eq!(counts.get("clicks", 0), Some(&1));
/// assert_eq!(counts.get("clicks", 1), None);
/// ```
#[derive(Debug, Clone)]
pub struct PerPartition<T> {
    /// By topic, then partition: looked up with a borrowed topic name.
    states: HashMap<String, HashMap<i32, T>>,
}

impl<T> Default for PerPartition<T> {
    fn default() -> Self {
        PerPartition { states: HashMap::new() }
    }
}

impl<T: Default> PerPartition<T> {
    /// The state of `topic`/`partition`, created with [`Default`] if new.
    pub fn entry(&mut self, topic: &str, partition: i32) -> &mut T {
        if !self.states.contains_key(topic) {
            self.states.insert(topic.to_owned(), HashMap::new());
        }
        self.states.get_mut(topic).expect("just inserted").entry(partition).or_default()
    }

    /// The state of `record`'s partition, created if new.
    pub fn of(&mut self, record: &Record<'_>) -> &mut T {
        self.entry(record.topic(), record.partition())
    }
}

impl<T> PerPartition<T> {
    /// The state of `topic`/`partition`, if any.
    pub fn get(&self, topic: &str, partition: i32) -> Option<&T> {
        self.states.get(topic)?.get(&partition)
    }

    /// Drops the state of a revoked partition, returning it.
    pub fn revoke(&mut self, partition: &TopicPartition) -> Option<T> {
        let topic = self.states.get_mut(&partition.topic)?;
        let state = topic.remove(&partition.partition);
        if topic.is_empty() {
            self.states.remove(&partition.topic);
        }
        state
    }

    /// Every partition with state, and its state.
    pub fn iter(&self) -> impl Iterator<Item = ((&str, i32), &T)> {
        self.states.iter().flat_map(|(t, parts)| parts.iter().map(move |(p, s)| ((t.as_str(), *p), s)))
    }

    /// How many partitions have state.
    pub fn len(&self) -> usize {
        self.states.values().map(HashMap::len).sum()
    }

    /// Whether no partition has state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}
