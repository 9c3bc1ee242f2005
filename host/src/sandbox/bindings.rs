//! Host-side bindings generated from `wit/processor.wit`. Exports are called as async
//! functions: a guest runs as a future the host can stop at its deadline, whatever it
//! is doing (computing, or waiting in a WASI call).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub use ferry::processor::output::{EmitError, OutputRecord};
pub use ferry::processor::types::{Batch, BatchResult, Failure, Header, Status, TopicPartition};
