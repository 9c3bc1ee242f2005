//! `ferry deploy --group`: publishing a version to the components topic, rolling
//! back to one published earlier, and listing what the topic holds.
//!
//! Nothing is written before the component is known to be one: a file that is not a
//! processor component is refused here, not by every host of the group. Each host
//! still checks it against its own grants and limits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::catalog::{Catalog, Judge};
use super::record::{Action, DEFAULT_CHUNK_BYTES, Key, Manifest, Scope, split};
use super::signing::{SecretKey, TrustedKeys};
use super::topic::{FetchError, Reader, TopicAccess, Writer};
use super::writer::INDEX_PARTITION;
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

/// Who publishes, and how they sign.
pub struct Publisher<'a> {
    /// The topic.
    pub access: &'a TopicAccess,
    /// The pipeline and environment.
    pub scope: Scope,
    /// The key to sign with; `None` publishes unsigned.
    pub key: Option<&'a SecretKey>,
    /// The keys whose manifests count when picking the next sequence number (the
    /// config's `[fleet] trusted_keys`); the signing key counts too.
    pub trusted: &'a TrustedKeys,
}

impl Publisher<'_> {
    /// The judge of the topic's manifests: the trusted keys and the signing key;
    /// with neither, every well-formed manifest counts.
    fn judge(&self) -> Judge {
        let mut trusted = self.trusted.clone();
        if let Some(key) = self.key {
            trusted.add(key.public().clone());
        }
        Judge { scope: self.scope.clone(), trusted, limit: MAX_COMPONENT_BYTES }
    }

    /// Reads what the topic holds for the scope (the index partition, or with
    /// `all` every partition); returns the reader positioned at the end too.
    fn read(&self, all: bool) -> anyhow::Result<(Catalog, Reader)> {
        let reader = if all { self.access.reader_of_all()? } else { self.access.reader()? };
        let mut catalog = Catalog::new(self.judge());
        reader.read_to_end(|read| {
            catalog.add(&read.key, read.value.as_deref(), read.at);
        })?;
        Ok((catalog, reader))
    }

    /// A manifest for `bytes`, whose chunks are at `offsets` of `partition`,
    /// numbered after every manifest that counts, and signed.
    fn manifest(
        &self,
        catalog: &Catalog,
        bytes: &[u8],
        chunk_bytes: usize,
        action: &str,
        partition: i32,
        offsets: Vec<i64>,
    ) -> anyhow::Result<Manifest> {
        let manifest =
            Manifest::describe(&self.scope, next_sequence(catalog)?, bytes, chunk_bytes, &publisher(), action)
                .located(partition, offsets);
        Ok(self.signed(manifest))
    }

    fn signed(&self, mut manifest: Manifest) -> Manifest {
        if let Some(key) = self.key {
            key.sign(&mut manifest);
        }
        manifest
    }

    /// Writes `manifest`, then reads on to tell whether another publisher's manifest
    /// outranks it (two publishing at once): the error says so.
    fn write_manifest(
        &self,
        writer: &Writer,
        mut reader: Reader,
        mut catalog: Catalog,
        manifest: &Manifest,
    ) -> anyhow::Result<()> {
        write_manifest(writer, manifest)?;
        reader.refresh()?;
        reader.read_to_end(|read| {
            catalog.add(&read.key, read.value.as_deref(), read.at);
        })?;
        match catalog.highest() {
            Some(newest) if newest > manifest.rank() => bail!(
                "another publisher wrote {newest} (digest {}) at the same time, and it outranks this one ({}): hosts \
                 take that; publish again if this one should win",
                newest.digest,
                manifest.rank()
            ),
            _ => Ok(()),
        }
    }
}

/// The sequence number after every manifest in `catalog` that counts.
fn next_sequence(catalog: &Catalog) -> anyhow::Result<u64> {
    match catalog.highest() {
        None => Ok(1),
        Some(rank) => {
            rank.sequence.checked_add(1).context("the topic's newest manifest has the largest sequence number")
        }
    }
}

