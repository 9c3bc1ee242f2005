//! Section 8: `workers = N`. One pipeline over 8 partitions with 1 and 2
//! workers, in one run on the embedded broker: a CPU-heavy guest (about 5 µs of
//! computation per record), where the guest is the work and a second worker should
//! nearly double the rate on two cores, and the passthrough guest, where the guest
//! costs little and librdkafka's own threads (fetching, decompressing, the broker)
//! take the cores.
//!
//! Each run reads a fresh topic with a fresh group (on a broker with Kafka's default
//! 3 s initial rebalance delay, see [`run`]); rates come from ferry's own stats:
//! from the group's first assignment to the last batch, and "once flowing", from the
//! moment every worker owns partitions (the start-up rebalance between the workers
//! left out). Rounds are interleaved; every round's ratio is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_host::pipeline::Pipeline;

use crate::common::{Broker, Shape, median, toml_path, unique};
use crate::e2e::{BATCH_SIZE, Kafka, rate};

pub const PARTITIONS: i32 = 8;
pub const PER_PARTITION: u64 = 25_000;
const ROUNDS: usize = 3;
/// Kafka's default `group.initial.rebalance.delay.ms`.
const INITIAL_REBALANCE_DELAY_MS: i32 = 3000;
const PATIENCE: Duration = Duration::from_secs(300);

/// The target: two workers on the CPU-heavy guest, this many times one worker's rate.
pub const TARGET_SPEEDUP: f64 = 1.7;

/// A guest and a worker count.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    /// The guest's name in the table.
    pub guest: &'static str,
    /// Its component.
    pub component: &'a Path,
    /// `workers`.
    pub workers: usize,
}

/// One run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Records per second, from the first assignment to the last batch.
    pub from_assignment: f64,
    /// Records per second once every worker owned partitions.
    pub flowing: f64,
    /// Batch time per record (guest and settling), µs: the work each record costs.
    pub batch_us_per_record: f64,
}

/// Every case's samples, one per round, in round order.
pub struct Figures<'a> {
    pub cases: Vec<(Case<'a>, Vec<Sample>)>,
}

/// Runs every case `ROUNDS` times, interleaved.
pub fn run<'a>(kafka: &Kafka, cases: &[Case<'a>]) -> anyhow::Result<Figures<'a>> {
    // Kafka's default initial rebalance delay, so that a pipeline's workers, which
    // join within milliseconds of each other, share the group's first assignment as
    // they do on a real broker. Without it the embedded broker assigns everything to
    // the first worker, then rebalances for seconds (and refuses the revoke's commit,
    // so what it did is done again): start-up, not throughput. Rates count from the
    // first assignment, so the delay itself is not in them.
    let broker = Broker::with_initial_rebalance_delay(INITIAL_REBALANCE_DELAY_MS)?;
    let mut out: Vec<(Case<'a>, Vec<Sample>)> = cases.iter().map(|c| (*c, Vec::new())).collect();
    for round in 0..ROUNDS {
        for (case, samples) in &mut out {
            let sample = once(&broker, kafka, *case)?;
            eprintln!(
                "  round {}: {} with {} worker(s): {} from assignment, {} once flowing, {:.2} µs of batch per record",
                round + 1,
                case.guest,
                case.workers,
                rate(sample.from_assignment),
                rate(sample.flowing),
                sample.batch_us_per_record
            );
            samples.push(sample);
        }
    }
    Ok(Figures { cases: out })
}

/// Whether every worker of `pipeline` owns partitions.
fn all_own_partitions(pipeline: &Pipeline) -> bool {
    pipeline.workers.iter().all(|w| w.stats.snapshot().partitions.values().any(|p| p.assigned))
}

fn once(broker: &Broker, kafka: &Kafka, case: Case<'_>) -> anyhow::Result<Sample> {
    let input = unique("workers-in");
    broker.fill(&input, PARTITIONS, PER_PARTITION, Shape { value_len: 100 })?;
    let records = PER_PARTITION * PARTITIONS as u64;
    let mut text = crate::e2e::config_head(broker.brokers(), kafka);
    text.push_str(&format!(
        "[[pipeline]]\nname = \"bench-workers\"\ninputs = [{input:?}]\ngroup = {:?}\ncomponent = {}\n\
         batch_size = {BATCH_SIZE}\nmax_wait_ms = 0\nworkers = {}\ncommit = {{ policy = \"interval\", interval_ms = 100 }}\n",
        unique("group"),
        toml_path(case.component),
        case.workers,
    ));
    let host = Host::start(&Config::parse(&text)?)?;
    let pipeline = &host.pipelines[0];
    let started = Instant::now();
    let mut flowing_from: Option<(Instant, u64)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        if flowing_from.is_none() && all_own_partitions(pipeline) {
            flowing_from = Some((Instant::now(), pipeline.processed_total()));
        }
        let committed: i64 = pipeline.snapshot().partitions.values().filter_map(|p| p.committed).sum();
        if committed >= records as i64 {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("{} with {} workers: committed only {committed} of {records} records", case.guest, case.workers);
        }
    }
    let timeline = pipeline.timeline();
    let assigned = timeline.first_assignment.context("never assigned")?;
    let last = timeline.last_batch.context("no batch")?;
    let snapshot = pipeline.snapshot();
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    let (flowing_at, processed_then) = flowing_from.context("the workers never all owned partitions")?;
    let flowing = if processed_then < records && last > flowing_at {
        (records - processed_then) as f64 / (last - flowing_at).as_secs_f64()
    } else {
        f64::NAN
    };
    Ok(Sample {
        from_assignment: records as f64 / (last - assigned).as_secs_f64(),
        flowing,
        batch_us_per_record: snapshot.latency_sum_us as f64 / records as f64,
    })
}

impl Figures<'_> {
    /// Each round's ratio of two workers' rate to one worker's, for `guest`.
    pub fn speedups(&self, guest: &str, pick: fn(&Sample) -> f64) -> Vec<f64> {
        let of =
            |workers: usize| self.cases.iter().find(|(c, _)| c.guest == guest && c.workers == workers).map(|(_, s)| s);
        match (of(1), of(2)) {
            (Some(one), Some(two)) => one.iter().zip(two).map(|(a, b)| pick(b) / pick(a)).collect(),
            _ => Vec::new(),
        }
    }

    /// The figures as a markdown table: medians and every round's value.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| guest | workers | from assignment (median) | rounds | once flowing (median) | rounds | batch time per \
             record |\n|---|---:|---:|---|---:|---|---:|\n",
        );
        let list = |samples: &[Sample], pick: fn(&Sample) -> f64| {
            samples.iter().map(|s| rate(pick(s))).collect::<Vec<_>>().join(", ")
        };
        for (case, samples) in &self.cases {
            let med = |pick: fn(&Sample) -> f64| median(&mut samples.iter().map(pick).collect::<Vec<_>>());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.2} µs |\n",
                case.guest,
                case.workers,
                rate(med(|s| s.from_assignment)),
                list(samples, |s| s.from_assignment),
                rate(med(|s| s.flowing)),
                list(samples, |s| s.flowing),
                med(|s| s.batch_us_per_record),
            ));
        }
        out
    }
}

/// `a–b (x, y, z)` of per-round ratios.
pub fn ratios(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let each: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    format!("{min:.2}–{max:.2} ({})", each.join(", "))
}
