//! Transactional producers for exactly-once pipelines, and what their errors mean.
//!
//! One producer per input partition, with a `transactional.id` made of the group,
//! the topic and the partition: the same on every member and across restarts. So
//! the member that takes a partition over fences whoever had it before (the broker
//! bumps the id's epoch), and the previous owner's open transaction is aborted
//! before the new owner reads the committed offset. That holds on every broker that
//! implements transactions (KIP-98); offsets also go with the consumer's group
//! metadata, so brokers with KIP-447 check the group generation too.

use std::ffi::CStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::client_log;
use super::output::{Outgoing, send_when_room};

/// How many times a call whose outcome librdkafka calls retriable (a timeout, a
/// coordinator on the move) is repeated before the producer is given up on.
const RETRIABLE_ATTEMPTS: u32 = 3;

/// What to do after a transactional call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The transaction was aborted; the producer is fine. Process its records again
    /// from the last committed offset.
    Rewind(String),
    /// The producer is done for: fenced by a newer owner of the partition, forgotten
    /// by the broker, or in a state that cannot be known. Drop it; a new one (after
    /// a pause) fences whoever else holds the id and reads the committed offset.
    Recreate(String),
}

impl Recovery {
    /// Why.
    pub fn reason(&self) -> &str {
        match self {
            Recovery::Rewind(reason) | Recovery::Recreate(reason) => reason,
        }
    }
}

/// How a failed call is recovered from, by librdkafka's classification of the error.
/// Pure, so it can be tested without a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Call it again: the outcome is not known yet.
    Retry,
    /// Abort the transaction and go on with this producer.
    Abort,
    /// Drop the producer.
    Fatal,
}

/// Classifies a transactional error. Fencing and a forgotten producer id are fatal
/// whatever librdkafka's flags say: this producer must never write again.
pub(crate) fn classify(code: RDKafkaErrorCode, fatal: bool, retriable: bool, requires_abort: bool) -> ErrorClass {
    use RDKafkaErrorCode as C;
    let fenced = matches!(
        code,
        C::Fenced
            | C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::InvalidProducerIdMapping
            | C::TransactionalIdAuthorizationFailed
    );
    if fatal || fenced {
        ErrorClass::Fatal
    } else if requires_abort {
        ErrorClass::Abort
    } else if retriable {
        ErrorClass::Retry
    } else {
        // Not documented as recoverable: the transaction's state is unknown.
        ErrorClass::Fatal
    }
}

/// Whether an error of a record (from `produce`, or in its delivery report) will
/// come back however often it is sent: the record itself is refused (too large,
/// invalid, to a topic this producer may not write). Everything else (a broker
/// away, a timeout, a transaction in an abortable state) goes away with a new
/// transaction, or a new producer. Pure, so it can be tested without a broker.
pub(crate) fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::BadMessage
            | C::InvalidArgument
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
    )
}

/// Why an output could not go into the open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The record is refused for good ([`refused_for_good`]): it would be refused
    /// again after a rewind, so the partition halts.
    Refused(String),
    /// The transaction, or the producer, takes no records now (librdkafka's
    /// `__STATE` after an abortable error, `__FATAL` once fenced, a `begin` that
    /// failed): recover as from a failed commit, and run the records again.
    Transaction(Recovery),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused(reason) => f.write_str(reason),
            SendError::Transaction(recovery) => f.write_str(recovery.reason()),
        }
    }
}

/// What a refused `produce` means for the transaction.
fn send_error(topic: &str, error: &KafkaError) -> SendError {
    let text = format!("output to {topic}: {error}");
    match error.rdkafka_error_code() {
        Some(code) if refused_for_good(code) => SendError::Refused(text),
        // Fenced, or the producer failed: it must never write again.
        Some(RDKafkaErrorCode::Fatal) => SendError::Transaction(Recovery::Recreate(text)),
        // `__STATE` (the transaction must be aborted first) and anything else: abort
        // and run again; an abort that fails makes a new producer.
        _ => SendError::Transaction(Recovery::Rewind(text)),
    }
}

/// A transactional call that failed: how to go on, and what librdkafka said.
#[derive(Debug)]
struct CallError {
    class: ErrorClass,
    text: String,
}

