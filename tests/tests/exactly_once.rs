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
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    tansu.create_topic("in", 4);
    tansu.create_topic("seen", 1);
    tansu.create_topic("dlq", 1);
    let values: Vec<String> = (0..200).map(value).collect();
    produce(&brokers, "in", 4, &values);

    let config = Config::parse(&recorder_config(&tansu, "eos", "in", EXACTLY_ONCE)).unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("lag 0 on every partition", || lag(&brokers, "eos", "in").iter().all(|p| p.lag() == 0));
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let inputs = read_all(&brokers, "in");
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
    assert!(!verdict.dead_lettered.is_empty() && !verdict.processed.is_empty(), "{}", verdict.summary());
}
