//! Host-side bindings generated from `wit/processor.wit`. Exports are called as async
//! functions: a guest runs as a future the host can stop at its deadline, whatever it
//! is doing (computing, or waiting in a WASI call).

// Generated code: its docs come from the WIT file, where it has them.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        // The superset world: a processor that imports no state is an instance of it too.
        world: "stateful-processor",
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

pub(crate) use generated::*;
pub(crate) use generated::{StatefulProcessor as Processor, StatefulProcessorPre as ProcessorPre};

pub(crate) use generated::ferry::processor::output::EmitError;
pub use generated::ferry::processor::output::OutputRecord;
pub(crate) use generated::ferry::processor::state::StateError;
pub(crate) use generated::ferry::processor::types::TopicPartition;
pub use generated::ferry::processor::types::{Batch, BatchResult, Failure, Header, Status};
