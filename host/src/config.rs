//! `ferry.toml`: the serde model and its validation. Every error names the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::registry::AutoRollback;
use crate::sandbox::capability::http::{HttpGrant, HttpLimits, Scheme as HttpScheme, parse_rules, tls_client};
use crate::sandbox::{
    Grants, Limits, LogRate, OutputLimits, Provisions, SandboxSettings, StateLimits, TenantLog, default_cache_dir,
};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// librdkafka client properties passed through as-is (SASL, TLS, timeouts...).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Host-wide sandbox settings.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// The admin HTTP server (health, metrics, status page, deploys).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The pipelines this host runs.
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<PipelineConfig>,
    /// Group-wide deploys: where component versions are kept.
    #[serde(default)]
    pub fleet: FleetConfig,
}

/// `[fleet]`: the compacted topic that holds component versions for group-wide
/// deploys (`group_deploy = true` pipelines, `ferry deploy --group`), whose
/// versions this host takes, and whose signatures it trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The topic's name.
    pub components_topic: String,
    /// The environment (`production`, `staging`...) whose versions this host takes:
    /// part of every record key, so environments sharing a cluster never touch each
    /// other. Required with a `group_deploy` pipeline.
    pub environment: Option<String>,
    /// Public keys (`ferry-ed25519:<hex>`, from `ferry keys new`) of the publishers
    /// whose signed versions this host runs. Empty: unsigned versions are accepted
    /// (and the host says so loudly).
    pub trusted_keys: Vec<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            components_topic: crate::deploy::group::DEFAULT_TOPIC.to_owned(),
            environment: None,
            trusted_keys: Vec::new(),
        }
    }
}

impl FleetConfig {
    /// The trusted publisher keys.
    pub fn trusted(&self) -> anyhow::Result<crate::deploy::group::signing::TrustedKeys> {
        use crate::deploy::group::signing::{PublicKey, TrustedKeys};
        let keys = self
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(i, k)| PublicKey::parse(k).with_context(|| format!("fleet.trusted_keys[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        TrustedKeys::new(keys).context("fleet.trusted_keys")
    }

    fn validate(&self, group_deploys: bool) -> anyhow::Result<()> {
        check_topic_name("fleet.components_topic", &self.components_topic)?;
        match &self.environment {
            Some(env) if !crate::deploy::group::record::is_name(env) => {
                bail!("fleet.environment: `{env}` must be non-empty and use only letters, digits, `-`, `_` and `.`")
            }
            None if group_deploys => bail!(
                "fleet.environment: required with a group_deploy pipeline: name the environment whose versions \
                 this host takes (`production`, `staging`...); hosts of different environments sharing a cluster \
                 never take each other's versions"
            ),
            _ => {}
        }
        self.trusted().map(drop)
    }
}

/// Host-wide sandbox settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Largest wasm stack of any guest, in KiB (one engine, so one value per host).
    pub max_wasm_stack_kib: u64,
    /// Largest memory any pipeline may give its guest, in MiB.
    pub max_memory_mib: u64,
    /// Most guest instances alive at once.
    pub max_instances: u32,
    /// Where compiled components are cached (relative to the config file); `""`
    /// turns the cache off. Default: `$XDG_CACHE_HOME/ferry` or `~/.cache/ferry`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let d = SandboxSettings::default();
        Self {
            max_wasm_stack_kib: (d.max_wasm_stack >> 10) as u64,
            max_memory_mib: d.max_memory_bytes >> 20,
            max_instances: d.max_instances,
            cache_dir: default_cache_dir(),
        }
    }
}

/// The admin HTTP server.
///
/// Its bearer token (needed by every mutating call) comes from, first found wins:
/// the `FERRY_ADMIN_TOKEN` environment variable (when not empty), the file named by
/// `token_file`, then `token`. Setting both `token_file` and `token` is an error.
/// With none, mutating calls are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind; loopback unless you mean it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token for mutating calls, written into the config.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored), relative to
    /// the config file; keeps the token out of the config and the process list.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The environment variable that overrides the configured admin token (the host's)
/// and supplies it to `ferry deploy`.
pub const ADMIN_TOKEN_ENV: &str = "FERRY_ADMIN_TOKEN";

fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}

impl AdminConfig {
    /// The bearer token, from [`ADMIN_TOKEN_ENV`], `token_file` or `token` (first
    /// found wins); `None` when there is none.
    pub fn bearer_token(&self) -> anyhow::Result<Option<String>> {
        self.bearer_token_with(std::env::var(ADMIN_TOKEN_ENV).ok())
    }

    /// [`Self::bearer_token`] with the environment variable's value given.
    fn bearer_token_with(&self, from_env: Option<String>) -> anyhow::Result<Option<String>> {
        if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
            return Ok(Some(token.trim().to_owned()));
        }
        if let Some(path) = &self.token_file {
            return read_token_file(path).context("admin.token_file").map(Some);
        }
        Ok(self.token.clone())
    }
}

/// Reads a bearer token from `path`: its whole content, surrounding whitespace
/// removed. Warns when other users may read the file.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the admin token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("the admin token in {} must be one line without spaces", path.display());
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the admin token file is readable by other users; chmod 600 it");
    }
    Ok(token.to_owned())
}

