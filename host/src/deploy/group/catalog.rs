//! What the components topic holds for one pipeline, as read so far: where each
//! chunk is (not its bytes: a topic may keep many versions of a tens-of-MiB
//! component) and the manifests in the order they were written.
//!
//! Pure bookkeeping; reading the topic is [`super::topic`]'s.

use std::collections::{BTreeMap, HashMap};

use super::record::{Key, Manifest, MemberReport, Refusal};

/// Where a record is in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One manifest record as read: the manifest, or why it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Where it was read.
    pub at: Location,
    /// The manifest, or why it is refused before any chunk is read.
    pub manifest: Result<Manifest, Refusal>,
}

/// One pipeline's records of the components topic.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    chunks: HashMap<(String, u32), Location>,
    /// Manifest records in reading order; a tombstone (withdrawn) is `None`.
    manifests: Vec<Option<ManifestEntry>>,
    /// Member reports by client id.
    members: BTreeMap<String, MemberReport>,
}

impl Catalog {
    /// Takes in one record of `pipeline`'s (others are not this catalog's business):
    /// `value` is `None` for a tombstone. Returns whether it was a manifest.
    pub fn add(&mut self, pipeline: &str, key: &Key, value: Option<&[u8]>, at: Location, limit: usize) -> bool {
        if key.pipeline() != pipeline {
            return false;
        }
        match key {
            Key::Chunk { digest, index, .. } => {
                match value {
                    Some(_) => self.chunks.insert((digest.clone(), *index), at),
                    None => self.chunks.remove(&(digest.clone(), *index)),
                };
                false
            }
            Key::Manifest { .. } => {
                let entry = value.map(|v| ManifestEntry { at, manifest: Manifest::parse(pipeline, v, limit) });
                self.manifests.push(entry);
                true
            }
            Key::Member { client_id, .. } => {
                match value.and_then(MemberReport::parse) {
                    Some(report) => self.members.insert(client_id.clone(), report),
                    None => self.members.remove(client_id),
                };
                false
            }
        }
    }

    /// The newest manifest record, if any was read and it was not withdrawn.
    pub fn newest(&self) -> Option<&ManifestEntry> {
        self.manifests.last().and_then(Option::as_ref)
    }

    /// The versions to try at startup, best first: the newest manifest, then the
    /// older ones still in the topic (not compacted away yet), newest first, each
    /// digest once. Empty when the newest record is a tombstone: the versions were
    /// withdrawn, and the config's component runs.
    pub fn candidates(&self) -> Vec<&ManifestEntry> {
        let Some(Some(_)) = self.manifests.last() else { return Vec::new() };
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for entry in self.manifests.iter().rev().flatten() {
            let digest = entry.manifest.as_ref().ok().map(|m| m.digest.clone());
            if let Some(d) = &digest {
                if seen.contains(d) {
                    continue;
                }
                seen.push(d.clone());
            }
            out.push(entry);
        }
        out
    }

    /// Where each chunk of `manifest` is, by index; the first missing one is an error.
    pub fn locate(&self, manifest: &Manifest) -> Result<BTreeMap<u32, Location>, Refusal> {
        (0..manifest.chunks)
            .map(|index| {
                self.chunks
                    .get(&(manifest.digest.clone(), index))
                    .map(|at| (index, *at))
                    .ok_or(Refusal::MissingChunk { index, chunks: manifest.chunks })
            })
            .collect()
    }

    /// Chunk locations of `digest`, whatever a manifest says: how a rollback finds
    /// an earlier version.
    pub fn chunks_of(&self, digest: &str) -> BTreeMap<u32, Location> {
        self.chunks.iter().filter(|((d, _), _)| d == digest).map(|((_, i), at)| (*i, *at)).collect()
    }

    /// The digests with at least one chunk in the topic.
    pub fn digests(&self) -> Vec<String> {
        let mut digests: Vec<String> = self.chunks.keys().map(|(d, _)| d.clone()).collect();
        digests.sort();
        digests.dedup();
        digests
    }

    /// The member reports, by client id.
    pub fn members(&self) -> &BTreeMap<String, MemberReport> {
        &self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::group::record::split;

    const LIMIT: usize = 1 << 20;

    struct Topic {
        catalog: Catalog,
        offset: i64,
    }

    impl Topic {
        fn new() -> Self {
            Self { catalog: Catalog::default(), offset: 0 }
        }

        fn write(&mut self, pipeline: &str, key: Key, value: Option<&[u8]>) -> bool {
            self.offset += 1;
            self.catalog.add(pipeline, &key, value, Location { partition: 0, offset: self.offset }, LIMIT)
        }

        fn publish(&mut self, bytes: &[u8]) -> Manifest {
            let manifest = Manifest::describe("p", bytes, 3, "me", "deploy");
            for (index, chunk) in split(bytes, 3) {
                let key = Key::Chunk { pipeline: "p".into(), digest: manifest.digest.clone(), index };
                assert!(!self.write("p", key, Some(chunk)));
            }
            assert!(self.write("p", Key::Manifest { pipeline: "p".into() }, Some(&manifest.to_json())));
            manifest
        }

        fn digests_to_try(&self) -> Vec<Option<String>> {
            self.catalog.candidates().iter().map(|e| e.manifest.as_ref().ok().map(|m| m.digest.clone())).collect()
        }
    }

    #[test]
    fn candidates_are_newest_first_each_once_with_refusals_kept_in_place() {
        let mut topic = Topic::new();
        assert!(topic.catalog.newest().is_none() && topic.digests_to_try().is_empty());
        let v1 = topic.publish(b"version one");
        let v2 = topic.publish(b"version two!");
        topic.write("p", Key::Manifest { pipeline: "p".into() }, Some(b"garbage"));
        let v1_again = topic.publish(b"version one");
        assert_eq!(v1.digest, v1_again.digest);
        assert_eq!(topic.digests_to_try(), vec![Some(v1.digest.clone()), None, Some(v2.digest.clone())]);
        assert_eq!(topic.catalog.locate(&v2).unwrap().len(), v2.chunks as usize);
    }

    #[test]
    fn a_withdrawn_pipeline_has_no_candidates() {
        let mut topic = Topic::new();
        topic.publish(b"version one");
        topic.write("p", Key::Manifest { pipeline: "p".into() }, None);
        assert!(topic.digests_to_try().is_empty());
    }

    #[test]
    fn other_pipelines_and_deleted_chunks_do_not_count() {
        let mut topic = Topic::new();
        let v1 = topic.publish(b"version one");
        let q = Key::Manifest { pipeline: "q".into() };
        assert!(!topic.write("p", q, Some(&v1.to_json())));
        assert_eq!(topic.digests_to_try().len(), 1);
        topic.write("p", Key::Chunk { pipeline: "p".into(), digest: v1.digest.clone(), index: 2 }, None);
        assert_eq!(topic.catalog.locate(&v1), Err(Refusal::MissingChunk { index: 2, chunks: v1.chunks }));
        assert_eq!(topic.catalog.chunks_of(&v1.digest).len(), v1.chunks as usize - 1);
    }

    #[test]
    fn member_reports_follow_their_tombstones() {
        let mut topic = Topic::new();
        let report =
            MemberReport { digest: "d".into(), deployed: "d".into(), host: "h".into(), pid: 1, since_unix_ms: 2 };
        let key = Key::Member { pipeline: "p".into(), client_id: "c/1".into() };
        topic.write("p", key.clone(), Some(&report.to_json()));
        assert_eq!(topic.catalog.members().get("c/1"), Some(&report));
        topic.write("p", key, None);
        assert!(topic.catalog.members().is_empty());
    }
}
