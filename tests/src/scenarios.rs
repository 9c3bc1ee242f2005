//! The seed's offset scenarios, each checked against an independent ledger: the
//! records produced, and what the recorder guest reported seeing (its `seen` topic).
//! `tests/offsets.rs` runs them on the embedded broker, `tests/real_broker.rs` on
//! Tansu.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;

use crate::*;

/// A pipeline config for the recorder guest.
fn recorder_config(broker: &dyn Broker, group: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
        brokers = "{brokers}"
        [kafka]
        {properties}
        [[pipeline]]
        name = "recorder"
        inputs = ["{topic}"]
        group = "{group}"
        component = "{component}"
        batch_size = 50
        max_wait_ms = 10
        output_topics = ["seen"]
        kafka = {{ "session.timeout.ms" = "6000" }}
        {extra}
        "#,
        brokers = broker.brokers(),
        properties = broker.client_properties(),
        component = guest("ferry-guest-recorder").display(),
    )
}

/// offset -> how many times the guest saw it, per partition of `topic`.
fn seen_counts(brokers: &str, topic: &str) -> BTreeMap<(i32, i64), usize> {
    let mut counts = BTreeMap::new();
    for read in read_all(brokers, "seen") {
        let (t, partition, offset) = parse_seen(&read.value);
        if t == topic {
            *counts.entry((partition, offset)).or_default() += 1;
        }
    }
    counts
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Clean run: 0 lost, 0 duplicates, committed = log end.
pub fn clean_run(broker: &dyn Broker, per_partition: usize) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 4);
    broker.create_topic("seen", 1);
    produce(&brokers, "orders", 4, &values("order-", 4 * per_partition));

    let config = Config::parse(&recorder_config(broker, "clean", "orders", "")).unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("lag 0 on every partition", || lag(&brokers, "clean", "orders").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let seen = seen_counts(&brokers, "orders");
    assert_eq!(seen.len(), 4 * per_partition, "lost records");
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates in a clean run: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    for p in lag(&brokers, "clean", "orders") {
        assert_eq!(p.committed, Some(p.log_end), "partition {} committed = log end", p.partition);
        assert_eq!(p.log_end, per_partition as i64);
    }
}

/// The seed's crash case: a consumer processes 0-3 and commits; the next one
/// processes 4-7 and crashes before committing; its successor resumes at 4.
pub fn crash_before_commit(broker: &dyn Broker) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 1);
    broker.create_topic("seen", 1);
    let dir = tempfile::tempdir().unwrap();
    // Interval commits every 10 minutes: only a clean shutdown or revoke commits.
    let config = write_config(
        dir.path(),
        &recorder_config(broker, "crash", "orders", "commit = { policy = \"interval\", interval_ms = 600000 }"),
    );

    produce(&brokers, "orders", 1, &values("a", 4));
    let mut first = FerryProcess::start(&config);
    wait_until("consumer-1 saw 0-3", || seen_counts(&brokers, "orders").len() == 4);
    first.terminate();
    assert_eq!(lag(&brokers, "crash", "orders")[0].committed, Some(4), "a clean stop commits 4");

    produce(&brokers, "orders", 1, &values("b", 4));
    let mut second = FerryProcess::start(&config);
    wait_until("consumer-2 saw 4-7", || seen_counts(&brokers, "orders").len() == 8);
    second.kill9();
    assert_eq!(lag(&brokers, "crash", "orders")[0].committed, Some(4), "the crash committed nothing");

    produce(&brokers, "orders", 1, &values("c", 2));
    let mut third = FerryProcess::start(&config);
    wait_until("consumer-3 saw 4-9", || seen_counts(&brokers, "orders").values().sum::<usize>() == 14);
    third.terminate();
    assert_eq!(lag(&brokers, "crash", "orders")[0].lag(), 0, "a clean stop commits the log end");

    let seen = seen_counts(&brokers, "orders");
    let expected: BTreeMap<(i32, i64), usize> =
        (0..10).map(|o| ((0, o), if (4..8).contains(&o) { 2 } else { 1 })).collect();
    assert_eq!(seen, expected, "nothing lost; duplicates exactly the uncommitted window 4-7");
}

