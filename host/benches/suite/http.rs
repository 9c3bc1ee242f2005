//! Section: guest HTTP. Against one loopback server, in one run:
//!
//! - per request: a guest's `ferry_sdk::http::get` (the `enrich` test guest, one GET
//!   per record, through `ProcessorInstance::process`) against a native hyper client
//!   and a std `TcpStream` client, each opening a connection per request as the host
//!   does;
//! - a server that answers after a fixed delay: the same guest, one request after
//!   the other, against `examples/enrich`, whose `process_batch` sends the batch's
//!   lookups at once (`send_all`), bounded by `concurrent_requests`;
//! - the memory term of operators.md: the host's resident memory while a batch's
//!   requests are all in flight at once, per request (the server in a process of
//!   its own).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_host::sandbox::capability::http::{AllowRule, HttpGrant, HttpLimits};
use ferry_host::sandbox::{
    Grants, Limits, ProcessorComponent, ProcessorInstance, Provisions, Sandbox, SandboxSettings,
};
use ferry_sdk::wire::BatchEncoder;
use http_body_util::BodyExt as _;

use crate::boundary::{empty_batch, far};
use crate::common::{median, proc_status};

/// Requests per sample of the per-request measure.
const REQUESTS: usize = 200;
const SAMPLES: usize = 7;
/// The slow server's delay, and the records of a batch against it.
const DELAY: Duration = Duration::from_millis(20);
const SLOW_BATCH: usize = 64;
/// Requests in flight at once for the memory measure, and how long each waits.
const IN_FLIGHT: usize = 500;
const HOLD: Duration = Duration::from_millis(1500);

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Figures {
    /// µs per request: guest, native hyper, native std.
    pub guest_us: f64,
    pub hyper_us: f64,
    pub std_us: f64,
    /// Records per second against the slow server: one request after the other, and
    /// the batch's at once with each `concurrent_requests`.
    pub sequential_rps: f64,
    pub concurrent_rps: Vec<(u32, f64)>,
    /// Resident KiB the host grew by with [`IN_FLIGHT`] requests in flight, per request.
    pub kib_per_in_flight: f64,
    /// The most requests the meter saw in flight at once.
    pub peak_in_flight: u64,
}

/// The holding server in a process of its own (this binary, `child-http-server
/// DELAY_MS`), so its threads stay out of the host's resident memory: prints its
/// port, then serves until killed.
pub fn child_server(delay_ms: u64) -> anyhow::Result<()> {
    println!("{}", server(Duration::from_millis(delay_ms))?);
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}

/// Starts [`child_server`]; kill the child when done.
fn server_process(delay: Duration) -> anyhow::Result<(std::process::Child, u16)> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["child-http-server", &delay.as_millis().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line)?;
    Ok((child, line.trim().parse()?))
}

/// A server on 127.0.0.1 that answers every request with a small JSON body after `delay`.
fn server(delay: Duration) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = answer(stream, delay);
            });
        }
    });
    Ok(port)
}

fn answer(mut stream: TcpStream, delay: Duration) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let body = r#"{"id":"c","tier":"gold"}"#;
    stream.write_all(
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

fn grant(port: u16, concurrent: u32) -> anyhow::Result<HttpGrant> {
    let rule: AllowRule = format!("http://127.0.0.1:{port}").parse().map_err(anyhow::Error::msg)?;
    let limits = HttpLimits {
        requests_per_batch: 10_000,
        bytes_per_batch: 64 << 20,
        concurrent_requests: concurrent,
        request_timeout_ms: 5_000,
    };
    Ok(HttpGrant { allow: vec![rule], limits, ca_file: None })
}

fn instance(
    component: &Path,
    http: HttpGrant,
    settings: &[(&str, String)],
) -> anyhow::Result<(ProcessorInstance, Arc<ferry_host::sandbox::capability::http::HttpMeter>)> {
    let sandbox = Sandbox::new(SandboxSettings::default())?;
    let grants =
        Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: Some(Arc::new(http)) };
    let loaded = ProcessorComponent::load(&sandbox, &std::fs::read(component)?, &grants)?;
    let mut provisions = Provisions::simple("bench", grants);
    provisions.settings =
        Arc::new(settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>());
    let meter = provisions.http_meter.clone();
    let limits = Limits { time_per_batch_ms: 60_000, ..Limits::default() };
    Ok((ProcessorInstance::new(sandbox, Arc::new(loaded), "bench", provisions, limits), meter))
}

