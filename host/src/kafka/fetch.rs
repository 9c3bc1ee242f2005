//! Batch consumption: records are taken from librdkafka hundreds at a time.
//!
//! rdkafka's `BaseConsumer::poll` pops one record per call, and each call pays for a
//! queue lock, two or three clock reads and an `Arc` per record: more than the whole
//! guest call costs per record (BENCHMARKS.md). So every assigned partition's fetch
//! queue is forwarded to a queue of ferry's own ([`FetchQueue`]), which the pipeline
//! drains with `rd_kafka_consume_batch_queue`: one lock and one clock read per batch.
//! The consumer's own queue keeps rebalances, errors and commit events, still served
//! by `BaseConsumer::poll` (so rdkafka's rebalance handling is unchanged).
//!
//! Forwarding is set in the rebalance callback, before librdkafka starts fetching an
//! assigned partition; librdkafka then leaves an application's forwarding alone, but
//! clears it when it stops fetching the partition, so it is set again on every
//! assignment ([`FetchRoute`]).
//!
//! Waiting: both queues (and the commit queue, `kafka::commit`) write a byte to one
//! socket pair when they turn non-empty (`rd_kafka_queue_io_event_enable`), so an
//! idle pipeline sleeps in one `poll(2)` and wakes for a record, a rebalance or a
//! commit result alike.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::lock;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

/// Where assigned partitions' records are routed: shared between the [`FetchQueue`]
/// and the rebalance callback, and emptied when the queue is destroyed.
#[derive(Clone, Default)]
pub(crate) struct FetchRoute(Arc<Mutex<Option<RawQueue>>>);

/// A raw queue pointer that may cross threads (librdkafka queues are thread-safe).
#[derive(Clone, Copy)]
struct RawQueue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka queue handles may be used from any thread; the pointer is only
// used while the route holds it, and the route is emptied before the queue is destroyed.
unsafe impl Send for RawQueue {}

impl FetchRoute {
    /// Routes the records of `topic`/`partition` to the fetch queue. Call it before
    /// the partition is assigned (in `pre_rebalance`), every time it is assigned.
    pub(crate) fn route<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, topic: &str, partition: i32) {
        let target = lock(&self.0);
        let Some(RawQueue(target)) = *target else { return };
        let Ok(topic_c) = CString::new(topic) else { return };
        // SAFETY: the client handle lives as long as `consumer`; the partition queue
        // handle is released right after forwarding (the forwarding itself stays).
        unsafe {
            let partition_queue =
                rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic_c.as_ptr(), partition);
            if partition_queue.is_null() {
                tracing::warn!(%topic, partition, "no fetch queue for an assigned partition; its records come through poll");
                return;
            }
            rd::rd_kafka_queue_forward(partition_queue, target);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
    }
}

/// The pipeline's queue of fetched records, and its wake-up signal.
pub(crate) struct FetchQueue {
    queue: *mut rd::rd_kafka_queue_t,
    /// The consumer's own queue (rebalances, errors), watched for wake-ups only.
    consumer_queue: *mut rd::rd_kafka_queue_t,
    route: FetchRoute,
    wake_rx: UnixStream,
    /// What librdkafka writes to; shared with other queues that should wake the
    /// pipeline (commit results), which keep it open as long as they live.
    wake_tx: Arc<UnixStream>,
    /// The message array of the last fetch, handed back by [`Self::recycle`].
    spare: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka queue handles may be used from any thread; the queues are
// owned by this value.
unsafe impl Send for FetchQueue {}

impl FetchQueue {
    /// Creates the fetch queue of `consumer` and makes `route` point at it.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>, route: &FetchRoute) -> std::io::Result<Self> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        let wake_tx = Arc::new(wake_tx);
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let rk = consumer.client().native_ptr();
        // SAFETY: valid client handle; both queue handles are destroyed in Drop, before
        // the consumer (the worker drops this first).
        let (queue, consumer_queue) = unsafe {
            let queue = rd::rd_kafka_queue_new(rk);
            let consumer_queue = rd::rd_kafka_queue_get_consumer(rk);
            assert!(!queue.is_null() && !consumer_queue.is_null(), "librdkafka returned no queue");
            for q in [queue, consumer_queue] {
                wake_on_arrival(q, &wake_tx);
            }
            (queue, consumer_queue)
        };
        *lock(&route.0) = Some(RawQueue(queue));
        Ok(Self { queue, consumer_queue, route: route.clone(), wake_rx, wake_tx, spare: Vec::new() })
    }

