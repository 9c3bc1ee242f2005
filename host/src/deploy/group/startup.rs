//! Which version a `group_deploy` pipeline starts on. The topic is read to its end
//! once, keeping the manifests (judged: shape, scope, signature) and where each
//! chunk is, never the chunks' bytes; then only the chunks of the version to try
//! are fetched. The acceptable manifest of highest rank whose component passes its
//! checks and self-test under this host's grants and limits wins; lower-ranked ones
//! are tried next; the config's `component` runs only when the topic has no usable
//! version. The log says which, and why.
//!
//! A version refused for a cause that may pass (its self-test ran out of time on a
//! loaded host, the instance pool was full) does not stop the start: the host starts
//! on the next one, and its follower ([`super::watch`]) tries the refused one again.
//!
//! A topic that cannot be read fails the start: running the config's component
//! while the group runs something newer would be a silent split.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;

use super::catalog::{Catalog, Judge};
use super::record::{Key, Manifest, Rank};
use super::topic::{FetchError, Reader, TopicAccess};
use crate::config::PipelineConfig;
use crate::sandbox::{GuestFault, ProcessorComponent, Sandbox};

/// A version refused at startup.
pub(crate) struct Refused {
    /// Its digest (as the manifest's key names it).
    pub(crate) digest: String,
    /// Why.
    pub(crate) why: String,
    /// The kind, for metrics.
    pub(crate) label: &'static str,
}

/// What a pipeline starts on, and what its follower carries on from.
pub(crate) struct Start {
    /// The component to run.
    pub(crate) component: Arc<ProcessorComponent>,
    /// Where it came from: the topic's manifest in words, or `None` for the config.
    pub(crate) manifest: Option<String>,
    /// The reader, positioned after everything read at startup.
    pub(crate) reader: Reader,
    /// What it read.
    pub(crate) catalog: Catalog,
    /// The highest rank of an acceptable manifest read: nothing at or below it is
    /// taken from now on (a replay).
    pub(crate) floor: Option<Rank>,
    /// A version that outranks the one started on and was refused for a cause that
    /// may pass, with the reason: the follower tries it again.
    pub(crate) pending: Option<(Manifest, String)>,
    /// Versions of the topic refused for good.
    pub(crate) refusals: Vec<Refused>,
}

/// Reads the topic and picks the version `pipeline` starts on; falls back to
/// `load_config` (the config's component).
pub(crate) fn choose(
    access: &TopicAccess,
    judge: Judge,
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
    load_config: impl FnOnce(&mut HashMap<String, Arc<ProcessorComponent>>) -> anyhow::Result<Arc<ProcessorComponent>>,
) -> anyhow::Result<Start> {
    let scope = judge.scope.clone();
    let unreadable = || {
        format!(
            "pipeline {} has group_deploy = true, and the components topic {} could not be read; \
             it does not start on its config's component while the group may run a newer version",
            pipeline.name, access.topic
        )
    };
    let reader = access.reader().with_context(unreadable)?;
    let mut catalog = Catalog::new(judge);
    reader
        .read_to_end(|read| {
            catalog.add(&read.key, read.value.as_deref(), read.at);
        })
        .with_context(unreadable)?;
    let floor = catalog.highest();
    let mut refusals = Vec::new();
    let mut pending = None;
    let mut chosen = None;
    for manifest in catalog.candidates() {
        match try_version(access, sandbox, pipeline, &catalog, manifest, loaded) {
            Ok(component) => {
                chosen = Some((component, manifest.clone()));
                break;
            }
            Err(Attempt::Final(why, label)) => refusals.push(Refused { digest: manifest.digest.clone(), why, label }),
            Err(Attempt::Transient(why)) => {
                tracing::warn!(pipeline = %pipeline.name, digest = %manifest.digest, reason = %why,
                    "a version from the components topic could not be checked now; starting on an older one, and trying it again");
                pending.get_or_insert((manifest.clone(), why));
            }
            Err(Attempt::Kafka(error)) => return Err(error.context(unreadable())),
        }
    }
    // Manifests refused on their own (unreadable, unsigned, another scope's) written
    // after the version chosen: what an operator would have expected to run.
    let chosen_at = chosen.as_ref().and_then(|(_, m)| {
        catalog.entries().into_iter().find(|e| e.manifest.as_ref().is_ok_and(|c| c == m)).map(|e| e.at)
    });
    for entry in catalog.entries() {
        if let Err(refusal) = &entry.manifest
            && chosen_at.is_none_or(|at| entry.at > at)
        {
            let why = format!("manifest at {}:{}: {refusal}", entry.at.partition, entry.at.offset);
            refusals.push(Refused { digest: entry.digest.clone(), why, label: refusal.label() });
        }
    }
    let name = &pipeline.name;
    let refused: Vec<String> = refusals.iter().map(|r| format!("{}: {}", r.digest, r.why)).collect();
    let manifest = chosen.as_ref().map(|(_, m)| m.summary());
    let component = match chosen {
        Some((component, m)) => {
            if refused.is_empty() && pending.is_none() {
                tracing::info!(pipeline = %name, %scope, digest = %component.digest(), manifest = %m.summary(), topic = %access.topic,
                    "starting on the newest version published in the components topic");
            } else {
                tracing::warn!(pipeline = %name, %scope, digest = %component.digest(), manifest = %m.summary(), topic = %access.topic,
                    refused = ?refused, "starting on an older version from the components topic: the newer ones were refused");
            }
            component
        }
        None => {
            let component = load_config(loaded)?;
            if refused.is_empty() && pending.is_none() {
                tracing::info!(pipeline = %name, %scope, digest = %component.digest(), topic = %access.topic,
                    "starting on the config's component: the components topic has no version of this pipeline");
            } else {
                tracing::warn!(pipeline = %name, %scope, digest = %component.digest(), topic = %access.topic, refused = ?refused,
                    "starting on the config's component: every version in the components topic was refused");
            }
            component
        }
    };
    Ok(Start { component, manifest, reader, catalog, floor, pending, refusals })
}

enum Attempt {
    Final(String, &'static str),
    Transient(String),
    Kafka(anyhow::Error),
}

/// Fetches, verifies, loads and self-tests one manifest's version.
fn try_version(
    access: &TopicAccess,
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    catalog: &Catalog,
    manifest: &Manifest,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> Result<Arc<ProcessorComponent>, Attempt> {
    let refused = |r: super::record::Refusal| Attempt::Final(r.to_string(), r.label());
    let locations = catalog.locate(manifest).map_err(refused)?;
    let scope = catalog.scope().clone();
    let expected = |index| Key::Chunk { scope: scope.clone(), digest: manifest.digest.clone(), index };
    let chunks = access.fetch(&expected, &locations, manifest.chunks, &|| false).map_err(|e| match e {
        FetchError::Refused(r) => refused(r),
        FetchError::Kafka(error) => Attempt::Kafka(error),
    })?;
    let bytes = manifest.assemble(&chunks).map_err(refused)?;
    drop(chunks);
    let what = format!("version {} from topic {}", manifest.digest, access.topic);
    crate::host::load_checked(sandbox, pipeline, &bytes, &what, loaded).map_err(|error| {
        let transient = error.chain().any(|e| e.downcast_ref::<GuestFault>().is_some_and(GuestFault::is_transient));
        if transient {
            Attempt::Transient(format!("{error:#}"))
        } else {
            Attempt::Final(format!("{error:#}"), "component")
        }
    })
}
