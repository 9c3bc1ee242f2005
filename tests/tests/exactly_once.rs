//! Exactly-once on a real Kafka-protocol broker (Tansu): every input record has one
//! visible result in the `read_committed` view of the outputs, decided from the
//! transaction markers by `ferry_tests::raw_log`, whatever the run did: retries,
//! rejects, panics, crashes, rebalances, a member that was stopped and came back.

use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::exactly_once::judge;
use ferry_tests::scenarios::recorder_config;
use ferry_tests::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const EXACTLY_ONCE: &str = "delivery = \"exactly-once\"\n\
    commit = { policy = \"interval\", interval_ms = 100 }\n\
    failure = { on_failure = \"dead-letter\", dead_letter_topic = \"dlq\", max_attempts = 3, backoff_initial_ms = 10 }";

/// What record `i` asks of the recorder: mostly nothing, sometimes a retry that
/// succeeds, one that ends in a dead letter, a reject, a panic or a coin toss.
fn value(i: usize) -> String {
    match i {
        i if i % 13 == 3 => format!("retry-once {i}"),
        i if i % 29 == 7 => format!("retry {i}"),
        i if i % 31 == 11 => format!("reject {i}"),
        i if i % 37 == 5 => format!("panic {i}"),
        i if i % 11 == 2 => format!("flaky {i}"),
        i => format!("r{i}"),
    }
}

#[test]
fn tansu_every_record_once_through_retries_rejects_and_panics() {
    every_record_once(1);
}

/// The same with `workers = 2`: each worker has the transactional
/// producers of the partitions it owns, and a partition that moves between the
/// workers of one process is fenced and handed over as between two processes.
#[test]
fn tansu_every_record_once_with_two_workers() {
    every_record_once(2);
}

fn every_record_once(workers: usize) {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    // Each input partition's outputs in their own partitions (see
    // `Verdict::assert_own_output_partitions` for why, on Tansu).
    tansu.create_topic("in", 4);
    tansu.create_topic("seen", 4);
    tansu.create_topic("dlq", 4);
    let values: Vec<String> = (0..200).map(value).collect();
    // With several workers, half the records wait for the first of them (which may
    // take every partition, then hand some over), the other half come once every
    // worker owns partitions.
    let (early, late) = values.split_at(if workers > 1 { 100 } else { values.len() });
    produce_by_key(&brokers, "in", early);

    let group = format!("eos-w{workers}");
    let extra = format!("{EXACTLY_ONCE}\nworkers = {workers}");
    let config = Config::parse(&recorder_config(&tansu, &group, "in", &extra)).unwrap();
    let host = Host::start(&config).unwrap();
    if !late.is_empty() {
        let owners = || host.pipelines[0].workers.iter().map(|w| w.stats.snapshot()).collect::<Vec<_>>();
        wait_until("every worker owns partitions", || {
            owners().iter().all(|s| s.partitions.values().any(|p| p.assigned))
        });
        produce_by_key(&brokers, "in", late);
    }
    wait_until("lag 0 on every partition", || lag(&brokers, &group, "in").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let inputs = read_all(&brokers, "in");
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
    verdict.assert_own_output_partitions();
    assert!(!verdict.dead_lettered.is_empty() && !verdict.processed.is_empty(), "{}", verdict.summary());
}

/// The zombie: a member frozen (SIGSTOP) in the middle of a transaction, long past
/// its session timeout, while the other member takes its partitions over, then let
/// go (SIGCONT) unaware of it all. Its open transaction must never become visible
/// (the new owner's producer fenced it), and nothing it tries afterwards may commit.
#[test]
fn tansu_a_frozen_member_is_fenced_when_it_wakes() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("in", 2);
    tansu.create_topic("seen", 2);
    tansu.create_topic("dlq", 2);
    let dir = tempfile::tempdir().unwrap();
    // Long transactions: whenever it freezes, the zombie has one open with outputs.
    let zombie_extra = EXACTLY_ONCE.replace("interval_ms = 100", "interval_ms = 4000");
    let zombie =
        FerryProcess::start(&write_config(dir.path(), &recorder_config(&tansu, "zombie", "in", &zombie_extra)));
    let values: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    produce_by_key(&brokers, "in", &values[..100]);
    wait_until("the zombie-to-be processed records of both partitions", || {
        let log = zombie.log_text();
        log.contains("tp=in/0 offset=") && log.contains("tp=in/1 offset=")
    });
    zombie.freeze();

    let survivor =
        FerryProcess::start(&write_config(dir.path(), &recorder_config(&tansu, "zombie", "in", EXACTLY_ONCE)));
    wait_until("the survivor took both partitions over", || {
        survivor.log_text().matches("partition ready for transactions").count() >= 2
    });
    produce_by_key(&brokers, "in", &values[100..200]);
    wait_until("the survivor processed records past the zombie's", || {
        let log = survivor.log_text();
        log.contains("tp=in/0 offset=60") && log.contains("tp=in/1 offset=60")
    });
    zombie.resume();
    produce_by_key(&brokers, "in", &values[200..]);
    wait_until("lag 0 on every partition", || lag(&brokers, "zombie", "in").iter().all(|p| p.lag() == 0));
    let mut members = [zombie, survivor];
    for member in &mut members {
        assert!(member.terminate_and_wait().success());
    }

    let inputs = read_all(&brokers, "in");
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
    verdict.assert_own_output_partitions();
    // The zombie's open transaction was aborted by the new owner's fencing: its
    // outputs are in the log, behind an ABORT marker, and never visible.
    let logs = ferry_tests::raw_log::read_logs(&brokers, "seen");
    let aborts: usize = logs.iter().map(|(_, log)| log.markers.iter().filter(|m| !m.commit).count()).sum();
    assert!(aborts > 0, "the zombie's transaction was aborted");
    let zombie_log = members[0].log_text();
    assert!(
        zombie_log.contains("transaction not committed") || zombie_log.contains("assignment lost"),
        "the zombie learned it was fenced or lost its partitions:\n{}",
        zombie_log.lines().filter(|l| !l.contains("ledger")).collect::<Vec<_>>().join("\n")
    );
}

