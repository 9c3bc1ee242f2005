//! Keyed state from Python and JavaScript components, built from source with their
//! SDKs' build scripts, through `ferry run` processes around a mock broker in a
//! process of its own:
//!
//! - the counter example in both languages counts on across a restart of the host
//!   (restored from the changelog): for every key, the counts emitted are exactly
//!   1..=n, each once, and the changelog holds each key's final count in the Rust
//!   SDK's u64 encoding;
//! - a Python guest that writes state until refused gets the host's refusal as the
//!   SDK's error, while its keys that fit and the other partition count on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use ferry_host::devtools::GuestLanguage;
use ferry_tests::{
    Broker as _, FerryProcess, MockBrokerProcess, polyglot_guest, read_all, unique, wait_until, write_config,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 2;
/// Keys per partition: each key lives in one partition (its name says which).
const KEYS: usize = 5;

/// One stateful pipeline of `component` from `input` to `output`, its changelog the
/// default `<name>.state`.
fn pipeline(component: &std::path::Path, input: &str, output: &str, name: &str, extra: &str, state: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{name}-group"
        component = "{component}"
        output_topics = ["{output}"]
        max_wait_ms = 20
        commit = {{ policy = "per-batch" }}
        limits = {{ memory_mib = 128 }}
        {extra}
        [pipeline.settings]
        output_topic = "{output}"
        [pipeline.state]
        {state}
        "#,
        component = component.display()
    )
}

/// Produces `(partition, key, value)` records in order.
fn produce(brokers: &str, topic: &str, records: &[(i32, String, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "0").create().expect("producer");
    for (partition, key, value) in records {
        producer.send(BaseRecord::to(topic).partition(*partition).key(key).payload(value)).expect("queued");
    }
    producer.flush(Duration::from_secs(60)).expect("acknowledged");
}

/// Records `from..from + count`: record i to partition i % PARTITIONS with key
/// `p<partition>-k<i / PARTITIONS % KEYS>`.
fn clicks(from: usize, count: usize) -> Vec<(i32, String, String)> {
    (from..from + count)
        .map(|i| {
            let partition = (i as i32) % PARTITIONS;
            (partition, format!("p{partition}-k{}", i / PARTITIONS as usize % KEYS), format!("record {i}"))
        })
        .collect()
}

/// How many records each key has.
fn truth(records: &[(i32, String, String)]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, key, _) in records {
        *counts.entry(key.clone()).or_default() += 1;
    }
    counts
}

/// Every value emitted per key, sorted.
fn emitted(brokers: &str, output: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for read in read_all(brokers, output) {
        by_key.entry(read.key).or_default().push(read.value);
    }
    by_key
}

/// Every count emitted per key, sorted.
fn counts(brokers: &str, output: &str) -> BTreeMap<String, Vec<u64>> {
    emitted(brokers, output)
        .into_iter()
        .map(|(key, values)| {
            let mut counts: Vec<u64> = values.iter().map(|v| v.parse().expect("a count")).collect();
            counts.sort_unstable();
            (key, counts)
        })
        .collect()
}

/// 1..=n for every key.
fn once_each(truth: &BTreeMap<String, u64>) -> BTreeMap<String, Vec<u64>> {
    truth.iter().map(|(key, &n)| (key.clone(), (1..=n).collect())).collect()
}

