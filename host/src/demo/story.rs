//! The first story, live: two members of a group share the four partitions
//! of `orders`; one of them (a `ferry run` process) is killed with SIGKILL while
//! orders keep arriving; the other takes all four partitions and resumes each at
//! its committed bookmark. At the end, commissions read back from the broker show
//! that every order was processed, and which ones twice: the records after the
//! crashed member's last commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::flow::{Broker, Flow};
use super::ledger;
use super::member::Member;
use crate::config::Config;
use crate::host::Host;

/// What both stories run on.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The orders processor component.
    pub component: PathBuf,
    /// Orders per story.
    pub records: usize,
    /// Orders per second.
    pub rate: u32,
    /// How long any step may take before the story gives up.
    pub patience: Duration,
}

const PARTITIONS: i32 = 4;
const GROUP: &str = "commissions";
/// Members of one group must offer the same assignment strategy (the embedded
/// broker aborts otherwise).
pub(super) const STRATEGY: &str = "cooperative-sticky";
/// How long the group waits for a silent member before it rebalances.
pub(super) const SESSION_TIMEOUT_MS: u32 = 6_000;
/// The interval commit policy of the stories (ferry's default).
pub(super) const COMMIT_INTERVAL_MS: u32 = 1_000;

/// A member's config: one pipeline of the orders processor in `group`, writing
/// commissions to `output`, committing by `commit` (a TOML inline table).
pub(super) fn pipeline_config(
    name: &str,
    group: &str,
    input: &str,
    output: &str,
    commit: &str,
    component: &Path,
) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{group}"
        component = "{component}"
        batch_size = 200
        max_wait_ms = 50
        commit = {commit}
        output_topics = ["{output}"]
        settings = {{ output_topic = "{output}" }}
        kafka = {{ "partition.assignment.strategy" = "{STRATEGY}" }}
        "#,
        component = component.display().to_string().replace('\\', "\\\\"),
    )
}

/// The head of a member's config: the brokers, and a session timeout short enough
/// for a story.
pub(super) fn host_config(brokers: &str) -> String {
    format!(
        "brokers = \"{brokers}\"\n[kafka]\n\"session.timeout.ms\" = \"{SESSION_TIMEOUT_MS}\"\n\"heartbeat.interval.ms\" = \"500\"\n"
    )
}

/// A scratch directory for the members' configs and logs; kept if a story fails.
pub(super) fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ferry-demo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    Ok(dir)
}

