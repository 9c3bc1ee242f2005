//! Sections 2 and 5: a bare rdkafka consumer against ferry's pipeline on the same
//! pre-filled topics of the embedded broker, in the same run.
//!
//! Both are timed from the moment the group hands them their partitions (so the
//! group join, identical for both, is left out) to the last record: received, for
//! the bare consumer; processed by the guest, and committed, for ferry.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_host::kafka::client::consumer_config;
use ferry_host::kafka::{baseline, offsets};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::common::{ThreadCpu, median, toml_path, unique};

/// Ferry's pipeline settings in these runs.
pub const BATCH_SIZE: usize = 1000;
/// ferry's commit policy and batch wait in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Commits after every batch, and a fetch's records go to the guest at once
    /// (`max_wait_ms = 0`): the headline runs.
    PerBatch,
    /// Commits every 100 ms (fewer requests, a last commit up to 100 ms late).
    Interval,
    /// Commits after every batch, and a partial batch waits up to 10 ms for more.
    PerBatchWait,
}

impl Setup {
    fn toml(self) -> &'static str {
        match self {
            Setup::PerBatch => "max_wait_ms = 0\ncommit = { policy = \"per-batch\" }",
            Setup::Interval => "max_wait_ms = 0\ncommit = { policy = \"interval\", interval_ms = 100 }",
            Setup::PerBatchWait => "max_wait_ms = 10\ncommit = { policy = \"per-batch\" }",
        }
    }
}

/// The end-to-end target: ferry's records/s over the bare consumer's.
pub const TARGET_RATIO: f64 = 0.85;

const PATIENCE: Duration = Duration::from_secs(120);

/// A topic and its partition count.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub partitions: i32,
}

/// Records after which a run counts as flowing (ferry's first batch).
const STEADY_AFTER: u64 = BATCH_SIZE as u64;

/// One timed run.
#[derive(Debug, Clone)]
pub struct Run {
    pub records: u64,
    /// Assignment to the last record received (bare) or processed (ferry).
    pub consume: Duration,
    /// Assignment to the last offset committed (ferry only), as the broker shows it.
    pub commit: Option<Duration>,
    /// Last record processed to the last commit result ferry received (ferry only):
    /// the part of the commit tail spent in ferry and the broker, not in watching.
    pub commit_result_tail: Option<Duration>,
    /// Records per second once flowing: from the first batch (ferry) or the first
    /// `STEADY_AFTER` records (bare) to the last record.
    pub steady: f64,
    /// CPU time per thread name during the run, in ms.
    pub cpu: ThreadCpu,
    /// CPU time of the consuming thread(s) (the bare loop, or ferry's pipeline
    /// threads), in ns per record.
    pub loop_cpu: f64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.consume.as_secs_f64()
    }

    pub fn commit_rate(&self) -> Option<f64> {
        self.commit.map(|c| self.records as f64 / c.as_secs_f64())
    }
}

/// librdkafka properties given to both the bare consumer and ferry's pipelines.
pub type Kafka = BTreeMap<String, String>;

/// The top of a bench host's config: the brokers, no artifact cache and the
/// `[kafka]` settings. Pipelines follow.
pub fn config_head(brokers: &str, kafka: &Kafka) -> String {
    let mut text = format!("brokers = {brokers:?}\n[sandbox]\ncache_dir = \"\"\n[kafka]\n");
    for (key, value) in kafka {
        text.push_str(&format!("{key:?} = {value:?}\n"));
    }
    text
}

/// Properties from `FERRY_BENCH_KAFKA` (`key=value,key=value`); empty by default, so
/// both run with the settings ferry ships.
pub fn kafka_from_env() -> Kafka {
    std::env::var("FERRY_BENCH_KAFKA")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Remembers when the group first assigned partitions.
#[derive(Default)]
struct Timed {
    assigned: Mutex<Option<Instant>>,
}

impl ClientContext for Timed {}

impl ConsumerContext for Timed {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assigned.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
        }
    }
}

