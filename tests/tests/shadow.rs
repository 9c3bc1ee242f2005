//! Shadow deploys on the embedded broker, with guests built from source
//! (`tests/guests/mirror-v1`): the live version writes every record to `ledger`; a
//! shadow version runs the same batches after it, and what it would have written is
//! compared and never published.
//!
//! - an identical v2: no difference, promoted through the admin API, and every input
//!   record in the ledger exactly once across the promotion (the ledger of ids);
//! - a v2 that differs on a known 1 % of records: exactly those (partition, offset)
//!   pairs reported, with both sides;
//! - a shadow that panics on every record, and one that sleeps in every batch: the
//!   live ledger and the committed offsets are those of a host without a shadow, and
//!   the sleeper's skipped batches are counted.

mod shadow_support;
mod swap_support;

use std::collections::{BTreeMap, BTreeSet};

use ferry_host::deploy::client::{Request, report_text};
use ferry_tests::{Broker as _, produce, read_all, unique, wait_until};
use shadow_support::*;
use swap_support::*;

#[test]
fn an_identical_version_shows_no_difference_and_is_promoted_without_loss() {
    let (v1, v2) = (build("ferry-guest-mirror-v1"), build("ferry-guest-mirror-v2"));
    let broker = broker();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let group = unique("shadow-same");
    let a = host(&broker, &group, &v1, cache.path(), "max_time_share = 100");

    let answer = admin(&a, Request::DeployShadow(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["shadow"], v2.digest.as_str());
    let first = numbers(0, 2000);
    produce(&brokers, "input", PARTITIONS, &first);
    let report = wait_for_comparison(&a, 2000);
    println!("identical: {}", report_text(&report).lines().take(3).collect::<Vec<_>>().join(" | "));
    assert_eq!(n(&report, "different"), 0, "{report}");
    assert_eq!(n(&report, "state_different"), 0, "{report}");
    assert!(n(&report, "compared") > 0 && n(&report, "equal") == n(&report, "compared"), "{report}");
    assert!(report["differences"].as_array().unwrap().is_empty(), "{report}");
    // The shadow wrote nothing: the ledger holds the live version's records alone.
    wait_committed(&brokers, &group, 2000);
    assert_ledger_is_exactly(&brokers, &first);

    // Promotion under load: records produced while the switch happens.
    let producer = std::thread::spawn({
        let brokers = brokers.clone();
        move || {
            let second = numbers(2000, 2000);
            produce(&brokers, "input", PARTITIONS, &second);
            second
        }
    });
    let answer = admin(&a, Request::ShadowPromote);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["to"], v2.digest.as_str());
    let second = producer.join().unwrap();
    wait_until("the pipeline runs v2", || running(&a) == v2.digest);
    wait_committed(&brokers, &group, 4000);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_ledger_is_exactly(&brokers, &all);

    let versions = json(&admin(&a, Request::Versions));
    let actions: Vec<&str> =
        versions["history"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["deploy", "shadow", "shadow-promote", "deploy"], "{versions}");
    assert!(versions["shadow"].is_null(), "{versions}");
    assert_eq!(admin(&a, Request::ShadowReport).status, 404);
    stop(a);
}

