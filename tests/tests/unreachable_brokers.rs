//! `ferry run` against brokers that are not there (a newcomer's usual next step):
//! the outage is told once, then summarized, not logged per retry; `/readyz` says
//! why the host is not ready; and a log file gets no colour codes.

mod observe_support;

use ferry_tests::*;
use observe_support::get;

#[test]
fn a_dead_broker_is_told_once_then_summarized_and_readyz_says_why() {
    let dead = free_port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
            brokers = "127.0.0.1:{dead}"
            [admin]
            listen = "{admin}"
            [[pipeline]]
            name = "orders"
            inputs = ["orders"]
            group = "orders"
            component = "{}"
            output_topics = ["commissions"]
            "#,
            guest("ferry-example-orders").display()
        ),
    );
    let ferry = FerryProcess::start(&config);

    // librdkafka retries the connection with a backoff and reports it each time; the
    // first summary comes 30 s after the outage was first told.
    wait_until("the first summary of the outage", || ferry.log_text().contains("still no Kafka broker reachable"));
    let log = ferry.log_text();
    let told = log.matches("cannot reach any Kafka broker").count();
    assert!((1..=2).contains(&told), "once per client (the consumer, the output producer):\n{log}");
    assert!(log.contains(&format!("127.0.0.1:{dead}")), "the line says which broker and why:\n{log}");
    assert!(log.lines().count() <= 10, "a handful of lines, not one per retry:\n{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log file:\n{log}");

    let answer = get(admin, "/readyz");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("pipeline orders: not in consumer group orders yet")
            && answer.body.contains("no Kafka broker reachable for")
            && answer.body.contains("brokers are down"),
        "/readyz explains: {}",
        answer.body
    );
}

#[test]
fn brokers_that_go_away_and_come_back_are_noticed() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("orders", 2);
    let config = ferry_host::config::Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "orders"
        inputs = ["orders"]
        group = "orders"
        component = "{}"
        "#,
        guest("ferry-example-passthrough").display()
    ))
    .unwrap();
    let host = ferry_host::host::Host::start(&config).unwrap();
    let stats = &host.pipelines[0].shared.stats;
    wait_until("partitions assigned", || stats.snapshot().partitions.values().any(|p| p.assigned));
    assert_eq!(stats.snapshot().brokers_down, None);

    broker.cluster().broker_down(1).unwrap();
    wait_until("the outage is noticed", || stats.snapshot().brokers_down.is_some());
    let down = stats.snapshot().brokers_down.unwrap();
    assert!(down.why.contains("brokers are down"), "{down}");

    broker.cluster().broker_up(1).unwrap();
    // librdkafka's statistics (every 5 s) show the broker up again.
    wait_until("the broker's return is noticed", || stats.snapshot().brokers_down.is_none());

    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
}
