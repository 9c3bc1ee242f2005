//! Keyed state end to end: the counter example (built from source) counts per key in
//! state, through `ferry run` processes around a mock broker in a process of its
//! own. Its counts must carry on across a restart of the host (restored from the
//! changelog) and across a rebalance to a second member: for every key, the counts
//! emitted are exactly 1..=n, each once, where n is how many records of that key
//! were produced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use ferry_tests::raw_log::read_committed;
use ferry_tests::{
    Broker as _, FerryProcess, MockBrokerProcess, Tansu, guest, lag, read_all, unique, wait_until, write_config,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 2;
/// Keys per partition: each key lives in one partition (its name says which).
const KEYS: usize = 5;

fn config(brokers: &str, input: &str, output: &str, name: &str, group: &str) -> String {
    config_with(brokers, input, output, name, group, "", "")
}

/// `pipeline` goes into the pipeline's table, `state` into its `[pipeline.state]`.
fn config_with(
    brokers: &str,
    input: &str,
    output: &str,
    name: &str,
    group: &str,
    pipeline: &str,
    state: &str,
) -> String {
    let component = guest("ferry-example-counter");
    format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{group}"
        component = "{component}"
        output_topics = ["{output}"]
        max_wait_ms = 20
        commit = {{ policy = "per-batch" }}
        {pipeline}
        [pipeline.settings]
        output_topic = "{output}"
        [pipeline.state]
        {state}
        "#,
        component = component.display()
    )
}

/// Produces `count` records, record i to partition i % `partitions` with key
/// `p<partition>-k<i / partitions % KEYS>`, numbered from `from`; returns the keys.
fn produce(brokers: &str, topic: &str, partitions: i32, from: usize, count: usize) -> Vec<String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        // One record per batch: Tansu's high watermark counts batches.
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    let mut keys = Vec::new();
    for i in from..from + count {
        let partition = (i as i32) % partitions;
        let key = format!("p{partition}-k{}", i / partitions as usize % KEYS);
        let value = format!("record {i}");
        producer.send(BaseRecord::to(topic).partition(partition).key(&key).payload(&value)).expect("queued");
        keys.push(key);
    }
    producer.flush(Duration::from_secs(60)).expect("acknowledged");
    keys
}

/// How many records each key has.
fn truth(keys: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key.clone()).or_default() += 1;
    }
    counts
}

/// Every count emitted per key.
fn emitted(brokers: &str, output: &str) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for read in read_all(brokers, output) {
        by_key.entry(read.key).or_default().push(read.value.parse().expect("a count"));
    }
    by_key
}

/// Every key's emitted counts are exactly 1..=n, each once.
fn assert_counted_once(brokers: &str, output: &str, truth: &BTreeMap<String, u64>) {
    let emitted = emitted(brokers, output);
    let keys: BTreeSet<&String> = emitted.keys().collect();
    assert_eq!(keys, truth.keys().collect::<BTreeSet<_>>(), "the keys counted");
    for (key, &n) in truth {
        let mut counts = emitted[key].clone();
        counts.sort_unstable();
        assert_eq!(counts, (1..=n).collect::<Vec<_>>(), "the counts emitted for {key}");
    }
}

/// The changelog holds each key's final count (the last record of the key).
fn assert_changelog(brokers: &str, changelog: &str, truth: &BTreeMap<String, u64>) {
    let mut last: BTreeMap<String, (i32, u64)> = BTreeMap::new();
    for read in read_all(brokers, changelog) {
        let bytes: [u8; 8] = read.value.as_bytes().try_into().expect("a u64 count");
        last.insert(read.key.clone(), (read.partition, u64::from_le_bytes(bytes)));
    }
    let expected: BTreeMap<String, (i32, u64)> =
        truth.iter().map(|(key, &n)| (key.clone(), (key[1..2].parse().expect("partition digit"), n))).collect();
    assert_eq!(last, expected, "the changelog's last (partition, count) per key");
}

fn output_len(brokers: &str, output: &str) -> usize {
    read_all(brokers, output).len()
}

