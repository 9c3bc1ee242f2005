//! `examples/enrich` and its Python and JavaScript forms (`examples/enrich-python`,
//! `examples/enrich-js`) end to end: orders on a real broker, their customers from
//! a real HTTP service on loopback, through a host running the example built from
//! source with its SDK. Every order with a known customer comes out enriched once, an order
//! whose customer does not exist is dead-lettered, and one whose lookup failed
//! (the service answered 503) is retried until it is enriched. `/metrics` and the
//! status page account for every request: none left in flight, and the duration
//! histogram holds each one the request counters count.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_host::config::Config;
use ferry_host::devtools::GuestLanguage;
use ferry_host::host::Host;
use ferry_tests::*;

/// Customers `c-0` to `c-7`; `c-flaky` answers 503 to its first two lookups.
fn customers() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let flaky = Arc::new(AtomicUsize::new(0));
    let lookups = flaky.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let lookups = lookups.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &lookups);
            });
        }
    });
    (port, flaky)
}

fn serve(mut stream: TcpStream, flaky: &AtomicUsize) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let id = path.strip_prefix("/customers/").unwrap_or("");
    let (status, body) = match id {
        "c-flaky" if flaky.fetch_add(1, Ordering::SeqCst) < 2 => ("503 Service Unavailable", String::new()),
        "c-flaky" => ("200 OK", r#"{"id":"c-flaky","tier":"bronze"}"#.to_owned()),
        _ if id.strip_prefix("c-").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n < 8) => {
            ("200 OK", format!(r#"{{"id":"{id}","tier":"gold"}}"#))
        }
        _ => ("404 Not Found", String::new()),
    };
    stream.write_all(
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

#[test]
fn orders_are_enriched_with_their_customers_from_a_real_service() {
    enriches_orders(&guest("ferry-example-enrich"));
}

#[test]
fn a_python_processor_enriches_orders_from_a_real_service() {
    enriches_orders(&polyglot_guest(GuestLanguage::Python, "examples/enrich-python"));
}

#[test]
fn a_javascript_processor_enriches_orders_from_a_real_service() {
    enriches_orders(&polyglot_guest(GuestLanguage::JavaScript, "examples/enrich-js"));
}

/// Runs the enrichment pipeline of `component` and judges what it did.
fn enriches_orders(component: &Path) {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    let (name, input, output, dlq) = (unique("enrich"), unique("orders"), unique("enriched"), unique("dlq"));
    broker.create_topic(&input, 2);
    broker.create_topic(&output, 1);
    broker.create_topic(&dlq, 1);
    let (port, flaky) = customers();
    let config = Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [admin]
        listen = "127.0.0.1:0"
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{name}"
        component = "{component}"
        batch_size = 50
        max_wait_ms = 50
        output_topics = ["{output}"]
        failure = {{ max_attempts = 10, backoff_initial_ms = 10, backoff_max_ms = 50, on_failure = "dead-letter", dead_letter_topic = "{dlq}" }}
        [pipeline.settings]
        customers_url = "http://127.0.0.1:{port}"
        output_topic = "{output}"
        [pipeline.http]
        allow = ["http://127.0.0.1:{port}"]
        concurrent_requests = 8
        "#,
        component = component.display(),
    ))
    .unwrap();

    let customer = |i: usize| match i {
        13 | 29 => "c-404".to_owned(),
        21 => "c-flaky".to_owned(),
        _ => format!("c-{}", i % 8),
    };
    let orders: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"id":"o-{i}","customer":"{}","amount_cents":{}}}"#, customer(i), 100 + i))
        .collect();
    let unknown: BTreeSet<String> = ["o-13", "o-29"].map(str::to_owned).into();
    let enriched_ids: BTreeSet<String> = (0..40).map(|i| format!("o-{i}")).filter(|id| !unknown.contains(id)).collect();

    let host = Host::start(&config).unwrap();
    produce(&brokers, &input, 2, &orders);
    let order_id = |value: &str, at: &str| -> String {
        let json: serde_json::Value = serde_json::from_str(value).unwrap();
        json.pointer(at).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
    };
    wait_until_or_explain(
        "every order enriched or dead-lettered, and every partition committed",
        || {
            read_all(&brokers, &output).len() >= enriched_ids.len()
                && read_all(&brokers, &dlq).len() >= unknown.len()
                && lag(&brokers, &name, &input).iter().all(|p| p.lag() == 0)
        },
        || format!("enriched: {:?}\ndead letters: {:?}", read_all(&brokers, &output), read_all(&brokers, &dlq)),
    );
    let admin = host.admin.as_ref().expect("the admin server runs").addr.port();
    let metrics = ferry_tests::hostile::get(admin, "/metrics");
    let status = ferry_tests::hostile::get(admin, "/api/status");
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    // Every request the counters count is in the histogram, and none is in flight.
    let samples = |family: &str| -> Vec<(String, u64)> {
        metrics
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(&format!("pipeline=\"{name}\"")))
            .map(|l| {
                let (labels, value) = l.rsplit_once(' ').unwrap();
                (labels.to_owned(), value.parse().unwrap_or_else(|_| panic!("{l}")))
            })
            .collect()
    };
    let requested: u64 = samples("ferry_http_requests_total{").iter().map(|(_, n)| n).sum();
    assert!(requested >= 42, "one lookup per order, and the flaky one's two more: {metrics}");
    assert_eq!(
        samples("ferry_http_requests_in_flight{"),
        [(format!("ferry_http_requests_in_flight{{pipeline=\"{name}\"}}"), 0)]
    );
    let buckets = samples("ferry_http_request_duration_seconds_bucket{");
    assert_eq!(buckets.len(), 13, "{metrics}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative buckets: {buckets:?}");
    assert_eq!(buckets.last().unwrap().1, requested, "the +Inf bucket holds every request");
    assert_eq!(samples("ferry_http_request_duration_seconds_count{")[0].1, requested);
    let status: serde_json::Value = serde_json::from_str(status.split_once("\r\n\r\n").unwrap().1).unwrap();
    let pipeline = status["pipelines"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str()).unwrap();
    assert_eq!(pipeline["http"]["finished"], requested, "{pipeline}");
    assert_eq!(pipeline["http"]["in_flight"], 0, "{pipeline}");
    assert!(
        pipeline["http"]["p50_ms_at_most"].as_u64().is_some() && pipeline["http"]["p99_ms_at_most"].as_u64().is_some()
    );

    let enriched = read_all(&brokers, &output);
    let ids: Vec<String> = enriched.iter().map(|r| order_id(&r.value, "/order/id")).collect();
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), enriched_ids, "the orders enriched");
    assert_eq!(ids.len(), enriched_ids.len(), "each enriched once: {ids:?}");
    for read in &enriched {
        let json: serde_json::Value = serde_json::from_str(&read.value).unwrap();
        assert_eq!(json["customer"]["id"], json["order"]["customer"], "{}", read.value);
        assert_eq!(read.key, json["order"]["customer"].as_str().unwrap(), "keyed by customer");
    }
    let dead: BTreeSet<String> = read_all(&brokers, &dlq).iter().map(|r| order_id(&r.value, "/id")).collect();
    assert_eq!(dead, unknown, "the orders of unknown customers, dead-lettered");
    assert_eq!(flaky.load(Ordering::SeqCst), 3, "two lookups answered 503, the third enriched the order");
}
