//! Renders figures of a made-up pipeline and reads them back with a strict parser.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::render;
use crate::admin::observe::broker_view::{BrokerPartition, PipelineLogs};
use crate::admin::observe::figures::figures;
use crate::config::Config;
use crate::pipeline::liveness::{LivenessSnapshot, ThreadState};
use crate::pipeline::stats::{BatchCounts, PipelineStats};
use crate::sandbox::GuestFault;

type Labels = BTreeMap<String, String>;

/// A sample: (name, labels) -> value. Fails on anything the format does not allow.
fn parse(text: &str) -> (BTreeMap<(String, Labels), f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_owned()), "second HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "second TYPE for {name}");
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        let (family, kind) = current.clone().expect("a sample before any TYPE");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("closing brace"))),
            None => (series, Labels::new()),
        };
        let allowed = if kind == "histogram" {
            [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")].contains(&name.to_owned())
        } else {
            name == family
        };
        assert!(allowed, "sample {name} inside family {family}");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(samples.insert((name.to_owned(), labels), value).is_none(), "duplicate series {line}");
    }
    (samples, types)
}

fn parse_labels(mut text: &str) -> Labels {
    let mut labels = Labels::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        text = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    labels
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn every_family_is_present_and_matches_the_stats() {
    let stats = PipelineStats::default();
    stats.assigned("orders", 0);
    stats.assigned("orders", 1);
    stats.set_version("abc123");
    let counts = BatchCounts { processed: 7, retried: 2, failed: 1 };
    stats.batch("orders", 0, 10, counts, Duration::from_micros(40));
    stats.batch("orders", 0, 10, BatchCounts::default(), Duration::from_micros(3_000));
    stats.batch("orders", 1, 4, BatchCounts { processed: 4, ..Default::default() }, Duration::from_secs(20));
    stats.dead_lettered("orders", 0);
    stats.committed("orders", 0, 9);
    stats.fault(&GuestFault::Panic("boom".into()));
    stats.fault(&GuestFault::Timeout(5));
    stats.fault(&GuestFault::Timeout(5));
    stats.rebalanced();
    stats.commit_failed();
    let logs = PipelineLogs {
        partitions: BTreeMap::from([
            (("orders".to_owned(), 0), BrokerPartition { log_start: Some(0), log_end: Some(12), committed: Some(8) }),
            (("orders".to_owned(), 1), BrokerPartition { log_start: Some(0), log_end: Some(4), committed: None }),
            (("orders".to_owned(), 2), BrokerPartition { log_start: Some(0), log_end: Some(6), committed: Some(6) }),
        ]),
        refreshed: Some(Instant::now()),
        error: None,
    };
    let text =
        "brokers = \"b:1\"\n[[pipeline]]\nname = \"p-1\"\ninputs = [\"orders\"]\ngroup = \"g\"\ncomponent = \"x.wasm\"";
    let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
    let liveness =
        LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
    let mut fig = figures(config, "abc123".into(), liveness, stats.snapshot(), &logs);
    fig.group = Some(crate::registry::GroupStatus {
        topic: "_ferry.components".into(),
        published: Some("def456".into()),
        refused: 2,
        refused_by: [("signature", 1), ("stale", 1)].into(),
        retries: 3,
        ..Default::default()
    });

    let exposition = render(&[fig]);
    let (samples, types) = parse(&exposition);
    let expected_types = [
        ("ferry_records_processed_total", "counter"),
        ("ferry_records_failed_total", "counter"),
        ("ferry_records_retried_total", "counter"),
        ("ferry_records_dead_lettered_total", "counter"),
        ("ferry_committed_offset", "gauge"),
        ("ferry_position_offset", "gauge"),
        ("ferry_log_end_offset", "gauge"),
        ("ferry_lag_records", "gauge"),
        ("ferry_partition_halted", "gauge"),
        ("ferry_partition_stalled", "gauge"),
        ("ferry_batch_duration_seconds", "histogram"),
        ("ferry_guest_faults_total", "counter"),
        ("ferry_instance_recycles_total", "counter"),
        ("ferry_rebalances_total", "counter"),
        ("ferry_commit_failures_total", "counter"),
        ("ferry_transactions_committed_total", "counter"),
        ("ferry_transactions_aborted_total", "counter"),
        ("ferry_guest_log_lines_total", "counter"),
        ("ferry_guest_log_lines_dropped_total", "counter"),
        ("ferry_component_info", "gauge"),
        ("ferry_group_version_info", "gauge"),
        ("ferry_group_versions_refused_total", "counter"),
        ("ferry_group_version_retries_total", "counter"),
        ("ferry_group_version_retrying", "gauge"),
        ("ferry_group_unsigned_accepted", "gauge"),
        ("ferry_shadow_records_compared_total", "counter"),
        ("ferry_shadow_records_equal_total", "counter"),
        ("ferry_shadow_records_different_total", "counter"),
        ("ferry_shadow_records_skipped_total", "counter"),
        ("ferry_shadow_state_batches_different_total", "counter"),
        ("ferry_shadow_timeouts_total", "counter"),
        ("ferry_shadow_batches_skipped_total", "counter"),
        ("ferry_pipeline_up", "gauge"),
        ("ferry_poll_loop_age_seconds", "gauge"),
        ("ferry_log_end_age_seconds", "gauge"),
        ("ferry_worker_up", "gauge"),
        ("ferry_worker_poll_loop_age_seconds", "gauge"),
        ("ferry_worker_partitions_assigned", "gauge"),
        ("ferry_worker_records_processed_total", "counter"),
        ("ferry_worker_component_info", "gauge"),
    ];
    for (name, kind) in expected_types {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "family {name}\n{exposition}");
    }
    assert_eq!(types.len(), expected_types.len(), "{exposition}");

    let get = |name: &str, l: &[(&str, &str)]| -> f64 {
        *samples.get(&(name.to_owned(), labels(l))).unwrap_or_else(|| panic!("no {name} {l:?} in\n{exposition}"))
    };
    let p0 = [("pipeline", "p-1"), ("topic", "orders"), ("partition", "0")];
    let p1 = [("pipeline", "p-1"), ("topic", "orders"), ("partition", "1")];
    assert_eq!(get("ferry_records_processed_total", &p0), 7.0);
    assert_eq!(get("ferry_group_version_info", &[("pipeline", "p-1"), ("digest", "def456")]), 1.0);
    let refused = |reason| get("ferry_group_versions_refused_total", &[("pipeline", "p-1"), ("reason", reason)]);
    assert_eq!((refused("signature"), refused("stale"), refused("integrity")), (1.0, 1.0, 0.0));
    assert_eq!(get("ferry_group_version_retries_total", &[("pipeline", "p-1")]), 3.0);
    assert_eq!(get("ferry_group_version_retrying", &[("pipeline", "p-1")]), 0.0);
    assert_eq!(get("ferry_group_unsigned_accepted", &[("pipeline", "p-1")]), 1.0);
    assert_eq!(get("ferry_records_processed_total", &p1), 4.0);
    assert_eq!(get("ferry_records_retried_total", &p0), 2.0);
    assert_eq!(get("ferry_records_failed_total", &p0), 1.0);
    assert_eq!(get("ferry_records_dead_lettered_total", &p0), 1.0);
    assert_eq!(get("ferry_committed_offset", &p0), 9.0, "our commit is newer than the broker's last read");
    assert_eq!(get("ferry_position_offset", &p0), 10.0);
    assert_eq!(get("ferry_log_end_offset", &p0), 12.0);
    assert_eq!(get("ferry_lag_records", &p0), 3.0);
    assert_eq!(get("ferry_lag_records", &p1), 4.0, "nothing committed: lag from the log start");
    assert_eq!(get("ferry_partition_halted", &p1), 0.0);
    let p2 = [("pipeline", "p-1"), ("topic", "orders"), ("partition", "2")];
    assert!(!samples.contains_key(&("ferry_lag_records".to_owned(), labels(&p2))), "partition 2 is not ours");

    let pipeline = [("pipeline", "p-1")];
    let bucket = |le: &str| get("ferry_batch_duration_seconds_bucket", &[("pipeline", "p-1"), ("le", le)]);
    assert_eq!(
        (bucket("0.00005"), bucket("0.0025"), bucket("0.005"), bucket("10"), bucket("+Inf")),
        (1.0, 1.0, 2.0, 2.0, 3.0)
    );
    assert_eq!(get("ferry_batch_duration_seconds_count", &pipeline), 3.0);
    assert_eq!(get("ferry_batch_duration_seconds_sum", &pipeline), 20.00304);
    assert_eq!(get("ferry_guest_faults_total", &[("pipeline", "p-1"), ("kind", "timeout")]), 2.0);
    assert_eq!(get("ferry_guest_faults_total", &[("pipeline", "p-1"), ("kind", "panic")]), 1.0);
    assert_eq!(get("ferry_instance_recycles_total", &pipeline), 3.0);
    assert_eq!(get("ferry_rebalances_total", &pipeline), 1.0);
    assert_eq!(get("ferry_commit_failures_total", &pipeline), 1.0);
    assert_eq!(get("ferry_guest_log_lines_dropped_total", &pipeline), 0.0);
    assert_eq!(get("ferry_component_info", &[("pipeline", "p-1"), ("digest", "abc123")]), 1.0);
    assert_eq!(get("ferry_pipeline_up", &pipeline), 1.0);
}