    /// Takes up to `max` fetched records (and partition errors) without waiting.
    /// Give the result back with [`Self::recycle`] (or drop it), before the consumer.
    pub(crate) fn fetch(&mut self, max: usize) -> Fetched {
        let mut messages = std::mem::take(&mut self.spare);
        messages.reserve(max);
        // SAFETY: the array has room for `max` pointers; librdkafka fills the first
        // `n` and hands us ownership of them.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, 0, messages.as_mut_ptr(), max) };
        // SAFETY: those `n` entries were just written.
        unsafe { messages.set_len(usize::try_from(n).unwrap_or(0)) };
        Fetched { messages }
    }

    /// The signal that wakes [`Self::wait`], for other queues of this consumer.
    pub(crate) fn wake_signal(&self) -> Arc<UnixStream> {
        self.wake_tx.clone()
    }

    /// Destroys the messages of a fetch and keeps its array for the next one.
    pub(crate) fn recycle(&mut self, mut fetched: Fetched) {
        fetched.destroy_messages();
        self.spare = std::mem::take(&mut fetched.messages);
    }

    /// Whether the consumer's own queue holds events (rebalances, errors) to serve.
    pub(crate) fn consumer_events_waiting(&self) -> bool {
        // SAFETY: valid queue handle.
        unsafe { rd::rd_kafka_queue_length(self.consumer_queue) > 0 }
    }

    /// Sleeps until either queue receives something or `timeout` passes.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        if !timeout.is_zero() {
            let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
            let mut fd = libc::pollfd { fd: self.wake_rx.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd. An error (EINTR) just ends the wait early.
            unsafe { libc::poll(&mut fd, 1, ms) };
        }
        // Drain the wake-ups: librdkafka writes again only after a queue is served.
        let mut sink = [0u8; 64];
        while matches!(self.wake_rx.read(&mut sink), Ok(n) if n > 0) {}
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        *lock(&self.route.0) = None;
        // SAFETY: created in `new`, destroyed once. Partition queues still forwarding
        // here keep the queue's memory alive; librdkafka drops what they enqueue.
        unsafe {
            rd::rd_kafka_queue_io_event_enable(self.consumer_queue, -1, std::ptr::null(), 0);
            rd::rd_kafka_queue_destroy(self.consumer_queue);
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// The messages of one [`FetchQueue::fetch`], destroyed on drop (which must come
/// before the consumer's).
pub(crate) struct Fetched {
    messages: Vec<*mut rd::rd_kafka_message_t>,
}

impl Fetched {
    /// How many messages were taken.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The messages from index `start` on, in the order librdkafka delivered them.
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = Delivered<'_>> {
        // SAFETY: every pointer is a live message owned by `self`, borrowed here.
        self.messages[start..].iter().map(|&m| unsafe { Delivered::from_raw(m) })
    }

    fn destroy_messages(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each message was handed to us by consume_batch; destroyed once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.destroy_messages();
    }
}

/// One delivered message (a record, or a partition error), read in place.
#[derive(Clone, Copy)]
pub(crate) struct Delivered<'m> {
    message: &'m rd::rd_kafka_message_t,
    /// The same message as librdkafka's pointer to its whole message struct, of which
    /// `rd_kafka_message_t` is the public first field (see [`PrivateMessage`]).
    whole: *const PrivateMessage,
}

impl<'m> Delivered<'m> {
    /// # Safety
    /// `message` must be a live message, as librdkafka returned it, that outlives `'m`.
    unsafe fn from_raw(message: *const rd::rd_kafka_message_t) -> Self {
        // SAFETY: per the contract.
        Self { message: unsafe { &*message }, whole: message.cast() }
    }

    /// A view of a message rdkafka's `poll` returned.
    pub(crate) fn of(message: &'m rdkafka::message::BorrowedMessage<'_>) -> Self {
        // SAFETY: the borrowed message is alive (and its pointer valid) for `'m`.
        unsafe { Self::from_raw(message.ptr()) }
    }

    /// Whether the message carries an error about a record that exists at its
    /// offset but cannot be read (a corrupt batch, a failed decompression): a record
    /// nobody can process, which must be dead-lettered or halt the partition, never
    /// committed past in silence.
    pub(crate) fn is_unreadable_record(&self) -> bool {
        use rd::rd_kafka_resp_err_t as E;
        self.message.offset >= 0
            && !self.message.rkt.is_null()
            && matches!(
                self.message.err,
                E::RD_KAFKA_RESP_ERR__BAD_MSG
                    | E::RD_KAFKA_RESP_ERR__BAD_COMPRESSION
                    | E::RD_KAFKA_RESP_ERR_INVALID_MSG
                    | E::RD_KAFKA_RESP_ERR_INVALID_RECORD
            )
    }

