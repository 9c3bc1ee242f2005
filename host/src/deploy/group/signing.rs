//! Publisher keys and manifest signatures: Ed25519 (`ed25519-dalek`, strict
//! verification).
//!
//! Keys are one line of text each, so they paste into a config or a secret store:
//!
//! | file | line |
//! |---|---|
//! | secret key, `NAME.key` (mode 0600) | `ferry-ed25519-secret:<64 hex digits: the 32-byte seed>` |
//! | public key, `NAME.pub` | `ferry-ed25519:<64 hex digits: the 32-byte public key>` |
//!
//! A key's id is the first 16 hex digits of the sha256 of its 32 public key bytes:
//! manifests name the key that signed them by id, and hosts look it up among
//! `[fleet] trusted_keys`, so a new key can be trusted before an old one is retired.
//!
//! What is signed is [`signed_bytes`]: a fixed label, then every field of the
//! manifest in a fixed order, each length-prefixed. Nothing is re-serialized from
//! JSON, so no two manifests that differ in any field share signed bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context as _, bail};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::record::{Manifest, Signature};

/// How a public key line starts.
pub const PUBLIC_PREFIX: &str = "ferry-ed25519:";
/// How a secret key line starts.
pub const SECRET_PREFIX: &str = "ferry-ed25519-secret:";
/// The label in front of every signed manifest: a signature over anything else
/// (another protocol's message, another format of manifest) never verifies here.
const LABEL: &[u8] = b"ferry group-deploy manifest v2\0";

/// A public key and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        let id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        Self { key, id }
    }

    /// Parses a public key line (`ferry-ed25519:<hex>`; surrounding whitespace and a
    /// trailing comment after a space are ignored).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text.split_whitespace().next().unwrap_or_default();
        if line.starts_with(SECRET_PREFIX) {
            bail!(
                "this is a secret key (`{SECRET_PREFIX}...`): give the public key (`{PUBLIC_PREFIX}...`, the .pub file)"
            );
        }
        let Some(hex_key) = line.strip_prefix(PUBLIC_PREFIX) else {
            bail!("a public key is `{PUBLIC_PREFIX}` followed by 64 hex digits, as `ferry keys new` writes it");
        };
        let bytes = key_bytes(hex_key).context("the public key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| anyhow::anyhow!("not an Ed25519 public key"))?;
        if key.is_weak() {
            bail!("a weak (small-order) Ed25519 key: anyone could sign for it");
        }
        Ok(Self::new(key))
    }

    /// Its id: 16 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key line.
    pub fn line(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", hex::encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// A publisher's secret key.
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.id)
    }
}

impl SecretKey {
    /// A new key from the operating system's random generator.
    pub fn generate() -> anyhow::Result<Self> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| anyhow::anyhow!("the system's random generator failed: {e}"))?;
        Ok(Self::from_seed(&seed))
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey::new(key.verifying_key());
        Self { key, public }
    }

    /// Parses a secret key line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let line = text.trim();
        if line.starts_with(PUBLIC_PREFIX) {
            bail!("this is a public key: signing needs the secret key (`{SECRET_PREFIX}...`, the .key file)");
        }
        let Some(hex_seed) = line.strip_prefix(SECRET_PREFIX) else {
            bail!("a secret key is `{SECRET_PREFIX}` followed by 64 hex digits, as `ferry keys new` writes it");
        };
        let seed = zeroize::Zeroizing::new(key_bytes(hex_seed).context("the secret key")?);
        Ok(Self::from_seed(&seed))
    }

    /// Reads a secret key file; warns when others may read it.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("failed to read the key file {}", path.display()))?,
        );
        let key = Self::parse(&text).with_context(|| format!("{} is not a ferry secret key", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: the key file {} can be read by other users (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        Ok(key)
    }

    /// The secret key line (write it only to a private file).
    pub fn line(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!("{SECRET_PREFIX}{}", hex::encode(self.key.as_bytes())))
    }

    /// Its public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `manifest` (every field but the signature): fills in its signature.
    pub fn sign(&self, manifest: &mut Manifest) {
        let bytes = signed_bytes(manifest, self.public.id());
        let signature = self.key.sign(&bytes);
        manifest.signature =
            Some(Signature { key_id: self.public.id().to_owned(), ed25519: hex::encode(signature.to_bytes()) });
    }
}

fn key_bytes(hex_text: &str) -> anyhow::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    if hex_text.len() != 64 {
        bail!("expected 64 hex digits, found {}", hex_text.len());
    }
    hex::decode_to_slice(hex_text, &mut bytes).map_err(|e| anyhow::anyhow!("not hex: {e}"))?;
    Ok(bytes)
}

