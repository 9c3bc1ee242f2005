//! Shadow versions deployed group-wide through the components topic, on the
//! embedded broker, with guests built from source (`tests/guests/mirror-*`).
//!
//! Three hosts of one `group_deploy` pipeline run v1. `ferry deploy --shadow --group`
//! publishes v2 as the shadow: the two hosts running take it beside v1, and a third
//! started afterwards takes it at startup. Every host compares its own partitions'
//! records (no difference: v2 writes what v1 writes) and says so in its member
//! report. `ferry shadow promote --group` then makes v2 live on every host while
//! records stream in: the ledger holds every produced id exactly once across the
//! promotion. A second shadow (one that differs on 1 % of records) is published and
//! `ferry shadow discard --group` drops it on every host; v2 stays live, and nothing
//! any shadow computed reaches the ledger.

mod shadow_support;
mod swap_support;

use ferry_host::deploy::client::Request;
use ferry_host::deploy::group::catalog::Judge;
use ferry_host::deploy::group::command::{GroupRequest, TopicArgs, deploy};
use ferry_host::deploy::group::publish::catalog;
use ferry_host::deploy::group::record::{Action, Scope};
use ferry_host::deploy::group::topic::TopicAccess;
use ferry_host::host::Host;
use ferry_tests::{Broker as _, produce, unique, wait_until, wait_until_or_explain};
use shadow_support::*;
use swap_support::*;

const TOPIC: &str = "_ferry.components";
const ENV: &str = "test";

fn topic_args(brokers: &str) -> TopicArgs {
    TopicArgs {
        brokers: Some(brokers.to_owned()),
        config: None,
        components_topic: Some(TOPIC.to_owned()),
        environment: Some(ENV.to_owned()),
    }
}

/// `ferry deploy --group` / `ferry shadow ... --group`, unsigned (the hosts trust no key).
fn group(brokers: &str, request: GroupRequest<'_>) {
    deploy(&topic_args(brokers), PIPELINE, request, None).expect("published to the components topic");
}

/// The shadow a host runs, from its admin API (`None`: 404, no shadow).
fn shadow_of(host: &Host) -> Option<String> {
    let answer = admin(host, Request::ShadowReport);
    match answer.status {
        200 => Some(json(&answer)["shadow"]["digest"].as_str().expect("a digest").to_owned()),
        404 => None,
        other => panic!("{other}: {}", answer.body),
    }
}

/// The shadow each member says it runs, in the components topic.
fn reported_shadows(brokers: &str) -> Vec<String> {
    let access = TopicAccess { brokers: brokers.to_owned(), kafka: Default::default(), topic: TOPIC.to_owned() };
    let judge = Judge { scope: Scope::new(ENV, PIPELINE), trusted: Default::default(), limit: 64 << 20 };
    let catalog = catalog(&access, judge, false).expect("the components topic reads");
    catalog.members().values().map(|r| r.shadow.clone()).collect()
}

