//! Section 6: exactly-once against at-least-once, in one run on the embedded broker.
//!
//! The forward guest writes one output per record to a topic of its own; each run
//! reads 1,000,000 records of 100 B from 4 partitions, with a fresh group and output
//! topic: a few seconds of steady work, so that a partition's start (a transactional
//! producer's initialisation, reported on its own as the first batch's delay) is a
//! small part of the rate, as it is for a host that runs for hours. Times come from ferry's own stats, from the group's assignment: the last
//! record processed, and the last offset committed (the embedded broker takes
//! transactional offset commits but does not keep them, so the broker cannot be asked;
//! ferry counts a commit only once the broker answered it). Rounds are interleaved,
//! medians reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::config::Config;
use ferry_host::host::Host;

use crate::common::{Broker, Shape, median, toml_path, unique};
use crate::e2e::{BATCH_SIZE, Kafka, rate};

const PARTITIONS: i32 = 4;
pub const PER_PARTITION: u64 = 250_000;
pub const ROUNDS: usize = 5;
const PATIENCE: Duration = Duration::from_secs(180);

/// The exactly-once target: at a 100 ms interval, this share of at-least-once's rate.
pub const TARGET_SHARE: f64 = 0.7;

/// A delivery mode and commit interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Exactly-once (else at-least-once).
    pub exactly_once: bool,
    /// The commit interval.
    pub interval_ms: u64,
    /// The counter with keyed state (a get, a put and a changelog record per record,
    /// in the partition's transaction) instead of the forward guest.
    pub stateful: bool,
}

impl Mode {
    fn label(self) -> String {
        let delivery = if self.exactly_once { "exactly-once" } else { "at-least-once" };
        let state = if self.stateful { ", keyed state" } else { "" };
        format!("{delivery}, every {} ms{state}", self.interval_ms)
    }
}

/// The modes of one run, the at-least-once baseline first.
pub const MODES: [Mode; 5] = [
    Mode { exactly_once: false, interval_ms: 100, stateful: false },
    Mode { exactly_once: true, interval_ms: 10, stateful: false },
    Mode { exactly_once: true, interval_ms: 100, stateful: false },
    Mode { exactly_once: true, interval_ms: 1000, stateful: false },
    Mode { exactly_once: true, interval_ms: 100, stateful: true },
];

/// One mode's medians.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: Mode,
    /// Records per second to the last record processed.
    pub processed: f64,
    /// Records per second to the last offset committed.
    pub committed: f64,
    /// From the last record processed to its offset committed, ms.
    pub tail_ms: f64,
    /// Mean time of one partition's transaction commit (offsets and commit), ms.
    pub commit_ms: Option<f64>,
    /// Transactions committed in the run.
    pub transactions: Option<f64>,
    /// From the assignment to the first batch processed, ms: the partitions' start.
    pub first_batch_ms: f64,
    /// The slowest start of any round, ms.
    pub slowest_first_batch_ms: f64,
    /// Records per second to the last offset committed, each round.
    pub rounds: Vec<f64>,
    /// Records per second from the first batch to the last offset committed (the
    /// rate once started), each round.
    pub started_rounds: Vec<f64>,
}

struct Sample {
    processed: f64,
    committed: f64,
    tail_ms: f64,
    commit_ms: Option<f64>,
    transactions: Option<f64>,
    first_batch_ms: f64,
    /// Records after the first batch per second, to the last offset committed.
    started: f64,
}

/// Runs every mode `ROUNDS` times, interleaved.
pub fn run(kafka: &Kafka, forward: &Path, counter: &Path) -> anyhow::Result<Vec<Row>> {
    let broker = Broker::start()?;
    let mut samples: Vec<Vec<Sample>> = MODES.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (mode, out) in MODES.iter().zip(&mut samples) {
            let component = if mode.stateful { counter } else { forward };
            let sample = once(&broker, kafka, component, *mode)?;
            eprintln!(
                "  round {}: {}: {} processed, {} committed, tail {:.0} ms, first batch after {:.0} ms",
                round + 1,
                mode.label(),
                rate(sample.processed),
                rate(sample.committed),
                sample.tail_ms,
                sample.first_batch_ms
            );
            out.push(sample);
        }
    }
    Ok(MODES
        .iter()
        .zip(samples)
        .map(|(mode, s)| {
            let pick = |f: fn(&Sample) -> f64| median(&mut s.iter().map(f).collect::<Vec<_>>());
            let pick_some =
                |f: fn(&Sample) -> Option<f64>| s.iter().map(f).collect::<Option<Vec<_>>>().map(|mut v| median(&mut v));
            Row {
                mode: *mode,
                processed: pick(|s| s.processed),
                committed: pick(|s| s.committed),
                tail_ms: pick(|s| s.tail_ms),
                commit_ms: pick_some(|s| s.commit_ms),
                transactions: pick_some(|s| s.transactions),
                first_batch_ms: pick(|s| s.first_batch_ms),
                slowest_first_batch_ms: s.iter().map(|s| s.first_batch_ms).fold(0.0, f64::max),
                rounds: s.iter().map(|s| s.committed).collect(),
                started_rounds: s.iter().map(|s| s.started).collect(),
            }
        })
        .collect())
}