/// The publishers a host trusts, by key id. Empty: the host accepts unsigned versions.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

/// Why a manifest's signature is not good enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    /// No signature, and keys are configured.
    #[error(
        "the manifest is not signed, and this host only runs versions signed by a trusted key ([fleet] trusted_keys)"
    )]
    Unsigned,
    /// Signed by a key not in the list.
    #[error("the manifest is signed by key {0}, which is not among this host's trusted keys")]
    UnknownKey(String),
    /// The signature does not verify: the manifest was changed, or the signature
    /// belongs to other contents.
    #[error("the signature by key {0} does not match the manifest (changed after signing, or copied from another)")]
    BadSignature(String),
}

impl TrustedKeys {
    /// The set of `keys`; a key listed twice is an error.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> anyhow::Result<Self> {
        let mut out = BTreeMap::new();
        for key in keys {
            let id = key.id().to_owned();
            if out.insert(id.clone(), key).is_some() {
                bail!("key {id} is listed twice");
            }
        }
        Ok(Self { keys: out })
    }

    /// Adds `key` (once).
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.id().to_owned(), key);
    }

    /// Whether no key is configured (unsigned versions are accepted).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Checks `manifest`'s signature: by a trusted key, over exactly these fields.
    /// With no keys configured, anything passes (signed or not: it cannot be checked).
    pub fn check(&self, manifest: &Manifest) -> Result<(), SignatureRefusal> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let Some(signature) = &manifest.signature else { return Err(SignatureRefusal::Unsigned) };
        let Some(key) = self.keys.get(&signature.key_id) else {
            return Err(SignatureRefusal::UnknownKey(signature.key_id.clone()));
        };
        let bad = || SignatureRefusal::BadSignature(signature.key_id.clone());
        let mut bytes = [0u8; 64];
        if signature.ed25519.len() != 128 || hex::decode_to_slice(&signature.ed25519, &mut bytes).is_err() {
            return Err(bad());
        }
        let parsed = ed25519_dalek::Signature::from_bytes(&bytes);
        key.key.verify_strict(&signed_bytes(manifest, &signature.key_id), &parsed).map_err(|_| bad())
    }
}

/// The bytes a manifest's signature covers: [`LABEL`], then each field in a fixed
/// order, strings as a u64 big-endian length and their bytes, numbers as u64
/// big-endian, then where the chunks are (partition, count, each offset). The
/// signing key's id is covered too.
pub fn signed_bytes(m: &Manifest, key_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(LABEL);
    let mut text = |s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for field in [&m.environment, &m.pipeline, &m.digest, &m.published_by, &m.action, key_id] {
        text(field);
    }
    let numbers = [u64::from(m.format), m.sequence, m.size, m.chunk_bytes, u64::from(m.chunks), m.published_at_unix_ms];
    let located = [i64::from(m.chunk_partition), m.chunk_offsets.len() as i64];
    for number in numbers.into_iter().chain(located.map(|n| n as u64)).chain(m.chunk_offsets.iter().map(|o| *o as u64))
    {
        out.extend_from_slice(&number.to_be_bytes());
    }
    out
}

