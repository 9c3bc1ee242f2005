//! The offset scenarios, each judged by the independent checker
//! ([`crate::checker`]): the records produced, what the recorder guest was handed and
//! published, and the committed offsets sampled while the scenario ran.
//! `tests/offsets.rs` runs them on the embedded broker, `tests/real_broker.rs` on
//! Tansu.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;

use crate::checker::{CommitSampler, Report, check};
use crate::*;

/// A pipeline config for the recorder guest, as one member incarnation: the
/// pipeline is named after it (unique), and the guest tags its ledger with it.
pub fn recorder_config(broker: &dyn Broker, group: &str, topic: &str, extra: &str) -> String {
    let incarnation = format!("{group}.{}", unique("rec"));
    format!(
        r#"
        brokers = "{brokers}"
        [kafka]
        {properties}
        [[pipeline]]
        name = "{incarnation}"
        inputs = ["{topic}"]
        group = "{group}"
        component = "{component}"
        batch_size = 50
        max_wait_ms = 10
        output_topics = ["seen"]
        settings = {{ incarnation = "{incarnation}" }}
        logs = {{ lines_per_sec = 100000, bytes_per_sec = 67108864 }}
        kafka = {{ "session.timeout.ms" = "6000" }}
        {extra}
        "#,
        brokers = broker.brokers(),
        properties = broker.client_properties(),
        component = guest("ferry-guest-recorder").display(),
    )
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The checker's verdict on `group`'s run over `topic`, from these process logs
/// (plus what hosts in this process logged).
fn judge(brokers: &str, topic: &str, group: &str, mut logs: Vec<String>, sampler: CommitSampler) -> Report {
    logs.push(captured_log());
    let report = check(brokers, topic, group, None, &logs, &sampler.stop());
    report.assert_sound();
    report
}

/// Clean run: every record processed once, nothing else, committed = log end.
pub fn clean_run(broker: &dyn Broker, per_partition: usize) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 4);
    broker.create_topic("seen", 1);
    produce(&brokers, "orders", 4, &values("order-", 4 * per_partition));
    let sampler = CommitSampler::start(&brokers, "clean", "orders");
    let config = Config::parse(&recorder_config(broker, "clean", "orders", "")).unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("lag 0 on every partition", || lag(&brokers, "clean", "orders").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let report = judge(&brokers, "orders", "clean", Vec::new(), sampler);
    assert_eq!(report.processed, 4 * per_partition, "every record processed");
    assert!(report.allowed_duplicates.is_empty(), "a clean run has no duplicates:\n{}", report.summary());
    for p in lag(&brokers, "clean", "orders") {
        assert_eq!(p.committed, Some(p.log_end), "partition {} committed = log end", p.partition);
        assert_eq!(p.log_end, per_partition as i64);
    }
}

