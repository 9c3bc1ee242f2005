//! Hostile Python and JavaScript tenants cannot stall, starve or crash the host,
//! checked as `hostile.rs` checks the Rust chaos guest: a real
//! `ferry run` process (so its memory can be read from /proc) runs the chaos guest
//! of the language on a 4-partition topic whose partition 0 starts with a blocking
//! sleep, an endless loop, unbounded memory, deep recursion, a fault and an
//! ordinary exception; the other partitions carry ordinary records. The other
//! partitions keep flowing, each hostile record ends dead-lettered (faults after
//! their attempts, the exception at once, as a Rust reject), the faults are counted
//! by kind, `/healthz` answers 200, the host's peak memory stays within the budget
//! its config implies, and SIGTERM ends the host while a guest is waiting again.

use std::collections::{BTreeMap, BTreeSet};

use ferry_host::config::Config;
use ferry_host::devtools::GuestLanguage;
use ferry_host::sandbox::{ProcessorComponent, Sandbox};
use ferry_tests::hostile::*;
use ferry_tests::*;

/// The hostile records at the start of partition 0, in this order.
const HOSTILE: [&str; 6] = ["block:120000", "loop", "oom", "recurse", "panic", "error"];
const WAITING_LINE: &str = "blocking for 120000 ms";

/// `ferry_guest_faults_total` of the pipeline, by kind.
fn faults(port: u16) -> BTreeMap<String, f64> {
    get(port, "/metrics")
        .lines()
        .filter(|l| l.starts_with("ferry_guest_faults_total{") && l.contains("pipeline=\"hostile\""))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?.to_owned();
            Some((kind, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn hostile_guests_are_contained(language: GuestLanguage) {
    let component = polyglot_guest(language, &format!("tests/guests/{}/chaos", language.name()));
    let (_broker, brokers) = broker_with(&HOSTILE);

    let group = unique("hostile");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = HostileConfig {
        brokers: &brokers,
        group: &group,
        admin_port: port,
        component: &component,
        time_per_batch_ms: 1000,
        cache: Some(&cache),
        extra: "",
    }
    .text();
    // Compile into the config's artifact cache first, as an earlier start or deploy
    // would have: the process under test maps the compiled code from there.
    let settings = Config::parse(&text).unwrap().sandbox_settings();
    let bytes = std::fs::read(&component).unwrap();
    ProcessorComponent::load(
        &Sandbox::new(settings).unwrap(),
        &bytes,
        &Config::parse(&text).unwrap().pipelines[0].grants(),
    )
    .unwrap();
    let artifact_bytes: u64 = walk(&cache).iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(artifact_bytes > 0, "the artifact cache holds the compiled component");

    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("the guest is blocking", || ferry.log_text().contains(WAITING_LINE));
    wait_until("partitions 1-3 committed to their log ends", || {
        lag(&brokers, &group, "in").iter().filter(|p| p.partition != 0).all(|p| p.lag() == 0)
    });
    wait_until("every hostile record is given up on and everything committed", || {
        lag(&brokers, &group, "in").iter().all(|p| p.lag() == 0)
    });
    let hostile: BTreeSet<(i32, i64)> = (0..HOSTILE.len() as i64).map(|o| (0, o)).collect();
    assert_eq!(dead_lettered(&brokers), hostile, "exactly the hostile records are dead-lettered");
    let health = get(port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "the host stays healthy after its guest's faults: {health}");
    let kinds = faults(port);
    for kind in ["timeout", "out_of_memory", "panic"] {
        assert!(kinds.get(kind).copied().unwrap_or(0.0) >= 1.0, "{kind} faults counted: {kinds:?}");
    }
    let peak = ferry.peak_rss();
    let budget = budget(&text, artifact_bytes);
    eprintln!(
        "{}: peak RSS {} MiB (budget {} MiB, compiled artifact {} MiB); faults {kinds:?}",
        language.name(),
        peak / MIB,
        budget / MIB,
        artifact_bytes / MIB
    );
    assert!(peak <= budget, "peak RSS {} MiB over the budget {} MiB", peak / MIB, budget / MIB);

    // Shutdown while a guest blocks (for 120 s) ends in bounded time.
    let before = ferry.log_text().matches(WAITING_LINE).count();
    produce(&brokers, "in", 1, &[HOSTILE[0].to_owned()]);
    wait_until("the guest blocks again", || ferry.log_text().matches(WAITING_LINE).count() > before);
    let status = ferry.terminate_and_wait();
    assert!(status.success(), "ferry exited with {status} after SIGTERM");
}

fn walk(dir: &std::path::Path) -> Vec<std::fs::DirEntry> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry);
        }
    }
    out
}

#[test]
fn hostile_python_guests_are_contained_and_memory_stays_bounded() {
    hostile_guests_are_contained(GuestLanguage::Python);
}

#[test]
fn hostile_javascript_guests_are_contained_and_memory_stays_bounded() {
    hostile_guests_are_contained(GuestLanguage::JavaScript);
}