/// One pipeline: input topics, a consumer group, a processor, and its policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Topics to consume.
    pub inputs: Vec<String>,
    /// Consumer group id. Run more ferry processes with the same group to scale out.
    pub group: String,
    /// Path of the processor component (`.wasm`). Relative to the config file.
    pub component: PathBuf,
    /// Members of the group this process runs for the pipeline, each with its own
    /// consumer, guest instance and thread (they share the compiled component, the
    /// output producer and the deployed version). Partitions bound what they can do:
    /// a worker without a partition idles.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Most records per batch handed to the guest.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest a partial batch waits for more records, in ms. 0: hand what each
    /// fetch brought to the guest at once (lowest latency; under load batches still
    /// fill up, since a fetch takes up to 1024 records).
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// When finished offsets are committed.
    #[serde(default)]
    pub commit: CommitPolicy,
    /// What a crash or rebalance may do to outputs: publish some again
    /// (`at-least-once`), or never (`exactly-once`: outputs, dead letters and input
    /// offsets are committed in one Kafka transaction per partition).
    #[serde(default)]
    pub delivery: Delivery,
    /// With exactly-once: the broker aborts a transaction left open this long (a
    /// member that died mid-transaction). It must outlast a batch and a commit interval.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// With exactly-once: the start of every `transactional.id`, which is
    /// `<prefix>.<group>.<topic>.<partition>`. Principals need Write on these ids.
    #[serde(default = "default_transactional_id_prefix")]
    pub transactional_id_prefix: String,
    /// Topics the processor may write output records to (the `output` capability).
    #[serde(default)]
    pub output_topics: Vec<String>,
    /// Whether the processor may log (the `log` capability).
    #[serde(default = "yes")]
    pub allow_log: bool,
    /// How much the processor may log (its stdout and stderr count too).
    #[serde(default)]
    pub logs: LogRate,
    /// Settings the processor reads (`ferry:processor/settings`): string keys and
    /// values, for example the topic it writes to.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Resource limits of the processor.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Keyed state for the processor (the `state` capability): present, the
    /// pipeline keeps a changelog topic and restores each partition's state from it.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// Outgoing HTTP for the processor (the `http` capability): present, it may call
    /// the hosts its `allow` lists, within its budgets.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// What happens to records the processor cannot finish.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// librdkafka properties for this pipeline's consumer, over the global ones.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// A directory watched for new `*.wasm` components to deploy (relative to the
    /// config file).
    #[serde(default)]
    pub deploy_dir: Option<PathBuf>,
    /// Roll a newly deployed version back when it fails too often at first.
    #[serde(default)]
    pub auto_rollback: Option<AutoRollback>,
    /// Run the version published for this pipeline in the components topic
    /// (`[fleet]`): watch it for new versions, and start on its newest valid one
    /// (`component` then runs only while the topic has none).
    #[serde(default)]
    pub group_deploy: bool,
    /// Accept shadow versions (`ferry deploy --shadow`), compared with the running
    /// version this way. Each worker keeps an instance for the shadow.
    #[serde(default)]
    pub shadow: Option<crate::shadow::ShadowConfig>,
}

fn default_transaction_timeout_ms() -> u64 {
    10_000
}
fn default_transactional_id_prefix() -> String {
    "ferry".to_owned()
}
fn default_workers() -> usize {
    1
}
fn default_batch_size() -> usize {
    500
}
fn default_max_wait_ms() -> u64 {
    100
}
fn yes() -> bool {
    true
}

/// The delivery guarantee of a pipeline's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Outputs are published before the input offset is committed: a crash in
    /// between publishes them again.
    #[default]
    AtLeastOnce,
    /// Outputs, dead letters and the input offset of a partition are committed in one
    /// transaction: `read_committed` readers see each processed record's outputs once.
    ExactlyOnce,
}

/// When finished offsets are committed. Revokes and shutdowns always commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CommitPolicy {
    /// Every `interval_ms` (like `auto.commit.interval.ms`, but only finished offsets).
    Interval {
        /// Period in ms.
        interval_ms: u64,
    },
    /// After every batch. One commit request is in flight at a time: batches that
    /// finish meanwhile share the next one, sent when the broker has answered.
    PerBatch,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy::Interval { interval_ms: 1000 }
    }
}

/// Resource limits of one pipeline's processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest linear memory, in MiB.
    pub memory_mib: u64,
    /// Wall-clock limit per batch, in ms.
    pub time_per_batch_ms: u64,
    /// Most output records one batch may emit.
    pub max_outputs_per_batch: usize,
    /// Largest output record, in bytes.
    pub max_output_bytes: usize,
    /// Most bytes of output records one batch may emit: what one batch can make the
    /// host hold (see the memory formula in docs/operators.md).
    pub output_bytes_per_batch: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = Limits::default();
        Self {
            memory_mib: d.memory_bytes >> 20,
            time_per_batch_ms: d.time_per_batch_ms,
            max_outputs_per_batch: d.output.max_records,
            max_output_bytes: d.output.max_record_bytes,
            output_bytes_per_batch: d.output.batch_bytes,
        }
    }
}

/// A pipeline's keyed state: where it is kept and how much there may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The compacted changelog topic, one partition per input partition. Default:
    /// `<pipeline name>.state`. Created when missing.
    pub changelog_topic: Option<String>,
    /// Most bytes of state per input partition (each entry counts its key and value
    /// and a fixed cost, see docs/operators.md).
    pub partition_bytes: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most writes (puts and deletes) per batch.
    pub writes_per_batch: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        let d = StateLimits::default();
        Self {
            changelog_topic: None,
            partition_bytes: d.partition_bytes,
            max_key_bytes: d.max_key_bytes,
            max_value_bytes: d.max_value_bytes,
            writes_per_batch: d.writes_per_batch,
        }
    }
}

/// A pipeline's outgoing HTTP: where its processor may send requests, and what they
/// may spend (see docs/operators.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `scheme://host[:port]` for each host it may call; `*.` before a name allows
    /// the names one label below it. Loopback, private, link-local and metadata
    /// addresses are reached only through a rule that names the address itself.
    pub allow: Vec<String>,
    /// Most requests per batch.
    pub requests_per_batch: u32,
    /// Most bytes sent and received per batch (bodies and heads).
    pub bytes_per_batch: u64,
    /// Most requests in flight at once, per worker.
    pub concurrent_requests: u32,
    /// Longest one request may take, in ms: at most the batch's time limit.
    pub request_timeout_ms: u64,
    /// PEM certificates of CAs that https servers may also chain to, besides the
    /// Mozilla roots: a private CA. Read once, when the config is loaded.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = HttpLimits::default();
        Self {
            allow: Vec::new(),
            requests_per_batch: d.requests_per_batch,
            bytes_per_batch: d.bytes_per_batch,
            concurrent_requests: d.concurrent_requests,
            request_timeout_ms: d.request_timeout_ms,
            ca_file: None,
        }
    }
}

impl HttpConfig {
    fn limits(&self) -> HttpLimits {
        HttpLimits {
            requests_per_batch: self.requests_per_batch,
            bytes_per_batch: self.bytes_per_batch,
            concurrent_requests: self.concurrent_requests,
            request_timeout_ms: self.request_timeout_ms,
        }
    }
}

/// What happens to a record the processor marks `retry` or `reject`, or that makes
/// it fault again and again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailurePolicy {
    /// Attempts for a retryable record before it is given up on (1 = no retry).
    pub max_attempts: u32,
    /// First backoff before a retry, in ms; doubles per attempt.
    pub backoff_initial_ms: u64,
    /// Longest backoff, in ms.
    pub backoff_max_ms: u64,
    /// What to do with a record that was rejected or ran out of attempts.
    pub on_failure: OnFailure,
    /// Topic for dead letters (required with `on_failure = "dead-letter"`).
    pub dead_letter_topic: Option<String>,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            on_failure: OnFailure::Halt,
            dead_letter_topic: None,
        }
    }
}

