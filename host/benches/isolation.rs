//! Tenant isolation: how much a hostile tenant slows a healthy one in the same host.
//!
//! One host runs a healthy passthrough pipeline over a pre-filled topic, alone and
//! then next to a tenant that loops, bombs its memory or traps on every batch. The
//! figure is the healthy pipeline's processing rate after warm-up; each run also
//! waits until everything is committed.
//! `cargo bench -p ferry-host --bench isolation`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_host::kafka::offsets;
use ferry_host::kafka::output::send_when_room;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const RECORDS: usize = 100_000;
/// Records processed before the clock starts (group join, first fetches).
const WARMUP: u64 = 5_000;

fn fill(brokers: &str, topic: &str, value: &str, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().unwrap();
    for i in 0..count {
        let key = i.to_string();
        send_when_room(&producer, BaseRecord::to(topic).key(&key).payload(value))
            .map_err(|(error, _)| error)
            .expect("record queued");
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn pipeline(name: &str, component: &std::path::Path, extra: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\ninputs = [\"{name}\"]\ngroup = \"{name}\"\ncomponent = {:?}\nbatch_size = 500\nmax_wait_ms = 10\n{extra}\n",
        component.display().to_string()
    )
}

/// Records per second of the healthy pipeline (after warm-up), next to `neighbour`.
fn run(neighbour: Option<&str>) -> f64 {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("healthy", 4, 1).unwrap();
    fill(&brokers, "healthy", &"x".repeat(100), RECORDS);
    let passthrough = ferry_host::devtools::build_guest("ferry-example-passthrough").unwrap();
    let chaos = ferry_host::devtools::build_guest("ferry-guest-chaos").unwrap();
    let mut text =
        format!("brokers = \"{brokers}\"\n[sandbox]\ncache_dir = \"\"\n{}", pipeline("healthy", &passthrough, ""));
    if let Some(behaviour) = neighbour {
        cluster.create_topic("hostile", 1, 1).unwrap();
        fill(&brokers, "hostile", behaviour, 1000);
        text.push_str(&pipeline(
            "hostile",
            &chaos,
            "output_topics = [\"out\"]\nlimits = { time_per_batch_ms = 100, memory_mib = 64 }\n\
             failure = { on_failure = \"halt\", max_attempts = 1000, backoff_initial_ms = 1, backoff_max_ms = 1 }",
        ));
    }
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();
    let processed =
        || -> u64 { host.pipelines[0].shared.stats.snapshot().partitions.values().map(|p| p.processed).sum() };
    while processed() < WARMUP {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (started, from) = (Instant::now(), processed());
    while processed() < RECORDS as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rate = (RECORDS as u64 - from) as f64 / started.elapsed().as_secs_f64();
    // Everything must also be committed, not only processed.
    while !offsets::show(&brokers, &Default::default(), "healthy", &["healthy".to_owned()])
        .unwrap()
        .iter()
        .all(|p| p.lag() == 0)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    rate
}

fn main() {
    println!("healthy tenant: {RECORDS} records of 100 B in 4 partitions, passthrough guest");
    println!("| neighbour | healthy records/s (median of 3) | slowdown |");
    println!("|---|---|---|");
    let mut alone = 0.0;
    for (label, neighbour) in [
        ("none", None),
        ("loops (100 ms limit)", Some("loop")),
        ("memory bomb (64 MiB)", Some("oom")),
        ("traps every batch", Some("panic")),
    ] {
        let mut runs: Vec<f64> = (0..3).map(|_| run(neighbour)).collect();
        runs.sort_by(f64::total_cmp);
        let median = runs[1];
        if neighbour.is_none() {
            alone = median;
        }
        println!("| {label} | {median:.0} | {:.2}× |", alone / median);
    }
}
