//! Governed HTTP egress end to end: a processor built from source (the `enrich`
//! guest) fetches URLs named by its records through a real host on a real broker,
//! from real HTTP servers on loopback. Granted requests enrich their records; every
//! hostile one (a host not on the list, a name resolving to a refused address, a
//! redirect to a refused host, the metadata address, a server that trickles past
//! the time limit, an endless body, thousands of requests at once) ends as an
//! error the guest sees, every partition keeps committing, and a canary server that
//! is not granted is never connected to.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_host::config::Config;
use ferry_host::host::Host;
use ferry_tests::*;

/// What a test server does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// `GET /rate/<x>` answers `rate-<x>`; `/redirect` answers 302 to `location`.
    Rates,
    /// Sends its head, then one body byte every 50 ms, forever.
    Trickle,
    /// Sends a body with no end, as fast as it is read.
    Endless,
    /// Counts connections and answers `canary`.
    Canary,
    /// Closes its first two connections without a word, then answers `at last`.
    Flaky,
}

/// A server on 127.0.0.1 that counts the connections it accepted.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn start(behaviour: Behaviour, redirect_to: u16) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if counted.fetch_add(1, Ordering::SeqCst) < 2 && matches!(behaviour, Behaviour::Flaky) {
                    continue;
                }
                std::thread::spawn(move || {
                    let _ = serve(stream, behaviour, redirect_to);
                });
            }
        });
        Server { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, redirect_to: u16) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let answer = |status: &str, extra: &str, body: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}", body.len())
    };
    match behaviour {
        Behaviour::Rates if path == "/redirect" => stream.write_all(
            answer("302 Found", &format!("location: http://127.0.0.1:{redirect_to}/\r\n"), "moved").as_bytes(),
        ),
        Behaviour::Rates => {
            let rate = path.strip_prefix("/rate/").unwrap_or("none");
            stream.write_all(answer("200 OK", "", &format!("rate-{rate}")).as_bytes())
        }
        Behaviour::Canary => stream.write_all(answer("200 OK", "", "canary").as_bytes()),
        Behaviour::Flaky => stream.write_all(answer("200 OK", "", "at last").as_bytes()),
        Behaviour::Trickle => {
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")?;
            loop {
                stream.write_all(b"x")?;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Behaviour::Endless => {
            stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
            let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "y".repeat(64 << 10));
            loop {
                stream.write_all(chunk.as_bytes())?;
            }
        }
    }
}

fn pipeline(brokers: &str, name: &str, input: &str, allow: &[String], http: &str) -> Config {
    pipeline_with(brokers, "", name, input, allow, http)
}

/// `top` goes before the pipeline (an `[admin]` table, say).
fn pipeline_with(brokers: &str, top: &str, name: &str, input: &str, allow: &[String], http: &str) -> Config {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        {top}
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{name}"
        component = "{component}"
        batch_size = 1
        max_wait_ms = 10
        output_topics = ["out"]
        commit = {{ policy = "per-batch" }}
        limits = {{ time_per_batch_ms = 3000 }}
        [pipeline.http]
        allow = [{allow}]
        {http}
        "#,
        component = guest("ferry-guest-enrich").display(),
        allow = allow.join(", ")
    ))
    .unwrap()
}

fn stop(host: Host) {
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();
}

/// The guest's answer per URL, read back from `out`.
fn answers(brokers: &str) -> BTreeMap<String, String> {
    read_all(brokers, "out").into_iter().map(|read| (read.key, read.value)).collect()
}

#[test]
fn granted_requests_enrich_records_and_every_hostile_one_is_contained() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    let (name, input) = (unique("enrich"), unique("urls"));
    broker.create_topic(&input, 2);
    broker.create_topic("out", 1);
    let canary = Server::start(Behaviour::Canary, 0);
    let rates = Server::start(Behaviour::Rates, canary.port);
    let trickle = Server::start(Behaviour::Trickle, 0);
    let endless = Server::start(Behaviour::Endless, 0);
    let granted = |server: &Server| format!("http://127.0.0.1:{}", server.port);
    let allow = vec![
        granted(&rates),
        granted(&trickle),
        granted(&endless),
        // A name, not an address: it resolves to loopback, which only a literal grant reaches.
        format!("http://localhost:{}", rates.port),
    ];
    let config = pipeline(&brokers, &name, &input, &allow, "request_timeout_ms = 1000\nbytes_per_batch = 1048576");

    let happy: Vec<String> = (0..20).map(|i| format!("http://127.0.0.1:{}/rate/{i}", rates.port)).collect();
    let mut expected: BTreeMap<String, String> = (0..20).map(|i| (happy[i].clone(), format!("200 rate-{i}"))).collect();
    let hostile = [
        (format!("http://127.0.0.1:{}/", canary.port), "error Refused"),
        (format!("http://localhost:{}/rate/x", rates.port), "error Refused"),
        (format!("http://localhost:{}/", canary.port), "error Refused"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), "error Refused"),
        ("http://[fd00:ec2::254]/".to_owned(), "error Refused"),
        (format!("http://127.0.0.1:{}/redirect", rates.port), "302 moved"),
        (format!("http://127.0.0.1:{}/", trickle.port), "error Timeout"),
        (format!("http://127.0.0.1:{}/", endless.port), "error Budget"),
        (format!("https://127.0.0.1:{}/", rates.port), "error Refused"),
    ];
    // Round-robin over two partitions: the hostile URLs go to partition 0 (the even
    // places), the granted ones to partition 1.
    let mut values = Vec::new();
    for (i, url) in happy.iter().enumerate() {
        values.push(hostile.get(i).map_or_else(|| happy[19 - i].clone(), |(url, _)| url.clone()));
        values.push(url.clone());
    }
    for (url, answer) in &hostile {
        expected.insert(url.clone(), (*answer).to_owned());
    }

    let host = Host::start(&config).unwrap();
    produce(&brokers, &input, 2, &values);
    wait_until_or_explain(
        "every record answered and every partition committed",
        || answers(&brokers).len() == expected.len() && lag(&brokers, &name, &input).iter().all(|p| p.lag() == 0),
        || format!("{:#?}", answers(&brokers)),
    );
    stop(host);
    let got = answers(&brokers);
    assert_eq!(got.keys().collect::<BTreeSet<_>>(), expected.keys().collect::<BTreeSet<_>>(), "the URLs answered");
    assert_eq!(got, expected, "each URL's answer");
    assert_eq!(canary.connections(), 0, "the canary, never granted, was never connected to");
    assert!(trickle.connections() >= 1 && endless.connections() >= 1, "the hostile servers were reached");
}

