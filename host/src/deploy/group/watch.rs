//! A host following the components topic: one thread per `group_deploy` pipeline,
//! reading on from where startup stopped. When the topic's newest manifest for the
//! pipeline changes, its chunks are fetched and verified, then it is deployed
//! exactly as an admin API upload ([`crate::deploy::deploy`]: compile, self-test
//! with this host's limits, probation, switch at the next batch boundary). Anything
//! refused leaves the running version in place and is logged, recorded in the
//! slot's history and counted for `/metrics`.
//!
//! The thread also writes this member's report (`member/<pipeline>/<client-id>`)
//! whenever the version its batches run on changes, and a tombstone when the host
//! stops cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::catalog::{Catalog, Location, ManifestEntry};
use super::record::{Key, MemberReport, now_unix_ms};
use super::topic::{FetchError, Reader, TopicAccess, Writer};
use crate::config::PipelineConfig;
use crate::deploy::{MAX_COMPONENT_BYTES, deploy};
use crate::pipeline::Shared;
use crate::registry::{Origin, ProcessorSlot};
use crate::sandbox::Sandbox;
use crate::sync::StoppableThreads;

/// How long a read waits for the next record: the watcher's pace when idle.
const READ_WAIT: Duration = Duration::from_millis(200);
/// How soon a version whose chunks could not be read (brokers down) is tried again,
/// and how often a topic that does not exist yet is looked for.
const RETRY: Duration = Duration::from_secs(2);
/// How long a member report (or its tombstone) may wait for the broker.
const REPORT_WAIT: Duration = Duration::from_secs(5);
/// How often the topic's partitions are looked at again once it exists: a topic
/// that grew moves pipelines' records to partitions this reader must follow too.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(30);

