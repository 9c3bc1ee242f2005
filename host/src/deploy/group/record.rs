//! The records of the components topic, and the pure rules for them: keys, the
//! manifest and member report formats, cutting a component into chunks and putting
//! it back together with every check a reader must make.
//!
//! Every key names its [`Scope`]: the environment (`[fleet] environment`) and the
//! pipeline. A host reads only its own environment's records.
//!
//! | key | value |
//! |---|---|
//! | `chunk/<env>/<pipeline>/<digest>/<index>` | bytes `index × chunk_bytes ..` of the component |
//! | `version/<env>/<pipeline>/<sequence>/<digest>` | a [`Manifest`] (JSON): a version the pipeline should run, signed |
//! | `member/<env>/<pipeline>/<client-id>` | a [`MemberReport`] (JSON), or a tombstone when the member stopped |
//!
//! Chunk keys are unique per digest and manifest keys per sequence, so compaction
//! keeps every version until `ferry versions --group --prune` writes tombstones
//! for it, and keeps only the newest report of each member. The version a pipeline
//! should run is the acceptable manifest of highest [`Rank`] (sequence, then
//! digest), wherever it is in the log: an old manifest written again never
//! outranks a newer one.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::signing::SignatureRefusal;
use crate::sandbox::digest_of;

/// The manifest format this host writes and reads for a version to run.
pub const MANIFEST_FORMAT: u32 = 2;

/// The format of a shadow manifest (`shadow`, `shadow-promote`, `shadow-discard`):
/// newer than [`MANIFEST_FORMAT`], so a host that knows nothing of shadows refuses
/// one as unreadable instead of running the shadow version live.
pub const SHADOW_MANIFEST_FORMAT: u32 = 3;

/// What a manifest asks of the group's hosts, from its `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `deploy` or `rollback`: run this version live.
    Run,
    /// `shadow`: run this version as the shadow of the live one.
    Shadow,
    /// `shadow-promote`: make this version (the shadow) live.
    Promote,
    /// `shadow-discard`: drop this version, the shadow.
    Discard,
}

impl Action {
    /// The action a manifest's `action` names; `None` for one this host does not know.
    pub fn parse(action: &str) -> Option<Self> {
        match action {
            "deploy" | "rollback" => Some(Action::Run),
            "shadow" => Some(Action::Shadow),
            "shadow-promote" => Some(Action::Promote),
            "shadow-discard" => Some(Action::Discard),
            _ => None,
        }
    }

    /// The word written into manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Run => "deploy",
            Action::Shadow => "shadow",
            Action::Promote => "shadow-promote",
            Action::Discard => "shadow-discard",
        }
    }

    /// Whether the version it names runs live after it.
    pub fn is_live(self) -> bool {
        matches!(self, Action::Run | Action::Promote)
    }

    /// The manifest format it is written in.
    pub fn format(self) -> u32 {
        if matches!(self, Action::Run) { MANIFEST_FORMAT } else { SHADOW_MANIFEST_FORMAT }
    }
}

/// Default chunk size: half the broker's default `message.max.bytes` (1 MB), so a
/// chunk with its key and headers fits everywhere by a wide margin.
pub const DEFAULT_CHUNK_BYTES: usize = 512 << 10;

/// Whether `s` may be an environment or pipeline name: letters, digits, `-_.`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whose records: one pipeline of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// `[fleet] environment`.
    pub environment: String,
    /// The pipeline's name.
    pub pipeline: String,
}

impl Scope {
    /// The scope of `pipeline` in `environment`.
    pub fn new(environment: &str, pipeline: &str) -> Self {
        Self { environment: environment.to_owned(), pipeline: pipeline.to_owned() }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.environment, self.pipeline)
    }
}

/// What a record of the components topic is, from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// One chunk of one version of a pipeline's component.
    Chunk {
        /// Whose.
        scope: Scope,
        /// The sha256 of the whole component.
        digest: String,
        /// Its place, from 0.
        index: u32,
    },
    /// One version a pipeline should run.
    Manifest {
        /// Whose.
        scope: Scope,
        /// Its sequence number (the body must say the same).
        sequence: u64,
        /// Its digest (the body must say the same).
        digest: String,
    },
    /// The version one member of a pipeline's group runs.
    Member {
        /// Whose.
        scope: Scope,
        /// The member's Kafka `client.id`.
        client_id: String,
    },
}