    /// Whether the message says that records from its offset on could not be read
    /// and were skipped, without saying which they are: a record batch in a format
    /// librdkafka does not know (`__NOT_IMPLEMENTED`, an unsupported magic byte).
    /// librdkafka moves its fetch position past the batch and says so once, and a
    /// refetch from inside the batch skips it in silence: nobody can go through its
    /// records one by one, and nothing at or past the offset may be committed.
    pub(crate) fn is_unseen_range(&self) -> bool {
        self.message.offset >= 0
            && !self.message.rkt.is_null()
            && self.message.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED
    }

    /// The error this message carries instead of a record, if any.
    pub(crate) fn error(&self) -> Option<RDKafkaErrorCode> {
        (self.message.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| RDKafkaErrorCode::from(self.message.err))
    }

    /// The topic's librdkafka handle: equal handles mean the same topic, so callers
    /// can skip reading the name again.
    pub(crate) fn topic_handle(&self) -> *const rd::rd_kafka_topic_t {
        self.message.rkt
    }

    /// The topic name.
    pub(crate) fn topic(&self) -> Cow<'m, str> {
        if self.message.rkt.is_null() {
            return Cow::Borrowed("");
        }
        // SAFETY: the topic handle lives at least as long as its message.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.message.rkt)) }.to_string_lossy()
    }

    /// The partition.
    pub(crate) fn partition(&self) -> i32 {
        self.message.partition
    }

    /// The offset.
    pub(crate) fn offset(&self) -> i64 {
        self.message.offset
    }

    /// The record's timestamp in ms, if it has one.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: live message.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.message, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ms)
    }

    /// The key, if any.
    pub(crate) fn key(&self) -> Option<&'m [u8]> {
        // SAFETY: librdkafka keeps key/key_len consistent for the message's life.
        unsafe { bytes(self.message.key.cast(), self.message.key_len) }
    }

    /// The value, if any.
    pub(crate) fn value(&self) -> Option<&'m [u8]> {
        // SAFETY: as for the key.
        unsafe { bytes(self.message.payload.cast(), self.message.len) }
    }

    /// Calls `visit` with each of the record's headers, in order: names as raw bytes
    /// (Kafka means them to be UTF-8 but does not check), `None` for a null value.
    ///
    /// Read from the record's bytes as fetched when [`PrivateMessage`] mirrors the
    /// librdkafka compiled in, which is how ferry is built (rdkafka-sys compiles it
    /// from source); otherwise parsed by librdkafka's public API. A name is cut at
    /// its first NUL byte on both paths, as librdkafka's API gives it.
    pub(crate) fn for_each_header(&self, mut visit: impl FnMut(&[u8], Option<&[u8]>)) {
        if PrivateMessage::layout_known() {
            if let Some(raw) = self.raw_headers() {
                // Malformed: no headers, as librdkafka's own parse gives.
                let _ = super::wire_headers::for_each(raw, visit);
            }
        } else if let Some(list) = self.take_headers() {
            list.iter().for_each(|(name, value)| visit(name, value));
        }
    }

    /// The record's header section as fetched (`None` for a record without one: an
    /// old-format record set). Only for a librdkafka whose layout is known.
    fn raw_headers(&self) -> Option<&'m [u8]> {
        debug_assert!(PrivateMessage::layout_known());
        // SAFETY: every message the consumer hands out is the first field of a
        // librdkafka `rd_kafka_msg_t` (`rd_kafka_message2msg` is this same cast), whose
        // start `PrivateMessage` mirrors for the checked version; `whole` keeps the
        // provenance of librdkafka's pointer. Fetched records point `binhdrs` into the
        // fetch buffer, which the message keeps alive (the message outlives `'m`);
        // messages that are not fetched records have it zeroed (ops are calloc'd).
        unsafe {
            let len = std::ptr::addr_of!((*self.whole).raw_headers_len).read();
            let data = std::ptr::addr_of!((*self.whole).raw_headers).read();
            bytes(data, usize::try_from(len).ok()?)
        }
    }

    /// The record's headers, parsed by librdkafka and taken from the message (see
    /// [`HeaderList`]); `None` when it has none.
    fn take_headers(&self) -> Option<HeaderList> {
        let mut list: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: live message. librdkafka parses the headers (if not yet) and hands
        // the list over: it is no longer the message's, and is destroyed by the
        // HeaderList. The fields it changes lie outside `rd_kafka_message_t` (in
        // librdkafka's own message struct), not behind the shared reference.
        let found =
            unsafe { rd::rd_kafka_message_detach_headers(std::ptr::from_ref(self.message).cast_mut(), &mut list) };
        // Built only when there is a list: a HeaderList destroys what it holds.
        (found == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !list.is_null()).then(|| HeaderList { list })
    }
}