/// The seed's rebalance case, with eager and cooperative assignment: 4 partitions,
/// 2 members with 2 each; one dies; the other owns all four and resumes each from
/// its committed offset. `slow` records of `slow_ms` each keep the victim busy.
pub fn rebalance_after_a_member_dies(broker: &dyn Broker, strategy: &str, slow: usize, slow_ms: u64) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 4);
    broker.create_topic("seen", 1);
    let group = format!("rebalance-{strategy}");
    produce(&brokers, "orders", 4, &(0..400).map(|i| format!("{i}")).collect::<Vec<_>>());
    let extra = format!(
        "commit = {{ policy = \"interval\", interval_ms = 100 }}\n\
         kafka = {{ \"session.timeout.ms\" = \"6000\", \"partition.assignment.strategy\" = \"{strategy}\" }}"
    );
    // Small batches, so commits land while the slow stream is still flowing.
    let text = recorder_config(broker, &group, "orders", "")
        .replace("kafka = { \"session.timeout.ms\" = \"6000\" }", &extra)
        .replace("batch_size = 50", "batch_size = 5");
    // The survivor starts first and owns all four partitions; the victim joins and
    // takes two of them.
    let survivor = Host::start(&Config::parse(&text).unwrap()).unwrap();
    let stats = || survivor.pipelines[0].shared.stats.snapshot();
    let assigned = |s: &ferry_host::pipeline::stats::StatsSnapshot| -> BTreeSet<i32> {
        s.partitions.iter().filter(|(_, p)| p.assigned).map(|((_, p), _)| *p).collect()
    };
    wait_until("the survivor owns all four partitions", || assigned(&stats()).len() == 4);
    // The handover below starts from a known bookmark: everything so far committed (the
    // embedded broker refuses commits while its group settles, so this can take a few
    // intervals). Otherwise the victim may legitimately re-read records the survivor
    // processed but could not commit yet, and re-commit them before the bookmark is read.
    wait_until("the survivor committed the first 400 records", || {
        lag(&brokers, &group, "orders").iter().all(|p| p.lag() == 0)
    });
    let dir = tempfile::tempdir().unwrap();
    let mut victim = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("two members with two partitions each", || assigned(&stats()).len() == 2);
    let victims: Vec<i32> = (0..4).filter(|p| !assigned(&stats()).contains(p)).collect();
    let handed_over = lag(&brokers, &group, "orders");
    // Now a slow stream, so the victim dies mid-way.
    produce(&brokers, "orders", 4, &(400..400 + slow).map(|i| format!("slow:{slow_ms};{i}")).collect::<Vec<_>>());
    wait_until("the victim committed progress and is mid-stream", || {
        lag(&brokers, &group, "orders").iter().filter(|p| victims.contains(&p.partition)).any(|p| {
            let before = handed_over.iter().find(|h| h.partition == p.partition).unwrap().committed;
            p.committed > before && p.lag() > 0
        })
    });
    victim.kill9();
    let at_kill: BTreeMap<i32, i64> =
        lag(&brokers, &group, "orders").iter().map(|p| (p.partition, p.committed.unwrap())).collect();
    let seen_before_kill = read_all(&brokers, "seen").len();
    assert_eq!(victims.len(), 2, "the victim owned the other two partitions");
    let log_ends: BTreeMap<i32, i64> =
        lag(&brokers, &group, "orders").iter().map(|p| (p.partition, p.log_end)).collect();
    let unfinished: Vec<i32> = victims.iter().copied().filter(|p| at_kill[p] < log_ends[p]).collect();
    assert!(!unfinished.is_empty(), "the victim was killed mid-stream");

    wait_until("the survivor owns all four partitions", || assigned(&stats()).len() == 4);
    wait_until("lag 0 everywhere", || lag(&brokers, &group, "orders").iter().all(|p| p.lag() == 0));
    survivor.shutdown_flag().store(true, Ordering::Relaxed);
    survivor.wait();

    let ledger = read_all(&brokers, "seen");
    let after: Vec<(i32, i64)> =
        ledger[seen_before_kill..].iter().map(|r| parse_seen(&r.value)).map(|(_, p, o)| (p, o)).collect();
    for &p in &unfinished {
        let resumed = after.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).min().expect("survivor took over");
        assert_eq!(resumed, at_kill[&p], "partition {p} resumed at its committed offset");
    }
    let seen = seen_counts(&brokers, "orders");
    assert_eq!(seen.len(), 400 + slow, "nothing lost");
    // At-least-once: a record is seen twice only if it was past the bookmark when its
    // partition changed hands. (The embedded broker refuses commits while a rebalance
    // is in progress, so the handover itself can redeliver the uncommitted tail.)
    for (&(p, o), &n) in &seen {
        if n > 1 {
            let bookmark = handed_over.iter().find(|h| h.partition == p).and_then(|h| h.committed).unwrap_or(0);
            assert!(o >= bookmark, "duplicate {p}/{o} below the bookmark {bookmark} it had when partitions moved");
        }
    }
}

