//! librdkafka client configurations, built from `ferry.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// librdkafka's local queues of fetched records and of outputs awaiting the broker,
/// each: 32 MiB.
pub const QUEUE_KBYTES: &str = "32768";

/// How often librdkafka reports its brokers' states: how soon ferry notices that
/// brokers it lost answer again ([`client_log`](super::client_log)).
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// A consumer config for `group`: auto-commit and auto offset store off, because
/// ferry decides what is committed; everything else passes through.
pub fn consumer_config(
    brokers: &str,
    group: &str,
    global: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // librdkafka's default (1 s) idles a partition's fetcher whenever its local
        // queue is full, which stalls a pipeline that is briefly behind (BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "10")
        // A partition rewound for a retry (pause, seek, resume) joins the broker's
        // next fetch, which waits for the one in flight: librdkafka's 500 ms long
        // poll made every retry cost half a second or more.
        .set("fetch.wait.max.ms", "100")
        // Records fetched ahead, all partitions together: a term of the host's memory
        // formula (docs/operators.md); librdkafka's default is 64 MiB.
        .set("queued.max.messages.kbytes", QUEUE_KBYTES)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (key, value) in global.iter().chain(overrides) {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    config
}

/// A producer config for output records and dead letters.
pub fn producer_config(brokers: &str, global: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        // Outputs waiting for the broker: a term of the memory formula. When it is
        // full the pipeline waits (librdkafka's default is 1 GiB).
        .set("queue.buffering.max.kbytes", QUEUE_KBYTES)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (key, value) in global {
        config.set(key, value);
    }
    config.set("bootstrap.servers", brokers);
    config
}

/// A producer config for one partition's transactions (exactly-once): the output
/// producer's, with the transaction timeout. librdkafka makes it idempotent, with
/// `acks=all`.
///
/// `linger` (unless `[kafka]` sets `linger.ms`): a transaction's outputs become
/// visible only when it commits, and the commit sends whatever waits at once, so
/// lingering for part of the commit interval costs no latency and fills larger
/// requests. With a producer per input partition each one's share of the outputs
/// is small: at 5 ms, exactly-once at a 100 ms interval ran at 0.25 of at-least-once
/// on the embedded broker, at 50 ms 0.45 (BENCHMARKS.md).
pub fn transactional_producer_config(
    brokers: &str,
    global: &BTreeMap<String, String>,
    transaction_timeout_ms: u64,
    linger: Duration,
) -> ClientConfig {
    let mut config = producer_config(brokers, global);
    if !global.contains_key("linger.ms") {
        config.set("linger.ms", linger.as_millis().max(5).to_string());
    }
    if !global.contains_key("reconnect.backoff.ms") {
        // librdkafka spaces its first connections to a cluster by half of this
        // (50 ms at the default 100): a producer start pays that twice. Reconnects
        // after a failure still back off exponentially, to `reconnect.backoff.max.ms`.
        config.set("reconnect.backoff.ms", "20");
    }
    let timeout = transaction_timeout_ms.to_string();
    // librdkafka wants a record's delivery to end (one way or the other) within the
    // transaction that carries it.
    config.set("transaction.timeout.ms", &timeout).set("message.timeout.ms", &timeout);
    config
}