/// The start of librdkafka's own message struct (`rd_kafka_msg_t` in its private
/// `rdkafka_msg.h`), up to the consumer's raw header bytes (`rkm_u.consumer.binhdrs`).
/// Only read when it agrees with the librdkafka compiled into ferry
/// ([`PrivateMessage::layout_known`]); `tests::raw_headers_agree_with_librdkafka`
/// compares what it gives with librdkafka's own parse.
#[repr(C)]
struct PrivateMessage {
    public: rd::rd_kafka_message_t,
    link: [*mut std::ffi::c_void; 2],
    flags: std::ffi::c_int,
    timestamp_type: std::ffi::c_int,
    timestamp: i64,
    parsed_headers: *mut rd::rd_kafka_headers_t,
    status: std::ffi::c_int,
    broker_id: i32,
    /// `rkm_u.consumer.binhdrs`, an `rd_kafkap_bytes_t`: length, then pointer.
    raw_headers_len: i32,
    raw_headers: *const u8,
}

/// Where the librdkafka that rdkafka-sys compiled keeps a fetched record's raw header
/// bytes, as its C compiler laid out `rd_kafka_msg_t` (read by `build.rs` from the
/// sources compiled in).
#[derive(Clone, Copy)]
struct CompiledLayout {
    /// Its `RD_KAFKA_VERSION`.
    version: std::ffi::c_int,
    /// `offsetof(rd_kafka_msg_t, rkm_u.consumer.binhdrs.len)`.
    raw_headers_len: usize,
    /// `offsetof(rd_kafka_msg_t, rkm_u.consumer.binhdrs.data)`.
    raw_headers: usize,
}

// `COMPILED_IN`: `None` when librdkafka was not built from source (rdkafka's
// `dynamic-linking` feature), whose private layout cannot be known.
include!(concat!(env!("OUT_DIR"), "/librdkafka_layout.rs"));

impl PrivateMessage {
    /// Whether the raw header bytes can be read through this mirror: it matches the
    /// headers of the librdkafka compiled in, and the library running is that one (a
    /// static build always is; the check costs nothing and guards against anything
    /// else being loaded).
    fn layout_known() -> bool {
        static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: a plain query of a constant.
        *KNOWN.get_or_init(|| Self::mirrors(COMPILED_IN.as_ref(), unsafe { rd::rd_kafka_version() }))
    }

    /// Whether the mirror can be read for messages of a librdkafka laid out as
    /// `compiled` whose `rd_kafka_version()` is `running`.
    fn mirrors(compiled: Option<&CompiledLayout>, running: std::ffi::c_int) -> bool {
        compiled.is_some_and(|layout| {
            layout.version == running
                && layout.raw_headers_len == std::mem::offset_of!(PrivateMessage, raw_headers_len)
                && layout.raw_headers == std::mem::offset_of!(PrivateMessage, raw_headers)
        })
    }
}

/// A record's headers, owned here and freed on drop. Taken from the message as soon
/// as they are read, librdkafka's allocations for one record are freed before the
/// next record's are made (so the allocator reuses the same memory), instead of a
/// whole fetch's at once when the messages are destroyed.
pub(crate) struct HeaderList {
    list: *mut rd::rd_kafka_headers_t,
}

impl HeaderList {
    /// The headers in order, names as raw bytes (Kafka means them to be UTF-8 but
    /// does not check).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        // SAFETY: the list lives as long as `self`.
        let count = unsafe { rd::rd_kafka_header_cnt(self.list) };
        (0..count).map_while(move |index| {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut len = 0usize;
            // SAFETY: the list lives as long as `self`; out-pointers are valid.
            let err = unsafe { rd::rd_kafka_header_get_all(self.list, index, &mut name, &mut value, &mut len) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            // SAFETY: header names are NUL-terminated and live with the list; values
            // are `len` bytes, NULL for a null value.
            Some((unsafe { CStr::from_ptr(name) }.to_bytes(), unsafe { bytes(value.cast(), len) }))
        })
    }
}

impl Drop for HeaderList {
    fn drop(&mut self) {
        // SAFETY: detached from its message in `take_headers`, so owned here;
        // destroyed once.
        unsafe { rd::rd_kafka_headers_destroy(self.list) };
    }
}

