//! Offset paths the scenarios do not take: each reproduces a sequence that could
//! lose data or stall a partition, and checks it does not.
//! (A late ack or delivery failure of an earlier assignment, and a revoke with dead
//! letters in flight, are reproduced step by step in the offset tracker's tests and
//! `pipeline::shared`'s; acks other than `all` are refused by config validation.)

use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::checker::{CommitSampler, check};
use ferry_tests::raw_produce::{produce_corrupt_batch, produce_corrupt_batch_then, produce_with_unknown_format_batch};
use ferry_tests::*;

fn recorder(group: &str, extra: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{group}"
        inputs = ["in"]
        group = "{group}"
        component = "{}"
        batch_size = 5
        max_wait_ms = 10
        output_topics = ["seen"]
        settings = {{ incarnation = "{group}" }}
        logs = {{ lines_per_sec = 100000, bytes_per_sec = 67108864 }}
        commit = {{ policy = "per-batch" }}
        {extra}
        "#,
        guest("ferry-guest-recorder").display()
    )
}

fn start(brokers: &str, pipeline: &str) -> Host {
    Host::start(&Config::parse(&format!("brokers = \"{brokers}\"\n{pipeline}")).unwrap()).unwrap()
}

fn stop(host: Host) {
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

fn caught_up(brokers: &str, group: &str) -> bool {
    lag(brokers, group, "in").iter().all(|p| p.lag() == 0)
}

/// librdkafka keeps the application's pause flag across unassign and assign: a
/// partition halted (or paused for a backlog) and then revoked would come back
/// paused, for good, while the status page showed it owned and healthy.
#[test]
fn a_paused_partition_given_back_to_the_same_member_is_consumed_again() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &["retry-once".into(), "r1".into(), "r2".into()]);
    let group = "pause-back";
    let extra = r#"failure = { on_failure = "halt", max_attempts = 1 }
        kafka = { "session.timeout.ms" = "6000", "partition.assignment.strategy" = "range" }"#;
    let text = recorder(group, extra);
    let a = start(&brokers, &text);
    let stats = || a.pipelines[0].shared.stats.snapshot();
    wait_until("member A halted the partition on its first try", || {
        stats().partitions.get(&("in".to_owned(), 0)).is_some_and(|p| p.halted.is_some())
    });
    // A second member joins and leaves: the partition is revoked from A and, in
    // the end, given back to it (A's instance remembers it asked for the retry).
    let dir = tempfile::tempdir().unwrap();
    let mut b = FerryProcess::start(&write_config(
        dir.path(),
        &format!("brokers = \"{brokers}\"\n{}", text.replace("name = \"pause-back\"", "name = \"pause-back.b\"")),
    ));
    wait_until("a rebalance took the partition from A", || stats().rebalances >= 1);
    b.terminate();
    wait_until("the partition is consumed again and committed to its end", || caught_up(&brokers, group));
    stop(a);
}

/// One fetch can hold many batches; librdkafka counts the time between polls
/// against `max.poll.interval.ms` and leaves the group when it runs out.
#[test]
fn a_long_fetch_of_slow_batches_keeps_the_member_in_its_group() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    // 150 records of 150 ms, 5 per batch: about 22 s of batches, all in the first
    // fetch, against a poll interval of 7 s.
    produce(&brokers, "in", 1, &(0..150).map(|i| format!("slow:150;{i}")).collect::<Vec<_>>());
    let group = "long-fetch";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let extra = r#"limits = { time_per_batch_ms = 2000 }
        kafka = { "session.timeout.ms" = "6000", "max.poll.interval.ms" = "7000" }"#;
    let host = start(&brokers, &recorder(group, extra));
    wait_until("committed to the log end", || caught_up(&brokers, group));
    let rebalances = host.pipelines[0].shared.stats.snapshot().rebalances;
    stop(host);
    assert_eq!(rebalances, 0, "the member never left its group");
    let report = check(&brokers, "in", group, None, &[captured_log()], &sampler.stop());
    report.assert_sound();
    assert!(report.allowed_duplicates.is_empty(), "nothing processed twice:\n{}", report.summary());
}

