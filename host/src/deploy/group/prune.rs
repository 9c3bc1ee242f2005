//! `ferry versions --group --prune --keep N`: keeps the components topic small.
//!
//! Chunk keys are unique per version, so compaction alone keeps every version
//! forever. Pruning writes a tombstone for every chunk (and manifest) of the
//! versions beyond the newest `N` (each to the partition its records are in), except versions a member reports running,
//! switching to, or keeping as its rollback target; compaction then drops them.
//! Which versions go is decided by [`plan`] (pure); [`prune`] writes it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::catalog::Catalog;
use super::record::Key;
use super::topic::TopicAccess;

/// How long the brokers may take to acknowledge the tombstones.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// What a prune removes and keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Versions removed, by digest: what is known of each and the keys to tombstone.
    pub removed: BTreeMap<String, Removed>,
    /// Versions kept, by digest, with every reason.
    pub kept: BTreeMap<String, Vec<String>>,
}

/// One version removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Its highest sequence number among the manifests still naming it, if any.
    pub sequence: Option<u64>,
    /// Its size, from such a manifest.
    pub size: Option<u64>,
    /// Its chunk keys, with the partition each is in.
    pub chunks: Vec<(Key, i32)>,
    /// The manifest keys naming it, with their partitions.
    pub manifests: Vec<(Key, i32)>,
}

impl Plan {
    /// Every key to tombstone, with the partition its records are in.
    pub fn tombstones(&self) -> Vec<(Key, i32)> {
        self.removed.values().flat_map(|r| r.chunks.iter().chain(&r.manifests)).cloned().collect()
    }
}

/// Decides what a prune keeping the newest `keep` versions removes.
///
/// Newest is by the rank of the acceptable manifests (as the catalog's judge sees
/// them). Kept besides: every version a member report names as running, deployed
/// or previous (its rollback target). Removed: every other version with chunks or
/// manifests in the topic, manifests refused for any reason included.
pub fn plan(catalog: &Catalog, keep: usize) -> Plan {
    let mut kept: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, manifest) in catalog.candidates().into_iter().take(keep).enumerate() {
        kept.entry(manifest.digest.clone()).or_default().push(format!("newest {} of {keep}", n + 1));
    }
    if let Some(shadow) = catalog.shadow() {
        kept.entry(shadow.digest.clone()).or_default().push("the group's shadow".to_owned());
    }
    for (client_id, report) in catalog.members() {
        let who = format!("{} (pid {}, {client_id})", report.host, report.pid);
        for (digest, role) in [
            (&report.digest, "runs"),
            (&report.deployed, "switches to"),
            (&report.previous, "keeps for rollback"),
            (&report.shadow, "runs as its shadow"),
        ] {
            if !digest.is_empty() {
                kept.entry(digest.clone()).or_default().push(format!("{who} {role} it"));
            }
        }
    }
    let mut removed: BTreeMap<String, Removed> = BTreeMap::new();
    for digest in catalog.digests().into_iter().filter(|d| !kept.contains_key(d)) {
        let chunks = catalog
            .chunks_of(&digest)
            .into_iter()
            .map(|(index, at)| {
                (Key::Chunk { scope: catalog.scope().clone(), digest: digest.clone(), index }, at.partition)
            })
            .collect();
        removed.entry(digest).or_default().chunks = chunks;
    }
    for (key, entry) in catalog.manifest_keys() {
        if kept.contains_key(&entry.digest) {
            continue;
        }
        let Some(key) = Key::parse(key) else { continue };
        let version = removed.entry(entry.digest.clone()).or_default();
        version.manifests.push((key, entry.at.partition));
        if let Ok(manifest) = &entry.manifest
            && version.sequence.is_none_or(|s| s < manifest.sequence)
        {
            version.sequence = Some(manifest.sequence);
            version.size = Some(manifest.size);
        }
    }
    for version in removed.values_mut() {
        version.manifests.sort_by_key(|(key, _)| key.render());
    }
    Plan { removed, kept }
}

/// The plan in words.
pub fn describe(plan: &Plan, dry_run: bool) -> String {
    let mut out = String::new();
    let verb = if dry_run { "would remove" } else { "removed" };
    for (digest, version) in &plan.removed {
        let sequence = version.sequence.map_or_else(|| "no usable manifest".to_owned(), |s| format!("sequence {s}"));
        let size = version.size.map_or_else(String::new, |s| format!(", {:.1} MiB", s as f64 / f64::from(1 << 20)));
        out.push_str(&format!(
            "{verb} {digest} ({sequence}{size}): {} chunk(s), {} manifest(s)\n",
            version.chunks.len(),
            version.manifests.len()
        ));
    }
    if plan.removed.is_empty() {
        out.push_str("nothing to remove\n");
    }
    for (digest, why) in &plan.kept {
        out.push_str(&format!("kept {digest}: {}\n", why.join("; ")));
    }
    out
}

