//! The records of the components topic, and the pure rules for them: keys, the
//! manifest and member report formats, cutting a component into chunks and putting
//! it back together with every check a reader must make.
//!
//! | key | value |
//! |---|---|
//! | `chunk/<pipeline>/<digest>/<index>` | bytes `index × chunk_bytes ..` of the component |
//! | `version/<pipeline>` | a [`Manifest`] (JSON): the version the pipeline should run |
//! | `member/<pipeline>/<client-id>` | a [`MemberReport`] (JSON), or a tombstone when the member stopped |
//!
//! A version's chunks are keyed by its digest, so compaction keeps every version's
//! chunks (a rollback rewrites only the manifest) and keeps only the newest manifest
//! and report of each key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sandbox::digest_of;

/// The manifest format this host writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Default chunk size: half the broker's default `message.max.bytes` (1 MB), so a
/// chunk with its key and headers fits everywhere by a wide margin.
pub const DEFAULT_CHUNK_BYTES: usize = 512 << 10;

/// What a record of the components topic is, from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// One chunk of one version of a pipeline's component.
    Chunk {
        /// The pipeline.
        pipeline: String,
        /// The sha256 of the whole component.
        digest: String,
        /// Its place, from 0.
        index: u32,
    },
    /// The version a pipeline should run.
    Manifest {
        /// The pipeline.
        pipeline: String,
    },
    /// The version one member of a pipeline's group runs.
    Member {
        /// The pipeline.
        pipeline: String,
        /// The member's Kafka `client.id`.
        client_id: String,
    },
}

impl Key {
    /// Parses a key; `None` for anything this host does not know (ignored).
    pub fn parse(key: &str) -> Option<Self> {
        let mut parts = key.splitn(3, '/');
        let kind = parts.next()?;
        let pipeline = parts.next().filter(|p| !p.is_empty())?.to_owned();
        let rest = parts.next();
        match (kind, rest) {
            ("version", None) => Some(Key::Manifest { pipeline }),
            ("member", Some(client_id)) if !client_id.is_empty() => {
                Some(Key::Member { pipeline, client_id: client_id.to_owned() })
            }
            ("chunk", Some(rest)) => {
                let (digest, index) = rest.split_once('/')?;
                if !is_digest(digest) || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Key::Chunk { pipeline, digest: digest.to_owned(), index: index.parse().ok()? })
            }
            _ => None,
        }
    }

    /// The key as written to the topic.
    pub fn render(&self) -> String {
        match self {
            Key::Chunk { pipeline, digest, index } => format!("chunk/{pipeline}/{digest}/{index}"),
            Key::Manifest { pipeline } => format!("version/{pipeline}"),
            Key::Member { pipeline, client_id } => format!("member/{pipeline}/{client_id}"),
        }
    }

    /// The pipeline the record concerns.
    pub fn pipeline(&self) -> &str {
        match self {
            Key::Chunk { pipeline, .. } | Key::Manifest { pipeline } | Key::Member { pipeline, .. } => pipeline,
        }
    }
}

/// Whether `s` looks like a sha256 digest in lower-case hex, as [`digest_of`] writes it.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The version a pipeline should run: which chunks make it up, and who published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The pipeline; must match the key's.
    pub pipeline: String,
    /// sha256 of the whole component, lower-case hex.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Size of every chunk but the last.
    pub chunk_bytes: u64,
    /// How many chunks.
    pub chunks: u32,
    /// Who published it (`user@host`), as the publisher says.
    pub published_by: String,
    /// When, in ms since the epoch, by the publisher's clock.
    pub published_at_unix_ms: u64,
    /// `deploy`, or `rollback` when an earlier version's manifest was written again.
    pub action: String,
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
}

