//! The processor versions of each pipeline: the one new batches run on, the one kept
//! for rollback, and what happened to them.
//!
//! A deploy only replaces an `Arc` under a lock; the pipeline loop reads
//! [`ProcessorSlot::current`] at every batch boundary, so the batch in flight finishes
//! on the version it started with and the next one runs on the new version. Compiling
//! and checking a new version happens before that, on the caller's thread
//! ([`deploy::deploy`]), never on the processing path.

mod candidate;
mod probation;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

pub use candidate::ShadowView;
use candidate::{AutoDecision, Candidate};
pub use probation::AutoRollback;
use probation::{Probation, ProbationVerdict};

use crate::sandbox::ProcessorComponent;
use crate::shadow::{ShadowConfig, Tally};
use crate::sync::lock;

/// How many events [`ProcessorSlot::history`] keeps.
const HISTORY: usize = 32;

/// How a version came to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the config when the host started.
    Startup,
    /// Uploaded through the admin API (or `ferry deploy`).
    AdminApi,
    /// A file dropped into the pipeline's `deploy_dir`.
    Watch(PathBuf),
    /// Put back by an operator's rollback.
    Rollback,
    /// Put back because the new version failed too often.
    AutoRollback,
    /// Published to the group through the components topic; the manifest in words.
    Group(String),
    /// A shadow version made current; who decided, in words.
    ShadowPromote(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Startup => f.write_str("startup"),
            Origin::AdminApi => f.write_str("admin-api"),
            Origin::Watch(path) => write!(f, "watch:{}", path.display()),
            Origin::Rollback => f.write_str("rollback"),
            Origin::AutoRollback => f.write_str("auto-rollback"),
            Origin::Group(manifest) => write!(f, "group: {manifest}"),
            Origin::ShadowPromote(by) => write!(f, "shadow promoted by {by}"),
        }
    }
}

/// One version of a pipeline's processor, as deployed.
#[derive(Debug, Clone)]
pub struct Version {
    /// The checked, compiled component.
    pub component: Arc<ProcessorComponent>,
    /// When it became current.
    pub deployed_at: SystemTime,
    /// How.
    pub origin: Origin,
}

impl Version {
    fn new(component: Arc<ProcessorComponent>, origin: Origin) -> Self {
        Self { component, deployed_at: SystemTime::now(), origin }
    }

    /// The content digest that identifies it.
    pub fn digest(&self) -> &str {
        self.component.digest()
    }
}

/// Something that happened to a slot, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: SystemTime,
    /// `deploy`, `reject`, `rollback`, `auto-rollback`, `confirm`,
    /// `shadow` (a shadow version deployed), `shadow-promote` or `shadow-discard`.
    pub action: &'static str,
    /// The version it concerns (the one now current for deploys and rollbacks).
    pub digest: String,
    /// Where the request came from, and why, in words.
    pub detail: String,
}

/// What [`ProcessorSlot::versions`] reports.
#[derive(Debug, Clone)]
pub struct VersionsView {
    /// The version new batches run on.
    pub current: Version,
    /// The version a rollback goes back to.
    pub previous: Option<Version>,
    /// Auto-rollback watch over the current version, if it is still on probation.
    pub probation: Option<ProbationView>,
    /// Recent events, oldest first.
    pub history: Vec<Event>,
}

/// How a version on probation is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbationView {
    /// The policy.
    pub policy: AutoRollback,
    /// Records it handled so far.
    pub records: u64,
    /// Of which failed (retry, reject or fault).
    pub failures: u64,
}

/// What a pipeline that takes its versions from the components topic knows of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// The topic.
    pub topic: String,
    /// The environment (`[fleet] environment`) whose versions it takes.
    pub environment: String,
    /// Ids of the publisher keys it trusts; empty: it accepts unsigned versions.
    pub trusted_keys: Vec<String>,
    /// The digest the topic's newest acceptable manifest names, once one was read.
    pub published: Option<String>,
    /// Versions from the topic this host refused for good (kept the one it ran).
    pub refused: u64,
    /// The same, by kind (`signature`, `stale`, `scope`, `integrity`, `manifest`,
    /// `component`).
    pub refused_by: std::collections::BTreeMap<&'static str, u64>,
    /// The latest refusal: digest (`?` when the manifest itself was unusable) and why.
    pub last_refusal: Option<Event>,
    /// Attempts at a version that failed for a cause that may pass.
    pub retries: u64,
    /// The version being tried again, while one is.
    pub retrying: Option<Retrying>,
}