/// One run of `component`: the forward guest (setting `to`), or the counter (setting
/// `output_topic`, a changelog of its own) when `mode` is stateful.
fn once(broker: &Broker, kafka: &Kafka, component: &Path, mode: Mode) -> anyhow::Result<Sample> {
    let (input, output) = (unique("eos-in"), unique("eos-out"));
    broker.fill(&input, PARTITIONS, PER_PARTITION, Shape { value_len: 100 })?;
    broker.create(&output, 1)?;
    // The changelog, made here: this mock cluster does not answer the admin API's
    // CreateTopics, with which a host makes a missing one.
    let changelog = unique("eos-state");
    if mode.stateful {
        broker.create(&changelog, PARTITIONS)?;
    }
    let records = PER_PARTITION * PARTITIONS as u64;
    let mut text = crate::e2e::config_head(broker.brokers(), kafka);
    text.push_str(&format!(
        "[[pipeline]]\nname = \"bench-eos\"\ninputs = [{input:?}]\ngroup = {:?}\ncomponent = {}\n\
         batch_size = {BATCH_SIZE}\nmax_wait_ms = 0\noutput_topics = [{output:?}]\nsettings = {{ {} = {output:?} }}\n\
         commit = {{ policy = \"interval\", interval_ms = {} }}\n{}{}",
        unique("group"),
        toml_path(component),
        if mode.stateful { "output_topic" } else { "to" },
        mode.interval_ms,
        if mode.exactly_once { "delivery = \"exactly-once\"\n" } else { "" },
        if mode.stateful { format!("[pipeline.state]\nchangelog_topic = {changelog:?}\n") } else { String::new() }
    ));
    let host = Host::start(&Config::parse(&text)?)?;
    let stats = &host.pipelines[0].shared.stats;
    let started = Instant::now();
    let committed_at = loop {
        std::thread::sleep(Duration::from_millis(1));
        let committed: i64 = stats.snapshot().partitions.values().filter_map(|p| p.committed).sum();
        if committed >= records as i64 {
            break Instant::now();
        }
        if started.elapsed() > PATIENCE {
            bail!("{}: committed only {committed} of {records} records", mode.label());
        }
    };
    let timeline = stats.timeline();
    let assigned = timeline.first_assignment.context("never assigned")?;
    let processed_at = timeline.last_batch.context("no batch")?;
    let snapshot = stats.snapshot();
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    let n = snapshot.transactions_committed;
    Ok(Sample {
        processed: records as f64 / (processed_at - assigned).as_secs_f64(),
        committed: records as f64 / (committed_at - assigned).as_secs_f64(),
        tail_ms: committed_at.saturating_duration_since(processed_at).as_secs_f64() * 1e3,
        first_batch_ms: timeline.first_batch.map_or(f64::NAN, |(at, _)| (at - assigned).as_secs_f64() * 1e3),
        started: timeline.first_batch.map_or(f64::NAN, |(at, first)| {
            (records - first) as f64 / committed_at.saturating_duration_since(at).as_secs_f64()
        }),
        commit_ms: (n > 0).then(|| snapshot.transaction_commit_us as f64 / n as f64 / 1e3),
        transactions: mode.exactly_once.then_some(n as f64),
    })
}

/// The rows as a markdown table, each mode's rate also as a share of at-least-once's.
pub fn table(rows: &[Row]) -> String {
    let base = rows[0].committed;
    let mut out = String::from(
        "| mode | processed | committed | share of at-least-once (committed) | commit tail | transactions | \
         mean commit | first batch after (median, slowest) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} ms | {} | {} | {:.0} ms, {:.0} ms |\n",
            row.mode.label(),
            rate(row.processed),
            rate(row.committed),
            row.committed / base,
            row.tail_ms,
            row.transactions.map_or("–".to_owned(), |t| format!("{t:.0}")),
            row.commit_ms.map_or("–".to_owned(), |ms| format!("{ms:.1} ms")),
            row.first_batch_ms,
            row.slowest_first_batch_ms,
        ));
    }
    out
}

