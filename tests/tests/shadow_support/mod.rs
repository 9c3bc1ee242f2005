//! Helpers shared by the shadow suites: a host whose pipeline accepts shadows, its
//! shadow report, and the ledger and committed offsets judged as sets against what
//! was produced.

#![allow(dead_code)] // each suite uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ferry_host::deploy::client::Request;
use ferry_host::host::Host;
use ferry_tests::{Embedded, lag, read_all, wait_until_or_explain};

use crate::swap_support::{Build, HostSpec, admin, json, start};

/// Input partitions of every shadow suite.
pub const PARTITIONS: i32 = 4;

/// A host running `live` with shadows allowed, compared by `shadow` (TOML inline
/// table fields), with `more` pipeline settings (TOML lines, tables after them).
pub fn host_with(broker: &Embedded, group: &str, live: &Build, cache: &Path, shadow: &str, more: &str) -> Host {
    use ferry_tests::Broker as _;
    let extra = format!("shadow = {{ ignore_headers = [\"ts\"], {shadow} }}\n{more}");
    start(&HostSpec {
        brokers: &broker.brokers(),
        group,
        component: &live.path,
        cache_dir: cache,
        admin: true,
        extra: &extra,
    })
}

/// [`host_with`] and nothing more.
pub fn host(broker: &Embedded, group: &str, live: &Build, cache: &Path, shadow: &str) -> Host {
    host_with(broker, group, live, cache, shadow, "")
}

/// An embedded broker with `input` and `ledger`, of [`PARTITIONS`] each.
pub fn broker() -> Embedded {
    use ferry_tests::Broker as _;
    let broker = Embedded::start();
    broker.create_topic("input", PARTITIONS);
    broker.create_topic("ledger", PARTITIONS);
    broker
}

/// The shadow report from the admin API.
pub fn report(host: &Host) -> serde_json::Value {
    let answer = admin(host, Request::ShadowReport);
    assert_eq!(answer.status, 200, "{}", answer.body);
    json(&answer)
}

/// A count of a report.
pub fn n(report: &serde_json::Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Values `from..from + count`, as text.
pub fn numbers(from: usize, count: usize) -> Vec<String> {
    (from..from + count).map(|i| i.to_string()).collect()
}

/// Waits until the shadow accounted for `records` records (compared or skipped).
pub fn wait_for_comparison(host: &Host, records: u64) -> serde_json::Value {
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until_or_explain(
        "the shadow accounts for every record",
        || {
            let now = report(host);
            let done = n(&now, "compared") + n(&now, "skipped") >= records;
            *last.borrow_mut() = now;
            done
        },
        || format!("last report: {}", last.borrow()),
    );
    last.into_inner()
}

/// The values of `topic`, each with how often it appears.
pub fn value_counts(brokers: &str, topic: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for read in read_all(brokers, topic) {
        *counts.entry(read.value).or_default() += 1;
    }
    counts
}

/// Every value of `produced` appears exactly once in `counts`, and nothing else does.
pub fn assert_exactly(counts: &BTreeMap<String, usize>, produced: &[String]) {
    let expected: BTreeSet<&str> = produced.iter().map(String::as_str).collect();
    let seen: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
    let missing: Vec<_> = expected.difference(&seen).take(10).collect();
    let extra: Vec<_> = seen.difference(&expected).take(10).collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).map(|(v, c)| (v, *c)).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "missing {missing:?}, extra {extra:?}, duplicated {twice:?} (of {} expected)",
        expected.len()
    );
}

/// Every value produced appears exactly once in the ledger, and nothing else does.
pub fn assert_ledger_is_exactly(brokers: &str, produced: &[String]) {
    assert_exactly(&value_counts(brokers, "ledger"), produced);
}

/// Waits until `group` committed the log end of every input partition, and checks
/// the committed set: every partition at its produced count (records produced
/// round-robin, as `ferry_tests::produce` does).
pub fn wait_committed(brokers: &str, group: &str, produced: usize) {
    let per_partition: BTreeMap<i32, i64> =
        (0..PARTITIONS).map(|p| (p, (0..produced).filter(|i| *i as i32 % PARTITIONS == p).count() as i64)).collect();
    wait_until_or_explain(
        "the group commits the log end of every partition",
        || lag(brokers, group, "input").iter().all(|p| p.committed == Some(per_partition[&p.partition])),
        || format!("{:?}", lag(brokers, group, "input")),
    );
}
