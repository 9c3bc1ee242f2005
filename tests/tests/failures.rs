//! Every way a record or a guest can fail ends in a defined, observable result, with
//! nothing lost: poison records, retries, dead letters, halts, broker faults, and
//! tenants that cannot hurt each other.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::checker::{CommitSampler, Report, check};
use ferry_tests::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// A chaos-guest pipeline: the record values say how the guest misbehaves.
fn chaos_pipeline(name: &str, topic: &str, failure: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{name}"
        inputs = ["{topic}"]
        group = "{name}"
        component = "{}"
        batch_size = 50
        max_wait_ms = 10
        output_topics = ["out"]
        commit = {{ policy = "interval", interval_ms = 50 }}
        limits = {{ time_per_batch_ms = 200, memory_mib = 32 }}
        failure = {{ {failure} }}
        "#,
        guest("ferry-guest-chaos").display()
    )
}

fn start(brokers: &str, pipelines: &str) -> Host {
    Host::start(&Config::parse(&format!("brokers = \"{brokers}\"\n{pipelines}")).unwrap()).unwrap()
}

fn stop(host: Host) {
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

fn caught_up(brokers: &str, group: &str, topic: &str) -> bool {
    lag(brokers, group, topic).iter().all(|p| p.lag() == 0)
}

fn header<'a>(read: &'a Read, name: &str) -> &'a str {
    read.header(name).unwrap_or_else(|| panic!("no header {name}"))
}

#[test]
fn poison_records_are_isolated_and_dead_lettered_while_their_neighbours_are_processed() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("dlq", 1);
    let values: Vec<String> = (0..200)
        .map(|i| match i {
            57 => "panic".to_owned(),
            130 => "loop".to_owned(),
            _ => format!("fine {i}"),
        })
        .collect();
    produce(&brokers, "in", 1, &values);
    let host = start(
        &brokers,
        &chaos_pipeline(
            "poison",
            "in",
            r#"on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 2, backoff_initial_ms = 10"#,
        ),
    );
    wait_until("committed to the log end", || caught_up(&brokers, "poison", "in"));
    let stats = host.pipelines[0].shared.stats.snapshot();
    stop(host);

    let dead = read_all(&brokers, "dlq");
    let offsets: Vec<&str> = dead.iter().map(|r| header(r, "ferry.offset")).collect();
    assert_eq!(offsets, ["57", "130"], "exactly the poison records are dead-lettered");
    assert_eq!(dead[0].value, "panic", "the record as it was");
    assert!(header(&dead[0], "ferry.reason").contains("panicked"), "{:?}", dead[0].headers);
    assert!(header(&dead[1], "ferry.reason").contains("time limit"), "{:?}", dead[1].headers);
    for d in &dead {
        assert_eq!(header(d, "ferry.attempts"), "2");
        assert_eq!(header(d, "ferry.pipeline"), "poison");
        assert_eq!(header(d, "ferry.topic"), "in");
        assert_eq!(header(d, "ferry.partition"), "0");
        assert_eq!(header(d, "ferry.component").len(), 64, "the component digest");
    }
    let partition = &stats.partitions[&("in".to_owned(), 0)];
    assert_eq!(partition.processed, 198, "every healthy record processed");
    assert_eq!(partition.dead_lettered, 2);
    assert!(stats.faults.get("panic").is_some_and(|&n| n >= 2), "{:?}", stats.faults);
    assert!(stats.faults.get("timeout").is_some_and(|&n| n >= 2), "{:?}", stats.faults);
}

