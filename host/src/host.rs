//! A running ferry host: the runtime and the sandbox, every pipeline of a config,
//! the admin server and deploy watchers, and a shutdown that ends in bounded time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::admin::{self, AdminServer, AdminState, BrokerView, PipelineView};
use crate::config::{Config, PipelineConfig};
use crate::deploy::watch::DeployWatcher;
use crate::pipeline::Pipeline;
use crate::registry::ProcessorSlot;
use crate::runtime::Runtime;
use crate::sandbox::{ProcessorComponent, ProcessorInstance, Sandbox, digest_of, minimum_memory_mib, sanitize};

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
}

/// Loads a pipeline's component, or reuses the compiled one another pipeline loaded
/// from the same bytes (after checking this pipeline's grants against it), and runs
/// its self-test with this pipeline's settings and limits.
fn load_shared(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> anyhow::Result<Arc<ProcessorComponent>> {
    let path = &pipeline.component;
    let bytes = std::fs::read(path)
        .with_context(|| format!("failed to read component {} for pipeline {}", path.display(), pipeline.name))?;
    let failed = || format!("failed to load component {} for pipeline {}", path.display(), pipeline.name);
    let component = match loaded.get(&digest_of(&bytes)) {
        Some(component) => {
            component.check_grants(&pipeline.grants()).with_context(failed)?;
            component.clone()
        }
        None => {
            let component =
                Arc::new(ProcessorComponent::load(sandbox, &bytes, &pipeline.grants()).with_context(failed)?);
            loaded.insert(component.digest().to_owned(), component.clone());
            component
        }
    };
    let needs = component.initial_memory();
    if needs > pipeline.limits().memory_bytes {
        anyhow::bail!(
            "pipeline `{}`.limits.memory_mib: {} MiB is less than the {:.1} MiB of linear memory component {} \
             starts with (an interpreter's pre-initialised snapshot is most of it); set it to at least {}",
            pipeline.name,
            pipeline.limits.memory_mib,
            needs as f64 / f64::from(1 << 20),
            path.display(),
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
        Err(fault) => Err(anyhow::anyhow!("its self-test did not complete: {fault}")).with_context(failed),
    }
}

impl Host {
    /// Loads every component (failing before anything consumes) and starts the
    /// pipelines.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        // Read before anything starts, so a missing token file fails the start cleanly.
        let admin_token = config.admin.as_ref().map(|admin| admin.bearer_token()).transpose()?.flatten();
        let runtime = Runtime::new()?;
        let sandbox = Sandbox::with_runtime(config.sandbox_settings(), runtime)?;
        let mut slots = Vec::new();
        // Pipelines that run the same component share its compiled code.
        let mut loaded: HashMap<String, Arc<ProcessorComponent>> = HashMap::new();
        for pipeline in &config.pipelines {
            let component = load_shared(&sandbox, pipeline, &mut loaded)?;
            tracing::info!(
                pipeline = %pipeline.name,
                digest = %component.digest(),
                capabilities = ?component.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "loaded processor"
            );
            slots.push(ProcessorSlot::new(component));
        }
        let mut pipelines = Vec::new();
        for (pipeline, slot) in config.pipelines.iter().zip(slots) {
            pipelines.push(Pipeline::start(&config.brokers, &config.kafka, pipeline.clone(), sandbox.clone(), slot)?);
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
                Some(admin::serve(&admin.listen, state)?)
            }
            None => None,
        };
        let watcher = DeployWatcher::start(&sandbox, pipelines.iter().map(|p| (p.config.clone(), p.slot.clone())))?;
        Ok(Self { sandbox, pipelines, admin, _watcher: watcher })
    }

    /// The flag that stops every pipeline (and every guest call) when set.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.sandbox.runtime().stop_flag().clone()
    }

    /// Stops on SIGINT or SIGTERM: every pipeline drains and commits.
    pub fn stop_on_signals(&self) -> anyhow::Result<()> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
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
