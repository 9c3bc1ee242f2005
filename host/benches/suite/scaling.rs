//! Section 5: throughput from 1 to 8 partitions, from 1 to 2 pipelines, and from 1
//! to 2 cores (child processes pinned with `sched_setaffinity`).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::common::{Broker, Shape, unique};
use crate::e2e::{self, Comparison, Kafka, Topic};

/// Records per partition: the mock cluster keeps at most 5 MiB per partition and
/// drops older records beyond it, so a partition holds ~35k of these records.
pub const PER_PARTITION: u64 = 25_000;
const ROUNDS: usize = 3;

fn filled(broker: &Broker, partitions: i32) -> anyhow::Result<Topic> {
    let topic = Topic { name: unique("scale"), partitions };
    broker.fill(&topic.name, partitions, PER_PARTITION, Shape { value_len: 100 })?;
    Ok(topic)
}

/// librdkafka's default `fetch.queue.backoff.ms` (1000) stalls a partition's fetches
/// for a second whenever the local queue is over its thresholds; ferry's consumer
/// config sets 10 ms. The scaling section also runs with librdkafka's default, for
/// both sides, to show why.
pub const LIBRDKAFKA_FETCH_BACKOFF: (&str, &str) = ("fetch.queue.backoff.ms", "1000");

/// One pipeline over 1, 2, 4 and 8 partitions, then 8 again with librdkafka's
/// default fetch queue backoff. Rows are labelled.
pub fn partitions(kafka: &Kafka, component: &Path) -> anyhow::Result<Vec<(String, Comparison)>> {
    let broker = Broker::start()?;
    let mut default_backoff = kafka.clone();
    default_backoff.insert(LIBRDKAFKA_FETCH_BACKOFF.0.to_owned(), LIBRDKAFKA_FETCH_BACKOFF.1.to_owned());
    let mut out = Vec::new();
    for (partitions, kafka, label) in [
        (1, kafka, String::new()),
        (2, kafka, String::new()),
        (4, kafka, String::new()),
        (8, kafka, String::new()),
        (
            8,
            &default_backoff,
            format!(", `{}={}` (librdkafka's default)", LIBRDKAFKA_FETCH_BACKOFF.0, LIBRDKAFKA_FETCH_BACKOFF.1),
        ),
    ] {
        // FERRY_BENCH_PARTITIONS=8 (say) runs only the rows of that many partitions.
        if std::env::var("FERRY_BENCH_PARTITIONS").is_ok_and(|only| only != partitions.to_string()) {
            continue;
        }
        eprintln!("scaling: {partitions} partition(s){label}");
        let topic = filled(&broker, partitions)?;
        let records = PER_PARTITION * partitions as u64;
        let c = e2e::compare(
            broker.brokers(),
            kafka,
            component,
            &[(vec![topic], records)],
            ROUNDS,
            false,
            e2e::Setup::PerBatch,
        )?;
        out.push((format!("{partitions}{label}"), c));
    }
    Ok(out)
}

/// One host with one pipeline on one 4-partition topic, then with two pipelines on
/// two such topics (against one and two bare consumers).
pub fn pipelines(kafka: &Kafka, component: &Path) -> anyhow::Result<Vec<(usize, Comparison)>> {
    let broker = Broker::start()?;
    let topics = [filled(&broker, 4)?, filled(&broker, 4)?];
    let records = PER_PARTITION * 4;
    let mut out = Vec::new();
    for count in [1, 2] {
        eprintln!("scaling: {count} pipeline(s)");
        let members: Vec<_> = topics[..count].iter().map(|t| (vec![t.clone()], records)).collect();
        out.push((
            count,
            e2e::compare(broker.brokers(), kafka, component, &members, ROUNDS, false, e2e::Setup::PerBatch)?,
        ));
    }
    Ok(out)
}

/// Restricts this process (and every thread it starts from now on) to `cpus`.
fn pin(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays within it, and
    // sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity({cpus:?}) failed: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child's side: pinned to `cpus` before any thread starts, the main end-to-end
/// comparison; prints one `CORES` line.
pub fn child(cpus: &str, component: &Path) -> anyhow::Result<()> {
    let list: Vec<usize> = cpus.split(',').map(str::parse).collect::<Result<_, _>>()?;
    pin(&list)?;
    let broker = Broker::start()?;
    let topic = filled(&broker, 4)?;
    let kafka = e2e::kafka_from_env();
    let c = e2e::compare(
        broker.brokers(),
        &kafka,
        component,
        &[(vec![topic], PER_PARTITION * 4)],
        ROUNDS,
        false,
        e2e::Setup::PerBatch,
    )?;
    println!(
        "CORES {} {} {} {} {} {} {} {} {}",
        c.bare,
        c.ferry,
        c.ferry_committed,
        c.ratio,
        c.ratio_committed,
        c.commit_tail_ms,
        c.bare_steady,
        c.ferry_steady,
        c.ratio_steady
    );
    Ok(())
}

/// The parent's side: the comparison pinned to `cpus` (e.g. "0" or "0,1").
pub fn cores(cpus: &str, component: &Path) -> anyhow::Result<Comparison> {
    eprintln!("scaling: cpus {cpus}");
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(["child-cores", cpus])
        .arg(component)
        .stderr(Stdio::inherit())
        .output()
        .context("failed to run the cores child")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CORES "))
        .with_context(|| format!("the cores child printed no result ({})", output.status))?;
    let n: Vec<f64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    let [bare, ferry, ferry_committed, ratio, ratio_committed, commit_tail_ms, bare_steady, ferry_steady, ratio_steady] =
        n[..]
    else {
        bail!("bad cores line {line:?}")
    };
    Ok(Comparison {
        records: PER_PARTITION * 4,
        bare,
        ferry,
        ferry_committed,
        ratio,
        ratio_committed,
        commit_tail_ms,
        bare_steady,
        ferry_steady,
        ratio_steady,
        bare_headers: None,
        bare_batch: None,
        cpu: Default::default(),
        loop_cpu: (0.0, 0.0),
    })
}
