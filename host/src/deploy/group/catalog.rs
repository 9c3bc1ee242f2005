//! What the components topic holds for one pipeline of one environment, as read
//! so far: where each chunk is (not its bytes: a topic may keep many versions of a
//! tens-of-MiB component), every manifest with the verdict on it (shape, scope,
//! signature), and the member reports.
//!
//! Pure bookkeeping; reading the topic is [`super::topic`]'s.

use std::collections::{BTreeMap, HashMap};

use super::record::{Action, Key, Manifest, MemberReport, Rank, Refusal, Scope};
use super::signing::TrustedKeys;

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
    /// The digest its key names.
    pub digest: String,
    /// The manifest, or why it is refused before any chunk is read.
    pub manifest: Result<Manifest, Refusal>,
}

/// What [`Catalog::add`] took in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A manifest record, judged.
    Manifest(ManifestEntry),
    /// A manifest withdrawn by a tombstone.
    Withdrawn(Key),
    /// Anything else (chunks, reports, other pipelines' records).
    Other,
}

/// How manifests are judged: whose they must be, who must have signed them, and
/// the largest component accepted.
#[derive(Debug, Clone)]
pub struct Judge {
    /// The pipeline and environment.
    pub scope: Scope,
    /// The trusted publishers (none: unsigned versions pass).
    pub trusted: TrustedKeys,
    /// Largest component, in bytes.
    pub limit: usize,
}

impl Judge {
    /// Parses and checks a manifest record: shape, scope, signature.
    pub fn judge(&self, key: &Key, value: &[u8]) -> Result<Manifest, Refusal> {
        let manifest = Manifest::parse(key, value, self.limit)?;
        self.trusted.check(&manifest)?;
        Ok(manifest)
    }
}

/// One pipeline's records of the components topic.
#[derive(Debug, Clone)]
pub struct Catalog {
    judge: Judge,
    chunks: HashMap<(String, u32), Location>,
    /// Manifest records present (not withdrawn), by key.
    manifests: BTreeMap<String, ManifestEntry>,
    /// Member reports by client id.
    members: BTreeMap<String, MemberReport>,
}

impl Catalog {
    /// An empty catalog judging manifests with `judge`.
    pub fn new(judge: Judge) -> Self {
        Self { judge, chunks: HashMap::new(), manifests: BTreeMap::new(), members: BTreeMap::new() }
    }

    /// Whose records it keeps.
    pub fn scope(&self) -> &Scope {
        &self.judge.scope
    }

    /// The judge.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }

    /// Takes in one record (others' are not this catalog's business): `value` is
    /// `None` for a tombstone; a chunk's value only needs to be there, not whole.
    pub fn add(&mut self, key: &Key, value: Option<&[u8]>, at: Location) -> Added {
        if key.scope() != &self.judge.scope {
            return Added::Other;
        }
        match key {
            Key::Chunk { digest, index, .. } => {
                match value {
                    Some(_) => self.chunks.insert((digest.clone(), *index), at),
                    None => self.chunks.remove(&(digest.clone(), *index)),
                };
                Added::Other
            }
            Key::Manifest { digest, .. } => match value {
                Some(value) => {
                    let entry = ManifestEntry { at, digest: digest.clone(), manifest: self.judge.judge(key, value) };
                    self.manifests.insert(key.render(), entry.clone());
                    Added::Manifest(entry)
                }
                None => {
                    self.manifests.remove(&key.render());
                    Added::Withdrawn(key.clone())
                }
            },
            Key::Member { client_id, .. } => {
                match value.and_then(MemberReport::parse) {
                    Some(report) => self.members.insert(client_id.clone(), report),
                    None => self.members.remove(client_id),
                };
                Added::Other
            }
        }
    }

    /// Every acceptable manifest (shape, scope and signature good), whatever it asks.
    fn accepted(&self) -> impl Iterator<Item = &Manifest> {
        self.manifests.values().filter_map(|e| e.manifest.as_ref().ok())
    }

    /// The acceptable manifests of versions to run live (not shadows), highest rank
    /// first, each digest once (at its highest rank): the versions to try at
    /// startup, best first. Empty when every manifest was withdrawn or refused.
    pub fn candidates(&self) -> Vec<&Manifest> {
        let mut accepted: Vec<&Manifest> = self.accepted().filter(|m| m.kind().is_live()).collect();
        accepted.sort_by_key(|m| std::cmp::Reverse(m.rank()));
        let mut seen = std::collections::HashSet::new();
        accepted.retain(|m| seen.insert(m.digest.clone()));
        accepted
    }

