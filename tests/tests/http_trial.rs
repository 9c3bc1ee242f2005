//! `ferry test` on a processor that calls HTTP services: its requests go for real
//! to a loopback server, under the pipeline's grants, and the report shows each one
//! under its record (stderr adds its time). A URL the pipeline does not grant is
//! refused before any connection: the report says so and the server never sees it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_host::devtools::GuestLanguage;
use ferry_tests::{ferry_bin, guest, polyglot_guest};

/// A customers service on loopback: `c-1` exists, `c-busy` answers 503, anything
/// else 404. Counts its connections.
fn customers() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    (port, connections)
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, body) = match head.split_whitespace().nth(1).unwrap_or("/") {
        "/customers/c-1" => ("200 OK", r#"{"id":"c-1","tier":"gold"}"#),
        "/customers/c-busy" => ("503 Service Unavailable", "busy"),
        _ => ("404 Not Found", ""),
    };
    stream.write_all(
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

fn ferry(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ferry_bin()).args(args).current_dir(dir).output().expect("ferry runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ferry_test_makes_each_request_for_real_and_shows_it() {
    let output = r#"{\"customer\":{\"id\":\"c-1\",\"tier\":\"gold\"},\"order\":{\"customer\":\"c-1\",\"id\":\"o-0\"}}"#;
    trial(&guest("ferry-example-enrich"), output);
}

/// The Python and JavaScript forms of the example attach the customer after the
/// order, in the order the order's fields came.
const POLYGLOT_OUTPUT: &str =
    r#"{\"order\":{\"id\":\"o-0\",\"customer\":\"c-1\"},\"customer\":{\"id\":\"c-1\",\"tier\":\"gold\"}}"#;

#[test]
fn ferry_test_shows_the_requests_of_a_python_processor() {
    trial(&polyglot_guest(GuestLanguage::Python, "examples/enrich-python"), POLYGLOT_OUTPUT);
}

#[test]
fn ferry_test_shows_the_requests_of_a_javascript_processor() {
    trial(&polyglot_guest(GuestLanguage::JavaScript, "examples/enrich-js"), POLYGLOT_OUTPUT);
}

/// `ferry test` of `component` (the enrichment example in some language), whose
/// first order's output value is `output` (as JSON text in the report's JSON).
fn trial(component: &Path, output: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (port, connections) = customers();
    let (canary, canary_connections) = customers();
    let config = format!(
        r#"
        brokers = "unused:9092"
        [[pipeline]]
        name = "enrich"
        inputs = ["orders"]
        group = "enrich"
        component = "{}"
        output_topics = ["enriched-orders"]
        [pipeline.settings]
        customers_url = "http://127.0.0.1:{port}"
        [pipeline.http]
        allow = ["http://127.0.0.1:{port}"]
        request_timeout_ms = 1500
        "#,
        component.display()
    );
    std::fs::write(dir.path().join("ferry.toml"), config).unwrap();
    let orders: Vec<String> = ["c-1", "c-404", "c-busy"]
        .iter()
        .enumerate()
        .map(|(i, c)| format!(r#"{{"value": "{{\"id\":\"o-{i}\",\"customer\":\"{c}\"}}"}}"#))
        .collect();
    std::fs::write(dir.path().join("orders.jsonl"), orders.join("\n")).unwrap();

    let (ok, stdout, stderr) = ferry(dir.path(), &["test", "--config", "ferry.toml", "--input", "orders.jsonl"]);
    assert!(ok, "{stdout}\n{stderr}");
    let url = |c: &str| format!("http://127.0.0.1:{port}/customers/{c}");
    let report: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("record ")).collect();
    let expected = [
        "self-test: passed".to_owned(),
        format!("  http GET {} → 200, 26 bytes", url("c-1")),
        "  processed".to_owned(),
        format!(r#"  output {{"topic":"enriched-orders","key":"c-1","value":"{output}"}}"#),
        format!("  http GET {} → 404, 0 bytes", url("c-404")),
        "  reject: no customer c-404".to_owned(),
        format!("  http GET {} → 503, 4 bytes", url("c-busy")),
        "  retry: customer c-busy: the service answered 503".to_owned(),
        "3 records: 1 processed, 1 rejected, 1 to retry, 0 faulted".to_owned(),
    ];
    assert_eq!(report, expected, "{stdout}");
    assert!(
        stderr.contains(&format!(
            "\n  http: to http://127.0.0.1:{port}; 1000 requests and 16384 KiB per batch, 16 at once, 1500 ms each"
        )),
        "{stderr}"
    );
    for (c, answer) in [("c-1", "200, 26 bytes"), ("c-404", "404, 0 bytes"), ("c-busy", "503, 4 bytes")] {
        let line = format!("ferry test: http GET {} → {answer}, ", url(c));
        assert!(stderr.lines().any(|l| l.starts_with(&line) && l.ends_with(" ms")), "{line} in\n{stderr}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3, "one connection per request");

    // Pointed at a service the pipeline does not grant: refused, never connected to.
    let elsewhere = format!("customers_url=http://127.0.0.1:{canary}");
    let args =
        ["test", "--config", "ferry.toml", "--input", "orders.jsonl", "--batch-size", "3", "--setting", &elsewhere];
    let (ok, stdout, stderr) = ferry(dir.path(), &args);
    assert!(ok, "{stdout}\n{stderr}");
    let requests: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  http ")).collect();
    let refused = |c: &str| {
        format!(
            "  http GET http://127.0.0.1:{canary}/customers/{c} → refused (not in the pipeline's [pipeline.http] allow)"
        )
    };
    assert_eq!(requests, [refused("c-1"), refused("c-404"), refused("c-busy")], "{stdout}");
    assert!(stdout.starts_with("self-test: passed\nbatch orders[0] offsets 0..=2 (3 records)\n  http GET"), "{stdout}");
    assert_eq!(canary_connections.load(Ordering::SeqCst), 0, "the service not granted never saw a connection");
}