/// Writes `plan`'s tombstones.
pub fn prune(access: &TopicAccess, catalog: &Catalog, plan: &Plan) -> anyhow::Result<()> {
    let tombstones = plan.tombstones();
    if tombstones.is_empty() {
        return Ok(());
    }
    if plan.kept.is_empty() {
        bail!("refusing to remove every version of {}", catalog.scope());
    }
    let writer = access.writer()?;
    let partitions: std::collections::BTreeSet<i32> = tombstones.iter().map(|(_, p)| *p).collect();
    for partition in partitions {
        let records: Vec<(String, Option<&[u8]>)> =
            tombstones.iter().filter(|(_, p)| *p == partition).map(|(key, _)| (key.render(), None)).collect();
        writer.write_all(partition, &records, ACK_WAIT).context("writing the tombstones failed")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::deploy::group::catalog::{Judge, Location};
    use crate::deploy::group::record::{Manifest, MemberReport, Scope, split};
    use crate::deploy::group::signing::TrustedKeys;

    fn scope() -> Scope {
        Scope::new("prod", "p")
    }

    struct Topic {
        catalog: Catalog,
        offset: i64,
    }

    impl Topic {
        fn new() -> Self {
            let judge = Judge { scope: scope(), trusted: TrustedKeys::default(), limit: 1 << 20 };
            Self { catalog: Catalog::new(judge), offset: 0 }
        }

        fn write(&mut self, key: Key, value: Option<&[u8]>) {
            self.offset += 1;
            self.catalog.add(&key, value, Location { partition: 0, offset: self.offset });
        }

        fn publish(&mut self, sequence: u64, bytes: &[u8]) -> String {
            let manifest = Manifest::describe(&scope(), sequence, bytes, 4, "me", "deploy");
            for (index, chunk) in split(bytes, 4) {
                self.write(Key::Chunk { scope: scope(), digest: manifest.digest.clone(), index }, Some(chunk));
            }
            self.write(manifest.key(), Some(&manifest.to_json()));
            manifest.digest
        }

        fn report(&mut self, client: &str, running: &str, previous: &str) {
            let report = MemberReport {
                digest: running.into(),
                deployed: running.into(),
                host: "h".into(),
                pid: 1,
                since_unix_ms: 0,
                previous: previous.into(),
                behind: None,
                shadow: String::new(),
            };
            self.write(Key::Member { scope: scope(), client_id: client.into() }, Some(&report.to_json()));
        }

        /// Applies a plan as the brokers would after compaction.
        fn apply(&mut self, plan: &Plan) {
            for (key, _) in plan.tombstones() {
                self.write(key, None);
            }
        }
    }

    #[test]
    fn keeps_the_newest_and_whatever_a_member_runs_or_would_roll_back_to() {
        let mut topic = Topic::new();
        let versions: Vec<String> = (1..=6).map(|n| topic.publish(n, format!("version {n}").as_bytes())).collect();
        // A rollback to version 2 as sequence 7: it is the newest now.
        let rollback = Manifest::describe(&scope(), 7, b"version 2", 4, "me", "rollback");
        topic.write(rollback.key(), Some(&rollback.to_json()));
        // One member still runs version 3, with version 1 as its rollback target.
        topic.report("m1", &versions[2], &versions[0]);
        let plan = plan(&topic.catalog, 2);
        let kept: BTreeSet<&String> = plan.kept.keys().collect();
        let expected: BTreeSet<&String> = [&versions[1], &versions[5], &versions[2], &versions[0]].into();
        assert_eq!(kept, expected, "{}", describe(&plan, true));
        let removed: BTreeSet<&String> = plan.removed.keys().collect();
        assert_eq!(removed, [&versions[3], &versions[4]].into());
        let v4 = &plan.removed[&versions[3]];
        assert_eq!((v4.sequence, v4.chunks.len(), v4.manifests.len()), (Some(4), 3, 1));
        let text = describe(&plan, false);
        assert!(text.contains(&format!("removed {} (sequence 4", versions[3])), "{text}");
        assert!(text.contains("keeps for rollback"), "{text}");

        topic.apply(&plan);
        assert_eq!(versions_left(&topic), expected.into_iter().cloned().collect());
        assert_eq!(topic.catalog.newest().unwrap().sequence, 7, "the newest manifest stays");
        assert_eq!(plan_again(&topic).tombstones(), vec![], "a second prune finds nothing");
    }

    #[test]
    fn orphan_chunks_and_refused_manifests_go_too() {
        let mut topic = Topic::new();
        let good = topic.publish(1, b"good version");
        // An upload cut short (no manifest), and junk under a manifest key.
        let orphan = crate::sandbox::digest_of(b"orphan");
        topic.write(Key::Chunk { scope: scope(), digest: orphan.clone(), index: 0 }, Some(b"or"));
        let junk = Key::Manifest { scope: scope(), sequence: 99, digest: orphan.clone() };
        topic.write(junk.clone(), Some(b"not json"));
        let plan = plan(&topic.catalog, 1);
        assert_eq!(plan.kept.keys().collect::<Vec<_>>(), [&good]);
        assert_eq!(plan.removed[&orphan].manifests, vec![(junk, 0)]);
        assert_eq!(plan.removed[&orphan].chunks.len(), 1);
    }

    fn versions_left(topic: &Topic) -> BTreeSet<String> {
        topic.catalog.digests().into_iter().collect()
    }

    fn plan_again(topic: &Topic) -> Plan {
        plan(&topic.catalog, 2)
    }
}