impl Key {
    /// Parses a key; `None` for anything this host does not know (ignored).
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.splitn(4, '/');
        let kind = parts.next()?;
        let environment = parts.next().filter(|e| is_name(e))?;
        let pipeline = parts.next().filter(|p| is_name(p))?;
        let scope = Scope::new(environment, pipeline);
        let rest = parts.next()?;
        fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
        }
        match kind {
            "version" => {
                let (sequence, digest) = rest.split_once('/')?;
                is_digest(digest).then_some(())?;
                Some(Key::Manifest { scope, sequence: number(sequence)?, digest: digest.to_owned() })
            }
            "member" if !rest.is_empty() => Some(Key::Member { scope, client_id: rest.to_owned() }),
            "chunk" => {
                let (digest, index) = rest.split_once('/')?;
                is_digest(digest).then_some(())?;
                Some(Key::Chunk { scope, digest: digest.to_owned(), index: number(index)? })
            }
            _ => None,
        }
    }

    /// The key as written to the topic.
    pub fn render(&self) -> String {
        match self {
            Key::Chunk { scope, digest, index } => format!("chunk/{scope}/{digest}/{index}"),
            Key::Manifest { scope, sequence, digest } => format!("version/{scope}/{sequence}/{digest}"),
            Key::Member { scope, client_id } => format!("member/{scope}/{client_id}"),
        }
    }

    /// Whose record it is.
    pub fn scope(&self) -> &Scope {
        match self {
            Key::Chunk { scope, .. } | Key::Manifest { scope, .. } | Key::Member { scope, .. } => scope,
        }
    }
}

/// Whether `s` looks like a sha256 digest in lower-case hex, as [`digest_of`] writes it.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How manifests are ordered: by sequence, then digest (two publishers that raced
/// to the same sequence end on the same one everywhere).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// The sequence number.
    pub sequence: u64,
    /// The digest.
    pub digest: String,
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sequence {} ({})", self.sequence, &self.digest[..self.digest.len().min(16)])
    }
}

/// A manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The id of the key that signed (see [`super::signing`]).
    pub key_id: String,
    /// The Ed25519 signature over [`super::signing::signed_bytes`], hex.
    pub ed25519: String,
}

/// One version a pipeline should run: which chunks make it up, who published it,
/// and the signature over all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The environment; must match the key's.
    pub environment: String,
    /// The pipeline; must match the key's.
    pub pipeline: String,
    /// Higher than every earlier manifest of the pipeline in this environment.
    pub sequence: u64,
    /// sha256 of the whole component, lower-case hex.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_bytes: u64,
    /// How many chunks.
    pub chunks: u32,
    /// Who published it (`user@host`), as the publisher says (covered by the signature).
    pub published_by: String,
    /// When, in ms since the epoch, by the publisher's clock.
    pub published_at_unix_ms: u64,
    /// `deploy`, or `rollback` when an earlier version is published again; the
    /// shadow actions of [`Action`].
    pub action: String,
    /// The partition holding its chunks.
    pub chunk_partition: i32,
    /// The offset of each chunk there, by index; empty when the chunks are to be
    /// found by their keys in the index partition (a topic of one partition).
    pub chunk_offsets: Vec<i64>,
    /// Absent when published without `--sign-with`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// Why a manifest or its chunks cannot be used. The running version keeps going.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The manifest is not JSON of the expected shape.
    #[error("the manifest is unreadable: {0}")]
    BadManifest(String),
    /// The manifest contradicts itself or its key.
    #[error("the manifest is inconsistent: {0}")]
    Inconsistent(String),
    /// A chunk named by the manifest is not in the topic.
    #[error("chunk {index} of {chunks} is missing from the topic (truncated upload, or compacted away)")]
    MissingChunk {
        /// Which.
        index: u32,
        /// Of how many.
        chunks: u32,
    },
    /// A chunk has the wrong size.
    #[error("chunk {index} of {chunks} is {actual} bytes, the manifest says {expected}")]
    ChunkSize {
        /// Which.
        index: u32,
        /// Of how many.
        chunks: u32,
        /// Its size.
        actual: usize,
        /// The size it must have.
        expected: u64,
    },
    /// The chunks put together are not the component the manifest names.
    #[error("the chunks put together have digest {actual}, the manifest names {expected}")]
    DigestMismatch {
        /// The manifest's.
        expected: String,
        /// The bytes'.
        actual: String,
    },
    /// Larger than this host accepts.
    #[error("the manifest names a {size}-byte component; this host accepts at most {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Written under this pipeline's key, but for another environment or pipeline
    /// (a manifest copied from elsewhere).
    #[error("the manifest is for {actual}, not {expected}")]
    WrongScope {
        /// The key's.
        expected: Scope,
        /// The manifest's.
        actual: Scope,
    },
    /// Not signed by a key this host trusts, or not over these contents.
    #[error(transparent)]
    Signature(#[from] SignatureRefusal),
    /// A manifest that does not outrank the newest one this host took: a replay of
    /// an older version, or the loser of two publishers racing.
    #[error("{rank} is not newer than {newest}, which this host took already (a replay of an older manifest?)")]
    Stale {
        /// The manifest's.
        rank: Rank,
        /// The newest taken.
        newest: Rank,
    },
}

