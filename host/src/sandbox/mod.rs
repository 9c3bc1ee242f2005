//! The WebAssembly sandbox: one wasmtime [`Engine`](wasmtime::Engine) for the whole
//! host, components loaded and checked off the hot path, the capabilities a
//! processor may import, and per-tenant instances that are thrown away whenever they
//! fault.

mod bindings;
mod cache;
pub mod capability;
mod component;
mod engine;
mod fault;
mod function_cache;
mod guest_state;
mod instance;
mod reply;
mod settings;
mod text;

pub use bindings::{Batch, BatchResult, Failure, Header, OutputRecord, Status};
pub use cache::{ArtifactCache, ArtifactSource, default_cache_dir, engine_key};
pub use capability::log::{GuestLine, LogRate, TenantLog};
pub use capability::output::{Emitted, OutputLimits, OutputUsed};
pub use capability::state::{Changes, PartitionStore, SetAside, StateBatch, StateLimits};
pub use capability::{Capability, Disposition, Grants};
pub use component::{LoadError, ProcessorComponent, digest_of, inspect};
pub use engine::Sandbox;
pub use fault::{FaultKind, GuestFault};
pub use guest_state::{Limits, Provisions};
pub use instance::{ProcessorInstance, minimum_memory_mib};
pub use reply::{BatchReply, Outcome};
pub use settings::SandboxSettings;
pub use text::{sanitize, short};
