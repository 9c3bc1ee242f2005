//! The live status page in headless Chromium: a real host on the embedded broker runs
//! two pipelines (the passthrough example, and the chaos test guest that halts one
//! partition on a rejected record); the page's rendered DOM must show every partition
//! with the offsets Kafka reports, the lag bars and the running version, and its
//! screenshot must actually show the bars.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`); the test fails, never
//! skips, when it is missing.

mod observe_support;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_host::devtools::build_guest;
use ferry_host::host::Host;
use ferry_host::kafka::offsets::{self, PartitionLag};
use observe_support::{config, get, produce, status, toml_path, values, wait_for};
use rdkafka::mocking::MockCluster;
use serde_json::Value;

/// Records per partition of the passthrough pipeline's input.
const ORDERS: [usize; 3] = [30, 20, 10];
/// The chaos guest rejects `reject`: partition 0 halts at offset 2.
const CHAOS_P0: [&str; 5] = ["ok", "ok", "reject", "ok", "ok"];
const CHAOS_P1: [&str; 3] = ["ok", "ok", "ok"];
/// Written to chaos[0] after it halted: read by nobody, so they show as lag.
const LATE: [&str; 3] = ["late-0", "late-1", "late-2"];

/// The status page's bar colours (status.html): committed, read-not-committed, unread.
const DONE: [u8; 3] = [0x2f, 0x9e, 0x44];
const INFLIGHT: [u8; 3] = [0xf5, 0x9f, 0x00];
const LAG: [u8; 3] = [0xe0, 0x31, 0x31];

#[test]
fn the_status_page_shows_every_partition_as_kafka_sees_it() {
    let chromium = chromium();
    let passthrough = build_guest("ferry-example-passthrough").expect("the passthrough example builds");
    let chaos = build_guest("ferry-guest-chaos").expect("the chaos test guest builds");
    let cluster = MockCluster::new(1).expect("the embedded broker starts");
    for (topic, partitions) in [("orders", 3), ("chaos", 2), ("chaos-out", 1)] {
        cluster.create_topic(topic, partitions, 1).expect("topic created");
    }
    let brokers = cluster.bootstrap_servers();
    for (partition, n) in ORDERS.iter().enumerate() {
        let v = values(&format!("order-{partition}"), *n);
        produce(&brokers, "orders", partition as i32, &v.iter().map(String::as_str).collect::<Vec<_>>());
    }
    produce(&brokers, "chaos", 0, &CHAOS_P0);
    produce(&brokers, "chaos", 1, &CHAOS_P1);

    let host = Host::start(&config(
        &brokers,
        &format!(
            r#"
            [[pipeline]]
            name = "orders"
            inputs = ["orders"]
            group = "status-orders"
            component = "{}"
            max_wait_ms = 10
            commit = {{ policy = "interval", interval_ms = 100 }}

            [[pipeline]]
            name = "chaos"
            inputs = ["chaos"]
            group = "status-chaos"
            component = "{}"
            max_wait_ms = 10
            output_topics = ["chaos-out"]
            commit = {{ policy = "per-batch" }}
            failure = {{ on_failure = "halt", max_attempts = 1 }}
            "#,
            toml_path(&passthrough),
            toml_path(&chaos),
        ),
    ))
    .expect("the host starts");
    let addr = host.admin.as_ref().expect("the admin server runs").addr;

    wait_for("chaos[0] to halt on the rejected record", || {
        let doc = status(addr);
        partition_of(&doc, "chaos", "chaos", 0)
            .filter(|p| p["halted"].is_string())
            .map(|_| ())
            .ok_or_else(|| doc.to_string())
    });
    produce(&brokers, "chaos", 0, &LATE);

    // Wait for the picture to settle: everything committed that can be, every log end seen.
    let expected: BTreeMap<(&str, &str, i32), (i64, i64)> = BTreeMap::from([
        (("orders", "orders", 0), (30, 30)),
        (("orders", "orders", 1), (20, 20)),
        (("orders", "orders", 2), (10, 10)),
        (("chaos", "chaos", 0), (2, 8)),
        (("chaos", "chaos", 1), (3, 3)),
    ]);
    wait_for("every partition's committed offset and log end on /api/status", || {
        let doc = status(addr);
        for (&(pipeline, topic, partition), &(committed, log_end)) in &expected {
            let p = partition_of(&doc, pipeline, topic, partition).ok_or_else(|| doc.to_string())?;
            if p["committed"].as_i64() != Some(committed) || p["log_end"].as_i64() != Some(log_end) {
                return Err(doc.to_string());
            }
        }
        Ok(())
    });

    // What Kafka itself reports is what the page must show.
    let mut kafka: Vec<(&str, PartitionLag)> = Vec::new();
    for (pipeline, group, topic) in [("orders", "status-orders", "orders"), ("chaos", "status-chaos", "chaos")] {
        let rows = offsets::show(&brokers, &BTreeMap::new(), group, &[topic.to_owned()]).expect("offsets show");
        for row in rows {
            let (committed, log_end) = expected[&(pipeline, topic, row.partition)];
            assert_eq!(
                (row.committed, row.log_end),
                (Some(committed), log_end),
                "Kafka's view of {topic}[{}]",
                row.partition
            );
            kafka.push((pipeline, row));
        }
    }
    assert_eq!(kafka.len(), expected.len());

    let profile = tempfile::tempdir().expect("a Chromium profile dir");
    let url = format!("http://{addr}/");
    let dom = run_chromium(&chromium, profile.path(), &["--dump-dom".to_owned()], &url);
    check_dom(&dom, &kafka, &host, addr);

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &chromium,
        profile.path(),
        &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".to_owned()],
        &url,
    );
    check_screenshot(&shot);
    println!("status page screenshot: {}", shot.display());

    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
}