impl Refusal {
    /// A short name of the kind, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadManifest(_) | Refusal::Inconsistent(_) | Refusal::TooLarge { .. } => "manifest",
            Refusal::MissingChunk { .. } | Refusal::ChunkSize { .. } | Refusal::DigestMismatch { .. } => "integrity",
            Refusal::WrongScope { .. } => "scope",
            Refusal::Signature(_) => "signature",
            Refusal::Stale { .. } => "stale",
        }
    }
}

impl Manifest {
    /// An unsigned manifest for `bytes` cut into chunks of `chunk_bytes`.
    pub fn describe(
        scope: &Scope,
        sequence: u64,
        bytes: &[u8],
        chunk_bytes: usize,
        published_by: &str,
        action: &str,
    ) -> Self {
        Manifest {
            format: Action::parse(action).map_or(MANIFEST_FORMAT, Action::format),
            environment: scope.environment.clone(),
            pipeline: scope.pipeline.clone(),
            sequence,
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            chunk_bytes: chunk_bytes as u64,
            chunks: chunk_count(bytes.len(), chunk_bytes),
            published_by: published_by.to_owned(),
            published_at_unix_ms: now_unix_ms(),
            action: action.to_owned(),
            chunk_partition: 0,
            chunk_offsets: Vec::new(),
            signature: None,
        }
    }

    /// The manifest with its chunks at `offsets` of `partition`.
    pub fn located(self, partition: i32, offsets: Vec<i64>) -> Self {
        Self { chunk_partition: partition, chunk_offsets: offsets, ..self }
    }

    /// The key it is written under.
    pub fn key(&self) -> Key {
        Key::Manifest { scope: self.scope(), sequence: self.sequence, digest: self.digest.clone() }
    }

    /// Whose it says it is.
    pub fn scope(&self) -> Scope {
        Scope::new(&self.environment, &self.pipeline)
    }

    /// What it asks of the hosts (a manifest that passed [`Manifest::parse`] has one).
    pub fn kind(&self) -> Action {
        Action::parse(&self.action).unwrap_or(Action::Run)
    }

    /// Where it stands among the pipeline's manifests.
    pub fn rank(&self) -> Rank {
        Rank { sequence: self.sequence, digest: self.digest.clone() }
    }

    /// Parses and checks a manifest read under `key` (a [`Key::Manifest`]): its
    /// shape, its scope and the key's sequence and digest. The signature is the
    /// caller's to check ([`super::signing::TrustedKeys`]).
    pub fn parse(key: &Key, value: &[u8], limit: usize) -> Result<Self, Refusal> {
        let manifest: Manifest = serde_json::from_slice(value).map_err(|e| Refusal::BadManifest(e.to_string()))?;
        manifest.check(key, limit)?;
        Ok(manifest)
    }

