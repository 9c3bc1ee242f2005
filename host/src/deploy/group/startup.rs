//! Which version a `group_deploy` pipeline starts on: the topic is read to its
//! end, and the newest manifest whose chunks are intact and whose component loads
//! and passes its self-test under this host's grants and limits wins; older
//! manifests still in the topic are tried next; the config's `component` runs only
//! when the topic has no usable version. The log says which, and why.
//!
//! A topic that cannot be read fails the start: running the config's component
//! while the group runs something newer would be a silent split.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;

use super::catalog::{Catalog, Location, ManifestEntry};
use super::record::Key;
use super::topic::{FetchError, Reader, TopicAccess};
use crate::config::PipelineConfig;
use crate::deploy::MAX_COMPONENT_BYTES;
use crate::sandbox::{ProcessorComponent, Sandbox};

/// What a pipeline starts on, and what its watcher carries on from.
pub(crate) struct Start {
    /// The component to run.
    pub(crate) component: Arc<ProcessorComponent>,
    /// Where it came from: the topic's manifest in words, or `None` for the config.
    pub(crate) manifest: Option<String>,
    /// The reader, positioned after everything read at startup.
    pub(crate) reader: Reader,
    /// What it read.
    pub(crate) catalog: Catalog,
    /// The newest manifest record read: already decided on.
    pub(crate) handled: Option<Location>,
    /// Versions of the topic refused on the way: digest (or `?`) and why.
    pub(crate) refusals: Vec<(String, String)>,
}

/// Reads the topic and picks the version `pipeline` starts on; falls back to
/// `load_config` (the config's component).
pub(crate) fn choose(
    access: &TopicAccess,
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
    load_config: impl FnOnce(&mut HashMap<String, Arc<ProcessorComponent>>) -> anyhow::Result<Arc<ProcessorComponent>>,
) -> anyhow::Result<Start> {
    let unreadable = || {
        format!(
            "pipeline {} has group_deploy = true, and the components topic {} could not be read; \
             it does not start on its config's component while the group may run a newer version",
            pipeline.name, access.topic
        )
    };
    let reader = access.reader().with_context(unreadable)?;
    let mut catalog = Catalog::default();
    reader
        .read_to_end(|read| {
            catalog.add(&pipeline.name, &read.key, read.value.as_deref(), read.at, MAX_COMPONENT_BYTES);
        })
        .with_context(unreadable)?;
    let handled = catalog.newest().map(|entry| entry.at);
    let mut refusals = Vec::new();
    let mut chosen = None;
    for entry in catalog.candidates() {
        match try_entry(access, sandbox, pipeline, &catalog, entry, loaded) {
            Ok((component, summary)) => {
                chosen = Some((component, summary));
                break;
            }
            Err(Attempt::Refused(digest, why)) => refusals.push((digest, why)),
            Err(Attempt::Kafka(error)) => return Err(error.context(unreadable())),
        }
    }
    let name = &pipeline.name;
    let refused: Vec<String> = refusals.iter().map(|(digest, why)| format!("{digest}: {why}")).collect();
    let manifest = chosen.as_ref().map(|(_, summary)| summary.clone());
    let component = match chosen {
        Some((component, summary)) => {
            if refused.is_empty() {
                tracing::info!(pipeline = %name, digest = %component.digest(), manifest = %summary, topic = %access.topic,
                    "starting on the newest version published in the components topic");
            } else {
                tracing::warn!(pipeline = %name, digest = %component.digest(), manifest = %summary, topic = %access.topic,
                    refused = ?refused, "starting on an older version from the components topic: the newer ones were refused");
            }
            component
        }
        None => {
            let component = load_config(loaded)?;
            if refused.is_empty() {
                tracing::info!(pipeline = %name, digest = %component.digest(), topic = %access.topic,
                    "starting on the config's component: the components topic has no version of this pipeline");
            } else {
                tracing::warn!(pipeline = %name, digest = %component.digest(), topic = %access.topic, refused = ?refused,
                    "starting on the config's component: every version in the components topic was refused");
            }
            component
        }
    };
    Ok(Start { component, manifest, reader, catalog, handled, refusals })
}

enum Attempt {
    Refused(String, String),
    Kafka(anyhow::Error),
}

/// Fetches, verifies, loads and self-tests one manifest's version.
fn try_entry(
    access: &TopicAccess,
    sandbox: &Sandbox,
    pipeline: &PipelineConfig,
    catalog: &Catalog,
    entry: &ManifestEntry,
    loaded: &mut HashMap<String, Arc<ProcessorComponent>>,
) -> Result<(Arc<ProcessorComponent>, String), Attempt> {
    let manifest = entry.manifest.as_ref().map_err(|r| Attempt::Refused("?".into(), r.to_string()))?;
    let refused = |why: String| Attempt::Refused(manifest.digest.clone(), why);
    let locations = catalog.locate(manifest).map_err(|r| refused(r.to_string()))?;
    let expected = |index| Key::Chunk { pipeline: pipeline.name.clone(), digest: manifest.digest.clone(), index };
    let chunks = access.fetch(&expected, &locations, manifest.chunks, &|| false).map_err(|e| match e {
        FetchError::Refused(r) => refused(r.to_string()),
        FetchError::Kafka(error) => Attempt::Kafka(error),
    })?;
    let bytes = manifest.assemble(&chunks).map_err(|r| refused(r.to_string()))?;
    let what = format!("version {} from topic {}", manifest.digest, access.topic);
    let component =
        crate::host::load_checked(sandbox, pipeline, &bytes, &what, loaded).map_err(|e| refused(format!("{e:#}")))?;
    Ok((component, manifest.summary()))
}
