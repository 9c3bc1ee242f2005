//! Section 8: instructions executed per record by the consuming thread, counted by
//! valgrind's callgrind: ferry's pipeline thread against the bare rdkafka loop, on
//! the same pre-filled topics of the embedded broker. Unlike wall-clock rates, an
//! instruction count does not move with whatever else the machine is doing.
//!
//! Each measurement is a child process of this bench (`child-instructions`) run
//! under `valgrind --tool=callgrind --separate-threads=yes`, which writes one
//! profile per thread. The broker stays in this (parent) process, natively, so
//! valgrind slows only the consumer's side. The consuming thread's whole life is
//! counted (client creation, group join, instantiation, shutdown included) once on
//! a topic of `SMALL` records and once on a topic of `LARGE` records; the difference
//! over `LARGE - SMALL` cancels those fixed costs and leaves the cost per record.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use ferry_host::host::Host;

use crate::common::{Broker, Shape, unique};
use crate::e2e::{self, Setup, Topic};

/// Records of the short and the long run of each case (in 4 partitions; the
/// embedded broker keeps about 31,000 records of this size per partition).
pub const SMALL: u64 = 20_000;
pub const LARGE: u64 = 120_000;
const PARTITIONS: i32 = 4;
/// (short, long) pairs per case in a run; a run reports the median difference.
/// glibc's allocator takes a slightly different path from run to run (its state
/// depends on how the threads interleaved), which moves one pair by up to ~3 % for
/// the bare loop reading headers (~1 % for the others).
pub const PAIRS: usize = 5;

/// Targets: ferry's pipeline thread over the bare loop's consuming thread, for a
/// guest that does not read headers (against the plain loop) and one that does
/// (against the loop that reads headers).
pub const TARGET_NO_HEADERS: f64 = 1.1;
pub const TARGET_HEADERS: f64 = 1.0;

/// Name of the bare loop's thread in the child.
const BARE_THREAD: &str = "bare-loop";

/// What a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// The bare rdkafka poll loop.
    Bare,
    /// The bare loop, also reading every record's headers.
    BareHeaders,
    /// ferry with the passthrough guest (does not import `headers`).
    Passthrough,
    /// ferry with a passthrough that reads every record's headers.
    ReadHeaders,
}

impl Case {
    pub const ALL: [Case; 4] = [Case::Bare, Case::BareHeaders, Case::Passthrough, Case::ReadHeaders];

    fn arg(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::BareHeaders => "bare-headers",
            Case::Passthrough => "passthrough",
            Case::ReadHeaders => "read-headers",
        }
    }

    fn from_arg(arg: &str) -> anyhow::Result<Self> {
        Self::ALL.into_iter().find(|c| c.arg() == arg).with_context(|| format!("unknown case {arg:?}"))
    }

    pub fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare rdkafka loop (consuming thread)",
            Case::BareHeaders => "bare loop reading headers (consuming thread)",
            Case::Passthrough => "ferry, passthrough guest (pipeline thread)",
            Case::ReadHeaders => "ferry, guest reading headers (pipeline thread)",
        }
    }

    fn is_ferry(self) -> bool {
        matches!(self, Case::Passthrough | Case::ReadHeaders)
    }

    /// A function only the measured thread runs: it picks that thread's profile.
    fn marker(self) -> &'static str {
        if self.is_ferry() { "pipeline::worker::Worker" } else { "e2e::bare" }
    }
}

/// Instructions per record of each case, in each run (NaN when not measured).
#[derive(Debug, Clone)]
pub struct Figures {
    /// `runs[i][case]`: run `i`, cases in [`Case::ALL`] order.
    pub runs: Vec<[f64; 4]>,
}