#[test]
fn a_group_shadow_reaches_every_host_and_a_group_promotion_loses_nothing() {
    let (v1, v2, odd) =
        (build("ferry-guest-mirror-v1"), build("ferry-guest-mirror-v2"), build("ferry-guest-mirror-odd"));
    let broker = broker();
    broker.create_topic(TOPIC, 1);
    let brokers = broker.brokers();
    let consumers = unique("shadow-group");
    let fleet = format!("group_deploy = true\n[fleet]\nenvironment = \"{ENV}\"\n");
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start_host = |i: usize| host_with(&broker, &consumers, &v1, caches[i].path(), "max_time_share = 100", &fleet);
    let mut hosts = vec![start_host(0), start_host(1)];

    let first = numbers(0, 1000);
    produce(&brokers, "input", PARTITIONS, &first);
    wait_committed(&brokers, &consumers, 1000);

    // The shadow, published once, reaches both running hosts.
    group(&brokers, GroupRequest::Shadow(&v2.path, 16 << 10));
    for host in &hosts {
        wait_until("the host runs the group's shadow", || shadow_of(host).as_deref() == Some(v2.digest.as_str()));
        assert_eq!(running(host), v1.digest, "a shadow never runs live");
    }
    // A host started after it takes it at startup, from the topic.
    hosts.push(start_host(2));
    wait_until("the third host runs the group's shadow", || {
        shadow_of(&hosts[2]).as_deref() == Some(v2.digest.as_str())
    });
    assert_eq!(deployed(&hosts[2]), v1.digest);
    wait_until("the third host owns partitions", || {
        hosts[2].pipelines[0].shared.stats.snapshot().partitions.values().any(|p| p.assigned)
    });
    wait_until_or_explain(
        "every member reports the shadow in the components topic",
        || {
            let shadows = reported_shadows(&brokers);
            shadows.len() == 3 && shadows.iter().all(|s| *s == v2.digest)
        },
        || format!("{:?}", reported_shadows(&brokers)),
    );

    // Every host compares its own partitions' records.
    let second = numbers(1000, 2000);
    produce(&brokers, "input", PARTITIONS, &second);
    wait_committed(&brokers, &consumers, 3000);
    wait_until_or_explain(
        "the hosts' shadows account for the round's records",
        || hosts.iter().map(|h| n(&report(h), "compared") + n(&report(h), "skipped")).sum::<u64>() >= 2000,
        || format!("{:?}", hosts.iter().map(report).collect::<Vec<_>>()),
    );
    for (i, host) in hosts.iter().enumerate() {
        let r = report(host);
        assert!(n(&r, "compared") > 0, "host {i} compared its partitions' records: {r}");
        assert_eq!(n(&r, "different"), 0, "host {i}: {r}");
        assert_eq!(r["against"], v1.digest.as_str(), "host {i}: {r}");
    }
    let so_far: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_ledger_is_exactly(&brokers, &so_far);

    // A promotion through the topic, while records stream in.
    let producer = std::thread::spawn({
        let brokers = brokers.clone();
        move || {
            let third = numbers(3000, 2000);
            produce(&brokers, "input", PARTITIONS, &third);
            third
        }
    });
    group(&brokers, GroupRequest::DecideShadow(Action::Promote));
    let third = producer.join().unwrap();
    for host in &hosts {
        // Deployed: a host whose last batch ran before the promotion reached it runs
        // v2 from its next batch (the next round shows it).
        wait_until("the host switches to v2", || deployed(host) == v2.digest);
        assert_eq!(shadow_of(host), None, "promoted: no shadow left");
        let history = host.pipelines[0].slot.history();
        let promoted = history.iter().find(|e| e.action == "shadow-promote").expect("a promotion in the history");
        assert!(promoted.detail.contains("by the group (shadow-promote #2"), "{promoted:?}");
        assert!(promoted.detail.contains(" 0 different"), "{promoted:?}");
    }
    wait_committed(&brokers, &consumers, 5000);
    let so_far: Vec<String> = so_far.into_iter().chain(third).collect();
    assert_ledger_is_exactly(&brokers, &so_far);

    // A second shadow, then a discard through the topic: every host drops it.
    group(&brokers, GroupRequest::Shadow(&odd.path, 16 << 10));
    for host in &hosts {
        wait_until("the host runs the second shadow", || shadow_of(host).as_deref() == Some(odd.digest.as_str()));
    }
    let fourth = numbers(5000, 1000);
    produce(&brokers, "input", PARTITIONS, &fourth);
    wait_committed(&brokers, &consumers, 6000);
    group(&brokers, GroupRequest::DecideShadow(Action::Discard));
    for host in &hosts {
        wait_until("the host dropped the shadow", || shadow_of(host).is_none());
        assert_eq!(running(host), v2.digest, "the round after the promotion ran on v2, and the discard left it");
        let history = host.pipelines[0].slot.history();
        let last = history.last().expect("history");
        assert_eq!((last.action, last.digest.as_str()), ("shadow-discard", odd.digest.as_str()), "{last:?}");
    }
    wait_until_or_explain(
        "no member reports a shadow any more",
        || reported_shadows(&brokers).iter().all(String::is_empty),
        || format!("{:?}", reported_shadows(&brokers)),
    );
    // The odd shadow's `<n>!` values never reached the ledger.
    let all: Vec<String> = so_far.into_iter().chain(fourth).collect();
    assert_ledger_is_exactly(&brokers, &all);
    for host in hosts {
        stop(host);
    }
}
