//! Hot swaps under load, proven with a ledger: every record the guest processes is
//! written to the `ledger` topic tagged with the build that processed it (see
//! `tests/guests/versioned-v1`), and a sampler records the group's committed offsets
//! from the broker as the test runs.
//!
//! Host A starts on v1 while a steady stream flows; v2 is deployed to it. Then host B
//! joins the group (a rebalance) running v3, and A is sent back to v1 at that moment.
//! Each host's builds are its own (A: v1, v2; B: v3), so the tag also says which
//! member processed a record. Afterwards the ledger must show:
//!
//! - every input record processed, every partition committed to its log end;
//! - every batch on exactly one version (no batch split by a switch), A's switches in
//!   deploy order and never back and forth, and the steady-state switch seamless:
//!   the new version takes over at the next offset, nothing skipped or repeated;
//! - a record processed more than once only when it was delivered again after the
//!   rebalance, and only if the group's committed offset was still at or below it
//!   then: redelivered because it was uncommitted, never a committed record again.

mod swap_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_host::deploy::client::Request;
use ferry_host::kafka::output::send_when_room;
use ferry_tests::{Broker as _, Embedded, lag, read_all, wait_until};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use swap_support::*;

const PARTITIONS: i32 = 4;
const GROUP: &str = "hot-swap";
/// The stream: this many records every 10 ms, spread over the partitions.
const BURST: usize = 25;
/// Far below the ~170k records at which the embedded broker stalls.
const MAX_RECORDS: usize = 100_000;

/// One ledger entry: one record, one processing attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    partition: i32,
    offset: i64,
    tag: String,
    batch_first: i64,
    micros: u64,
}

fn parse(value: &str) -> Entry {
    let parts: Vec<&str> = value.split(':').collect();
    assert_eq!(parts.len(), 5, "malformed ledger entry {value:?}");
    Entry {
        partition: parts[0].parse().expect("partition"),
        offset: parts[1].parse().expect("offset"),
        tag: parts[2].to_owned(),
        batch_first: parts[3].parse().expect("batch start"),
        micros: parts[4].parse().expect("time"),
    }
}

