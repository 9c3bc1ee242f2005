//! The orders example in Python and in JavaScript, built from source with their
//! SDKs' build scripts, runs through the host on the embedded broker next to the
//! Rust example: the same commissions, the same dead letters, lag 0 on
//! every partition. Judged by sets: the (key, value) of every commission and the
//! (partition, offset) of every dead letter, each against the orders produced and
//! against the Rust example's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::devtools::GuestLanguage;
use ferry_host::host::Host;
use ferry_tests::*;

const PARTITIONS: i32 = 4;
const ORDERS: usize = 3_000;
const AGENTS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "zoë"];

/// Order `i`: mostly valid (some with extra fields, some near 2^53), with every
/// kind of bad order the examples reject spread through the stream.
fn order(i: usize) -> String {
    let agent = AGENTS[i % AGENTS.len()];
    match i % 50 {
        49 => format!("{{\"id\":\"o-{i}\",\"agent\":"),
        41 => "not json".to_owned(),
        37 => "[1,2,3]".to_owned(),
        31 => format!(r#"{{"id":"o-{i}","agent":"{agent}","amount_cents":"12"}}"#),
        23 => format!(r#"{{"id":"o-{i}","agent":"{agent}","amount_cents":-{i}}}"#),
        17 => format!(r#"{{"id":"o-{i}","amount_cents":100}}"#),
        11 => format!(r#"{{"id":"o-{i}","agent":"{agent}","amount_cents":1.5}}"#),
        3 => format!(r#"{{"id":"o-{i}","agent":"{agent}","amount_cents":{}}}"#, (1u64 << 53) - 1 - i as u64),
        7 => format!(
            r#"{{"currency":"EUR","amount_cents":{},"agent":"{agent}","id":"o-{i}","note":{{"a":[1]}}}}"#,
            i * 3
        ),
        _ => format!(r#"{{"id":"o-{i}","agent":"{agent}","amount_cents":{}}}"#, 1000 + (i * 7919) % 90_000),
    }
}

/// What the Rust example makes of an order: its commission (key, value), or the
/// start of its reject reason.
fn expected(value: &str) -> Result<(String, String), String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(value) else {
        return Err("malformed order".into());
    };
    let (Some(id), Some(agent)) =
        (fields.get("id").and_then(|v| v.as_str()), fields.get("agent").and_then(|v| v.as_str()))
    else {
        return Err("malformed order".into());
    };
    let Some(amount) = fields.get("amount_cents").and_then(serde_json::Value::as_i64) else {
        return Err("malformed order".into());
    };
    if amount < 0 {
        return Err(format!("order {id} has a negative amount_cents ({amount})"));
    }
    let commission = (i128::from(amount) * 5 + 50) / 100;
    let json =
        format!(r#"{{"order_id":"{id}","agent":"{agent}","amount_cents":{amount},"commission_cents":{commission}}}"#);
    Ok((agent.to_owned(), json))
}

fn pipeline(lang: &str, component: &std::path::Path) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "orders-{lang}"
        inputs = ["orders"]
        group = "orders-{lang}"
        component = "{component}"
        batch_size = 200
        max_wait_ms = 10
        output_topics = ["commissions-{lang}"]
        settings = {{ output_topic = "commissions-{lang}" }}
        commit = {{ policy = "per-batch" }}
        limits = {{ memory_mib = 128 }}
        failure = {{ on_failure = "dead-letter", dead_letter_topic = "dlq-{lang}", max_attempts = 3, backoff_initial_ms = 10 }}
        "#,
        component = component.display(),
    )
}

/// A dead letter's source and reason.
fn dead_letter(read: &Read) -> ((i32, i64), String) {
    let header = |name: &str| read.header(name).unwrap();
    (
        (header("ferry.partition").parse().unwrap(), header("ferry.offset").parse().unwrap()),
        header("ferry.reason").to_owned(),
    )
}

#[test]
fn the_orders_example_gives_the_same_commissions_and_dead_letters_in_rust_python_and_javascript() {
    let components = [
        ("rust", guest("ferry-example-orders")),
        ("python", polyglot_guest(GuestLanguage::Python, "examples/python/orders")),
        ("js", polyglot_guest(GuestLanguage::JavaScript, "examples/js/orders")),
    ];
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("orders", PARTITIONS);
    for (lang, _) in &components {
        broker.create_topic(&format!("commissions-{lang}"), PARTITIONS);
        broker.create_topic(&format!("dlq-{lang}"), 1);
    }
    let values: Vec<String> = (0..ORDERS).map(order).collect();
    produce(&brokers, "orders", PARTITIONS, &values);

    // What each produced record should become, by where it landed.
    let mut commissions = BTreeSet::new();
    let mut rejects = BTreeMap::new();
    for record in read_all(&brokers, "orders") {
        match expected(&record.value) {
            Ok(commission) => assert!(commissions.insert(commission), "order ids are unique"),
            Err(reason) => {
                rejects.insert((record.partition, record.offset), reason);
            }
        }
    }
    assert_eq!(commissions.len() + rejects.len(), ORDERS, "every order read back");
    assert!(rejects.len() >= 7 * ORDERS / 50, "the stream holds every kind of bad order");

    let mut text = format!("brokers = \"{brokers}\"\n");
    for (lang, component) in &components {
        text.push_str(&pipeline(lang, component));
    }
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();
    for (lang, _) in &components {
        let group = format!("orders-{lang}");
        wait_until(&format!("{lang}: lag 0 on every partition"), || {
            let rows = lag(&brokers, &group, "orders");
            rows.len() == PARTITIONS as usize && rows.iter().all(|p| p.lag() == 0)
        });
    }
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    let mut by_language = BTreeMap::new();
    for (lang, _) in &components {
        for p in lag(&brokers, &format!("orders-{lang}"), "orders") {
            assert_eq!(p.committed, Some(p.log_end), "{lang}: partition {} committed to its log end", p.partition);
        }
        let out = read_all(&brokers, &format!("commissions-{lang}"));
        let published: BTreeSet<(String, String)> = out.iter().map(|r| (r.key.clone(), r.value.clone())).collect();
        assert_eq!(published, commissions, "{lang}: the commissions of exactly the valid orders");
        let dead: BTreeMap<(i32, i64), String> =
            read_all(&brokers, &format!("dlq-{lang}")).iter().map(dead_letter).collect();
        assert_eq!(
            dead.keys().collect::<BTreeSet<_>>(),
            rejects.keys().collect::<BTreeSet<_>>(),
            "{lang}: dead letters of exactly the bad orders"
        );
        for (at, reason) in &dead {
            assert!(
                reason.starts_with(&rejects[at]),
                "{lang}: {at:?} dead-lettered for {reason:?}, not {:?}",
                rejects[at]
            );
        }
        by_language.insert(*lang, (published, dead.into_keys().collect::<BTreeSet<_>>()));
    }
    assert_eq!(by_language["python"], by_language["rust"], "Python and Rust agree");
    assert_eq!(by_language["js"], by_language["rust"], "JavaScript and Rust agree");
}
