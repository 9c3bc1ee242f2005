//! Section 4: resident memory of idle pipelines. Each measurement runs in a child
//! process of its own (this binary, re-executed) so one does not inherit the
//! other's heap; the embedded broker runs in the parent, so the child's RSS is the
//! host's alone.

use std::io::{BufRead as _, BufReader, Write as _};
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

/// The child's side: a host with `count` passthrough pipelines on `brokers` (the
/// parent's embedded broker, so its memory is not counted here), pipeline `i` on topic
/// `<prefix>-<i>`. Prints a `JOINED` line once every pipeline has joined, then waits
/// for the parent's records to be committed and prints one `MEMORY` line.
pub fn child(count: usize, component: &Path, brokers: &str, prefix: &str) -> anyhow::Result<()> {
    let topics = topics(count, prefix);
    let pipelines: Vec<Vec<Topic>> = topics.iter().map(|t| vec![t.clone()]).collect();
    let (config, _) = e2e::config(brokers, &e2e::kafka_from_env(), component, &pipelines, e2e::Setup::PerBatch)?;
    std::thread::sleep(Duration::from_millis(500));
    let (before, threads_before) = (proc_status("VmRSS"), proc_status("Threads"));

    let host = Host::start(&config)?;
    wait("every pipeline to join", || host.pipelines.iter().all(|p| p.shared.stats.liveness().snapshot().joined))?;
    std::thread::sleep(Duration::from_secs(1));
    let joined = proc_status("VmRSS");
    println!("JOINED");
    std::io::stdout().flush()?;

    wait("every pipeline to commit the parent's records", || {
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

fn topics(count: usize, prefix: &str) -> Vec<Topic> {
    (0..count).map(|i| Topic { name: format!("{prefix}-{i}"), partitions: 1 }).collect()
}

/// The parent's side: starts the embedded broker here, runs a child host for `count`
/// pipelines against it, writes each pipeline's records once the child has joined,
/// and reads the child's line.
pub fn measure(count: usize, component: &Path) -> anyhow::Result<Sample> {
    let broker = Broker::start()?;
    let prefix = unique("mem");
    let topics = topics(count, &prefix);
    for topic in &topics {
        broker.create(&topic.name, 1)?;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["child-memory", &count.to_string()])
        .arg(component)
        .args([broker.brokers(), &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("failed to run the memory child")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let mut result = None;
    while let Some(line) = lines.next().transpose()? {
        if line == "JOINED" {
            for topic in &topics {
                broker.produce(&topic.name, 1, RECORDS, Shape { value_len: 100 })?;
            }
            broker.flush()?;
        } else if line.starts_with("MEMORY ") {
            result = Some(line);
        }
    }
    let status = child.wait()?;
    let line = result.with_context(|| format!("the memory child printed no result ({status})"))?;
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