/// Partial batches of several partitions come due in the same turn of the loop, and
/// each takes most of the time limit: 4 × 2.5 s of guest calls against a poll
/// interval of 7 s. The consumer is served between any two guest calls, so the
/// member stays in its group (it used to run them back to back, was thrown out, and
/// its work was redone elsewhere).
#[test]
fn partial_batches_due_together_keep_the_member_in_its_group() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 4);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 4, &(0..4).map(|i| format!("slow:2500;{i}")).collect::<Vec<_>>());
    let group = "due-together";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let extra = r#"limits = { time_per_batch_ms = 3000 }
        kafka = { "session.timeout.ms" = "6000", "max.poll.interval.ms" = "7000" }"#;
    let host = start(&brokers, &recorder(group, extra).replace("max_wait_ms = 10", "max_wait_ms = 200"));
    wait_until("committed to the log end", || caught_up(&brokers, group));
    let rebalances = host.pipelines[0].shared.stats.snapshot().rebalances;
    stop(host);
    assert_eq!(rebalances, 0, "the member never left its group");
    let report = check(&brokers, "in", group, None, &[captured_log()], &sampler.stop());
    report.assert_sound();
    assert!(report.allowed_duplicates.is_empty(), "nothing processed twice:\n{}", report.summary());
}

/// A record that exists but cannot be read (here: a batch whose CRC is wrong, with
/// `check.crcs`) reaches no guest. It must be dead-lettered (or halt the partition),
/// never committed past in silence.
#[test]
fn an_unreadable_record_is_dead_lettered_not_committed_past() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    broker.create_topic("dlq", 1);
    produce(&brokers, "in", 1, &["r0".into(), "r1".into()]);
    produce_corrupt_batch(brokers.split(',').next().unwrap(), "in", 0, b"corrupt");
    produce(&brokers, "in", 1, &["r3".into(), "r4".into()]);
    let group = "unreadable";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let extra = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq" }
        kafka = { "check.crcs" = "true" }"#;
    let host = start(&brokers, &recorder(group, extra));
    wait_until("committed to the log end", || caught_up(&brokers, group));
    stop(host);
    let dead = read_all(&brokers, "dlq");
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].header("ferry.offset"), Some("2"));
    assert!(dead[0].header("ferry.reason").is_some_and(|r| r.contains("could not be read")), "{:?}", dead[0].headers);
    let report = check(&brokers, "in", group, Some("dlq"), &[captured_log()], &sampler.stop());
    report.assert_sound();
    assert_eq!((report.processed, report.dead_lettered), (4, 1), "{}", report.summary());
}

/// The same batch while a retry is pending: the records before it cannot go to the
/// guest yet, so the partition halts before them, at the record that awaits its
/// retry: nothing is committed past it.
#[test]
fn records_skipped_unseen_behind_a_pending_retry_halt_the_partition_before_them() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in", "seen", "dlq"] {
        broker.create_topic(topic, 1);
    }
    let leader = brokers.split(',').next().unwrap().to_owned();
    produce(&brokers, "in", 1, &["retry-once".into(), "r1".into()]);
    produce_with_unknown_format_batch(&leader, "in", 0, 2, b"r2", 3);
    produce(&brokers, "in", 1, &["r6".into()]);
    let group = "unseen-behind-retry";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let extra = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq", backoff_initial_ms = 500 }"#;
    let host = start(&brokers, &recorder(group, extra).replace("batch_size = 5", "batch_size = 1"));
    let halted = || {
        host.pipelines[0].shared.stats.snapshot().partitions.get(&("in".to_owned(), 0)).and_then(|p| p.halted.clone())
    };
    wait_until("the partition halted", || halted().is_some());
    let reason = halted().unwrap();
    stop(host);
    assert!(reason.contains("records from offset 3 on were skipped"), "{reason}");
    let past: Vec<i64> = sampler.stop().iter().map(|s| s.committed).filter(|&c| c > 0).collect();
    assert!(past.is_empty(), "committed past the record awaiting its retry: {past:?}");
    assert!(committed(&brokers, group).is_none_or(|c| c == 0));
}