/// Measures every case `runs` times (interleaved), each as (LARGE - SMALL).
pub fn run(passthrough: &Path, read_headers: &Path, runs: usize) -> anyhow::Result<Figures> {
    ensure!(
        valgrind_installed(),
        "valgrind is not installed (the instructions section runs the consumers under callgrind)"
    );
    let broker = Broker::start()?;
    let topics =
        [SMALL, LARGE].map(|records| Topic { name: unique(&format!("instr-{records}")), partitions: PARTITIONS });
    for (topic, records) in topics.iter().zip([SMALL, LARGE]) {
        broker.fill(&topic.name, PARTITIONS, records / PARTITIONS as u64, Shape { value_len: 100 })?;
    }
    let work = std::env::temp_dir().join(unique("ferry-instructions"));
    std::fs::create_dir_all(&work)?;
    let cache = work.join("cache");
    let component = |case: Case| if case == Case::ReadHeaders { read_headers } else { passthrough };
    // Native runs first: they fill the compile cache, so the runs under valgrind load
    // the compiled components instead of compiling them.
    for case in [Case::Passthrough, Case::ReadHeaders] {
        let status = child_command(case, &topics[0], SMALL, broker.brokers(), component(case), &cache)
            .status()
            .context("failed to run the bench child")?;
        ensure!(status.success(), "the native warm-up of {case:?} failed");
    }
    // Every run's profile of the measured thread, for `callgrind_annotate`.
    let kept = profiles_dir();
    std::fs::create_dir_all(&kept)?;
    let only = std::env::var("FERRY_BENCH_INSTRUCTIONS_CASES").unwrap_or_default();
    let mut figures = Figures { runs: Vec::new() };
    for round in 0..runs {
        let mut row = [f64::NAN; 4];
        for (i, case) in Case::ALL.into_iter().enumerate() {
            if !only.is_empty() && !only.split(',').any(|c| c == case.arg()) {
                continue;
            }
            let mut samples = Vec::new();
            for pair in 0..PAIRS {
                let mut counts = [0u64; 2];
                for (count, (topic, records)) in counts.iter_mut().zip(topics.iter().zip([SMALL, LARGE])) {
                    let started = Instant::now();
                    let profile =
                        kept.join(format!("{}-{records}-round{}-{}.callgrind", case.arg(), round + 1, pair + 1));
                    *count = measure(case, topic, records, broker.brokers(), component(case), &cache, &work, &profile)?;
                    eprintln!(
                        "  round {} pair {}: {} with {records} records: {count} instructions on the consuming thread \
                         ({:.0} s)",
                        round + 1,
                        pair + 1,
                        case.arg(),
                        started.elapsed().as_secs_f64()
                    );
                }
                samples.push(counts[1].saturating_sub(counts[0]) as f64 / (LARGE - SMALL) as f64);
            }
            row[i] = crate::common::median(&mut samples);
        }
        figures.runs.push(row);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(figures)
}

/// Runs `case` on `records` records of `topic` under callgrind; keeps the measured
/// thread's profile at `keep`.
#[allow(clippy::too_many_arguments)]
fn measure(
    case: Case,
    topic: &Topic,
    records: u64,
    brokers: &str,
    component: &Path,
    cache: &Path,
    work: &Path,
    keep: &Path,
) -> anyhow::Result<u64> {
    let out = work.join(unique("cg"));
    std::fs::create_dir_all(&out)?;
    let mut command = Command::new("valgrind");
    command.args([
        "--tool=callgrind",
        "--separate-threads=yes",
        "--dump-instr=no",
        "--quiet",
        &format!("--callgrind-out-file={}", out.join("cg").display()),
    ]);
    let child = child_command(case, topic, records, brokers, component, cache);
    command.arg(child.get_program()).args(child.get_args());
    let status = command.status().context("failed to run valgrind")?;
    ensure!(status.success(), "the callgrind run of {case:?} ({records} records) failed");
    let (profile, all) = thread_profile(&out, case.marker())?;
    std::fs::copy(&profile, keep)?;
    std::fs::remove_dir_all(&out)?;
    Ok(all)
}

/// Whether `valgrind` runs.
pub fn valgrind_installed() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn child_command(case: Case, topic: &Topic, records: u64, brokers: &str, component: &Path, cache: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the bench's own path"));
    command.args([
        "child-instructions",
        case.arg(),
        &records.to_string(),
        brokers,
        &topic.name,
        &topic.partitions.to_string(),
        &component.display().to_string(),
        &cache.display().to_string(),
    ]);
    command
}

/// Where the profiles of the measured threads are kept: `target/callgrind/`.
pub fn profiles_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    // target/release/deps/suite-<hash>
    exe.ancestors().nth(3).map_or_else(|| PathBuf::from("callgrind"), |target| target.join("callgrind"))
}

