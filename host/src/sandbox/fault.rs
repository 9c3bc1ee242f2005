//! What went wrong inside a guest, classified so operators and policies can tell a
//! bug from a hostile or overloaded tenant.

use std::fmt;

use wasmtime::Trap;

/// A guest failure. Every variant leaves the host running; the instance that produced
/// it is discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFault {
    /// The guest panicked or aborted (`unreachable` in wasm).
    #[error("guest panicked: {0}")]
    Panic(String),
    /// The batch exceeded its time limit.
    #[error("guest exceeded its time limit of {0} ms per batch")]
    Timeout(u64),
    /// The guest tried to grow its memory past its limit.
    #[error("guest exceeded its memory limit of {0} bytes")]
    OutOfMemory(u64),
    /// The guest exhausted its wasm stack.
    #[error("guest overflowed its stack")]
    StackOverflow,
    /// The guest returned something the host cannot trust.
    #[error("guest returned an invalid result: {0}")]
    BadReturn(String),
    /// Any other trap (out-of-bounds access, division by zero, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The instance could not be created (start function trapped, memory below
    /// what it starts with).
    #[error("guest could not be instantiated: {0}")]
    Instantiate(String),
    /// The instance could not be created because every slot of the instance pool
    /// is taken (`sandbox.max_instances`): not the guest's fault, and it passes. A
    /// batch's records are tried again without being charged.
    #[error("guest could not be instantiated now: the instance pool is full ({0})")]
    PoolFull(String),
    /// The host is shutting down and stopped the call: not the guest's fault, and
    /// nothing of the batch counts as done.
    #[error("the host stopped the call to shut down")]
    Cancelled,
}

/// The short kind name used in logs and metrics labels.
#[allow(missing_docs, reason = "the names say it; `GuestFault` documents each")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Panic,
    Timeout,
    OutOfMemory,
    StackOverflow,
    BadReturn,
    Trap,
    Instantiate,
    Cancelled,
    Host,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Panic => "panic",
            FaultKind::Timeout => "timeout",
            FaultKind::OutOfMemory => "out_of_memory",
            FaultKind::StackOverflow => "stack_overflow",
            FaultKind::BadReturn => "bad_return",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::Cancelled => "cancelled",
            FaultKind::Host => "host",
        })
    }
}

impl GuestFault {
    /// The kind, for metrics labels.
    pub fn kind(&self) -> FaultKind {
        match self {
            GuestFault::Panic(_) => FaultKind::Panic,
            GuestFault::Timeout(_) => FaultKind::Timeout,
            GuestFault::OutOfMemory(_) => FaultKind::OutOfMemory,
            GuestFault::StackOverflow => FaultKind::StackOverflow,
            GuestFault::BadReturn(_) => FaultKind::BadReturn,
            GuestFault::Trap(_) => FaultKind::Trap,
            GuestFault::Instantiate(_) => FaultKind::Instantiate,
            GuestFault::Cancelled => FaultKind::Cancelled,
            GuestFault::PoolFull(_) => FaultKind::Host,
        }
    }

    /// Whether the host, not the guest, failed (nothing to charge the records for):
    /// the pool was full, or the host stopped the call.
    pub fn is_the_hosts(&self) -> bool {
        matches!(self, GuestFault::PoolFull(_) | GuestFault::Cancelled)
    }

    /// Whether the same call may succeed later without anything changing: it ran
    /// out of time (a loaded host), the pool was full, or the host stopped it.
    pub fn is_transient(&self) -> bool {
        matches!(self, GuestFault::Timeout(_) | GuestFault::PoolFull(_) | GuestFault::Cancelled)
    }

    /// Classifies an error from a guest call. `memory_limit_hit` says whether the
    /// store's limiter refused a memory growth during the call: a Rust guest turns
    /// that into an abort, which would otherwise look like a panic.
    pub fn classify(error: &wasmtime::Error, memory_limit_hit: Option<u64>, time_limit_ms: u64) -> Self {
        if let Some(limit) = memory_limit_hit {
            return GuestFault::OutOfMemory(limit);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => GuestFault::Timeout(time_limit_ms),
            Some(Trap::StackOverflow) => GuestFault::StackOverflow,
            Some(Trap::UnreachableCodeReached) => GuestFault::Panic(root_message(error)),
            Some(Trap::AllocationTooLarge) => GuestFault::OutOfMemory(0),
            Some(trap) => GuestFault::Trap(trap.to_string()),
            None => GuestFault::BadReturn(root_message(error)),
        }
    }
}

/// The error chain on one line, without the wasm backtrace.
fn root_message(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    super::sanitize(text.lines().next().unwrap_or_default(), 300)
}
