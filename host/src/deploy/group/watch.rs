//! A host following the components topic: one thread per `group_deploy` pipeline,
//! reading on from where startup stopped. Every manifest record of the pipeline's
//! scope is judged as it arrives:
//!
//! - unusable (unreadable, another scope's, not signed by a trusted key): refused;
//! - not outranking the newest acceptable manifest taken so far (a replay of an
//!   older one, or the loser of two publishers racing): refused as stale;
//! - otherwise it is the pipeline's new target: its chunks are fetched and
//!   verified, then it is deployed exactly as an admin API upload
//!   ([`crate::deploy::deploy`]: compile, self-test with this host's limits,
//!   probation, switch at the next batch boundary).
//!
//! A shadow manifest is a target of its own beside the live one: its version is
//! fetched and deployed as the pipeline's shadow ([`crate::deploy::deploy_shadow`],
//! the admin API's checks); a promotion makes the shadow live at the next batch
//! boundary (a host that does not run that shadow deploys the version from its
//! chunks); a discard drops it.
//!
//! A target refused for a cause that may pass (its chunks could not be read, its
//! self-test ran out of time or found the instance pool full) is tried again with
//! backoff ([`backoff`]) until it deploys, is refused for good, or a newer one
//! supersedes it. Anything refused leaves the running version in place and is
//! logged, recorded in the slot's history and counted for `/metrics`.
//!
//! The newest rank taken lives in memory; after a restart it comes from the topic
//! itself (the highest acceptable manifest there: manifest keys are unique per
//! sequence, so compaction never drops it), so a replay is refused after a restart
//! too.
//!
//! The thread also writes this member's report (`member/<env>/<pipeline>/<client-id>`)
//! whenever what it runs changes, and a tombstone when the host stops cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use super::catalog::{Added, Catalog, ManifestEntry};
use super::record::{Action, Key, Manifest, MemberReport, Rank, Refusal, now_unix_ms};
use super::topic::{FetchError, Reader, TopicAccess, Writer};
use crate::config::PipelineConfig;
use crate::deploy::{MAX_COMPONENT_BYTES, deploy, deploy_shadow};
use crate::pipeline::Shared;
use crate::registry::{Origin, ProcessorSlot, Retrying};
use crate::sandbox::Sandbox;
use crate::sync::StoppableThreads;

/// How long a read waits for the next record: the watcher's pace when idle.
const READ_WAIT: Duration = Duration::from_millis(200);
/// How often a topic that does not exist yet is looked for, and how soon a failed
/// member report is written again.
const RETRY: Duration = Duration::from_secs(2);
/// The first wait before a version refused for a cause that may pass is tried
/// again; it doubles with each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between two attempts at a version.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a member report (or its tombstone) may wait for the broker.
const REPORT_WAIT: Duration = Duration::from_secs(5);
/// How often the topic's partitions are looked at again once it exists: a topic
/// that grew moves pipelines' records to partitions this reader must follow too.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(30);

/// The wait before attempt `attempts + 1` at a version whose `attempts`th failed
/// for a cause that may pass: 2 s, 4 s, 8 s ... at most 60 s.
pub(crate) fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// One pipeline to follow the topic for.
pub(crate) struct Follower {
    pub(crate) access: TopicAccess,
    pub(crate) config: Arc<PipelineConfig>,
    pub(crate) slot: ProcessorSlot,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sandbox: Sandbox,
    pub(crate) reader: Reader,
    pub(crate) catalog: Catalog,
    /// The highest rank of an acceptable manifest seen (at startup, or since).
    pub(crate) floor: Option<Rank>,
    /// A version startup could not take for a cause that may pass, and why.
    pub(crate) pending: Option<(Manifest, String)>,
    /// The `client.id` of the pipeline's consumer: the report's key.
    pub(crate) client_id: String,
}

/// The follower threads of a host; stopped (and their reports withdrawn) when dropped.
pub(crate) struct GroupWatcher {
    threads: StoppableThreads,
}

impl GroupWatcher {
    /// Asks the threads to stop (and withdraw their reports) without waiting: the
    /// host does this when shutdown begins, so the reports go while pipelines drain.
    pub(crate) fn stop(&self) {
        self.threads.stop();
    }

    /// Starts one thread per follower.
    pub(crate) fn start(followers: Vec<Follower>) -> anyhow::Result<Self> {
        let mut threads = StoppableThreads::default();
        for follower in followers {
            threads
                .spawn(format!("ferry-group-{}", follower.config.name), move |stop| follower.run(stop))
                .context("failed to spawn a components topic follower")?;
        }
        Ok(Self { threads })
    }
}

/// The version the pipeline should move to, and how the attempts at it went.
struct Target {
    manifest: Manifest,
    attempts: u32,
    due: Instant,
}

