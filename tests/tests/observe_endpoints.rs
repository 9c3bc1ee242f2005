//! `/metrics`, `/healthz` and `/readyz` of a real host on the embedded broker.

mod observe_support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use ferry_host::devtools::build_guest;
use ferry_host::host::Host;
use ferry_host::kafka::offsets;
use observe_support::{Exposition, config, get, produce, toml_path, values, wait_for};
use rdkafka::mocking::MockCluster;

const FAMILIES: [(&str, &str); 23] = [
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
    ("ferry_component_info", "gauge"),
    ("ferry_rebalances_total", "counter"),
    ("ferry_commit_failures_total", "counter"),
    ("ferry_pipeline_up", "gauge"),
    ("ferry_poll_loop_age_seconds", "gauge"),
    ("ferry_log_end_age_seconds", "gauge"),
    ("ferry_admin_connections", "gauge"),
    ("ferry_admin_connections_evicted_total", "counter"),
    ("ferry_admin_connections_refused_total", "counter"),
    ("ferry_admin_requests_refused_total", "counter"),
];

fn pipeline(component: &std::path::Path, group: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"pass\"\ninputs = [\"in\"]\ngroup = \"{group}\"\ncomponent = \"{}\"\nmax_wait_ms = 10\n\
         commit = {{ policy = \"interval\", interval_ms = 100 }}",
        toml_path(component)
    )
}

#[test]
fn metrics_report_what_the_pipeline_did_and_what_kafka_holds() {
    let passthrough = build_guest("ferry-example-passthrough").expect("the passthrough example builds");
    let cluster = MockCluster::new(1).expect("the embedded broker starts");
    cluster.create_topic("in", 2, 1).expect("topic created");
    let brokers = cluster.bootstrap_servers();
    let counts = [25usize, 15];
    for (partition, n) in counts.iter().enumerate() {
        let v = values(&format!("p{partition}"), *n);
        produce(&brokers, "in", partition as i32, &v.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let host = Host::start(&config(&brokers, &pipeline(&passthrough, "metrics-g"))).expect("the host starts");
    let addr = host.admin.as_ref().expect("the admin server runs").addr;

    let metrics = wait_for("every record committed and every log end seen on /metrics", || {
        let answer = get(addr, "/metrics");
        let m = Exposition::parse(&answer.body);
        let settled = counts.iter().enumerate().all(|(p, n)| {
            let at = [("pipeline", "pass"), ("topic", "in"), ("partition", &*p.to_string())];
            let n = *n as f64;
            m.value("ferry_committed_offset", &at) == Some(n) && m.value("ferry_log_end_offset", &at) == Some(n)
        });
        if settled { Ok(answer) } else { Err(answer.body) }
    });
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let m = Exposition::parse(&metrics.body);
    for (name, kind) in FAMILIES {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "TYPE of {name}\n{}", metrics.body);
        assert!(m.helped.contains(name), "HELP of {name}");
    }

    let kafka = offsets::show(&brokers, &BTreeMap::new(), "metrics-g", &["in".to_owned()]).expect("offsets show");
    for row in &kafka {
        let at = [("pipeline", "pass"), ("topic", "in"), ("partition", &*row.partition.to_string())];
        assert_eq!(
            m.value("ferry_committed_offset", &at),
            row.committed.map(|c| c as f64),
            "committed as Kafka reports"
        );
        assert_eq!(m.value("ferry_log_end_offset", &at), Some(row.log_end as f64));
        assert_eq!(m.value("ferry_lag_records", &at), Some(row.lag() as f64));
        assert_eq!(m.value("ferry_position_offset", &at), Some(row.log_end as f64));
        assert_eq!(m.value("ferry_records_processed_total", &at), Some(counts[row.partition as usize] as f64));
        assert_eq!(m.value("ferry_records_failed_total", &at), Some(0.0));
        assert_eq!(m.value("ferry_partition_halted", &at), Some(0.0));
    }

    let stats = host.pipelines[0].shared.stats.snapshot();
    let pass = [("pipeline", "pass")];
    let digest = host.pipelines[0].slot.current().digest().to_owned();
    assert_eq!(m.value("ferry_component_info", &[("pipeline", "pass"), ("digest", &digest)]), Some(1.0));
    assert_eq!(m.value("ferry_batch_duration_seconds_count", &pass), Some(stats.batches as f64));
    let buckets = m.find("ferry_batch_duration_seconds_bucket", &pass);
    assert_eq!(buckets.len(), ferry_host::pipeline::stats::LATENCY_BUCKETS_US.len() + 1);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative buckets");
    assert_eq!(buckets.last().map(|(l, v)| (l["le"].as_str(), *v)), Some(("+Inf", stats.batches as f64)));
    assert!(m.value("ferry_batch_duration_seconds_sum", &pass).is_some_and(|s| s > 0.0));
    for name in ["ferry_instance_recycles_total", "ferry_rebalances_total", "ferry_commit_failures_total"] {
        assert_eq!(m.value(name, &pass), Some(0.0), "{name}");
    }
    assert!(m.find("ferry_guest_faults_total", &pass).is_empty(), "no faults with the passthrough guest");
    assert_eq!(m.value("ferry_pipeline_up", &pass), Some(1.0));

    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "alive\npipeline pass: 2 partition(s) assigned\n"));
    let ready = get(addr, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\npipeline pass: 2 partition(s) assigned\n"));

    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

#[test]
fn readyz_waits_until_the_consumer_has_joined_its_group() {
    let passthrough = build_guest("ferry-example-passthrough").expect("the passthrough example builds");
    let cluster = MockCluster::new(1).expect("the embedded broker starts");
    cluster.create_topic("in", 1, 1).expect("topic created");
    cluster.broker_down(1).expect("broker down");
    let host = Host::start(&config(&cluster.bootstrap_servers(), &pipeline(&passthrough, "ready-g")))
        .expect("the host starts");
    let addr = host.admin.as_ref().expect("the admin server runs").addr;

    // The broker is down: the consumer cannot join, so the host is alive but not ready.
    let health = get(addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("pipeline pass: not in consumer group ready-g yet"), "{}", ready.body);

    cluster.broker_up(1).expect("broker up");
    wait_for("/readyz to turn 200 once the broker is back", || {
        let ready = get(addr, "/readyz");
        if ready.status == 200 { Ok(()) } else { Err(ready.body) }
    });

    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}
