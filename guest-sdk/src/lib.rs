//! Write ferry stream processors in plain Rust.
//!
//! A processor receives batches of Kafka records from one topic-partition and answers
//! one [`Outcome`] per record; the host commits an input offset only once that record
//! and every record before it is finished. Implement [`Processor`], export the type
//! with [`export_processor!`], and build the crate as a `cdylib` for
//! `wasm32-wasip2`: the result is a component the ferry host can run.
//!
//! ```
//! use ferry_sdk::{Context, Error, Processor, Record};
//!
//! /// Forwards records to `shouted`, with the value upper-cased.
//! #[derive(Default)]
//! struct Shout;
//!
//! impl Processor for Shout {
//!     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let value = record.value().ok_or_else(|| Error::reject("tombstones are not supported"))?;
//!         ctx.emit_value("shouted", value.to_ascii_uppercase())?;
//!         Ok(())
//!     }
//! }
//!
//! ferry_sdk::export_processor!(Shout);
//!
//! // Natively, the same code runs under `cargo test`:
//! # fn main() {
//! use ferry_sdk::testing::{Harness, TestBatch};
//! let run = Harness::new().allow_topic("shouted").run(&mut Shout, &TestBatch::new("in", 0).record("k", "hi"));
//! assert!(run.all_processed());
//! assert_eq!(run.emitted[0].value_str(), Some("HI"));
//! # }
//! ```
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//! ```
//!
//! `ferry build` then produces the component (it runs `cargo build --target
//! wasm32-wasip2` with the right profile).
//!
//! Outputs belong to records: the host publishes what a record emitted only if the
//! record ends processed, so a record that is retried, rejected or crashes the guest
//! leaves no output behind.
//!
//! Capabilities follow use: a component that never emits does not import the host's
//! `output` interface, one that never logs does not import `log`, and one that never
//! reads headers does not import `headers` (and gets batches without them, which is
//! cheaper). The host refuses a component that imports a capability its pipeline was
//! not granted.
//!
//! State kept in the processor's fields persists from batch to batch but only for the
//! life of one WebAssembly instance; see [`Processor`].

#![deny(missing_docs)]

mod context;
pub mod http;
#[cfg(not(target_arch = "wasm32"))]
mod http_stand_in;
mod partition;
#[cfg(not(target_arch = "wasm32"))]
mod pipeline;
mod processor;
mod record;
mod settings;
#[cfg(not(target_arch = "wasm32"))]
mod sink;
mod state;

pub mod limits;
pub mod wire;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::{Context, EmitError, Level, Output};
pub use partition::PerPartition;
pub use processor::{Error, Outcome, Processor, ResultExt, TopicPartition};
pub use record::{Batch, Headers, Record, Records};
pub use settings::{SettingError, Settings};
#[cfg(feature = "json")]
pub use state::JsonStateError;
pub use state::{State, StateError};

/// Bindings generated from the WIT contract. Not part of the API.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, rust_2018_idioms)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        // The world with `state`: a processor imports it only if it calls `ctx.state()`.
        world: "stateful-processor",
        ownership: Borrowing { duplicate_if_necessary: true },
        pub_export_macro: true,
        export_macro_name: "__ferry_export",
        default_bindings_module: "ferry_sdk::__bindings",
    });
}

/// Export glue used by [`export_processor!`]. Not part of the API.
#[doc(hidden)]
#[path = "export.rs"]
pub mod __private;

/// Exports a [`Processor`] as the component's `ferry:processor/handler`.
///
/// Use it once per crate, with the processor type:
///
/// ```
/// # use ferry_sdk::{Context, Error, Processor, Record};
/// #[derive(Default)]
/// struct Passthrough;
///
/// impl Processor for Passthrough {
///     fn process(&mut self, _: &Record<'_>, _: &mut Context) -> Result<(), Error> {
///         Ok(())
///     }
/// }
///
/// ferry_sdk::export_processor!(Passthrough);
/// # fn main() {}
/// ```
///
/// The instance is created with [`Default`] and [`Processor::configure`]d when the
/// host first needs it, and kept in a static for the life of the WebAssembly instance. The exports only exist when building for
/// `wasm32`; natively the macro only checks the type, so the crate can also be an
/// `rlib` used by its own unit tests.
#[macro_export]
macro_rules! export_processor {
    ($processor:ty) => {
        const _: () = {
            ::std::thread_local! {
                static FERRY_PROCESSOR: $crate::__private::Slot<$processor> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            #[allow(dead_code)]
            struct FerryExport;

            impl $crate::__private::Guest for FerryExport {
                fn process(batch: $crate::__private::WireBatch) -> $crate::__private::WireBatchResult {
                    $crate::__private::process(&FERRY_PROCESSOR, batch)
                }

                fn assigned(partition: $crate::__private::WireTopicPartition) {
                    $crate::__private::assigned(&FERRY_PROCESSOR, partition)
                }

                fn revoked(partition: $crate::__private::WireTopicPartition) {
                    $crate::__private::revoked(&FERRY_PROCESSOR, partition)
                }

                fn self_test() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::self_test::<$processor>()
                }
            }

            #[cfg(target_arch = "wasm32")]
    $crate::__bindings::__ferry_export!(FerryExport with_types_in $crate::__bindings);
        };
    };
}