    /// The acceptable manifest of highest rank of a version to run live: the
    /// version the pipeline should run.
    pub fn newest(&self) -> Option<&Manifest> {
        self.accepted().filter(|m| m.kind().is_live()).max_by_key(|m| m.rank())
    }

    /// The shadow the pipeline should run beside it: the newest acceptable shadow
    /// manifest, unless a promotion or discard outranks it. A version deployed after
    /// it leaves it running (the comparison starts over against the new version).
    pub fn shadow(&self) -> Option<&Manifest> {
        self.accepted()
            .filter(|m| m.kind() != Action::Run)
            .max_by_key(|m| m.rank())
            .filter(|m| m.kind() == Action::Shadow)
    }

    /// The highest rank of an acceptable manifest, shadows' included: the next
    /// manifest is numbered after it, and a host takes nothing at or below it.
    pub fn highest(&self) -> Option<Rank> {
        self.accepted().map(Manifest::rank).max()
    }

    /// The manifest records present, in log order, with their verdicts.
    pub fn entries(&self) -> Vec<&ManifestEntry> {
        let mut entries: Vec<&ManifestEntry> = self.manifests.values().collect();
        entries.sort_by_key(|e| e.at);
        entries
    }

    /// The keys of the manifests present, with their entries.
    pub fn manifest_keys(&self) -> impl Iterator<Item = (&String, &ManifestEntry)> {
        self.manifests.iter()
    }

