//! A running ferry host: the runtime and the sandbox, every pipeline of a config,
//! the admin server and deploy watchers, and a shutdown that ends in bounded time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::admin::{self, AdminServer, AdminState, BrokerView, PipelineView};
use crate::config::{Config, PipelineConfig};
use crate::deploy::group::catalog::Judge;
use crate::deploy::group::record::Scope;
use crate::deploy::group::startup::{self, Start};
use crate::deploy::group::topic::TopicAccess;
use crate::deploy::group::watch::{Follower, GroupWatcher};
use crate::deploy::watch::DeployWatcher;
use crate::pipeline::Pipeline;
use crate::registry::{Origin, ProcessorSlot};
use crate::runtime::Runtime;
use crate::sandbox::{ProcessorComponent, ProcessorInstance, Sandbox, digest_of, minimum_memory_mib, sanitize};

/// The signals that stop a host: every pipeline drains and commits.
pub const STOP_SIGNALS: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

/// How long shutdown may take, from the signal to the process exiting, whatever the
/// guests and the brokers are doing: guests are stopped at once, outputs get
/// [5 s](crate::pipeline), the final commit 5 s, and leaving the group the rest.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// Room above a component's initial memory below which `limits.memory_mib` draws a
/// warning.
const TIGHT_MEMORY_ROOM: u64 = 8 << 20;

/// Every pipeline of one config, running.
pub struct Host {
    /// The shared engine.
    pub sandbox: Sandbox,
    /// The pipelines, in config order.
    pub pipelines: Vec<Pipeline>,
    /// The admin server, when configured.
    pub admin: Option<AdminServer>,
    /// Watches the pipelines' `deploy_dir`s; stops when the host is dropped.
    _watcher: DeployWatcher,
    /// Follows the components topic for `group_deploy` pipelines; stops (and
    /// withdraws this host's member reports) when the host is dropped.
    _group_watcher: GroupWatcher,
}

