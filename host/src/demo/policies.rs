//! The second story, live: commit policies side by side. Two groups read
//! the same orders, one committing on an interval and one after every batch, each
//! in a `ferry run` process; both are killed with SIGKILL at the same moment, and
//! replacements finish the work. Commissions read back from the broker show how
//! many records each policy delivered again after the crash.

use std::time::Instant;

use super::flow::{Broker, Flow};
use super::ledger;
use super::member::Member;
use super::story::{COMMIT_INTERVAL_MS, SESSION_TIMEOUT_MS, Settings, host_config, pipeline_config, scratch, wait_for};
use crate::config::Config;
use crate::host::Host;

const PARTITIONS: i32 = 4;

/// One side: a group with its commit policy and its own commissions topic.
struct Side {
    label: String,
    group: &'static str,
    output: &'static str,
    commit: String,
}

/// Plays the story.
pub(crate) fn run(settings: &Settings) -> anyhow::Result<()> {
    println!("\n=== Story 2: commit policies side by side, through a crash ===\n");
    let sides = [
        Side {
            label: format!("interval ({COMMIT_INTERVAL_MS} ms)"),
            group: "by-interval",
            output: "commissions.interval",
            commit: format!("{{ policy = \"interval\", interval_ms = {COMMIT_INTERVAL_MS} }}"),
        },
        Side {
            label: "per-batch".to_owned(),
            group: "per-batch",
            output: "commissions.per-batch",
            commit: "{ policy = \"per-batch\" }".to_owned(),
        },
    ];
    let broker =
        Broker::start(&[("orders", PARTITIONS), (sides[0].output, PARTITIONS), (sides[1].output, PARTITIONS)])?;
    let brokers = &broker.brokers;
    let dir = scratch("policies")?;
    let config =
        |side: &Side| pipeline_config(side.group, side.group, "orders", side.output, &side.commit, &settings.component);

    let mut members = Vec::new();
    for side in &sides {
        let mut member = Member::start(&dir, side.group, &(host_config(brokers) + &config(side)))?;
        member.wait_ready(settings.patience)?;
        println!("group `{}` commits {}: a `ferry run` process (pid {})", side.group, side.label, member.pid());
        members.push(member);
    }
    println!("\n{} orders arrive at {} per second; both groups read them...", settings.records, settings.rate);
    let flow = Flow::start(brokers, "orders", PARTITIONS, settings.records, settings.rate)?;
    wait_for("orders to flow and both groups to have bookmarks", settings.patience, || {
        let mut all = flow.past(0.5);
        for side in &sides {
            all &= ledger::bookmarks(brokers, side.group, "orders")?.iter().all(|r| r.committed.is_some_and(|c| c > 0));
        }
        Ok(all)
    })?;
    for member in &mut members {
        member.kill()?;
    }
    let killed = Instant::now();
    println!(
        "\nboth processes killed with SIGKILL at the same moment ({} orders sent so far). Their bookmarks:",
        flow.sent()
    );
    for side in &sides {
        println!("group `{}` ({}):", side.group, side.label);
        print!("{}", ledger::table(&ledger::bookmarks(brokers, side.group, "orders")?, |_| "(crashed)".to_owned()));
    }

    println!(
        "\nreplacements start in this process and join the groups once the crashed members' sessions expire \
         ({} s)...",
        SESSION_TIMEOUT_MS / 1000
    );
    let replacements = Host::start(&Config::parse(&(host_config(brokers) + &config(&sides[0]) + &config(&sides[1])))?)?;
    let produced = flow.finish()?;
    wait_for("both groups to catch up", settings.patience, || {
        let mut done = true;
        for side in &sides {
            done &= ledger::bookmarks(brokers, side.group, "orders")?.iter().all(|r| r.lag() == 0);
        }
        Ok(done)
    })?;
    println!("both groups caught up {:.1} s after the crash.\n", killed.elapsed().as_secs_f64());
    replacements.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    replacements.wait();

    let orders = ledger::orders(brokers, "orders")?;
    println!("read back from the broker ({produced} orders, every one with a commission on both sides):");
    println!("  {:<16} {:>22} {:>30}", "commit policy", "commissions written", "orders delivered again");
    let mut again = Vec::new();
    for side in &sides {
        let commissions = ledger::commissions(brokers, side.output)?;
        let duplicates: usize = ledger::duplicates(&orders, &commissions)?.values().map(|d| d.0).sum();
        let written: u32 = commissions.values().sum();
        println!("  {:<16} {:>22} {:>30}", side.label, written, duplicates);
        again.push(duplicates);
    }
    println!(
        "\nan interval commit delivers again everything processed since the last commit (up to {COMMIT_INTERVAL_MS} \
         ms of work per partition); committing after every batch narrows that to the batches whose commit was \
         not answered yet ({} against {} here), for one commit request per batch.",
        again[1], again[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