/// Record 5 is never finished, 6-9 are: the commit stays at 5.
pub fn gap_holds_the_commit(broker: &dyn Broker) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 1);
    produce(&brokers, "orders", 1, &values("r", 10));
    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "gap"
        inputs = ["orders"]
        group = "gap"
        component = "{}"
        max_wait_ms = 10
        commit = {{ policy = "per-batch" }}
        failure = {{ max_attempts = 1000, backoff_initial_ms = 5, backoff_max_ms = 20 }}
        "#,
        guest("ferry-guest-gap").display()
    ))
    .unwrap();
    let host = Host::start(&config).unwrap();
    let stats = || {
        host.pipelines[0].shared.stats.snapshot().partitions.get(&("orders".to_owned(), 0)).cloned().unwrap_or_default()
    };
    wait_until("commit reached 5", || lag(&brokers, "gap", "orders")[0].committed == Some(5));
    wait_until("record 5 retried several times while 6-9 are done", || stats().retried >= 5 && stats().processed >= 9);
    assert_eq!(lag(&brokers, "gap", "orders")[0].committed, Some(5), "never past the unfinished record");
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    assert_eq!(lag(&brokers, "gap", "orders")[0].committed, Some(5), "shutdown does not commit past it either");
}

/// A process killed with SIGKILL mid-stream loses nothing: its successor picks up
/// from the last commit.
pub fn sigkill_mid_stream(broker: &dyn Broker, count: usize, slow_ms: u64) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 2);
    broker.create_topic("seen", 1);
    let records: Vec<String> = (0..count).map(|i| format!("slow:{slow_ms};{i}")).collect();
    produce(&brokers, "orders", 2, &records);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        // Small batches, so commits land while the slow stream is still flowing.
        &recorder_config(broker, "kill", "orders", "commit = { policy = \"interval\", interval_ms = 100 }")
            .replace("batch_size = 50", "batch_size = 5"),
    );
    let mut first = FerryProcess::start(&config);
    wait_until("some records committed", || {
        lag(&brokers, "kill", "orders").iter().map(|p| p.committed.unwrap_or(0)).sum::<i64>() >= count as i64 / 6
    });
    first.kill9();
    let at_kill = lag(&brokers, "kill", "orders");
    assert!(at_kill.iter().any(|p| p.lag() > 0), "killed mid-stream");
    let mut second = FerryProcess::start(&config);
    wait_until("caught up", || lag(&brokers, "kill", "orders").iter().all(|p| p.lag() == 0));
    second.terminate();
    let seen = seen_counts(&brokers, "orders");
    assert_eq!(seen.len(), count, "nothing lost");
    for ((p, o), n) in seen {
        let committed = at_kill.iter().find(|l| l.partition == p).unwrap().committed.unwrap_or(0);
        assert!(n == 1 || o >= committed, "only uncommitted records are redelivered ({p}/{o} seen {n} times)");
    }
}