/// Waits for `what` until `patience` runs out.
pub(super) fn wait_for(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > patience {
            bail!("gave up waiting for {what} after {} s", patience.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The partitions `host`'s first pipeline owns now.
fn owned(host: &Host) -> Vec<i32> {
    let stats = host.pipelines[0].shared.stats.snapshot();
    stats.partitions.iter().filter(|(_, p)| p.assigned).map(|((_, partition), _)| *partition).collect()
}

fn list(partitions: &[i32]) -> String {
    partitions.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
}

/// Plays the story.
pub(crate) fn run(settings: &Settings) -> anyhow::Result<()> {
    println!("\n=== Story 1: a member crashes, the other takes over from the bookmarks ===\n");
    let broker = Broker::start(&[("orders", PARTITIONS), ("commissions", PARTITIONS)])?;
    let brokers = &broker.brokers;
    let dir = scratch("story")?;
    let interval = format!("{{ policy = \"interval\", interval_ms = {COMMIT_INTERVAL_MS} }}");
    let config = host_config(brokers)
        + &pipeline_config("commissions", GROUP, "orders", "commissions", &interval, &settings.component);

    let mut a = Member::start(&dir, "member-a", &config)?;
    a.wait_ready(settings.patience)?;
    let b = Host::start(&Config::parse(&config)?)?;
    wait_for("the two members to share the partitions", settings.patience, || Ok(owned(&b).len() == 2))?;
    let b_owns = owned(&b);
    let a_owns: Vec<i32> = (0..PARTITIONS).filter(|p| !b_owns.contains(p)).collect();
    println!(
        "group `{GROUP}` ({STRATEGY} assignment, commits every {COMMIT_INTERVAL_MS} ms):\n  member A, a `ferry run` \
         process (pid {}), reads partitions {}\n  member B, this process, reads partitions {}",
        a.pid(),
        list(&a_owns),
        list(&b_owns)
    );

    println!("\n{} orders arrive at {} per second...", settings.records, settings.rate);
    let flow = Flow::start(brokers, "orders", PARTITIONS, settings.records, settings.rate)?;
    wait_for("orders to flow and every partition to have a bookmark", settings.patience, || {
        let rows = ledger::bookmarks(brokers, GROUP, "orders")?;
        Ok(flow.past(0.4) && rows.iter().all(|r| r.committed.is_some_and(|c| c > 0)))
    })?;
    let owner = |p: i32, a_state: &str| if a_owns.contains(&p) { format!("A ({a_state})") } else { "B".to_owned() };
    let before = ledger::bookmarks(brokers, GROUP, "orders")?;
    println!("\nbookmarks before the crash ({} orders sent so far):", flow.sent());
    print!("{}", ledger::table(&before, |p| owner(p, &format!("pid {}", a.pid()))));

    a.kill()?;
    let killed = Instant::now();
    // A is gone and B does not own A's partitions yet: nobody can move their bookmarks.
    let at_crash = ledger::committed(&ledger::bookmarks(brokers, GROUP, "orders")?);
    println!(
        "\nmember A killed with SIGKILL: no drain, no final commit. What it processed after its last commit is \
         not bookmarked.\nthe group waits for its heartbeat (session.timeout.ms = {} s)...",
        SESSION_TIMEOUT_MS / 1000
    );
    wait_for("member B to take all four partitions", settings.patience, || Ok(owned(&b).len() == PARTITIONS as usize))?;
    let takeover = ledger::bookmarks(brokers, GROUP, "orders")?;
    println!(
        "\nat the takeover, {:.1} s after the crash (the session timeout, then a rebalance): member B reads all four \
         partitions",
        killed.elapsed().as_secs_f64()
    );
    print!("{}", ledger::table(&takeover, |_| "B".to_owned()));
    for p in &a_owns {
        println!("  B resumes orders[{p}] at A's last bookmark, {}", at_crash[p]);
    }

    let produced = flow.finish()?;
    wait_for("member B to catch up", settings.patience, || {
        Ok(ledger::bookmarks(brokers, GROUP, "orders")?.iter().all(|r| r.lag() == 0))
    })?;
    let end = ledger::bookmarks(brokers, GROUP, "orders")?;
    println!("\nat the end:");
    print!("{}", ledger::table(&end, |_| "B".to_owned()));
    let b_stats = b.pipelines[0].shared.stats.snapshot();
    b.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    b.wait();

    let orders = ledger::orders(brokers, "orders")?;
    let commissions = ledger::commissions(brokers, "commissions")?;
    let duplicates = ledger::duplicates(&orders, &commissions)?;
    let written: u32 = commissions.values().sum();
    println!(
        "\nread back from the broker: {produced} orders, {written} commissions, for {} distinct orders: every order \
         was processed.",
        commissions.len()
    );
    explain(&duplicates, &at_crash, &a_owns)?;
    // B's own figures: on each partition it took over, it processed exactly the
    // records from A's bookmark to the end.
    for p in &a_owns {
        let log_end = end.iter().find(|r| r.partition == *p).map_or(0, |r| r.log_end);
        let processed = b_stats.partitions.get(&("orders".to_owned(), *p)).map_or(0, |s| s.processed);
        let expected = (log_end - at_crash[p]) as u64;
        if processed != expected {
            bail!(
                "member B processed {processed} records of orders[{p}], not {expected} (log end {log_end} − bookmark {})",
                at_crash[p]
            );
        }
        println!(
            "member B processed {processed} records of orders[{p}]: offsets {} to {}, from the bookmark on",
            at_crash[p],
            log_end - 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Says where the duplicates are and why, and fails if any is not where
/// at-least-once says it must be: on a partition of the crashed member, at or after its bookmark.
fn explain(
    duplicates: &BTreeMap<i32, (usize, i64, i64)>,
    at_crash: &BTreeMap<i32, i64>,
    crashed: &[i32],
) -> anyhow::Result<()> {
    let total: usize = duplicates.values().map(|d| d.0).sum();
    if total == 0 {
        println!("no order was processed twice: member A had committed everything it processed when it died.");
        return Ok(());
    }
    println!(
        "{total} orders were processed twice (their commissions are in the topic twice), all after member A's last \
         bookmarks:"
    );
    for (partition, (count, low, high)) in duplicates {
        if !crashed.contains(partition) || *low < at_crash[partition] {
            bail!(
                "orders[{partition}] has {count} duplicate(s) at offsets {low}..={high}, not after a crashed member's bookmark"
            );
        }
        println!(
            "  orders[{partition}]: {count}, offsets {low} to {high}: member A had processed them but not committed \
             them (bookmark {}); B read them again from the bookmark",
            at_crash[partition]
        );
    }
    println!(
        "at-least-once: a crash loses nothing, and delivers again at most what came after the last commit (here \
         up to {COMMIT_INTERVAL_MS} ms of work per partition)."
    );
    Ok(())
}