/// The profile and instruction count of the thread whose profile mentions `marker`
/// (callgrind writes one file per thread, `cg-NN`; its `totals:` line counts `Ir`).
fn thread_profile(dir: &Path, marker: &str) -> anyhow::Result<(PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
        if !text.contains(marker) {
            continue;
        }
        let total = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("no totals in {}", path.display()))?;
        found.push((path, total));
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no thread profile in {} mentions {marker}", dir.display()),
        _ => bail!("{} thread profiles in {} mention {marker}", found.len(), dir.display()),
    }
}

/// The child: consumes `records` records of `topic` as `case` says, then exits.
pub fn child(args: &[String]) -> anyhow::Result<()> {
    let [case, records, brokers, topic, partitions, component, cache] = args else {
        bail!("child-instructions CASE RECORDS BROKERS TOPIC PARTITIONS COMPONENT CACHE-DIR")
    };
    let case = Case::from_arg(case)?;
    let records: u64 = records.parse()?;
    let topic = Topic { name: topic.clone(), partitions: partitions.parse()? };
    let kafka = e2e::kafka_from_env();
    if !case.is_ferry() {
        let headers = case == Case::BareHeaders;
        let run = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(BARE_THREAD.into())
                .spawn_scoped(scope, || e2e::bare(brokers, &kafka, std::slice::from_ref(&topic), records, headers))
                .expect("spawn the bare loop")
                .join()
                .expect("the bare loop panicked")
        })?;
        ensure!(run.records == records, "the bare loop read {} of {records} records", run.records);
        return Ok(());
    }
    let (mut config, _) = e2e::config(brokers, &kafka, Path::new(component), &[vec![topic]], Setup::PerBatch)?;
    config.sandbox.cache_dir = Some(PathBuf::from(cache));
    // Under valgrind the address space is bounded: a small pool of instance slots
    // (wasmtime reserves several GiB of address space per memory).
    config.sandbox.max_instances = 2;
    let host = Host::start(&config)?;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let processed: u64 = host.pipelines.iter().map(|p| p.shared.stats.processed_total()).sum();
        if processed >= records {
            ensure!(processed == records, "ferry processed {processed} records of a topic of {records}");
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("ferry processed only {processed} of {records} records");
        }
    }
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    Ok(())
}

/// The figures as a table: every run, and the spread between runs.
pub fn table(figures: &Figures) -> String {
    let mut out = String::from("| consuming thread | ");
    for i in 0..figures.runs.len() {
        out.push_str(&format!("run {} | ", i + 1));
    }
    out.push_str("spread |\n|---|");
    out.push_str(&"---:|".repeat(figures.runs.len() + 1));
    out.push('\n');
    for (i, case) in Case::ALL.into_iter().enumerate() {
        let values: Vec<f64> = figures.runs.iter().map(|r| r[i]).collect();
        out.push_str(&format!("| {} | ", case.label()));
        for v in &values {
            out.push_str(&format!("{v:.0} | "));
        }
        out.push_str(&format!("{:.2} % |\n", spread(&values)));
    }
    out
}

/// (max - min) / min, in percent.
pub fn spread(values: &[f64]) -> f64 {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    (max - min) / min * 100.0
}

/// Ratios of each run: (passthrough / bare, read-headers / bare-headers).
pub fn ratios(figures: &Figures) -> Vec<(f64, f64)> {
    figures.runs.iter().map(|r| (r[2] / r[0], r[3] / r[1])).collect()
}