impl From<KafkaError> for CallError {
    fn from(error: KafkaError) -> Self {
        Self { class: class_of(&error), text: error.to_string() }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Waits until the producer is connected to a broker of the cluster proper, not
/// only to its bootstrap address, so that `init_transactions` finds its coordinator
/// at once.
///
/// librdkafka drops its bootstrap connection as soon as the first metadata names
/// the cluster's brokers. An `init_transactions` that asks for the coordinator in
/// that gap finds no broker up and retries on a fixed 500 ms timer, which no
/// setting changes: one producer start in six to one in twenty took 500 ms
/// instead of 50, on the embedded broker and on Tansu. Two broker-only metadata
/// requests close the gap: the first goes through the bootstrap connection, the
/// second connects to a broker the first named (none of 180 starts in a row was
/// slow with them). A failure here only costs that wait: `init_transactions`
/// says what is wrong.
fn connect_to_the_cluster(producer: &ThreadedProducer<TxnContext>, timeout: Duration) {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    for _ in 0..2 {
        let mut metadata: *const rd::rd_kafka_metadata = std::ptr::null();
        // SAFETY: the client handle stays valid while `producer` is borrowed. With
        // `all_topics` 0 and no topic handle, librdkafka asks for the brokers and the
        // topics this client knows (none: a producer that has sent nothing). On
        // success it hands over a metadata object, destroyed once, here.
        unsafe {
            let error = rd::rd_kafka_metadata(
                producer.client().native_ptr(),
                0,
                std::ptr::null_mut(),
                &mut metadata,
                timeout_ms,
            );
            if !metadata.is_null() {
                rd::rd_kafka_metadata_destroy(metadata);
            }
            if error != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return;
            }
        }
    }
}

/// `rd_kafka_commit_transaction`, called directly. rust-rdkafka's
/// `commit_transaction` first runs its own flush, whose loop ends in a blocking poll
/// of the producer's event queue, the queue this `ThreadedProducer`'s own thread
/// serves: every commit of a transaction with outputs waited ~100 ms for nothing
/// (measured on the embedded broker: the last delivery report, then 98 ms until
/// librdkafka saw the call). librdkafka's call flushes by itself: it waits until
/// every message of the transaction is delivered, whose reports the producer's
/// thread serves.
fn commit_transaction(producer: &ThreadedProducer<TxnContext>, timeout: Duration) -> Result<(), CallError> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the client handle stays valid while `producer` is borrowed, and
    // librdkafka's transactional API may be called from any thread.
    let error = unsafe { rd::rd_kafka_commit_transaction(producer.client().native_ptr(), timeout_ms) };
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: `error` is a valid error object owned here: each accessor only reads
    // it (the string lives as long as the object and is copied out first), and it
    // is destroyed once, last.
    let (code, fatal, retriable, requires_abort, text) = unsafe {
        let code = RDKafkaErrorCode::from(rd::rd_kafka_error_code(error));
        let fatal = rd::rd_kafka_error_is_fatal(error) != 0;
        let retriable = rd::rd_kafka_error_is_retriable(error) != 0;
        let requires_abort = rd::rd_kafka_error_txn_requires_abort(error) != 0;
        let text = CStr::from_ptr(rd::rd_kafka_error_string(error)).to_string_lossy().into_owned();
        rd::rd_kafka_error_destroy(error);
        (code, fatal, retriable, requires_abort, text)
    };
    Err(CallError { class: classify(code, fatal, retriable, requires_abort), text: format!("{text} ({code:?})") })
}

fn class_of(error: &KafkaError) -> ErrorClass {
    match error {
        KafkaError::Transaction(e) => classify(e.code(), e.is_fatal(), e.is_retriable(), e.txn_requires_abort()),
        other => match other.rdkafka_error_code() {
            Some(code) => classify(code, false, false, false),
            None => ErrorClass::Fatal,
        },
    }
}

/// Notes records the broker refused for good: a transaction with any failed
/// delivery cannot commit (librdkafka fails the commit, and ferry rewinds), but
/// only a refusal for good would come back after the rewind, so only that halts.
#[derive(Default)]
pub(crate) struct TxnContext {
    refused: Arc<AtomicBool>,
}

/// librdkafka's words about the producer go to the producers' client log: once per
/// change of state, not once per retry.
impl ClientContext for TxnContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        client_log::producers().log(&"transactional producer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_log::producers().error(&"transactional producer", &error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        client_log::producers().statistics(&"transactional producer", statistics);
    }
}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((error, message)) = result else { return };
        // An aborted transaction purges what it had queued: that is the abort, not a
        // record the broker refused.
        let purged =
            matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight));
        if !purged {
            use rdkafka::Message as _;
            let for_good = error.rdkafka_error_code().is_some_and(refused_for_good);
            tracing::warn!(%error, topic = message.topic(), for_good, "transactional output record was not delivered");
            if for_good {
                self.refused.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Why a transactional producer could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// librdkafka refused the configuration: trying again cannot help.
    Config(String),
    /// The broker refused it for good ([`init_refused_for_good`]: not authorized,
    /// no transactions, a timeout it does not allow): trying again cannot help.
    Refused(String),
    /// The broker did not initialize it (unreachable, busy settling the previous
    /// owner's transaction): worth another try.
    Init(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) | StartError::Refused(e) | StartError::Init(e) => f.write_str(e),
        }
    }
}