/// What ferry relies on when a corrupt batch comes while retries are pending, and
/// no longer needs to: librdkafka 2.12, with `check.crcs`, reports the batch again
/// on every fetch, and delivers nothing that follows it in the same fetch response.
/// (Its reader means to skip the batch and go on, but moves its read position by
/// the batch's length as if it were a position, and stops.) So the record is never
/// passed in silence; ferry still does not count on it (see the test below).
#[test]
fn librdkafka_reports_a_corrupt_batch_on_every_fetch_and_reads_nothing_after_it() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Message as _};
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    // One request: the embedded broker answers a fetch with one request's batches.
    produce_corrupt_batch_then(brokers.split(',').next().unwrap(), "in", 0, 0, b"corrupt", &[b"r1", b"r2"]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "crc-reader")
        .set("auto.offset.reset", "earliest")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let (mut reports, mut read) = (0, Vec::new());
    wait_until("the corrupt batch is reported three times", || {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(code))) => {
                assert_eq!(code, rdkafka::types::RDKafkaErrorCode::BadMessage);
                reports += 1;
            }
            Some(Ok(message)) => read.push(message.offset()),
            _ => {}
        }
        reports >= 3
    });
    assert!(read.is_empty(), "records after the corrupt batch were read: {read:?}");
}

/// The group's committed offset of `in`/0.
fn committed(brokers: &str, group: &str) -> Option<i64> {
    lag(brokers, group, "in").first().and_then(|p| p.committed)
}

/// The offsets of `in`/0 the recorder published.
fn seen_offsets(brokers: &str) -> std::collections::BTreeSet<i64> {
    read_all(brokers, "seen").iter().map(|r| parse_seen(&r.value).2).collect()
}

/// A member running the recorder on `in`/0, with an admin server on `port`.
fn recorder_with_admin(brokers: &str, group: &str, port: u16) -> Host {
    let extra = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq" }"#;
    start(brokers, &format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{}", recorder(group, extra)))
}

/// Records in a batch of a format librdkafka cannot read (its magic byte), with
/// readable records after them: librdkafka says so once and skips the batch, so which
/// records it held is unknown. The partition halts where they begin, whatever the
/// failure policy, and says why on the status page, in `/metrics` and the log; the
/// bookmark never passes them (the next span used to cover them, and the records
/// after them were committed past them in silence).
#[test]
fn records_skipped_unseen_halt_the_partition_where_they_begin() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in", "seen", "dlq"] {
        broker.create_topic(topic, 1);
    }
    let leader = brokers.split(',').next().unwrap().to_owned();
    produce(&brokers, "in", 1, &["r0".into(), "r1".into()]);
    // r2 at offset 2, then offsets 3 to 5 in a batch nobody can read.
    produce_with_unknown_format_batch(&leader, "in", 0, 2, b"r2", 3);
    produce(&brokers, "in", 1, &["r6".into(), "r7".into()]);
    let group = "unseen-then-more";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let port = free_port();
    let host = recorder_with_admin(&brokers, group, port);
    let halted = || {
        host.pipelines[0].shared.stats.snapshot().partitions.get(&("in".to_owned(), 0)).and_then(|p| p.halted.clone())
    };
    wait_until("the partition halted", || halted().is_some());
    wait_until("what came before is committed", || committed(&brokers, group) == Some(3));
    let reason = halted().unwrap();
    let metrics = ferry_tests::hostile::get(port, "/metrics");
    let status = ferry_tests::hostile::get(port, "/api/status");
    stop(host);
    assert!(reason.contains("records from offset 3 on were skipped"), "{reason}");
    assert!(metrics.lines().any(|l| l.starts_with("ferry_partition_halted{") && l.ends_with(" 1")), "{metrics}");
    assert!(status.contains("records from offset 3 on were skipped"), "{status}");
    assert_eq!(seen_offsets(&brokers), [0, 1, 2].into(), "the records before the batch, and none after it");
    let past: Vec<i64> = sampler.stop().iter().map(|s| s.committed).filter(|&c| c > 3).collect();
    assert!(past.is_empty(), "committed past the unseen records: {past:?}");
    assert!(read_all(&brokers, "dlq").is_empty(), "nothing to dead-letter: the records are unknown");
}

/// The same batch at the end of the log: librdkafka refetches it forever without a
/// word after the first. The partition halts there instead of idling as if caught up.
#[test]
fn records_skipped_unseen_at_the_end_of_the_log_halt_the_partition() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in", "seen", "dlq"] {
        broker.create_topic(topic, 1);
    }
    let leader = brokers.split(',').next().unwrap().to_owned();
    produce(&brokers, "in", 1, &["r0".into(), "r1".into()]);
    produce_with_unknown_format_batch(&leader, "in", 0, 2, b"r2", 3);
    let group = "unseen-last";
    let host = recorder_with_admin(&brokers, group, free_port());
    let halted = || {
        host.pipelines[0].shared.stats.snapshot().partitions.get(&("in".to_owned(), 0)).and_then(|p| p.halted.clone())
    };
    wait_until("the partition halted", || halted().is_some());
    wait_until("what came before is committed", || committed(&brokers, group) == Some(3));
    stop(host);
    assert_eq!(seen_offsets(&brokers), [0, 1, 2].into());
    assert_eq!(committed(&brokers, group), Some(3), "never past the unseen records");
}

