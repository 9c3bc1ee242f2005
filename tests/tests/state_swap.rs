//! Keyed state across hot swaps, with two versions of the counter built from source
//! (`examples/counter`, which emits `<count>`, and `tests/guests/counter-v2`, which
//! keeps the same state and emits `v2:<count>`), through the admin API:
//!
//! 1. v1 counts; v2 is deployed and goes on from v1's counts; a rollback to v1 goes
//!    on from v2's.
//! 2. v2 is deployed again with empty state: every key counts from 1 again.
//! 3. The host restarts on v2: the counts go on from what v2 wrote since the empty
//!    deploy, and the keys it never wrote again start from 1: the changelog holds
//!    tombstones for them, nothing of the old state comes back.
//!
//! Every round's counts are compared per key with what was produced, as sets.

mod swap_support;

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_host::deploy::client::Request;
use ferry_tests::raw_log::read_committed;
use ferry_tests::{Broker, Embedded, Tansu, read_all, wait_until};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use swap_support::*;

const PARTITIONS: i32 = 2;

/// Produces `per_key` records of each key, the key's partition named in it.
fn produce(brokers: &str, keys: &[&str], per_key: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create().expect("producer");
    for _ in 0..per_key {
        for key in keys {
            let partition: i32 = key[1..2].parse().expect("p<partition>-...");
            producer.send(BaseRecord::to("input").partition(partition).key(*key).payload("x")).expect("queued");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("acknowledged");
}

/// How the ledger is read.
type Reader<'a> = dyn Fn(&str, &str) -> Vec<ferry_tests::Read> + 'a;

/// Every (key, value) on the ledger.
fn ledger(read: &Reader<'_>, brokers: &str) -> Vec<(String, String)> {
    read(brokers, "ledger").into_iter().map(|r| (r.key, r.value)).collect()
}

/// The values emitted per key in `entries`, sorted.
fn by_key(entries: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in entries {
        map.entry(key.clone()).or_default().push(value.clone());
    }
    for values in map.values_mut() {
        values.sort_by_key(|v| v.trim_start_matches("v2:").parse::<u64>().expect("a count"));
    }
    map
}

/// For each of `keys`, the counts `from..=to` as `tag` emits them.
fn expected(keys: &[&str], tag: &str, from: u64, to: u64) -> BTreeMap<String, Vec<String>> {
    keys.iter().map(|k| (k.to_string(), (from..=to).map(|n| format!("{tag}{n}")).collect())).collect()
}

/// Runs one round: produces, waits for every count, returns the round's entries.
fn round(read: &Reader<'_>, brokers: &str, keys: &[&str], per_key: usize) -> Vec<(String, String)> {
    let before = ledger(read, brokers).len();
    produce(brokers, keys, per_key);
    let want = before + keys.len() * per_key;
    wait_until("the round's records counted", || ledger(read, brokers).len() >= want);
    let all = ledger(read, brokers);
    assert_eq!(all.len(), want, "one count per record, no more");
    all[before..].to_vec()
}

#[test]
fn state_carries_over_swaps_and_rollbacks_and_a_deploy_can_empty_it_for_good() {
    swaps("");
}

/// The same with exactly-once on Tansu: the tombstones go in the partition's
/// transaction, and what is read is what a read_committed reader sees.
#[test]
fn exactly_once_state_carries_over_swaps_and_a_deploy_can_empty_it_for_good() {
    swaps("delivery = \"exactly-once\"\n");
}

fn swaps(delivery: &str) {
    let exactly_once = !delivery.is_empty();
    let (embedded, tansu);
    let broker: &dyn Broker = if exactly_once {
        tansu = Tansu::start();
        &tansu
    } else {
        embedded = Embedded::start();
        &embedded
    };
    let brokers = broker.brokers();
    let read = move |brokers: &str, topic: &str| {
        if exactly_once { read_committed(brokers, topic) } else { read_all(brokers, topic) }
    };
    for (topic, partitions) in [("input", PARTITIONS), ("ledger", 1), ("swap.state", PARTITIONS)] {
        broker.create_topic(topic, partitions);
    }
    let (v1, v2) = (build("ferry-example-counter"), build("ferry-guest-counter-v2"));
    let cache = tempfile::tempdir().unwrap();
    let extra = format!("{delivery}[pipeline.settings]\noutput_topic = \"ledger\"\n[pipeline.state]\n");
    let spec = |component| HostSpec {
        brokers: &brokers,
        group: "state-swap",
        component,
        cache_dir: cache.path(),
        admin: true,
        extra: &extra,
    };
    // `a` keys are counted in every round, `b` keys only before the empty deploy and
    // after the restart.
    let a = ["p0-a0", "p0-a1", "p1-a0", "p1-a1"];
    let b = ["p0-b0", "p1-b0"];
    let ab = [a.as_slice(), b.as_slice()].concat();

    let host = start(&spec(&v1.path));
    let first = round(&read, &brokers, &ab, 3);
    assert_eq!(by_key(&first), expected(&ab, "", 1, 3), "v1 counts from nothing");

    let answer = admin(&host, Request::Deploy(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["empty_state"], false);
    let second = round(&read, &brokers, &ab, 2);
    assert_eq!(by_key(&second), expected(&ab, "v2:", 4, 5), "v2 goes on from v1's counts");

    let answer = admin(&host, Request::Rollback);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let third = round(&read, &brokers, &ab, 1);
    assert_eq!(by_key(&third), expected(&ab, "", 6, 6), "the rollback to v1 keeps v2's counts");

    let answer = admin(&host, Request::DeployWithEmptyState(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["empty_state"], true, "{}", answer.body);
    let fourth = round(&read, &brokers, &a, 2);
    assert_eq!(by_key(&fourth), expected(&a, "v2:", 1, 2), "v2 deployed with empty state counts from 1");
    stop(host);

    // A restart restores from the changelog: the `b` keys' tombstones are there.
    let host = start(&spec(&v2.path));
    let fifth = round(&read, &brokers, &ab, 1);
    let mut want = expected(&a, "v2:", 3, 3);
    want.extend(expected(&b, "v2:", 1, 1));
    assert_eq!(by_key(&fifth), want, "after the restart: a goes on from the empty deploy, b starts again");
    stop(host);

    // The changelog's last word per key is its count now.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for entry in read(&brokers, "swap.state") {
        if entry.value.is_empty() {
            last.remove(&entry.key);
            continue;
        }
        let bytes: [u8; 8] = entry.value.as_bytes().try_into().expect("a u64 count");
        last.insert(entry.key, u64::from_le_bytes(bytes));
    }
    let mut want: BTreeMap<String, u64> = a.iter().map(|k| (k.to_string(), 3)).collect();
    want.extend(b.iter().map(|k| (k.to_string(), 1)));
    assert_eq!(last, want, "the changelog's last count per key");
}
