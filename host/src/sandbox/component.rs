//! Loading a tenant's component: is it a component at all, does it implement the
//! processor world, which capabilities does it import, and were they granted.
//! All of this happens off the processing path, before a version can run.

use std::fmt;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::ProcessorPre;
use super::cache::ArtifactSource;
use super::capability::{self, Capability, Grants, HANDLER_EXPORT, Imported};
use super::engine::Sandbox;
use super::guest_state::GuestState;

/// Why a component cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the processor for \
         the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Malformed or unsupported wasm.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not export the processor handler.
    #[error(
        "the component does not implement the ferry:processor world: it has no \
         `{HANDLER_EXPORT}` export (its exports: {exports})"
    )]
    MissingExport {
        /// What it does export.
        exports: String,
    },
    /// The handler export has the wrong shape.
    #[error("the component does not implement the ferry:processor world: {0}")]
    WrongWorld(String),
    /// It imports something ferry does not provide.
    #[error("the component imports `{0}`, which ferry does not provide")]
    UnknownImport(String),
    /// It imports a capability its pipeline was not granted.
    #[error("the component imports capability `{}`, which this pipeline does not grant{}", .0.capability, .0.hint)]
    NotGranted(capability::NotGranted),
}

/// What `ferry check` reports about a component.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// sha256 of the component bytes, hex.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// The host capabilities it imports.
    pub capabilities: Vec<Capability>,
    /// The initial size of its largest linear memory, in bytes: what an instance
    /// holds before it runs any code (the snapshot of a pre-initialised interpreter
    /// is most of it). `limits.memory_mib` caps each memory, so it must be at least
    /// this.
    pub initial_memory: u64,
}

/// A component that passed every check, ready to instantiate.
pub struct ProcessorComponent {
    digest: String,
    size: usize,
    capabilities: Vec<Capability>,
    initial_memory: u64,
    artifact: ArtifactSource,
    pub(crate) pre: ProcessorPre<GuestState>,
}

impl fmt::Debug for ProcessorComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorComponent")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("capabilities", &self.capabilities)
            .field("artifact", &self.artifact)
            .finish_non_exhaustive()
    }
}

impl ProcessorComponent {
    /// Compiles and checks `bytes` for a pipeline with these grants.
    pub fn load(sandbox: &Sandbox, bytes: &[u8], grants: &Grants) -> Result<Self, LoadError> {
        let (component, inspection, artifact) = compile_and_inspect(sandbox, bytes)?;
        capability::check_grants(&inspection.capabilities, grants).map_err(LoadError::NotGranted)?;
        let pre = sandbox.linker().instantiate_pre(&component).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = ProcessorPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let Inspection { digest, size, capabilities, initial_memory } = inspection;
        Ok(Self { digest, size, capabilities, initial_memory, artifact, pre })
    }

    /// Whether a pipeline with `grants` may run this component (a compiled
    /// component can serve several pipelines; each checks its own grants).
    pub fn check_grants(&self, grants: &Grants) -> Result<(), LoadError> {
        capability::check_grants(&self.capabilities, grants).map_err(LoadError::NotGranted)
    }

    /// Whether the processor reads record headers (imports `headers`): only then
    /// does the host read them from Kafka and put them in batches.
    pub fn wants_headers(&self) -> bool {
        self.capabilities.contains(&Capability::Headers)
    }

    /// sha256 of the component bytes, hex: the version's identity.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The host capabilities it imports.
    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }

    /// The initial size of its largest linear memory, in bytes (see
    /// [`Inspection::initial_memory`]).
    pub fn initial_memory(&self) -> u64 {
        self.initial_memory
    }

    /// Whether its native code was compiled for this load or came from the cache.
    pub fn artifact(&self) -> ArtifactSource {
        self.artifact
    }
}

/// sha256 of component bytes, hex: how ferry names a version.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `bytes` without any pipeline's grants: what `ferry check` prints.
pub fn inspect(sandbox: &Sandbox, bytes: &[u8]) -> Result<Inspection, LoadError> {
    let (component, inspection, _) = compile_and_inspect(sandbox, bytes)?;
    sandbox
        .linker()
        .instantiate_pre(&component)
        .and_then(ProcessorPre::new)
        .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
    Ok(inspection)
}

fn compile_and_inspect(sandbox: &Sandbox, bytes: &[u8]) -> Result<(Component, Inspection, ArtifactSource), LoadError> {
    if bytes.get(..4) != Some(b"\0asm") {
        return Err(LoadError::NotWasm);
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(LoadError::CoreModule);
    }
    let digest = digest_of(bytes);
    let compiled = match sandbox.cache() {
        Some(cache) => cache.component(sandbox.engine(), bytes, &digest),
        None => Component::new(sandbox.engine(), bytes).map(|c| (c, ArtifactSource::Compiled)),
    };
    let (component, artifact) = compiled.map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
    let engine = sandbox.engine();
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    if let Some(other) = exports.iter().find(|e| e.starts_with("ferry:processor/handler@") && *e != HANDLER_EXPORT) {
        return Err(LoadError::WrongWorld(format!(
            "it exports `{other}`, but this host runs {HANDLER_EXPORT}: rebuild it with the current ferry SDK"
        )));
    }
    if !exports.iter().any(|e| e == HANDLER_EXPORT) {
        let exports = if exports.is_empty() { "none".to_owned() } else { exports.join(", ") };
        return Err(LoadError::MissingExport { exports });
    }
    let mut capabilities = Vec::new();
    for (name, _) in ty.imports(engine) {
        match capability::classify(name) {
            Some(Imported::Capability(capability)) => capabilities.push(capability),
            Some(Imported::Types) => {}
            None => return Err(LoadError::UnknownImport(name.to_owned())),
        }
    }
    capabilities.sort();
    capabilities.dedup();
    let initial_memory = largest_initial_memory(bytes)?;
    Ok((component, Inspection { digest, size: bytes.len(), capabilities, initial_memory }, artifact))
}

/// The largest initial size of the linear memories the component's core modules
/// define (imported memories are defined elsewhere), in bytes. The store's limiter
/// caps each memory on its own, from its creation on.
fn largest_initial_memory(bytes: &[u8]) -> Result<u64, LoadError> {
    let mut largest = 0u64;
    // `parse_all` walks nested modules and components too.
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Invalid(e.to_string()))?;
        if let wasmparser::Payload::MemorySection(memories) = payload {
            for memory in memories {
                let memory = memory.map_err(|e| LoadError::Invalid(e.to_string()))?;
                let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                largest = largest.max(memory.initial.saturating_mul(page));
            }
        }
    }
    Ok(largest)
}