/// Whether `init_transactions` failed in a way no retry changes: the principal may
/// not use the id or the cluster, the broker has no transactions, or it does not
/// allow the transaction timeout. Pure, so it can be tested without a broker.
pub(crate) fn init_refused_for_good(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::TransactionalIdAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTransactionTimeout
            | C::UnsupportedVersion
            | C::SaslAuthenticationFailed
            | C::Authentication
    )
}

/// One partition's transactional producer.
pub struct TxnProducer {
    producer: ThreadedProducer<TxnContext>,
    id: String,
    refused: Arc<AtomicBool>,
    /// A transaction is begun and not yet committed or aborted.
    open: bool,
}

impl std::fmt::Debug for TxnProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnProducer").field("id", &self.id).field("open", &self.open).finish_non_exhaustive()
    }
}

impl TxnProducer {
    /// Creates the producer for `transactional_id` and initializes it: this fences
    /// every earlier producer with the id, and waits until the broker has finished
    /// (aborted, or completed a commit already decided) their open transaction.
    pub fn start(config: &ClientConfig, transactional_id: &str, timeout: Duration) -> Result<Self, StartError> {
        let context = TxnContext::default();
        let refused = context.refused.clone();
        let producer: ThreadedProducer<TxnContext> =
            config.clone().set("transactional.id", transactional_id).create_with_context(context).map_err(|e| {
                StartError::Config(format!("could not create the transactional producer {transactional_id}: {e}"))
            })?;
        let created = Instant::now();
        connect_to_the_cluster(&producer, timeout);
        let connected = Instant::now();
        let mut attempts = 0;
        loop {
            match producer.init_transactions(timeout) {
                Ok(()) => break,
                Err(error) if class_of(&error) == ErrorClass::Retry && attempts + 1 < RETRIABLE_ATTEMPTS => {
                    attempts += 1;
                }
                Err(error) => {
                    let text = format!("init_transactions of {transactional_id} failed: {error}");
                    let for_good = error.rdkafka_error_code().is_some_and(init_refused_for_good);
                    return Err(if for_good { StartError::Refused(text) } else { StartError::Init(text) });
                }
            }
        }
        tracing::debug!(
            transactional_id,
            connect_ms = connected.duration_since(created).as_millis() as u64,
            init_ms = connected.elapsed().as_millis() as u64,
            "transactional producer started"
        );
        Ok(Self { producer, id: transactional_id.to_owned(), refused, open: false })
    }

