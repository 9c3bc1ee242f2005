//! `ferry offsets show` and `ferry offsets reset`, against a real group on Tansu
//! (the embedded mock broker does not answer DescribeGroups: there, a reset is
//! refused with an explanation).

use std::process::Command;
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::*;

fn ferry(args: &[&str]) -> (bool, String) {
    let out = Command::new(ferry_bin()).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn show_reports_lag_and_reset_replays_only_when_the_group_is_idle() {
    let broker = Tansu::start();
    let brokers = broker.brokers();
    broker.create_topic("orders", 2);
    produce(&brokers, "orders", 2, &(0..20).map(|i| format!("r{i}")).collect::<Vec<_>>());

    let (ok, text) = ferry(&["offsets", "show", "--brokers", &brokers, "--group", "replay", "--topic", "orders"]);
    assert!(ok, "{text}");
    assert!(
        text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "0", "10", "-", "10"]),
        "{text}"
    );

    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [kafka]
        {}
        [[pipeline]]
        name = "replay"
        inputs = ["orders"]
        group = "replay"
        component = "{}"
        max_wait_ms = 10
        "#,
        broker.client_properties(),
        guest("ferry-example-passthrough").display()
    ))
    .unwrap();
    let host = Host::start(&config).unwrap();
    wait_until("caught up", || lag(&brokers, "replay", "orders").iter().all(|p| p.lag() == 0));

    let (ok, text) = ferry(&[
        "offsets",
        "reset",
        "--brokers",
        &brokers,
        "--group",
        "replay",
        "--topic",
        "orders",
        "--to",
        "earliest",
    ]);
    assert!(!ok && text.contains("active member"), "refused while the group is active: {text}");
    assert!(lag(&brokers, "replay", "orders").iter().all(|p| p.lag() == 0), "nothing moved");

    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
    let (ok, text) =
        ferry(&["offsets", "reset", "--brokers", &brokers, "--group", "replay", "--topic", "orders", "--to", "3"]);
    assert!(ok, "{text}");
    assert!(text.contains("orders[0] -> 3") && text.contains("orders[1] -> 3"), "{text}");
    let (ok, text) = ferry(&["offsets", "show", "--brokers", &brokers, "--group", "replay", "--topic", "orders"]);
    assert!(
        ok && text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "1", "10", "3", "7"]),
        "{text}"
    );
    let (ok, text) = ferry(&[
        "offsets",
        "reset",
        "--brokers",
        &brokers,
        "--group",
        "replay",
        "--topic",
        "orders",
        "--to",
        "sometime",
    ]);
    assert!(!ok && text.contains("not earliest, latest"), "{text}");
}

#[test]
fn reset_on_the_embedded_broker_is_refused_with_an_explanation() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("orders", 2);
    produce(&brokers, "orders", 2, &(0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());

    let (ok, text) =
        ferry(&["offsets", "reset", "--brokers", &brokers, "--group", "idle", "--topic", "orders", "--to", "latest"]);
    assert!(!ok, "refused: {text}");
    for words in [
        "refusing to reset the offsets of group idle",
        "could not check that no member of the group is running",
        "do not answer DescribeGroups",
        "embedded mock broker",
        "stopping every `ferry run` of group idle",
        "UnsupportedFeature",
    ] {
        assert!(text.contains(words), "says {words:?}: {text}");
    }
    assert!(lag(&brokers, "idle", "orders").iter().all(|p| p.committed.is_none()), "nothing was committed");
}
