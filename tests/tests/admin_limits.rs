//! The admin server under clients that hold on and push, against
//! a real `ferry run` process so its threads and memory can be read from /proc:
//! 200 idle connections and 8 parallel unauthenticated 60 MiB uploads cost no thread
//! each and little memory, every upload gets 401 without its body being read, and
//! `/healthz` and `/metrics` answer meanwhile. Then the other bounds: an authorized
//! upload over the size limit, the idle timeout, and the connection limit, which ten
//! times as many idle connections cannot use to lock out probes and scrapes.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Barrier;

use ferry_host::admin::limits::MAX_CONNECTIONS;
use ferry_host::deploy::MAX_COMPONENT_BYTES;
use ferry_tests::*;

const MIB: u64 = 1 << 20;
const IDLE: usize = 200;
const UPLOADS: usize = 8;
const UPLOAD_BYTES: usize = 60 << 20;
const TOKEN: &str = "admin-limits-token";
/// Generous ceilings: the host's own threads (pipeline, librdkafka, runtime) are
/// about 20; a thread per connection would make it hundreds.
const MAX_THREADS: u64 = 40;
const MAX_RSS_GROWTH: u64 = 50 * MIB;

/// An HTTP answer, as far as the server sent one before it closed.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("the admin server accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads until the server closes (a reset after its answer counts as closing).
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return raw,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading an answer failed: {e}"),
        }
    }
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head}"));
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

/// `GET path`, or `None` when the server cannot be reached or closes without an
/// answer.
fn try_get(port: u16, path: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let raw = read_until_closed(&mut stream);
    (!raw.is_empty()).then(|| parse(&raw))
}

fn get(port: u16, path: &str) -> Answer {
    try_get(port, path).unwrap_or_else(|| panic!("no answer to GET {path}"))
}

/// The value of one series (`name` or `name{labels}`) on `/metrics`.
fn metric(port: u16, series: &str) -> f64 {
    let answer = get(port, "/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{}", answer.body))
}

/// A PUT of `length` bytes, written whole whatever the server answers (as an
/// attacker would), with `headers` added. Returns the answer and how many body bytes
/// got out before the server closed the connection.
fn upload(port: u16, headers: &str, length: usize, chunked: bool, start: Option<&Barrier>) -> (Answer, usize) {
    let mut stream = connect(port);
    let mut writer = stream.try_clone().unwrap();
    if let Some(start) = start {
        start.wait();
    }
    let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {length}") };
    write!(
        writer,
        "PUT /api/pipelines/pass/component HTTP/1.1\r\nHost: x\r\nContent-Type: application/wasm\r\n{headers}{framing}\r\n\r\n"
    )
    .unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0;
        while sent < length {
            let n = chunk.len().min(length - sent);
            let written = if chunked {
                writer
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| writer.write_all(&chunk[..n]))
                    .and_then(|()| writer.write_all(b"\r\n"))
                    .map(|()| n)
            } else {
                writer.write(&chunk[..n])
            };
            match written {
                Ok(0) | Err(_) => return sent,
                Ok(n) => sent += n,
            }
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n");
        }
        sent
    });
    let raw = read_until_closed(&mut stream);
    let sent = sender.join().unwrap();
    (parse(&raw), sent)
}