/// `ferry keys new`: writes `NAME.key` (0600, never over an existing file) and
/// `NAME.pub` into `dir`. Returns the key.
pub fn write_new_pair(dir: &Path, name: &str) -> anyhow::Result<PublicKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("`{name}` is not a key name (letters, digits, `-`, `_`, `.`)");
    }
    let key = SecretKey::generate()?;
    let secret_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    if public_path.exists() {
        bail!("{} exists already; choose another name", public_path.display());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("failed to create {} (it must not exist yet)", secret_path.display()))?;
    file.write_all(format!("{}\n", key.line().as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", secret_path.display()))?;
    std::fs::write(&public_path, format!("{}\n", key.public().line()))
        .with_context(|| format!("failed to write {}", public_path.display()))?;
    Ok(key.public().clone())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::deploy::group::record::Scope;

    fn manifest() -> Manifest {
        Manifest::describe(&Scope::new("prod", "orders"), 7, &[1; 3000], 1024, "alice@ci", "deploy")
            .located(1, vec![10, 11, 12])
    }

    fn trusting(keys: &[&SecretKey]) -> TrustedKeys {
        TrustedKeys::new(keys.iter().map(|k| k.public().clone())).unwrap()
    }

    #[test]
    fn keys_round_trip_through_their_lines_and_ids_follow_the_public_key() {
        let key = SecretKey::generate().unwrap();
        let again = SecretKey::parse(&key.line()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&format!("  {} alice's laptop\n", key.public().line())).unwrap();
        assert_eq!(public.id(), key.public().id());
        assert_eq!(public.id().len(), 16);
        assert_ne!(SecretKey::generate().unwrap().public().id(), key.public().id());
        assert!(format!("{:#}", PublicKey::parse(&key.line()).unwrap_err()).contains("secret key"));
        assert!(format!("{:#}", SecretKey::parse(&key.public().line()).unwrap_err()).contains("public key"));
        assert!(PublicKey::parse("ferry-ed25519:abcd").is_err());
        let identity = format!("{PUBLIC_PREFIX}01{}", "00".repeat(31));
        assert!(format!("{:#}", PublicKey::parse(&identity).unwrap_err()).contains("weak"));
    }

    #[test]
    fn a_signed_manifest_verifies_only_with_its_key_among_the_trusted() {
        let (alice, bob) = (SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
        let mut m = manifest();
        assert_eq!(trusting(&[&alice]).check(&m), Err(SignatureRefusal::Unsigned));
        assert_eq!(TrustedKeys::default().check(&m), Ok(()), "no keys: unsigned accepted");
        alice.sign(&mut m);
        assert_eq!(trusting(&[&bob, &alice]).check(&m), Ok(()));
        assert_eq!(trusting(&[&bob]).check(&m), Err(SignatureRefusal::UnknownKey(alice.public().id().to_owned())));
        // Bob signs, but claims to be Alice.
        let mut forged = manifest();
        bob.sign(&mut forged);
        forged.signature.as_mut().unwrap().key_id = alice.public().id().to_owned();
        assert!(matches!(trusting(&[&alice]).check(&forged), Err(SignatureRefusal::BadSignature(_))));
        let mut garbled = m.clone();
        garbled.signature.as_mut().unwrap().ed25519 = "zz".into();
        assert!(matches!(trusting(&[&alice]).check(&garbled), Err(SignatureRefusal::BadSignature(_))));
        assert!(TrustedKeys::new([alice.public().clone(), alice.public().clone()]).is_err());
    }

    proptest! {
        /// Any change to any field of a signed manifest breaks the signature.
        #[test]
        fn every_field_is_covered(field in 0usize..14, change in 1u64..1000) {
            let key = SecretKey::generate().unwrap();
            let mut m = manifest();
            key.sign(&mut m);
            let s = change.to_string();
            match field {
                0 => m.environment.push_str(&s),
                1 => m.pipeline.push_str(&s),
                2 => m.digest = crate::sandbox::digest_of(s.as_bytes()),
                3 => m.published_by.push_str(&s),
                4 => m.action.push_str(&s),
                5 => m.format += change as u32,
                6 => m.sequence += change,
                7 => m.size += change,
                8 => m.chunk_bytes += change,
                9 => m.chunks += change as u32,
                10 => m.chunk_partition += change as i32,
                11 => m.chunk_offsets.push(change as i64),
                12 => m.chunk_offsets[0] += change as i64,
                _ => m.published_at_unix_ms += change,
            }
            prop_assert!(matches!(trusting(&[&key]).check(&m), Err(SignatureRefusal::BadSignature(_))));
        }

        /// Moving bytes from one text field to its neighbour changes the signed bytes.
        #[test]
        fn field_boundaries_are_unambiguous(split in 1usize..6) {
            let mut a = manifest();
            a.environment = "prodorders".into();
            a.pipeline = String::new();
            let mut b = a.clone();
            b.environment = a.environment[..split].to_owned();
            b.pipeline = a.environment[split..].to_owned();
            prop_assert_ne!(signed_bytes(&a, "k"), signed_bytes(&b, "k"));
        }
    }

    #[test]
    fn a_new_pair_is_written_private_and_never_over_an_old_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let public = write_new_pair(dir.path(), "ci").unwrap();
        let secret = SecretKey::read(&dir.path().join("ci.key")).unwrap();
        assert_eq!(secret.public(), &public);
        let on_disk = std::fs::read_to_string(dir.path().join("ci.pub")).unwrap();
        assert_eq!(PublicKey::parse(&on_disk).unwrap(), public);
        let mode = std::fs::metadata(dir.path().join("ci.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_new_pair(dir.path(), "ci").is_err());
        assert_eq!(SecretKey::read(&dir.path().join("ci.key")).unwrap().public(), &public, "untouched");
        assert!(write_new_pair(dir.path(), "../x").is_err());
    }
}
