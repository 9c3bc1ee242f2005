//! Keyed state: a map of byte keys to byte values per input partition, kept by the
//! host across batches, restarts and rebalances.

use std::fmt;

use crate::Context;

/// Why the host refused a state write. Each case carries the host's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The key is longer than this many bytes.
    KeyTooLarge(u64),
    /// The value is longer than this many bytes.
    ValueTooLarge(u64),
    /// The partition's state would exceed this many bytes.
    PartitionFull(u64),
    /// The batch already made this many writes.
    TooManyWrites(u32),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::KeyTooLarge(limit) => write!(f, "state key exceeds the limit of {limit} bytes"),
            StateError::ValueTooLarge(limit) => write!(f, "state value exceeds the limit of {limit} bytes"),
            StateError::PartitionFull(limit) => {
                write!(f, "the partition's state would exceed its limit of {limit} bytes")
            }
            StateError::TooManyWrites(limit) => write!(f, "the batch made its {limit} state writes already"),
        }
    }
}

impl std::error::Error for StateError {}

/// The keyed state of the input partition whose batch is being processed, from
/// [`Context::state`].
///
/// Each input partition has its own map; there is no way to reach another
/// partition's. The writes of a batch take effect only if every record of the batch
/// finishes (processed, or rejected); if any record ends in a retry, they are
/// dropped and the whole batch is delivered again. The host keeps the map in a
/// changelog topic and restores it when the partition is assigned, so it survives
/// restarts, redeploys and rebalances.
///
/// With at-least-once delivery, records after the last commit run again after a
/// crash, against state that may already include them: make updates idempotent
/// where that matters (for example, remember the last offset applied per key). With
/// exactly-once, state, outputs and offsets commit together.
///
/// Keys and values are bytes; `get_u64`/`put_u64` and `get_str` encode the common
/// cases, and with the SDK's `json` feature `get_json`/`put_json` store any serde
/// type as JSON (the encodings the Python and JavaScript SDKs use too).
///
/// ```
/// # use ferry_sdk::{Context, Error, Processor, Record};
/// #[derive(Default)]
/// struct Counter;
///
/// impl Processor for Counter {
///     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
///         let key = record.key().unwrap_or_default();
///         let mut state = ctx.state();
///         let count = state.get_u64(key).unwrap_or(0) + 1;
///         state.put_u64(key, count).map_err(|e| Error::retry(e.to_string()))?;
///         Ok(())
///     }
/// }
/// # fn main() {}
/// ```
pub struct State<'a> {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    ctx: &'a mut Context,
}

impl fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl<'a> State<'a> {
    pub(crate) fn of(ctx: &'a mut Context) -> Self {
        State { ctx }
    }

    /// The value of `key`, as this batch left it so far.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__bindings::ferry::processor::state::get(key.as_ref())
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.ctx.sink.state(|s| s.get(key.as_ref()))
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StateError> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__bindings::ferry::processor::state::put(key.as_ref(), value.as_ref()).map_err(from_wit)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.ctx.sink.state_mut(|s| s.put(key.as_ref(), value.as_ref()))
        }
    }

    /// Removes `key` (absent is fine).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<(), StateError> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__bindings::ferry::processor::state::delete(key.as_ref()).map_err(from_wit)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.ctx.sink.state_mut(|s| s.delete(key.as_ref()))
        }
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order. The host
    /// returns at most 10,000 entries and 4 MiB per call: scan on from the last key
    /// returned for more.
    pub fn scan(&self, prefix: impl AsRef<[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__bindings::ferry::processor::state::scan(prefix.as_ref(), limit)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.ctx.sink.state(|s| s.scan(prefix.as_ref(), limit))
        }
    }

    /// The value of `key` as a UTF-8 string (`None` if absent or not UTF-8).
    pub fn get_str(&self, key: impl AsRef<[u8]>) -> Option<String> {
        self.get(key).and_then(|v| String::from_utf8(v).ok())
    }

    /// The value of `key` as a little-endian `u64` (`None` if absent or not 8 bytes).
    pub fn get_u64(&self, key: impl AsRef<[u8]>) -> Option<u64> {
        self.get(key).and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_le_bytes)
    }

    /// Sets `key` to `value` as a little-endian `u64`.
    pub fn put_u64(&mut self, key: impl AsRef<[u8]>, value: u64) -> Result<(), StateError> {
        self.put(key, value.to_le_bytes())
    }
}

