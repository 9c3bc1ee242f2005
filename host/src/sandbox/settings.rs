//! The host-wide sandbox settings: what the engine, its instance pool and the
//! artifact cache are built from.

use std::path::PathBuf;

/// Host-wide sandbox settings. Per-tenant limits live in [`super::Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// Largest wasm stack of any guest, in bytes. wasmtime applies it per engine.
    pub max_wasm_stack: usize,
    /// Largest linear memory any tenant may be given, in bytes (pool slot size).
    pub max_memory_bytes: u64,
    /// How many guest instances may exist at once (pool size).
    pub max_instances: u32,
    /// Where precompiled components are cached on disk; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self { max_wasm_stack: 512 << 10, max_memory_bytes: 256 << 20, max_instances: 256, cache_dir: None }
    }
}