/// The end of the road for a record that cannot be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Produce it to the dead-letter topic, then count it as finished.
    DeadLetter,
    /// Pause the partition and report it; nothing is committed past it.
    Halt,
}

/// librdkafka properties ferry sets itself and must not be overridden: they are
/// what makes "commit only what is finished" hold.
const RESERVED_KAFKA_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    // The legacy, topic-level spelling of the same switch.
    "auto.commit.enable",
    "enable.auto.offset.store",
    "transactional.id",
];
/// Switches that, turned on, silently stop ferry from committing: each with why.
const OFF_KAFKA_SWITCHES: &[(&str, &str)] = &[(
    "delivery.report.only.error",
    "ferry commits an input only once the broker acknowledged its outputs, and with this on librdkafka \
     reports only failed deliveries: nothing would ever be committed",
)];
/// Producer acknowledgement settings: anything but `all` would let an output count
/// as delivered (and its input be committed) before it is durable.
const ACKS_KEYS: &[&str] = &["acks", "request.required.acks"];
/// Most workers one pipeline may run: each is a thread, a consumer and a guest
/// instance; beyond this, more processes (or hosts) are the better way to scale.
pub const MAX_WORKERS: usize = 64;
/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: u64 = 1_000_000;
/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

impl Config {
    /// Reads and validates a config file. Component paths become absolute.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
        let mut config = Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for pipeline in &mut config.pipelines {
            if pipeline.component.is_relative() {
                pipeline.component = base.join(&pipeline.component);
            }
            if let Some(dir) = pipeline.deploy_dir.as_mut().filter(|d| d.is_relative()) {
                *dir = base.join(&*dir);
            }
        }
        if let Some(dir) = config.sandbox.cache_dir.as_mut().filter(|d| d.is_relative() && !d.as_os_str().is_empty()) {
            *dir = base.join(&*dir);
        }
        if let Some(file) = config.admin.as_mut().and_then(|a| a.token_file.as_mut()).filter(|f| f.is_relative()) {
            *file = base.join(&*file);
        }
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("brokers: must list at least one host:port");
        }
        check_kafka_props("kafka", &self.kafka)?;
        let s = &self.sandbox;
        in_range("sandbox.max_wasm_stack_kib", s.max_wasm_stack_kib, 16, 64 * 1024)?;
        in_range("sandbox.max_memory_mib", s.max_memory_mib, 1, 4096)?;
        in_range("sandbox.max_instances", u64::from(s.max_instances), 1, 10_000)?;
        if let Some(admin) = &self.admin {
            admin
                .listen
                .parse::<std::net::SocketAddr>()
                .with_context(|| format!("admin.listen: `{}` is not an address like 127.0.0.1:9464", admin.listen))?;
            if admin.token.is_some() && admin.token_file.is_some() {
                bail!("admin.token_file: set either admin.token or admin.token_file, not both");
            }
            if admin.token.as_deref().is_some_and(|t| t.trim().is_empty() || t.chars().any(char::is_whitespace)) {
                bail!("admin.token: must be non-empty and without spaces");
            }
        }
        self.fleet.validate(self.pipelines.iter().any(|p| p.group_deploy))?;
        if self.pipelines.is_empty() {
            bail!("pipeline: define at least one [[pipeline]]");
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipeline[{i}]");
            if p.name.trim().is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bail!("{at}.name: `{}` must be non-empty and use only letters, digits, `-`, `_` and `.`", p.name);
            }
            if !names.insert(p.name.as_str()) {
                bail!("{at}.name: `{}` is used by another pipeline", p.name);
            }
            let at = format!("pipeline `{}`", p.name);
            p.validate(&at, s, &self.kafka)?;
            let components = &self.fleet.components_topic;
            if p.output_topics.contains(components) || p.failure.dead_letter_topic.as_ref() == Some(components) {
                bail!(
                    "{at}.output_topics: `{components}` is the components topic ([fleet]); a processor that may \
                     write there could publish versions of any pipeline"
                );
            }
        }
        // Each worker keeps a guest instance (and one for a shadow version where the
        // pipeline accepts them); a deploy's self-test needs one more.
        let instances = self.workers() + self.shadow_instances();
        if instances >= s.max_instances as usize {
            bail!(
                "sandbox.max_instances: the pipelines' workers keep {instances} guest instances (shadow versions' \
                 included), and a deploy's self-test needs one more; raise sandbox.max_instances above {instances} \
                 (it is {})",
                s.max_instances
            );
        }
        Ok(())
    }

    /// Every pipeline's workers, added up: each keeps a guest instance.
    pub fn workers(&self) -> usize {
        self.pipelines.iter().map(|p| p.workers).sum()
    }

    /// The instances kept for shadow versions: one per worker of every pipeline
    /// that accepts them (`[pipelines.shadow]`).
    pub fn shadow_instances(&self) -> usize {
        self.pipelines.iter().filter(|p| p.shadow.is_some()).map(|p| p.workers).sum()
    }

    /// Whether the instance pool has room for a spare instance per worker as well,
    /// and still one slot for a deploy's self-test: a spare must never take the slot
    /// a live instance, a shadow's or a self-test needs.
    pub fn spares_fit(&self) -> bool {
        2 * self.workers() + self.shadow_instances() < self.sandbox.max_instances as usize
    }

    /// The sandbox settings for the engine.
    pub fn sandbox_settings(&self) -> SandboxSettings {
        SandboxSettings {
            max_wasm_stack: (self.sandbox.max_wasm_stack_kib << 10) as usize,
            max_memory_bytes: self.sandbox.max_memory_mib << 20,
            max_instances: self.sandbox.max_instances,
            cache_dir: self.sandbox.cache_dir.clone().filter(|d| !d.as_os_str().is_empty()),
        }
    }
}

impl PipelineConfig {
    /// The librdkafka properties of worker `worker`'s consumer, over the `global`
    /// ones: the pipeline's own, with a `group.instance.id` (static membership) made
    /// unique per worker, since two members with one id fence each other.
    pub fn worker_kafka(&self, global: &BTreeMap<String, String>, worker: usize) -> BTreeMap<String, String> {
        let mut kafka = self.kafka.clone();
        let static_id = self.kafka.get("group.instance.id").or(global.get("group.instance.id"));
        if self.workers > 1
            && let Some(id) = static_id
        {
            kafka.insert("group.instance.id".to_owned(), format!("{id}-{worker}"));
        }
        kafka
    }