/// The per-round shares of exactly-once at 100 ms against at-least-once of the
/// same round (the target holds only if every round meets it): from the assignment,
/// and once started (from each run's first batch).
pub fn round_shares(rows: &[Row]) -> (Vec<f64>, Vec<f64>) {
    let (Some(base), Some(eos)) = (rows.first(), rows.iter().find(|r| r.mode == MODES[2])) else {
        return (Vec::new(), Vec::new());
    };
    let shares = |b: &[f64], e: &[f64]| b.iter().zip(e).map(|(b, e)| e / b).collect();
    (shares(&base.rounds, &eos.rounds), shares(&base.started_rounds, &eos.started_rounds))
}

/// The per-round shares of exactly-once at 100 ms with keyed state (the counter)
/// against without it (the forward guest), from the assignment.
pub fn state_shares(rows: &[Row]) -> Vec<f64> {
    let find = |mode: Mode| rows.iter().find(|r| r.mode == mode);
    let (Some(plain), Some(stateful)) = (find(MODES[2]), find(MODES[4])) else { return Vec::new() };
    plain.rounds.iter().zip(&stateful.rounds).map(|(p, s)| s / p).collect()
}

/// What a host pays for the partitions of an exactly-once pipeline (a
/// transactional producer each) against an at-least-once one (one shared
/// producer), at one partition count.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub partitions: i32,
    pub exactly_once: bool,
    /// From the start to every partition's first records committed, s.
    pub ready_s: f64,
    /// Threads of the process while it runs, above the bench's own.
    pub threads: u64,
    /// Resident memory while it runs, above the bench's own, MiB.
    pub rss_mib: f64,
    /// Open sockets while it runs, above the bench's own.
    pub sockets: usize,
    /// From the shutdown request to the host stopped, s.
    pub shutdown_s: f64,
}

/// Partition counts the footprint is measured at.
pub const FOOTPRINT_PARTITIONS: [i32; 3] = [16, 64, 256];

fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

/// One host, one pipeline over `partitions` partitions with 20 records each, on the
/// embedded broker: how long until everything is committed, and what it holds
/// meanwhile.
pub fn footprint(kafka: &Kafka, forward: &Path, partitions: i32, exactly_once: bool) -> anyhow::Result<Footprint> {
    let broker = Broker::start()?;
    let (input, output) = (unique("fp-in"), unique("fp-out"));
    const PER_PARTITION: u64 = 20;
    broker.fill(&input, partitions, PER_PARTITION, Shape { value_len: 100 })?;
    broker.create(&output, 1)?;
    let records = PER_PARTITION as i64 * i64::from(partitions);
    let mut text = crate::e2e::config_head(broker.brokers(), kafka);
    text.push_str(&format!(
        "[[pipeline]]\nname = \"bench-footprint\"\ninputs = [{input:?}]\ngroup = {:?}\ncomponent = {}\n\
         batch_size = 100\nmax_wait_ms = 0\noutput_topics = [{output:?}]\nsettings = {{ to = {output:?} }}\n\
         commit = {{ policy = \"interval\", interval_ms = 100 }}\n{}",
        unique("group"),
        toml_path(forward),
        if exactly_once { "delivery = \"exactly-once\"\n" } else { "" }
    ));
    let (threads_before, rss_before, sockets_before) =
        (crate::common::proc_status("Threads"), crate::common::proc_status("VmRSS"), sockets());
    let started = Instant::now();
    let host = Host::start(&Config::parse(&text)?)?;
    let stats = &host.pipelines[0].shared.stats;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let committed: i64 = stats.snapshot().partitions.values().filter_map(|p| p.committed).sum();
        if committed >= records {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("{partitions} partitions: committed only {committed} of {records} records");
        }
    }
    let ready_s = started.elapsed().as_secs_f64();
    let threads = crate::common::proc_status("Threads").saturating_sub(threads_before);
    let rss_mib = crate::common::proc_status("VmRSS").saturating_sub(rss_before) as f64 / 1024.0;
    let sockets = sockets().saturating_sub(sockets_before);
    let stopping = Instant::now();
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    Ok(Footprint {
        partitions,
        exactly_once,
        ready_s,
        threads,
        rss_mib,
        sockets,
        shutdown_s: stopping.elapsed().as_secs_f64(),
    })
}

/// The footprints as a markdown table.
pub fn footprint_table(rows: &[Footprint]) -> String {
    let mut out = String::from(
        "| partitions | delivery | all committed after | threads | resident memory | sockets | shutdown |\n\
         |---:|---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} s | {} | {:.0} MiB | {} | {:.1} s |\n",
            row.partitions,
            if row.exactly_once { "exactly-once" } else { "at-least-once" },
            row.ready_s,
            row.threads,
            row.rss_mib,
            row.sockets,
            row.shutdown_s
        ));
    }
    out
}