/// A version refused for a cause that may pass, tried again with backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrying {
    /// Its digest.
    pub digest: String,
    /// Why the last attempt failed.
    pub reason: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next one is due.
    pub next_at: SystemTime,
}

/// The running and previous version of one pipeline's processor.
#[derive(Clone, Debug)]
pub struct ProcessorSlot {
    inner: Arc<SlotInner>,
}

#[derive(Debug)]
struct SlotInner {
    versions: RwLock<Versions>,
    probation: Mutex<Option<Probation>>,
    history: Mutex<VecDeque<Event>>,
    /// Held for a whole deploy, so two deploys (API and watcher) never interleave
    /// their checks and switches.
    deploying: Mutex<()>,
    /// Set when the pipeline follows the components topic.
    group: Mutex<Option<GroupStatus>>,
    /// A version run beside the current one and compared with it.
    shadow: Mutex<Option<Candidate>>,
}

#[derive(Debug)]
struct Versions {
    current: Version,
    previous: Option<Version>,
    /// Raised by every deploy that starts with empty keyed state: a worker that
    /// sees it change empties the state of the partitions it owns before the next
    /// batch (read with the version, so no batch of the old version runs on
    /// emptied state, nor one of the new on the old state).
    state_generation: u64,
}

impl ProcessorSlot {
    /// A slot running `component`, loaded at startup.
    pub fn new(component: Arc<ProcessorComponent>) -> Self {
        Self::starting(component, Origin::Startup)
    }

    /// A slot running `component`, loaded at startup from `origin` (the config, or
    /// the components topic).
    pub fn starting(component: Arc<ProcessorComponent>, origin: Origin) -> Self {
        let started = Event {
            at: SystemTime::now(),
            action: "deploy",
            digest: component.digest().to_owned(),
            detail: origin.to_string(),
        };
        Self {
            inner: Arc::new(SlotInner {
                versions: RwLock::new(Versions {
                    current: Version::new(component, origin),
                    previous: None,
                    state_generation: 0,
                }),
                probation: Mutex::new(None),
                history: Mutex::new(VecDeque::from([started])),
                deploying: Mutex::new(()),
                group: Mutex::new(None),
                shadow: Mutex::new(None),
            }),
        }
    }

    /// The version new batches run on. Cheap: called at every batch boundary.
    pub fn current(&self) -> Arc<ProcessorComponent> {
        self.read().current.component.clone()
    }

    /// The version new batches run on, and the keyed state generation it runs with
    /// (see [`Self::deploy_with_empty_state`]).
    pub fn current_and_state_generation(&self) -> (Arc<ProcessorComponent>, u64) {
        let versions = self.read();
        (versions.current.component.clone(), versions.state_generation)
    }

    /// The version kept for rollback.
    pub fn previous(&self) -> Option<Arc<ProcessorComponent>> {
        self.read().previous.as_ref().map(|v| v.component.clone())
    }

    /// Both versions, the probation and recent events.
    pub fn versions(&self) -> VersionsView {
        let (current, previous) = {
            let versions = self.read();
            (versions.current.clone(), versions.previous.clone())
        };
        let probation = lock(&self.inner.probation).as_ref().map(Probation::view);
        VersionsView { current, previous, probation, history: self.history() }
    }

    /// Recent events, oldest first.
    pub fn history(&self) -> Vec<Event> {
        lock(&self.inner.history).iter().cloned().collect()
    }