#[test]
fn retryable_records_back_off_then_go_to_the_dead_letter_topic() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    broker.create_topic("dlq", 1);
    produce(&brokers, "in", 1, &["fine".into(), "retry".into(), "fine".into()]);
    let failure = r#"failure = { on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 4, backoff_initial_ms = 20, backoff_max_ms = 40 }"#;
    let sampler = CommitSampler::start(&brokers, "retries", "in");
    let host = start(&brokers, &format!("{}{failure}", recorder_pipeline("retries", "in")));
    wait_until("committed to the log end", || caught_up(&brokers, "retries", "in"));
    let stats = host.pipelines[0].shared.stats.snapshot();
    stop(host);
    let dead = read_all(&brokers, "dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "ferry.offset"), "1");
    assert_eq!(header(&dead[0], "ferry.attempts"), "4");
    let partition = &stats.partitions[&("in".to_owned(), 0)];
    assert_eq!(partition.retried, 4, "four attempts, each marked retry");
    assert_eq!(partition.processed, 2, "the neighbours were processed once each");
    // Each attempt came after the backoff: 20 ms, then 40 (doubled), then 40 (capped).
    let times = ferry_tests::checker::delivery_times(&[captured_log()], "retries", "in", 0, 1);
    assert_eq!(times.len(), 4, "four deliveries of the retried record");
    for (gap, at_least) in times.windows(2).zip([20, 40, 40]) {
        let gap = gap[1].duration_since(gap[0]).unwrap();
        assert!(
            gap >= Duration::from_millis(at_least),
            "a retry came {gap:?} after the last attempt, before its {at_least} ms backoff"
        );
    }
    let report = check(&brokers, "in", "retries", Some("dlq"), &[captured_log()], &sampler.stop());
    report.assert_sound();
}

/// Records awaiting another try are kept in memory, not read again from Kafka: a
/// retry works while the broker is down, and cannot find its record gone from the
/// log (retention or compaction during the backoff).
#[test]
fn a_retry_needs_neither_the_log_nor_the_broker() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &["fine".into(), "retry-once".into()]);
    let failure = r#"failure = { max_attempts = 3, backoff_initial_ms = 1000, backoff_max_ms = 1000 }"#;
    let host = start(&brokers, &format!("{}{failure}", recorder_pipeline("memory", "in")));
    let outcomes = || ferry_tests::checker::outcomes(&[captured_log()], "memory", "in", 0, 1);
    wait_until("the first attempt asked for a retry", || outcomes() == ["retry"]);
    broker.cluster().broker_down(1).unwrap();
    wait_until("the retry processed the record with the broker down", || outcomes() == ["retry", "processed"]);
    broker.cluster().broker_up(1).unwrap();
    wait_until("committed to the log end", || caught_up(&brokers, "memory", "in"));
    stop(host);
}

#[test]
fn halt_stops_one_partition_and_never_commits_past_it() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 2);
    // Round-robin: even indexes to partition 0, odd to partition 1.
    let values: Vec<String> = (0..40).map(|i| if i == 20 { "reject".into() } else { format!("fine {i}") }).collect();
    produce(&brokers, "in", 2, &values);
    let host = start(&brokers, &chaos_pipeline("halt", "in", r#"on_failure = "halt""#));
    wait_until("partition 1 caught up and partition 0 halted", || {
        let lags = lag(&brokers, "halt", "in");
        let halted = host.pipelines[0]
            .shared
            .stats
            .snapshot()
            .partitions
            .get(&("in".to_owned(), 0))
            .and_then(|p| p.halted.clone());
        lags[1].lag() == 0 && lags[0].committed == Some(10) && halted.is_some()
    });
    let halted = host.pipelines[0].shared.stats.snapshot().partitions[&("in".to_owned(), 0)].halted.clone().unwrap();
    assert!(halted.contains("offset 10") && halted.contains("asked to reject"), "{halted}");
    stop(host);
    assert_eq!(lag(&brokers, "halt", "in")[0].committed, Some(10), "not past the halted record, even at shutdown");
}

#[test]
fn commit_errors_never_lose_records_and_the_commit_catches_up() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 2);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 2, &(0..400).map(|i| format!("r{i}")).collect::<Vec<_>>());
    broker.cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
        ],
    );
    let sampler = CommitSampler::start(&brokers, "commit-errors", "in");
    let host = start(&brokers, &recorder_pipeline("commit-errors", "in"));
    wait_until("committed to the log end despite the errors", || caught_up(&brokers, "commit-errors", "in"));
    let stats = host.pipelines[0].shared.stats.snapshot();
    stop(host);
    assert!(stats.commit_failures >= 1, "the injected errors were seen and reported");
    let report = checked(&brokers, "commit-errors", "in", sampler);
    assert_eq!(report.processed, 400, "every record processed:\n{}", report.summary());
}