/// One pipeline to follow the topic for.
pub(crate) struct Follower {
    pub(crate) access: TopicAccess,
    pub(crate) config: Arc<PipelineConfig>,
    pub(crate) slot: ProcessorSlot,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sandbox: Sandbox,
    pub(crate) reader: Reader,
    pub(crate) catalog: Catalog,
    pub(crate) handled: Option<Location>,
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

/// What came of one attempt at a manifest.
enum Outcome {
    /// Deployed, already running, or refused: decided.
    Decided,
    /// The brokers could not be read: try again later.
    Retry,
}

impl Follower {
    fn run(mut self, stop: &AtomicBool) {
        let name = self.config.name.clone();
        let mut reporter = Reporter::new(&self.access, &name, &self.client_id);
        let mut retry_at: Option<Instant> = None;
        let mut looked_for_topic = Instant::now();
        let mut read_error_logged = false;
        while !stop.load(Ordering::Relaxed) {
            // Read what there is, then act on the newest manifest only.
            loop {
                match self.reader.next(READ_WAIT) {
                    Ok(Some(read)) => {
                        read_error_logged = false;
                        self.catalog.add(&name, &read.key, read.value.as_deref(), read.at, MAX_COMPONENT_BYTES);
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
            let newest = self.catalog.newest().cloned();
            if let Some(entry) = newest.filter(|e| Some(e.at) != self.handled)
                && retry_at.is_none_or(|at| Instant::now() >= at)
                && !stop.load(Ordering::Relaxed)
            {
                match self.apply(&entry, stop) {
                    Outcome::Decided => {
                        self.handled = Some(entry.at);
                        retry_at = None;
                    }
                    Outcome::Retry => retry_at = Some(Instant::now() + RETRY),
                }
            }
            let running = self.shared.stats.snapshot().version;
            reporter.report(&running, self.slot.current().digest());
        }
        reporter.withdraw();
    }

    /// Fetches, verifies and deploys the version `entry` names.
    fn apply(&self, entry: &ManifestEntry, stop: &AtomicBool) -> Outcome {
        let name = &self.config.name;
        let manifest = match &entry.manifest {
            Ok(manifest) => manifest,
            Err(refusal) => {
                self.refuse("?", &format!("manifest at {}:{}: {refusal}", entry.at.partition, entry.at.offset), false);
                return Outcome::Decided;
            }
        };
        self.slot.group_published(&manifest.digest);
        if self.slot.current().digest() == manifest.digest {
            tracing::info!(pipeline = %name, digest = %manifest.digest, manifest = %manifest.summary(),
                "the components topic names the version this host runs already");
            return Outcome::Decided;
        }
        tracing::info!(pipeline = %name, digest = %manifest.digest, manifest = %manifest.summary(),
            "new version in the components topic; fetching and checking it");
        let locations = match self.catalog.locate(manifest) {
            Ok(locations) => locations,
            Err(refusal) => {
                self.refuse(&manifest.digest, &refusal.to_string(), false);
                return Outcome::Decided;
            }
        };
        let expected = |index| Key::Chunk { pipeline: name.clone(), digest: manifest.digest.clone(), index };
        let stopping = || stop.load(Ordering::Relaxed);
        let chunks = match self.access.fetch(&expected, &locations, manifest.chunks, &stopping) {
            Ok(chunks) => chunks,
            Err(FetchError::Refused(refusal)) => {
                self.refuse(&manifest.digest, &refusal.to_string(), false);
                return Outcome::Decided;
            }
            Err(FetchError::Kafka(error)) => {
                tracing::warn!(pipeline = %name, digest = %manifest.digest, error = %format!("{error:#}"),
                    "cannot read the chunks of a new version; trying again");
                return Outcome::Retry;
            }
        };
        let bytes = match manifest.assemble(&chunks) {
            Ok(bytes) => bytes,
            Err(refusal) => {
                self.refuse(&manifest.digest, &refusal.to_string(), false);
                return Outcome::Decided;
            }
        };
        let origin = Origin::Group(manifest.summary());
        match deploy(&self.sandbox, &self.config, &self.slot, &bytes, MAX_COMPONENT_BYTES, origin) {
            Ok(_) => {}
            // `deploy` logged it and put it in the history.
            Err(error) => self.refuse(&manifest.digest, &error.to_string(), true),
        }
        Outcome::Decided
    }

    fn refuse(&self, digest: &str, why: &str, in_history_already: bool) {
        if !in_history_already {
            tracing::warn!(pipeline = %self.config.name, %digest, reason = %why,
                "version from the components topic refused; the running version keeps going");
        }
        self.slot.group_refused(digest, format!("group: {why}"), in_history_already);
    }
}

/// Writes this member's report when its version changes, and withdraws it at the end.
struct Reporter {
    writer: Option<Writer>,
    key: String,
    pipeline: String,
    partition: Option<i32>,
    /// (running, deployed) last written.
    written: Option<(String, String)>,
    failed_at: Option<Instant>,
}

impl Reporter {
    fn new(access: &TopicAccess, pipeline: &str, client_id: &str) -> Self {
        let writer = access
            .writer()
            .inspect_err(|error| tracing::warn!(%pipeline, error = %format!("{error:#}"), "member reports are off"))
            .ok();
        let key = Key::Member { pipeline: pipeline.to_owned(), client_id: client_id.to_owned() }.render();
        Self { writer, key, pipeline: pipeline.to_owned(), partition: None, written: None, failed_at: None }
    }

    fn report(&mut self, running: &str, deployed: &str) {
        let now = (running.to_owned(), deployed.to_owned());
        if self.written.as_ref() == Some(&now) || self.failed_at.is_some_and(|at| at.elapsed() < RETRY) {
            return;
        }
        let report = MemberReport {
            digest: now.0.clone(),
            deployed: now.1.clone(),
            host: super::hostname(),
            pid: std::process::id(),
            since_unix_ms: now_unix_ms(),
        };
        match self.write(Some(&report.to_json())) {
            Ok(()) => {
                self.written = Some(now);
                self.failed_at = None;
            }
            Err(error) => {
                if self.failed_at.is_none() {
                    tracing::warn!(pipeline = %self.pipeline, error = %format!("{error:#}"),
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
            tracing::warn!(pipeline = %self.pipeline, error = %format!("{error:#}"), "cannot withdraw this member's version report");
        }
    }

    fn write(&mut self, value: Option<&[u8]>) -> anyhow::Result<()> {
        let Some(writer) = &self.writer else { anyhow::bail!("no writer") };
        let partition = match self.partition {
            Some(p) => p,
            None => *self.partition.insert(writer.partition_for(&self.pipeline)?),
        };
        writer.write_all(partition, &[(self.key.clone(), value)], REPORT_WAIT)
    }
}
