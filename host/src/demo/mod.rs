//! `ferry demo`: an order-commission pipeline end to end on an embedded broker.
//!
//! Orders are produced to a 4-partition `orders` topic; the `orders` example
//! processor computes a commission per order and emits it to `commissions`;
//! malformed orders are rejected and dead-lettered to `orders.dlq`. The demo shows
//! progress, then the bookmark of every partition: log end, committed offset, lag.
//!
//! `ferry demo --story` plays two crash stories live instead: a member of a
//! group crashes and the other takes over from the bookmarks ([`story`]), and the
//! two commit policies side by side through a crash ([`policies`]).
//!
//! | module | concern |
//! |---|---|
//! | [`progress`] | the progress line: redrawn on a terminal, plain lines otherwise |
//! | [`flow`] | the embedded broker and orders arriving at a steady pace |
//! | [`member`] | a `ferry run` child process (a group member that can be SIGKILLed) |
//! | [`ledger`] | what the brokers hold: bookmark tables, commissions read back by order id |
//! | [`story`], [`policies`] | the two stories |

mod flow;
mod ledger;
mod member;
mod policies;
pub(crate) mod progress;
mod story;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;
use crate::host::Host;
use crate::kafka::offsets;
use crate::kafka::output::send_when_room;
use progress::Progress;

/// Options of `ferry demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Play two crash stories live: a member crashes (SIGKILL) and the other takes
    /// over from the bookmarks; then interval and per-batch commits through a crash.
    #[arg(long)]
    pub story: bool,
    /// Run the commission pipeline with `delivery = "exactly-once"`: commissions,
    /// dead letters and the input offsets commit in one transaction, and the demo ends
    /// by reading the commissions back with `read_committed`.
    #[arg(long, conflicts_with = "story")]
    pub exactly_once: bool,
    /// How many orders to produce (per story with --story).
    #[arg(long)]
    pub records: Option<usize>,
    /// With --story: orders per second arriving while the members run.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// The orders processor component (built from examples/orders when omitted).
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// Give up if the pipeline has not caught up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Orders of the classic demo.
const DEMO_RECORDS: usize = 20_000;
/// Orders of each story.
const STORY_RECORDS: usize = 10_000;

const PARTITIONS: i32 = 4;
const GROUP: &str = "ferry-demo";

/// Every 50th order is malformed, to show rejects and dead letters.
fn order(i: usize) -> String {
    if i % 50 == 49 {
        format!("{{\"id\":\"o-{i}\",\"agent\":")
    } else {
        let agents = ["alice", "bob", "carol", "dave", "erin"];
        format!(
            r#"{{"id":"o-{i}","agent":"{}","amount_cents":{}}}"#,
            agents[i % agents.len()],
            1000 + (i * 7919) % 90_000
        )
    }
}

/// Runs the demo, or with `--story` the stories.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let component = match &args.component {
        Some(path) => path.clone(),
        None => {
            eprintln!("building the orders example processor (examples/orders) for wasm32-wasip2...");
            crate::devtools::build_guest("ferry-example-orders").context(
                "failed to build the orders example processor (`--component <file.wasm>` runs one built elsewhere)",
            )?
        }
    };
    if args.story {
        let story = story::Settings {
            // Member configs live in a scratch directory: a relative path would not resolve.
            component: std::path::absolute(&component)
                .with_context(|| format!("failed to resolve {}", component.display()))?,
            records: args.records.unwrap_or(STORY_RECORDS),
            rate: args.rate.max(1),
            patience: Duration::from_secs(args.timeout_secs),
        };
        story::run(&story)?;
        return policies::run(&story);
    }
    let delivery = if args.exactly_once { Delivery::ExactlyOnce } else { Delivery::AtLeastOnce };
    seed(&component, args.records.unwrap_or(DEMO_RECORDS), Duration::from_secs(args.timeout_secs), delivery)
}

/// How the demo's pipeline delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// Every order `i` below `records` that is well formed.
fn valid_orders(records: usize) -> usize {
    (0..records).filter(|&i| serde_json::from_str::<serde_json::Value>(&order(i)).is_ok()).count()
}

/// The bookmark of every partition of `orders`. Under exactly-once the offsets travel
/// inside each transaction (`TxnOffsetCommit`), which the embedded broker accepts but
/// does not keep, so the committed offsets shown are the ones ferry committed in its
/// transactions (its own stats); a real broker would report the same through
/// `ferry offsets show`.
fn bookmarks(host: &Host, brokers: &str, delivery: Delivery) -> anyhow::Result<Vec<offsets::PartitionLag>> {
    let mut rows = offsets::show(brokers, &Default::default(), GROUP, &["orders".to_owned()])?;
    if delivery == Delivery::ExactlyOnce {
        let stats = host.pipelines[0].shared.stats.snapshot();
        for row in &mut rows {
            row.committed = stats.partitions.get(&(row.topic.clone(), row.partition)).and_then(|p| p.committed);
        }
    }
    Ok(rows)
}