/// Writes a version's chunks to the scope's chunk partition and waits for every
/// acknowledgement. Returns the partition and each chunk's offset.
pub fn write_chunks(
    writer: &Writer,
    scope: &Scope,
    digest: &str,
    bytes: &[u8],
    chunk_bytes: usize,
) -> anyhow::Result<(i32, Vec<i64>)> {
    let partition = writer.chunk_partition(scope)?;
    let keys: Vec<String> = split(bytes, chunk_bytes)
        .map(|(index, _)| Key::Chunk { scope: scope.clone(), digest: digest.to_owned(), index }.render())
        .collect();
    let chunks: Vec<(String, Option<&[u8]>)> =
        keys.into_iter().zip(split(bytes, chunk_bytes).map(|(_, c)| Some(c))).collect();
    let offsets =
        writer.write_all(partition, &chunks, ACK_WAIT).context("writing the chunks failed; no manifest was written")?;
    Ok((partition, offsets))
}

/// Writes a manifest to the index partition and waits for the acknowledgement.
pub fn write_manifest(writer: &Writer, manifest: &Manifest) -> anyhow::Result<()> {
    let key = manifest.key().render();
    writer
        .write_all(INDEX_PARTITION, &[(key, Some(&manifest.to_json()))], ACK_WAIT)
        .context("writing the manifest failed")?;
    Ok(())
}

/// Publishes `bytes` as the scope's newest version: every chunk, and once all are
/// acknowledged, the manifest (numbered after every manifest in the topic that
/// counts, saying where the chunks are, and signed). Returns the manifest written.
pub fn publish(publisher: &Publisher<'_>, bytes: &[u8], chunk_bytes: usize) -> anyhow::Result<Manifest> {
    publish_as(publisher, bytes, chunk_bytes, Action::Run)
}

/// Publishes `bytes` as the scope's shadow version, as [`publish`] publishes a
/// version: every host of the group runs it beside its live version, compared and
/// never published, until [`decide_shadow`] promotes or discards it.
pub fn publish_shadow(publisher: &Publisher<'_>, bytes: &[u8], chunk_bytes: usize) -> anyhow::Result<Manifest> {
    publish_as(publisher, bytes, chunk_bytes, Action::Shadow)
}

fn publish_as(publisher: &Publisher<'_>, bytes: &[u8], chunk_bytes: usize, action: Action) -> anyhow::Result<Manifest> {
    if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk_bytes) {
        bail!("--chunk-bytes must be between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES}, got {chunk_bytes}");
    }
    let sandbox = check_loadable(bytes)?;
    publisher.access.ensure_topic(sandbox.runtime());
    let (catalog, reader) = publisher.read(false)?;
    let writer = publisher.access.writer()?;
    let (partition, offsets) = write_chunks(&writer, &publisher.scope, &digest_of(bytes), bytes, chunk_bytes)?;
    let manifest = publisher.manifest(&catalog, bytes, chunk_bytes, action.as_str(), partition, offsets)?;
    publisher.write_manifest(&writer, reader, catalog, &manifest)?;
    Ok(manifest)
}

/// Promotes (`Action::Promote`) or discards (`Action::Discard`) the scope's
/// shadow: a manifest naming the shadow's version and chunks, numbered after
/// every other and signed. Every host promotes its shadow (a host that does not
/// run it deploys the version from its chunks) or drops it.
pub fn decide_shadow(by: &Publisher<'_>, decision: Action) -> anyhow::Result<Manifest> {
    if !matches!(decision, Action::Promote | Action::Discard) {
        bail!("a shadow is promoted or discarded, not `{}`", decision.as_str());
    }
    let (catalog, reader) = by.read(false)?;
    let Some(shadow) = catalog.shadow() else {
        bail!("the components topic names no shadow version of {} to {}", by.scope, verb(decision));
    };
    let manifest = by.signed(Manifest {
        format: decision.format(),
        sequence: next_sequence(&catalog)?,
        published_by: publisher(),
        published_at_unix_ms: super::record::now_unix_ms(),
        action: decision.as_str().to_owned(),
        signature: None,
        ..shadow.clone()
    });
    let writer = by.access.writer()?;
    by.write_manifest(&writer, reader, catalog, &manifest)?;
    Ok(manifest)
}

