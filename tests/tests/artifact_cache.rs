//! The on-disk cache of compiled components: a restart and a swap back load native
//! code instead of compiling, and an engine configured differently never shares
//! (or trusts) another engine's artifacts.

mod swap_support;

use std::path::Path;

use ferry_host::sandbox::{ArtifactSource, Grants, ProcessorComponent, Sandbox, SandboxSettings};
use swap_support::build;

fn sandbox(cache: &Path, max_wasm_stack: usize) -> Sandbox {
    Sandbox::new(SandboxSettings {
        max_wasm_stack,
        max_instances: 8,
        cache_dir: Some(cache.to_owned()),
        ..SandboxSettings::default()
    })
    .unwrap()
}

fn grants() -> Grants {
    Grants { output_topics: ["ledger".to_owned()].into(), log: true, state: false, http: None }
}

fn load(sandbox: &Sandbox, bytes: &[u8]) -> ArtifactSource {
    ProcessorComponent::load(sandbox, bytes, &grants()).expect("loads").artifact()
}

#[test]
fn a_restart_and_a_swap_back_do_not_recompile() {
    let (v1, v2) = (build("ferry-guest-versioned-v1"), build("ferry-guest-versioned-v2"));
    let dir = tempfile::tempdir().unwrap();

    let first = sandbox(dir.path(), 512 << 10);
    assert_eq!(load(&first, &v1.bytes), ArtifactSource::Compiled);
    assert_eq!(load(&first, &v2.bytes), ArtifactSource::Compiled);
    assert_eq!(load(&first, &v1.bytes), ArtifactSource::Cache, "swapping back to v1 reuses its artifact");
    let cache = first.cache().unwrap();
    assert_eq!((cache.compiles(), cache.hits()), (2, 1));
    assert!(cache.dir().join(format!("{}.cwasm", v1.digest)).is_file());

    // A restart: a new engine with the same settings finds both.
    let restarted = sandbox(dir.path(), 512 << 10);
    assert_eq!(load(&restarted, &v2.bytes), ArtifactSource::Cache);
    assert_eq!(load(&restarted, &v1.bytes), ArtifactSource::Cache);
    assert_eq!(restarted.cache().unwrap().compiles(), 0, "nothing compiled after the restart");
}

#[test]
fn engines_configured_differently_never_share_artifacts() {
    let v1 = build("ferry-guest-versioned-v1");
    let dir = tempfile::tempdir().unwrap();
    let small = sandbox(dir.path(), 256 << 10);
    let large = sandbox(dir.path(), 1 << 20);
    assert_ne!(small.cache().unwrap().dir(), large.cache().unwrap().dir());

    assert_eq!(load(&small, &v1.bytes), ArtifactSource::Compiled);
    assert_eq!(load(&large, &v1.bytes), ArtifactSource::Compiled, "another engine configuration compiles its own");
    assert_eq!(load(&small, &v1.bytes), ArtifactSource::Cache);
    assert_eq!(load(&large, &v1.bytes), ArtifactSource::Cache);
    let entries = |s: &Sandbox| std::fs::read_dir(s.cache().unwrap().dir()).unwrap().count();
    assert_eq!((entries(&small), entries(&large)), (1, 1), "one artifact per engine configuration");
}

#[test]
fn an_unusable_artifact_is_compiled_again_and_replaced() {
    let v1 = build("ferry-guest-versioned-v1");
    let dir = tempfile::tempdir().unwrap();
    let engine = sandbox(dir.path(), 512 << 10);
    let path = engine.cache().unwrap().dir().join(format!("{}.cwasm", v1.digest));
    std::fs::write(&path, b"not an artifact").unwrap();

    assert_eq!(load(&engine, &v1.bytes), ArtifactSource::Compiled, "wasmtime refused the file, ferry compiled");
    assert!(std::fs::metadata(&path).unwrap().len() > 1000, "the file was replaced by a real artifact");
    assert_eq!(load(&engine, &v1.bytes), ArtifactSource::Cache);
}

#[test]
fn without_a_cache_every_load_compiles() {
    let v1 = build("ferry-guest-versioned-v1");
    let engine = Sandbox::new(SandboxSettings { max_instances: 8, ..SandboxSettings::default() }).unwrap();
    assert!(engine.cache().is_none());
    assert_eq!(load(&engine, &v1.bytes), ArtifactSource::Compiled);
    assert_eq!(load(&engine, &v1.bytes), ArtifactSource::Compiled);
}
