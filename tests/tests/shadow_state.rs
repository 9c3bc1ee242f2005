//! Shadow versions of a pipeline with keyed state, built from source: the live
//! version is the counter (`examples/counter`); the shadows are
//! `tests/guests/counter-v2` (the same state, other outputs) and
//! `tests/guests/counter-skew` (counts every record twice: the wrong state).
//!
//! The shadow reads the live state as it was before each batch, so counter-v2's state
//! writes equal the live version's, counts the live version made before the shadow
//! came included; the skewed shadow's writes differ in every batch, and are dropped:
//! the live counts and the changelog go on as if no shadow had run.

mod shadow_support;
mod swap_support;

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_host::deploy::client::{Request, report_text};
use ferry_tests::{Broker as _, Embedded, read_all, wait_until};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use shadow_support::wait_for_comparison;
use swap_support::*;

const KEYS: [&str; 4] = ["p0-a", "p0-b", "p1-a", "p1-b"];

/// Produces `per_key` records of each key to the partition its name says.
fn produce(brokers: &str, per_key: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create().expect("producer");
    for _ in 0..per_key {
        for key in KEYS {
            let partition: i32 = key[1..2].parse().expect("p<partition>-...");
            producer.send(BaseRecord::to("input").partition(partition).key(key).payload("x")).expect("queued");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("acknowledged");
}

/// One round: produces, waits for a count per record, returns the counts per key.
fn round(brokers: &str, per_key: usize) -> BTreeMap<String, Vec<u64>> {
    let before = read_all(brokers, "ledger").len();
    produce(brokers, per_key);
    let want = before + KEYS.len() * per_key;
    wait_until("the round's records counted", || read_all(brokers, "ledger").len() >= want);
    let all = read_all(brokers, "ledger");
    assert_eq!(all.len(), want, "one count per record, no more");
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &all[before..] {
        counts.entry(r.key.clone()).or_default().push(r.value.parse().expect("a count"));
    }
    counts.values_mut().for_each(|v| v.sort());
    counts
}

fn expected(from: u64, to: u64) -> BTreeMap<String, Vec<u64>> {
    KEYS.iter().map(|k| (k.to_string(), (from..=to).collect())).collect()
}

#[test]
fn a_shadow_reads_the_live_state_and_its_writes_are_compared_then_dropped() {
    let broker = Embedded::start();
    for (topic, partitions) in [("input", 2), ("ledger", 1), ("swap.state", 2)] {
        broker.create_topic(topic, partitions);
    }
    let brokers = broker.brokers();
    let (live, same_state, skew) =
        (build("ferry-example-counter"), build("ferry-guest-counter-v2"), build("ferry-guest-counter-skew"));
    let cache = tempfile::tempdir().unwrap();
    let extra = "shadow = { max_time_share = 100 }\n[pipeline.settings]\noutput_topic = \"ledger\"\n[pipeline.state]\n";
    let host = start(&HostSpec {
        brokers: &brokers,
        group: "shadow-state",
        component: &live.path,
        cache_dir: cache.path(),
        admin: true,
        extra,
    });
    assert_eq!(round(&brokers, 3), expected(1, 3), "the counter alone");

    // The same state, other outputs: it goes on from the live counts.
    let answer = admin(&host, Request::DeployShadow(&same_state.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(round(&brokers, 2), expected(4, 5), "the live counts go on");
    let r = wait_for_comparison(&host, 8);
    println!("same state: {}", report_text(&r).lines().take(3).collect::<Vec<_>>().join(" | "));
    assert_eq!(r["skipped"], 0, "{r}");
    assert!(r["state_batches"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["state_different"], 0, "the shadow read the live state: {r}");
    assert_eq!(r["different"], 8, "outputs `v2:<n>` against `<n>`: {r}");
    let diff = r["differences"][0]["diff"].as_str().unwrap();
    assert!(diff.contains("\"v2:4\"") || diff.contains("\"v2:5\""), "{diff}");

    // The wrong state: every batch's writes differ, and none of them reach the live
    // state or the changelog.
    let answer = admin(&host, Request::DeployShadow(&skew.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(round(&brokers, 2), expected(6, 7), "the live counts go on, untouched by the shadow");
    let r = wait_for_comparison(&host, 8);
    println!("skewed: {}", report_text(&r).lines().take(3).collect::<Vec<_>>().join(" | "));
    assert!(r["state_batches"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["state_different"], r["state_batches"], "{r}");
    let state_diffs: Vec<&serde_json::Value> =
        r["differences"].as_array().unwrap().iter().filter(|d| d["aspects"] == serde_json::json!(["state"])).collect();
    assert!(!state_diffs.is_empty(), "{r}");
    assert!(state_diffs[0]["diff"].as_str().unwrap().contains("- state \"p"), "{}", state_diffs[0]);
    let answer = admin(&host, Request::ShadowDiscard);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(round(&brokers, 1), expected(8, 8));
    stop(host);

    // The changelog holds the live counts alone: every value it ever held for a key
    // is one of 1..=8, in order.
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in read_all(&brokers, "swap.state") {
        let bytes: [u8; 8] = entry.value.as_bytes().try_into().expect("a u64 count");
        seen.entry(entry.key).or_default().push(u64::from_le_bytes(bytes));
    }
    for (key, counts) in &seen {
        assert!(counts.windows(2).all(|w| w[0] < w[1]) && counts.last() == Some(&8), "{key}: {counts:?}");
    }
    assert_eq!(seen.len(), KEYS.len());
}
