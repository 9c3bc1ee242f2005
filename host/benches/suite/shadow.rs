//! Section 12: what a shadow costs the live version. One pipeline (one worker) over
//! 4 partitions on the embedded broker runs the mirror guest (every record to an
//! output topic, with a header), with and without a shadow that does the same
//! work (`mirror-v2`: the same code, another digest, so every record is compared
//! and found equal: the full cost of a comparison, no skipped batch; the guest's
//! wall-clock `ts` header is ignored, as a pipeline would). Both runs have the same
//! `shadow` section (`max_time_share = 100`: the shadow is never held back), so the
//! only difference is the shadow running. A third run per round compares the guest's
//! clock header too, so every record differs: the cost of a version that is wrong
//! everywhere.
//!
//! Each run reads a fresh topic of [`PER_PARTITION`] records per partition, filled
//! before the host starts. The rate counts from the first batch on which the shadow
//! ran (without one: the first batch) to the last batch. The runs of a round follow
//! each other; rounds are repeated and each round's ratios reported.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::config::Config;
use ferry_host::deploy::{MAX_COMPONENT_BYTES, deploy_shadow};
use ferry_host::host::Host;
use ferry_host::registry::Origin;

use crate::common::{Broker, Shape, median, toml_path, unique};
use crate::e2e::{BATCH_SIZE, Kafka, rate};

pub const PARTITIONS: i32 = 4;
pub const PER_PARTITION: u64 = 25_000;
pub const ROUNDS: usize = 3;
const PATIENCE: Duration = Duration::from_secs(120);

/// One round: the live rate without and with the shadow, and with it when every
/// record differs.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub without: f64,
    pub with: f64,
    pub differing: f64,
    /// Records the shadow compared, and how many of them it skipped.
    pub compared: u64,
    pub skipped: u64,
}

impl Round {
    /// With against without.
    pub fn ratio(&self) -> f64 {
        self.with / self.without
    }
}

/// Runs `ROUNDS` rounds of the live guest `live`, without and with `shadow`.
pub fn run(kafka: &Kafka, live: &Path, shadow: &Path) -> anyhow::Result<Vec<Round>> {
    let broker = Broker::start()?;
    // Every run's outputs: the mirror writes to `ledger`.
    broker.create("ledger", PARTITIONS)?;
    let shadow_bytes = std::fs::read(shadow).context("the shadow guest")?;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let (without, _) = once(&broker, kafka, live, None, true)?;
        let (with, tally) = once(&broker, kafka, live, Some(&shadow_bytes), true)?;
        let (compared, skipped) = tally.context("the shadow's tally")?;
        // The guest's clock header compared too: every record differs.
        let (differing, _) = once(&broker, kafka, live, Some(&shadow_bytes), false)?;
        eprintln!(
            "  round {}: without a shadow {}, with one {} ({:.2}), with one differing everywhere {} ({:.2}); \
             the shadow compared {compared}, skipped {skipped}",
            round + 1,
            rate(without),
            rate(with),
            with / without,
            rate(differing),
            differing / without
        );
        rounds.push(Round { without, with, differing, compared, skipped });
    }
    Ok(rounds)
}

/// One run; the live rate, and with a shadow its records compared and skipped.
fn once(
    broker: &Broker,
    kafka: &Kafka,
    live: &Path,
    shadow: Option<&[u8]>,
    ignore_ts: bool,
) -> anyhow::Result<(f64, Option<(u64, u64)>)> {
    let input = unique("shadow-in");
    broker.fill(&input, PARTITIONS, PER_PARTITION, Shape { value_len: 100 })?;
    let records = PER_PARTITION * PARTITIONS as u64;
    let mut text = crate::e2e::config_head(broker.brokers(), kafka);
    text.push_str(&format!(
        "[[pipeline]]\nname = \"bench-shadow\"\ninputs = [{input:?}]\ngroup = {:?}\ncomponent = {}\n\
         batch_size = {BATCH_SIZE}\nmax_wait_ms = 0\ncommit = {{ policy = \"interval\", interval_ms = 100 }}\n\
         output_topics = [\"ledger\"]\nshadow = {{ max_time_share = 100, ignore_headers = [{}] }}\n",
        unique("group"),
        toml_path(live),
        if ignore_ts { "\"ts\"" } else { "" },
    ));
    let config = Config::parse(&text)?;
    let host = Host::start(&config)?;
    let pipeline = &host.pipelines[0];
    if let Some(bytes) = shadow {
        let pipeline_config: Arc<_> = pipeline.config.clone();
        deploy_shadow(&host.sandbox, &pipeline_config, &pipeline.slot, bytes, MAX_COMPONENT_BYTES, Origin::AdminApi)
            .context("the shadow deploys")?;
    }
    let started = Instant::now();
    // The window opens at the first batch the shadow ran (without one: the first batch).
    let mut window: Option<(Instant, u64)> = None;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        if window.is_none() {
            let opened = match shadow {
                Some(_) => pipeline.slot.shadow_view().is_some_and(|v| v.tally.compared + v.tally.skipped > 0),
                None => pipeline.processed_total() > 0,
            };
            if opened {
                window = Some((Instant::now(), pipeline.processed_total()));
            }
        }
        let committed: i64 = pipeline.snapshot().partitions.values().filter_map(|p| p.committed).sum();
        if committed >= records as i64 {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("committed only {committed} of {records} records");
        }
    }
    let last = pipeline.timeline().last_batch.context("no batch")?;
    let tally = pipeline.slot.shadow_view().map(|v| (v.tally.compared, v.tally.skipped));
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    let (from, processed_then) = window.context("no batch ran")?;
    if processed_then >= records || last <= from {
        bail!("the run ended before the window opened");
    }
    Ok(((records - processed_then) as f64 / (last - from).as_secs_f64(), tally))
}

/// The rounds as a markdown table, and the ratios' median and range.
pub fn table(rounds: &[Round]) -> String {
    let mut out = String::from(
        "| round | live rate without a shadow | with a shadow | with / without | records the shadow compared | \
         skipped | with a shadow differing on every record | with / without |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, r) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {:.2} |\n",
            i + 1,
            rate(r.without),
            rate(r.with),
            r.ratio(),
            r.compared,
            r.skipped,
            rate(r.differing),
            r.differing / r.without
        ));
    }
    for (what, pick) in [
        ("With a shadow (every record equal)", Round::ratio as fn(&Round) -> f64),
        ("With a shadow differing on every record", |r: &Round| r.differing / r.without),
    ] {
        let mut ratios: Vec<f64> = rounds.iter().map(pick).collect();
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.push_str(&format!(
            "\n{what} against without: median **{:.2}**, range {min:.2}–{max:.2} over {} rounds.\n",
            median(&mut ratios),
            rounds.len()
        ));
    }
    out
}
