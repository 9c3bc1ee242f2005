//! Untrusted tenants cannot stall, starve or crash the host.
//!
//! Each case runs a real `ferry run` process (so its memory can be read from
//! /proc) with the chaos guest on a 4-partition topic: the hostile record is the
//! first of partition 0, the other partitions carry ordinary records. Written as an
//! attacker would: the guest waits in host code, floods memory and logs, and emits
//! before failing; the test checks that the other partitions keep flowing, the
//! host's peak memory stays within the budget its config implies, shutdown ends in
//! bounded time, and no output of an unprocessed record is published.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::hostile::*;
use ferry_tests::*;

/// The hostile pipeline with the Rust chaos guest: the hostile suites' limits (64 MiB,
/// 2 s per batch) and `extra` pipeline keys.
fn config(brokers: &str, group: &str, admin_port: u16, extra: &str) -> String {
    let component = guest("ferry-guest-chaos");
    HostileConfig { brokers, group, admin_port, component: &component, time_per_batch_ms: 2000, cache: None, extra }
        .text()
}

fn others_caught_up(brokers: &str, group: &str) -> bool {
    lag(brokers, group, "in").iter().filter(|p| p.partition != 0).all(|p| p.lag() == 0)
}

fn all_caught_up(brokers: &str, group: &str) -> bool {
    lag(brokers, group, "in").iter().all(|p| p.lag() == 0)
}