/// A recorder pipeline (the independent checker's ledger), named and grouped `name`.
fn recorder_pipeline(name: &str, topic: &str) -> String {
    format!(
        r#"
        [[pipeline]]
        name = "{name}"
        inputs = ["{topic}"]
        group = "{name}"
        component = "{}"
        batch_size = 20
        max_wait_ms = 5
        output_topics = ["seen"]
        settings = {{ incarnation = "{name}" }}
        logs = {{ lines_per_sec = 100000, bytes_per_sec = 67108864 }}
        commit = {{ policy = "interval", interval_ms = 50 }}
        kafka = {{ "session.timeout.ms" = "6000" }}
        "#,
        guest("ferry-guest-recorder").display()
    )
}

/// The independent checker's verdict on recorder pipeline `name` over `topic`.
fn checked(brokers: &str, name: &str, topic: &str, sampler: CommitSampler) -> Report {
    let report = check(brokers, topic, name, None, &[captured_log()], &sampler.stop());
    report.assert_sound();
    report
}

#[test]
fn broker_down_and_back_loses_nothing_and_shutdown_does_not_hang() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &(0..100).map(|i| format!("a{i}")).collect::<Vec<_>>());
    let sampler = CommitSampler::start(&brokers, "outage", "in");
    let host = start(&brokers, &recorder_pipeline("outage", "in"));
    wait_until("first records committed", || lag(&brokers, "outage", "in")[0].committed.is_some_and(|c| c > 0));
    let errors_before = host.pipelines[0].shared.stats.snapshot().consumer_errors;
    broker.cluster().broker_down(1).unwrap();
    let second_half = produce_later(&brokers);
    wait_until("the consumer noticed the outage", || {
        host.pipelines[0].shared.stats.snapshot().consumer_errors > errors_before
    });
    broker.cluster().broker_up(1).unwrap();
    second_half.join().expect("the second half was produced");
    wait_until("caught up after the outage", || caught_up(&brokers, "outage", "in"));
    let report = checked(&brokers, "outage", "in", sampler);
    assert_eq!(report.processed, 200, "every record processed:\n{}", report.summary());

    // With the broker down, a shutdown's commit gives up after its bound instead of
    // blocking forever.
    broker.cluster().broker_down(1).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        stop(host);
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(PATIENCE).expect("shutdown finished while the broker was down");
    broker.cluster().broker_up(1).unwrap();
}

/// While the broker is down, produce the outage's second half from a thread: the
/// producer queues until the broker is back.
fn produce_later(brokers: &str) -> std::thread::JoinHandle<()> {
    let brokers = brokers.to_owned();
    std::thread::spawn(move || produce(&brokers, "in", 1, &(0..100).map(|i| format!("b{i}")).collect::<Vec<_>>()))
}

#[test]
fn added_latency_loses_nothing_and_keeps_commit_round_trips_serial() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 2);
    broker.create_topic("seen", 1);
    broker.cluster().broker_round_trip_time(1, Duration::from_millis(50)).unwrap();
    produce(&brokers, "in", 2, &(0..200).map(|i| format!("r{i}")).collect::<Vec<_>>());
    let sampler = CommitSampler::start(&brokers, "latency", "in");
    let host = start(&brokers, &recorder_pipeline("latency", "in"));
    wait_until("caught up with 50 ms round trips", || caught_up(&brokers, "latency", "in"));
    stop(host);
    let report = checked(&brokers, "latency", "in", sampler);
    assert_eq!(report.processed, 200, "every record processed:\n{}", report.summary());
}