#[test]
fn a_version_that_differs_on_one_percent_is_reported_record_by_record() {
    let (v1, odd) = (build("ferry-guest-mirror-v1"), build("ferry-guest-mirror-odd"));
    let broker = broker();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let group = unique("shadow-odd");
    let a = host(&broker, &group, &v1, cache.path(), "max_time_share = 100, keep_differences = 100");
    let answer = admin(&a, Request::DeployShadow(&odd.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);

    let values = numbers(0, 2000);
    produce(&brokers, "input", PARTITIONS, &values);
    let report = wait_for_comparison(&a, 2000);
    assert_eq!(n(&report, "skipped"), 0, "the shadow kept within its share: {report}");
    assert_eq!(n(&report, "compared"), 2000, "{report}");
    // Where the records landed, read back from the input topic.
    let expected: BTreeSet<(i32, i64)> = read_all(&brokers, "input")
        .iter()
        .filter(|r| r.value.parse::<u64>().unwrap() % 100 == 37)
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(expected.len(), 20);
    let differences = report["differences"].as_array().unwrap();
    let reported: BTreeSet<(i32, i64)> =
        differences.iter().map(|d| (d["partition"].as_i64().unwrap() as i32, d["offset"].as_i64().unwrap())).collect();
    assert_eq!(reported, expected, "{report}");
    assert_eq!(n(&report, "different"), 20);
    assert_eq!(n(&report, "equal"), 1980);
    let by_offset: BTreeMap<(i32, i64), String> =
        read_all(&brokers, "input").into_iter().map(|r| ((r.partition, r.offset), r.value)).collect();
    for d in differences {
        let value = &by_offset[&(d["partition"].as_i64().unwrap() as i32, d["offset"].as_i64().unwrap())];
        assert_eq!(d["aspects"], serde_json::json!(["outputs"]), "{d}");
        let (live, shadow, diff) =
            (d["live"].as_str().unwrap(), d["shadow"].as_str().unwrap(), d["diff"].as_str().unwrap());
        assert!(live.contains(&format!("value=\"{value}\"")), "live side: {live}");
        assert!(shadow.contains(&format!("value=\"{value}!\"")), "shadow side: {shadow}");
        assert!(diff.contains("- output[0] ledger key=") && diff.contains(&format!("value=\"{value}!\"")), "{diff}");
    }
    // The same report for people, as `ferry shadow report` prints it.
    let text = report_text(&report);
    assert!(text.contains("2000 compared, 1980 equal, 20 different, 0 skipped"), "{text}");
    let (p, o) = expected.iter().next().unwrap();
    assert!(text.contains(&format!("input [{p}] offset {o}: outputs")), "{text}");
    // The live version's ledger, untouched by the shadow.
    wait_committed(&brokers, &group, 2000);
    assert_ledger_is_exactly(&brokers, &values);

    let answer = admin(&a, Request::ShadowDiscard);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let versions = json(&admin(&a, Request::Versions));
    let last = versions["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "shadow-discard", "{versions}");
    assert!(last["detail"].as_str().unwrap().contains("20 different"), "{last}");
    assert_eq!(running(&a), v1.digest);
    stop(a);
}

/// A hostile shadow (`build`, with these shadow settings) beside the live v1:
/// returns the final report once the live path finished every record.
fn beside_a_hostile_shadow(build_name: &str, shadow: &str) -> serde_json::Value {
    let (v1, hostile) = (build("ferry-guest-mirror-v1"), build(build_name));
    let broker = broker();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let group = unique("shadow-hostile");
    let a = host(&broker, &group, &v1, cache.path(), shadow);
    let answer = admin(&a, Request::DeployShadow(&hostile.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let values = numbers(0, 1000);
    produce(&brokers, "input", PARTITIONS, &values);
    wait_committed(&brokers, &group, 1000);
    assert_ledger_is_exactly(&brokers, &values);
    let report = wait_for_comparison(&a, 1000);
    println!("{build_name}: {}", report_text(&report).lines().take(3).collect::<Vec<_>>().join(" | "));
    // The live version stays live, and nothing of the shadow's reached Kafka.
    assert_eq!(running(&a), v1.digest);
    stop(a);
    report
}

#[test]
fn a_shadow_that_panics_never_touches_the_live_path() {
    let report = beside_a_hostile_shadow("ferry-guest-mirror-panic", "max_time_share = 100");
    assert!(n(&report, "compared") > 0, "{report}");
    assert_eq!(n(&report, "different"), n(&report, "compared"), "every record compared differs: {report}");
    let first = &report["differences"][0];
    assert!(first["diff"].as_str().unwrap().contains("+ outcome: fault (panic)"), "{first}");
}

#[test]
fn a_shadow_that_sleeps_is_bounded_and_its_skips_counted() {
    let report = beside_a_hostile_shadow("ferry-guest-mirror-sleep", "time_per_batch_ms = 300, max_time_share = 0.5");
    assert!(n(&report, "skipped_batches") > 0, "{report}");
    assert!(n(&report, "shadow_timeouts") > 0, "{report}");
    assert!(report_text(&report).contains("the shadow ran out of time in"), "{report}");
    assert_eq!(n(&report, "equal"), 0, "{report}");
}

#[test]
fn promote_after_makes_an_identical_version_live_on_its_own() {
    let (v1, v2) = (build("ferry-guest-mirror-v1"), build("ferry-guest-mirror-v2"));
    let broker = broker();
    let brokers = broker.brokers();
    let cache = tempfile::tempdir().unwrap();
    let group = unique("shadow-auto");
    let a = host(&broker, &group, &v1, cache.path(), "max_time_share = 100, promote_after = 500");
    let answer = admin(&a, Request::DeployShadow(&v2.bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let values = numbers(0, 3000);
    produce(&brokers, "input", PARTITIONS, &values);
    wait_until("the shadow promotes itself", || running(&a) == v2.digest);
    wait_committed(&brokers, &group, 3000);
    assert_ledger_is_exactly(&brokers, &values);
    let versions = json(&admin(&a, Request::Versions));
    let promoted = versions["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "shadow-promote")
        .unwrap_or_else(|| panic!("{versions}"))
        .clone();
    assert!(promoted["detail"].as_str().unwrap().contains("promote_after"), "{promoted}");
    assert!(promoted["detail"].as_str().unwrap().contains(" 0 different"), "{promoted}");
    stop(a);
}