/// An exactly-once recorder pipeline on the embedded broker, named and grouped `name`.
fn embedded_pipeline(brokers: &str, name: &str) -> String {
    format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "{name}"
        inputs = ["in"]
        group = "{name}"
        component = "{}"
        batch_size = 10
        max_wait_ms = 5
        output_topics = ["seen"]
        settings = {{ incarnation = "{name}" }}
        logs = {{ lines_per_sec = 100000, bytes_per_sec = 67108864 }}
        delivery = "exactly-once"
        commit = {{ policy = "interval", interval_ms = 50 }}
        "#,
        guest("ferry-guest-recorder").display()
    )
}

/// How often the recorder was handed `offset` of `in`/0, by what this process logged.
fn deliveries(name: &str, offset: i64) -> usize {
    captured_log().matches(&format!("inc={name} tp=in/0 offset={offset} ")).count()
}

/// The embedded broker cannot judge outputs (it keeps no transaction markers), but
/// it can fail requests on demand. A transaction whose offsets the group refuses
/// (as KIP-447 refuses a member of an old generation) is aborted, never taken for
/// a success, and its records are processed again from the committed offset.
#[test]
fn embedded_a_refused_offset_commit_aborts_and_the_records_run_again() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &(0..30).map(|i| format!("r{i}")).collect::<Vec<_>>());
    broker
        .cluster()
        .request_errors(RDKafkaApiKey::TxnOffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION]);
    let name = unique("eos-refused");
    let host = Host::start(&Config::parse(&embedded_pipeline(&brokers, &name)).unwrap()).unwrap();
    let stats = || host.pipelines[0].shared.stats.snapshot();
    wait_until("an aborted transaction, then a committed one", || {
        stats().transactions_aborted >= 1 && stats().transactions_committed >= 1
    });
    // The first transaction began at offset 0, and the rewind goes back to it (the
    // embedded broker keeps no transactional offsets): 0 runs twice, the rest at least once.
    wait_until("the aborted records handed to the guest again", || {
        deliveries(&name, 0) >= 2 && (1..30).all(|o| deliveries(&name, o) >= 1)
    });
    let notes = stats().recent;
    assert!(notes.iter().any(|n| n.kind == "transaction-aborted"), "the abort was reported: {notes:?}");
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

/// A producer the broker calls fenced is given up on, not retried: a new one is
/// made (which fences whoever holds the id now), and the partition starts again
/// from its committed offset.
#[test]
fn embedded_a_fenced_producer_is_replaced_and_the_records_run_again() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &(0..30).map(|i| format!("r{i}")).collect::<Vec<_>>());
    broker.cluster().request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let name = unique("eos-fenced");
    let host = Host::start(&Config::parse(&embedded_pipeline(&brokers, &name)).unwrap()).unwrap();
    let stats = || host.pipelines[0].shared.stats.snapshot();
    wait_until("a lost transaction, then a committed one", || {
        stats().transactions_aborted >= 1 && stats().transactions_committed >= 1
    });
    // The first transaction began at offset 0, and the rewind goes back to it (the
    // embedded broker keeps no transactional offsets): 0 runs twice, the rest at least once.
    wait_until("the aborted records handed to the guest again", || {
        deliveries(&name, 0) >= 2 && (1..30).all(|o| deliveries(&name, o) >= 1)
    });
    let notes = stats().recent;
    assert!(
        notes.iter().any(|n| n.kind == "producer-replaced"),
        "the fenced producer was replaced, not reused: {notes:?}"
    );
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}
