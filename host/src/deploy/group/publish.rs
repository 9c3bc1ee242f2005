//! `ferry deploy --group`: publishing a version to the components topic, rolling
//! back to one published earlier, and listing what the topic holds.
//!
//! Nothing is written before the component is known to be one: a file that is not a
//! processor component is refused here, not by every host of the group. Each host
//! still checks it against its own grants and limits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::catalog::Catalog;
use super::record::{DEFAULT_CHUNK_BYTES, Key, Manifest, split};
use super::topic::{FetchError, TopicAccess};
use crate::deploy::MAX_COMPONENT_BYTES;
use crate::sandbox::{Sandbox, SandboxSettings, digest_of, inspect};

/// How long the brokers may take to acknowledge a version's records.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// Smallest chunk size accepted (tests force many chunks with it).
pub const MIN_CHUNK_BYTES: usize = 1024;
/// Largest chunk size accepted: below the broker's default `message.max.bytes` (1 MB)
/// with room for the key and the record overhead.
pub const MAX_CHUNK_BYTES: usize = 900 << 10;

/// Who publishes, as written into manifests: `$USER@host`.
pub fn publisher() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", super::hostname())
}

/// Checks that `bytes` is a processor component at all (the world, what it
/// imports), without any pipeline's grants or limits. Returns the engine used,
/// whose runtime is this process's one.
fn check_loadable(bytes: &[u8]) -> anyhow::Result<Sandbox> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        bail!("the component is {} bytes; hosts accept at most {MAX_COMPONENT_BYTES}", bytes.len());
    }
    let sandbox = Sandbox::new(SandboxSettings { max_instances: 2, cache_dir: None, ..SandboxSettings::default() })?;
    inspect(&sandbox, bytes).context("not a usable processor component; nothing was published")?;
    Ok(sandbox)
}

/// Publishes `bytes` as `pipeline`'s version: every chunk, and once all are
/// acknowledged, the manifest. Returns the manifest written.
pub fn publish(access: &TopicAccess, pipeline: &str, bytes: &[u8], chunk_bytes: usize) -> anyhow::Result<Manifest> {
    if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk_bytes) {
        bail!("--chunk-bytes must be between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES}, got {chunk_bytes}");
    }
    let sandbox = check_loadable(bytes)?;
    access.ensure_topic(sandbox.runtime());
    let writer = access.writer()?;
    let partition = writer.partition_for(pipeline)?;
    let manifest = Manifest::describe(pipeline, bytes, chunk_bytes, &publisher(), "deploy");
    let keys: Vec<String> = split(bytes, chunk_bytes)
        .map(|(index, _)| Key::Chunk { pipeline: pipeline.to_owned(), digest: manifest.digest.clone(), index }.render())
        .collect();
    let chunks: Vec<(String, Option<&[u8]>)> =
        keys.into_iter().zip(split(bytes, chunk_bytes).map(|(_, c)| Some(c))).collect();
    writer.write_all(partition, &chunks, ACK_WAIT).context("writing the chunks failed; no manifest was written")?;
    let json = manifest.to_json();
    let key = Key::Manifest { pipeline: pipeline.to_owned() }.render();
    writer.write_all(partition, &[(key, Some(&json))], ACK_WAIT).context("writing the manifest failed")?;
    Ok(manifest)
}

/// Everything the topic holds for `pipeline`.
pub fn catalog(access: &TopicAccess, pipeline: &str) -> anyhow::Result<Catalog> {
    let reader = access.reader()?;
    let mut catalog = Catalog::default();
    reader.read_to_end(|read| {
        catalog.add(pipeline, &read.key, read.value.as_deref(), read.at, MAX_COMPONENT_BYTES);
    })?;
    Ok(catalog)
}

