//! A running ferry host: the sandbox, every pipeline of a config, and shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::{self, AdminServer, AdminState, BrokerView, PipelineView};
use crate::config::{Config, PipelineConfig};
use crate::pipeline::Pipeline;
use crate::registry::ProcessorSlot;
use crate::sandbox::{ProcessorComponent, Sandbox, digest_of};
use crate::watch::DeployWatcher;

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
    shutdown: Arc<AtomicBool>,
}

/// Loads a pipeline's component, or reuses the compiled one another pipeline loaded
/// from the same bytes (after checking this pipeline's grants against it).
fn load_shared(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> anyhow::Result<Arc<ProcessorComponent>> {
    let path = &pipeline.component;
    let bytes = std::fs::read(path)
        .with_context(|| format!("failed to read component {} for pipeline {}", path.display(), pipeline.name))?;
    let failed = || format!("failed to load component {} for pipeline {}", path.display(), pipeline.name);
    if let Some(component) = loaded.get(&digest_of(&bytes)) {
        component.check_grants(&pipeline.grants()).with_context(failed)?;
        return Ok(component.clone());
    }
    let component = Arc::new(ProcessorComponent::load(sandbox, &bytes, &pipeline.grants()).with_context(failed)?);
    loaded.insert(component.digest().to_owned(), component.clone());
    Ok(component)
}

impl Host {
    /// Loads every component (failing before anything consumes) and starts the
    /// pipelines.
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new(config.sandbox_settings())?;
        let shutdown = Arc::new(AtomicBool::new(false));
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
            pipelines.push(Pipeline::start(
                &config.brokers,
                &config.kafka,
                pipeline.clone(),
                sandbox.clone(),
                slot,
                shutdown.clone(),
            )?);
        }
        let admin = match &config.admin {
            Some(admin) => {
                let token =
                    std::env::var("FERRY_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| admin.token.clone());
                let views = pipelines
                    .iter()
                    .map(|p| PipelineView { config: p.config.clone(), shared: p.shared.clone(), slot: p.slot.clone() })
                    .collect();
                let broker_view = BrokerView::start(&config.brokers, &config.kafka, &config.pipelines);
                let state = Arc::new(AdminState { pipelines: views, sandbox: sandbox.clone(), token, broker_view });
                Some(admin::serve(&admin.listen, state)?)
            }
            None => None,
        };
        let watcher = DeployWatcher::start(&sandbox, pipelines.iter().map(|p| (p.config.clone(), p.slot.clone())))?;
        Ok(Self { sandbox, pipelines, admin, _watcher: watcher, shutdown })
    }

    /// The flag that stops every pipeline when set.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Stops on SIGINT or SIGTERM: every pipeline drains and commits.
    pub fn stop_on_signals(&self) -> anyhow::Result<()> {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, self.shutdown.clone()).context("failed to install a signal handler")?;
        }
        Ok(())
    }

    /// Blocks until shutdown is requested (or every pipeline ended), then joins them.
    pub fn wait(self) {
        while !self.shutdown.load(Ordering::Relaxed) && !self.pipelines.iter().all(Pipeline::is_finished) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shutdown.store(true, Ordering::Relaxed);
        for pipeline in self.pipelines {
            pipeline.join();
        }
        tracing::info!("ferry stopped");
    }
}