#[test]
fn counts_carry_on_after_a_restart_and_a_rebalance() {
    let broker = Mutex::new(MockBrokerProcess::start());
    let brokers = broker.brokers();
    let (input, output, name, group) = (unique("clicks"), unique("counts"), unique("counter"), unique("g"));
    let changelog = format!("{name}.state");
    broker.create_topic(&input, PARTITIONS);
    broker.create_topic(&output, 1);
    broker.create_topic(&changelog, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config(&brokers, &input, &output, &name, &group));

    // One member counts the first records.
    let mut keys = produce(&brokers, &input, PARTITIONS, 0, 100);
    let mut first = FerryProcess::start(&path);
    wait_until("the first 100 counted", || output_len(&brokers, &output) >= 100);
    first.terminate();
    assert!(first.log_text().contains("state restored"), "{}", first.log_text());

    // Restarted: the counts go on from the changelog.
    keys.extend(produce(&brokers, &input, PARTITIONS, 100, 100));
    let mut second = FerryProcess::start(&path);
    wait_until("200 counted after the restart", || output_len(&brokers, &output) >= 200);
    assert_counted_once(&brokers, &output, &truth(&keys));

    // A second member joins: a partition moves to it, and its counts go on there.
    let third = FerryProcess::start(&path);
    wait_until("the new member is given a partition", || third.log_text().contains("partitions assigned"));
    keys.extend(produce(&brokers, &input, PARTITIONS, 200, 100));
    wait_until("the new member restores its partition's state", || third.log_text().contains("state restored"));
    wait_until("300 counted across the two members", || output_len(&brokers, &output) >= 300);
    second.terminate();
    drop(third);
    assert_counted_once(&brokers, &output, &truth(&keys));
    assert_changelog(&brokers, &changelog, &truth(&keys));
}

