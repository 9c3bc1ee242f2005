//! The `state` capability: keyed state of the input partition whose batch is being
//! processed.
//!
//! The pipeline owns one [`PartitionStore`] per assigned partition. For a batch it
//! lends that partition's store to the guest's store data as a [`StateBatch`]; the
//! guest can only reach the store it was lent, so it cannot name another
//! partition, pipeline or tenant. Writes go to layers above the store: one per call
//! (dropped when the call faults) and one per batch (applied to the store only when
//! every record of the batch finished, and then sent to the changelog). Reads see
//! the call's writes, then the batch's, then the store.
//!
//! Every write is checked against [`StateLimits`] before it is kept; a write past a
//! limit is refused with a [`StateError`] the guest sees, never a host fault.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::Grants;
use crate::sandbox::bindings::StateError;
use crate::sandbox::bindings::ferry::processor::state as wit;

/// The import name.
pub const IMPORT: &str = "ferry:processor/state@0.2.0";

/// What the store charges per entry on top of its key and value: the two `Vec`
/// headers (48 bytes), the map's node share of an entry, and two heap blocks with
/// the allocator's overhead.
pub const ENTRY_COST: usize = ferry_sdk::limits::STATE_ENTRY_COST;

/// Most entries one `scan` returns, whatever the guest asks.
pub const MAX_SCAN_ENTRIES: usize = 10_000;
/// Most key and value bytes one `scan` returns (at least one entry is returned).
pub const MAX_SCAN_BYTES: usize = 4 << 20;

/// `None` if granted, else how to grant it.
pub(super) fn check_grant(grants: &Grants) -> Option<&'static str> {
    (!grants.state).then_some(" (give the pipeline a `[pipeline.state]` section: its changelog topic and limits)")
}

/// Bounds on a partition's state and on what one batch may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Most bytes of one partition's state, as [`charge`] counts them.
    pub partition_bytes: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most writes (puts and deletes) per batch, across every call it takes.
    pub writes_per_batch: u32,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            partition_bytes: ferry_sdk::limits::STATE_BYTES_PER_PARTITION,
            max_key_bytes: ferry_sdk::limits::MAX_STATE_KEY_BYTES,
            max_value_bytes: ferry_sdk::limits::MAX_STATE_VALUE_BYTES,
            writes_per_batch: ferry_sdk::limits::STATE_WRITES_PER_BATCH,
        }
    }
}

/// What an entry costs its partition's budget.
pub fn charge(key: &[u8], value: &[u8]) -> usize {
    ENTRY_COST + key.len() + value.len()
}

/// One partition's state: what every finished batch wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The sum of [`charge`] over the entries.
    bytes: usize,
}

