//! Deploys from a watched directory: a pipeline with `deploy_dir` gets every new
//! `*.wasm` file that appears there, checked exactly like an admin API upload.
//!
//! The directory is polled every [`POLL`] (no inotify: portable, and a deploy is not
//! latency-critical). A file is deployed once its size and modification time held
//! still for one poll, so a slow copy is not read half-written; renaming a finished
//! file into the directory avoids even that wait's risk. Hidden files (a leading `.`)
//! are ignored, which makes `cp x.wasm dir/.x.tmp && mv dir/.x.tmp dir/x.wasm` safe.
//! Files already there when the host starts are not deployed: at startup the
//! pipeline's `component` is what runs.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use super::{MAX_COMPONENT_BYTES, deploy};
use crate::config::PipelineConfig;
use crate::registry::{Origin, ProcessorSlot};
use crate::sandbox::Sandbox;
use crate::sync::StoppableThreads;

/// How often each directory is looked at.
pub(crate) const POLL: Duration = Duration::from_millis(500);

/// The watcher threads of a host; stopped when dropped.
pub(crate) struct DeployWatcher {
    _threads: StoppableThreads,
}

impl DeployWatcher {
    /// Starts one thread per pipeline that has a `deploy_dir` (creating the directory
    /// if needed).
    pub(crate) fn start(
        sandbox: &Sandbox,
        pipelines: impl IntoIterator<Item = (Arc<PipelineConfig>, ProcessorSlot)>,
    ) -> anyhow::Result<Self> {
        let mut threads = StoppableThreads::default();
        for (config, slot) in pipelines {
            let Some(dir) = config.deploy_dir.clone() else { continue };
            std::fs::create_dir_all(&dir).with_context(|| {
                format!("failed to create deploy_dir {} of pipeline {}", dir.display(), config.name)
            })?;
            let mut watch = DirWatch { dir, config, slot, sandbox: sandbox.clone(), files: HashMap::new() };
            watch.skip_existing();
            threads
                .spawn(format!("ferry-watch-{}", watch.config.name), move |stop| {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(POLL);
                        if !stop.load(Ordering::Relaxed) {
                            watch.tick();
                        }
                    }
                })
                .context("failed to spawn a deploy watcher thread")?;
        }
        Ok(Self { _threads: threads })
    }
}

/// What a file looked like at the last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug)]
struct Seen {
    stamp: Stamp,
    /// Deployed (or refused, or present at startup): nothing to do until it changes.
    handled: bool,
}

struct DirWatch {
    dir: PathBuf,
    config: Arc<PipelineConfig>,
    slot: ProcessorSlot,
    sandbox: Sandbox,
    files: HashMap<PathBuf, Seen>,
}

impl DirWatch {
    fn skip_existing(&mut self) {
        let existing = self.scan();
        if !existing.is_empty() {
            tracing::info!(
                pipeline = %self.config.name,
                dir = %self.dir.display(),
                files = existing.len(),
                "deploy_dir already holds components; only new ones are deployed"
            );
        }
        self.files = existing.into_iter().map(|(path, stamp)| (path, Seen { stamp, handled: true })).collect();
    }

    /// One poll: deploy the files that are new or changed and now hold still, oldest
    /// first, so the newest ends up current.
    fn tick(&mut self) {
        let listing = self.scan();
        self.files.retain(|path, _| listing.iter().any(|(p, _)| p == path));
        let mut ready = Vec::new();
        for (path, stamp) in listing {
            match self.files.get_mut(&path) {
                Some(seen) if seen.stamp == stamp => {
                    if !seen.handled {
                        seen.handled = true;
                        ready.push((stamp.modified, path));
                    }
                }
                Some(seen) => *seen = Seen { stamp, handled: false },
                None => {
                    self.files.insert(path, Seen { stamp, handled: false });
                }
            }
        }
        ready.sort();
        for (_, path) in ready {
            self.deploy_file(&path);
        }
    }

    fn deploy_file(&self, path: &Path) {
        let bytes = match read_capped(path, MAX_COMPONENT_BYTES) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(
                    pipeline = %self.config.name,
                    path = %path.display(),
                    error = %format!("{error:#}"),
                    "cannot read a component to deploy"
                );
                return;
            }
        };
        // `deploy` logs and records the outcome either way.
        let _ = deploy(
            &self.sandbox,
            &self.config,
            &self.slot,
            &bytes,
            MAX_COMPONENT_BYTES,
            Origin::Watch(path.to_owned()),
        );
    }

    /// The `*.wasm` regular files of the directory, but hidden ones.
    fn scan(&self) -> Vec<(PathBuf, Stamp)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) => {
                let dir = self.dir.display();
                tracing::warn!(pipeline = %self.config.name, %dir, %error, "cannot list deploy_dir");
                return Vec::new();
            }
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                !name.starts_with('.') && name.ends_with(".wasm")
            })
            .filter_map(|entry| {
                let meta = std::fs::metadata(entry.path()).ok().filter(std::fs::Metadata::is_file)?;
                Some((entry.path(), Stamp { modified: meta.modified().ok(), len: meta.len() }))
            })
            .collect()
    }
}

/// Reads at most `limit + 1` bytes: enough to tell a file is too large without
/// reading all of it.
fn read_capped(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("failed to read {}", path.display()))?;
    Ok(bytes)
}