/// The crash case: a consumer processes 0-3 and commits; the next one
/// processes 4-7 and crashes before committing; its successor resumes at 4. With
/// `workers` > 1 each process runs that many members over as many partitions, the
/// records spread over them, and every worker is in the group before records come.
pub fn crash_before_commit(broker: &dyn Broker, workers: usize) {
    let brokers = broker.brokers();
    let group = format!("crash-w{workers}");
    let group = group.as_str();
    let partitions = workers as i32;
    broker.create_topic("orders", partitions);
    broker.create_topic("seen", 1);
    let dir = tempfile::tempdir().unwrap();
    // Interval commits every 10 minutes: only a clean shutdown or revoke commits.
    let config = || {
        let extra = format!("workers = {workers}\ncommit = {{ policy = \"interval\", interval_ms = 600000 }}");
        write_config(dir.path(), &recorder_config(broker, group, "orders", &extra))
    };
    let sampler = CommitSampler::start(&brokers, group, "orders");
    let mut logs = Vec::new();
    let published = || read_all(&brokers, "seen").len();
    let committed = || lag(&brokers, group, "orders").iter().map(|p| p.committed.unwrap_or(0)).sum::<i64>();
    let started = |process: &FerryProcess| {
        wait_until("every worker owns a partition", || every_worker_assigned(&process.log_text(), workers));
    };

    let mut first = FerryProcess::start(&config());
    started(&first);
    produce(&brokers, "orders", partitions, &values("a", 4));
    wait_until("consumer-1 processed 0-3", || published() == 4);
    first.terminate();
    logs.push(first.log_text());
    assert_eq!(committed(), 4, "a clean stop commits 4");

    let mut second = FerryProcess::start(&config());
    // In the group before the records come: a rebalance among its workers would
    // commit on revoke.
    started(&second);
    produce(&brokers, "orders", partitions, &values("b", 4));
    wait_until("consumer-2 processed 4-7", || published() == 8);
    second.kill9();
    logs.push(second.log_text());
    assert_eq!(committed(), 4, "the crash committed nothing");

    produce(&brokers, "orders", partitions, &values("c", 2));
    let mut third = FerryProcess::start(&config());
    wait_until("consumer-3 processed 4-9", || finished(&brokers).len() == 10);
    third.terminate();
    logs.push(third.log_text());
    assert!(lag(&brokers, group, "orders").iter().all(|p| p.lag() == 0), "a clean stop commits the log end");

    let report = judge(&brokers, "orders", group, logs, sampler);
    let again: BTreeSet<(i32, i64, usize)> = report.allowed_duplicates.iter().copied().collect();
    // Records 4-7 went round-robin over the partitions: offsets 4/n to 8/n of each.
    let window = 4 / i64::from(partitions)..8 / i64::from(partitions);
    let expected: BTreeSet<(i32, i64, usize)> =
        (0..partitions).flat_map(|p| window.clone().map(move |o| (p, o, 2))).collect();
    if workers == 1 {
        assert_eq!(again, expected, "duplicates exactly the uncommitted window 4-7:\n{}", report.summary());
    } else {
        // The third process's workers join the group one after the other: the first
        // may take every partition, and the commit of its revoke can be refused (the
        // embedded broker refuses commits while the group rebalances), so records it
        // finished then come again, from the bookmark (the checker holds every
        // duplicate to it). The uncommitted window still comes again, and nothing
        // committed before the crash does.
        let again_records: BTreeSet<(i32, i64)> = again.iter().map(|(p, o, _)| (*p, *o)).collect();
        let window_records: BTreeSet<(i32, i64)> = expected.iter().map(|(p, o, _)| (*p, *o)).collect();
        assert!(
            window_records.is_subset(&again_records),
            "the uncommitted window 4-7 came again:\n{}",
            report.summary()
        );
        assert!(
            again.iter().all(|(_, o, _)| *o >= window.start),
            "nothing committed before the crash came again:\n{}",
            report.summary()
        );
    }
}

/// The distinct (partition, offset) pairs the recorder published to `seen`.
fn finished(brokers: &str) -> BTreeSet<(i32, i64)> {
    read_all(brokers, "seen")
        .iter()
        .filter_map(|r| {
            // <incarnation>/<topic>/<partition>/<offset>/<nonce>
            let parts: Vec<&str> = r.value.rsplitn(4, '/').collect();
            Some((parts.get(2)?.parse().ok()?, parts.get(1)?.parse().ok()?))
        })
        .collect()
}