#[test]
fn the_parser_reads_escaped_label_values() {
    assert_eq!(parse_labels(r#"a="x\"y\\z\n",b="""#), labels(&[("a", "x\"y\\z\n"), ("b", "")]));
}

/// Two workers: one series per worker, and the pipeline's series add them up (a
/// partition's offsets come from the worker that owns it now).
#[test]
fn every_worker_has_its_series_and_the_pipeline_their_total() {
    let (first, second) = (PipelineStats::default(), PipelineStats::default());
    first.assigned("orders", 0);
    first.batch("orders", 0, 5, BatchCounts { processed: 5, ..Default::default() }, Duration::from_millis(1));
    first.set_version("v1");
    // Partition 1 was the first worker's, and is the second's now.
    first.assigned("orders", 1);
    first.batch("orders", 1, 3, BatchCounts { processed: 3, ..Default::default() }, Duration::from_millis(1));
    first.revoked("orders", 1);
    second.assigned("orders", 1);
    second.batch("orders", 1, 8, BatchCounts { processed: 5, ..Default::default() }, Duration::from_millis(1));
    second.set_version("v2");
    let text = "brokers = \"b:1\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"orders\"]\ngroup = \"g\"\n\
                component = \"x.wasm\"\nworkers = 2";
    let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
    let up = LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
    let stuck = LivenessSnapshot { since_last_turn: Some(Duration::from_secs(200)), ..up };
    let fig = crate::admin::observe::figures::workers_figures(
        config,
        "v2".into(),
        vec![(up, first.snapshot()), (stuck, second.snapshot())],
        &PipelineLogs::default(),
    );
    let exposition = render(&[fig]);
    let (samples, _) = parse(&exposition);
    let get = |name: &str, l: &[(&str, &str)]| -> f64 {
        *samples.get(&(name.to_owned(), labels(l))).unwrap_or_else(|| panic!("no {name} {l:?} in\n{exposition}"))
    };
    let w = |worker: &'static str| [("pipeline", "p"), ("worker", worker)];
    assert_eq!(
        (get("ferry_worker_records_processed_total", &w("0")), get("ferry_worker_records_processed_total", &w("1"))),
        (8.0, 5.0)
    );
    assert_eq!(
        (get("ferry_worker_partitions_assigned", &w("0")), get("ferry_worker_partitions_assigned", &w("1"))),
        (1.0, 1.0)
    );
    assert_eq!(get("ferry_worker_poll_loop_age_seconds", &w("1")), 200.0);
    assert_eq!(get("ferry_worker_up", &w("1")), 1.0);
    assert_eq!(get("ferry_worker_component_info", &[("pipeline", "p"), ("worker", "1"), ("digest", "v2")]), 1.0);
    let p1 = [("pipeline", "p"), ("topic", "orders"), ("partition", "1")];
    assert_eq!(get("ferry_records_processed_total", &p1), 8.0, "both workers' records of partition 1");
    assert_eq!(get("ferry_position_offset", &p1), 8.0, "the owner's position");
    assert_eq!(get("ferry_poll_loop_age_seconds", &[("pipeline", "p")]), 200.0, "the slowest worker's");
    assert_eq!(get("ferry_batch_duration_seconds_count", &[("pipeline", "p")]), 3.0);
}

/// A pipeline with state exposes each owned partition's state, and is not ready
/// while one is being restored; a pipeline without state has no state families.
#[test]
fn state_gauges_follow_the_partitions_and_a_restore_is_not_ready() {
    let stats = PipelineStats::default();
    stats.assigned("clicks", 0);
    stats.assigned("clicks", 1);
    stats.state_figures("clicks", 0, 3, 420, false);
    stats.state_figures("clicks", 1, 0, 0, true);
    let logs = PipelineLogs { partitions: BTreeMap::new(), refreshed: Some(Instant::now()), error: None };
    let text = "brokers = \"b:1\"\n[[pipeline]]\nname = \"c\"\ninputs = [\"clicks\"]\ngroup = \"g\"\ncomponent = \
                \"x.wasm\"\n[pipeline.state]\n";
    let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
    let liveness =
        LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
    let fig = figures(config, "abc123".into(), liveness, stats.snapshot(), &logs);
    let unready = crate::admin::observe::health::unready(&fig);
    assert!(unready.as_deref().is_some_and(|u| u.contains("restoring the state of clicks/1")), "{unready:?}");
    let (samples, types) = parse(&render(&[fig]));
    let at = |name: &str, partition: &str| {
        samples[&(name.to_owned(), labels(&[("pipeline", "c"), ("topic", "clicks"), ("partition", partition)]))]
    };
    assert_eq!(
        (at("ferry_state_keys", "0"), at("ferry_state_bytes", "0"), at("ferry_state_restoring", "0")),
        (3.0, 420.0, 0.0)
    );
    assert_eq!(at("ferry_state_restoring", "1"), 1.0);
    assert_eq!(types["ferry_state_keys"], "gauge");

    stats.state_figures("clicks", 1, 2, 300, false);
    stats.state_dropped("clicks", 0);
    let text =
        "brokers = \"b:1\"\n[[pipeline]]\nname = \"c\"\ninputs = [\"clicks\"]\ngroup = \"g\"\ncomponent = \"x.wasm\"";
    let stateless = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
    let fig = figures(stateless, "abc123".into(), liveness, stats.snapshot(), &logs);
    assert_eq!(crate::admin::observe::health::unready(&fig), None);
    let (_, types) = parse(&render(&[fig]));
    assert!(!types.contains_key("ferry_state_keys"), "no state families without a pipeline with state");
}

#[test]
fn http_families_hold_requests_errors_in_flight_and_a_duration_histogram() {
    use crate::pipeline::stats::HttpFigures;
    use crate::sandbox::capability::http::DURATION_BUCKETS_US;
    let logs = PipelineLogs { partitions: BTreeMap::new(), refreshed: Some(Instant::now()), error: None };
    let text = "brokers = \"b:1\"\n[[pipeline]]\nname = \"e\"\ninputs = [\"orders\"]\ngroup = \"g\"\ncomponent = \
                \"x.wasm\"\n[pipeline.http]\nallow = [\"http://127.0.0.1:8089\"]\n";
    let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
    let liveness =
        LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
    let mut snapshot = PipelineStats::default().snapshot();
    // 3 requests within 1 ms, 1 within 5 ms, 1 past the last bound.
    let mut buckets = vec![0; DURATION_BUCKETS_US.len() + 1];
    (buckets[0], buckets[2], buckets[DURATION_BUCKETS_US.len()]) = (3, 1, 1);
    snapshot.http = Some(HttpFigures {
        requests: vec![("http://127.0.0.1:8089".into(), "2xx", 4), ("-".into(), "error", 1)],
        errors: vec![("refused", 1)],
        bytes: 900,
        in_flight: 2,
        duration_buckets: buckets,
        duration_sum_us: 12_004_500,
    });
    let fig = figures(config, "abc123".into(), liveness, snapshot, &logs);
    let (samples, types) = parse(&render(&[fig]));
    let at = |name: &str, pairs: &[(&str, &str)]| samples[&(name.to_owned(), labels(pairs))];
    assert_eq!(types["ferry_http_request_duration_seconds"], "histogram");
    assert_eq!(types["ferry_http_requests_in_flight"], "gauge");
    assert_eq!(at("ferry_http_requests_in_flight", &[("pipeline", "e")]), 2.0);
    let bucket = |le: &str| at("ferry_http_request_duration_seconds_bucket", &[("pipeline", "e"), ("le", le)]);
    assert_eq!(
        (bucket("0.001"), bucket("0.0025"), bucket("0.005"), bucket("10"), bucket("+Inf")),
        (3.0, 3.0, 4.0, 4.0, 5.0)
    );
    assert_eq!(at("ferry_http_request_duration_seconds_count", &[("pipeline", "e")]), 5.0);
    assert_eq!(at("ferry_http_request_duration_seconds_sum", &[("pipeline", "e")]), 12.0045);
    assert_eq!(at("ferry_http_requests_total", &[("pipeline", "e"), ("host", "-"), ("class", "error")]), 1.0);
}