/// A request that gets no answer is an error the guest turns into a retry with
/// `.transient()`: the record is tried again with the pipeline's backoff until the
/// server answers, and its output is published once.
#[test]
fn a_transient_failure_retries_the_record_until_the_server_answers() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    let (name, input) = (unique("retry"), unique("urls"));
    broker.create_topic(&input, 1);
    broker.create_topic("out", 1);
    let flaky = Server::start(Behaviour::Flaky, 0);
    let allow = vec![format!("http://127.0.0.1:{}", flaky.port)];
    let config = pipeline(&brokers, &name, &input, &allow, "");
    let value = format!("retry http://127.0.0.1:{}/", flaky.port);
    let host = Host::start(&config).unwrap();
    produce(&brokers, &input, 1, std::slice::from_ref(&value));
    wait_until("the record answered and committed", || {
        !answers(&brokers).is_empty() && lag(&brokers, &name, &input).iter().all(|p| p.lag() == 0)
    });
    stop(host);
    let outputs: Vec<(String, String)> = read_all(&brokers, "out").into_iter().map(|r| (r.key, r.value)).collect();
    assert_eq!(outputs, [(value, "200 at last".to_owned())], "one output, from the attempt that got an answer");
    assert_eq!(flaky.connections(), 3, "two attempts without an answer, then the one with it");
}

/// A processor that imports wasi:http does not start in a pipeline without the
/// section: the refusal names it.
#[test]
fn a_pipeline_without_a_grant_refuses_the_processor_and_names_the_section() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    let (name, input) = (unique("ungranted"), unique("urls"));
    broker.create_topic(&input, 1);
    let text = format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "{name}"
        inputs = ["{input}"]
        group = "{name}"
        component = "{}"
        output_topics = ["out"]
        "#,
        guest("ferry-guest-enrich").display()
    );
    let error = match Host::start(&Config::parse(&text).unwrap()) {
        Ok(host) => {
            stop(host);
            panic!("a processor importing wasi:http started without [pipeline.http]");
        }
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("wasi:http/outgoing-handler") && error.contains("[pipeline.http]"), "{error}");
}

#[test]
fn thousands_of_requests_at_once_are_held_to_the_budget() {
    let broker = Embedded::start();
    let brokers = broker.brokers();
    let (name, input) = (unique("burst"), unique("bursts"));
    broker.create_topic(&input, 1);
    broker.create_topic("out", 1);
    let canary = Server::start(Behaviour::Canary, 0);
    let rates = Server::start(Behaviour::Rates, 0);
    let allow = vec![format!("http://127.0.0.1:{}", rates.port)];
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"";
    let config =
        pipeline_with(&brokers, admin, &name, &input, &allow, "requests_per_batch = 200\nconcurrent_requests = 8");
    let burst = format!("burst 3000 http://127.0.0.1:{}/rate", rates.port);
    let refused = format!("burst 3000 http://127.0.0.1:{}/rate", canary.port);
    let host = Host::start(&config).unwrap();
    produce(&brokers, &input, 1, &[burst.clone(), refused.clone()]);
    wait_until("both bursts answered and committed", || {
        answers(&brokers).len() == 2 && lag(&brokers, &name, &input).iter().all(|p| p.lag() == 0)
    });
    let metrics =
        ferry_tests::hostile::get(host.admin.as_ref().expect("the admin server runs").addr.port(), "/metrics");
    stop(host);
    let granted = format!("http://127.0.0.1:{}", rates.port);
    for line in [
        format!("ferry_http_requests_total{{pipeline=\"{name}\",host=\"{granted}\",class=\"2xx\"}} 200"),
        format!("ferry_http_requests_total{{pipeline=\"{name}\",host=\"{granted}\",class=\"error\"}} 2800"),
        format!("ferry_http_requests_total{{pipeline=\"{name}\",host=\"-\",class=\"error\"}} 3000"),
        format!("ferry_http_errors_total{{pipeline=\"{name}\",kind=\"budget\"}} 2800"),
        format!("ferry_http_errors_total{{pipeline=\"{name}\",kind=\"refused\"}} 3000"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let got = answers(&brokers);
    assert_eq!(got[&burst], "200=200 budget=2800", "200 requests answered, the rest refused as over budget");
    assert_eq!(got[&refused], "Refused=3000");
    assert_eq!(rates.connections(), 200, "one connection per request within the budget, none beyond");
    assert_eq!(canary.connections(), 0);
}