/// What came of one attempt at a version.
enum Outcome {
    /// Deployed, or running already.
    Done,
    /// Refused for good (recorded).
    Refused,
    /// Failed for a cause that may pass: try again later.
    Retry(String),
}

impl Follower {
    fn run(mut self, stop: &AtomicBool) {
        let name = self.config.name.clone();
        let mut reporter = Reporter::new(&self.access, &self.catalog, &self.client_id);
        let mut target = self.pending.take().map(|(manifest, why)| {
            let mut target = Target { manifest, attempts: 0, due: Instant::now() };
            self.failed(&mut target, why);
            target
        });
        // The group's shadow as the topic stood at startup.
        let mut shadow =
            self.catalog.shadow().cloned().map(|manifest| Target { manifest, attempts: 0, due: Instant::now() });
        let mut looked_for_topic = Instant::now();
        let mut read_error_logged = false;
        while !stop.load(Ordering::Relaxed) {
            // Read what there is, judging each manifest as it comes.
            loop {
                match self.reader.next(READ_WAIT) {
                    Ok(Some(read)) => {
                        read_error_logged = false;
                        match self.catalog.add(&read.key, read.value.as_deref(), read.at) {
                            Added::Manifest(entry) => self.consider(entry, &mut target, &mut shadow),
                            Added::Withdrawn(key) => tracing::info!(pipeline = %name, key = %key.render(),
                                "a manifest was withdrawn from the components topic (tombstone); the running version stays"),
                            Added::Other => {}
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        if !read_error_logged {
                            tracing::warn!(pipeline = %name, error = %format!("{error:#}"), "cannot read the components topic; retrying");
                            read_error_logged = true;
                        }
                        break;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            let every = if self.reader.has_partitions() { PARTITIONS_REFRESH } else { RETRY };
            if looked_for_topic.elapsed() >= every {
                looked_for_topic = Instant::now();
                if let Err(error) = self.reader.refresh() {
                    tracing::debug!(pipeline = %name, error = %format!("{error:#}"), "the components topic is not there yet");
                }
            }
            if let Some(t) = target.as_mut().filter(|t| Instant::now() >= t.due)
                && !stop.load(Ordering::Relaxed)
            {
                match self.apply(&t.manifest, stop) {
                    Outcome::Done | Outcome::Refused => {
                        target = None;
                        self.slot.group_retrying(None);
                    }
                    Outcome::Retry(why) => self.failed(t, why),
                }
            }
            if let Some(t) = shadow.as_mut().filter(|t| Instant::now() >= t.due)
                && !stop.load(Ordering::Relaxed)
            {
                match self.apply_shadow(&t.manifest, stop) {
                    Outcome::Done | Outcome::Refused => shadow = None,
                    Outcome::Retry(why) => {
                        t.attempts += 1;
                        let wait = backoff(t.attempts);
                        t.due = Instant::now() + wait;
                        tracing::warn!(pipeline = %name, digest = %t.manifest.digest, attempts = t.attempts,
                            retry_in_s = wait.as_secs(), reason = %why,
                            "a shadow version from the components topic failed for a cause that may pass; trying it again");
                    }
                }
            }
            let running = self.shared.stats.snapshot().version;
            let deployed = self.slot.current().digest().to_owned();
            let previous = self.slot.previous().map(|c| c.digest().to_owned()).unwrap_or_default();
            let shadowing = self.slot.shadow().map(|c| c.digest().to_owned()).unwrap_or_default();
            reporter.report(&running, &deployed, &previous, self.behind(&deployed), &shadowing);
        }
        reporter.withdraw();
    }

    /// Judges one manifest record as it arrives.
    fn consider(&mut self, entry: ManifestEntry, target: &mut Option<Target>, shadow: &mut Option<Target>) {
        let manifest = match entry.manifest {
            Ok(manifest) => manifest,
            Err(refusal) => {
                let why = format!("manifest at {}:{}: {refusal}", entry.at.partition, entry.at.offset);
                self.refuse(&entry.digest, &why, refusal.label(), false);
                return;
            }
        };
        if let Some(floor) = self.floor.as_ref().filter(|floor| manifest.rank() <= **floor) {
            let refusal = Refusal::Stale { rank: manifest.rank(), newest: floor.clone() };
            self.refuse(&manifest.digest, &refusal.to_string(), refusal.label(), false);
            return;
        }
        self.floor = Some(manifest.rank());
        match manifest.kind() {
            Action::Run => {}
            Action::Promote => {
                // The shadow stops being one whether or not this host ran it.
                *shadow = None;
            }
            Action::Shadow => {
                if let Some(old) = shadow.replace(Target { manifest, attempts: 0, due: Instant::now() }) {
                    tracing::info!(pipeline = %self.config.name, superseded = %old.manifest.digest,
                        "a newer shadow manifest supersedes the shadow being tried");
                }
                return;
            }
            Action::Discard => {
                if shadow.as_ref().is_some_and(|t| t.manifest.digest == manifest.digest) {
                    *shadow = None;
                }
                self.discard_shadow(&manifest);
                return;
            }
        }
        self.slot.group_published(&manifest.digest);
        let next = Target { manifest, attempts: 0, due: Instant::now() };
        if let Some(old) = target.replace(next) {
            tracing::info!(pipeline = %self.config.name, superseded = %old.manifest.digest,
                "a newer manifest supersedes the version being tried");
            self.slot.group_retrying(None);
        }
    }

    /// Notes an attempt that failed for a cause that may pass, and when the next is due.
    fn failed(&self, target: &mut Target, why: String) {
        target.attempts += 1;
        let wait = backoff(target.attempts);
        target.due = Instant::now() + wait;
        tracing::warn!(pipeline = %self.config.name, digest = %target.manifest.digest, attempts = target.attempts,
            retry_in_s = wait.as_secs(), reason = %why,
            "a version from the components topic failed for a cause that may pass; trying it again");
        self.slot.group_retrying(Some(Retrying {
            digest: target.manifest.digest.clone(),
            reason: why,
            attempts: target.attempts,
            next_at: SystemTime::now() + wait,
        }));
    }

    /// Fetches, verifies and deploys the version `manifest` names; a promotion of
    /// this host's shadow makes the shadow live instead.
    fn apply(&self, manifest: &Manifest, stop: &AtomicBool) -> Outcome {
        let name = &self.config.name;
        if self.slot.current().digest() == manifest.digest {
            tracing::info!(pipeline = %name, digest = %manifest.digest, manifest = %manifest.summary(),
                "the components topic names the version this host runs already");
            return Outcome::Done;
        }
        if manifest.kind() == Action::Promote
            && let Some(shadow) = self.slot.shadow().filter(|s| s.digest() == manifest.digest)
            && let Some((from, to)) =
                self.slot.promote_this_shadow(&shadow, &format!("the group ({})", manifest.summary()))
        {
            tracing::info!(pipeline = %name, %from, %to, "shadow version promoted through the components topic");
            return Outcome::Done;
        }
        tracing::info!(pipeline = %name, digest = %manifest.digest, manifest = %manifest.summary(),
            "new version in the components topic; fetching and checking it");
        let bytes = match self.fetch(manifest, stop) {
            Ok(bytes) => bytes,
            Err(outcome) => return outcome,
        };
        let origin = Origin::Group(manifest.summary());
        match deploy(&self.sandbox, &self.config, &self.slot, &bytes, MAX_COMPONENT_BYTES, origin) {
            Ok(_) => Outcome::Done,
            Err(error) if error.is_transient() => Outcome::Retry(error.to_string()),
            // `deploy` logged it and put it in the history.
            Err(error) => {
                self.refuse(&manifest.digest, &error.to_string(), "component", true);
                Outcome::Refused
            }
        }
    }

    /// Fetches, verifies and deploys the version `manifest` names as the
    /// pipeline's shadow, with the admin API's checks.
    fn apply_shadow(&self, manifest: &Manifest, stop: &AtomicBool) -> Outcome {
        let name = &self.config.name;
        if self.slot.shadow().is_some_and(|s| s.digest() == manifest.digest) {
            return Outcome::Done;
        }
        tracing::info!(pipeline = %name, digest = %manifest.digest, manifest = %manifest.summary(),
            "new shadow version in the components topic; fetching and checking it");
        let bytes = match self.fetch(manifest, stop) {
            Ok(bytes) => bytes,
            Err(outcome) => return outcome,
        };
        let origin = Origin::Group(manifest.summary());
        match deploy_shadow(&self.sandbox, &self.config, &self.slot, &bytes, MAX_COMPONENT_BYTES, origin) {
            Ok(_) => Outcome::Done,
            Err(error) if error.is_transient() => Outcome::Retry(error.to_string()),
            // `deploy_shadow` logged it and put it in the history.
            Err(error) => {
                self.slot.group_refused(&manifest.digest, format!("group (shadow): {error}"), "component", true);
                Outcome::Refused
            }
        }
    }

    /// Drops this host's shadow if it is the version `manifest` names.
    fn discard_shadow(&self, manifest: &Manifest) {
        let name = &self.config.name;
        let Some(shadow) = self.slot.shadow().filter(|s| s.digest() == manifest.digest) else {
            tracing::info!(pipeline = %name, digest = %manifest.digest,
                "the components topic discards a shadow this host does not run");
            return;
        };
        if let Some(digest) = self.slot.discard_this_shadow(&shadow, &format!("the group ({})", manifest.summary())) {
            tracing::info!(pipeline = %name, %digest, "shadow version discarded through the components topic");
        }
    }

    /// The bytes of the version `manifest` names, from its chunks, checked; or
    /// what came of the attempt.
    fn fetch(&self, manifest: &Manifest, stop: &AtomicBool) -> Result<Vec<u8>, Outcome> {
        let refused = |refusal: Refusal| {
            self.refuse(&manifest.digest, &refusal.to_string(), refusal.label(), false);
            Outcome::Refused
        };
        let locations = self.catalog.locate(manifest).map_err(refused)?;
        let scope = self.catalog.scope().clone();
        let expected = |index| Key::Chunk { scope: scope.clone(), digest: manifest.digest.clone(), index };
        let stopping = || stop.load(Ordering::Relaxed);
        let chunks = match self.access.fetch(&expected, &locations, manifest.chunks, &stopping) {
            Ok(chunks) => chunks,
            Err(FetchError::Refused(refusal)) => return Err(refused(refusal)),
            Err(FetchError::Kafka(error)) => return Err(Outcome::Retry(format!("cannot read its chunks: {error:#}"))),
        };
        manifest.assemble(&chunks).map_err(refused)
    }

    fn refuse(&self, digest: &str, why: &str, kind: &'static str, in_history_already: bool) {
        if !in_history_already {
            tracing::warn!(pipeline = %self.config.name, %digest, reason = %why, kind,
                "version from the components topic refused; the running version keeps going");
        }
        self.slot.group_refused(digest, format!("group: {why}"), kind, in_history_already);
    }

    /// Why this member does not run the topic's newest version, if it does not.
    fn behind(&self, deployed: &str) -> Option<String> {
        let group = self.slot.group_status()?;
        let published = group.published.as_deref().filter(|p| *p != deployed)?;
        if let Some(r) = group.retrying.as_ref().filter(|r| r.digest == published) {
            return Some(format!("retrying (attempt {}): {}", r.attempts, r.reason));
        }
        match group.last_refusal {
            Some(event) if event.digest == published => Some(format!("refused: {}", event.detail)),
            _ => Some("not taken yet".to_owned()),
        }
    }
}

/// Writes this member's report when what it runs changes, and withdraws it at the end.
struct Reporter {
    writer: Option<Writer>,
    key: String,
    scope: super::record::Scope,
    /// What was last written.
    written: Option<MemberReport>,
    failed_at: Option<Instant>,
}

impl Reporter {
    fn new(access: &TopicAccess, catalog: &Catalog, client_id: &str) -> Self {
        let scope = catalog.scope().clone();
        let writer = access
            .writer()
            .inspect_err(|error| tracing::warn!(%scope, error = %format!("{error:#}"), "member reports are off"))
            .ok();
        let key = Key::Member { scope: scope.clone(), client_id: client_id.to_owned() }.render();
        Self { writer, key, scope, written: None, failed_at: None }
    }

    fn report(&mut self, running: &str, deployed: &str, previous: &str, behind: Option<String>, shadow: &str) {
        let same = self.written.as_ref().is_some_and(|w| {
            w.digest == running
                && w.deployed == deployed
                && w.previous == previous
                && w.behind == behind
                && w.shadow == shadow
        });
        if same || self.failed_at.is_some_and(|at| at.elapsed() < RETRY) {
            return;
        }
        let since_unix_ms = match &self.written {
            Some(w) if w.digest == running => w.since_unix_ms,
            _ => now_unix_ms(),
        };
        let report = MemberReport {
            digest: running.to_owned(),
            deployed: deployed.to_owned(),
            host: super::hostname(),
            pid: std::process::id(),
            since_unix_ms,
            previous: previous.to_owned(),
            behind,
            shadow: shadow.to_owned(),
        };
        match self.write(Some(&report.to_json())) {
            Ok(()) => {
                self.written = Some(report);
                self.failed_at = None;
            }
            Err(error) => {
                if self.failed_at.is_none() {
                    tracing::warn!(scope = %self.scope, error = %format!("{error:#}"),
                        "cannot write this member's version report; retrying");
                }
                self.failed_at = Some(Instant::now());
            }
        }
    }

    fn withdraw(&mut self) {
        if self.written.is_some()
            && let Err(error) = self.write(None)
        {
            tracing::warn!(scope = %self.scope, error = %format!("{error:#}"), "cannot withdraw this member's version report");
        }
    }

    fn write(&mut self, value: Option<&[u8]>) -> anyhow::Result<()> {
        let Some(writer) = &self.writer else { anyhow::bail!("no writer") };
        writer.write_all(super::writer::INDEX_PARTITION, &[(self.key.clone(), value)], REPORT_WAIT).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(0), FIRST_BACKOFF);
    }
}
