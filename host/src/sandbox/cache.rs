//! Precompiled components on disk, so a restart or a swap back to an earlier version
//! deserializes native code (well under a millisecond) instead of compiling it again
//! (tens of milliseconds, seconds for a large component).
//!
//! Layout: `<cache_dir>/<engine key>/<sha256 of the component>.cwasm`. The engine key
//! hashes wasmtime's own compatibility hash (its version, target, compiler flags,
//! tunables, wasm features) together with every [`SandboxSettings`] field that shapes
//! the engine, so an engine configured differently looks in a directory of its own and
//! never even sees another engine's artifacts. wasmtime checks the artifact header on
//! load as well; a file it refuses is compiled again and replaced.
//!
//! Loading native code from disk is `unsafe` in wasmtime: the bytes are trusted to be
//! its own output. The argument that they are is in [`ArtifactCache::component`];
//! what makes it hold is that ferry only uses a directory that it created (or that is
//! owned by its user and writable by nobody else), and only ever adds files to it by
//! writing a complete, fsynced file under a temporary name and renaming it into place.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::settings::SandboxSettings;

/// Bumped when the layout or the key changes, so old entries are simply never read.
const CACHE_FORMAT: &str = "ferry-artifact-cache-v1";

/// Where a loaded component's native code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled from the component bytes just now.
    Compiled,
    /// Deserialized from the on-disk cache: nothing was compiled.
    Cache,
}

impl ArtifactSource {
    /// `compiled` or `cache`, for logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactSource::Compiled => "compiled",
            ArtifactSource::Cache => "cache",
        }
    }
}

/// The artifact directory of one engine configuration.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    hits: AtomicU64,
    compiles: AtomicU64,
}

/// The default cache location: `$XDG_CACHE_HOME/ferry`, else `$HOME/.cache/ferry`.
/// `None` when neither is set (the host then compiles every time).
pub fn default_cache_dir() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute("XDG_CACHE_HOME")
        .map(|dir| dir.join("ferry"))
        .or_else(|| absolute("HOME").map(|home| home.join(".cache").join("ferry")))
}

impl ArtifactCache {
    /// Opens (creating it if needed) the directory under `root` for `engine`, which
    /// was built from `settings`. Fails if the directory could be written by anyone
    /// but this user: ferry would then be trusting native code others can plant.
    pub fn open(root: &Path, engine: &Engine, settings: &SandboxSettings) -> anyhow::Result<Self> {
        let dir = root.join(engine_key(engine, settings));
        create_private_dir(root)?;
        create_private_dir(&dir)?;
        Ok(Self { dir, hits: AtomicU64::new(0), compiles: AtomicU64::new(0) })
    }

    /// The directory of this engine configuration's artifacts.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many components were loaded from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// How many components had to be compiled.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    fn path_of(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The compiled form of `bytes`, whose sha256 `digest` must be (the caller has it
    /// already): from the cache when present and usable, else compiled and stored.
    /// Only compile errors are errors; a cache that cannot be read or written costs a
    /// compile and a warning.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, ArtifactSource)> {
        let path = self.path_of(digest);
        if path.is_file() {
            // SAFETY: `path` is in a directory that `open` created or verified to be
            // owned by this user and writable by no one else, and files get there only
            // through `store`: the output of `Component::serialize`, written in
            // full and fsynced under a temporary name, then renamed into place. So the
            // file is complete wasmtime output, and it never changes while mapped (a
            // replacement is a new inode). It was made for this engine's configuration
            // (the directory is keyed by it), and wasmtime checks the header again.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, ArtifactSource::Cache));
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    tracing::warn!(path = %path.display(), %error, "unusable cached artifact; compiling again");
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        let artifact = component.serialize()?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = self.store(&path, &artifact) {
            let error = format!("{error:#}");
            tracing::warn!(path = %path.display(), %error, "could not cache a compiled component");
        }
        Ok((component, ArtifactSource::Compiled))
    }

    /// Writes `artifact` to `path` atomically: readers see the whole file or none.
    fn store(&self, path: &Path, artifact: &[u8]) -> anyhow::Result<()> {
        write_whole(&self.dir, path, artifact, true)
    }
}

/// The directory name of an engine configuration: 32 hex digits of a sha256 over
/// wasmtime's compatibility hash and ferry's engine settings.
pub fn engine_key(engine: &Engine, settings: &SandboxSettings) -> String {
    // Every field is named so that a new setting forces a decision here. Neither the
    // cache's location nor the number of instance slots shapes the compiled code (the
    // pool's slot counts are runtime limits), so `ferry check`, `ferry test` and a host
    // share artifacts whatever their pools hold.
    let SandboxSettings { max_wasm_stack, max_memory_bytes, max_instances: _, cache_dir: _ } = settings;
    let mut hasher = Sha256Hasher(Sha256::new());
    CACHE_FORMAT.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    (max_wasm_stack, max_memory_bytes).hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// Feeds a [`Hash`] into sha256, which, unlike std's hashers, is stable across
/// processes and Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }
}

/// Writes `bytes` to `path` in `dir` as a complete file (fsynced with `sync`) under a
/// temporary name, renamed into place: a reader sees the whole file or none.
pub(super) fn write_whole(dir: &Path, path: &Path, bytes: &[u8], sync: bool) -> anyhow::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
    let temp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.with_context(|| format!("failed to write {}", path.display()))
}

/// Creates `dir` readable and writable by this user only, or checks that an existing
/// one is a real directory owned by this user that no one else can write to.
pub(super) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            builder.recursive(true).create(dir).with_context(|| format!("failed to create {}", dir.display()))?;
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("failed to create {}", dir.display())),
    }
    let meta = fs::symlink_metadata(dir).with_context(|| format!("failed to inspect {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            bail!("{} belongs to uid {}, not to this user (uid {me})", dir.display(), meta.uid());
        }
        if meta.mode() & 0o022 != 0 {
            bail!("{} is writable by other users (mode {:o})", dir.display(), meta.mode() & 0o777);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Sandbox;

    fn key(settings: SandboxSettings) -> String {
        let sandbox = Sandbox::new(SandboxSettings { cache_dir: None, ..settings.clone() }).unwrap();
        engine_key(sandbox.engine(), &settings)
    }

    #[test]
    fn the_key_follows_the_engine_settings_but_not_the_location_or_the_slots() {
        let base = SandboxSettings { max_instances: 4, ..SandboxSettings::default() };
        assert_eq!(key(base.clone()), key(SandboxSettings { cache_dir: Some("/elsewhere".into()), ..base.clone() }));
        assert_eq!(key(base.clone()), key(SandboxSettings { max_instances: 64, ..base.clone() }));
        assert_ne!(key(base.clone()), key(SandboxSettings { max_wasm_stack: 256 << 10, ..base.clone() }));
        assert_ne!(key(base.clone()), key(SandboxSettings { max_memory_bytes: 64 << 20, ..base }));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_directory_others_can_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let sandbox = Sandbox::new(SandboxSettings { max_instances: 4, ..SandboxSettings::default() }).unwrap();
        let error = ArtifactCache::open(&shared, sandbox.engine(), sandbox.settings()).unwrap_err();
        assert!(format!("{error:#}").contains("writable by other users"), "{error:#}");
        let private = root.path().join("a").join("b");
        let cache = ArtifactCache::open(&private, sandbox.engine(), sandbox.settings()).unwrap();
        assert!(cache.dir().starts_with(&private));
        assert_eq!(fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