/// Whether each of a process's `workers` workers has partitions, per its log (what
/// its assignments and revokes left each; a single worker's lines name no worker).
pub fn every_worker_assigned(log: &str, workers: usize) -> bool {
    // Assignments add partitions and revokes remove them: with cooperative-sticky
    // both are incremental (an empty assignment keeps what a worker owns), and with
    // eager a revoke of everything comes before each new assignment.
    let mut owned: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for line in log.lines() {
        let assigned = line.contains("partitions assigned");
        if !assigned && !line.contains("partitions revoked") {
            continue;
        }
        let worker = line.split(" worker=").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or("");
        let listed = line.split(" partitions=").nth(1).unwrap_or("");
        let partitions = listed.split("), (").map(|p| p.trim_matches(['[', ']', '(', ')']).to_owned());
        let mine = owned.entry(worker.to_owned()).or_default();
        for partition in partitions.filter(|p| !p.is_empty()) {
            if assigned {
                mine.insert(partition);
            } else {
                mine.remove(&partition);
            }
        }
    }
    owned.values().filter(|partitions| !partitions.is_empty()).count() == workers
}

/// The rebalance case, with eager and cooperative assignment: 4 partitions,
/// 2 members with 2 each; one dies; the other owns all four and resumes each from
/// its committed offset. `slow` records of `slow_ms` each keep the victim busy. With
/// `workers` > 1, each process runs that many members: the survivor's two partitions
/// then spread over its workers, and the victim's over its own.
pub fn rebalance_after_a_member_dies(broker: &dyn Broker, strategy: &str, slow: usize, slow_ms: u64, workers: usize) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 4);
    broker.create_topic("seen", 1);
    // Unique per test of this process: the in-process log capture is shared.
    let group = format!("rebalance-{strategy}-w{workers}");
    produce(&brokers, "orders", 4, &(0..400).map(|i| format!("{i}")).collect::<Vec<_>>());
    let sampler = CommitSampler::start(&brokers, &group, "orders");
    let extra = format!(
        "commit = {{ policy = \"interval\", interval_ms = 100 }}\n\
         kafka = {{ \"session.timeout.ms\" = \"6000\", \"partition.assignment.strategy\" = \"{strategy}\" }}"
    );
    // Small batches, so commits land while the slow stream is still flowing.
    let text = |broker: &dyn Broker| {
        recorder_config(broker, &group, "orders", &format!("workers = {workers}"))
            .replace("kafka = { \"session.timeout.ms\" = \"6000\" }", &extra)
            .replace("batch_size = 50", "batch_size = 5")
    };
    // The survivor starts first and owns all four partitions; the victim joins and
    // takes two of them.
    let survivor = Host::start(&Config::parse(&text(broker)).unwrap()).unwrap();
    let stats = || survivor.pipelines[0].snapshot();
    let assigned = |s: &ferry_host::pipeline::stats::StatsSnapshot| -> BTreeSet<i32> {
        s.partitions.iter().filter(|(_, p)| p.assigned).map(|((_, p), _)| *p).collect()
    };
    wait_until("the survivor owns all four partitions", || assigned(&stats()).len() == 4);
    let dir = tempfile::tempdir().unwrap();
    let mut victim = FerryProcess::start(&write_config(dir.path(), &text(broker)));
    wait_until("the victim's workers all own partitions", || every_worker_assigned(&victim.log_text(), workers));
    wait_until("two processes with two partitions each", || assigned(&stats()).len() == 2);
    let victims: Vec<i32> = (0..4).filter(|p| !assigned(&stats()).contains(p)).collect();
    assert_eq!(victims.len(), 2, "the victim owns the other two partitions");
    let handed_over = lag(&brokers, &group, "orders");
    // Now a slow stream, so the victim dies mid-way.
    produce(&brokers, "orders", 4, &(400..400 + slow).map(|i| format!("slow:{slow_ms};{i}")).collect::<Vec<_>>());
    wait_until_or_explain(
        "the victim committed progress and is mid-stream",
        || {
            lag(&brokers, &group, "orders").iter().filter(|p| victims.contains(&p.partition)).any(|p| {
                let before = handed_over.iter().find(|h| h.partition == p.partition).unwrap().committed;
                p.committed > before && p.lag() > 0
            })
        },
        || {
            let log = victim.log_text();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("ledger")).collect();
            format!(
                "handed over: {handed_over:?}\nnow: {:?}\nthe victim's last lines:\n{}",
                lag(&brokers, &group, "orders"),
                lines[lines.len().saturating_sub(30)..].join("\n")
            )
        },
    );
    victim.kill9();
    let victim_log = victim.log_text();

    wait_until("the survivor owns all four partitions", || assigned(&stats()).len() == 4);
    wait_until("lag 0 everywhere", || lag(&brokers, &group, "orders").iter().all(|p| p.lag() == 0));
    survivor.shutdown_flag().store(true, Ordering::Relaxed);
    survivor.wait();

    // The checker holds every duplicate to the bookmark of the assignment that
    // processed it again: the survivor resumed each of the victim's partitions at
    // its committed offset, or it would report them.
    let report = judge(&brokers, "orders", &group, vec![victim_log], sampler);
    assert_eq!(report.processed, 400 + slow, "nothing lost:\n{}", report.summary());
}