    /// Makes `component` current; the old one becomes the rollback target. With a
    /// policy, the new version is on probation: see [`Self::observe`].
    pub fn deploy(&self, component: Arc<ProcessorComponent>, origin: Origin, auto_rollback: Option<AutoRollback>) {
        self.deploy_with_empty_state(component, origin, auto_rollback, false);
    }

    /// [`Self::deploy`]; with `empty_state`, the new version starts with empty keyed
    /// state: each worker empties the state of the partitions it owns (durably, with
    /// a tombstone per key in the changelog) before the version's first batch. A
    /// rollback keeps the state as it is.
    pub fn deploy_with_empty_state(
        &self,
        component: Arc<ProcessorComponent>,
        origin: Origin,
        auto_rollback: Option<AutoRollback>,
        empty_state: bool,
    ) {
        let digest = component.digest().to_owned();
        let mut detail = origin.to_string();
        if empty_state {
            detail += ", with empty state";
        }
        {
            let mut versions = self.write();
            let old = std::mem::replace(&mut versions.current, Version::new(component.clone(), origin));
            versions.previous = Some(old);
            versions.state_generation += u64::from(empty_state);
            *lock(&self.inner.probation) = auto_rollback.map(|policy| Probation::new(component, policy));
        }
        self.record("deploy", &digest, detail);
    }

    /// Empties the keyed state under the running version (as a deploy with empty
    /// state does, without a new version).
    pub fn empty_state(&self, origin: Origin) {
        let digest = {
            let mut versions = self.write();
            versions.state_generation += 1;
            versions.current.digest().to_owned()
        };
        self.record("empty-state", &digest, origin.to_string());
    }

    /// Swaps current and previous. Returns the digests (from, to), or `None` when
    /// there is nothing to go back to.
    pub fn rollback(&self, origin: Origin) -> Option<(String, String)> {
        let _deploying = lock(&self.inner.deploying);
        self.swap_back(None, origin, "rollback", String::new())
    }

    /// Called by the pipeline loop after every batch with how many of its records the
    /// version `ran` handled and how many of those failed. Rolls a version on
    /// probation back once it fails too often.
    pub fn observe(&self, ran: &Arc<ProcessorComponent>, records: u64, failures: u64) {
        let verdict = {
            let mut probation = lock(&self.inner.probation);
            let Some(p) = probation.as_mut().filter(|p| p.watches(ran)) else { return };
            let verdict = p.observe(records, failures);
            if verdict != ProbationVerdict::Undecided {
                *probation = None;
            }
            verdict
        };
        match verdict {
            ProbationVerdict::Undecided => {}
            ProbationVerdict::Confirmed { records, failures } => {
                tracing::info!(digest = %ran.digest(), records, failures, "new processor version passed its probation");
                self.record("confirm", ran.digest(), format!("{failures} failures in its first {records} records"));
            }
            ProbationVerdict::Failed { records, failures, policy } => {
                let why = format!(
                    "{failures} of its first {records} records failed, more than {} of {} allowed",
                    policy.max_failure_rate, policy.records
                );
                // Not behind the deploy lock: this is the pipeline thread, which must
                // never wait for a compile. A deploy finishing meanwhile simply wins.
                if let Some((from, to)) = self.swap_back(Some(ran), Origin::AutoRollback, "auto-rollback", why.clone())
                {
                    tracing::warn!(%from, %to, %why, "rolled back a failing processor version");
                }
            }
        }
    }

    /// Runs `component` as the shadow of the current version, compared by `config`;
    /// it replaces any shadow there was. Promoted, it goes on probation by
    /// `auto_rollback`.
    pub fn deploy_shadow(
        &self,
        component: Arc<ProcessorComponent>,
        origin: Origin,
        config: ShadowConfig,
        auto_rollback: Option<AutoRollback>,
    ) {
        let digest = component.digest().to_owned();
        let against = self.current();
        let detail = format!("{origin}, compared against {}", against.digest());
        let replaced = lock(&self.inner.shadow).replace(Candidate {
            version: Version::new(component, origin),
            config,
            tally: Tally::default(),
            auto_rollback,
            against,
        });
        if let Some(old) = replaced {
            self.record("shadow-discard", old.version.digest(), format!("replaced by {digest}; {}", old.summary()));
        }
        self.record("shadow", &digest, detail);
    }