impl Manifest {
    /// A manifest for `bytes` cut into chunks of `chunk_bytes`.
    pub fn describe(pipeline: &str, bytes: &[u8], chunk_bytes: usize, published_by: &str, action: &str) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            pipeline: pipeline.to_owned(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            chunk_bytes: chunk_bytes as u64,
            chunks: chunk_count(bytes.len(), chunk_bytes),
            published_by: published_by.to_owned(),
            published_at_unix_ms: now_unix_ms(),
            action: action.to_owned(),
        }
    }

    /// Parses and checks a manifest read under the key of `pipeline`.
    pub fn parse(pipeline: &str, value: &[u8], limit: usize) -> Result<Self, Refusal> {
        let manifest: Manifest = serde_json::from_slice(value).map_err(|e| Refusal::BadManifest(e.to_string()))?;
        manifest.check(pipeline, limit)?;
        Ok(manifest)
    }

    fn check(&self, pipeline: &str, limit: usize) -> Result<(), Refusal> {
        let bad = |why: String| Err(Refusal::Inconsistent(why));
        if self.format != MANIFEST_FORMAT {
            return Err(Refusal::BadManifest(format!(
                "format {} (this host reads format {MANIFEST_FORMAT})",
                self.format
            )));
        }
        if self.pipeline != pipeline {
            return bad(format!("it names pipeline `{}` under the key of `{pipeline}`", self.pipeline));
        }
        if !is_digest(&self.digest) {
            return bad(format!("`{}` is not a sha256 digest", self.digest));
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
        format!(
            "{} of {} bytes in {} chunks, {} by {} at {} ms",
            self.action, self.size, self.chunks, self.digest, self.published_by, self.published_at_unix_ms
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

    fn chunks_of(bytes: &[u8], chunk_bytes: usize) -> BTreeMap<u32, Vec<u8>> {
        split(bytes, chunk_bytes).map(|(i, c)| (i, c.to_vec())).collect()
    }

    proptest! {
        #[test]
        fn split_then_assemble_gives_the_bytes_back(bytes in proptest::collection::vec(any::<u8>(), 1..5000), chunk in 1usize..700) {
            let manifest = Manifest::describe("p", &bytes, chunk, "me@here", "deploy");
            let chunks = chunks_of(&bytes, chunk);
            prop_assert_eq!(chunks.len() as u32, manifest.chunks);
            let parsed = Manifest::parse("p", &manifest.to_json(), 1 << 20).unwrap();
            prop_assert_eq!(&parsed, &manifest);
            prop_assert_eq!(parsed.assemble(&chunks).unwrap(), bytes);
        }

        #[test]
        fn any_changed_byte_is_caught(bytes in proptest::collection::vec(any::<u8>(), 1..3000), chunk in 1usize..500, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let manifest = Manifest::describe("p", &bytes, chunk, "me", "deploy");
            let mut chunks = chunks_of(&bytes, chunk);
            let at = at.index(bytes.len());
            let slot = chunks.get_mut(&((at / chunk) as u32)).unwrap();
            slot[at % chunk] ^= flip;
            let refused = matches!(manifest.assemble(&chunks), Err(Refusal::DigestMismatch { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn any_dropped_or_cut_chunk_is_caught(bytes in proptest::collection::vec(any::<u8>(), 2..3000), chunk in 1usize..500, which in any::<prop::sample::Index>(), cut in any::<bool>()) {
            let manifest = Manifest::describe("p", &bytes, chunk, "me", "deploy");
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
        fn keys_round_trip(pipeline in "[a-zA-Z0-9._-]{1,20}", index in any::<u32>(), client in "[ -~]{1,40}") {
            let digest = digest_of(pipeline.as_bytes());
            for key in [
                Key::Chunk { pipeline: pipeline.clone(), digest: digest.clone(), index },
                Key::Manifest { pipeline: pipeline.clone() },
                Key::Member { pipeline: pipeline.clone(), client_id: client.clone() },
            ] {
                prop_assert_eq!(Key::parse(&key.render()), Some(key));
            }
        }
    }

    #[test]
    fn unknown_and_malformed_keys_are_ignored() {
        for key in ["", "version", "version/", "version/p/extra", "chunk/p/abc/0", "chunk/p", "member/p/", "other/p"] {
            assert_eq!(Key::parse(key), None, "{key}");
        }
        let digest = digest_of(b"x");
        assert_eq!(Key::parse(&format!("chunk/p/{digest}/-1")), None);
        assert_eq!(Key::parse(&format!("chunk/p/{digest}/")), None);
    }

    #[test]
    fn inconsistent_manifests_are_refused_with_the_reason() {
        let good = Manifest::describe("p", &[7; 1000], 300, "me", "deploy");
        let refuse = |m: &Manifest, pipeline: &str, limit: usize| Manifest::parse(pipeline, &m.to_json(), limit);
        assert!(matches!(refuse(&good, "q", 1 << 20), Err(Refusal::Inconsistent(why)) if why.contains("`p`")));
        assert!(matches!(refuse(&good, "p", 999), Err(Refusal::TooLarge { size: 1000, limit: 999 })));
        let few = Manifest { chunks: 3, ..good.clone() };
        assert!(matches!(refuse(&few, "p", 1 << 20), Err(Refusal::Inconsistent(why)) if why.contains("takes 4")));
        let future = Manifest { format: 2, ..good.clone() };
        assert!(matches!(refuse(&future, "p", 1 << 20), Err(Refusal::BadManifest(why)) if why.contains("format 2")));
        let odd = Manifest { digest: "sha256:zz".into(), ..good };
        assert!(matches!(refuse(&odd, "p", 1 << 20), Err(Refusal::Inconsistent(_))));
        assert!(matches!(Manifest::parse("p", b"{not json", 100), Err(Refusal::BadManifest(_))));
    }

    #[test]
    fn the_last_chunk_holds_the_rest() {
        let m = Manifest::describe("p", &[1; 1001], 250, "me", "deploy");
        assert_eq!((m.chunks, m.chunk_size(0), m.chunk_size(3), m.chunk_size(4)), (5, 250, 250, 1));
    }
}