/// Makes `queue` write a byte to `wake` whenever it turns non-empty.
///
/// # Safety
/// `queue` must be a live queue handle, and `wake` must stay open while it can write
/// (until the queue is destroyed or its signalling switched off).
pub(super) unsafe fn wake_on_arrival(queue: *mut rd::rd_kafka_queue_t, wake: &UnixStream) {
    // SAFETY: per the contract; librdkafka copies the one-byte payload.
    unsafe { rd::rd_kafka_queue_io_event_enable(queue, wake.as_raw_fd(), b"!".as_ptr().cast(), 1) };
}

/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes living for `'a`.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: per the contract.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

    type Headers = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    /// What the test records carry: none, null and empty values, binary values, long
    /// names and values, repeated names, many headers.
    fn cases() -> Vec<Vec<(String, Option<Vec<u8>>)>> {
        let many = (0..300).map(|i| (format!("h{i}"), Some(vec![i as u8; i % 7]))).collect();
        vec![
            vec![],
            vec![("trace".into(), Some(b"abc".to_vec()))],
            vec![("null".into(), None), ("empty".into(), Some(vec![])), ("".into(), Some(b"unnamed".to_vec()))],
            vec![("bin".into(), Some((0..=255).collect())), ("bin".into(), Some(vec![0; 3]))],
            vec![("é-ü".repeat(40), Some(vec![7; 70_000]))],
            // librdkafka's API gives names as C strings: cut at the first NUL.
            vec![("a\0b".into(), Some(b"nul in the name".to_vec())), ("\0".into(), None)],
            many,
        ]
    }

    /// The mirror is read only for the layout and version compiled in: a librdkafka
    /// that reports the same version but lays the struct out otherwise (a patched
    /// build) is read through the public API.
    #[test]
    fn the_mirror_is_read_only_for_the_layout_compiled_in() {
        let compiled = COMPILED_IN.as_ref().expect("build.rs read the layout compiled in");
        let version = compiled.version;
        assert!(PrivateMessage::mirrors(Some(compiled), version));
        assert!(!PrivateMessage::mirrors(Some(compiled), version + 1), "another librdkafka is running");
        let shifted = CompiledLayout { raw_headers_len: compiled.raw_headers_len + 8, ..*compiled };
        assert!(!PrivateMessage::mirrors(Some(&shifted), version), "a patched struct");
        let shifted = CompiledLayout { raw_headers: compiled.raw_headers - 8, ..*compiled };
        assert!(!PrivateMessage::mirrors(Some(&shifted), version));
        assert!(!PrivateMessage::mirrors(None, version), "nothing known (a dynamically linked librdkafka)");
    }

    /// The raw read gives exactly what librdkafka's parse gives, for records fetched
    /// from a broker: the check that `PrivateMessage` mirrors the linked librdkafka.
    #[test]
    fn raw_headers_agree_with_librdkafka() {
        assert!(
            COMPILED_IN.is_some(),
            "build.rs found no librdkafka sources to read its message layout from (see its warning)"
        );
        assert!(
            PrivateMessage::layout_known(),
            "`PrivateMessage` does not match the rd_kafka_msg_t of the librdkafka compiled in: update it from its rdkafka_msg.h"
        );
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        let cases = cases();
        for headers in &cases {
            let mut list = OwnedHeaders::new();
            for (key, value) in headers {
                list = list.insert(Header { key, value: value.as_deref() });
            }
            producer.send(BaseRecord::<(), [u8]>::to("t").payload(b"v").headers(list)).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["t"]).unwrap();
        let (mut compared, started) = (0, std::time::Instant::now());
        while compared < cases.len() {
            // `poll` also returns empty after serving a rebalance: give up only on a
            // record that never comes.
            assert!(started.elapsed() < Duration::from_secs(90), "record {compared} never came");
            let Some(message) = consumer.poll(Duration::from_secs(1)) else { continue };
            let message = message.unwrap();
            let delivered = Delivered::of(&message);
            let mut raw = Headers::new();
            assert!(delivered.raw_headers().is_some(), "read in place");
            delivered.for_each_header(|name, value| raw.push((name.to_vec(), value.map(<[u8]>::to_vec))));
            let parsed: Headers = delivered
                .take_headers()
                .map(|list| list.iter().map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            let cut = |name: &str| name.split('\0').next().unwrap_or_default().as_bytes().to_vec();
            let produced: Headers = cases[compared].iter().map(|(n, v)| (cut(n), v.clone())).collect();
            assert_eq!(raw, parsed, "record {compared}");
            assert_eq!(raw, produced, "record {compared}");
            compared += 1;
        }
    }
}