/// Record 5 is never finished, 6-9 are: the commit stays at 5 (with `workers` > 1,
/// whichever worker owns the partition, and when it moves between them).
pub fn gap_holds_the_commit(broker: &dyn Broker, workers: usize) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 1);
    produce(&brokers, "orders", 1, &values("r", 10));
    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "gap-w{workers}"
        inputs = ["orders"]
        group = "gap-w{workers}"
        component = "{}"
        max_wait_ms = 10
        commit = {{ policy = "per-batch" }}
        failure = {{ max_attempts = 1000, backoff_initial_ms = 5, backoff_max_ms = 20 }}
        workers = {workers}
        "#,
        guest("ferry-guest-gap").display()
    ))
    .unwrap();
    let group = format!("gap-w{workers}");
    let host = Host::start(&config).unwrap();
    let stats = || host.pipelines[0].snapshot().partitions.get(&("orders".to_owned(), 0)).cloned().unwrap_or_default();
    wait_until("commit reached 5", || lag(&brokers, &group, "orders")[0].committed == Some(5));
    wait_until("record 5 retried several times while 6-9 are done", || stats().retried >= 5 && stats().processed >= 9);
    assert_eq!(lag(&brokers, &group, "orders")[0].committed, Some(5), "never past the unfinished record");
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    assert_eq!(lag(&brokers, &group, "orders")[0].committed, Some(5), "shutdown does not commit past it either");
}

/// A process killed with SIGKILL mid-stream loses nothing: its successor picks up
/// from the last commit.
pub fn sigkill_mid_stream(broker: &dyn Broker, count: usize, slow_ms: u64) {
    let brokers = broker.brokers();
    broker.create_topic("orders", 2);
    broker.create_topic("seen", 1);
    let records: Vec<String> = (0..count).map(|i| format!("slow:{slow_ms};{i}")).collect();
    produce(&brokers, "orders", 2, &records);
    let sampler = CommitSampler::start(&brokers, "kill", "orders");
    let dir = tempfile::tempdir().unwrap();
    // Small batches, so commits land while the slow stream is still flowing.
    let config = || {
        write_config(
            dir.path(),
            &recorder_config(broker, "kill", "orders", "commit = { policy = \"interval\", interval_ms = 100 }")
                .replace("batch_size = 50", "batch_size = 5"),
        )
    };
    let mut first = FerryProcess::start(&config());
    wait_until("some records committed", || {
        lag(&brokers, "kill", "orders").iter().map(|p| p.committed.unwrap_or(0)).sum::<i64>() >= count as i64 / 6
    });
    first.kill9();
    assert!(lag(&brokers, "kill", "orders").iter().any(|p| p.lag() > 0), "killed mid-stream");
    let mut second = FerryProcess::start(&config());
    wait_until("caught up", || lag(&brokers, "kill", "orders").iter().all(|p| p.lag() == 0));
    second.terminate();
    let report = judge(&brokers, "orders", "kill", vec![first.log_text(), second.log_text()], sampler);
    assert_eq!(report.processed, count, "nothing lost:\n{}", report.summary());
}