    /// Whether this pipeline commits through transactions.
    pub fn exactly_once(&self) -> bool {
        self.delivery == Delivery::ExactlyOnce
    }

    fn validate_exactly_once(&self, at: &str, global_kafka: &BTreeMap<String, String>) -> anyhow::Result<()> {
        if self.output_topics.is_empty() && self.failure.dead_letter_topic.is_none() && self.state.is_none() {
            bail!(
                "{at}.delivery: exactly-once covers what a pipeline writes to Kafka, and this one writes nothing \
                 (no output_topics, no dead-letter topic); use at-least-once"
            );
        }
        check_transactional_prefix(at, &self.transactional_id_prefix)?;
        let field = format!("{at}.transaction_timeout_ms");
        in_range(&field, self.transaction_timeout_ms, 1_000, 900_000)
            .context("the broker's transaction.max.timeout.ms is 900000 by default")?;
        let interval = match self.commit {
            CommitPolicy::Interval { interval_ms } => interval_ms,
            CommitPolicy::PerBatch => 0,
        };
        let needed = self.limits.time_per_batch_ms + interval;
        if self.transaction_timeout_ms <= needed {
            bail!(
                "{field}: {} ms would let the broker abort a transaction that is still in use: a transaction stays \
                 open for up to a batch ({} ms) plus a commit interval ({interval} ms); raise it above {needed} ms",
                self.transaction_timeout_ms,
                self.limits.time_per_batch_ms
            );
        }
        for (key, value) in global_kafka.iter().chain(&self.kafka) {
            if key == "isolation.level" && value != "read_committed" {
                bail!(
                    "{at}.kafka.isolation.level: exactly-once reads its input with read_committed, so that records \
                     of aborted upstream transactions never reach the processor; `{value}` is not allowed"
                );
            }
        }
        Ok(())
    }