fn metric(port: u16, name: &str) -> f64 {
    let text = get(port, "/metrics");
    text.lines()
        .find(|l| l.starts_with(name) && l.contains("pipeline=\"hostile\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A guest that waits in host code (`wait` is a chaos command) is stopped at its
/// deadline and dead-lettered, the other partitions flow meanwhile, memory stays in
/// budget, and SIGTERM ends the host while a guest is waiting again.
fn a_waiting_guest_is_contained(wait: &str, waiting_line: &str) {
    let (_broker, brokers) = broker_with(&[wait]);
    let group = unique("wait");
    let port = free_port();
    let text = config(&brokers, &group, port, "");
    let dir = tempfile::tempdir().unwrap();
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("the guest is waiting", || ferry.log_text().contains(waiting_line));
    // The other partitions commit while partition 0's guest waits.
    wait_until("partitions 1-3 committed to their log ends", || others_caught_up(&brokers, &group));
    wait_until("the waiting record is given up on and everything committed", || all_caught_up(&brokers, &group));
    assert_eq!(dead_lettered(&brokers), BTreeSet::from([(0, 0)]), "exactly the waiting record is dead-lettered");
    assert!(metric(port, "ferry_guest_faults_total{") >= 2.0, "timeouts counted");
    let peak = ferry.peak_rss();
    assert!(peak <= budget(&text, 0), "peak RSS {} MiB over the budget {} MiB", peak / MIB, budget(&text, 0) / MIB);

    // Shutdown while a guest waits (for 120 s, or forever) ends in bounded time.
    let before = ferry.log_text().matches(waiting_line).count();
    produce(&brokers, "in", 1, &[wait.to_owned()]);
    wait_until("the guest waits again", || ferry.log_text().matches(waiting_line).count() > before);
    let status = ferry.terminate_and_wait();
    assert!(status.success(), "ferry exited with {status} after SIGTERM");
}

#[test]
fn a_guest_in_a_blocking_sleep_is_stopped_at_its_deadline() {
    a_waiting_guest_is_contained("block:120000", "blocking for 120000 ms");
}

#[test]
fn a_guest_polling_a_pollable_that_never_fires_is_stopped_at_its_deadline() {
    a_waiting_guest_is_contained("poll", "polling a pollable that never fires");
}

#[test]
fn an_output_bomb_is_refused_at_the_batch_budget_and_memory_stays_bounded() {
    let (_broker, brokers) = broker_with(&["bomb:out"]);
    // Two more bombs on partition 0, so several batches try.
    produce(&brokers, "in", 1, &["bomb:out".to_owned(), "bomb:out".to_owned()]);
    let group = unique("bomb");
    let port = free_port();
    let text = config(&brokers, &group, port, "");
    let dir = tempfile::tempdir().unwrap();
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("everything committed", || all_caught_up(&brokers, &group));
    let peak = ferry.peak_rss();
    assert!(peak <= budget(&text, 0), "peak RSS {} MiB over the budget {} MiB", peak / MIB, budget(&text, 0) / MIB);
    assert!(ferry.terminate_and_wait().success());
    // Each bomb record got what fits in one batch's 16 MiB budget, then was refused.
    let bombs = read_all(&brokers, "out").len();
    let per_bomb = (16 * MIB / (900 << 10)) as usize;
    assert!(bombs <= 3 * per_bomb, "{bombs} outputs for 3 bomb records; the budget allows {per_bomb} each");
    assert!(dead_lettered(&brokers).is_empty(), "a refused emit ends the bomb's loop, and it is processed");
}

/// Emits whose cost lies in their headers, written as an attacker would: records of
/// 100,000 empty headers (once charged nothing, since only bytes were counted)
/// emitted until refused, and one record whose thousand header names all point at
/// the same 900 KiB of guest memory (a copy of each would be 880 MiB of host memory
/// from 21 MiB of guest memory). With 10 s per batch, as time once was the only
/// bound: the host's peak RSS stays within the memory formula, the alias bomb is
/// refused, and the other partitions commit every record, their outputs all there.
#[test]
fn header_bombs_are_charged_per_header_and_memory_stays_bounded() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("out", PARTITIONS);
    broker.create_topic("dlq", 1);
    let bombs = ["headerbomb:out:100000", "aliasbomb:out:1000", "headerbomb:out:100000", "headerbomb:out:100000"];
    let values: Vec<String> = (0..PARTITIONS as usize * PER_PARTITION)
        .map(|i| match (i % PARTITIONS as usize, i / PARTITIONS as usize) {
            (0, n) if n < bombs.len() => bombs[n].to_owned(),
            (0, _) => format!("fine {i}"),
            _ => "emit:out".to_owned(),
        })
        .collect();
    produce(&brokers, "in", PARTITIONS, &values);
    let group = unique("header-bomb");
    let port = free_port();
    let component = guest("ferry-guest-chaos");
    let text = HostileConfig {
        brokers: &brokers,
        group: &group,
        admin_port: port,
        component: &component,
        time_per_batch_ms: 10_000,
        cache: None,
        extra: "",
    }
    .text();
    let dir = tempfile::tempdir().unwrap();
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("everything committed", || all_caught_up(&brokers, &group));
    let peak = ferry.peak_rss();
    assert!(ferry.terminate_and_wait().success());
    assert!(peak <= budget(&text, 0), "peak RSS {} MiB over the budget {} MiB", peak / MIB, budget(&text, 0) / MIB);
    let dead: Vec<String> =
        read_all(&brokers, "dlq").iter().filter_map(|r| r.header("ferry.reason").map(str::to_owned)).collect();
    assert!(dead.is_empty(), "every bomb record ends processed, the alias bomb refused: {dead:?}");
    let key = |i: usize| format!("k{i}");
    let emitters: BTreeSet<String> = (0..values.len()).filter(|&i| values[i] == "emit:out").map(key).collect();
    let header_bombs: BTreeSet<String> =
        (0..values.len()).filter(|&i| values[i].starts_with("headerbomb")).map(key).collect();
    let out = read_all(&brokers, "out");
    let plain: BTreeSet<String> = out.iter().filter(|r| r.headers.is_empty()).map(|r| r.key.clone()).collect();
    assert_eq!(plain, emitters, "every record of the other partitions published");
    for bomb in out.iter().filter(|r| !r.headers.is_empty()) {
        assert!(
            header_bombs.contains(&bomb.key) && bomb.headers.len() == 100_000,
            "{} with {} headers",
            bomb.key,
            bomb.headers.len()
        );
    }
    let per_batch = 16 << 20;
    let charged = 256 + "out".len() + 100_000 * 96;
    assert!(
        out.len() - plain.len() <= header_bombs.len() * (per_batch / charged),
        "{} bomb outputs",
        out.len() - plain.len()
    );
}

/// Floods of guest text (`flood` is a chaos command) are rate-limited per pipeline.
fn a_flood_is_rate_limited(flood: &str, stream: &str) {
    let (_broker, brokers) = broker_with(&[flood]);
    let group = unique("flood");
    let port = free_port();
    let text = config(&brokers, &group, port, "logs = { lines_per_sec = 50, bytes_per_sec = 65536 }");
    let dir = tempfile::tempdir().unwrap();
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("everything committed", || all_caught_up(&brokers, &group));
    let dropped = metric(port, "ferry_guest_log_lines_dropped_total");
    let written = metric(port, "ferry_guest_log_lines_total");
    let log = ferry.log_text();
    let lines =
        log.lines().filter(|l| l.contains("ferry::guest") && l.contains(&format!("stream=\"{stream}\""))).count();
    assert!(dropped >= 12_000.0, "only {dropped} lines dropped");
    assert!(written < 2_000.0 && (lines as f64) <= written, "{written} lines written ({lines} in the log)");
    assert_eq!(log.matches("dropping lines").count(), 1, "one line says when dropping starts");
    let peak = ferry.peak_rss();
    assert!(peak <= budget(&text, 0), "peak RSS {} MiB over the budget {} MiB", peak / MIB, budget(&text, 0) / MIB);
    assert!(ferry.terminate_and_wait().success());
}

#[test]
fn a_log_flood_is_rate_limited_and_counted() {
    a_flood_is_rate_limited("logflood:100000", "log");
}

#[test]
fn a_stdout_flood_is_rate_limited_and_counted() {
    // 12,800 lines of 4 KiB: 50 MiB.
    a_flood_is_rate_limited("print:12800", "stdout");
}

/// Outputs belong to the record that produced them: a record that emits and then
/// retries, rejects or traps leaves nothing behind in the output topic.
#[test]
fn outputs_of_records_that_are_not_processed_are_never_published() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.create_topic("dlq", 1);
    let values: Vec<String> =
        ["emit-then:out:retry", "emit:out", "emit-then:out:reject", "emit-then:out:panic", "emit:out", "fine"]
            .map(str::to_owned)
            .into();
    produce(&brokers, "in", 1, &values);
    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "emitters"
        inputs = ["in"]
        group = "emitters"
        component = "{}"
        batch_size = 10
        max_wait_ms = 10
        output_topics = ["out"]
        commit = {{ policy = "per-batch" }}
        failure = {{ on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 3, backoff_initial_ms = 10 }}
        "#,
        guest("ferry-guest-chaos").display()
    ))
    .unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("everything committed", || lag(&brokers, "emitters", "in").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    // The produce harness keys record i `k<i>`, and the chaos guest emits the key.
    let published: BTreeSet<String> = read_all(&brokers, "out").into_iter().map(|r| r.key).collect();
    assert_eq!(published, BTreeSet::from(["k1".to_owned(), "k4".to_owned()]), "only processed records' outputs");
    let dead: BTreeSet<i64> = dead_lettered(&brokers).into_iter().map(|(_, o)| o).collect();
    assert_eq!(dead, BTreeSet::from([0, 2, 3]), "the records that did not end processed");
}