/// A plain poll loop: a consumer group member with ferry's client settings that
/// reads `records` records of `topics` and does nothing with them (but look at their
/// headers, when `headers`: librdkafka parses them on demand). Never inlined: the
/// instructions section finds the loop's thread by this function's name.
#[inline(never)]
pub fn bare(brokers: &str, kafka: &Kafka, topics: &[Topic], records: u64, headers: bool) -> anyhow::Result<Run> {
    let consumer: BaseConsumer<Timed> = consumer_config(brokers, &unique("bare"), kafka, &BTreeMap::new())
        .create_with_context(Timed::default())
        .context("failed to create the bare consumer")?;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    consumer.subscribe(&names)?;
    let started = Instant::now();
    let cpu = crate::common::thread_cpu();
    let loop_cpu = crate::common::this_thread_cpu();
    let mut seen = 0;
    let mut flowing = None;
    while seen < records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                black_box((message.key(), message.payload(), message.offset()));
                if headers && let Some(headers) = message.headers() {
                    black_box(headers.iter().count());
                }
                seen += 1;
                if seen == STEADY_AFTER {
                    flowing = Some(Instant::now());
                }
            }
            Some(Err(error)) => eprintln!("bare consumer: {error}"),
            None if started.elapsed() > PATIENCE => bail!("the bare consumer read only {seen} of {records} records"),
            None => {}
        }
    }
    let done = Instant::now();
    let assigned = consumer.context().assigned.lock().unwrap_or_else(|p| p.into_inner()).context("never assigned")?;
    let loop_cpu = crate::common::this_thread_cpu().saturating_sub(loop_cpu) as f64 / records as f64;
    let cpu = crate::common::cpu_since(&cpu);
    let steady = steady(records - STEADY_AFTER, flowing.unwrap_or(assigned), done);
    Ok(Run { records, consume: done - assigned, commit: None, commit_result_tail: None, steady, cpu, loop_cpu })
}

/// The fastest bare loop librdkafka allows (`kafka::baseline`): ferry's own batch
/// consumption from a forwarded queue and its per-batch commit policy, with no guest
/// and nothing else. Its commit time is when the commit result covering every record
/// arrived (ferry's is when the broker shows it to a client outside the group, looked
/// up every millisecond: the comparison slightly favours this loop). Never inlined:
/// the instructions section finds the loop's thread by this function's name.
#[inline(never)]
pub fn bare_batch(brokers: &str, kafka: &Kafka, topics: &[Topic], records: u64) -> anyhow::Result<Run> {
    let config = consumer_config(brokers, &unique("batch"), kafka, &BTreeMap::new());
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    let cpu = crate::common::thread_cpu();
    let loop_cpu = crate::common::this_thread_cpu();
    let run = baseline::consume_and_commit(&config, &names, records, STEADY_AFTER, PATIENCE)?;
    let loop_cpu = crate::common::this_thread_cpu().saturating_sub(loop_cpu) as f64 / records as f64;
    Ok(Run {
        records,
        consume: run.last_record - run.assigned,
        commit: Some(run.last_commit - run.assigned),
        commit_result_tail: None,
        steady: steady(records - STEADY_AFTER, run.flowing, run.last_record),
        cpu: crate::common::cpu_since(&cpu),
        loop_cpu,
    })
}