fn partition_of<'a>(doc: &'a Value, pipeline: &str, topic: &str, partition: i32) -> Option<&'a Value> {
    doc["pipelines"].as_array()?.iter().find(|p| p["name"] == pipeline)?["partitions"]
        .as_array()?
        .iter()
        .find(|r| r["topic"] == topic && r["partition"] == partition)
}

fn check_dom(dom: &str, kafka: &[(&str, PartitionLag)], host: &Host, addr: SocketAddr) {
    let context = || format!("status page at {addr}, rendered DOM:\n{dom}");
    let main = elements(dom, "main", "").into_iter().next().unwrap_or_else(|| panic!("no <main>; {}", context()));
    let renders: u32 = main.attrs.get("data-renders").and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!(
        renders >= 2,
        "the page should refresh itself every second; it rendered {renders} time(s) in 3 s; {}",
        context()
    );

    for pipeline in &host.pipelines {
        let name = pipeline.config.name.as_str();
        let section = elements(dom, "section", "pipeline")
            .into_iter()
            .find(|s| s.attrs.get("data-pipeline").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no section for pipeline {name}; {}", context()));
        let digest = pipeline.slot.current().digest().to_owned();
        let version = elements(&section.inner, "code", "running")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no running version of {name}; {}", context()));
        assert_eq!(version.attrs.get("data-digest"), Some(&digest), "{}", context());
        assert_eq!(version.inner, digest[..12], "the short digest is shown; {}", context());
        assert!(section.inner.contains(">ready<"), "pipeline {name} shows as ready; {}", context());
    }

    let rows = elements(dom, "tr", "partition");
    assert_eq!(rows.len(), kafka.len(), "one row per partition; {}", context());
    for (pipeline, lag) in kafka {
        let row = rows
            .iter()
            .find(|r| {
                r.attr("data-pipeline") == *pipeline
                    && r.attr("data-topic") == lag.topic
                    && r.attr("data-partition") == lag.partition.to_string()
            })
            .unwrap_or_else(|| panic!("no row for {pipeline} {}[{}]; {}", lag.topic, lag.partition, context()));
        let committed = lag.committed.expect("a committed offset").to_string();
        let what = format!("{pipeline} {}[{}]", lag.topic, lag.partition);
        assert_eq!(row.attr("data-committed"), committed, "{what} committed; {}", context());
        assert_eq!(row.attr("data-log-end"), lag.log_end.to_string(), "{what} log end; {}", context());
        assert_eq!(row.attr("data-lag"), lag.lag().to_string(), "{what} lag; {}", context());
        assert!(
            row.inner.contains(&format!("<td class=\"committed\">{committed}</td>")),
            "{what} committed cell; {}",
            context()
        );
        let bars = elements(&row.inner, "div", "bar");
        assert_eq!(bars.len(), 1, "{what} has one bar; {}", context());
        let bar = &row.inner;
        let marks = elements(bar, "div", "mark");
        let committed_mark = marks.iter().find(|m| m.has_class("committed"));
        assert_eq!(
            committed_mark.map(|m| m.attr("data-offset")),
            Some(committed.clone()),
            "{what} committed mark; {}",
            context()
        );
        assert!(marks.iter().any(|m| m.has_class("position")), "{what} position mark; {}", context());
        let segments = elements(bar, "div", "seg");
        let span = |kind: &str| {
            segments
                .iter()
                .find(|s| s.has_class(kind))
                .map(|s| (s.attr("data-from").parse::<i64>().unwrap(), s.attr("data-to").parse::<i64>().unwrap()))
        };
        let committed: i64 = committed.parse().unwrap();
        assert_eq!(span("done"), Some((0, committed)), "{what} committed segment; {}", context());
        if lag.lag() > 0 {
            let unread = span("lag").unwrap_or_else(|| panic!("{what} has lag but no lag segment; {}", context()));
            assert_eq!(unread.1, lag.log_end, "{what} lag segment ends at the log end; {}", context());
        } else {
            assert_eq!((span("lag"), span("inflight")), (None, None), "{what} has no lag; {}", context());
        }
    }

    let halts: Vec<_> =
        elements(dom, "li", "failure").into_iter().filter(|li| li.attr("data-kind") == "halt").collect();
    assert!(
        halts.iter().any(|li| li.inner.contains("chaos[0]") && li.inner.contains("asked to reject")),
        "the halt of chaos[0] is listed among recent failures; {}",
        context()
    );
}

fn check_screenshot(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    let image = decode_png(&bytes);
    assert_eq!((image.width, image.height), (1280, 900), "screenshot size");
    let mut counts: BTreeMap<[u8; 3], usize> = BTreeMap::new();
    for px in image.pixels.chunks_exact(image.channels) {
        *counts.entry([px[0], px[1], px[2]]).or_default() += 1;
    }
    assert!(counts.len() > 16, "the screenshot is blank: only {} colour(s)", counts.len());
    // Each legend swatch is 12×12 = 144 px; bars are far larger.
    for (name, colour) in [("committed", DONE), ("read, not committed", INFLIGHT), ("not read (lag)", LAG)] {
        let n = counts.get(&colour).copied().unwrap_or(0);
        assert!(n > 1000, "the screenshot {} shows only {n} px of the {name} bar colour {colour:02x?}", path.display());
    }
}

/// A decoded screenshot.
struct Image {
    width: u32,
    height: u32,
    /// 3 (RGB) or 4 (RGBA).
    channels: usize,
    pixels: Vec<u8>,
}

/// Decodes what Chromium writes: an 8-bit RGB or RGBA PNG, not interlaced. (A PNG
/// is zlib data in chunks, each scanline behind a filter byte; a PNG crate would
/// change the features of crates wasmtime shares, and build them twice.)
fn decode_png(bytes: &[u8]) -> Image {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG signature");
    let (mut at, mut header, mut data) = (8, None, Vec::new());
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..at + 8 + len];
        match &bytes[at + 4..at + 8] {
            b"IHDR" => header = Some(body),
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len; // length, type, data, CRC
    }
    let header = header.expect("an IHDR chunk");
    let be = |range: std::ops::Range<usize>| u32::from_be_bytes(header[range].try_into().unwrap());
    let (width, height) = (be(0..4), be(4..8));
    assert_eq!((header[8], header[12]), (8, 0), "8 bits per channel, not interlaced");
    let channels = match header[9] {
        2 => 3,
        6 => 4,
        other => panic!("unexpected screenshot colour type {other}"),
    };
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&data).expect("PNG image data");
    let stride = width as usize * channels;
    assert_eq!(raw.len(), (stride + 1) * height as usize, "PNG image data size");
    let mut pixels = vec![0u8; stride * height as usize];
    for y in 0..height as usize {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for x in 0..stride {
            let left = if x >= channels { pixels[y * stride + x - channels] } else { 0 };
            let up = if y > 0 { pixels[(y - 1) * stride + x] } else { 0 };
            let up_left = if x >= channels && y > 0 { pixels[(y - 1) * stride + x - channels] } else { 0 };
            let predicted = match filter {
                0 => 0,
                1 => left,
                2 => up,
                3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
                4 => paeth(left, up, up_left),
                other => panic!("unknown PNG filter {other}"),
            };
            pixels[y * stride + x] = line[x].wrapping_add(predicted);
        }
    }
    Image { width, height, channels, pixels }
}