    /// The `transactional.id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a transaction is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the broker refused a record of the open transaction for good
    /// ([`refused_for_good`]): running the records again would fail the same way.
    pub fn refused_for_good(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    fn begin(&mut self) -> Result<(), Recovery> {
        if self.open {
            return Ok(());
        }
        self.refused.store(false, Ordering::Relaxed);
        self.producer.begin_transaction().map_err(|e| Recovery::Recreate(format!("begin_transaction: {e}")))?;
        self.open = true;
        Ok(())
    }

    /// Sends `record` in the open transaction (beginning one if needed), waiting
    /// while librdkafka's queue is full. A record that is not taken would leave a
    /// hole in the transaction: the error says whether the record is refused for
    /// good or the transaction takes nothing now, and the caller aborts.
    pub fn send(&mut self, record: Outgoing<'_>) -> Result<(), SendError> {
        self.begin().map_err(SendError::Transaction)?;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: *value });
        }
        let mut base = BaseRecord::to(record.topic).headers(headers);
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(value) = record.value {
            base = base.payload(value);
        }
        send_when_room(&self.producer, base).map_err(|(error, _)| send_error(record.topic, &error))
    }

    /// Commits the open transaction (beginning one if none is open, so that offsets
    /// move even for records without outputs) with `offset` as the partition's
    /// committed offset. On success the outputs and the offset are visible together;
    /// on failure neither is, and [`Recovery`] says how to go on.
    pub fn commit(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), Recovery> {
        self.begin()?;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("a valid offset");
        let result = self
            .retrying("send_offsets_to_transaction", |p| Ok(p.send_offsets_to_transaction(&offsets, group, timeout)?))
            .and_then(|()| self.retrying("commit_transaction", |p| commit_transaction(p, timeout)));
        match result {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err((ErrorClass::Abort, error)) => match self.abort(timeout) {
                Ok(()) => Err(Recovery::Rewind(format!("commit failed, transaction aborted: {error}"))),
                Err(abort) => Err(Recovery::Recreate(format!("commit failed: {error}; abort failed too: {abort}"))),
            },
            // Still unknown after every retry: an abort settles it, and keeps the
            // transaction from holding back read_committed readers (the last stable
            // offset) until the broker's timeout.
            Err((ErrorClass::Retry, error)) => match self.abort(timeout) {
                Ok(()) => Err(Recovery::Rewind(format!("commit did not complete, transaction aborted: {error}"))),
                Err(abort) => {
                    Err(Recovery::Recreate(format!("commit did not complete: {error}; abort failed: {abort}")))
                }
            },
            // Fenced or failed: this producer may not even abort.
            Err((ErrorClass::Fatal, error)) => {
                self.open = false;
                Err(Recovery::Recreate(format!("commit failed: {error}")))
            }
        }
    }

    /// Aborts the open transaction, if any: none of its outputs is ever visible.
    /// Tried once: an abort that does not go through in time leaves the transaction
    /// to the broker's timeout, and the caller makes a new producer, whose
    /// initialization aborts it anyway.
    pub fn abort(&mut self, timeout: Duration) -> Result<(), String> {
        if !std::mem::replace(&mut self.open, false) {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.producer.abort_transaction(timeout);
        tracing::debug!(id = %self.id, took_us = started.elapsed().as_micros() as u64, ?result, "abort_transaction");
        result.map_err(|error| error.to_string())
    }

    fn retrying(
        &self,
        what: &str,
        call: impl Fn(&ThreadedProducer<TxnContext>) -> Result<(), CallError>,
    ) -> Result<(), (ErrorClass, CallError)> {
        let mut attempts = 0;
        loop {
            let started = Instant::now();
            let result = call(&self.producer);
            tracing::debug!(id = %self.id, what, took_us = started.elapsed().as_micros() as u64, ?result, "transactional call");
            match result {
                Ok(()) => return Ok(()),
                Err(error) => {
                    let class = error.class;
                    attempts += 1;
                    if class != ErrorClass::Retry || attempts >= RETRIABLE_ATTEMPTS {
                        return Err((class, error));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_is_fatal_whatever_the_flags_say() {
        for code in [
            RDKafkaErrorCode::Fenced,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::InvalidProducerIdMapping,
        ] {
            assert_eq!(classify(code, false, true, true), ErrorClass::Fatal, "{code:?}");
        }
    }

    #[test]
    fn only_a_refused_record_is_refused_for_good() {
        for code in [RDKafkaErrorCode::MessageSizeTooLarge, RDKafkaErrorCode::InvalidRecord] {
            assert!(refused_for_good(code), "{code:?}");
            let error = KafkaError::MessageProduction(code);
            assert!(matches!(send_error("out", &error), SendError::Refused(_)), "{code:?}");
        }
        // A broker away past the message timeout, a transaction in an abortable
        // state, a producer fenced: none of them is the record's fault.
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::State,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(!refused_for_good(code), "{code:?}");
            let error = KafkaError::MessageProduction(code);
            assert!(matches!(send_error("out", &error), SendError::Transaction(_)), "{code:?}");
        }
        let fatal = send_error("out", &KafkaError::MessageProduction(RDKafkaErrorCode::Fatal));
        assert!(matches!(fatal, SendError::Transaction(Recovery::Recreate(_))), "{fatal:?}");
    }

    #[test]
    fn an_init_refused_by_the_broker_is_not_retried() {
        for code in [RDKafkaErrorCode::TransactionalIdAuthorizationFailed, RDKafkaErrorCode::ClusterAuthorizationFailed]
        {
            assert!(init_refused_for_good(code), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::CoordinatorLoadInProgress,
            RDKafkaErrorCode::ConcurrentTransactions,
            RDKafkaErrorCode::OperationTimedOut,
        ] {
            assert!(!init_refused_for_good(code), "{code:?}");
        }
    }

    #[test]
    fn abortable_before_retriable_and_unknown_is_fatal() {
        assert_eq!(classify(RDKafkaErrorCode::MessageTimedOut, false, true, true), ErrorClass::Abort);
        assert_eq!(classify(RDKafkaErrorCode::OperationTimedOut, false, true, false), ErrorClass::Retry);
        assert_eq!(classify(RDKafkaErrorCode::InvalidTransactionalState, false, false, false), ErrorClass::Fatal);
        assert_eq!(classify(RDKafkaErrorCode::OperationTimedOut, true, true, false), ErrorClass::Fatal);
    }
}