/// Loads a pipeline's component from its config file: see [`load_checked`].
fn load_shared(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> anyhow::Result<Arc<ProcessorComponent>> {
    let path = &pipeline.component;
    let bytes = std::fs::read(path)
        .with_context(|| format!("failed to read component {} for pipeline {}", path.display(), pipeline.name))?;
    load_checked(sandbox, pipeline, &bytes, &format!("component {}", path.display()), loaded)
}

/// Loads `bytes` (`what`, in errors) for a pipeline, or reuses the compiled
/// component another pipeline loaded from the same bytes (after checking this
/// pipeline's grants against it), and runs its self-test with this pipeline's
/// settings and limits.
pub(crate) fn load_checked(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    bytes: &[u8],
    what: &str,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> anyhow::Result<Arc<ProcessorComponent>> {
    let failed = || format!("failed to load {what} for pipeline {}", pipeline.name);
    let component = match loaded.get(&digest_of(bytes)) {
        Some(component) => {
            component.check_grants(&pipeline.grants()).with_context(failed)?;
            component.clone()
        }
        None => {
            let component =
                Arc::new(ProcessorComponent::load(sandbox, bytes, &pipeline.grants()).with_context(failed)?);
            loaded.insert(component.digest().to_owned(), component.clone());
            component
        }
    };
    let needs = component.initial_memory();
    if needs > pipeline.limits().memory_bytes {
        anyhow::bail!(
            "pipeline `{}`.limits.memory_mib: {} MiB is less than the {:.1} MiB of linear memory {what} \
             starts with (an interpreter's pre-initialised snapshot is most of it); set it to at least {}",
            pipeline.name,
            pipeline.limits.memory_mib,
            needs as f64 / f64::from(1 << 20),
            minimum_memory_mib(needs)
        );
    }
    if needs + TIGHT_MEMORY_ROOM > pipeline.limits().memory_bytes {
        tracing::warn!(
            pipeline = %pipeline.name,
            memory_mib = pipeline.limits.memory_mib,
            starts_with_mib = needs >> 20,
            "limits.memory_mib leaves less than {} MiB above the memory the component starts with: an instance that \
             grows through half of that room is replaced after its batch, which may be most batches",
            TIGHT_MEMORY_ROOM >> 20
        );
    }
    let mut instance = ProcessorInstance::new(
        sandbox.clone(),
        component.clone(),
        &pipeline.name,
        pipeline.provisions(),
        pipeline.limits(),
    );
    match instance.self_test() {
        Ok(Ok(())) => Ok(component),
        Ok(Err(reason)) => {
            Err(anyhow::anyhow!("its self-test failed: {}", sanitize(&reason, 500))).with_context(failed)
        }
        // The fault stays in the chain: a group deploy tells a passing cause by it.
        Err(fault) => Err(anyhow::Error::new(fault).context("its self-test did not complete")).with_context(failed),
    }
}

/// The `client.id` of a `group_deploy` pipeline's consumer, unique per process so
/// that `ferry versions --group` can tell the group's members apart: the global
/// `[kafka] client.id` (often one name for every host) becomes its prefix; a
/// pipeline's own `kafka."client.id"` is taken as it is (it must then differ between
/// processes).
fn member_client_id(pipeline: &mut PipelineConfig, global: &std::collections::BTreeMap<String, String>) -> String {
    if let Some(id) = pipeline.kafka.get("client.id") {
        return id.clone();
    }
    let prefix = global.get("client.id").map_or("ferry", String::as_str);
    let id = crate::deploy::group::member_client_id(prefix, &pipeline.name);
    pipeline.kafka.insert("client.id".to_owned(), id.clone());
    id
}

/// What the start-up chose for the `group_deploy` pipelines, for their followers.
struct GroupStarts {
    /// Per pipeline, in config order: the start-up's choice (`None`: not
    /// `group_deploy`).
    starts: Vec<Option<Start>>,
    /// Per pipeline: the consumer's client id, for `group_deploy` pipelines.
    client_ids: Vec<Option<String>>,
    access: TopicAccess,
    environment: String,
    trusted: crate::deploy::group::signing::TrustedKeys,
}

/// A start that failed after `pipelines` began consuming: stops them (each commits
/// what it finished and leaves its group), so nothing keeps running behind the error.
fn stop_started(pipelines: Vec<Pipeline>, error: anyhow::Error) -> anyhow::Error {
    if pipelines.is_empty() {
        return error;
    }
    let names: Vec<String> = pipelines.iter().map(|p| p.config.name.clone()).collect();
    tracing::error!(error = %format!("{error:#}"), stopping = ?names, "the host did not start; stopping the pipelines already running");
    for pipeline in pipelines {
        pipeline.stop();
    }
    error.context(format!("the pipelines already started ({}) were stopped", names.join(", ")))
}

impl Host {
    /// Loads every component (failing before anything consumes) and starts the
    /// pipelines.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        // Read before anything starts, so a missing token file fails the start cleanly.
        let admin_token = config.admin.as_ref().map(|admin| admin.bearer_token()).transpose()?.flatten();
        let runtime = Runtime::new()?;
        let sandbox = Sandbox::with_runtime(config.sandbox_settings(), runtime)?;
        // Each worker's instance (and its spare) keeps its pool slot whatever
        // self-tests run meanwhile.
        let spares = config.spares_fit();
        sandbox.reserve_for_workers(config.workers() * if spares { 2 } else { 1 } + config.shadow_instances());
        let mut slots = Vec::new();
        // Pipelines that run the same component share its compiled code.
        let mut loaded: HashMap<String, Arc<ProcessorComponent>> = HashMap::new();
        let access = TopicAccess {
            brokers: config.brokers.clone(),
            kafka: config.kafka.clone(),
            topic: config.fleet.components_topic.clone(),
        };
        let trusted = config.fleet.trusted()?;
        let environment = config.fleet.environment.clone().unwrap_or_default();
        if config.pipelines.iter().any(|p| p.group_deploy) {
            if trusted.is_empty() {
                tracing::warn!(topic = %access.topic, %environment,
                    "[fleet] trusted_keys is empty: this host runs UNSIGNED versions from the components topic, so \
                     anyone who may write that topic can deploy code to it; list the publishers' keys \
                     (`ferry keys new`) to accept only signed versions");
            } else {
                tracing::info!(topic = %access.topic, %environment, keys = ?trusted.ids(),
                    "group deploys: only versions signed by a trusted key are taken");
            }
        }
        let mut starts: Vec<Option<Start>> = Vec::new();
        for pipeline in &config.pipelines {
            let (component, origin, start) = if pipeline.group_deploy {
                let judge = Judge {
                    scope: Scope::new(&environment, &pipeline.name),
                    trusted: trusted.clone(),
                    limit: crate::deploy::MAX_COMPONENT_BYTES,
                };
                let start = startup::choose(&access, judge, &sandbox, pipeline, &mut loaded, |loaded| {
                    load_shared(&sandbox, pipeline, loaded)
                })?;
                let origin =
                    start.manifest.clone().map_or(Origin::Startup, |m| Origin::Group(format!("at startup, {m}")));
                (start.component.clone(), origin, Some(start))
            } else {
                (load_shared(&sandbox, pipeline, &mut loaded)?, Origin::Startup, None)
            };
            tracing::info!(
                pipeline = %pipeline.name,
                digest = %component.digest(),
                capabilities = ?component.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "loaded processor"
            );
            slots.push(ProcessorSlot::starting(component, origin));
            starts.push(start);
        }
        if !spares {
            tracing::info!(
                max_instances = config.sandbox.max_instances,
                "no spare instances: sandbox.max_instances is below 2 per worker plus one for a deploy's self-test, so \
                 an instance after a trap or a recycle is instantiated when it is needed"
            );
        }
        let mut pipelines = Vec::new();
        let mut client_ids = Vec::new();
        for (pipeline, slot) in config.pipelines.iter().zip(slots) {
            let mut pipeline = pipeline.clone();
            let client_id = pipeline.group_deploy.then(|| member_client_id(&mut pipeline, &config.kafka));
            client_ids.push(client_id);
            match Pipeline::start(&config.brokers, &config.kafka, pipeline, sandbox.clone(), slot, spares) {
                Ok(pipeline) => pipelines.push(pipeline),
                Err(error) => return Err(stop_started(pipelines, error)),
            }
        }
        let group = GroupStarts { starts, client_ids, access, environment, trusted };
        Self::serve(config, sandbox, pipelines, group, admin_token)
    }

    /// The rest of [`Self::start`], once the pipelines run: group followers, the
    /// admin server, deploy watchers. If any fails, the pipelines are stopped.
    fn serve(
        config: &Config,
        sandbox: Sandbox,
        pipelines: Vec<Pipeline>,
        group: GroupStarts,
        admin_token: Option<String>,
    ) -> anyhow::Result<Self> {
        let GroupStarts { starts, client_ids, access, environment, trusted } = group;
        let mut followers = Vec::new();
        for ((pipeline, start), client_id) in pipelines.iter().zip(starts).zip(client_ids) {
            let (Some(start), Some(client_id)) = (start, client_id) else { continue };
            pipeline.slot.follow_group(&access.topic, &environment, trusted.ids());
            if let Some(manifest) = start.catalog.newest() {
                pipeline.slot.group_published(&manifest.digest);
            }
            for refused in start.refusals {
                let detail = format!("group, at startup: {}", refused.why);
                pipeline.slot.group_refused(&refused.digest, detail, refused.label, false);
            }
            followers.push(Follower {
                access: access.clone(),
                config: pipeline.config.clone(),
                slot: pipeline.slot.clone(),
                shared: pipeline.shared.clone(),
                sandbox: sandbox.clone(),
                reader: start.reader,
                catalog: start.catalog,
                floor: start.floor,
                pending: start.pending,
                client_id,
            });
        }
        let admin = match &config.admin {
            Some(admin) => {
                let views = pipelines
                    .iter()
                    .map(|p| PipelineView {
                        config: p.config.clone(),
                        workers: p.workers.clone(),
                        slot: p.slot.clone(),
                    })
                    .collect();
                let broker_view = BrokerView::start(&config.brokers, &config.kafka, &config.pipelines);
                let state = Arc::new(AdminState {
                    pipelines: views,
                    sandbox: sandbox.clone(),
                    token: admin_token,
                    broker_view,
                });
                match admin::serve(&admin.listen, state) {
                    Ok(server) => Some(server),
                    Err(error) => return Err(stop_started(pipelines, error)),
                }
            }
            None => None,
        };
        let watched = pipelines.iter().map(|p| (p.config.clone(), p.slot.clone()));
        let watchers =
            DeployWatcher::start(&sandbox, watched).and_then(|watcher| Ok((watcher, GroupWatcher::start(followers)?)));
        match watchers {
            Ok((watcher, group_watcher)) => {
                Ok(Self { sandbox, pipelines, admin, _watcher: watcher, _group_watcher: group_watcher })
            }
            Err(error) => Err(stop_started(pipelines, error)),
        }
    }

    /// The flag that stops every pipeline (and every guest call) when set.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.sandbox.runtime().stop_flag().clone()
    }

    /// Stops on SIGINT or SIGTERM: every pipeline drains and commits.
    pub fn stop_on_signals(&self) -> anyhow::Result<()> {
        for signal in STOP_SIGNALS {
            signal_hook::flag::register(signal, self.shutdown_flag()).context("failed to install a signal handler")?;
        }
        Ok(())
    }

    /// Blocks until shutdown is requested (or every pipeline ended), then joins them
    /// within [`SHUTDOWN_BOUND`]; a pipeline still busy then is left behind (the
    /// process is about to exit, and nothing it has not committed is lost).
    pub fn wait(self) {
        let runtime = self.sandbox.runtime().clone();
        while !runtime.stopping() && !self.pipelines.iter().all(Pipeline::is_finished) {
            std::thread::sleep(Duration::from_millis(50));
        }
        runtime.stop();
        self._group_watcher.stop();
        let deadline = Instant::now() + SHUTDOWN_BOUND;
        let mut left = Vec::new();
        for pipeline in self.pipelines {
            while !pipeline.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if pipeline.is_finished() {
                pipeline.join();
            } else {
                left.push(pipeline.config.name.clone());
            }
        }
        if left.is_empty() {
            tracing::info!("ferry stopped");
        } else {
            tracing::error!(pipelines = ?left, "pipelines did not stop within {} s; leaving them", SHUTDOWN_BOUND.as_secs());
        }
    }
}