/// Produces a steady stream until `stop`; returns how many records went to each
/// partition.
fn steady_stream(brokers: &str, stop: &AtomicBool) -> BTreeMap<i32, i64> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create().expect("producer");
    let mut sent = BTreeMap::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < MAX_RECORDS {
        for _ in 0..BURST {
            let partition = (n % PARTITIONS as usize) as i32;
            let key = format!("k{n}");
            let record = BaseRecord::to("input").partition(partition).key(&key).payload(&key);
            send_when_room(&producer, record).map_err(|(error, _)| error).expect("input record queued");
            *sent.entry(partition).or_insert(0) += 1;
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.flush(Duration::from_secs(60)).expect("stream acknowledged");
    sent
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// The group's committed offset of one partition, read from the broker: the value
/// held at some moment between `asked` and `answered` (µs since the epoch).
#[derive(Debug, Clone, Copy)]
struct Reading {
    asked: u64,
    answered: u64,
    partition: i32,
    committed: i64,
}

/// Readings every few milliseconds while the test runs.
type CommitLog = Vec<Reading>;

/// Samples the group's committed offsets until `done`. It asks the group coordinator
/// without joining the group.
fn sample_commits(brokers: &str, done: &AtomicBool, log: &Mutex<CommitLog>) {
    let client: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", GROUP).create().expect("sampler");
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition("input", partition);
    }
    while !done.load(Ordering::Relaxed) {
        let asked = now_micros();
        if let Ok(committed) = client.committed_offsets(list.clone(), Duration::from_secs(5)) {
            let answered = now_micros();
            for element in committed.elements() {
                if let Offset::Offset(committed) = element.offset() {
                    log.lock().unwrap().push(Reading { asked, answered, partition: element.partition(), committed });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_record_is_processed_by_exactly_one_version_through_swaps_and_a_rebalance() {
    let (v1, v2, v3) =
        (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"), build("ferry-guest-versioned-v3"));
    let broker = Embedded::start();
    broker.create_topic("input", PARTITIONS);
    broker.create_topic("ledger", PARTITIONS);
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let member = |component: &Build, admin: bool| {
        start(&HostSpec {
            brokers: &brokers,
            group: GROUP,
            component: &component.path,
            cache_dir: cache.path(),
            admin,
            extra: "",
        })
    };

    let (streaming_done, sampling_done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let commits = Arc::new(Mutex::new(CommitLog::new()));
    let stream = std::thread::spawn({
        let (brokers, done) = (brokers.clone(), streaming_done.clone());
        move || steady_stream(&brokers, &done)
    });
    let sampler = std::thread::spawn({
        let (brokers, done, commits) = (brokers.clone(), sampling_done.clone(), commits.clone());
        move || sample_commits(&brokers, &done, &commits)
    });

    let a = member(&v1, true);
    wait_until("A processes the stream on v1", || processed(&a) >= 1000);

    // 1. A swap under steady load.
    let answer = admin(&a, Request::Deploy(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until("A runs v2", || running(&a) == v2.digest);
    let mark = processed(&a);
    wait_until("A processes on v2", || processed(&a) >= mark + 1000);

    // 2. A swap during a rebalance: B joins the group, and A goes back to v1 at once.
    let rebalance_started = now_micros();
    let b = member(&v3, false);
    let answer = admin(&a, Request::Deploy(&v1.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["artifact"], "cache", "swapping back did not recompile: {}", answer.body);
    wait_until("B takes over partitions", || processed(&b) >= 500);
    wait_until("A runs v1 again", || running(&a) == v1.digest);
    let mark = processed(&a);
    wait_until("A processes on v1 after the rebalance", || processed(&a) >= mark + 500);

    streaming_done.store(true, Ordering::Relaxed);
    let produced = stream.join().expect("stream thread");
    wait_until("both members commit the log end", || {
        lag(&brokers, GROUP, "input").iter().all(|p| p.committed == Some(produced[&p.partition]))
    });
    sampling_done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    stop(a);
    stop(b);

    let ledger: Vec<Entry> = read_all(&brokers, "ledger").iter().map(|r| parse(&r.value)).collect();
    let commits = commits.lock().unwrap().clone();
    println!("{}", check_ledger(&ledger, &produced, &commits, rebalance_started));
}

/// Which member a tag belongs to.
fn member_of(tag: &str) -> &'static str {
    match tag {
        "v1" | "v2" => "A",
        "v3" => "B",
        other => panic!("unknown version tag {other:?}"),
    }
}

/// Records one member processed in a row from one partition, in processing order.
#[derive(Debug)]
struct Run<'a> {
    member: &'static str,
    entries: Vec<&'a Entry>,
}

impl Run<'_> {
    fn first(&self) -> &Entry {
        self.entries[0]
    }

    fn last(&self) -> &Entry {
        self.entries[self.entries.len() - 1]
    }
}

/// Checks the ledger against the stream and the commit log; returns a summary.
fn check_ledger(
    ledger: &[Entry],
    produced: &BTreeMap<i32, i64>,
    commits: &CommitLog,
    rebalance_started: u64,
) -> String {
    let mut report = format!("ledger: {} entries for {} records\n", ledger.len(), produced.values().sum::<i64>());

    // Every record processed at least once, nothing outside the stream.
    let seen: BTreeSet<(i32, i64)> = ledger.iter().map(|e| (e.partition, e.offset)).collect();
    for (&partition, &count) in produced {
        let missing: Vec<i64> = (0..count).filter(|o| !seen.contains(&(partition, *o))).collect();
        assert!(missing.is_empty(), "partition {partition}: offsets never processed: {missing:?}");
    }
    assert!(seen.iter().all(|(p, o)| produced.get(p).is_some_and(|n| o < n)), "ledger entries outside the stream");

    // Every batch on one version: what one version processed from a batch start is
    // exactly one contiguous batch. A batch split by a switch would leave the new
    // version records whose batch start it never saw.
    let mut batches: BTreeMap<(i32, i64, &str), Vec<i64>> = BTreeMap::new();
    for e in ledger {
        batches.entry((e.partition, e.batch_first, &e.tag)).or_default().push(e.offset);
    }
    for ((partition, first, tag), offsets) in &batches {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let whole = sorted.iter().zip(*first..).all(|(o, expected)| *o == expected);
        assert!(whole, "partition {partition}: the batch from {first} on {tag} is not one whole batch: {sorted:?}");
    }
    report += &format!("batches: {}, each on one version\n", batches.len());

    // A's versions in processing order: v1, v2, v1 — one switch per deploy.
    let mut a_entries: Vec<&Entry> = ledger.iter().filter(|e| member_of(&e.tag) == "A").collect();
    a_entries.sort_by_key(|e| e.micros);
    let mut a_tags: Vec<&str> = a_entries.iter().map(|e| e.tag.as_str()).collect();
    a_tags.dedup();
    assert_eq!(a_tags, ["v1", "v2", "v1"], "A's versions in processing order");

    for &partition in produced.keys() {
        let mut entries: Vec<&Entry> = ledger.iter().filter(|e| e.partition == partition).collect();
        entries.sort_by_key(|e| e.micros);
        // Runs: a member reading on, one offset after the other. A new run starts
        // where the member changes or the offsets go anywhere but one up.
        let mut runs: Vec<Run<'_>> = Vec::new();
        for e in entries {
            let member = member_of(&e.tag);
            match runs.last_mut() {
                Some(run) if run.member == member && e.offset == run.last().offset + 1 => run.entries.push(e),
                _ => runs.push(Run { member, entries: vec![e] }),
            }
        }

        // The steady-state switch (v1 to v2, no rebalance near) is seamless: inside
        // one run, v2's first record is the one after v1's last.
        let seamless = runs[0].entries.windows(2).any(|w| w[0].tag == "v1" && w[1].tag == "v2");
        assert!(seamless, "partition {partition}: v2 did not take over where v1 stopped: {:?}", summary(&runs));

        for pair in runs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let (last, start) = (before.last().offset, after.first().offset);
            assert!(
                start <= last + 1,
                "partition {partition}: offsets {} to {} skipped: {:?}",
                last + 1,
                start - 1,
                summary(&runs)
            );
            if start > last {
                continue; // a clean handover
            }
            // Processed again: it must be a delivery after the rebalance began, of
            // records the group had not committed. Readings answered before the second
            // delivery say where the group's bookmark stood; at least one of them was
            // asked after the first delivery.
            let again_at = after.first().micros;
            assert!(
                again_at > rebalance_started,
                "partition {partition}: records {start}..={last} processed twice before any rebalance"
            );
            let readings: Vec<&Reading> =
                commits.iter().filter(|r| r.partition == partition && r.answered < again_at).collect();
            let bookmark = readings.iter().map(|r| r.committed).max();
            let read_since = readings.iter().any(|r| r.asked > before.last().micros);
            assert!(
                read_since,
                "partition {partition}: no reading of the committed offsets between the two deliveries"
            );
            assert!(
                bookmark.is_none_or(|committed| committed <= start),
                "partition {partition}: {start}..={last} processed again although offset {bookmark:?} was committed"
            );
            let versions = |run: &Run<'_>| {
                let mut tags: Vec<&str> =
                    run.entries.iter().filter(|e| (start..=last).contains(&e.offset)).map(|e| e.tag.as_str()).collect();
                tags.dedup();
                tags.join("+")
            };
            report += &format!(
                "partition {partition}: {} records ({start}..={last}) processed by {} on {}, uncommitted \
                 (bookmark {bookmark:?}), delivered again after the rebalance to {} on {}\n",
                last - start + 1,
                before.member,
                versions(before),
                after.member,
                versions(after),
            );
        }
        report += &format!("partition {partition}: {}\n", summary(&runs).join(", "));
    }
    report += &format!("records processed more than once: {}\n", ledger.len() - seen.len());
    report
}

/// `member first..=last [versions]` per run.
fn summary(runs: &[Run<'_>]) -> Vec<String> {
    runs.iter()
        .map(|run| {
            let mut tags: Vec<&str> = run.entries.iter().map(|e| e.tag.as_str()).collect();
            tags.dedup();
            format!("{} {}..={} [{}]", run.member, run.first().offset, run.last().offset, tags.join("→"))
        })
        .collect()
}

/// A deploy through the admin API reaches every worker of a pipeline with
/// `workers = 2`. One host, two workers over four partitions, a steady stream; v2 is
/// deployed while both run v1. Afterwards the ledger must show every record
/// processed, every batch on one version, and on every partition (both workers' ones)
/// v1 up to one offset and v2 from the next on: no v1 batch after the switch.
#[test]
fn a_deploy_reaches_every_worker() {
    let (v1, v2) = (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"));
    let broker = Embedded::start();
    broker.create_topic("input", PARTITIONS);
    broker.create_topic("ledger", PARTITIONS);
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let host = start(&HostSpec {
        brokers: &brokers,
        group: GROUP,
        component: &v1.path,
        cache_dir: cache.path(),
        admin: true,
        extra: "workers = 2",
    });
    let workers = || host.pipelines[0].workers.iter().map(|w| w.stats.snapshot()).collect::<Vec<_>>();
    let worker_processed =
        || -> Vec<u64> { workers().iter().map(|s| s.partitions.values().map(|p| p.processed).sum()).collect() };

    let streaming_done = Arc::new(AtomicBool::new(false));
    let stream = std::thread::spawn({
        let (brokers, done) = (brokers.clone(), streaming_done.clone());
        move || steady_stream(&brokers, &done)
    });
    wait_until("both workers own partitions and process them on v1", || {
        workers().iter().all(|s| s.partitions.values().any(|p| p.assigned && p.processed >= 200))
    });
    let owners: Vec<BTreeSet<i32>> = workers()
        .iter()
        .map(|s| s.partitions.iter().filter(|(_, p)| p.assigned).map(|((_, p), _)| *p).collect())
        .collect();

    let answer = admin(&host, Request::Deploy(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_until("every worker runs v2", || workers().iter().all(|s| s.version == v2.digest));
    let marks = worker_processed();
    wait_until("every worker processes on v2", || {
        worker_processed().iter().zip(&marks).all(|(now, then)| *now >= then + 500)
    });
    let owners_after: Vec<BTreeSet<i32>> = workers()
        .iter()
        .map(|s| s.partitions.iter().filter(|(_, p)| p.assigned).map(|((_, p), _)| *p).collect())
        .collect();
    assert_eq!(owners, owners_after, "no rebalance between the workers around the switch");

    streaming_done.store(true, Ordering::Relaxed);
    let produced = stream.join().expect("stream thread");
    wait_until("the workers commit the log end", || {
        lag(&brokers, GROUP, "input").iter().all(|p| p.committed == Some(produced[&p.partition]))
    });
    stop(host);

    let ledger: Vec<Entry> = read_all(&brokers, "ledger").iter().map(|r| parse(&r.value)).collect();
    let seen: BTreeSet<(i32, i64)> = ledger.iter().map(|e| (e.partition, e.offset)).collect();
    let expected: BTreeSet<(i32, i64)> = produced.iter().flat_map(|(&p, &n)| (0..n).map(move |o| (p, o))).collect();
    assert_eq!(seen, expected, "every record processed, nothing else");
    let mut batches: BTreeMap<(i32, i64), BTreeSet<&str>> = BTreeMap::new();
    for e in &ledger {
        batches.entry((e.partition, e.batch_first)).or_default().insert(&e.tag);
    }
    for ((partition, first), tags) in &batches {
        assert_eq!(tags.len(), 1, "partition {partition}: the batch from {first} ran on {tags:?}");
    }
    for (worker, partitions) in owners.iter().enumerate() {
        for &partition in partitions {
            let mut entries: Vec<&Entry> = ledger.iter().filter(|e| e.partition == partition).collect();
            entries.sort_by_key(|e| e.micros);
            let switch = entries.iter().position(|e| e.tag == "v2").expect("the partition ran on v2");
            let (before, after) = entries.split_at(switch);
            assert!(before.iter().all(|e| e.tag == "v1"), "worker {worker}, partition {partition}: v2 before v1");
            assert!(after.iter().all(|e| e.tag == "v2"), "worker {worker}, partition {partition}: v1 after the switch");
            let last_v1 = before.iter().map(|e| e.offset).max().expect("the partition ran on v1");
            assert_eq!(
                after[0].offset,
                last_v1 + 1,
                "worker {worker}, partition {partition}: v2 takes over at the offset after v1's last"
            );
        }
    }
}
