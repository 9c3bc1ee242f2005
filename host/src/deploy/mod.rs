//! Deploying a new version: compile and check it, run its self-test, then switch.
//!
//! Everything here blocks and runs on the thread that asked for the deploy (the admin
//! server's `spawn_blocking` task for a request, the directory watcher's thread),
//! never on a pipeline thread or the runtime's worker: a slow compile or a failing
//! component costs the pipelines nothing, and a refused one leaves the running
//! version exactly as it was.
//!
//! This module owns the limit on what it accepts ([`MAX_COMPONENT_BYTES`]) and knows
//! nothing of the admin server: [`http`] speaks plain `http` requests and responses,
//! and the admin server routes authorized requests to it.
//!
//! | module | how a version arrives |
//! |---|---|
//! | [`http`] | the admin API's endpoints: `PUT /api/pipelines/{name}/component`, versions, rollback |
//! | [`client`] | `ferry deploy`, the admin API's command-line client |
//! | [`watch`] | a pipeline's `deploy_dir` |
//! | [`group`] | the components topic: `ferry deploy --group`, and every host of a `group_deploy` pipeline |

pub mod client;
pub mod group;
pub(crate) mod http;
pub(crate) mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::PipelineConfig;
use crate::registry::{Origin, ProcessorSlot};
use crate::sandbox::{
    ArtifactSource, Capability, GuestFault, LoadError, ProcessorComponent, ProcessorInstance, Sandbox, digest_of,
};

/// Largest component accepted (upload body or watched file), in bytes. Python and
/// JavaScript components are tens of MiB.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Why a deploy was refused. The running version is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Larger than the host accepts.
    #[error("the component is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a usable processor: not a component, wrong world, ungranted capability.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// Its self-test returned an error.
    #[error("the component's self-test failed: {0}")]
    SelfTestFailed(String),
    /// Its self-test trapped, ran out of time or memory.
    #[error("the component's self-test did not complete: {0}")]
    SelfTestFault(GuestFault),
    /// Asked to start with empty state, for a pipeline that keeps none.
    #[error("pipeline {0} keeps no state (no [pipeline.state]): there is no state to empty")]
    NoState(String),
    /// A shadow version for a pipeline that does not accept them, or one that cannot
    /// run as a shadow.
    #[error("no shadow: {0}")]
    Shadow(String),
}

impl DeployError {
    /// Whether the same deploy may pass later without anything changing: its
    /// self-test ran out of time (a loaded host) or found the instance pool full.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeployError::SelfTestFault(fault) if fault.is_transient())
    }
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The version now current.
    pub digest: String,
    /// The version it replaced (now the rollback target), if anything changed.
    pub replaced: Option<String>,
    /// False when that version was already running: nothing was switched.
    pub switched: bool,
    /// Its host capabilities.
    pub capabilities: Vec<Capability>,
    /// Whether it was compiled or came from the artifact cache.
    pub artifact: Option<ArtifactSource>,
    /// Time spent compiling, checking and self-testing it.
    pub prepared_in: Duration,
}

/// Checks `bytes` for `pipeline` and makes them its current version.
///
/// The component must implement the processor world, import only capabilities the
/// pipeline grants, and pass its self-test on a throwaway instance with the pipeline's
/// limits. The pipeline switches at its next batch boundary.
pub fn deploy(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    slot: &ProcessorSlot,
    bytes: &[u8],
    limit: usize,
    origin: Origin,
) -> Result<Deployed, DeployError> {
    deploy_with_state(sandbox, pipeline, slot, bytes, limit, origin, false)
}

/// [`deploy`]; with `empty_state`, the version starts with empty keyed state (see
/// [`ProcessorSlot::deploy_with_empty_state`]), and when it is already running its
/// state is emptied. Refused for a pipeline without state.
pub fn deploy_with_state(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    slot: &ProcessorSlot,
    bytes: &[u8],
    limit: usize,
    origin: Origin,
    empty_state: bool,
) -> Result<Deployed, DeployError> {
    let started = Instant::now();
    let digest = digest_of(bytes);
    if empty_state && pipeline.state.is_none() {
        return Err(DeployError::NoState(pipeline.name.clone()));
    }
    let _deploying = slot.deploy_lock();
    let current = slot.current();
    if current.digest() == digest {
        if empty_state {
            tracing::info!(pipeline = %pipeline.name, %digest, %origin, "emptying the keyed state of the running version");
            slot.empty_state(origin);
        }
        return Ok(Deployed {
            digest,
            replaced: None,
            switched: false,
            capabilities: current.capabilities().to_vec(),
            artifact: None,
            prepared_in: started.elapsed(),
        });
    }
    let component = prepare(sandbox, pipeline, bytes, limit)
        .map_err(|error| refuse(pipeline, slot, &digest, &origin, Kind::Live, error))?;
    let prepared_in = started.elapsed();
    tracing::info!(
        pipeline = %pipeline.name,
        %digest,
        replaces = %current.digest(),
        %origin,
        artifact = component.artifact().as_str(),
        prepared_ms = prepared_in.as_secs_f64() * 1e3,
        "deploying processor version; it takes over at the next batch boundary"
    );
    let deployed = Deployed {
        digest,
        replaced: Some(current.digest().to_owned()),
        switched: true,
        capabilities: component.capabilities().to_vec(),
        artifact: Some(component.artifact()),
        prepared_in,
    };
    slot.deploy_with_empty_state(component, origin, pipeline.auto_rollback, empty_state);
    Ok(deployed)
}