fn batch_of(values: &[String]) -> (ferry_host::sandbox::Batch, Vec<i64>) {
    let mut batch = empty_batch();
    let mut encoder = BatchEncoder::new();
    let offsets: Vec<i64> = (0..values.len() as i64).collect();
    for (offset, value) in offsets.iter().zip(values) {
        encoder.push(*offset, None, None, Some(value.as_bytes()), []);
    }
    batch.count = encoder.count();
    batch.records = encoder.into_bytes();
    (batch, offsets)
}

/// Runs a batch and checks that every record was processed; returns its seconds.
fn timed(instance: &mut ProcessorInstance, batch: &ferry_host::sandbox::Batch, offsets: &[i64]) -> f64 {
    let started = Instant::now();
    let (reply, outputs) = instance.process(batch, offsets, far()).expect("the guest never faults");
    let elapsed = started.elapsed().as_secs_f64();
    assert!(reply.all_processed() && outputs.len() == offsets.len(), "every request answered");
    elapsed
}

/// One native GET with hyper, on a new connection.
async fn hyper_get(port: u16) -> anyhow::Result<usize> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get("/x")
        .header("host", format!("127.0.0.1:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == 200);
    let body = response.into_body().collect().await?.to_bytes();
    let _ = driver.await;
    Ok(body.len())
}

/// One native GET with a std `TcpStream`, on a new connection.
fn std_get(port: u16) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    write!(stream, "GET /x HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    anyhow::ensure!(answer.starts_with(b"HTTP/1.1 200"));
    Ok(answer.len())
}

/// Measures one run.
pub fn run(fetcher: &Path, enrich: &Path) -> anyhow::Result<Figures> {
    // Per request, against a server that answers at once.
    let port = server(Duration::ZERO)?;
    let (mut guest, _) = instance(fetcher, grant(port, 16)?, &[])?;
    let urls: Vec<String> = (0..REQUESTS).map(|i| format!("http://127.0.0.1:{port}/x/{i}")).collect();
    let (batch, offsets) = batch_of(&urls);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut g, mut h, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for sample in 0..SAMPLES + 1 {
        let guest_s = timed(&mut guest, &batch, &offsets);
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..REQUESTS {
                hyper_get(port).await.expect("hyper GET");
            }
        });
        let hyper_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..REQUESTS {
            std_get(port)?;
        }
        let std_s = started.elapsed().as_secs_f64();
        if sample > 0 {
            g.push(guest_s * 1e6 / REQUESTS as f64);
            h.push(hyper_s * 1e6 / REQUESTS as f64);
            s.push(std_s * 1e6 / REQUESTS as f64);
        }
    }

    // Against a server that answers after DELAY: one after the other, and at once.
    let slow = server(DELAY)?;
    let (mut sequential, _) = instance(fetcher, grant(slow, 16)?, &[])?;
    let urls: Vec<String> = (0..SLOW_BATCH).map(|i| format!("http://127.0.0.1:{slow}/x/{i}")).collect();
    let (batch, offsets) = batch_of(&urls);
    let mut seq = Vec::new();
    for _ in 0..3 {
        seq.push(SLOW_BATCH as f64 / timed(&mut sequential, &batch, &offsets));
    }
    let orders: Vec<String> =
        (0..SLOW_BATCH).map(|i| format!(r#"{{"id":"o-{i}","customer":"c-{i}","amount_cents":100}}"#)).collect();
    let (order_batch, order_offsets) = batch_of(&orders);
    let customers_url = format!("http://127.0.0.1:{slow}");
    let mut concurrent_rps = Vec::new();
    for concurrent in [4, 16, 64] {
        let settings = [("customers_url", customers_url.clone()), ("output_topic", "out".to_owned())];
        let (mut at_once, _) = instance(enrich, grant(slow, concurrent)?, &settings)?;
        let mut rps = Vec::new();
        for _ in 0..5 {
            rps.push(SLOW_BATCH as f64 / timed(&mut at_once, &order_batch, &order_offsets));
        }
        concurrent_rps.push((concurrent, median(&mut rps)));
    }

    // Memory: IN_FLIGHT requests held by the server at once.
    let (mut holder, holding) = server_process(HOLD)?;
    let settings = [("customers_url", format!("http://127.0.0.1:{holding}")), ("output_topic", "out".to_owned())];
    let (mut wide, meter) = instance(enrich, grant(holding, IN_FLIGHT as u32)?, &settings)?;
    let orders: Vec<String> =
        (0..IN_FLIGHT).map(|i| format!(r#"{{"id":"o-{i}","customer":"c-{i}","amount_cents":100}}"#)).collect();
    let (wide_batch, wide_offsets) = batch_of(&orders);
    // A first batch so the instance, its memory and the runtime's threads exist.
    let (warm_batch, warm_offsets) = batch_of(&orders[..1]);
    timed(&mut wide, &warm_batch, &warm_offsets);
    let before = proc_status("VmRSS");
    let (done, peak_rss, peak_in_flight) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, peak_rss, peak_in_flight, meter) =
            (done.clone(), peak_rss.clone(), peak_in_flight.clone(), meter.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak_rss.fetch_max(proc_status("VmRSS"), Ordering::Relaxed);
                peak_in_flight.fetch_max(meter.in_flight(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    timed(&mut wide, &wide_batch, &wide_offsets);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let grown = peak_rss.load(Ordering::Relaxed).saturating_sub(before);
    let peak_in_flight = peak_in_flight.load(Ordering::Relaxed);
    let _ = holder.kill();
    let _ = holder.wait();

    Ok(Figures {
        guest_us: median(&mut g),
        hyper_us: median(&mut h),
        std_us: median(&mut s),
        sequential_rps: median(&mut seq),
        concurrent_rps,
        kib_per_in_flight: grown as f64 / IN_FLIGHT as f64,
        peak_in_flight,
    })
}

/// The markdown tables of a run.
pub fn table(f: &Figures) -> String {
    let mut out = format!(
        "Per request, loopback server answering at once, a new connection each ({REQUESTS} requests, median of {SAMPLES}):\n\n\
         | client | µs per request | over std |\n|---|---:|---:|\n\
         | guest `ferry_sdk::http::get` (one per record, through the sandbox) | {:.1} | {:+.1} |\n\
         | native hyper 1 (`client::conn::http1`) | {:.1} | {:+.1} |\n\
         | native std `TcpStream` | {:.1} | 0 |\n\n",
        f.guest_us,
        f.guest_us - f.std_us,
        f.hyper_us,
        f.hyper_us - f.std_us,
        f.std_us
    );
    out += &format!(
        "Enrichment against a server that answers after {} ms ({SLOW_BATCH} records in one batch):\n\n\
         | requests | records/s | batch time (ms) |\n|---|---:|---:|\n\
         | one after the other (`http::get` per record) | {:.0} | {:.0} |\n",
        DELAY.as_millis(),
        f.sequential_rps,
        SLOW_BATCH as f64 * 1000.0 / f.sequential_rps
    );
    for (concurrent, rps) in &f.concurrent_rps {
        out += &format!(
            "| the batch's at once (`send_all`), `concurrent_requests = {concurrent}` | {rps:.0} | {:.0} |\n",
            SLOW_BATCH as f64 * 1000.0 / rps
        );
    }
    out += &format!(
        "\nMemory: {IN_FLIGHT} requests in flight at once (a server in another process holds each {} ms; the meter saw {} at once): \
         the host's resident memory grew by {:.1} KiB per request in flight (operators.md charges 48 KiB).\n",
        HOLD.as_millis(),
        f.peak_in_flight,
        f.kib_per_in_flight
    );
    out
}