    fn validate(
        &self,
        at: &str,
        sandbox: &SandboxConfig,
        global_kafka: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        if self.inputs.is_empty() {
            bail!("{at}.inputs: list at least one topic");
        }
        for topic in self.inputs.iter().chain(&self.output_topics).chain(&self.failure.dead_letter_topic) {
            check_topic_name(at, topic)?;
        }
        if self.group.trim().is_empty() {
            bail!("{at}.group: must not be empty");
        }
        in_range(&format!("{at}.workers"), self.workers as u64, 1, MAX_WORKERS as u64).with_context(|| {
            format!(
                "{at}.workers is how many members of group `{}` this process runs, each on a thread of its own; \
                 more than the input's partitions only idle",
                self.group
            )
        })?;
        in_range(&format!("{at}.batch_size"), self.batch_size as u64, 1, 100_000)?;
        in_range(&format!("{at}.max_wait_ms"), self.max_wait_ms, 0, 60_000)?;
        if let CommitPolicy::Interval { interval_ms } = self.commit {
            in_range(&format!("{at}.commit.interval_ms"), interval_ms, 10, 3_600_000)?;
        }
        if self.delivery == Delivery::ExactlyOnce {
            self.validate_exactly_once(at, global_kafka)?;
        }
        for topic in &self.output_topics {
            if self.inputs.contains(topic) {
                bail!("{at}.output_topics: `{topic}` is also an input: the pipeline would feed itself");
            }
        }
        let l = &self.limits;
        in_range(&format!("{at}.limits.memory_mib"), l.memory_mib, 1, sandbox.max_memory_mib)?;
        // The loop polls its consumer after every guest call, so the longest it goes
        // without a poll is one call (its time limit) plus the host's work on the
        // result: publishing, committing, a seek. Half of max.poll.interval.ms each.
        let max_poll = self
            .kafka
            .get("max.poll.interval.ms")
            .or(global_kafka.get("max.poll.interval.ms"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_POLL_INTERVAL_MS);
        let time_limit = format!("{at}.limits.time_per_batch_ms");
        in_range(&time_limit, l.time_per_batch_ms, 1, 600_000)?;
        if l.time_per_batch_ms.saturating_mul(2) > max_poll {
            bail!(
                "{time_limit}: {} ms is more than half of max.poll.interval.ms ({max_poll} ms): the consumer is \
                 polled after every guest call, so polls can be one batch's time limit apart plus the host's own \
                 work on it, which gets the other half; lower it or raise max.poll.interval.ms",
                l.time_per_batch_ms
            );
        }
        in_range(&format!("{at}.limits.max_outputs_per_batch"), l.max_outputs_per_batch as u64, 1, 10_000_000)?;
        // An output the producer refuses would halt the partition: every record
        // the guest may emit must fit librdkafka's `message.max.bytes`.
        let message_max = global_kafka
            .get("message.max.bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        in_range(&format!("{at}.limits.max_output_bytes"), l.max_output_bytes as u64, 1, message_max)
            .context("an output larger than the producer's message.max.bytes could never be sent")?;
        // What a batch can make the host hold stays below what the largest guest may
        // hold itself, so the memory formula has one term per pipeline.
        let budget_field = format!("{at}.limits.output_bytes_per_batch");
        // One record of max_output_bytes, as the budget charges it (with the longest
        // topic name).
        let one_record = l.max_output_bytes + crate::sandbox::capability::output::RECORD_COST + 249;
        in_range(&budget_field, l.output_bytes_per_batch as u64, one_record as u64, sandbox.max_memory_mib << 20)
            .with_context(|| {
                format!(
                    "{budget_field} must hold at least one record of max_output_bytes (charged {} bytes more: \
                     its topic and the host's own cost per record) and at most sandbox.max_memory_mib",
                    crate::sandbox::capability::output::RECORD_COST + 249
                )
            })?;
        if let Some(state) = &self.state {
            self.validate_state(at, state, sandbox, message_max)?;
        }
        if let Some(http) = &self.http {
            self.validate_http(at, http, sandbox)?;
        }
        in_range(&format!("{at}.logs.lines_per_sec"), u64::from(self.logs.lines_per_sec), 1, 100_000)?;
        in_range(&format!("{at}.logs.bytes_per_sec"), self.logs.bytes_per_sec, 64, 64 << 20)?;
        for (key, value) in &self.settings {
            if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
                bail!(
                    "{at}.settings: key `{}` must be 1-256 characters without control characters",
                    key.escape_debug()
                );
            }
            if value.len() > 64 << 10 {
                bail!("{at}.settings.{key}: values are at most 64 KiB");
            }
        }
        let f = &self.failure;
        in_range(&format!("{at}.failure.max_attempts"), u64::from(f.max_attempts), 1, 1000)?;
        in_range(&format!("{at}.failure.backoff_initial_ms"), f.backoff_initial_ms, 1, 3_600_000)?;
        in_range(&format!("{at}.failure.backoff_max_ms"), f.backoff_max_ms, f.backoff_initial_ms, 86_400_000)?;
        match (&f.on_failure, &f.dead_letter_topic) {
            (OnFailure::DeadLetter, None) => {
                bail!("{at}.failure.dead_letter_topic: required when on_failure = \"dead-letter\"")
            }
            (_, Some(dlq)) if self.inputs.contains(dlq) => {
                bail!("{at}.failure.dead_letter_topic: `{dlq}` is also an input")
            }
            _ => {}
        }
        check_kafka_props(&format!("{at}.kafka"), &self.kafka)?;
        if let Some(auto_rollback) = &self.auto_rollback {
            auto_rollback.validate(&format!("{at}.auto_rollback"))?;
        }
        if let Some(shadow) = &self.shadow {
            shadow.validate(&format!("{at}.shadow"))?;
        }
        Ok(())
    }

    /// The state section's limits, checked against `[sandbox]` like the others.
    fn validate_state(
        &self,
        at: &str,
        state: &StateConfig,
        sandbox: &SandboxConfig,
        message_max: u64,
    ) -> anyhow::Result<()> {
        if self.inputs.len() != 1 {
            bail!(
                "{at}.state: a pipeline with state reads one input topic (its changelog is co-partitioned \
                 with it), this one reads {}",
                self.inputs.len()
            );
        }
        let changelog = self.changelog_topic().expect("a pipeline with state");
        check_topic_name(&format!("{at}.state.changelog_topic"), &changelog)?;
        if self.inputs.contains(&changelog)
            || self.output_topics.contains(&changelog)
            || self.failure.dead_letter_topic.as_ref() == Some(&changelog)
        {
            bail!("{at}.state.changelog_topic: `{changelog}` is also an input, output or dead-letter topic");
        }
        // A partition's state is held in host memory: no more than the largest
        // guest may hold itself, so the memory formula has one term per partition.
        in_range(
            &format!("{at}.state.partition_bytes"),
            state.partition_bytes as u64,
            1 << 10,
            sandbox.max_memory_mib << 20,
        )?;
        in_range(&format!("{at}.state.max_key_bytes"), state.max_key_bytes as u64, 1, 64 << 10)?;
        // A changelog record carries the key and the value: it must fit the producer.
        let value_field = format!("{at}.state.max_value_bytes");
        in_range(
            &value_field,
            state.max_value_bytes as u64,
            1,
            message_max.saturating_sub(state.max_key_bytes as u64 + 512),
        )
        .context(
            "a changelog record (key and value) larger than the producer's message.max.bytes could never be sent",
        )?;
        in_range(&format!("{at}.state.writes_per_batch"), u64::from(state.writes_per_batch), 1, 10_000_000)?;
        Ok(())
    }

    /// The http section: rules that parse, budgets within `[sandbox]` and the batch.
    fn validate_http(&self, at: &str, http: &HttpConfig, sandbox: &SandboxConfig) -> anyhow::Result<()> {
        if http.allow.is_empty() {
            bail!("{at}.http.allow: list the URLs the processor may call, as scheme://host[:port]");
        }
        let rules = parse_rules(&http.allow).map_err(|e| anyhow::anyhow!("{at}.http.allow: {e}"))?;
        if let Some(file) = &http.ca_file {
            if !rules.iter().any(|r| r.scheme == HttpScheme::Https) {
                bail!("{at}.http.ca_file: only https rules use it, and `allow` has none");
            }
            tls_client(Some(file)).map_err(|e| anyhow::anyhow!("{at}.http.ca_file: {e}"))?;
        }
        in_range(&format!("{at}.http.requests_per_batch"), u64::from(http.requests_per_batch), 1, 100_000)?;
        // Bytes in transit are held by the host: no more than the largest guest may hold.
        in_range(&format!("{at}.http.bytes_per_batch"), http.bytes_per_batch, 1 << 10, sandbox.max_memory_mib << 20)?;
        in_range(&format!("{at}.http.concurrent_requests"), u64::from(http.concurrent_requests), 1, 1024)?;
        in_range(&format!("{at}.http.request_timeout_ms"), http.request_timeout_ms, 1, self.limits.time_per_batch_ms)
            .context("a request never outlives its batch: request_timeout_ms is at most limits.time_per_batch_ms")?;
        Ok(())
    }

    /// The changelog topic of a pipeline with state.
    pub fn changelog_topic(&self) -> Option<String> {
        let state = self.state.as_ref()?;
        Some(state.changelog_topic.clone().unwrap_or_else(|| format!("{}.state", self.name)))
    }

    /// The capabilities this pipeline grants its processor.
    pub fn grants(&self) -> Grants {
        Grants {
            output_topics: self.output_topics.iter().cloned().collect(),
            log: self.allow_log,
            state: self.state.is_some(),
            // Rules that do not parse (a config not validated) grant nothing.
            http: self.http.as_ref().map(|http| {
                std::sync::Arc::new(HttpGrant {
                    allow: parse_rules(&http.allow).unwrap_or_default(),
                    limits: http.limits(),
                    ca_file: http.ca_file.clone(),
                })
            }),
        }
    }

    /// The processor's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.limits.memory_mib << 20,
            time_per_batch_ms: self.limits.time_per_batch_ms,
            output: OutputLimits {
                max_records: self.limits.max_outputs_per_batch,
                max_record_bytes: self.limits.max_output_bytes,
                batch_bytes: self.limits.output_bytes_per_batch,
            },
            state: self.state.as_ref().map_or_else(StateLimits::default, |s| StateLimits {
                partition_bytes: s.partition_bytes,
                max_key_bytes: s.max_key_bytes,
                max_value_bytes: s.max_value_bytes,
                writes_per_batch: s.writes_per_batch,
            }),
        }
    }

    /// What the pipeline gives its processor: grants, settings, and a fresh log
    /// (rate-limited for the pipeline as a whole).
    pub fn provisions(&self) -> Provisions {
        Provisions {
            grants: std::sync::Arc::new(self.grants()),
            settings: std::sync::Arc::new(self.settings.clone()),
            log: TenantLog::new(&self.name, self.logs),
            http_meter: std::sync::Arc::default(),
        }
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!("{field}: must be between {min} and {max}, got {value}");
    }
    Ok(())
}