    /// Where each chunk of `manifest` is, by index: where the manifest says, or
    /// (a manifest without offsets) where the index partition holds its keys; the
    /// first missing one is an error.
    pub fn locate(&self, manifest: &Manifest) -> Result<BTreeMap<u32, Location>, Refusal> {
        if !manifest.chunk_offsets.is_empty() {
            let partition = manifest.chunk_partition;
            return Ok((0..)
                .zip(&manifest.chunk_offsets)
                .map(|(i, o)| (i, Location { partition, offset: *o }))
                .collect());
        }
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
    use crate::deploy::group::signing::SecretKey;

    const LIMIT: usize = 1 << 20;

    struct Topic {
        catalog: Catalog,
        offset: i64,
    }

    fn scope() -> Scope {
        Scope::new("prod", "p")
    }

    impl Topic {
        fn new(trusted: TrustedKeys) -> Self {
            Self { catalog: Catalog::new(Judge { scope: scope(), trusted, limit: LIMIT }), offset: 0 }
        }

        fn write(&mut self, key: Key, value: Option<&[u8]>) -> Added {
            self.offset += 1;
            self.catalog.add(&key, value, Location { partition: 0, offset: self.offset })
        }

        fn publish(&mut self, sequence: u64, bytes: &[u8], key: Option<&SecretKey>) -> Manifest {
            self.publish_as(sequence, bytes, key, "deploy")
        }

        fn publish_as(&mut self, sequence: u64, bytes: &[u8], key: Option<&SecretKey>, action: &str) -> Manifest {
            let mut manifest = Manifest::describe(&scope(), sequence, bytes, 3, "me", action);
            if let Some(key) = key {
                key.sign(&mut manifest);
            }
            for (index, chunk) in split(bytes, 3) {
                let key = Key::Chunk { scope: scope(), digest: manifest.digest.clone(), index };
                assert_eq!(self.write(key, Some(chunk)), Added::Other);
            }
            assert!(matches!(self.write(manifest.key(), Some(&manifest.to_json())), Added::Manifest(_)));
            manifest
        }

        fn digests_to_try(&self) -> Vec<String> {
            self.catalog.candidates().iter().map(|m| m.digest.clone()).collect()
        }
    }

    #[test]
    fn candidates_go_by_rank_not_by_log_order_each_digest_once() {
        let mut topic = Topic::new(TrustedKeys::default());
        assert!(topic.catalog.newest().is_none() && topic.digests_to_try().is_empty());
        let v1 = topic.publish(1, b"version one", None);
        let v3 = topic.publish(3, b"version three", None);
        // Written later, but older: a replay of sequence 2 does not outrank 3.
        let v2 = topic.publish(2, b"version two!", None);
        let v1_again = topic.publish(4, b"version one", None);
        assert_eq!(v1.digest, v1_again.digest);
        assert_eq!(topic.digests_to_try(), vec![v1.digest.clone(), v3.digest.clone(), v2.digest.clone()]);
        assert_eq!(topic.catalog.newest().unwrap().sequence, 4);
        assert_eq!(topic.catalog.locate(&v2).unwrap().len(), v2.chunks as usize);
    }

    #[test]
    fn a_shadow_is_never_the_version_to_run_and_stands_until_promoted_or_discarded() {
        let mut topic = Topic::new(TrustedKeys::default());
        let v1 = topic.publish(1, b"version one", None);
        let v2 = topic.publish_as(2, b"version two", None, "shadow");
        assert_eq!(topic.catalog.newest().map(|m| &m.digest), Some(&v1.digest), "a shadow is not run live");
        assert_eq!(topic.digests_to_try(), vec![v1.digest.clone()]);
        assert_eq!(topic.catalog.shadow().map(|m| &m.digest), Some(&v2.digest));
        assert_eq!(topic.catalog.highest().map(|r| r.sequence), Some(2), "the next manifest comes after the shadow");
        // A version deployed meanwhile leaves the shadow standing.
        let v3 = topic.publish(3, b"version three", None);
        assert_eq!(topic.catalog.shadow().map(|m| &m.digest), Some(&v2.digest));
        topic.publish_as(4, b"version two", None, "shadow-discard");
        assert!(topic.catalog.shadow().is_none());
        assert_eq!(topic.catalog.newest().map(|m| &m.digest), Some(&v3.digest));
        topic.publish_as(5, b"version two", None, "shadow");
        let promoted = topic.publish_as(6, b"version two", None, "shadow-promote");
        assert!(topic.catalog.shadow().is_none());
        assert_eq!(topic.catalog.newest(), Some(&promoted));
        assert_eq!(topic.digests_to_try(), vec![v2.digest.clone(), v3.digest.clone(), v1.digest.clone()]);
    }

    #[test]
    fn with_trusted_keys_only_signed_manifests_are_candidates() {
        let (alice, mallory) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let mut topic = Topic::new(TrustedKeys::new([alice.public().clone()]).unwrap());
        let good = topic.publish(1, b"reviewed", Some(&alice));
        topic.publish(5, b"unsigned", None);
        topic.publish(6, b"signed by mallory", Some(&mallory));
        assert_eq!(topic.digests_to_try(), vec![good.digest.clone()]);
        let refused: Vec<String> = topic
            .catalog
            .entries()
            .iter()
            .filter_map(|e| e.manifest.as_ref().err().map(|r| r.label().to_owned()))
            .collect();
        assert_eq!(refused, ["signature", "signature"]);
    }

    #[test]
    fn withdrawn_manifests_are_gone_and_other_scopes_do_not_count() {
        let mut topic = Topic::new(TrustedKeys::default());
        let v1 = topic.publish(1, b"version one", None);
        let staging = Manifest { environment: "staging".into(), ..v1.clone() };
        assert_eq!(topic.write(staging.key(), Some(&staging.to_json())), Added::Other);
        let other = Manifest { pipeline: "q".into(), ..v1.clone() };
        assert_eq!(topic.write(other.key(), Some(&other.to_json())), Added::Other);
        assert_eq!(topic.digests_to_try().len(), 1);
        assert!(matches!(topic.write(v1.key(), None), Added::Withdrawn(_)));
        assert!(topic.digests_to_try().is_empty());
        topic.write(Key::Chunk { scope: scope(), digest: v1.digest.clone(), index: 2 }, None);
        assert_eq!(topic.catalog.locate(&v1), Err(Refusal::MissingChunk { index: 2, chunks: v1.chunks }));
        assert_eq!(topic.catalog.chunks_of(&v1.digest).len(), v1.chunks as usize - 1);
    }

    #[test]
    fn member_reports_follow_their_tombstones() {
        let mut topic = Topic::new(TrustedKeys::default());
        let report = MemberReport {
            digest: "d".into(),
            deployed: "d".into(),
            host: "h".into(),
            pid: 1,
            since_unix_ms: 2,
            previous: String::new(),
            behind: None,
            shadow: String::new(),
        };
        let key = Key::Member { scope: scope(), client_id: "c/1".into() };
        topic.write(key.clone(), Some(&report.to_json()));
        assert_eq!(topic.catalog.members().get("c/1"), Some(&report));
        topic.write(key, None);
        assert!(topic.catalog.members().is_empty());
    }
}
