//! The `headers` capability: a processor that imports it gets record headers in its
//! batches. The import is the request; the function only confirms it.

use crate::sandbox::bindings::ferry::processor::headers as wit;

/// The import name.
pub const IMPORT: &str = "ferry:processor/headers@0.2.0";

/// The `headers` capability's part of a guest's store.
pub struct HeadersState;

impl wit::Host for HeadersState {
    fn enabled(&mut self) -> bool {
        true
    }
}
