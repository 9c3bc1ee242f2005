//! Exactly-once on a real Kafka-protocol broker (Tansu): every input record has one
//! visible result in the `read_committed` view of the outputs, decided from the
//! transaction markers by `ferry_tests::raw_log`, whatever the run did: retries,
//! rejects, panics, crashes, rebalances, a member that was stopped and came back.

use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// Many input partitions into one output partition (and one dead-letter
/// partition): every input partition's transactions write the same output
/// partition. Tansu holds back a committed transaction's offsets while another
/// producer's transaction there is open, which a reassignment can turn into lost
/// reads (`broker_transactions.rs` shows that bug); with one member and no
/// reassignment it cannot bite, so this covers ferry's own path for the topology.
#[test]
fn tansu_many_input_partitions_into_one_output_partition() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("in", 8);
    tansu.create_topic("seen", 1);
    tansu.create_topic("dlq", 1);
    let values: Vec<String> = (0..400).map(value).collect();
    produce_by_key(&brokers, "in", &values);
    let config = Config::parse(&recorder_config(&tansu, "fan-in", "in", EXACTLY_ONCE)).unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("lag 0 on every partition", || lag(&brokers, "fan-in", "in").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    let inputs = read_all(&brokers, "in");
    assert_eq!(inputs.iter().map(|r| r.partition).collect::<std::collections::BTreeSet<_>>().len(), 8);
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
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
    // outputs are in the log, behind an ABORT marker, and never visible. Any abort
    // will not do (the survivor's own could be one): the aborted transaction must
    // hold outputs the zombie made, which the recorder marks with its incarnation.
    let zombie_log = members[0].log_text();
    let incarnation = zombie_log
        .split_once("ledger delivered inc=")
        .and_then(|(_, rest)| rest.split(' ').next())
        .expect("the zombie logged a delivery")
        .to_owned();
    let made_by_zombie = |r: &ferry_tests::Read| r.value.starts_with(&format!("{incarnation}/"));
    let logs = ferry_tests::raw_log::read_logs(&brokers, "seen");
    let ended: Vec<_> = logs.iter().flat_map(|(_, log)| ferry_tests::raw_log::transactions(log).1).collect();
    assert!(
        ended.iter().any(|(marker, records)| !marker.commit && records.iter().any(made_by_zombie)),
        "an aborted transaction holds the zombie's outputs: {:?}",
        ended.iter().map(|(m, r)| (m.partition, m.offset, m.commit, r.len())).collect::<Vec<_>>()
    );
    assert!(
        !ended.iter().any(|(marker, records)| marker.commit
            && records.iter().any(made_by_zombie)
            && records.iter().any(|r| !made_by_zombie(r))),
        "no committed transaction mixes the zombie's outputs with the survivor's"
    );
    assert!(
        zombie_log.contains("transaction not committed") || zombie_log.contains("assignment lost"),
        "the zombie learned it was fenced or lost its partitions:\n{}",
        zombie_log.lines().filter(|l| !l.contains("ledger")).collect::<Vec<_>>().join("\n")
    );
}