    /// The shadow version, if there is one. Cheap: called at every batch boundary.
    pub fn shadow(&self) -> Option<Arc<ProcessorComponent>> {
        lock(&self.inner.shadow).as_ref().map(|c| c.version.component.clone())
    }

    /// The shadow version and its comparison so far.
    pub fn shadow_view(&self) -> Option<ShadowView> {
        lock(&self.inner.shadow).as_ref().map(|c| ShadowView {
            version: c.version.clone(),
            against: c.against.digest().to_owned(),
            tally: c.tally.clone(),
            config: c.config.clone(),
        })
    }

    /// Called by a pipeline worker after the shadow `ran` beside the live version
    /// `live`: adds the batch's comparison, then promotes or discards the shadow when
    /// the pipeline's rules say so. A comparison against another live version than
    /// the one the tally holds (a deploy happened) starts the tally over.
    pub fn shadow_observe(&self, ran: &Arc<ProcessorComponent>, live: &Arc<ProcessorComponent>, batch: Tally) {
        let decision = {
            let mut shadow = lock(&self.inner.shadow);
            let Some(c) = shadow.as_mut().filter(|c| Arc::ptr_eq(&c.version.component, ran)) else { return };
            if !Arc::ptr_eq(&c.against, live) {
                c.against = live.clone();
                c.tally = Tally::default();
            }
            c.add(batch)
        };
        match decision {
            AutoDecision::Keep => {}
            AutoDecision::Promote(why) => {
                let _ = self.promote_shadow_of(Some(ran), format!("promote_after: {why}"));
            }
            AutoDecision::Discard(why) => {
                let _ = self.discard_shadow_of(Some(ran), format!("discard_after: {why}"));
            }
        }
    }

    /// Makes the shadow current (as a deploy does: at the pipeline's next batch
    /// boundary, on probation if the pipeline has `auto_rollback`). `by` says who
    /// decided. Returns the digests (from, to), or `None` without a shadow.
    pub fn promote_shadow(&self, by: &str) -> Option<(String, String)> {
        let _deploying = lock(&self.inner.deploying);
        self.promote_shadow_of(None, by.to_owned())
    }

    /// Drops the shadow; `by` says who decided. Returns its digest, or `None`
    /// without a shadow.
    pub fn discard_shadow(&self, by: &str) -> Option<String> {
        self.discard_shadow_of(None, by.to_owned())
    }

    /// [`Self::promote_shadow`], only if the shadow is `shadow` still.
    pub(crate) fn promote_this_shadow(&self, shadow: &Arc<ProcessorComponent>, by: &str) -> Option<(String, String)> {
        let _deploying = lock(&self.inner.deploying);
        self.promote_shadow_of(Some(shadow), by.to_owned())
    }

    /// [`Self::discard_shadow`], only if the shadow is `shadow` still.
    pub(crate) fn discard_this_shadow(&self, shadow: &Arc<ProcessorComponent>, by: &str) -> Option<String> {
        self.discard_shadow_of(Some(shadow), by.to_owned())
    }

    fn promote_shadow_of(&self, only: Option<&Arc<ProcessorComponent>>, by: String) -> Option<(String, String)> {
        let candidate = {
            let mut shadow = lock(&self.inner.shadow);
            if only.is_some_and(|ran| !shadow.as_ref().is_some_and(|c| Arc::ptr_eq(&c.version.component, ran))) {
                return None;
            }
            shadow.take()?
        };
        let from = self.current().digest().to_owned();
        let to = candidate.version.digest().to_owned();
        self.record("shadow-promote", &to, format!("by {by}; {}", candidate.summary()));
        self.deploy(candidate.version.component, Origin::ShadowPromote(by), candidate.auto_rollback);
        Some((from, to))
    }

