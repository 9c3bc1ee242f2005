//! Section 4: resident memory of idle pipelines. Each measurement runs in a child
//! process of its own (this binary, re-executed) so one does not inherit the
//! other's heap.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::host::Host;

use crate::common::{Broker, Shape, proc_status, unique};
use crate::e2e::{self, Topic};

/// Records written to each pipeline's topic once it has joined.
const RECORDS: u64 = 10;

/// What one child measured, in KiB (threads as a count).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub pipelines: usize,
    pub before: u64,
    pub joined: u64,
    pub live: u64,
    pub threads_before: u64,
    pub threads_live: u64,
}

impl Sample {
    /// Growth from before the host started to idle with a live guest instance.
    pub fn growth(&self) -> u64 {
        self.live.saturating_sub(self.before)
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > Duration::from_secs(180) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The child's side: a host with `count` passthrough pipelines, each on a topic of
/// its own; prints one `MEMORY` line.
pub fn child(count: usize, component: &Path) -> anyhow::Result<()> {
    let broker = Broker::start()?;
    let shape = Shape { value_len: 100 };
    let prefix = unique("mem");
    let topics: Vec<Topic> = (0..count).map(|i| Topic { name: format!("{prefix}-{i}"), partitions: 1 }).collect();
    for topic in &topics {
        broker.create(&topic.name, 1)?;
    }
    let pipelines: Vec<(Vec<Topic>, u64)> = topics.iter().map(|t| (vec![t.clone()], RECORDS)).collect();
    let (config, _) = e2e::config(
        broker.brokers(),
        &e2e::kafka_from_env(),
        component,
        &pipelines.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
        e2e::Setup::PerBatch,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let (before, threads_before) = (proc_status("VmRSS"), proc_status("Threads"));

    let host = Host::start(&config)?;
    wait("every pipeline to join", || host.pipelines.iter().all(|p| p.shared.stats.liveness().snapshot().joined))?;
    std::thread::sleep(Duration::from_secs(1));
    let joined = proc_status("VmRSS");

    for topic in &topics {
        broker.produce(&topic.name, 1, RECORDS, shape)?;
    }
    broker.flush()?;
    wait("every pipeline to commit its records", || {
        host.pipelines.iter().all(|p| {
            p.shared.stats.snapshot().partitions.values().map(|s| s.committed.unwrap_or(0)).sum::<i64>()
                >= RECORDS as i64
        })
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let (live, threads_live) = (proc_status("VmRSS"), proc_status("Threads"));
    println!("MEMORY {count} {before} {joined} {live} {threads_before} {threads_live}");
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    Ok(())
}

/// The parent's side: runs a child for `count` pipelines and reads its line.
pub fn measure(count: usize, component: &Path) -> anyhow::Result<Sample> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(["child-memory", &count.to_string()])
        .arg(component)
        .stderr(Stdio::inherit())
        .output()
        .context("failed to run the memory child")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("MEMORY "))
        .with_context(|| format!("the memory child printed no result ({})", output.status))?;
    let n: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    let [pipelines, before, joined, live, threads_before, threads_live] = n[..] else {
        bail!("bad memory line {line:?}")
    };
    Ok(Sample { pipelines: pipelines as usize, before, joined, live, threads_before, threads_live })
}

/// The markdown table of the samples (the first one is the single pipeline).
pub fn table(samples: &[Sample]) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut out = String::from(
        "| pipelines in one host | RSS before start | RSS joined, idle | RSS idle after a batch | growth | growth per pipeline | threads |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in samples {
        out.push_str(&format!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} MiB | {} → {} |\n",
            s.pipelines,
            mib(s.before),
            mib(s.joined),
            mib(s.live),
            mib(s.growth()),
            mib(s.growth()) / s.pipelines as f64,
            s.threads_before,
            s.threads_live
        ));
    }
    if let [one, .., many] = samples {
        let marginal = (many.growth() as f64 - one.growth() as f64) / (many.pipelines - one.pipelines) as f64;
        let marginal_joined = ((many.joined - many.before) as f64 - (one.joined - one.before) as f64)
            / (many.pipelines - one.pipelines) as f64;
        out.push_str(&format!(
            "\nMarginal cost of one more idle pipeline: **{:.2} MiB** after it ran a batch ({:.2} MiB joined, before its guest was instantiated).\n",
            marginal / 1024.0,
            marginal_joined / 1024.0
        ));
    }
    out
}