/// A broker that answers nothing for longer than the transaction timeout (and so
/// than `message.timeout.ms`: outputs in flight fail their delivery, transactions
/// cannot commit, new records are refused while a transaction waits for its abort)
/// is a transient fault: every partition aborts, starts again from its committed
/// offset once the broker is back, and ends with every input record once, none
/// halted. Eight partitions on one member, with a slow guest, so that outputs are
/// in flight in most of them when the broker freezes; the session timeout outlasts
/// the outage, so no rebalance hands the partitions out again (which would hide a
/// partition that stopped for good).
#[test]
fn tansu_a_broker_away_past_the_transaction_timeout_stops_nothing_for_good() {
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    for topic in ["in", "seen", "dlq"] {
        tansu.create_topic(topic, 8);
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{EXACTLY_ONCE}\ntransaction_timeout_ms = 6000\nlimits = {{ time_per_batch_ms = 2000 }}");
    let config = recorder_config(&tansu, "outage", "in", &extra)
        .replace("\"session.timeout.ms\" = \"6000\"", "\"session.timeout.ms\" = \"25000\"");
    let member = FerryProcess::start(&write_config(dir.path(), &config));
    let values: Vec<String> = (0..800).map(|i| format!("slow:10;r{i}")).collect();
    produce_by_key(&brokers, "in", &values[..400]);
    let not_ledger = |log: String| log.lines().filter(|l| !l.contains("ledger")).collect::<Vec<_>>().join("\n");
    wait_until_or_explain(
        "the member processed records of most partitions",
        || {
            let log = member.log_text();
            (0..8).filter(|p| log.contains(&format!("tp=in/{p} offset="))).count() >= 6
        },
        || not_ledger(member.log_text()),
    );
    tansu.freeze();
    // The fault itself: the broker away for 2.5 transaction timeouts, while the
    // guest goes on working through what was fetched.
    std::thread::sleep(Duration::from_secs(15));
    tansu.resume();
    produce_by_key(&brokers, "in", &values[400..]);
    wait_until_or_explain(
        "lag 0 on every partition",
        || lag(&brokers, "outage", "in").iter().all(|p| p.lag() == 0),
        || not_ledger(member.log_text()),
    );
    let mut member = member;
    let log = member.log_text();
    assert!(member.terminate_and_wait().success());
    assert!(
        log.contains("transaction not committed"),
        "the outage failed transactions (else this test proves nothing):\n{}",
        not_ledger(log.clone())
    );
    assert!(!log.contains("partition halted"), "no partition halted over a transient fault");
    let inputs = read_all(&brokers, "in");
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
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

/// Where the recorder's view of `in`/0 broke: a delivery that does not follow the
/// one before it (the same record again, or the next) since the guest was last told
/// the partition was assigned or revoked. A rewind the guest is not told about shows
/// here: after an aborted transaction it would go back to the committed offset with
/// the aborted records still in whatever it keeps of the partition.
fn breaks_in_what_the_guest_saw(name: &str) -> Vec<String> {
    let tp = format!("inc={name} tp=in/0");
    let mut last: Option<i64> = None;
    let mut breaks = Vec::new();
    for line in captured_log().lines().filter(|l| l.contains(&tp)) {
        if line.contains("ledger assigned") || line.contains("ledger revoked") {
            last = None;
        } else if let Some(offset) = line
            .split_once(&format!("{tp} offset="))
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|o| o.parse::<i64>().ok())
        {
            if let Some(before) = last
                && offset != before
                && offset != before + 1
            {
                breaks.push(format!("offset {offset} right after {before}"));
            }
            last = Some(offset);
        }
    }
    breaks
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
    let breaks = breaks_in_what_the_guest_saw(&name);
    assert!(breaks.is_empty(), "the guest was not told of the rewind: {breaks:?}");
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
    let breaks = breaks_in_what_the_guest_saw(&name);
    assert!(breaks.is_empty(), "the guest was not told of the rewind: {breaks:?}");
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

/// A partition without a bookmark starts where the reset policy says, read for all
/// such partitions at once. With `latest`, the records already in the log before a
/// partition was ready are never handed to the guest, and every record written
/// after is: the set of (partition, offset) the guest saw is exactly the new ones.
#[test]
fn embedded_partitions_without_a_bookmark_start_at_the_log_end_with_latest() {
    const PARTITIONS: i32 = 24;
    const BEFORE: i64 = 10;
    const AFTER: i64 = 15;
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("seen", 1);
    let old: Vec<String> = (0..BEFORE * i64::from(PARTITIONS)).map(|i| format!("old{i}")).collect();
    produce(&brokers, "in", PARTITIONS, &old);
    let name = unique("eos-latest");
    let text = embedded_pipeline(&brokers, &name).replacen(
        "[[pipeline]]",
        "[kafka]\n\"auto.offset.reset\" = \"latest\"\n[[pipeline]]",
        1,
    );
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();
    let ready = || {
        let transactions = host.pipelines[0].shared.transactions();
        transactions.is_some_and(|t| (0..PARTITIONS).all(|p| t.is_ready(&("in".to_owned(), p))))
    };
    wait_until("every partition ready", ready);
    let new: Vec<String> = (0..AFTER * i64::from(PARTITIONS)).map(|i| format!("new{i}")).collect();
    produce(&brokers, "in", PARTITIONS, &new);
    let seen = || ferry_tests::checker::delivered(&[captured_log()], &name, "in");
    let expected: std::collections::BTreeSet<(i32, i64)> =
        (0..PARTITIONS).flat_map(|p| (BEFORE..BEFORE + AFTER).map(move |o| (p, o))).collect();
    wait_until("every new record handed to the guest", || expected.is_subset(&seen()));
    let stats = || host.pipelines[0].shared.stats.snapshot();
    wait_until("every new record committed", || {
        (0..PARTITIONS)
            .all(|p| stats().partitions.get(&("in".to_owned(), p)).and_then(|f| f.committed) == Some(BEFORE + AFTER))
    });
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    assert_eq!(seen(), expected, "the guest saw exactly the records written after the partitions were ready");
}