/// Why a JSON value could not be stored: the host refused the write, or the value
/// has no JSON form.
#[cfg(feature = "json")]
#[derive(Debug)]
pub enum JsonStateError {
    /// The host refused the write.
    State(StateError),
    /// The value could not be encoded (a map whose keys are not strings, ...).
    Json(serde_json::Error),
}

#[cfg(feature = "json")]
impl fmt::Display for JsonStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonStateError::State(error) => error.fmt(f),
            JsonStateError::Json(error) => write!(f, "the state value has no JSON form: {error}"),
        }
    }
}

#[cfg(feature = "json")]
impl std::error::Error for JsonStateError {}

#[cfg(feature = "json")]
impl From<StateError> for JsonStateError {
    fn from(error: StateError) -> Self {
        JsonStateError::State(error)
    }
}

#[cfg(feature = "json")]
impl State<'_> {
    /// The value of `key` parsed as JSON: `Ok(None)` if absent, an error if it is not
    /// JSON of type `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, serde_json::Error> {
        self.get(key).map(|value| serde_json::from_slice(&value)).transpose()
    }

    /// Sets `key` to `value` as compact JSON.
    pub fn put_json<T: serde::Serialize + ?Sized>(
        &mut self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), JsonStateError> {
        let json = serde_json::to_vec(value).map_err(JsonStateError::Json)?;
        Ok(self.put(key, json)?)
    }
}

#[cfg(target_arch = "wasm32")]
fn from_wit(error: crate::__bindings::ferry::processor::state::StateError) -> StateError {
    use crate::__bindings::ferry::processor::state::StateError as Wit;
    match error {
        Wit::KeyTooLarge(limit) => StateError::KeyTooLarge(limit),
        Wit::ValueTooLarge(limit) => StateError::ValueTooLarge(limit),
        Wit::PartitionFull(limit) => StateError::PartitionFull(limit),
        Wit::TooManyWrites(limit) => StateError::TooManyWrites(limit),
    }
}

/// The native stand-in for the host's state of one partition during one batch:
/// the same limits, checked in the same order.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Default)]
pub(crate) struct NativeState {
    pub(crate) map: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
    writes: u32,
    /// Whether the batch wrote anything.
    pub(crate) touched: bool,
}

