//! Hot swap timing: `cargo bench -p ferry-host --bench hot_swap`.
//!
//! A host on the embedded broker processes a steady stream with the versioned test
//! guest (`tests/guests/versioned-v1`, whose ledger entries carry the time each record
//! was processed) while the bench deploys v2, v1, v2, ... through the admin API, then
//! rolls back a few times. For each switch it reports:
//!
//! - the time from the deploy request to the first record processed by the new
//!   version;
//! - the longest pause in record flow (no record processed by any version) from the
//!   request until just after that first record, next to the longest pause in a
//!   stretch of the same length with no swap (the flow's own rhythm at this rate).
//!
//! It runs twice: without the artifact cache (every deploy compiles) and with it
//! (only a version's first deploy compiles). Markdown on stdout, progress on stderr.
//! Nothing here asserts a time.

mod ledger;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use ferry_host::config::Config;
use ferry_host::deploy::client::{self, Request};
use ferry_host::host::Host;
use ferry_host::kafka::output::send_when_room;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 4;
const TOKEN: &str = "hot-swap-bench";
/// Deploys per run, alternating v2 and v1.
const DEPLOYS: usize = 8;
/// Rollbacks after them.
const ROLLBACKS: usize = 4;
/// The stream: this many records every 2 ms (5k records/s).
const BURST: usize = 10;
/// Steady flow before each switch, and after it.
const SETTLE: Duration = Duration::from_millis(300);
/// How far past the first new record the pause window reaches (the first batches of
/// a new instance included).
const AFTER_FIRST: u64 = 100_000;

/// One switch, as requested.
struct Switch {
    kind: &'static str,
    to_tag: u8,
    requested: u64,
    answered: u64,
    prepare_ms: Option<f64>,
}

/// One switch, as measured.
struct Measured {
    kind: &'static str,
    prepare_ms: Option<f64>,
    answer_ms: f64,
    first_ms: f64,
    pause_ms: f64,
    baseline_ms: f64,
}

fn main() -> anyhow::Result<()> {
    eprintln!("building the versioned guests (profile guest)...");
    let v1 = ferry_host::devtools::build_guest("ferry-guest-versioned-v1")?;
    let v2 = ferry_host::devtools::build_guest("ferry-guest-versioned-v2")?;
    println!("## Hot swap\n");
    println!(
        "`cargo bench -p ferry-host --bench hot_swap` (host/benches/hot_swap). One host, one pipeline, 4 partitions \
         on the embedded broker, a steady {} records/s, batch_size 100, max_wait_ms 5, fetch.wait.max.ms 2; \
         the versioned test guest (78 KB component) swapped through the admin API while records flow. Times from the guest's own clock \
         at processing. Pause = longest time with no record processed, from the request to 100 ms after the new \
         version's first record; baseline = the same over an equally long stretch just before the request.\n",
        BURST * 500
    );
    for cache in [false, true] {
        eprintln!("run with the artifact cache {}...", if cache { "on" } else { "off" });
        let measured = run(&v1, &v2, cache)?;
        println!("### Artifact cache {}\n", if cache { "on" } else { "off" });
        println!("{}", table(&measured));
    }
    Ok(())
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One run: a fresh broker and host, the switches, then the ledger read back.
fn run(v1: &Path, v2: &Path, cache: bool) -> anyhow::Result<Vec<Measured>> {
    let cluster = MockCluster::new(1).context("embedded broker")?;
    cluster.create_topic("input", PARTITIONS, 1)?;
    cluster.create_topic("ledger", PARTITIONS, 1)?;
    let brokers = cluster.bootstrap_servers();
    let cache_dir = tempfile::tempdir()?;
    // The token from a file, as an operator keeps it out of the config.
    let token_file = cache_dir.path().join("admin.token");
    std::fs::write(&token_file, TOKEN)?;
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [sandbox]
        cache_dir = {cache_dir}
        [admin]
        listen = "127.0.0.1:0"
        token_file = {token_file:?}
        [[pipeline]]
        name = "bench"
        inputs = ["input"]
        group = "bench"
        component = {component:?}
        batch_size = 100
        max_wait_ms = 5
        output_topics = ["ledger"]
        # With the default fetch wait (500 ms) the embedded broker hands records
        # over in 500 ms bursts, which would hide any pause a swap causes.
        kafka = {{ "fetch.wait.max.ms" = "2" }}
        "#,
        cache_dir = if cache { format!("{:?}", cache_dir.path().display().to_string()) } else { "\"\"".to_owned() },
        component = v1.display().to_string(),
        token_file = token_file.display().to_string(),
    ))?;
    let host = Host::start(&config)?;
    let admin = format!("http://{}", host.admin.as_ref().context("admin server")?.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = std::thread::spawn({
        let (brokers, stop) = (brokers.clone(), stop.clone());
        move || produce(&brokers, &stop)
    });
    let processed =
        || -> u64 { host.pipelines[0].shared.stats.snapshot().partitions.values().map(|p| p.processed).sum() };
    wait("warm-up", || processed() >= 5_000)?;

    let bytes = [std::fs::read(v1)?, std::fs::read(v2)?];
    let mut switches = Vec::new();
    for i in 0..DEPLOYS + ROLLBACKS {
        std::thread::sleep(SETTLE);
        let deploy = i < DEPLOYS;
        let to = if i % 2 == 0 { 1 } else { 0 }; // v2, v1, v2, ...
        let requested = now_micros();
        let answer = if deploy {
            client::call(&admin, "bench", TOKEN, Request::Deploy(&bytes[to]))?
        } else {
            client::call(&admin, "bench", TOKEN, Request::Rollback)?
        }
        .success()?;
        let answered = now_micros();
        let body: serde_json::Value = serde_json::from_str(&answer.body)?;
        let kind = match body["artifact"].as_str() {
            Some("compiled") => "deploy, compiled",
            Some("cache") => "deploy, cache hit",
            _ => "rollback",
        };
        let to_digest =
            if deploy { body["digest"].as_str() } else { body["to"].as_str() }.context("digest")?.to_owned();
        wait("the switch", || host.pipelines[0].shared.stats.snapshot().version == to_digest)?;
        switches.push(Switch {
            kind,
            to_tag: b'1' + to as u8,
            requested,
            answered,
            prepare_ms: body["prepare_ms"].as_f64(),
        });
    }
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::Relaxed);
    stream.join().expect("producer thread")?;
    wait("lag 0", || {
        ferry_host::kafka::offsets::show(&brokers, &Default::default(), "bench", &["input".to_owned()])
            .is_ok_and(|rows| rows.iter().all(|r| r.lag() == 0))
    })?;
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let ledger = ledger::read(&brokers, PARTITIONS)?;
    switches
        .iter()
        .map(|s| {
            let first =
                ledger::first_by(&ledger, s.to_tag, s.requested).context("the new version processed nothing")?;
            let window = first + AFTER_FIRST - s.requested;
            let ms = |us: u64| us as f64 / 1e3;
            Ok(Measured {
                kind: s.kind,
                prepare_ms: s.prepare_ms,
                answer_ms: ms(s.answered - s.requested),
                first_ms: ms(first - s.requested),
                pause_ms: ms(ledger::longest_gap(&ledger, s.requested, first + AFTER_FIRST)),
                baseline_ms: ms(ledger::longest_gap(&ledger, s.requested - window, s.requested)),
            })
        })
        .collect()
}