fn check_transactional_prefix(at: &str, prefix: &str) -> anyhow::Result<()> {
    if prefix.is_empty()
        || prefix.len() > 100
        || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("{at}.transactional_id_prefix: `{prefix}` must be 1-100 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

fn check_topic_name(at: &str, topic: &str) -> anyhow::Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        bail!("{at}: `{topic}` is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)");
    }
    Ok(())
}

fn check_kafka_props(at: &str, props: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for (key, value) in props {
        if RESERVED_KAFKA_KEYS.contains(&key.as_str()) {
            bail!(
                "{at}.\"{key}\": ferry sets this itself (use `brokers`, the pipeline's `group`; commits are ferry's job)"
            );
        }
        if let Some((_, why)) = OFF_KAFKA_SWITCHES.iter().find(|(switch, _)| switch == key)
            && !is_false(value)
        {
            bail!("{at}.\"{key}\" = \"{value}\": {why}; leave it out (it is off by default)");
        }
        if ACKS_KEYS.contains(&key.as_str()) && !matches!(value.as_str(), "all" | "-1") {
            bail!(
                "{at}.\"{key}\" = \"{value}\": ferry commits an input only once its outputs are acknowledged, \
                 which means something only with acks=all (the default)"
            );
        }
    }
    Ok(())
}

