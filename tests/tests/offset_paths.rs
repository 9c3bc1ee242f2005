//! The paths of issue 13 that the scenarios do not take: each reproduces a
//! sequence that could lose data or stall a partition, and checks it does not.
//! (A late ack or delivery failure of an earlier assignment, and a revoke with dead
//! letters in flight, are reproduced step by step in the offset tracker's tests and
//! `pipeline::shared`'s; acks other than `all` are refused by config validation.)

use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::checker::{CommitSampler, check};
use ferry_tests::raw_produce::produce_corrupt_batch;
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