impl PartitionStore {
    /// Applies one change (a put, or a delete as `None`), as a changelog record or a
    /// finished batch does.
    pub fn apply(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some(old) = self.map.get(&key) {
            self.bytes -= charge(&key, old);
        }
        match value {
            Some(value) => {
                self.bytes += charge(&key, &value);
                self.map.insert(key, value);
            }
            None => {
                self.map.remove(&key);
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// How many keys it holds.
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    /// Its size, as the limits count it.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// Writes above the store: a key set (`Some`) or deleted (`None`).
#[derive(Debug, Default)]
struct Layer {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What these writes add to the store's bytes (negative: they free some).
    delta: i64,
}

/// A partition's store lent to one batch, with the batch's writes.
#[derive(Debug)]
pub struct StateBatch {
    store: PartitionStore,
    limits: StateLimits,
    batch: Layer,
    call: Layer,
    /// Writes made by the batch's calls so far, faulted calls included.
    writes: u32,
}

/// A batch's writes, set aside while its store is lent to a shadow version.
#[derive(Debug)]
pub struct SetAside {
    limits: StateLimits,
    batch: Layer,
    writes: u32,
}

impl SetAside {
    /// The writes, in key order (a delete as `None`).
    pub fn pending(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.batch.writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The limits of the batch.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// The batch again, over `store` (the store it set aside, unchanged).
    pub fn resume(self, store: PartitionStore) -> StateBatch {
        StateBatch { store, limits: self.limits, batch: self.batch, call: Layer::default(), writes: self.writes }
    }
}

/// The changes a finished batch made: what its changelog records say.
pub type Changes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl StateBatch {
    /// Lends `store` to a batch.
    pub fn new(store: PartitionStore, limits: StateLimits) -> Self {
        StateBatch { store, limits, batch: Layer::default(), call: Layer::default(), writes: 0 }
    }

    /// The end of a call that returned: its writes belong to the batch.
    pub(crate) fn keep_call(&mut self) {
        let call = std::mem::take(&mut self.call);
        self.batch.writes.extend(call.writes);
        self.batch.delta += call.delta;
    }

    /// The end of a call that faulted: its writes never happened.
    pub(crate) fn drop_call(&mut self) {
        self.call = Layer::default();
    }

    /// The end of the batch: with `keep`, its writes are applied to the store and
    /// returned in key order (for the changelog); otherwise they are dropped.
    pub fn finish(mut self, keep: bool) -> (PartitionStore, Changes) {
        self.drop_call();
        if !keep {
            return (self.store, Vec::new());
        }
        let changes: Changes = std::mem::take(&mut self.batch.writes).into_iter().collect();
        for (key, value) in &changes {
            self.store.apply(key.clone(), value.clone());
        }
        (self.store, changes)
    }

    /// Sets the batch's writes aside and gives back the store as it was before the
    /// batch, so a shadow version can be lent the same state; [`SetAside::resume`]
    /// puts the writes back on it.
    pub fn set_aside(mut self) -> (PartitionStore, SetAside) {
        self.drop_call();
        (self.store, SetAside { limits: self.limits, batch: self.batch, writes: self.writes })
    }

    /// The limits it was lent with.
    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    /// The writes of the calls kept so far, in key order (a delete as `None`).
    pub fn pending(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.batch.writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The value of `key` before this batch.
    pub fn before(&self, key: &[u8]) -> Option<&[u8]> {
        self.store.get(key)
    }

    /// The value of `key` as the batch left it so far.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.call.writes.get(key).or_else(|| self.batch.writes.get(key)) {
            Some(written) => written.as_deref(),
            None => self.store.get(key),
        }
    }

    /// The partition's bytes with the writes so far.
    fn bytes(&self) -> i64 {
        self.store.bytes as i64 + self.batch.delta + self.call.delta
    }

    fn count_write(&mut self) -> Result<(), StateError> {
        if self.writes >= self.limits.writes_per_batch {
            return Err(StateError::TooManyWrites(self.limits.writes_per_batch));
        }
        self.writes += 1;
        Ok(())
    }

    /// Sets `key` to `value`, within the limits.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StateError::KeyTooLarge(self.limits.max_key_bytes as u64));
        }
        if value.len() > self.limits.max_value_bytes {
            return Err(StateError::ValueTooLarge(self.limits.max_value_bytes as u64));
        }
        let old = self.get(&key).map_or(0, |v| charge(&key, v)) as i64;
        let new = charge(&key, &value) as i64;
        if new > old && self.bytes() - old + new > self.limits.partition_bytes as i64 {
            return Err(StateError::PartitionFull(self.limits.partition_bytes as u64));
        }
        self.count_write()?;
        self.call.delta += new - old;
        self.call.writes.insert(key, Some(value));
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StateError::KeyTooLarge(self.limits.max_key_bytes as u64));
        }
        self.count_write()?;
        let old = self.get(&key).map_or(0, |v| charge(&key, v)) as i64;
        self.call.delta -= old;
        self.call.writes.insert(key, None);
        Ok(())
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order, as the
    /// batch left them so far (and within [`MAX_SCAN_ENTRIES`] and
    /// [`MAX_SCAN_BYTES`]).
    pub fn scan(&self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let limit = (limit as usize).min(MAX_SCAN_ENTRIES);
        let from = || (Bound::Included(prefix.to_vec()), Bound::Unbounded);
        let mut store = self.store.map.range(from()).take_while(|(k, _)| k.starts_with(prefix)).peekable();
        let mut batch = self.batch.writes.range(from()).take_while(|(k, _)| k.starts_with(prefix)).peekable();
        let mut call = self.call.writes.range(from()).take_while(|(k, _)| k.starts_with(prefix)).peekable();
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while out.len() < limit {
            // The smallest key of the three sources; the topmost layer that has it wins.
            let next = [store.peek().map(|e| e.0), batch.peek().map(|e| e.0), call.peek().map(|e| e.0)]
                .into_iter()
                .flatten()
                .min()
                .cloned();
            let Some(key) = next else { break };
            let in_store = store.next_if(|(k, _)| **k == key).map(|(_, v)| Some(v));
            let in_batch = batch.next_if(|(k, _)| **k == key).map(|(_, v)| v.as_ref());
            let in_call = call.next_if(|(k, _)| **k == key).map(|(_, v)| v.as_ref());
            if let Some(value) = in_call.or(in_batch).or(in_store).flatten() {
                bytes += key.len() + value.len();
                if !out.is_empty() && bytes > MAX_SCAN_BYTES {
                    break;
                }
                out.push((key, value.clone()));
            }
        }
        out
    }
}

/// The `state` capability's part of a guest's store: the batch's partition state,
/// lent for the length of a `process` call. Outside one (`assigned`, `revoked`,
/// `self-test`) state is empty and writes are refused as `too-many-writes(0)`.
#[derive(Debug, Default)]
pub struct StateState {
    pub(crate) active: Option<StateBatch>,
}

impl wit::Host for StateState {
    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.active.as_ref()?.get(&key).map(<[u8]>::to_vec)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        match self.active.as_mut() {
            Some(active) => active.put(key, value),
            None => Err(StateError::TooManyWrites(0)),
        }
    }

    fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        match self.active.as_mut() {
            Some(active) => active.delete(key),
            None => Err(StateError::TooManyWrites(0)),
        }
    }

    fn scan(&mut self, prefix: Vec<u8>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.active.as_ref().map_or_else(Vec::new, |active| active.scan(&prefix, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StateLimits {
        StateLimits { partition_bytes: 3 * ENTRY_COST + 30, max_key_bytes: 8, max_value_bytes: 10, writes_per_batch: 5 }
    }

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    /// A shadow is lent the store as it was before the batch; the batch resumes
    /// with its writes as they were, and the shadow's are gone.
    #[test]
    fn writes_set_aside_come_back_and_the_shadows_are_dropped() {
        let mut store = PartitionStore::default();
        store.apply(b"a".to_vec(), Some(b"1".to_vec()));
        let mut live = StateBatch::new(store.clone(), limits());
        live.put(b"a".to_vec(), b"2".to_vec()).unwrap();
        live.delete(b"b".to_vec()).unwrap();
        live.keep_call();
        let (before, aside) = live.set_aside();
        assert_eq!(before, store, "the store as it was before the batch");
        let mut shadow = StateBatch::new(before, aside.limits());
        assert_eq!(shadow.get(b"a"), Some(&b"1"[..]));
        shadow.put(b"a".to_vec(), b"9".to_vec()).unwrap();
        shadow.put(b"c".to_vec(), b"9".to_vec()).unwrap();
        shadow.keep_call();
        let (back, _) = shadow.finish(false);
        let (after, changes) = aside.resume(back).finish(true);
        assert_eq!(changes, vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)]);
        assert_eq!(after.entries().collect::<Vec<_>>(), vec![(&b"a"[..], &b"2"[..])]);
    }

    #[test]
    fn every_limit_is_a_refusal_and_leaves_the_state_as_it_was() {
        let mut batch = StateBatch::new(PartitionStore::default(), limits());
        assert_eq!(batch.put(vec![0; 9], vec![]), Err(StateError::KeyTooLarge(8)));
        assert_eq!(batch.put(vec![0], vec![0; 11]), Err(StateError::ValueTooLarge(10)));
        for key in [b"a", b"b", b"c"] {
            assert_eq!(batch.put(key.to_vec(), vec![0; 9]), Ok(()));
        }
        let full = Err(StateError::PartitionFull(limits().partition_bytes as u64));
        assert_eq!(batch.put(b"d".to_vec(), vec![0; 1]), full, "three entries of 10 bytes fill it");
        assert_eq!(batch.put(b"a".to_vec(), vec![0; 10]), full, "growing an entry counts too");
        assert_eq!(batch.put(b"a".to_vec(), vec![0; 1]), Ok(()), "shrinking one is fine");
        assert_eq!(batch.delete(b"b".to_vec()), Ok(()));
        assert_eq!(batch.put(b"d".to_vec(), vec![0; 1]), Err(StateError::TooManyWrites(5)));
        batch.keep_call();
        let (store, changes) = batch.finish(true);
        assert_eq!(
            changes,
            vec![(b"a".to_vec(), Some(vec![0])), (b"b".to_vec(), None), (b"c".to_vec(), Some(vec![0; 9]))]
        );
        assert_eq!(store.keys(), 2);
        assert_eq!(store.bytes(), 2 * ENTRY_COST + 2 + 10);
    }

    #[test]
    fn a_faulted_call_and_an_unfinished_batch_leave_nothing() {
        let mut store = PartitionStore::default();
        store.apply(b"k".to_vec(), Some(b"1".to_vec()));
        let mut batch = StateBatch::new(store.clone(), StateLimits::default());
        batch.put(b"k".to_vec(), b"2".to_vec()).unwrap();
        batch.keep_call();
        batch.put(b"k".to_vec(), b"3".to_vec()).unwrap();
        assert_eq!(batch.get(b"k"), Some(&b"3"[..]), "a call reads its own writes");
        batch.drop_call();
        assert_eq!(batch.get(b"k"), Some(&b"2"[..]), "the faulted call's write is gone");
        let (after, changes) = batch.finish(false);
        assert_eq!((after, changes), (store, Vec::new()), "nothing of an unfinished batch");
    }

    #[test]
    fn scan_merges_the_layers_in_key_order_within_its_bounds() {
        let mut store = PartitionStore::default();
        for (k, v) in [kv("p1", "s"), kv("p2", "s"), kv("p4", "s"), kv("q", "s")] {
            store.apply(k, Some(v));
        }
        let mut batch = StateBatch::new(store, StateLimits::default());
        batch.put(b"p3".to_vec(), b"b".to_vec()).unwrap();
        batch.delete(b"p2".to_vec()).unwrap();
        batch.keep_call();
        batch.put(b"p1".to_vec(), b"c".to_vec()).unwrap();
        batch.put(b"p".to_vec(), b"c".to_vec()).unwrap();
        assert_eq!(batch.scan(b"p", 100), vec![kv("p", "c"), kv("p1", "c"), kv("p3", "b"), kv("p4", "s")]);
        assert_eq!(batch.scan(b"p", 2), vec![kv("p", "c"), kv("p1", "c")]);
        assert_eq!(batch.scan(b"", 100).len(), 5);
        assert_eq!(batch.scan(b"z", 100), vec![]);
    }

    #[test]
    fn outside_a_batch_there_is_no_state() {
        use wit::Host as _;
        let mut state = StateState::default();
        assert_eq!(state.get(b"k".to_vec()), None);
        assert_eq!(state.put(b"k".to_vec(), vec![]), Err(StateError::TooManyWrites(0)));
        assert_eq!(state.scan(vec![], 10), vec![]);
    }
}
