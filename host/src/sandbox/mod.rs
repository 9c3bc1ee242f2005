//! The WebAssembly sandbox: one wasmtime [`Engine`](wasmtime::Engine) for the whole
//! host, components loaded and checked off the hot path, and per-tenant instances
//! that are thrown away whenever they trap.

mod bindings;
mod cache;
mod component;
mod engine;
mod fault;
mod guest_state;
mod instance;
mod reply;
mod text;

pub use bindings::{Batch, BatchResult, Failure, Header, OutputRecord, Status};
pub use cache::{ArtifactCache, ArtifactSource, default_cache_dir, engine_key};
pub use component::{Capability, LoadError, ProcessorComponent, digest_of, inspect};
pub use engine::{Sandbox, SandboxSettings};
pub use fault::GuestFault;
pub use guest_state::{Grants, Limits};
pub use instance::ProcessorInstance;
pub use reply::{Outcome, Reply};
pub use text::sanitize;