#[test]
fn a_hostile_tenant_does_not_stop_the_others() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["looping", "bombing", "trapping", "healthy"] {
        broker.create_topic(topic, 1);
    }
    broker.create_topic("seen", 1);
    for (topic, value) in [("looping", "loop"), ("bombing", "oom"), ("trapping", "panic")] {
        produce(&brokers, topic, 1, &vec![value.to_owned(); 50]);
    }
    produce(&brokers, "healthy", 1, &(0..300).map(|i| format!("r{i}")).collect::<Vec<_>>());
    let failure = r#"on_failure = "halt", max_attempts = 1000, backoff_initial_ms = 1, backoff_max_ms = 5"#;
    let pipelines = [
        chaos_pipeline("looping", "looping", failure),
        chaos_pipeline("bombing", "bombing", failure),
        chaos_pipeline("trapping", "trapping", failure),
        recorder_pipeline("healthy", "healthy"),
    ]
    .join("\n");
    let sampler = CommitSampler::start(&brokers, "healthy", "healthy");
    let host = start(&brokers, &pipelines);
    wait_until("the healthy tenant caught up", || caught_up(&brokers, "healthy", "healthy"));
    for name in ["looping", "bombing", "trapping"] {
        assert!(!caught_up(&brokers, name, name), "{name} never finishes a record");
    }
    let faults = |i: usize| host.pipelines[i].shared.stats.snapshot().faults;
    wait_until("each hostile tenant faulted repeatedly", || {
        faults(0).get("timeout").is_some_and(|&n| n > 2)
            && faults(1).get("out_of_memory").is_some_and(|&n| n > 2)
            && faults(2).get("panic").is_some_and(|&n| n > 2)
    });
    stop(host);
    let report = checked(&brokers, "healthy", "healthy", sampler);
    assert_eq!(report.processed, 300, "every healthy record processed:\n{}", report.summary());
}

#[test]
fn huge_binary_and_empty_records_are_processed_and_committed() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    // An empty value, a 512 KiB value, control characters and NULs.
    let values = vec![String::new(), "x".repeat(512 << 10), "\u{0}\u{1}\u{1b}[2J binary".to_owned()];
    produce(&brokers, "in", 1, &values);
    let sampler = CommitSampler::start(&brokers, "sizes", "in");
    let host = start(&brokers, &recorder_pipeline("sizes", "in"));
    wait_until("caught up", || caught_up(&brokers, "sizes", "in"));
    stop(host);
    let report = checked(&brokers, "sizes", "in", sampler);
    assert_eq!((report.processed, report.deliveries), (3, 3), "each record processed once:\n{}", report.summary());
}

#[test]
fn record_headers_reach_the_guest_in_order() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("producer");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace-id", value: Some("abc") })
        .insert(Header { key: "empty", value: Some("") })
        .insert(Header::<&str> { key: "null", value: None })
        .insert(Header { key: "dup", value: Some("1") })
        .insert(Header { key: "dup", value: Some("2") });
    producer.send(BaseRecord::<(), str>::to("in").payload("with headers").headers(headers)).expect("queued");
    producer.send(BaseRecord::<(), str>::to("in").payload("without")).expect("queued");
    producer.flush(Duration::from_secs(10)).expect("flushed");

    let host = start(&brokers, &recorder_pipeline("headers", "in"));
    wait_until("caught up", || caught_up(&brokers, "headers", "in"));
    stop(host);
    let seen = read_all(&brokers, "seen");
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(seen.len(), 2);
    // A null header value reads back as empty here (`Read` keeps text only).
    assert_eq!(seen[0].headers, pairs(&[("trace-id", "abc"), ("empty", ""), ("null", ""), ("dup", "1"), ("dup", "2")]));
    assert_eq!(seen[1].headers, pairs(&[]));
}