#[test]
fn idle_connections_and_unauthenticated_uploads_cost_no_threads_and_little_memory() {
    let broker = Embedded::start();
    broker.create_topic("in", 2);
    let dir = tempfile::tempdir().unwrap();
    // The token comes from a file beside the config (a relative `token_file`).
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let config = format!(
        r#"
        brokers = "{brokers}"
        [admin]
        listen = "127.0.0.1:{port}"
        token_file = "admin.token"
        [[pipeline]]
        name = "pass"
        inputs = ["in"]
        group = "{group}"
        component = "{component}"
        max_wait_ms = 10
        "#,
        brokers = broker.brokers(),
        group = unique("admin-limits"),
        component = guest("ferry-example-passthrough").display(),
    );
    let mut ferry = FerryProcess::start(&write_config(dir.path(), &config));
    wait_until("the host is ready", || try_get(port, "/readyz").is_some_and(|a| a.status == 200));
    let (rss_before, threads_before) = (ferry.rss(), ferry.threads());

    // 200 connections that never send a byte. The server must have accepted them
    // (not just the kernel's backlog): its own count says so, on /metrics, which
    // answers while they are open.
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(port)).collect();
    wait_until("the server holds the idle connections", || metric(port, "ferry_admin_connections") >= IDLE as f64);
    let threads_idle = ferry.threads();
    assert_eq!(get(port, "/healthz").status, 200);

    // 8 parallel 60 MiB uploads without a token, while /healthz and /metrics are asked.
    let start = Barrier::new(UPLOADS + 1);
    let (answers, healthz, metrics) = std::thread::scope(|scope| {
        let uploads: Vec<_> =
            (0..UPLOADS).map(|_| scope.spawn(|| upload(port, "", UPLOAD_BYTES, false, Some(&start)))).collect();
        start.wait();
        let healthz = get(port, "/healthz");
        let metrics = get(port, "/metrics");
        (uploads.into_iter().map(|u| u.join().unwrap()).collect::<Vec<_>>(), healthz, metrics)
    });
    assert_eq!((healthz.status, metrics.status), (200, 200), "{}\n{}", healthz.body, metrics.body);
    for (answer, sent) in &answers {
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(answer.body.contains("bearer token"), "{answer:?}");
        let head = answer.head.to_ascii_lowercase();
        assert!(head.contains("connection: close") && head.contains("www-authenticate: bearer"), "{head}");
        // What got out sits in the kernel's socket buffers at most: the server closed
        // without reading the body.
        assert!(*sent < UPLOAD_BYTES / 2, "{sent} of {UPLOAD_BYTES} body bytes were taken");
    }
    wait_until("the refusals are counted", || {
        metric(port, "ferry_admin_requests_refused_total{reason=\"unauthorized\"}") == UPLOADS as f64
    });
    let (rss_after, threads_after) = (ferry.rss(), ferry.threads());
    let sent: Vec<String> = answers.iter().map(|(_, sent)| format!("{:.1}", *sent as f64 / MIB as f64)).collect();
    eprintln!(
        "admin limits: RSS {:.1} MiB before, {:.1} MiB after; threads {threads_before} before, \
         {threads_idle} with {IDLE} idle connections, {threads_after} after the uploads; \
         body MiB sent before each refusal closed: {}",
        rss_before as f64 / MIB as f64,
        rss_after as f64 / MIB as f64,
        sent.join(", ")
    );
    assert!(
        rss_after.saturating_sub(rss_before) < MAX_RSS_GROWTH,
        "RSS grew from {} to {} MiB",
        rss_before / MIB,
        rss_after / MIB
    );
    assert!(threads_idle < MAX_THREADS && threads_after < MAX_THREADS, "{threads_idle} and {threads_after} threads");

    // With the token: a body announced over the limit is refused before it is read,
    // one that grows past it while streaming as soon as it does.
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let (answer, sent) = upload(port, &bearer, MAX_COMPONENT_BYTES + 1, false, None);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(sent < MAX_COMPONENT_BYTES / 2, "{sent} body bytes were taken");
    // Twice the limit: more than the limit plus what the kernel's socket buffers hold.
    let (answer, sent) = upload(port, &bearer, 2 * MAX_COMPONENT_BYTES, true, None);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(sent < 2 * MAX_COMPONENT_BYTES, "the whole oversized body was taken");
    assert_eq!(metric(port, "ferry_admin_requests_refused_total{reason=\"too_large\"}"), 2.0);

    // The idle connections are closed by the server (header/keep-alive timeout).
    for mut stream in idle {
        assert!(read_until_closed(&mut stream).is_empty(), "an idle connection got an answer");
    }

    // Ten times the connection limit, opened and left silent (as an attacker would,
    // to lock out the orchestrator's probes): each new connection takes the place of
    // the one idle longest, so probes and scrapes still get in, at once.
    let crowd: Vec<TcpStream> = (0..10 * MAX_CONNECTIONS).map(|_| connect(port)).collect();
    let healthz = try_get(port, "/healthz");
    assert_eq!(healthz.map(|a| a.status), Some(200), "/healthz with {} idle connections", crowd.len());
    let evicted = metric(port, "ferry_admin_connections_evicted_total");
    assert!(evicted >= (9 * MAX_CONNECTIONS) as f64, "{evicted} idle connections made room");
    assert!(metric(port, "ferry_admin_connections") <= MAX_CONNECTIONS as f64);
    let mut oldest = crowd.into_iter().next().unwrap();
    assert!(read_until_closed(&mut oldest).is_empty(), "the oldest idle connection was closed, unanswered");
    ferry.terminate();
}