    fn check(&self, key: &Key, limit: usize) -> Result<(), Refusal> {
        let bad = |why: String| Err(Refusal::Inconsistent(why));
        let Some(action) = Action::parse(&self.action) else {
            return Err(Refusal::BadManifest(format!("action `{}` is not one this host knows", self.action)));
        };
        if self.format != action.format() {
            return Err(Refusal::BadManifest(format!(
                "format {} (this host reads format {} for action `{}`)",
                self.format,
                action.format(),
                self.action
            )));
        }
        if self.scope() != *key.scope() {
            return Err(Refusal::WrongScope { expected: key.scope().clone(), actual: self.scope() });
        }
        if !is_digest(&self.digest) {
            return bad(format!("`{}` is not a sha256 digest", self.digest));
        }
        if let Key::Manifest { sequence, digest, .. } = key
            && (*sequence != self.sequence || *digest != self.digest)
        {
            return bad(format!(
                "its key names sequence {sequence} and {digest}, its contents sequence {} and {}",
                self.sequence, self.digest
            ));
        }
        if self.size > limit as u64 {
            return Err(Refusal::TooLarge { size: self.size, limit });
        }
        if self.size == 0 || self.chunk_bytes == 0 {
            return bad("a component has at least one byte, and chunks too".to_owned());
        }
        let expected = self.size.div_ceil(self.chunk_bytes);
        if u64::from(self.chunks) != expected {
            return bad(format!(
                "{} chunks of {} bytes cannot hold {} bytes (that takes {expected})",
                self.chunks, self.chunk_bytes, self.size
            ));
        }
        let located = self.chunk_offsets.len() == self.chunks as usize;
        if self.chunk_partition < 0
            || !(self.chunk_offsets.is_empty() || located)
            || self.chunk_offsets.iter().any(|o| *o < 0)
        {
            return bad(format!(
                "it places its {} chunks at {} offsets of partition {}",
                self.chunks,
                self.chunk_offsets.len(),
                self.chunk_partition
            ));
        }
        Ok(())
    }

    /// The size chunk `index` must have.
    pub fn chunk_size(&self, index: u32) -> u64 {
        if index + 1 < self.chunks { self.chunk_bytes } else { self.size - self.chunk_bytes * u64::from(index) }
    }

    /// Puts the component together from its chunks (by index), checking each
    /// chunk's size and the digest over the whole.
    pub fn assemble(&self, chunks: &BTreeMap<u32, Vec<u8>>) -> Result<Vec<u8>, Refusal> {
        let mut bytes = Vec::with_capacity(self.size as usize);
        for index in 0..self.chunks {
            let chunk = chunks.get(&index).ok_or(Refusal::MissingChunk { index, chunks: self.chunks })?;
            let expected = self.chunk_size(index);
            if chunk.len() as u64 != expected {
                return Err(Refusal::ChunkSize { index, chunks: self.chunks, actual: chunk.len(), expected });
            }
            bytes.extend_from_slice(chunk);
        }
        let actual = digest_of(&bytes);
        if actual != self.digest {
            return Err(Refusal::DigestMismatch { expected: self.digest.clone(), actual });
        }
        Ok(bytes)
    }

    /// The manifest as written to the topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serializes")
    }

    /// One line for logs and the slot's history.
    pub fn summary(&self) -> String {
        let signed = match &self.signature {
            Some(s) => format!("signed by key {}", s.key_id),
            None => "unsigned".to_owned(),
        };
        format!(
            "{} #{} of {} bytes in {} chunks, {} by {} at {} ms, {signed}",
            self.action,
            self.sequence,
            self.size,
            self.chunks,
            self.digest,
            self.published_by,
            self.published_at_unix_ms
        )
    }
}

/// How many chunks of `chunk_bytes` hold `size` bytes.
pub fn chunk_count(size: usize, chunk_bytes: usize) -> u32 {
    u32::try_from(size.div_ceil(chunk_bytes.max(1))).expect("fewer than 2^32 chunks")
}

/// `bytes` cut into chunks of `chunk_bytes` (the last one shorter), with their indexes.
pub fn split(bytes: &[u8], chunk_bytes: usize) -> impl Iterator<Item = (u32, &[u8])> {
    bytes.chunks(chunk_bytes.max(1)).enumerate().map(|(i, c)| (i as u32, c))
}

/// What one member of a pipeline's group says it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The digest its batches run on.
    pub digest: String,
    /// The digest its next batch runs on (differs from `digest` until it switches).
    #[serde(default)]
    pub deployed: String,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Since when, in ms since the epoch.
    pub since_unix_ms: u64,
    /// The version a rollback on this member goes back to (`ferry versions --group
    /// --prune` keeps it).
    #[serde(default)]
    pub previous: String,
    /// Why it does not run the topic's newest version, if it does not: the refusal,
    /// and whether it retries.
    #[serde(default)]
    pub behind: Option<String>,
    /// The shadow version it runs beside its live one, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shadow: String,
}