/// The PNG Paeth predictor: whichever neighbour is closest to left + up − up-left.
fn paeth(left: u8, up: u8, up_left: u8) -> u8 {
    let p = i16::from(left) + i16::from(up) - i16::from(up_left);
    let (dl, du, dul) = ((p - i16::from(left)).abs(), (p - i16::from(up)).abs(), (p - i16::from(up_left)).abs());
    if dl <= du && dl <= dul {
        left
    } else if du <= dul {
        up
    } else {
        up_left
    }
}

/// Chromium from Debian's packages.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "headless Chromium is required by this test and /usr/bin/chromium is missing: install it with `apt-get install -y chromium`"
    );
    path
}

/// Runs headless Chromium on `url` and returns what it printed.
fn run_chromium(binary: &Path, profile: &Path, extra: &[String], url: &str) -> String {
    let out = profile.join("stdout.txt");
    let err = profile.join("stderr.txt");
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.join("profile").display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {}: {e}", binary.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!(
                "Chromium did not finish within 90 s; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "Chromium failed ({status}); stderr:\n{stderr}");
    std::fs::read_to_string(&out).unwrap()
}

/// An element found in serialized HTML.
#[derive(Debug)]
struct Element {
    attrs: BTreeMap<String, String>,
    /// Everything up to the first closing tag of the same name.
    inner: String,
}