/// The commission pipeline over `records` orders, to lag 0.
fn seed(component: &std::path::Path, records: usize, patience: Duration, delivery: Delivery) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("failed to start the embedded broker")?;
    for (topic, partitions) in [("orders", PARTITIONS), ("commissions", PARTITIONS), ("orders.dlq", 1)] {
        cluster.create_topic(topic, partitions, 1).with_context(|| format!("failed to create topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    println!("embedded broker (librdkafka mock cluster) at {brokers}");

    produce_orders(&brokers, records)?;
    println!("produced {records} orders to `orders` ({PARTITIONS} partitions)");

    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "commissions"
        inputs = ["orders"]
        group = "{GROUP}"
        component = "{component}"
        batch_size = 500
        max_wait_ms = 20
        commit = {{ policy = "interval", interval_ms = 200 }}
        output_topics = ["commissions"]
        failure = {{ on_failure = "dead-letter", dead_letter_topic = "orders.dlq", max_attempts = 3 }}
        delivery = "{delivery}"
        "#,
        component = component.display().to_string().replace('\\', "\\\\"),
        delivery = match delivery {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce => "exactly-once",
        },
    ))?;
    if delivery == Delivery::ExactlyOnce {
        println!("exactly-once: commissions, dead letters and offsets commit in one transaction every 200 ms");
    }
    let host = Host::start(&config)?;
    let shutdown = host.shutdown_flag();
    let started = Instant::now();
    let mut progress = Progress::stdout();
    let mut rows;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let stats = host.pipelines[0].shared.stats.snapshot();
        let done: u64 = stats.partitions.values().map(|p| p.processed + p.dead_lettered).sum();
        let dead: u64 = stats.partitions.values().map(|p| p.dead_lettered).sum();
        rows = bookmarks(&host, &brokers, delivery)?;
        let committed: i64 = rows.iter().map(|r| r.committed.unwrap_or(0)).sum();
        let width = 30;
        let filled = (committed as usize * width / records.max(1)).min(width);
        let line = format!(
            "[{}{}] committed {committed}/{records} · processed {done} · dead-lettered {dead}",
            "#".repeat(filled),
            "-".repeat(width - filled),
        );
        if rows.iter().all(|r| r.lag() == 0) {
            progress.finish(&line);
            break;
        }
        progress.show(&line);
        if started.elapsed() > patience {
            progress.interrupt();
            bail!("the pipeline did not catch up within {} s:\n{}", patience.as_secs(), offsets::table(&rows));
        }
    }
    println!("caught up in {:.2} s\n", started.elapsed().as_secs_f64());
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();

    println!("{}", offsets::table(&rows));
    if delivery == Delivery::ExactlyOnce {
        return read_back_committed(&brokers, records);
    }
    let written = |topic: &str| -> anyhow::Result<i64> {
        Ok(offsets::show(&brokers, &Default::default(), GROUP, &[topic.to_owned()])?.iter().map(|r| r.log_end).sum())
    };
    let (commissions, dead_letters) = (written("commissions")?, written("orders.dlq")?);
    println!("commissions written: {commissions}");
    println!("dead letters (malformed orders): {dead_letters}");
    if commissions + dead_letters != records as i64 {
        bail!("expected {records} commissions + dead letters, found {}", commissions + dead_letters);
    }
    println!("every order accounted for: lag 0 on every partition.");
    Ok(())
}

/// Exactly-once's proof: what a `read_committed` reader sees is one commission per
/// valid order and one dead letter per malformed one, no more, no less.
fn read_back_committed(brokers: &str, records: usize) -> anyhow::Result<()> {
    let valid = valid_orders(records);
    let commissions = ledger::commissions(brokers, "commissions")?;
    let read: u32 = commissions.values().sum();
    let duplicated = commissions.values().filter(|&&n| n > 1).count();
    let dead_letters = ledger::visible_records(brokers, "orders.dlq")?;
    println!(
        "commissions read back with read_committed: {read} for {} orders (valid orders: {valid})",
        commissions.len()
    );
    println!("dead letters read back with read_committed: {dead_letters} (malformed orders: {})", records - valid);
    if read as usize != valid || commissions.len() != valid || duplicated > 0 {
        bail!(
            "expected one commission for each of the {valid} valid orders; read {read} for {} orders",
            commissions.len()
        );
    }
    if dead_letters != records - valid {
        bail!("expected {} dead letters, read {dead_letters}", records - valid);
    }
    println!(
        "exactly once: every valid order has one commission, every malformed one dead letter; lag 0 on every partition."
    );
    Ok(())
}

fn produce_orders(brokers: &str, count: usize) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .context("failed to create the demo producer")?;
    for i in 0..count {
        let key = format!("o-{i}");
        let value = order(i);
        send_when_room(&producer, BaseRecord::to("orders").key(&key).payload(&value))
            .map_err(|(error, _)| error)
            .context("failed to produce a demo order")?;
    }
    producer.flush(Duration::from_secs(30)).context("failed to flush the demo orders")?;
    Ok(())
}