fn verb(decision: Action) -> &'static str {
    if decision == Action::Promote { "promote" } else { "discard" }
}

/// Everything the topic holds for `judge`'s scope: the index partition's records,
/// or with `all` every partition's (chunk keys included).
pub fn catalog(access: &TopicAccess, judge: Judge, all: bool) -> anyhow::Result<Catalog> {
    let reader = if all { access.reader_of_all()? } else { access.reader()? };
    let mut catalog = Catalog::new(judge);
    reader.read_to_end(|read| {
        catalog.add(&read.key, read.value.as_deref(), read.at);
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

/// Rolls the scope back to the version `digest` (or a unique prefix of it): its
/// chunks, still in the topic, are read back and checked (count, sizes, digest,
/// loadable) before a manifest naming it is written, numbered after every other
/// (hosts take only a manifest newer than the one they run) and signed.
pub fn rollback(publisher: &Publisher<'_>, digest: &str) -> anyhow::Result<Manifest> {
    let (catalog, reader) = publisher.read(true)?;
    let digest = resolve(&catalog, digest)?;
    let locations = catalog.chunks_of(&digest);
    let count = locations.keys().max().map_or(0, |last| last + 1);
    if let Some(gap) = (0..count).find(|i| !locations.contains_key(i)) {
        bail!("chunk {gap} of version {digest} is missing from the topic: it cannot be rolled back to");
    }
    let scope = publisher.scope.clone();
    let expected = |index| Key::Chunk { scope: scope.clone(), digest: digest.clone(), index };
    let chunks = match publisher.access.fetch(&expected, &locations, count, &|| false) {
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
    let partition = locations.values().next().map_or(INDEX_PARTITION, |at| at.partition);
    if locations.values().any(|at| at.partition != partition) {
        bail!("the chunks of version {digest} are spread over partitions (the topic grew): publish it again instead");
    }
    let offsets = locations.values().map(|at| at.offset).collect();
    let manifest = publisher.manifest(&catalog, &bytes, chunk_bytes, "rollback", partition, offsets)?;
    // The same chunks must be what this manifest describes (sizes included).
    manifest.assemble(&chunks).with_context(|| format!("version {digest} is not intact in the topic"))?;
    check_loadable(&bytes)?;
    let writer = publisher.access.writer()?;
    publisher.write_manifest(&writer, reader, catalog, &manifest)?;
    Ok(manifest)
}

/// The versions the topic holds for a scope, for people: the current manifest,
/// the manifests refused (and why), then every digest with chunks.
pub fn listing(catalog: &Catalog) -> String {
    let mut out = String::new();
    match catalog.newest() {
        Some(m) => out.push_str(&format!("current: {}\n", m.summary())),
        None => out.push_str("current: none (hosts run their config's component)\n"),
    }
    if let Some(m) = catalog.shadow() {
        out.push_str(&format!("shadow: {}\n", m.summary()));
    }
    if catalog.judge().trusted.is_empty() {
        out.push_str("note: no trusted keys given (--config with [fleet] trusted_keys): signatures were not checked\n");
    }
    let refused: Vec<_> =
        catalog.entries().into_iter().filter_map(|e| e.manifest.as_ref().err().map(|r| (e.at, r))).collect();
    if !refused.is_empty() {
        out.push_str("manifests hosts refuse:\n");
        for (at, refusal) in refused {
            out.push_str(&format!("  at {}:{}: {refusal}\n", at.partition, at.offset));
        }
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
