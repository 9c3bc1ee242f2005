//! Helpers shared by the hot-swap suites: a host running a versioned guest on the
//! embedded broker, with its admin API, and reading its figures.

#![allow(dead_code)] // each suite uses its own subset

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_host::config::Config;
use ferry_host::deploy::client::{self, Answer, Request};
use ferry_host::host::Host;
use ferry_host::kafka::output::send_when_room;
use ferry_host::sandbox::digest_of;
use ferry_tests::guest;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// The admin token of every test host.
pub const TOKEN: &str = "swap-test-token";

/// The pipeline name of every test host.
pub const PIPELINE: &str = "swap";

/// A guest built from source, and its digest.
pub struct Build {
    pub path: PathBuf,
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// Builds `package` (once per test process) and reads it.
pub fn build(package: &str) -> Build {
    let path = guest(package);
    let bytes = std::fs::read(&path).expect("guest readable");
    Build { digest: digest_of(&bytes), path, bytes }
}

/// What varies between the test hosts.
pub struct HostSpec<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    pub component: &'a Path,
    pub cache_dir: &'a Path,
    /// Serve the admin API (on a free port) with [`TOKEN`], read from a token file
    /// in `cache_dir`.
    pub admin: bool,
    /// More pipeline settings, TOML lines.
    pub extra: &'a str,
}

/// The config of a host running [`PIPELINE`] over `input`, writing to `ledger`
/// (and, with the admin API, its token file).
pub fn config(spec: &HostSpec<'_>) -> Config {
    let admin = if spec.admin {
        let token_file = spec.cache_dir.join("admin.token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file written");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("token file private");
        format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n", token_file.display())
    } else {
        String::new()
    };
    let text = format!(
        r#"
        brokers = "{brokers}"
        [sandbox]
        max_instances = 16
        cache_dir = "{cache}"
        {admin}
        [[pipeline]]
        name = "{PIPELINE}"
        inputs = ["input"]
        group = "{group}"
        component = "{component}"
        batch_size = 100
        max_wait_ms = 10
        commit = {{ policy = "interval", interval_ms = 100 }}
        output_topics = ["ledger"]
        kafka = {{ "session.timeout.ms" = "6000" }}
        {extra}
        "#,
        brokers = spec.brokers,
        cache = spec.cache_dir.display(),
        group = spec.group,
        component = spec.component.display(),
        extra = spec.extra,
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config is valid: {e:#}\n{text}"))
}

/// Starts a host.
pub fn start(spec: &HostSpec<'_>) -> Host {
    Host::start(&config(spec)).expect("host starts")
}

/// The base URL of a host's admin API.
pub fn admin_url(host: &Host) -> String {
    format!("http://{}", host.admin.as_ref().expect("admin server").addr)
}

/// Sends one admin request with the right token.
pub fn admin(host: &Host, request: Request<'_>) -> Answer {
    client::call(&admin_url(host), PIPELINE, TOKEN, request).expect("admin server answers")
}

/// The answer's JSON body.
pub fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("JSON answer ({e}): {}", answer.body))
}

/// Records the host's pipeline processed so far.
pub fn processed(host: &Host) -> u64 {
    host.pipelines[0].shared.stats.snapshot().partitions.values().map(|p| p.processed).sum()
}

/// The digest the pipeline's batches run on now.
pub fn running(host: &Host) -> String {
    host.pipelines[0].shared.stats.snapshot().version
}

/// The digest new batches will run on (deployed, maybe not yet taken up).
pub fn deployed(host: &Host) -> String {
    host.pipelines[0].slot.current().digest().to_owned()
}

/// Stops a host: drain, final commit.
pub fn stop(host: Host) {
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
}

/// Produces `k<n>` records to `input`'s `partitions` (a burst every 10 ms) until
/// `stop`; returns every key, for the suites to compare with what was processed.
pub fn stream(brokers: &str, partitions: i32, stop: &AtomicBool) -> BTreeSet<String> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "1").create().expect("producer");
    let mut sent = BTreeSet::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && n < 60_000 {
        for _ in 0..10 {
            let key = format!("k{n}");
            let record = BaseRecord::to("input").partition(n % partitions).key(&key).payload(&key);
            send_when_room(&producer, record).map_err(|(e, _)| e).expect("queued");
            sent.insert(key);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.flush(Duration::from_secs(60)).expect("stream acknowledged");
    sent
}