/// A corrupt batch (with `check.crcs`) reported while a retry is pending, with
/// readable records after it. ferry used to leave it to librdkafka to report it
/// again once the retry was done; it now remembers it, takes nothing after it
/// meanwhile, and dead-letters it once the retry is done, then reads on. Nothing is
/// committed past it before its dead letter is acknowledged. (One record per batch:
/// record 0's retry is pending as soon as it ran.)
#[test]
fn an_unreadable_record_behind_a_pending_retry_is_dead_lettered_not_committed_past() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in", "seen", "dlq"] {
        broker.create_topic(topic, 1);
    }
    produce(&brokers, "in", 1, &["retry-once".into(), "r1".into()]);
    produce_corrupt_batch(brokers.split(',').next().unwrap(), "in", 0, b"corrupt");
    produce(&brokers, "in", 1, &["r3".into(), "r4".into()]);
    let group = "unreadable-behind-retry";
    let sampler = CommitSampler::start(&brokers, group, "in");
    let extra = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq", backoff_initial_ms = 500 }
        kafka = { "check.crcs" = "true" }"#;
    let host = start(&brokers, &recorder(group, extra).replace("batch_size = 5", "batch_size = 1"));
    wait_until("committed to the log end", || caught_up(&brokers, group));
    stop(host);
    let dead = read_all(&brokers, "dlq");
    assert_eq!(dead.iter().map(|r| r.header("ferry.offset")).collect::<Vec<_>>(), [Some("2")]);
    let report = check(&brokers, "in", group, Some("dlq"), &[captured_log()], &sampler.stop());
    report.assert_sound();
    assert_eq!((report.processed, report.dead_lettered), (4, 1), "{}", report.summary());
}

/// A partition that stops advancing with no error at all: the group's bookmark lies
/// inside a batch of a format librdkafka cannot read, at the end of the log, so it
/// fetches that batch again and again and skips it each time in silence (the one
/// report it gives comes only when it first meets the batch from before it). The
/// partition shows up as stalled on the status page, in `/metrics` and the log.
#[test]
fn a_partition_that_stops_advancing_without_an_error_is_reported_stalled() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in", "seen", "dlq"] {
        broker.create_topic(topic, 1);
    }
    let leader = brokers.split(',').next().unwrap().to_owned();
    // r0 at offset 0, then offsets 1 to 3 in a batch nobody can read.
    produce_with_unknown_format_batch(&leader, "in", 0, 0, b"r0", 3);
    let group = "stalled-silently";
    let committer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", group).create().unwrap();
    let mut bookmark = TopicPartitionList::new();
    bookmark.add_partition_offset("in", 0, Offset::Offset(2)).unwrap();
    committer.commit(&bookmark, CommitMode::Sync).unwrap();
    drop(committer);
    let port = free_port();
    let extra = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq" }
        kafka = { "statistics.interval.ms" = "500" }"#;
    let host = start(&brokers, &format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{}", recorder(group, extra)));
    let partition = || host.pipelines[0].shared.stats.snapshot().partitions.get(&("in".to_owned(), 0)).cloned();
    wait_until("the partition is reported stalled", || partition().is_some_and(|p| p.stalled.is_some()));
    let metrics = ferry_tests::hostile::get(port, "/metrics");
    let status = ferry_tests::hostile::get(port, "/api/status");
    let row = partition().unwrap();
    stop(host);
    let how = row.stalled.unwrap();
    assert!(how.contains("fetches from offset 2") && how.contains("up to offset 3"), "{how}");
    assert_eq!(row.halted, None, "no error was reported");
    assert!(metrics.lines().any(|l| l.starts_with("ferry_partition_stalled{") && l.ends_with(" 1")), "{metrics}");
    assert!(status.contains("not advancing, with no error"), "{status}");
    assert_eq!(committed(&brokers, group), Some(2), "the bookmark stays where it was");
}
