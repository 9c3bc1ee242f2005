//! Host-side bindings generated from `wit/processor.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
});

pub use ferry::processor::output::{EmitError, OutputRecord};
pub use ferry::processor::types::{Batch, BatchResult, Failure, Header, Status};