/// Produces `(partition, key)` records in order.
fn produce_keys(brokers: &str, topic: &str, records: &[(i32, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "0").create().expect("producer");
    for (partition, key) in records {
        producer.send(BaseRecord::to(topic).partition(*partition).key(key).payload("x")).expect("queued");
    }
    producer.flush(Duration::from_secs(60)).expect("acknowledged");
}

/// A partition whose state is full gets its writes refused (the counter rejects
/// those records, which are dead-lettered) while its keys that fit go on counting
/// and the other partition counts everything; and the same key in two partitions is
/// two counts, one per partition's state.
#[test]
fn a_full_partition_is_refused_its_writes_and_partitions_never_share_state() {
    const PARTITION_BYTES: usize = 1024;
    // What the host charges an entry: a fixed 128 bytes, the key (5 bytes here) and
    // the counter's 8-byte count.
    const FITS: usize = PARTITION_BYTES / (128 + 5 + 8);
    let broker = Mutex::new(MockBrokerProcess::start());
    let brokers = broker.brokers();
    let (input, output, name, group, dlq) =
        (unique("clicks"), unique("counts"), unique("counter"), unique("g"), unique("dlq"));
    for (topic, partitions) in [(&input, PARTITIONS), (&output, 1), (&format!("{name}.state"), PARTITIONS), (&dlq, 1)] {
        broker.create_topic(topic, partitions);
    }
    let mut records: Vec<(i32, String)> = (0..30).map(|k| (0, format!("p0-k{k}"))).collect();
    records.push((0, "p0-k0".to_owned()));
    for round in 0..10 {
        for k in 0..3 {
            records.push((1, format!("p1-k{k}")));
        }
        if round == 0 {
            // The same key as partition 0's first: counted apart.
            records.push((1, "p0-k0".to_owned()));
        }
    }
    produce_keys(&brokers, &input, &records);
    let pipeline = format!(r#"failure = {{ on_failure = "dead-letter", dead_letter_topic = "{dlq}" }}"#);
    let state = format!("partition_bytes = {PARTITION_BYTES}");
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(&brokers, &input, &output, &name, &group, &pipeline, &state);
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    let refused: BTreeSet<String> = (FITS..30).map(|k| format!("p0-k{k}")).collect();
    let counted = records.len() - refused.len();
    wait_until("every record counted or dead-lettered", || {
        output_len(&brokers, &output) >= counted && read_all(&brokers, &dlq).len() >= refused.len()
    });
    ferry.terminate();

    let letters: BTreeSet<String> = read_all(&brokers, &dlq).into_iter().map(|r| r.key).collect();
    assert_eq!(letters, refused, "the records whose keys no longer fit are dead-lettered, and only they");
    let mut expected: BTreeMap<String, Vec<u64>> = (0..FITS).map(|k| (format!("p0-k{k}"), vec![1])).collect();
    expected.insert("p0-k0".to_owned(), vec![1, 1, 2]);
    for k in 0..3 {
        expected.insert(format!("p1-k{k}"), (1..=10).collect());
    }
    let mut got = emitted(&brokers, &output);
    for counts in got.values_mut() {
        counts.sort_unstable();
    }
    assert_eq!(got, expected, "counts per key: p0-k0 twice in partition 0 and once in partition 1");
    let log = ferry.log_text();
    assert!(log.contains("partition's state would exceed its limit of 1024 bytes"), "{log}");
}

/// Exactly-once on Tansu, with SIGKILLs: the member that owns the one input
/// partition is killed mid-stream, again and again, and another takes over from the
/// committed offset with the state restored from the changelog. What a
/// `read_committed` reader sees of the counts (judged by the transaction markers) is,
/// for every key, exactly 1..=n, each once: no record counted twice, none lost.
#[test]
fn exactly_once_counts_are_exact_through_sigkills_on_tansu() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    let (input, output, name, group) = (unique("clicks"), unique("counts"), unique("counter"), unique("g"));
    // One input partition: Tansu holds back committed offsets when two transactional
    // writers share an output partition (see tests/src/exactly_once.rs).
    for topic in [&input, &output, &format!("{name}.state")] {
        tansu.create_topic(topic, 1);
    }
    let pipeline = "delivery = \"exactly-once\"";
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(&brokers, &input, &output, &name, &group, pipeline, "")
        .replace("commit = { policy = \"per-batch\" }", "commit = { policy = \"interval\", interval_ms = 200 }");
    let path = write_config(dir.path(), &text);
    let counted = |brokers: &str| read_committed(brokers, &output).len();
    let mut keys = Vec::new();
    let mut members = vec![FerryProcess::start(&path), FerryProcess::start(&path)];
    let mut kills = 0;
    for round in 0..3 {
        keys.extend(produce(&brokers, &input, 1, round * 40, 40));
        let before = counted(&brokers);
        wait_until("some of this round's records counted", || counted(&brokers) >= before + 10);
        // Kill the member that owns the partition (by its last assignment).
        let owns = |m: &FerryProcess| {
            let log = m.log_text();
            log.lines().rev().find(|l| l.contains("partitions assigned")).is_some_and(|l| l.contains(&input))
        };
        let owner = members.iter().position(owns).expect("a member owns the partition");
        members.remove(owner).kill9();
        kills += 1;
        members.push(FerryProcess::start(&path));
    }
    assert_eq!(kills, 3);
    let total = keys.len();
    wait_until("every record counted once", || counted(&brokers) >= total);
    for mut member in members {
        member.terminate();
    }
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for read in read_committed(&brokers, &output) {
        by_key.entry(read.key).or_default().push(read.value.parse().expect("a count"));
    }
    for counts in by_key.values_mut() {
        counts.sort_unstable();
    }
    let expected: BTreeMap<String, Vec<u64>> = truth(&keys).into_iter().map(|(k, n)| (k, (1..=n).collect())).collect();
    assert_eq!(by_key, expected, "each key's committed counts");
}

/// At-least-once on Tansu, with SIGKILLs: the member that owns the one input
/// partition is killed mid-stream, again and again, and another takes over from the
/// committed offset with the state restored from the changelog. The changelog may
/// hold writes of batches past that offset (acknowledged before the kill, not yet
/// committed), so those records are counted again. For every key: no count is lost
/// (its final count is at least the true count), every count emitted is one of
/// 1..=final, the changelog ends at the final count, and the excess is at most the
/// records of that key in the replayed windows: from the committed offset at each
/// kill to what had been produced by then.
#[test]
fn at_least_once_counts_are_never_short_and_every_excess_is_a_replay_on_tansu() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    let (input, output, name, group) = (unique("clicks"), unique("counts"), unique("counter"), unique("g"));
    let changelog = format!("{name}.state");
    for topic in [&input, &output, &changelog] {
        tansu.create_topic(topic, 1);
    }
    // Commits every 500 ms, so a kill finds records past the bookmark to replay.
    let pipeline = "kafka = { \"session.timeout.ms\" = \"6000\" }";
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(&brokers, &input, &output, &name, &group, pipeline, "")
        .replace("commit = { policy = \"per-batch\" }", "commit = { policy = \"interval\", interval_ms = 500 }");
    let path = write_config(dir.path(), &text);
    let counted = |brokers: &str| raw_all(brokers, &output).len();
    let mut keys = Vec::new();
    let mut members = vec![FerryProcess::start(&path), FerryProcess::start(&path)];
    // Per kill: the committed offset then, and how many records were produced by then
    // (offset i is record i: one record per producer batch on Tansu).
    let mut windows: Vec<(i64, usize)> = Vec::new();
    let committed = |brokers: &str| lag(brokers, &group, &input).first().and_then(|l| l.committed).unwrap_or(0);
    for round in 0..3 {
        keys.extend(produce(&brokers, &input, 1, round * 40, 40));
        let before = counted(&brokers);
        wait_until("some of this round's records counted", || counted(&brokers) >= before + 10);
        let owns = |m: &FerryProcess| {
            let log = m.log_text();
            log.lines().rev().find(|l| l.contains("partitions assigned")).is_some_and(|l| l.contains(&input))
        };
        let owner = members.iter().position(owns).expect("a member owns the partition");
        members.remove(owner).kill9();
        windows.push((committed(&brokers), keys.len()));
        members.push(FerryProcess::start(&path));
    }
    let truth = truth(&keys);
    let emitted = |brokers: &str| -> BTreeMap<String, Vec<u64>> {
        let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for read in raw_all(brokers, &output) {
            by_key.entry(read.key).or_default().push(read.value.parse().expect("a count"));
        }
        by_key
    };
    let finals = |brokers: &str| -> BTreeMap<String, u64> {
        emitted(brokers).into_iter().map(|(k, counts)| (k, counts.into_iter().max().unwrap_or(0))).collect()
    };
    wait_until("every key counted at least as often as it was produced", || {
        let finals = finals(&brokers);
        truth.iter().all(|(key, n)| finals.get(key).is_some_and(|f| f >= n))
    });
    wait_until("everything committed", || lag(&brokers, &group, &input).iter().all(|l| l.lag() == 0));
    for mut member in members {
        member.terminate();
    }

    let emitted = emitted(&brokers);
    let finals = finals(&brokers);
    assert_eq!(finals.keys().collect::<BTreeSet<_>>(), truth.keys().collect::<BTreeSet<_>>(), "the keys counted");
    let mut replayed: BTreeMap<String, u64> = BTreeMap::new();
    for &(committed, produced) in &windows {
        for key in &keys[committed as usize..produced] {
            *replayed.entry(key.clone()).or_default() += 1;
        }
    }
    let mut excess_total = 0;
    for (key, &n) in &truth {
        let last = finals[key];
        let window = replayed.get(key).copied().unwrap_or(0);
        assert!(last >= n, "{key}: final count {last} below its {n} records");
        assert!(
            last - n <= window,
            "{key}: final count {last} is {} over its {n} records, more than the {window} of its records replayed",
            last - n
        );
        excess_total += last - n;
        let counts: BTreeSet<u64> = emitted[key].iter().copied().collect();
        assert!(counts.iter().all(|c| (1..=last).contains(c)), "{key}: counts emitted {counts:?}, final {last}");
    }
    eprintln!(
        "at-least-once through {} kills: {} records, windows (committed, produced) {windows:?}, {excess_total} counted again",
        windows.len(),
        keys.len()
    );
    // The changelog ends at each key's final count.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for read in raw_all(&brokers, &changelog) {
        let bytes: [u8; 8] = read.value.as_bytes().try_into().expect("a u64 count");
        last.insert(read.key, u64::from_le_bytes(bytes));
    }
    assert_eq!(last, finals, "the changelog's last count per key");
}