/// Kafka means header names to be UTF-8 but does not check. A record whose header
/// name is not still reaches the guest, the invalid bytes replaced, with the
/// records around it.
#[test]
fn a_header_name_that_is_not_utf8_reaches_the_guest_replaced() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    produce(&brokers, "in", 1, &["before".to_owned()]);
    ferry_tests::raw_produce::produce_with_raw_header(&brokers, "in", 0, b"odd", (b"bad\xffname", b"v"));
    produce(&brokers, "in", 1, &["after".to_owned()]);

    let host = start(&brokers, &recorder_pipeline("odd-headers", "in"));
    wait_until("caught up", || caught_up(&brokers, "odd-headers", "in"));
    stop(host);
    let seen = read_all(&brokers, "seen");
    let offsets: Vec<i64> = seen.iter().map(|r| parse_seen(&r.value).2).collect();
    assert_eq!(offsets, [0, 1, 2], "every record processed once");
    assert_eq!(seen[1].headers, [("bad\u{fffd}name".to_owned(), "v".to_owned())]);
}

#[test]
fn pipelines_running_one_component_share_it_and_each_checks_its_grants() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["in-a", "in-b", "seen"] {
        broker.create_topic(topic, 1);
    }
    let two = recorder_pipeline("share-a", "in-a") + &recorder_pipeline("share-b", "in-b");
    let host = start(&brokers, &two);
    let (a, b) = (host.pipelines[0].slot.current(), host.pipelines[1].slot.current());
    assert!(std::sync::Arc::ptr_eq(&a, &b), "one compiled component serves both pipelines");
    produce(&brokers, "in-a", 1, &["a".to_owned()]);
    produce(&brokers, "in-b", 1, &["b".to_owned()]);
    wait_until("both caught up", || caught_up(&brokers, "share-a", "in-a") && caught_up(&brokers, "share-b", "in-b"));
    stop(host);
    let published: std::collections::BTreeSet<String> = read_all(&brokers, "seen")
        .into_iter()
        .map(|r| r.value.split('/').take(2).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(
        published,
        ["share-a/in-a".to_owned(), "share-b/in-b".to_owned()].into(),
        "each pipeline processed its record"
    );

    // The same component in a pipeline that does not grant `output` is refused by name.
    let ungranted = recorder_pipeline("share-c", "in-a").replace("output_topics = [\"seen\"]", "");
    let text = format!("brokers = \"{brokers}\"\n{}{ungranted}", recorder_pipeline("share-a", "in-a"));
    let error = Host::start(&Config::parse(&text).unwrap()).err().expect("the second pipeline is refused");
    assert!(format!("{error:#}").contains("ferry:processor/output@0.2.0"), "{error:#}");
}

/// The names of this process's threads (`comm`, at most 15 characters).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// A host whose second pipeline cannot start stops the first, every worker of it,
/// before it returns the error: nothing goes on consuming behind a failed start.
#[test]
fn a_failed_start_stops_the_workers_that_had_started() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 2);
    produce(&brokers, "in", 2, &(0..20).map(|i| format!("fine {i}")).collect::<Vec<_>>());
    let pipeline = |name: &str, extra: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "{name}"
            inputs = ["in"]
            group = "{name}"
            component = "{}"
            {extra}
            "#,
            guest("ferry-example-passthrough").display()
        )
    };
    let text = format!(
        "brokers = \"{brokers}\"\n{}{}",
        pipeline("up", "workers = 2"),
        pipeline("broken", "kafka = { \"fetch.wait.max.ms\" = \"soon\" }")
    );
    let error = match Host::start(&Config::parse(&text).unwrap()) {
        Ok(_) => panic!("a consumer with a bad property started"),
        Err(error) => format!("{error:#}"),
    };
    let left: Vec<String> = thread_names().into_iter().filter(|name| name.starts_with("ferry-up")).collect();
    assert!(left.is_empty(), "workers of the started pipeline still run: {left:?}");
    assert!(error.contains("pipeline broken") && error.contains("fetch.wait.max.ms"), "{error}");
    assert!(error.contains("the pipelines already started (up) were stopped"), "{error}");
}

