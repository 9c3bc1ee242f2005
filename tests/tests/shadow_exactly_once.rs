//! A shadow beside an exactly-once pipeline never joins its transactions.
//!
//! On Tansu (a real Kafka-protocol broker with transactions): the live version is
//! the recorder (outputs to `seen`, dead letters to `dlq`, in transactions); its
//! shadows are the mirror, which writes every record to `ledger` (other outputs,
//! so every record compares different), then the mirror's panicking build. The
//! `read_committed` outputs, judged from the transaction markers as the other
//! exactly-once suites judge them, hold every input once, with the live version's
//! result; `ledger` never receives a single record, committed or aborted.
//!
//! Why on Tansu and not on the embedded broker: librdkafka's mock cluster answers
//! a transaction's offset commit (TxnOffsetCommit) without storing the offsets and
//! writes no transaction markers, so an exactly-once pipeline on it never shows a
//! committed offset. The last test shows that of the mock itself, with a bare
//! transactional producer and no ferry at all.

mod shadow_support;
mod swap_support;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_host::config::Config;
use ferry_host::deploy::client::{Request, report_text};
use ferry_host::host::Host;
use ferry_tests::exactly_once::judge;
use ferry_tests::scenarios::recorder_config;
use ferry_tests::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use shadow_support::n;
use swap_support::{TOKEN, admin_url, build};

const EXACTLY_ONCE: &str = "delivery = \"exactly-once\"\n\
    commit = { policy = \"interval\", interval_ms = 100 }\n\
    failure = { on_failure = \"dead-letter\", dead_letter_topic = \"dlq\", max_attempts = 3, backoff_initial_ms = 10 }\n\
    shadow = { max_time_share = 100 }";

/// What record `i` asks of the recorder: mostly nothing, sometimes a retry, a
/// reject or a panic (each ends in a dead letter or an output, by its class).
fn value(i: usize) -> String {
    match i {
        i if i % 13 == 3 => format!("retry-once {i}"),
        i if i % 31 == 11 => format!("reject {i}"),
        i if i % 37 == 5 => format!("panic {i}"),
        i => format!("r{i}"),
    }
}

/// Sends one admin request to the host's one pipeline (the recorder's name is
/// unique per run).
fn admin(host: &Host, request: Request<'_>) -> ferry_host::deploy::client::Answer {
    let pipeline = &host.pipelines[0].config.name;
    ferry_host::deploy::client::call(&admin_url(host), pipeline, TOKEN, request).expect("admin server answers")
}

/// The high watermark of every partition of `topic`: 0 when nothing was ever
/// written there, committed or aborted.
fn high_watermarks(brokers: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("client");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}