/// Every record of `topic`, as Tansu stores it (its high watermark counts batches,
/// which a client reading to it would take for records).
fn raw_all(brokers: &str, topic: &str) -> Vec<ferry_tests::Read> {
    ferry_tests::raw_log::read_logs(brokers, topic)
        .into_iter()
        .flat_map(|(_, log)| log.records)
        .map(|r| r.read)
        .collect()
}

/// A changelog of a million keys (produced directly, over 8 partitions) is
/// restored before each partition's first batch: the counter goes on from each
/// restored count, and the log says how much each partition read. (8 partitions of
/// 125,000: librdkafka's mock broker keeps about 186,000 records of a partition and
/// drops the oldest.)
#[test]
fn a_million_keys_are_restored_before_the_first_batch() {
    const PARTITIONS_RESTORED: i32 = 8;
    const KEYS_PER_PARTITION: u64 = 125_000;
    let broker = Mutex::new(MockBrokerProcess::start());
    let brokers = broker.brokers();
    let (input, output, name, group) = (unique("clicks"), unique("counts"), unique("counter"), unique("g"));
    let changelog = format!("{name}.state");
    for topic in [&input, &changelog] {
        broker.create_topic(topic, PARTITIONS_RESTORED);
    }
    broker.create_topic(&output, 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let key_of = |partition: i32, i: u64| format!("p{partition}-key-{i:07}");
    for partition in 0..PARTITIONS_RESTORED {
        for i in 0..KEYS_PER_PARTITION {
            let (key, value) = (key_of(partition, i), i.to_le_bytes());
            let mut record = BaseRecord::to(&changelog).partition(partition).key(&key).payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("acknowledged");
    let reader: rdkafka::consumer::BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", unique("r")).create().expect("reader");
    for partition in 0..PARTITIONS_RESTORED {
        let (low, end) =
            rdkafka::consumer::Consumer::fetch_watermarks(&reader, &changelog, partition, Duration::from_secs(10))
                .expect("watermarks");
        assert_eq!((low, end), (0, KEYS_PER_PARTITION as i64), "the broker holds partition {partition} whole");
    }
    // A probe per partition, each a key restored with a different count.
    let probes: Vec<(i32, String)> = (0..PARTITIONS_RESTORED).map(|p| (p, key_of(p, 42 + 10_007 * p as u64))).collect();
    produce_keys(&brokers, &input, &probes);
    let text = config_with(&brokers, &input, &output, &name, &group, "", "partition_bytes = 67108864");
    let dir = tempfile::tempdir().unwrap();
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &text));
    wait_until("every probe counted", || output_len(&brokers, &output) >= probes.len());
    ferry.terminate();
    let counts = emitted(&brokers, &output);
    let expected: BTreeMap<String, Vec<u64>> =
        probes.iter().map(|(p, key)| (key.clone(), vec![43 + 10_007 * *p as u64])).collect();
    assert_eq!(counts, expected, "each probe's restored count, plus one");
    let log = ferry.log_text();
    let restores: Vec<&str> = log.lines().filter(|l| l.contains("state restored")).collect();
    for line in &restores {
        eprintln!("{line}");
    }
    let whole = format!("records={KEYS_PER_PARTITION} keys={KEYS_PER_PARTITION}");
    let restored_partitions: BTreeSet<i32> = (0..PARTITIONS_RESTORED)
        .filter(|p| restores.iter().any(|l| l.contains(&format!("partition={p} ")) && l.contains(&whole)))
        .collect();
    assert_eq!(restored_partitions, (0..PARTITIONS_RESTORED).collect(), "each partition restored whole: {restores:?}");
}

/// `ferry check` names the state import and what it gets.
#[test]
fn ferry_check_shows_the_state_capability() {
    let out = std::process::Command::new(ferry_tests::ferry_bin())
        .arg("check")
        .arg(guest("ferry-example-counter"))
        .output()
        .expect("ferry check runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let mut lines = text.lines().skip_while(|l| !l.contains("ferry:processor/state@0.2.0"));
    assert!(lines.next().is_some(), "the import is listed: {text}");
    let what = lines.next().unwrap_or_default();
    assert!(what.contains("linked: keyed state of the batch's input partition"), "{text}");
}

/// Tansu reports a partition's high watermark as one past the base offset of its
/// last record batch, not past its last record. A changelog that ferry's producers
/// wrote in batches of many records (they batch unless told otherwise) must still
/// restore whole: every key at the value of its last record, none older.
#[test]
fn tansu_a_changelog_written_in_batches_of_many_records_restores_whole() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    let topic = unique("changelog");
    tansu.create_topic(&topic, 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        // Many records per batch, as a busy pipeline writes them.
        .set("linger.ms", "200")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let mut truth: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..3_000u64 {
        let key = format!("k{}", i % 700).into_bytes();
        let value = i.to_le_bytes().to_vec();
        producer.send(BaseRecord::to(&topic).key(&key).payload(&value)).expect("queued");
        truth.insert(key, value);
        if i % 1_000 == 999 {
            // A few batches, each of many records.
            producer.flush(Duration::from_secs(30)).expect("flushed");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
    let config = ferry_host::pipeline::state::restore_config(&brokers, &BTreeMap::new());
    let (store, records) = ferry_host::pipeline::state::restore_partition(&config, &topic, 0).expect("restored");
    let restored: BTreeMap<Vec<u8>, Vec<u8>> = store.entries().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    let stale: Vec<String> = truth
        .iter()
        .filter(|(k, v)| restored.get(*k) != Some(*v))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        stale.is_empty(),
        "{} of {} keys restored stale or missing after {records} records: {stale:?}",
        stale.len(),
        truth.len()
    );
    assert_eq!(restored.len(), truth.len(), "no key restored that was never written");
}