/// Several bare consumers, one per topic list, each on a thread of its own; timed
/// from the first assignment to the last record.
pub fn bare_parallel(brokers: &str, kafka: &Kafka, members: &[(Vec<Topic>, u64)]) -> anyhow::Result<Run> {
    let runs: Vec<anyhow::Result<(Instant, Instant, f64, f64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .iter()
            .map(|(topics, records)| {
                scope.spawn(move || {
                    let run = bare(brokers, kafka, topics, *records, false)?;
                    let done = Instant::now();
                    Ok((done - run.consume, done, run.steady, run.loop_cpu * run.records as f64))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bare consumer thread")).collect()
    });
    let spans: Vec<(Instant, Instant, f64, f64)> = runs.into_iter().collect::<anyhow::Result<_>>()?;
    let first = spans.iter().map(|s| s.0).min().context("no member")?;
    let last = spans.iter().map(|s| s.1).max().context("no member")?;
    let steady = spans.iter().map(|s| s.2).sum();
    let records = members.iter().map(|m| m.1).sum::<u64>();
    let loop_cpu = spans.iter().map(|s| s.3).sum::<f64>() / records as f64;
    Ok(Run {
        records,
        consume: last - first,
        commit: None,
        commit_result_tail: None,
        steady,
        cpu: Vec::new(),
        loop_cpu,
    })
}

/// The ferry config of one host: one passthrough pipeline per topic list.
pub fn config(
    brokers: &str,
    kafka: &Kafka,
    component: &Path,
    pipelines: &[Vec<Topic>],
    setup: Setup,
) -> anyhow::Result<(Config, Vec<String>)> {
    let mut text = config_head(brokers, kafka);
    let mut groups = Vec::new();
    for (i, topics) in pipelines.iter().enumerate() {
        let group = unique("ferry");
        let inputs: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        text.push_str(&format!(
            "[[pipeline]]\nname = \"bench-{i}\"\ninputs = {inputs:?}\ngroup = {group:?}\ncomponent = {}\n\
             batch_size = {BATCH_SIZE}\n{}\n",
            toml_path(component),
            setup.toml()
        ));
        groups.push(group);
    }
    Ok((Config::parse(&text)?, groups))
}

/// Sum of the committed offsets of `group` on `topics` (each partition starts at 0,
/// so this is the number of committed records).
fn committed(client: &BaseConsumer, topics: &[Topic]) -> anyhow::Result<i64> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..topic.partitions {
            list.add_partition(&topic.name, partition);
        }
    }
    let list = client.committed_offsets(list, Duration::from_secs(5))?;
    Ok(list
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// ferry's pipelines (one per topic list) in one host, until every record is
/// processed and committed.
pub fn ferry(
    brokers: &str,
    kafka: &Kafka,
    component: &Path,
    pipelines: &[(Vec<Topic>, u64)],
    setup: Setup,
) -> anyhow::Result<Run> {
    let lists: Vec<Vec<Topic>> = pipelines.iter().map(|p| p.0.clone()).collect();
    let (config, groups) = config(brokers, kafka, component, &lists, setup)?;
    let records: u64 = pipelines.iter().map(|p| p.1).sum();
    // The broker's view of the commits, asked by clients outside the groups (made
    // first, so that making them is not timed).
    let clients: Vec<BaseConsumer> = groups
        .iter()
        .map(|group| {
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .create()
        })
        .collect::<Result<_, _>>()?;
    // One look each before the run: a client finds its group's coordinator and
    // connects to it on its first look, which took up to ~55 ms and showed up as a
    // commit tail ferry did not have (ferry had its last commit result 0.1 ms after
    // its last batch).
    for (client, (topics, _)) in clients.iter().zip(pipelines) {
        committed(client, topics)?;
    }
    let host = Host::start(&config)?;
    let started = Instant::now();
    let cpu = crate::common::thread_cpu();
    // The watcher sleeps 2 ms between looks (it shares the machine with ferry); the
    // times of the assignment and of the first and last batches come from ferry's
    // stats, exact.
    loop {
        std::thread::sleep(Duration::from_millis(2));
        let processed: u64 = host.pipelines.iter().map(|p| p.shared.stats.processed_total()).sum();
        if processed >= records {
            break;
        }
        if started.elapsed() > PATIENCE {
            bail!("ferry processed only {processed} of {records} records");
        }
    }
    let times: Vec<_> = host.pipelines.iter().map(|p| p.shared.stats.timeline()).collect();
    let assigned = times.iter().filter_map(|t| t.first_assignment).min().context("never assigned")?;
    let processed_at = times.iter().filter_map(|t| t.last_batch).max().context("no batch")?;
    let first_batch = times.iter().filter_map(|t| t.first_batch).min_by_key(|(at, _)| *at);
    let cpu = crate::common::cpu_since(&cpu);
    // Pipeline threads are named `ferry-<pipeline>`.
    let loop_cpu = cpu.iter().filter(|(name, _)| name.starts_with("ferry-bench")).map(|(_, ms)| ms * 1e6).sum::<f64>()
        / records as f64;
    let (flowing, before) = first_batch.context("no batch")?;
    let steady = steady(records - before, flowing, processed_at);

    let committed_at = loop {
        let mut total = 0;
        for (client, (topics, _)) in clients.iter().zip(pipelines) {
            total += committed(client, topics)?;
        }
        if total >= records as i64 {
            break Instant::now();
        }
        if started.elapsed() > PATIENCE {
            bail!("ferry committed only {total} of {records} records");
        }
        std::thread::sleep(Duration::from_millis(1));
    };

    for (group, (topics, _)) in groups.iter().zip(pipelines) {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let rows = offsets::show(brokers, kafka, group, &names)?;
        if rows.iter().any(|r| r.lag() != 0) {
            bail!("group {group} still lags:\n{}", offsets::table(&rows));
        }
    }
    let last_result = host.pipelines.iter().filter_map(|p| p.shared.stats.timeline().last_commit).max();
    let commit_result_tail = last_result.map(|at| at.saturating_duration_since(processed_at));
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    Ok(Run {
        records,
        consume: processed_at - assigned,
        commit: Some(committed_at - assigned),
        commit_result_tail,
        steady,
        cpu,
        loop_cpu,
    })
}

fn steady(records: u64, from: Instant, to: Instant) -> f64 {
    records as f64 / (to - from).as_secs_f64().max(1e-9)
}

/// Medians of interleaved rounds of the bare consumer and ferry on the same data.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub records: u64,
    pub bare: f64,
    pub ferry: f64,
    pub ferry_committed: f64,
    /// Median of the per-round ratios (processed).
    pub ratio: f64,
    /// Median of the per-round ratios (committed).
    pub ratio_committed: f64,
    /// Median time from the last record processed to its commit, in ms.
    pub commit_tail_ms: f64,
    /// Once flowing: bare, ferry, and the median per-round ratio.
    pub bare_steady: f64,
    pub ferry_steady: f64,
    pub ratio_steady: f64,
    /// The bare loop that also reads every record's headers (when asked for): its
    /// rates, ferry's median per-round ratios to it (processed, once flowing), and its
    /// thread's CPU in ns per record.
    pub bare_headers: Option<[f64; 5]>,
    /// The fastest bare loop (batch consumption, per-batch commits; when asked for):
    /// medians of its rates and of ferry's per-round ratios to it.
    pub bare_batch: Option<BatchBaseline>,
    /// CPU per thread in the last round: bare, then ferry.
    pub cpu: (ThreadCpu, ThreadCpu),
    /// CPU of the consuming thread(s) in ns per record: bare, then ferry.
    pub loop_cpu: (f64, f64),
}

/// The fastest bare loop's figures in a comparison (medians over rounds).
#[derive(Debug, Clone, Copy)]
pub struct BatchBaseline {
    /// Records/s to the last record received, to the last commit, and once flowing.
    pub rate: f64,
    pub commit_rate: f64,
    pub steady: f64,
    /// ferry / this loop: to the last record processed, to the last commit, once flowing.
    pub ratio: f64,
    pub ratio_committed: f64,
    pub ratio_steady: f64,
    /// CPU of its thread in ns per record.
    pub loop_cpu: f64,
}

/// Per-round figures, collected for medians.
#[derive(Default)]
struct Rounds {
    bare: Vec<f64>,
    ferry: Vec<f64>,
    committed: Vec<f64>,
    ratio: Vec<f64>,
    ratio_committed: Vec<f64>,
    tail_ms: Vec<f64>,
    bare_steady: Vec<f64>,
    ferry_steady: Vec<f64>,
    ratio_steady: Vec<f64>,
    headers: Vec<f64>,
    headers_steady: Vec<f64>,
    ratio_headers: Vec<f64>,
    ratio_headers_steady: Vec<f64>,
    headers_cpu: Vec<f64>,
    batch: Vec<f64>,
    batch_committed: Vec<f64>,
    batch_steady: Vec<f64>,
    ratio_batch: Vec<f64>,
    ratio_batch_committed: Vec<f64>,
    ratio_batch_steady: Vec<f64>,
    batch_cpu: Vec<f64>,
    bare_cpu: Vec<f64>,
    ferry_cpu: Vec<f64>,
}

/// Runs `rounds` interleaved rounds (bare, [bare reading headers, the fastest bare
/// loop,] ferry), each with fresh groups.
pub fn compare(
    brokers: &str,
    kafka: &Kafka,
    component: &Path,
    members: &[(Vec<Topic>, u64)],
    rounds: usize,
    more_baselines: bool,
    setup: Setup,
) -> anyhow::Result<Comparison> {
    let mut r = Rounds::default();
    let mut cpu = Default::default();
    for round in 0..rounds {
        let b = if members.len() == 1 {
            bare(brokers, kafka, &members[0].0, members[0].1, false)?
        } else {
            bare_parallel(brokers, kafka, members)?
        };
        let h = if more_baselines { Some(bare(brokers, kafka, &members[0].0, members[0].1, true)?) } else { None };
        let bb = if more_baselines { Some(bare_batch(brokers, kafka, &members[0].0, members[0].1)?) } else { None };
        let f = ferry(brokers, kafka, component, members, setup)?;
        if let Some(bb) = bb {
            let (rate, committed) = (bb.rate(), bb.commit_rate().expect("the batch loop commits"));
            r.batch.push(rate);
            r.batch_committed.push(committed);
            r.batch_steady.push(bb.steady);
            r.ratio_batch.push(f.rate() / rate);
            r.ratio_batch_committed.push(f.commit_rate().expect("ferry runs commit") / committed);
            r.ratio_batch_steady.push(f.steady / bb.steady);
            r.batch_cpu.push(bb.loop_cpu);
        }
        if let Some(h) = h {
            r.headers.push(h.rate());
            r.headers_steady.push(h.steady);
            r.ratio_headers.push(f.rate() / h.rate());
            r.ratio_headers_steady.push(f.steady / h.steady);
            r.headers_cpu.push(h.loop_cpu);
        }
        let committed = f.commit_rate().expect("ferry runs commit");
        eprintln!(
            "  round {}: bare {:.0} rec/s ({:.0} once flowing), ferry {:.0} rec/s ({:.0} once flowing), committed {:.0} \
             rec/s; commit tail {:.1} ms ({:.1} ms to ferry's last commit result)",
            round + 1,
            b.rate(),
            b.steady,
            f.rate(),
            f.steady,
            committed,
            (f.commit.expect("committed") - f.consume).as_secs_f64() * 1e3,
            f.commit_result_tail.map_or(f64::NAN, |t| t.as_secs_f64() * 1e3)
        );
        r.bare.push(b.rate());
        r.ferry.push(f.rate());
        r.committed.push(committed);
        r.ratio.push(f.rate() / b.rate());
        r.ratio_committed.push(committed / b.rate());
        r.tail_ms.push((f.commit.expect("committed") - f.consume).as_secs_f64() * 1e3);
        r.bare_steady.push(b.steady);
        r.ferry_steady.push(f.steady);
        r.ratio_steady.push(f.steady / b.steady);
        r.bare_cpu.push(b.loop_cpu);
        r.ferry_cpu.push(f.loop_cpu);
        cpu = (b.cpu, f.cpu);
    }
    Ok(Comparison {
        records: members.iter().map(|m| m.1).sum(),
        bare: median(&mut r.bare),
        ferry: median(&mut r.ferry),
        ferry_committed: median(&mut r.committed),
        ratio: median(&mut r.ratio),
        ratio_committed: median(&mut r.ratio_committed),
        commit_tail_ms: median(&mut r.tail_ms),
        bare_steady: median(&mut r.bare_steady),
        ferry_steady: median(&mut r.ferry_steady),
        ratio_steady: median(&mut r.ratio_steady),
        bare_headers: (!r.headers.is_empty()).then(|| {
            [
                median(&mut r.headers),
                median(&mut r.headers_steady),
                median(&mut r.ratio_headers),
                median(&mut r.ratio_headers_steady),
                median(&mut r.headers_cpu),
            ]
        }),
        bare_batch: (!r.batch.is_empty()).then(|| BatchBaseline {
            rate: median(&mut r.batch),
            commit_rate: median(&mut r.batch_committed),
            steady: median(&mut r.batch_steady),
            ratio: median(&mut r.ratio_batch),
            ratio_committed: median(&mut r.ratio_batch_committed),
            ratio_steady: median(&mut r.ratio_batch_steady),
            loop_cpu: median(&mut r.batch_cpu),
        }),
        cpu,
        loop_cpu: (median(&mut r.bare_cpu), median(&mut r.ferry_cpu)),
    })
}

/// Header of a comparison table whose first column is `label`.
pub fn table_header(label: &str) -> String {
    format!(
        "| {label} | records | bare rdkafka | ferry, processed | ratio | ferry, committed | ratio | commit tail | bare, once flowing | ferry, once flowing | ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
}

/// One row of a comparison table (rates in records per second).
pub fn table_row(label: &str, c: &Comparison) -> String {
    format!(
        "| {label} | {} | {} | {} | **{:.2}** | {} | {:.2} | {:.0} ms | {} | {} | {:.2} |\n",
        c.records,
        rate(c.bare),
        rate(c.ferry),
        c.ratio,
        rate(c.ferry_committed),
        c.ratio_committed,
        c.commit_tail_ms,
        rate(c.bare_steady),
        rate(c.ferry_steady),
        c.ratio_steady
    )
}

/// CPU per thread during one run of each, as a table.
pub fn cpu_table(c: &Comparison) -> String {
    let mut out = String::from("| run | thread | CPU ms |\n|---|---|---:|\n");
    for (run, threads) in [("bare", &c.cpu.0), ("ferry", &c.cpu.1)] {
        for (name, ms) in threads {
            // The bench's main thread runs the bare loop, and watches ferry's stats.
            let name = if name.starts_with("suite") { "main (bench)" } else { name };
            out.push_str(&format!("| {run} | `{name}` | {ms:.1} |\n"));
        }
    }
    out
}

/// Records per second, in thousands or millions.
pub fn rate(r: f64) -> String {
    if r >= 1e6 { format!("{:.2} M", r / 1e6) } else { format!("{:.0} k", r / 1e3) }
}