/// Two deploys' self-tests at once, while a worker needs its first instance: the
/// instance pool has room for the two workers and one self-test only. The workers'
/// slots are set aside, so the worker's batch never finds the pool full (its records
/// once were charged a fault for it and, at `max_attempts = 1`, halted the
/// partition); a second self-test finds no slot and is refused as passing trouble.
#[test]
fn self_tests_never_take_the_slot_of_a_live_worker() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    for topic in ["a", "b", "out"] {
        broker.create_topic(topic, 1);
    }
    let pipeline = |name: &str| {
        format!(
            r#"
            [[pipeline]]
            name = "{name}"
            inputs = ["{name}"]
            group = "{name}-slots"
            component = "{}"
            max_wait_ms = 10
            output_topics = ["out"]
            settings = {{ self_test_ms = "3000" }}
            failure = {{ on_failure = "halt", max_attempts = 1 }}
            "#,
            guest("ferry-example-passthrough").display()
        )
    };
    let text = format!("brokers = \"{brokers}\"\n[sandbox]\nmax_instances = 3\n{}{}", pipeline("a"), pipeline("b"));
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();
    // a's worker holds an instance; b's has none yet.
    produce(&brokers, "a", 1, &["a0".to_owned()]);
    wait_until("a processed its record", || caught_up(&brokers, "a-slots", "a"));

    let chaos = std::fs::read(guest("ferry-guest-chaos")).unwrap();
    let started = || captured_log().matches("chaos self-test: busy for 3000 ms").count();
    let before = started();
    let deploys: Vec<_> = host
        .pipelines
        .iter()
        .map(|p| {
            let (sandbox, config, slot, bytes) =
                (host.sandbox.clone(), p.config.clone(), p.slot.clone(), chaos.clone());
            std::thread::spawn(move || {
                let limit = ferry_host::deploy::MAX_COMPONENT_BYTES;
                ferry_host::deploy::deploy(
                    &sandbox,
                    &config,
                    &slot,
                    &bytes,
                    limit,
                    ferry_host::registry::Origin::AdminApi,
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    wait_until("a self-test began", || started() > before);
    produce(&brokers, "b", 1, &["b0".to_owned(), "b1".to_owned()]);
    let b = || host.pipelines[1].shared.stats.snapshot().partitions.get(&("b".to_owned(), 0)).cloned();
    wait_until("b's records are processed or halted", || {
        caught_up(&brokers, "b-slots", "b") || b().is_some_and(|p| p.halted.is_some())
    });
    let halted = b().and_then(|p| p.halted);
    let deployed: Vec<Result<_, String>> = deploys.into_iter().map(|d| d.join().unwrap()).collect();
    stop(host);
    assert_eq!(halted, None, "b's records were charged for the host's full pool");
    assert!(deployed.iter().any(Result::is_ok), "{deployed:?}");
    for refused in deployed.iter().filter_map(|d| d.as_ref().err()) {
        assert!(refused.contains("the instance pool is full"), "{refused}");
    }
}

/// Whether process `pid` has a handler for signal `signal` (`SigCgt` in its status).
fn catches(pid: u32, signal: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A SIGTERM that comes while `ferry run` is still starting (compiling its
/// components, joining its groups: seconds) stops it cleanly once it has started,
/// instead of ending it by the signal's default action (CI saw `ferry exited with
/// signal: 15` from a member stopped just after it was started). The handler is in
/// place from the start of `run`, so the signal is sent as soon as it is caught.
#[test]
fn a_sigterm_while_starting_stops_the_host_cleanly() {
    let broker = Embedded::start();
    broker.create_topic("in", 1);
    broker.create_topic("seen", 1);
    let dir = tempfile::tempdir().unwrap();
    let config = ferry_tests::scenarios::recorder_config(&broker, "early-stop", "in", "");
    let mut member = FerryProcess::start(&write_config(dir.path(), &config));
    wait_until("ferry catches SIGTERM", || catches(member.pid(), 15));
    member.terminate();
}
