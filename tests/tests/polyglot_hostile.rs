//! Hostile Python and JavaScript tenants cannot stall, starve or crash the host
//! (issue 16), checked as `hostile.rs` checks the Rust chaos guest: a real
//! `ferry run` process (so its memory can be read from /proc) runs the chaos guest
//! of the language on a 4-partition topic whose partition 0 starts with a blocking
//! sleep, an endless loop, unbounded memory, deep recursion, a fault and an
//! ordinary exception; the other partitions carry ordinary records. The other
//! partitions keep flowing, each hostile record ends dead-lettered (faults after
//! their attempts, the exception at once, as a Rust reject), the faults are counted
//! by kind, `/healthz` answers 200, the host's peak memory stays within the budget
//! its config implies, and SIGTERM ends the host while a guest is waiting again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use ferry_host::config::Config;
use ferry_host::devtools::GuestLanguage;
use ferry_host::sandbox::{ProcessorComponent, Sandbox};
use ferry_tests::*;

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 30;
const MIB: u64 = 1 << 20;
/// The host itself, as in `hostile.rs` (runtime, engine, librdkafka clients, the
/// admin server), measured idle and rounded up generously.
const HOST_BASE: u64 = 160 * MIB;
/// The hostile records at the start of partition 0, in this order.
const HOSTILE: [&str; 6] = ["block:120000", "loop", "oom", "recurse", "panic", "error"];
const WAITING_LINE: &str = "blocking for 120000 ms";

fn config(brokers: &str, group: &str, admin_port: u16, component: &std::path::Path, cache: &std::path::Path) -> String {
    format!(
        r#"
        brokers = "{brokers}"
        [sandbox]
        cache_dir = "{cache}"
        [admin]
        listen = "127.0.0.1:{admin_port}"
        [[pipeline]]
        name = "hostile"
        inputs = ["in"]
        group = "{group}"
        component = "{component}"
        batch_size = 10
        max_wait_ms = 10
        output_topics = ["out"]
        commit = {{ policy = "interval", interval_ms = 100 }}
        limits = {{ memory_mib = 64, time_per_batch_ms = 1000 }}
        failure = {{ on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 2, backoff_initial_ms = 10 }}
        "#,
        component = component.display(),
        cache = cache.display(),
    )
}

/// What a pipeline with this config can make the host hold, by docs/operators.md:
/// the host, the component's compiled code (its artifact, mapped from the cache),
/// the guest's memory, a batch's outputs twice, librdkafka's producer and consumer
/// queues (ferry's defaults).
fn budget(text: &str, artifact_bytes: u64) -> u64 {
    let config = Config::parse(text).unwrap();
    let p = &config.pipelines[0];
    let queues = 2 * 32 * MIB;
    HOST_BASE + artifact_bytes + (p.limits.memory_mib << 20) + 2 * p.limits.output_bytes_per_batch as u64 + queues
}

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin server");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

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

/// The dead letters' source offsets, as (partition, offset).
fn dead_lettered(brokers: &str) -> BTreeSet<(i32, i64)> {
    let header = |r: &Read, name: &str| -> i64 {
        r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.parse().unwrap()).unwrap()
    };
    read_all(brokers, "dlq").iter().map(|r| (header(r, "ferry.partition") as i32, header(r, "ferry.offset"))).collect()
}

fn hostile_guests_are_contained(language: GuestLanguage) {
    let component = polyglot_guest(language, &format!("tests/guests/{}/chaos", language.name()));
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("out", PARTITIONS);
    broker.create_topic("dlq", 1);
    let values: Vec<String> = (0..PARTITIONS as usize * PER_PARTITION)
        .map(|i| match (i % PARTITIONS as usize, i / PARTITIONS as usize) {
            (0, n) if n < HOSTILE.len() => HOSTILE[n].to_owned(),
            _ => format!("fine {i}"),
        })
        .collect();
    produce(&brokers, "in", PARTITIONS, &values);

    let group = unique("hostile");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = config(&brokers, &group, port, &component, &cache);
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