/// The one digest with chunks in `catalog` that `wanted` names: the whole digest,
/// `sha256:` and all, or a prefix of at least 8 characters.
fn resolve(catalog: &Catalog, wanted: &str) -> anyhow::Result<String> {
    let wanted = wanted.trim().trim_start_matches("sha256:").to_ascii_lowercase();
    if wanted.len() < 8 {
        bail!("give at least 8 characters of the digest");
    }
    let digests = catalog.digests();
    let matching: Vec<&String> = digests.iter().filter(|d| d.starts_with(&wanted)).collect();
    match matching[..] {
        [one] => Ok(one.clone()),
        [] => bail!(
            "the topic holds no chunks of a version {wanted}...; versions there: {}",
            if digests.is_empty() { "none".to_owned() } else { digests.join(", ") }
        ),
        _ => bail!("{wanted} is the start of several digests: {}", digests.join(", ")),
    }
}

/// Rolls `pipeline` back to the version `digest` (or a unique prefix of it): its
/// chunks, still in the topic, are read back and checked (count, sizes, digest,
/// loadable) before its manifest is written again.
pub fn rollback(access: &TopicAccess, pipeline: &str, digest: &str) -> anyhow::Result<Manifest> {
    let catalog = catalog(access, pipeline)?;
    let digest = resolve(&catalog, digest)?;
    let locations = catalog.chunks_of(&digest);
    let count = locations.keys().max().map_or(0, |last| last + 1);
    if let Some(gap) = (0..count).find(|i| !locations.contains_key(i)) {
        bail!("chunk {gap} of version {digest} is missing from the topic: it cannot be rolled back to");
    }
    let expected = |index| Key::Chunk { pipeline: pipeline.to_owned(), digest: digest.clone(), index };
    let chunks = match access.fetch(&expected, &locations, count, &|| false) {
        Ok(chunks) => chunks,
        Err(FetchError::Refused(refusal)) => bail!("version {digest} cannot be rolled back to: {refusal}"),
        Err(FetchError::Kafka(error)) => return Err(error.context("failed to read the chunks back")),
    };
    let bytes: Vec<u8> = chunks.values().flatten().copied().collect();
    if digest_of(&bytes) != digest {
        bail!(
            "the chunks of version {digest} put together have digest {}: it cannot be rolled back to",
            digest_of(&bytes)
        );
    }
    let chunk_bytes = chunks.get(&0).map_or(0, Vec::len);
    let manifest = Manifest::describe(pipeline, &bytes, chunk_bytes, &publisher(), "rollback");
    // The same chunks must be what this manifest describes (sizes included).
    manifest.assemble(&chunks).with_context(|| format!("version {digest} is not intact in the topic"))?;
    check_loadable(&bytes)?;
    let writer = access.writer()?;
    let partition = writer.partition_for(pipeline)?;
    let key = Key::Manifest { pipeline: pipeline.to_owned() }.render();
    writer
        .write_all(partition, &[(key, Some(&manifest.to_json()))], ACK_WAIT)
        .context("writing the manifest failed")?;
    Ok(manifest)
}

/// The versions the topic holds for `pipeline`, for people: the current manifest,
/// then every digest with chunks (size and chunk count).
pub fn listing(catalog: &Catalog) -> String {
    let mut out = String::new();
    match catalog.newest() {
        Some(entry) => match &entry.manifest {
            Ok(m) => out.push_str(&format!("current: {}\n", m.summary())),
            Err(refusal) => out.push_str(&format!("current: an unusable manifest ({refusal})\n")),
        },
        None => out.push_str("current: none (hosts run their config's component)\n"),
    }
    out.push_str("versions with chunks in the topic:\n");
    for digest in catalog.digests() {
        let chunks: BTreeMap<u32, _> = catalog.chunks_of(&digest);
        let complete = chunks.keys().max().is_some_and(|last| *last as usize + 1 == chunks.len());
        out.push_str(&format!(
            "  {digest}  {} chunk(s){}\n",
            chunks.len(),
            if complete { "" } else { " (incomplete: cannot be rolled back to)" }
        ));
    }
    out
}

/// The default chunk size, for the command line.
pub const fn default_chunk_bytes() -> usize {
    DEFAULT_CHUNK_BYTES
}