/// Whether librdkafka reads `value` as a boolean false (it accepts `false`, `f` and `0`).
fn is_false(value: &str) -> bool {
    value.eq_ignore_ascii_case("false") || value.eq_ignore_ascii_case("f") || value == "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        brokers = "127.0.0.1:9092"
        [kafka]
        "security.protocol" = "plaintext"
        [[pipeline]]
        name = "orders"
        inputs = ["orders"]
        group = "g"
        component = "orders.wasm"
        output_topics = ["commissions"]
        commit = { policy = "per-batch" }
        failure = { on_failure = "dead-letter", dead_letter_topic = "orders.dlq" }
    "#;

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn the_example_config_is_valid() {
        let config = Config::parse(include_str!("../../examples/ferry.toml")).unwrap();
        assert_eq!(config.pipelines[0].failure.dead_letter_topic.as_deref(), Some("orders.dlq"));
    }

    #[test]
    fn group_deploys_are_opt_in_and_the_components_topic_is_off_limits_to_processors() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.fleet.components_topic, "_ferry.components");
        assert!(!c.pipelines[0].group_deploy);
        let text = GOOD.replace("[kafka]", "[fleet]\ncomponents_topic = \"versions\"\nenvironment = \"prod\"\n[kafka]");
        let c = Config::parse(&text.replace("name = \"orders\"", "name = \"orders\"\ngroup_deploy = true")).unwrap();
        assert_eq!(c.fleet.components_topic, "versions");
        assert!(c.pipelines[0].group_deploy);
        assert!(c.fleet.trusted().unwrap().is_empty());
        let unscoped = GOOD.replace("name = \"orders\"", "name = \"orders\"\ngroup_deploy = true");
        assert!(error_of(&unscoped).contains("fleet.environment: required"));
        let error = error_of(&text.replace("\"prod\"", "\"pro d\""));
        assert!(error.contains("fleet.environment"), "{error}");
        let key = crate::deploy::group::signing::SecretKey::generate().unwrap();
        let keys = format!("trusted_keys = [\"{}\"]\n[kafka]", key.public().line());
        let c = Config::parse(&text.replacen("[kafka]", &keys, 1)).unwrap();
        assert_eq!(c.fleet.trusted().unwrap().ids(), [key.public().id()]);
        let error = error_of(&text.replacen("[kafka]", "trusted_keys = [\"ferry-ed25519:00\"]\n[kafka]", 1));
        assert!(error.contains("fleet.trusted_keys[0]"), "{error}");
        let error = error_of(&text.replace("[\"commissions\"]", "[\"versions\"]"));
        assert!(error.contains("components topic"), "{error}");
        let error = error_of(&GOOD.replace("[kafka]", "[fleet]\ncomponents_topic = \"a b\"\n[kafka]"));
        assert!(error.contains("fleet.components_topic"), "{error}");
    }

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.pipelines[0].commit, CommitPolicy::PerBatch);
        assert_eq!(c.pipelines[0].batch_size, 500);
        assert!(c.pipelines[0].grants().output_topics.contains("commissions"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\nbatch_sise = 3"));
        assert!(e.contains("batch_sise"), "{e}");
    }

    #[test]
    fn http_is_granted_by_its_section_and_its_rules_and_budgets_are_checked() {
        let c = Config::parse(GOOD).unwrap();
        assert!(c.pipelines[0].grants().http.is_none());
        let with = |section: &str| GOOD.replace("commit =", &format!("http = {{ {section} }}\ncommit ="));
        let c = Config::parse(&with(
            r#"allow = ["http://127.0.0.1:8089", "http://*.example.com"], concurrent_requests = 4"#,
        ))
        .unwrap();
        let grant = c.pipelines[0].grants().http.unwrap();
        assert_eq!(grant.allow.len(), 2);
        assert_eq!(grant.limits.concurrent_requests, 4);
        for (section, field) in [
            ("allow = []", "http.allow: list the URLs"),
            (r#"allow = ["ftp://x.example.com"]"#, "http.allow: `ftp://x.example.com`"),
            (r#"allow = ["http://*.com"]"#, "top-level domain"),
            (r#"allow = ["http://a.example.com"], ca_file = "ca.pem""#, "only https rules use it"),
            (r#"allow = ["https://a.example.com"], ca_file = "/nonexistent/ca.pem""#, "cannot read"),
            (r#"allow = ["http://a.example.com"], requests_per_batch = 0"#, "http.requests_per_batch"),
            (r#"allow = ["http://a.example.com"], concurrent_requests = 5000"#, "http.concurrent_requests"),
            (r#"allow = ["http://a.example.com"], bytes_per_batch = 10"#, "http.bytes_per_batch"),
            (r#"allow = ["http://a.example.com"], request_timeout_ms = 999999"#, "http.request_timeout_ms"),
            (r#"allow = ["http://a.example.com"], retries = 1"#, "unknown field"),
        ] {
            let e = error_of(&with(section));
            assert!(e.contains(field), "{section}: {e}");
        }
    }

    #[test]
    fn state_is_granted_by_its_section_and_its_limits_are_checked() {
        let c = Config::parse(GOOD).unwrap();
        assert!(!c.pipelines[0].grants().state);
        assert_eq!(c.pipelines[0].changelog_topic(), None);
        let stateful = GOOD.replace("commit =", "state = { max_key_bytes = 100 }\ncommit =");
        let c = Config::parse(&stateful).unwrap();
        assert!(c.pipelines[0].grants().state);
        assert_eq!(c.pipelines[0].changelog_topic().as_deref(), Some("orders.state"));
        assert_eq!(c.pipelines[0].limits().state.max_key_bytes, 100);
        let e = error_of(&stateful.replace("max_key_bytes = 100", "partition_bytes = 1"));
        assert!(e.contains("pipeline `orders`.state.partition_bytes: must be between"), "{e}");
        let e = error_of(&stateful.replace("max_key_bytes = 100", "max_value_bytes = 2000000"));
        assert!(e.contains("state.max_value_bytes"), "{e}");
        let e = error_of(&stateful.replace("max_key_bytes = 100", "changelog_topic = \"commissions\""));
        assert!(e.contains("state.changelog_topic: `commissions` is also"), "{e}");
        let e = error_of(&stateful.replace("inputs = [\"orders\"]", "inputs = [\"orders\", \"more\"]"));
        assert!(e.contains("reads one input topic"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\nbatch_size = 0"));
        assert!(e.contains("pipeline `orders`.batch_size: must be between 1 and 100000, got 0"), "{e}");
        let e = error_of(&GOOD.replace("orders.dlq", "orders"));
        assert!(e.contains("dead_letter_topic"), "{e}");
        let e = error_of(&GOOD.replace("\"security.protocol\"", "\"enable.auto.commit\""));
        assert!(e.contains("kafka.\"enable.auto.commit\""), "{e}");
        let e = error_of(&GOOD.replace("[\"commissions\"]", "[\"bad topic!\"]"));
        assert!(e.contains("bad topic!"), "{e}");
        let e = error_of(&GOOD.replace("per-batch", "sometimes"));
        assert!(e.contains("sometimes"), "{e}");
        let e = error_of(&GOOD.replace(", dead_letter_topic = \"orders.dlq\"", ""));
        assert!(e.contains("required when on_failure"), "{e}");
        let e = error_of(&GOOD.replace("\"security.protocol\" = \"plaintext\"", "acks = \"1\""));
        assert!(e.contains("kafka.\"acks\" = \"1\"") && e.contains("acks=all"), "{e}");
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\nlimits = { time_per_batch_ms = 200000 }"));
        assert!(e.contains("more than half of max.poll.interval.ms (300000 ms)"), "{e}");
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\nlimits = { output_bytes_per_batch = 10 }"));
        assert!(e.contains("output_bytes_per_batch"), "{e}");
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\nsettings = { \"\" = \"x\" }"));
        assert!(e.contains("settings: key"), "{e}");
    }

    /// librdkafka switches that would make every commit wait forever are refused by
    /// name, wherever they are set; turned off (their default) they pass.
    #[test]
    fn switches_that_stop_every_commit_are_refused_by_name() {
        for (key, value) in [("delivery.report.only.error", "true"), ("delivery.report.only.error", "T")] {
            let global = GOOD.replace("\"security.protocol\" = \"plaintext\"", &format!("\"{key}\" = \"{value}\""));
            let e = error_of(&global);
            assert!(e.contains(&format!("kafka.\"{key}\" = \"{value}\"")) && e.contains("nothing would ever"), "{e}");
            let own = GOOD.replace("commit = ", &format!("kafka = {{ \"{key}\" = \"{value}\" }}\ncommit = "));
            let e = error_of(&own);
            assert!(e.contains(&format!("pipeline `orders`.kafka.\"{key}\"")), "{e}");
        }
        for off in ["false", "0", "F"] {
            let text = GOOD.replace(
                "\"security.protocol\" = \"plaintext\"",
                &format!("\"delivery.report.only.error\" = \"{off}\""),
            );
            assert!(Config::parse(&text).is_ok(), "{off}");
        }
        let e = error_of(&GOOD.replace("\"security.protocol\" = \"plaintext\"", "\"auto.commit.enable\" = \"true\""));
        assert!(e.contains("kafka.\"auto.commit.enable\": ferry sets this itself"), "{e}");
    }

    #[test]
    fn a_pipeline_that_accepts_shadows_keeps_an_instance_per_worker_for_them() {
        let with = |shadow: &str, max: u32| {
            GOOD.replace("group = \"g\"", &format!("group = \"g\"\nworkers = 4\n{shadow}"))
                .replace("[kafka]", &format!("[sandbox]\nmax_instances = {max}\n[kafka]"))
        };
        let c = Config::parse(&with("shadow = { outputs = \"multiset\", ignore_headers = [\"ts\"] }", 9)).unwrap();
        assert_eq!(c.shadow_instances(), 4);
        assert!(!c.spares_fit(), "4 live, 4 spares and 4 shadows do not fit in 9");
        assert_eq!(c.pipelines[0].shadow.as_ref().unwrap().outputs, crate::shadow::OutputOrder::Multiset);
        let e = error_of(&with("shadow = {}", 8));
        assert!(e.contains("keep 8 guest instances (shadow versions' included)"), "{e}");
        assert!(Config::parse(&with("", 8)).is_ok(), "without shadows 4 instances fit in 8");
        for (bad, field) in [
            ("max_time_share = 0.0", "max_time_share"),
            ("promote_after = 0", "promote_after"),
            ("ignore_fields = [\"a..b\"]", "ignore_fields"),
            ("outputs = \"sorted\"", "outputs"),
        ] {
            let e = error_of(&with(&format!("shadow = {{ {bad} }}"), 64));
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn workers_are_checked_and_each_gets_its_own_static_member_id() {
        assert_eq!(Config::parse(GOOD).unwrap().pipelines[0].workers, 1, "one worker unless asked");
        let with = |n: &str| GOOD.replace("group = \"g\"", &format!("group = \"g\"\nworkers = {n}"));
        assert_eq!(Config::parse(&with("4")).unwrap().pipelines[0].workers, 4);
        for bad in ["0", "65"] {
            let e = error_of(&with(bad));
            assert!(e.contains(&format!("pipeline `orders`.workers: must be between 1 and 64, got {bad}")), "{e}");
            assert!(e.contains("members of group `g`"), "{e}");
        }
        let e = error_of(&with("64").replace("[kafka]", "[sandbox]\nmax_instances = 64\n[kafka]"));
        assert!(e.contains("sandbox.max_instances: the pipelines' workers keep 64 guest instances"), "{e}");
        let statics = with("2").replace("commit = ", "kafka = { \"group.instance.id\" = \"host-a\" }\ncommit = ");
        let pipeline = &Config::parse(&statics).unwrap().pipelines[0];
        let global = BTreeMap::new();
        let ids: Vec<_> = (0..2).map(|w| pipeline.worker_kafka(&global, w)["group.instance.id"].clone()).collect();
        assert_eq!(ids, ["host-a-0", "host-a-1"], "two members may not share a static id");
        let global = BTreeMap::from([("group.instance.id".to_owned(), "h".to_owned())]);
        let two = Config::parse(&with("2")).unwrap();
        assert_eq!(two.pipelines[0].worker_kafka(&global, 1)["group.instance.id"], "h-1");
        assert_eq!(Config::parse(GOOD).unwrap().pipelines[0].worker_kafka(&global, 0).get("group.instance.id"), None);
    }

    #[test]
    fn exactly_once_is_refused_where_it_cannot_hold() {
        let eos = GOOD.replace("group = \"g\"", "group = \"g\"\ndelivery = \"exactly-once\"");
        let config = Config::parse(&eos).unwrap();
        assert!(config.pipelines[0].exactly_once());
        assert_eq!(config.pipelines[0].transaction_timeout_ms, 10_000);
        let nothing_written = eos
            .replace("output_topics = [\"commissions\"]", "")
            .replace("failure = { on_failure = \"dead-letter\", dead_letter_topic = \"orders.dlq\" }", "");
        let e = error_of(&nothing_written);
        assert!(e.contains("pipeline `orders`.delivery") && e.contains("writes nothing"), "{e}");
        let short =
            eos.replace("delivery", "transaction_timeout_ms = 20000\nlimits = { time_per_batch_ms = 30000 }\ndelivery");
        let e = error_of(&short);
        assert!(e.contains("transaction_timeout_ms: 20000 ms would let the broker abort"), "{e}");
        let e = error_of(
            &eos.replace("\"security.protocol\" = \"plaintext\"", "\"isolation.level\" = \"read_uncommitted\""),
        );
        assert!(e.contains("isolation.level") && e.contains("read_committed"), "{e}");
        let e = error_of(&eos.replace("delivery", "transactional_id_prefix = \"a b\"\ndelivery"));
        assert!(e.contains("transactional_id_prefix"), "{e}");
        let e = error_of(&GOOD.replace("group = \"g\"", "group = \"g\"\ndelivery = \"exactly-twice\""));
        assert!(e.contains("exactly-twice"), "{e}");
    }

    #[test]
    fn settings_and_log_rates_reach_the_processor() {
        let c = Config::parse(&GOOD.replace(
            "group = \"g\"",
            "group = \"g\"\nsettings = { output_topic = \"payouts\" }\nlogs = { lines_per_sec = 5 }",
        ))
        .unwrap();
        let provisions = c.pipelines[0].provisions();
        assert_eq!(provisions.settings.get("output_topic").map(String::as_str), Some("payouts"));
        assert_eq!(c.pipelines[0].logs.lines_per_sec, 5);
        assert_eq!(c.pipelines[0].logs.bytes_per_sec, LogRate::default().bytes_per_sec);
    }

    fn with_admin(admin: &str) -> Config {
        Config::parse(&GOOD.replace("[kafka]", &format!("[admin]\n{admin}\n[kafka]"))).unwrap()
    }

    #[test]
    fn the_admin_token_comes_from_the_environment_then_the_file_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let inline = with_admin("token = \"inline\"").admin.unwrap();
        let in_file = with_admin(&format!("token_file = \"{}\"", file.display())).admin.unwrap();
        let none = with_admin("listen = \"127.0.0.1:0\"").admin.unwrap();

        let env = || Some(" from-env\n".to_owned());
        assert_eq!(inline.bearer_token_with(env()).unwrap().as_deref(), Some("from-env"));
        assert_eq!(in_file.bearer_token_with(env()).unwrap().as_deref(), Some("from-env"));
        assert_eq!(in_file.bearer_token_with(None).unwrap().as_deref(), Some("from-file"));
        assert_eq!(in_file.bearer_token_with(Some(String::new())).unwrap().as_deref(), Some("from-file"));
        assert_eq!(inline.bearer_token_with(None).unwrap().as_deref(), Some("inline"));
        assert_eq!(none.bearer_token_with(None).unwrap(), None);
    }

    #[test]
    fn a_bad_admin_token_source_is_refused_by_name() {
        let e = error_of(&GOOD.replace("[kafka]", "[admin]\ntoken = \"t\"\ntoken_file = \"f\"\n[kafka]"));
        assert!(e.contains("admin.token_file") && e.contains("not both"), "{e}");
        let e = error_of(&GOOD.replace("[kafka]", "[admin]\ntoken = \"\"\n[kafka]"));
        assert!(e.contains("admin.token"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let admin = with_admin(&format!("token_file = \"{}\"", empty.display())).admin.unwrap();
        let e = format!("{:#}", admin.bearer_token_with(None).unwrap_err());
        assert!(e.contains("admin.token_file") && e.contains("is empty"), "{e}");
        let missing = with_admin("token_file = \"/nonexistent/ferry-token\"").admin.unwrap();
        let e = format!("{:#}", missing.bearer_token_with(None).unwrap_err());
        assert!(e.contains("/nonexistent/ferry-token"), "{e}");
    }

    #[test]
    fn a_relative_token_file_is_read_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "s3cret").unwrap();
        let config = dir.path().join("ferry.toml");
        std::fs::write(&config, GOOD.replace("[kafka]", "[admin]\ntoken_file = \"admin.token\"\n[kafka]")).unwrap();
        let admin = Config::load(&config).unwrap().admin.unwrap();
        assert_eq!(admin.bearer_token_with(None).unwrap().as_deref(), Some("s3cret"));
    }
}