/// A steady stream to `input` until `stop`.
fn produce(brokers: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create()?;
    let mut n = 0usize;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BURST {
            let key = n.to_string();
            let record = BaseRecord::to("input").partition((n % PARTITIONS as usize) as i32).key(&key).payload(&key);
            send_when_room(&producer, record).map_err(|(error, _)| error).expect("input record queued");
            n += 1;
        }
        // Paced by the clock, not by sleeps adding up.
        let due = started + Duration::from_millis(2 * (n / BURST) as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// Median and max per kind of switch.
fn table(measured: &[Measured]) -> String {
    let mut out = String::from(
        "| switch | n | prepare (compile, checks, self-test) ms | request → answer ms \
         | request → first record on new version ms, median (max) | longest pause ms, median (max) \
         | baseline pause ms, median (max) |\n|---|---|---|---|---|---|---|\n",
    );
    for kind in ["deploy, compiled", "deploy, cache hit", "rollback"] {
        let rows: Vec<&Measured> = measured.iter().filter(|m| m.kind == kind).collect();
        if rows.is_empty() {
            continue;
        }
        let col = |f: &dyn Fn(&Measured) -> f64| {
            let values: Vec<f64> = rows.iter().map(|m| f(m)).collect();
            let max = values.iter().copied().fold(f64::MIN, f64::max);
            (median(values), max)
        };
        let prepare = match rows.iter().filter_map(|m| m.prepare_ms).collect::<Vec<_>>() {
            p if p.is_empty() => "—".to_owned(),
            p => format!("{:.1}", median(p)),
        };
        let (answer, _) = col(&|m| m.answer_ms);
        let (first, first_max) = col(&|m| m.first_ms);
        let (pause, pause_max) = col(&|m| m.pause_ms);
        let (base, base_max) = col(&|m| m.baseline_ms);
        out += &format!(
            "| {kind} | {} | {prepare} | {answer:.1} | {first:.1} ({first_max:.1}) | {pause:.1} ({pause_max:.1}) \
             | {base:.1} ({base_max:.1}) |\n",
            rows.len()
        );
    }
    out
}
