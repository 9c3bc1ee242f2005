//! Compiled functions on disk, shared by every component the host compiles.
//!
//! The artifact cache ([`super::cache`]) saves a compile only for a component it
//! has seen whole. A new version of a Python or JavaScript processor is a new
//! component, yet nearly all of its code is the interpreter, function for function
//! the same as in the last version: Cranelift's incremental cache compiles only the
//! functions it has not seen, and takes the rest from here.
//!
//! Layout: `<cache_dir>/functions/<2 hex>/<62 hex>`, named by the sha256 of
//! Cranelift's key, which hashes the function's whole compiler input with the
//! target and every compiler flag; each file holds the sha256 of its contents, then
//! the contents. A file that does not match its checksum (a torn write) is ignored
//! and replaced, and Cranelift refuses an entry of another Cranelift version. As
//! for components, the directory is this user's alone: what is read from it is
//! trusted to be ferry's own output.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cache::{create_private_dir, write_whole};

/// Where compiled functions are kept.
#[derive(Debug)]
pub(super) struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    /// Opens (creating it if needed) `<root>/functions`; like the artifact cache,
    /// fails if anyone but this user could write to it.
    pub(super) fn open(root: &Path) -> anyhow::Result<Self> {
        let dir = root.join("functions");
        create_private_dir(root)?;
        create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    fn path_of(&self, key: &[u8]) -> PathBuf {
        let name = hex::encode(Sha256::digest(key));
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut bytes = fs::read(self.path_of(key)).ok()?;
        if bytes.len() < 32 || Sha256::digest(&bytes[32..])[..] != bytes[..32] {
            return None;
        }
        bytes.drain(..32);
        Some(Cow::Owned(bytes))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path_of(key);
        let Some(dir) = path.parent() else { return false };
        if create_private_dir(dir).is_err() {
            return false;
        }
        let mut bytes = Vec::with_capacity(32 + value.len());
        bytes.extend_from_slice(&Sha256::digest(&value));
        bytes.extend_from_slice(&value);
        write_whole(dir, &path, &bytes, false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::CacheStore as _;

    use super::*;

    #[test]
    fn what_is_stored_comes_back_and_a_damaged_entry_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let cache = FunctionCache::open(root.path()).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"compiled code".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"compiled code"[..]));
        assert!(cache.get(b"other key").is_none());
        let path = cache.path_of(b"key");
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(cache.get(b"key").is_none(), "a damaged entry is never handed to the compiler");
        fs::write(&path, b"short").unwrap();
        assert!(cache.get(b"key").is_none());
    }
}