impl MemberReport {
    /// Parses a report; `None` if it is not one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }

    /// The report as written to the topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serializes")
    }
}

/// Milliseconds since the epoch now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn scope() -> Scope {
        Scope::new("prod", "p")
    }

    fn describe(bytes: &[u8], chunk: usize) -> Manifest {
        Manifest::describe(&scope(), 1, bytes, chunk, "me@here", "deploy")
    }

    fn parse(m: &Manifest, limit: usize) -> Result<Manifest, Refusal> {
        Manifest::parse(&m.key(), &m.to_json(), limit)
    }

    fn chunks_of(bytes: &[u8], chunk_bytes: usize) -> BTreeMap<u32, Vec<u8>> {
        split(bytes, chunk_bytes).map(|(i, c)| (i, c.to_vec())).collect()
    }

    proptest! {
        #[test]
        fn split_then_assemble_gives_the_bytes_back(bytes in proptest::collection::vec(any::<u8>(), 1..5000), chunk in 1usize..700) {
            let manifest = describe(&bytes, chunk);
            let chunks = chunks_of(&bytes, chunk);
            prop_assert_eq!(chunks.len() as u32, manifest.chunks);
            let parsed = parse(&manifest, 1 << 20).unwrap();
            prop_assert_eq!(&parsed, &manifest);
            prop_assert_eq!(parsed.assemble(&chunks).unwrap(), bytes);
        }

        #[test]
        fn any_changed_byte_is_caught(bytes in proptest::collection::vec(any::<u8>(), 1..3000), chunk in 1usize..500, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let manifest = describe(&bytes, chunk);
            let mut chunks = chunks_of(&bytes, chunk);
            let at = at.index(bytes.len());
            let slot = chunks.get_mut(&((at / chunk) as u32)).unwrap();
            slot[at % chunk] ^= flip;
            let refused = matches!(manifest.assemble(&chunks), Err(Refusal::DigestMismatch { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn swapped_chunks_are_caught(bytes in proptest::collection::vec(any::<u8>(), 2..3000), chunk in 1usize..500, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
            let manifest = describe(&bytes, chunk);
            let mut chunks = chunks_of(&bytes, chunk);
            let (a, b) = (a.index(chunks.len()) as u32, b.index(chunks.len()) as u32);
            prop_assume!(chunks[&a] != chunks[&b]);
            let (ca, cb) = (chunks[&a].clone(), chunks[&b].clone());
            chunks.insert(a, cb);
            chunks.insert(b, ca);
            prop_assert!(manifest.assemble(&chunks).is_err());
        }

        #[test]
        fn any_dropped_or_cut_chunk_is_caught(bytes in proptest::collection::vec(any::<u8>(), 2..3000), chunk in 1usize..500, which in any::<prop::sample::Index>(), cut in any::<bool>()) {
            let manifest = describe(&bytes, chunk);
            let mut chunks = chunks_of(&bytes, chunk);
            let index = which.index(chunks.len()) as u32;
            if cut {
                chunks.get_mut(&index).unwrap().pop();
                let refused = matches!(manifest.assemble(&chunks), Err(Refusal::ChunkSize { index: i, .. }) if i == index);
                prop_assert!(refused);
            } else {
                chunks.remove(&index);
                let refused = matches!(manifest.assemble(&chunks), Err(Refusal::MissingChunk { index: i, .. }) if i == index);
                prop_assert!(refused);
            }
        }

        #[test]
        fn keys_round_trip(env in "[a-zA-Z0-9._-]{1,20}", pipeline in "[a-zA-Z0-9._-]{1,20}", index in any::<u32>(), sequence in any::<u64>(), client in "[ -~]{1,40}") {
            let digest = digest_of(pipeline.as_bytes());
            let scope = Scope::new(&env, &pipeline);
            for key in [
                Key::Chunk { scope: scope.clone(), digest: digest.clone(), index },
                Key::Manifest { scope: scope.clone(), sequence, digest: digest.clone() },
                Key::Member { scope: scope.clone(), client_id: client.clone() },
            ] {
                prop_assert_eq!(Key::parse(&key.render()), Some(key));
            }
        }
    }

    #[test]
    fn unknown_and_malformed_keys_are_ignored() {
        let digest = digest_of(b"x");
        for key in [
            "".to_owned(),
            "version".into(),
            "version/e/p".into(),
            format!("version/p/{digest}"),
            format!("version/e/p/1/{digest}/x"),
            format!("version/e/p/-1/{digest}"),
            "chunk/e/p/abc/0".into(),
            "chunk/e/p".into(),
            "member/e/p/".into(),
            "other/e/p/x".into(),
            format!("chunk/e/p/{digest}/-1"),
            format!("chunk/e/p/{digest}/"),
            format!("chunk/e p/p/{digest}/0"),
            format!("chunk//p/{digest}/0"),
        ] {
            assert_eq!(Key::parse(&key), None, "{key}");
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused_with_the_reason() {
        let good = describe(&[7; 1000], 300);
        assert!(matches!(parse(&good, 999), Err(Refusal::TooLarge { size: 1000, limit: 999 })));
        let few = Manifest { chunks: 3, ..good.clone() };
        assert!(matches!(parse(&few, 1 << 20), Err(Refusal::Inconsistent(why)) if why.contains("takes 4")));
        let future = Manifest { format: 4, ..good.clone() };
        assert!(matches!(parse(&future, 1 << 20), Err(Refusal::BadManifest(why)) if why.contains("format 4")));
        // A shadow action in the format of a version to run: a host that knows no
        // shadows would run it live, so it is never written, nor taken.
        let shadow_as_run = Manifest { action: "shadow".into(), ..good.clone() };
        assert!(matches!(parse(&shadow_as_run, 1 << 20), Err(Refusal::BadManifest(why)) if why.contains("format 2")));
        let shadow = Manifest { action: "shadow".into(), format: SHADOW_MANIFEST_FORMAT, ..good.clone() };
        assert_eq!(parse(&shadow, 1 << 20).map(|m| m.kind()), Ok(Action::Shadow));
        let unknown = Manifest { action: "canary".into(), ..good.clone() };
        assert!(matches!(parse(&unknown, 1 << 20), Err(Refusal::BadManifest(why)) if why.contains("canary")));
        let odd = Manifest { digest: "sha256:zz".into(), ..good.clone() };
        assert!(matches!(Manifest::parse(&good.key(), &odd.to_json(), 1 << 20), Err(Refusal::Inconsistent(_))));
        assert!(matches!(Manifest::parse(&good.key(), b"{not json", 100), Err(Refusal::BadManifest(_))));
        // Under another key: another pipeline's or environment's, or another sequence.
        let staging = Manifest { environment: "staging".into(), ..good.clone() };
        let refused = Manifest::parse(&good.key(), &staging.to_json(), 1 << 20);
        assert!(matches!(&refused, Err(Refusal::WrongScope { .. })), "{refused:?}");
        assert!(refused.unwrap_err().to_string().contains("for staging/p, not prod/p"));
        let other = Manifest { pipeline: "q".into(), ..good.clone() };
        assert!(matches!(Manifest::parse(&good.key(), &other.to_json(), 1 << 20), Err(Refusal::WrongScope { .. })));
        let later = Manifest { sequence: 9, ..good.clone() };
        let refused = Manifest::parse(&good.key(), &later.to_json(), 1 << 20);
        assert!(matches!(refused, Err(Refusal::Inconsistent(why)) if why.contains("sequence 1")));
    }

    #[test]
    fn ranks_order_by_sequence_then_digest() {
        let a = describe(b"a", 10);
        let b = Manifest { sequence: 2, ..describe(b"b", 10) };
        assert!(b.rank() > a.rank());
        let c = Manifest { sequence: 2, ..describe(b"c", 10) };
        assert_eq!(b.rank() > c.rank(), b.digest > c.digest);
    }

    #[test]
    fn the_last_chunk_holds_the_rest() {
        let m = describe(&[1; 1001], 250);
        assert_eq!((m.chunks, m.chunk_size(0), m.chunk_size(3), m.chunk_size(4)), (5, 250, 250, 1));
    }
}
