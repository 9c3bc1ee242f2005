//! Offset commits that never block the pipeline for good.
//!
//! rdkafka's `commit(.., Sync)` waits without a timeout while the coordinator is
//! unreachable, and its async commit reports through `ConsumerContext::commit_callback`,
//! which runs only inside a later `poll`. A revoke must commit the revoked
//! partitions' finished offsets *inside* the rebalance callback, before it returns,
//! and with a bound: neither of those can wait there. So ferry commits through
//! librdkafka's `rd_kafka_commit_queue` with a queue of its own: results arrive
//! there as events, which we poll without blocking (interval commits) or with a
//! deadline (revoke and shutdown).

use std::ffi::CStr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

/// The result of one commit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitResult {
    /// (topic, partition, offset) that were committed.
    pub committed: Vec<(String, i32, i64)>,
    /// Whole-request or per-partition errors.
    pub errors: Vec<String>,
}

/// A private reply queue for commit results.
pub struct Committer {
    queue: *mut rd::rd_kafka_queue_t,
    in_flight: usize,
    /// The socket a commit result wakes, kept open while librdkafka may write to it.
    wake: Option<Arc<UnixStream>>,
}

// SAFETY: librdkafka queues are thread-safe handles; we only poll and destroy it.
unsafe impl Send for Committer {}

impl Committer {
    /// Creates the reply queue for `consumer`.
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        // SAFETY: the consumer's native handle is valid for its lifetime; the queue
        // is destroyed in Drop, before or after the consumer (librdkafka refcounts it).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        assert!(!queue.is_null(), "rd_kafka_queue_new returned NULL");
        Self { queue, in_flight: 0, wake: None }
    }

    /// Makes every commit result write a byte to `wake` (the pipeline's wake-up
    /// signal, `kafka::fetch`), so a waiting pipeline hears of it at once.
    pub fn signal_to(&mut self, wake: Arc<UnixStream>) {
        // SAFETY: valid queue; the descriptor stays open while `self.wake` holds it,
        // and the queue (with its signalling) is destroyed in Drop, first.
        unsafe { super::fetch::wake_on_arrival(self.queue, &wake) };
        self.wake = Some(wake);
    }

    /// Commit requests whose result has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sends a commit request; its result arrives through [`Self::poll`].
    pub fn send<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), String> {
        // SAFETY: valid handles; librdkafka copies the partition list.
        let err = unsafe {
            rd::rd_kafka_commit_queue(
                consumer.client().native_ptr(),
                offsets.ptr(),
                self.queue,
                None,
                std::ptr::null_mut(),
            )
        };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(RDKafkaErrorCode::from(err).to_string());
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Collects commit results that arrived, waiting at most `timeout` for the first.
    pub fn poll(&mut self, timeout: Duration) -> Vec<CommitResult> {
        let mut results = Vec::new();
        let mut wait = timeout;
        while let Some(result) = self.next(wait) {
            results.push(result);
            wait = Duration::ZERO;
        }
        results
    }

    /// Sends a commit and waits up to `timeout` for its result (and for any earlier
    /// commits still in flight). An error if it could not be sent, or if the deadline
    /// passed first: then the commit may still land later, which is safe, since it
    /// only covers finished records.
    pub fn commit_and_wait<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
        timeout: Duration,
    ) -> Result<Vec<CommitResult>, String> {
        self.send(consumer, offsets)?;
        let deadline = Instant::now() + timeout;
        let mut results = Vec::new();
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("commit not acknowledged within {} ms", timeout.as_millis()));
            }
            if let Some(result) = self.next(left) {
                results.push(result);
            }
        }
        Ok(results)
    }

    fn next(&mut self, timeout: Duration) -> Option<CommitResult> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is valid until Drop; every event we get is destroyed below.
        unsafe {
            let event = rd::rd_kafka_queue_poll(self.queue, ms);
            if event.is_null() {
                return None;
            }
            let result = if rd::rd_kafka_event_type(event) == rd::RD_KAFKA_EVENT_OFFSET_COMMIT {
                self.in_flight = self.in_flight.saturating_sub(1);
                Some(read_commit_event(event))
            } else {
                None
            };
            rd::rd_kafka_event_destroy(event);
            result
        }
    }
}

/// # Safety
/// `event` must be a live OFFSET_COMMIT event.
unsafe fn read_commit_event(event: *mut rd::rd_kafka_event_t) -> CommitResult {
    let mut result = CommitResult { committed: Vec::new(), errors: Vec::new() };
    // SAFETY: per the contract; the list belongs to the event and is read before the
    // event is destroyed.
    unsafe {
        let err = rd::rd_kafka_event_error(event);
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            result.errors.push(RDKafkaErrorCode::from(err).to_string());
        }
        let list = rd::rd_kafka_event_topic_partition_list(event);
        if !list.is_null() {
            let list = &*list;
            for i in 0..usize::try_from(list.cnt).unwrap_or(0) {
                let elem = &*list.elems.add(i);
                let topic = CStr::from_ptr(elem.topic).to_string_lossy().into_owned();
                if elem.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && elem.offset >= 0 {
                        result.committed.push((topic, elem.partition, elem.offset));
                    }
                } else {
                    let code = RDKafkaErrorCode::from(elem.err);
                    result.errors.push(format!("{topic}[{}]: {code}", elem.partition));
                }
            }
        }
    }
    result
}

impl Drop for Committer {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}