impl Element {
    fn attr(&self, name: &str) -> String {
        self.attrs.get(name).cloned().unwrap_or_default()
    }

    fn has_class(&self, class: &str) -> bool {
        self.attr("class").split_whitespace().any(|c| c == class)
    }
}

/// Every `<tag>` whose class list has `class` (any, if empty). Enough for the DOM
/// Chromium serializes: quoted attributes, no nesting of the tags looked for.
fn elements(html: &str, tag: &str, class: &str) -> Vec<Element> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        rest = &rest[at + open.len()..];
        if !rest.starts_with([' ', '>']) {
            continue;
        }
        let (attrs, after) = attributes(rest);
        let inner = after.find(&close).map_or(after, |end| &after[..end]);
        let element = Element { attrs, inner: inner.to_owned() };
        if class.is_empty() || element.has_class(class) {
            found.push(element);
        }
        rest = after;
    }
    found
}

/// Parses `name="value"` pairs up to the end of a start tag; returns them and the rest.
fn attributes(mut text: &str) -> (BTreeMap<String, String>, &str) {
    let mut attrs = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('>') {
            return (attrs, rest);
        }
        let name_end = text.find(['=', ' ', '>']).unwrap_or(text.len());
        let name = text[..name_end].to_owned();
        text = &text[name_end..];
        let value = match text.strip_prefix("=\"") {
            Some(rest) => {
                let end = rest.find('"').expect("a closing quote");
                text = &rest[end + 1..];
                decode(&rest[..end])
            }
            None => String::new(),
        };
        attrs.insert(name, value);
    }
}

fn decode(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[test]
fn the_dom_reader_finds_elements_and_attributes() {
    let html = r#"<tr class="partition x" data-a="1 &amp; &quot;2&quot;"><td class="committed">30</td></tr><tr class="other"></tr>"#;
    let rows = elements(html, "tr", "partition");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attr("data-a"), "1 & \"2\"");
    assert_eq!(rows[0].inner, "<td class=\"committed\">30</td>");
    assert_eq!(elements(html, "td", "committed")[0].inner, "30");
}

#[test]
fn the_admin_server_serves_the_page_itself() {
    // No browser needed: the page is one self-contained document.
    let cluster = MockCluster::new(1).expect("the embedded broker starts");
    cluster.create_topic("t", 1, 1).expect("topic created");
    let passthrough = build_guest("ferry-example-passthrough").expect("the passthrough example builds");
    let host = Host::start(&config(
        &cluster.bootstrap_servers(),
        &format!(
            "[[pipeline]]\nname = \"p\"\ninputs = [\"t\"]\ngroup = \"g\"\ncomponent = \"{}\"",
            toml_path(&passthrough)
        ),
    ))
    .expect("the host starts");
    let addr = host.admin.as_ref().expect("the admin server runs").addr;
    let page = get(addr, "/");
    assert_eq!((page.status, page.content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.body.contains("<main id=\"pipelines\"") && !page.body.contains("src=\"http"), "{}", page.body);
    let doc = status(addr);
    assert_eq!(doc["pipelines"][0]["name"], "p");
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
}