/// Checks `bytes` for `pipeline` as [`deploy`] does and runs them as the shadow of
/// the current version: every batch after the live version, compared, never
/// published (see [`crate::shadow`]). The pipeline must accept shadows
/// (`[pipelines.shadow]`); the version may not use HTTP (a shadow has no effects
/// outside the host), nor read headers the live version does not (its batches carry
/// none).
pub fn deploy_shadow(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    slot: &ProcessorSlot,
    bytes: &[u8],
    limit: usize,
    origin: Origin,
) -> Result<Deployed, DeployError> {
    let started = Instant::now();
    let digest = digest_of(bytes);
    let Some(config) = pipeline.shadow.clone() else {
        return Err(DeployError::Shadow(format!(
            "pipeline {} does not accept shadow versions (add a [pipelines.shadow] section)",
            pipeline.name
        )));
    };
    let _deploying = slot.deploy_lock();
    let current = slot.current();
    if current.digest() == digest {
        return Err(DeployError::Shadow("this version is already running".to_owned()));
    }
    let refused = |error| refuse(pipeline, slot, &digest, &origin, Kind::Shadow, error);
    let component = prepare(sandbox, pipeline, bytes, limit).map_err(refused)?;
    if component.capabilities().contains(&Capability::Http) {
        return Err(refused(DeployError::Shadow(
            "the version makes HTTP requests, which a shadow may not: they would reach the outside world".to_owned(),
        )));
    }
    if component.wants_headers() && !current.wants_headers() {
        return Err(refused(DeployError::Shadow(
            "the version reads record headers and the running one does not, so its batches carry none".to_owned(),
        )));
    }
    let prepared_in = started.elapsed();
    tracing::info!(pipeline = %pipeline.name, %digest, against = %current.digest(), %origin, "deploying a shadow version");
    let deployed = Deployed {
        digest,
        replaced: slot.shadow().map(|old| old.digest().to_owned()),
        switched: true,
        capabilities: component.capabilities().to_vec(),
        artifact: Some(component.artifact()),
        prepared_in,
    };
    slot.deploy_shadow(component, origin, config, pipeline.auto_rollback);
    Ok(deployed)
}

/// Which kind of deploy was refused.
#[derive(Clone, Copy)]
enum Kind {
    Live,
    Shadow,
}

/// Logs a refused deploy and puts it in the slot's history; the running version
/// (and shadow) keep going. Returns the error.
fn refuse(
    pipeline: &PipelineConfig,
    slot: &ProcessorSlot,
    digest: &str,
    origin: &Origin,
    kind: Kind,
    error: DeployError,
) -> DeployError {
    let name = &pipeline.name;
    match kind {
        Kind::Live => {
            tracing::warn!(pipeline = %name, %digest, %origin, %error, "deploy refused; the running version keeps going");
            slot.rejected(digest, format!("{origin}: {error}"));
        }
        Kind::Shadow => {
            tracing::warn!(pipeline = %name, %digest, %origin, %error, "shadow deploy refused");
            slot.rejected(digest, format!("{origin} (shadow): {error}"));
        }
    }
    error
}

/// Compiles, checks and self-tests a component without touching the slot.
fn prepare(
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    bytes: &[u8],
    limit: usize,
) -> Result<Arc<ProcessorComponent>, DeployError> {
    if bytes.len() > limit {
        return Err(DeployError::TooLarge { size: bytes.len(), limit });
    }
    let component = Arc::new(ProcessorComponent::load(sandbox, bytes, &pipeline.grants())?);
    let mut instance = ProcessorInstance::new(
        sandbox.clone(),
        component.clone(),
        &pipeline.name,
        pipeline.provisions(),
        pipeline.limits(),
    );
    match instance.self_test() {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(DeployError::SelfTestFailed(crate::sandbox::sanitize(&reason, 500))),
        Err(fault) => return Err(DeployError::SelfTestFault(fault)),
    }
    Ok(component)
}