    fn discard_shadow_of(&self, only: Option<&Arc<ProcessorComponent>>, by: String) -> Option<String> {
        let candidate = {
            let mut shadow = lock(&self.inner.shadow);
            if only.is_some_and(|ran| !shadow.as_ref().is_some_and(|c| Arc::ptr_eq(&c.version.component, ran))) {
                return None;
            }
            shadow.take()?
        };
        let digest = candidate.version.digest().to_owned();
        self.record("shadow-discard", &digest, format!("by {by}; {}", candidate.summary()));
        Some(digest)
    }

    /// The lock that serializes deploys of this slot.
    pub(crate) fn deploy_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.deploying)
    }

    /// Notes a refused deploy.
    pub(crate) fn rejected(&self, digest: &str, detail: String) {
        self.record("reject", digest, detail);
    }

    /// Marks the slot as following the components `topic` for `environment`,
    /// trusting the publisher keys `trusted_keys` (ids).
    pub(crate) fn follow_group(&self, topic: &str, environment: &str, trusted_keys: Vec<String>) {
        *lock(&self.inner.group) = Some(GroupStatus {
            topic: topic.to_owned(),
            environment: environment.to_owned(),
            trusted_keys,
            ..GroupStatus::default()
        });
    }

    /// Notes the digest the topic's newest manifest names.
    pub(crate) fn group_published(&self, digest: &str) {
        if let Some(group) = lock(&self.inner.group).as_mut() {
            group.published = Some(digest.to_owned());
        }
    }

    /// Counts a version from the topic this host refused for good, by `kind`.
    /// `deploy` has recorded the refusals it made itself; the others go into the
    /// history here too.
    pub(crate) fn group_refused(&self, digest: &str, detail: String, kind: &'static str, in_history_already: bool) {
        if !in_history_already {
            self.rejected(digest, detail.clone());
        }
        if let Some(group) = lock(&self.inner.group).as_mut() {
            group.refused += 1;
            *group.refused_by.entry(kind).or_default() += 1;
            group.last_refusal =
                Some(Event { at: SystemTime::now(), action: "reject", digest: digest.to_owned(), detail });
            if group.retrying.as_ref().is_some_and(|r| r.digest == digest) {
                group.retrying = None;
            }
        }
    }

    /// Notes an attempt at a version that failed for a cause that may pass (and is
    /// tried again), or with `None` that no version is being tried again.
    pub(crate) fn group_retrying(&self, retrying: Option<Retrying>) {
        if let Some(group) = lock(&self.inner.group).as_mut() {
            if retrying.is_some() {
                group.retries += 1;
            }
            group.retrying = retrying;
        }
    }

    /// The slot's view of the components topic, when it follows one.
    pub fn group_status(&self) -> Option<GroupStatus> {
        lock(&self.inner.group).clone()
    }

    /// Swaps current and previous; with `only_from`, only while that is current.
    fn swap_back(
        &self,
        only_from: Option<&Arc<ProcessorComponent>>,
        origin: Origin,
        action: &'static str,
        why: String,
    ) -> Option<(String, String)> {
        let (from, to) = {
            let mut versions = self.write();
            if only_from.is_some_and(|c| !Arc::ptr_eq(c, &versions.current.component)) {
                return None;
            }
            let mut previous = versions.previous.take()?;
            previous.deployed_at = SystemTime::now();
            previous.origin = origin;
            let failed = std::mem::replace(&mut versions.current, previous);
            let pair = (failed.digest().to_owned(), versions.current.digest().to_owned());
            versions.previous = Some(failed);
            *lock(&self.inner.probation) = None;
            pair
        };
        let detail = if why.is_empty() { format!("from {from}") } else { format!("from {from}: {why}") };
        self.record(action, &to, detail);
        Some((from, to))
    }

    fn record(&self, action: &'static str, digest: &str, detail: String) {
        let mut history = lock(&self.inner.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(Event { at: SystemTime::now(), action, digest: digest.to_owned(), detail });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        self.inner.versions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Versions> {
        self.inner.versions.write().unwrap_or_else(|p| p.into_inner())
    }
}