#[test]
fn python_and_javascript_counts_carry_on_exactly_across_a_restart() {
    let languages = [
        ("python", polyglot_guest(GuestLanguage::Python, "examples/python/counter")),
        ("js", polyglot_guest(GuestLanguage::JavaScript, "examples/js/counter")),
    ];
    let broker = Mutex::new(MockBrokerProcess::start());
    let brokers = broker.brokers();
    let input = unique("clicks");
    broker.create_topic(&input, PARTITIONS);
    let mut text = format!("brokers = \"{brokers}\"\n");
    let mut pipelines = Vec::new();
    for (lang, component) in &languages {
        let (name, output) = (unique(&format!("counter-{lang}")), unique(&format!("counts-{lang}")));
        broker.create_topic(&output, 1);
        broker.create_topic(&format!("{name}.state"), PARTITIONS);
        text.push_str(&pipeline(component, &input, &output, &name, "", ""));
        pipelines.push((*lang, name, output));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let all_counted = |n: usize| {
        let brokers = brokers.clone();
        let outputs: Vec<String> = pipelines.iter().map(|(_, _, output)| output.clone()).collect();
        move || outputs.iter().all(|output| read_all(&brokers, output).len() >= n)
    };

    let mut records = clicks(0, 60);
    produce(&brokers, &input, &records);
    let mut first = FerryProcess::start(&path);
    wait_until("both languages counted the first 60", all_counted(60));
    first.terminate();

    // Restarted: the counts go on from the changelog.
    records.extend(clicks(60, 60));
    produce(&brokers, &input, &records[60..]);
    let mut second = FerryProcess::start(&path);
    wait_until("both languages counted 120 after the restart", all_counted(120));
    second.terminate();
    assert!(second.log_text().contains("state restored"), "{}", second.log_text());

    let truth = truth(&records);
    for (lang, name, output) in &pipelines {
        assert_eq!(counts(&brokers, output), once_each(&truth), "{lang}: each key's counts, each once");
        // The changelog holds each key's last count, as the Rust SDK's put_u64 writes it.
        let mut last: BTreeMap<String, (i32, u64)> = BTreeMap::new();
        for read in read_all(&brokers, &format!("{name}.state")) {
            let bytes: [u8; 8] = read.value.as_bytes().try_into().expect("a u64 count");
            last.insert(read.key.clone(), (read.partition, u64::from_le_bytes(bytes)));
        }
        let expected: BTreeMap<String, (i32, u64)> =
            truth.iter().map(|(key, &n)| (key.clone(), (key[1..2].parse().expect("partition digit"), n))).collect();
        assert_eq!(last, expected, "{lang}: the changelog's last (partition, count) per key");
    }
}

/// Partition 0 fills its state: the guest's `fill` record writes 1 KiB values until
/// the host refuses one and reports the refusal it got (class, limit, message). Its
/// keys that already have a count go on counting (a same-size rewrite needs no
/// room), its new key is refused and dead-lettered, and partition 1 counts everything.
#[test]
fn a_python_guest_writing_state_until_refused_gets_the_error_and_the_other_partition_counts_on() {
    const PARTITION_BYTES: usize = 16 * 1024;
    let component = polyglot_guest(GuestLanguage::Python, "tests/guests/python/state-filler");
    let broker = Mutex::new(MockBrokerProcess::start());
    let brokers = broker.brokers();
    let (input, output, name, dlq) = (unique("clicks"), unique("counts"), unique("filler"), unique("dlq"));
    for (topic, partitions) in [(&input, PARTITIONS), (&output, 1), (&format!("{name}.state"), PARTITIONS), (&dlq, 1)] {
        broker.create_topic(topic, partitions);
    }
    let record = |p: i32, key: &str, value: &str| (p, key.to_owned(), value.to_owned());
    let mut records = Vec::new();
    for round in 0..6 {
        records.push(record(0, "p0-a", "x"));
        records.push(record(1, "p1-a", "x"));
        records.push(record(1, "p1-b", "x"));
        if round == 2 {
            records.push(record(0, "p0-fill", "fill"));
            records.push(record(0, "p0-new", "x"));
        }
    }
    produce(&brokers, &input, &records);
    let extra = format!(r#"failure = {{ on_failure = "dead-letter", dead_letter_topic = "{dlq}" }}"#);
    let state = format!("partition_bytes = {PARTITION_BYTES}");
    let dir = tempfile::tempdir().unwrap();
    let text = format!("brokers = \"{brokers}\"\n{}", pipeline(&component, &input, &output, &name, &extra, &state));
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    // Every record but the refused one is answered on the output.
    wait_until("every record answered or dead-lettered", || {
        read_all(&brokers, &output).len() >= records.len() - 1 && !read_all(&brokers, &dlq).is_empty()
    });
    ferry.terminate();

    let refusal = format!(
        "PartitionFull:{PARTITION_BYTES}:the partition's state would exceed its limit of {PARTITION_BYTES} bytes"
    );
    let mut got = emitted(&brokers, &output);
    assert_eq!(got.remove("p0-fill"), Some(vec![refusal]), "the guest got the host's refusal as its SDK's error");
    let expected: BTreeMap<String, Vec<String>> = ["p0-a", "p1-a", "p1-b"]
        .into_iter()
        .map(|key| (key.to_owned(), (1..=6).map(|n| n.to_string()).collect()))
        .collect();
    for values in got.values_mut() {
        values.sort_by_key(|v| v.parse::<u64>().expect("a count"));
    }
    assert_eq!(got, expected, "counts per key: partition 1 all, partition 0 its keys that had room");
    let letters: BTreeSet<(i32, String)> = read_all(&brokers, &dlq)
        .into_iter()
        .map(|r| (r.header("ferry.partition").expect("a source partition").parse().expect("a number"), r.key))
        .collect();
    assert_eq!(letters, BTreeSet::from([(0, "p0-new".to_owned())]), "only the new key of the full partition");
}