#[test]
fn tansu_a_shadow_never_joins_a_transaction() {
    let (other, panics) = (build("ferry-guest-mirror-v1"), build("ferry-guest-mirror-panic"));
    let tansu = Tansu::start();
    let brokers = tansu.brokers();
    // Each input partition's outputs in their own partitions (see
    // `Verdict::assert_own_output_partitions` for why, on Tansu).
    for topic in ["in", "seen", "dlq", "ledger"] {
        tansu.create_topic(topic, 4);
    }
    let cache = tempfile::tempdir().unwrap();
    let token_file = cache.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let admin_section = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", token_file.display());
    // The shadows may write `ledger` (the pipeline grants it): what keeps their
    // outputs out of it is the shadow path, not a missing grant.
    let text = recorder_config(&tansu, "eos-shadow", "in", &format!("{EXACTLY_ONCE}\n{admin_section}"))
        .replace("output_topics = [\"seen\"]", "output_topics = [\"seen\", \"ledger\"]");
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();

    // A shadow with other outputs: every record compares different.
    let answer = admin(&host, Request::DeployShadow(&other.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let values: Vec<String> = (0..400).map(value).collect();
    produce_by_key(&brokers, "in", &values[..200]);
    wait_until("lag 0 on every partition", || lag(&brokers, "eos-shadow", "in").iter().all(|p| p.lag() == 0));
    let report = wait_for_comparison_of(&host, 1);
    println!("other outputs: {}", report_text(&report).lines().take(3).collect::<Vec<_>>().join(" | "));
    assert!(n(&report, "different") > 0, "{report}");
    assert_eq!(n(&report, "equal"), 0, "{report}");

    // A shadow that panics on every record.
    let answer = admin(&host, Request::DeployShadow(&panics.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    produce_by_key(&brokers, "in", &values[200..]);
    wait_until("lag 0 on every partition", || lag(&brokers, "eos-shadow", "in").iter().all(|p| p.lag() == 0));
    let report = wait_for_comparison_of(&host, 1);
    println!("panics: {}", report_text(&report).lines().take(3).collect::<Vec<_>>().join(" | "));
    // Equal only where the live version panics too (`panic <i>` records).
    assert!(n(&report, "different") > 0, "{report}");
    for d in report["differences"].as_array().unwrap() {
        assert_eq!(d["shadow"], "fault (panic)", "{d}");
    }
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let inputs = read_all(&brokers, "in");
    assert_eq!(inputs.len(), values.len());
    let verdict = judge(&brokers, "in", &inputs, Some("dlq"));
    eprintln!("{}", verdict.summary());
    verdict.assert_exactly_once();
    verdict.assert_own_output_partitions();
    assert!(!verdict.dead_lettered.is_empty() && !verdict.processed.is_empty(), "{}", verdict.summary());
    assert_eq!(high_watermarks(&brokers, "ledger"), [0, 0, 0, 0], "a shadow's output reached the ledger");
}

/// Waits until the shadow compared at least `records` records; its report.
fn wait_for_comparison_of(host: &Host, records: u64) -> serde_json::Value {
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until_or_explain(
        "the shadow compares records",
        || {
            let answer = admin(host, Request::ShadowReport);
            let now: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
            let done = now["compared"].as_u64().is_some_and(|c| c >= records);
            *last.borrow_mut() = now;
            done
        },
        || format!("last report: {}", last.borrow()),
    );
    last.into_inner()
}

/// The embedded broker (librdkafka's mock cluster) takes a transaction's offset
/// commit, says it succeeded, and keeps nothing: a group's committed offsets stay
/// unset, where a plain commit of the same offsets is kept. An exactly-once
/// pipeline on it therefore never shows a committed offset, with or without a
/// shadow: a limit of the test broker, not of ferry.
#[test]
fn the_embedded_broker_drops_offsets_committed_in_a_transaction() {
    let broker = Embedded::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    let brokers = broker.brokers();
    produce(&brokers, "in", 1, &["a".to_owned(), "b".to_owned(), "c".to_owned()]);
    let offsets = |at: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("in", 0, Offset::Offset(at)).unwrap();
        list
    };

    let in_a_transaction = unique("txn-group");
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", &in_a_transaction).create().unwrap();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("transactional.id", unique("txn")).create().unwrap();
    let wait = Duration::from_secs(30);
    producer.init_transactions(wait).expect("transactions start");
    producer.begin_transaction().unwrap();
    producer.send(rdkafka::producer::BaseRecord::to("out").payload("x").key("k")).map_err(|(e, _)| e).unwrap();
    producer
        .send_offsets_to_transaction(&offsets(3), &consumer.group_metadata().expect("group metadata"), wait)
        .expect("the broker accepts the transaction's offsets");
    producer.commit_transaction(wait).expect("the broker commits the transaction");
    let stored = lag(&brokers, &in_a_transaction, "in");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].committed, None, "the mock cluster kept the offsets of a transaction: {stored:?}");

    let plainly = unique("plain-group");
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", &plainly).create().unwrap();
    consumer.commit(&offsets(3), CommitMode::Sync).expect("a plain commit");
    assert_eq!(lag(&brokers, &plainly, "in")[0].committed, Some(3), "a plain commit is kept");
}