#[cfg(not(target_arch = "wasm32"))]
impl NativeState {
    pub(crate) fn lent(map: std::collections::BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        let bytes = map.iter().map(|(k, v)| charge(k, v)).sum();
        NativeState { map, bytes, writes: 0, touched: false }
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    fn count_write(&mut self) -> Result<(), StateError> {
        if self.writes >= crate::limits::STATE_WRITES_PER_BATCH {
            return Err(StateError::TooManyWrites(crate::limits::STATE_WRITES_PER_BATCH));
        }
        self.writes += 1;
        self.touched = true;
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        use crate::limits::{MAX_STATE_KEY_BYTES, MAX_STATE_VALUE_BYTES, STATE_BYTES_PER_PARTITION};
        if key.len() > MAX_STATE_KEY_BYTES {
            return Err(StateError::KeyTooLarge(MAX_STATE_KEY_BYTES as u64));
        }
        if value.len() > MAX_STATE_VALUE_BYTES {
            return Err(StateError::ValueTooLarge(MAX_STATE_VALUE_BYTES as u64));
        }
        let old = self.map.get(key).map_or(0, |v| charge(key, v));
        let new = charge(key, value);
        if new > old && self.bytes - old + new > STATE_BYTES_PER_PARTITION {
            return Err(StateError::PartitionFull(STATE_BYTES_PER_PARTITION as u64));
        }
        self.count_write()?;
        self.bytes = self.bytes - old + new;
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        if key.len() > crate::limits::MAX_STATE_KEY_BYTES {
            return Err(StateError::KeyTooLarge(crate::limits::MAX_STATE_KEY_BYTES as u64));
        }
        self.count_write()?;
        if let Some(old) = self.map.remove(key) {
            self.bytes -= charge(key, &old);
        }
        Ok(())
    }

    fn scan(&self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take((limit as usize).min(10_000))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn charge(key: &[u8], value: &[u8]) -> usize {
    crate::limits::STATE_ENTRY_COST + key.len() + value.len()
}

#[cfg(not(target_arch = "wasm32"))]
impl crate::sink::Sink {
    fn state<R>(&self, f: impl FnOnce(&NativeState) -> R) -> R {
        if !self.policy.state_granted {
            crate::testing::refuse_ungranted("state");
        }
        f(&self.state)
    }

    fn state_mut<R>(&mut self, f: impl FnOnce(&mut NativeState) -> R) -> R {
        if !self.policy.state_granted {
            crate::testing::refuse_ungranted("state");
        }
        f(&mut self.state)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, TestBatch};
    use crate::{Context, Error, Processor, Record, StateError};

    /// Writes a value of the record's value length under its key, and scans.
    #[derive(Default)]
    struct Filler {
        refused: Vec<StateError>,
        scanned: Vec<Vec<u8>>,
    }

    impl Processor for Filler {
        fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let size = record.value().map_or(0, <[u8]>::len);
            if let Err(refused) = ctx.state().put(record.key().unwrap_or_default(), vec![7; size]) {
                self.refused.push(refused);
            }
            self.scanned = ctx.state().scan("a", 10).into_iter().map(|(k, _)| k).collect();
            Ok(())
        }
    }

    #[test]
    fn the_harness_refuses_what_the_host_refuses_and_scans_by_prefix() {
        let host = Harness::new();
        let mut filler = Filler::default();
        let big = vec![0u8; crate::limits::MAX_STATE_VALUE_BYTES + 1];
        let batch = TestBatch::new("t", 0).record("a1", "x").record("b", &big).record("a2", "y").record("a0", "z");
        host.run(&mut filler, &batch).assert_all_processed();
        let limit = crate::limits::MAX_STATE_VALUE_BYTES as u64;
        assert_eq!(filler.refused, [StateError::ValueTooLarge(limit)]);
        assert_eq!(filler.scanned, [b"a0".to_vec(), b"a1".to_vec(), b"a2".to_vec()], "key order, prefix only");
        assert_eq!(host.state("t", 0).len(), 3);
        assert!(host.state("t", 1).is_empty(), "another partition's state is its own");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_values_round_trip_in_the_encoding_of_the_other_sdks() {
        #[derive(Default)]
        struct Sessions {
            seen: Vec<Option<Vec<String>>>,
        }
        impl Processor for Sessions {
            fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
                let key = record.key().unwrap_or_default();
                let mut pages: Vec<String> =
                    ctx.state().get_json(key).map_err(|e| Error::reject(e.to_string()))?.unwrap_or_default();
                pages.push(String::from_utf8_lossy(record.value().unwrap_or_default()).into_owned());
                ctx.state().put_json(key, &pages).map_err(|e| Error::reject(e.to_string()))?;
                self.seen.push(ctx.state().get_json(key).map_err(|e| Error::reject(e.to_string()))?);
                Ok(())
            }
        }
        let host = Harness::new();
        let mut sessions = Sessions::default();
        host.run(&mut sessions, &TestBatch::new("t", 0).record("u", "/a").record("u", "/ü")).assert_all_processed();
        assert_eq!(sessions.seen.last().cloned().flatten(), Some(vec!["/a".to_owned(), "/ü".to_owned()]));
        assert_eq!(host.state("t", 0).get(&b"u"[..]).map(Vec::as_slice), Some(r#"["/a","/ü"]"#.as_bytes()));
        let not_json = Harness::new().with_state("t", 0, [(b"u".to_vec(), b"{".to_vec())].into());
        let run = not_json.run(&mut Sessions::default(), &TestBatch::new("t", 0).record("u", "x"));
        assert!(!run.all_processed(), "a value that is not JSON is an error, not a default");
    }

    #[test]
    #[should_panic(expected = "the component imports capability `ferry:processor/state@0.2.0`, which this \
                               pipeline does not grant (give the pipeline a `[pipeline.state]` section")]
    fn state_without_a_state_section_fails_like_the_host() {
        let dir = std::env::temp_dir().join(format!("ferry-sdk-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ferry.toml");
        std::fs::write(&path, "[[pipeline]]\nname = \"p\"\noutput_topics = [\"out\"]\n").unwrap();
        let host = Harness::from_config(&path, "p").unwrap();
        host.run(&mut Filler::default(), &TestBatch::new("t", 0).record("k", "v"));
    }
}
