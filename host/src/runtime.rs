//! The one tokio runtime ferry owns. Guests run on it (as futures the host can stop
//! at their deadline), WASI's async I/O and timers run on it, and so does the admin
//! server. No library starts a runtime of its own: wasmtime-wasi's async bindings
//! use the caller's, and rdkafka is driven by its own C threads.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;

/// How often a wait for shutdown looks at the flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A handle on ferry's runtime and its stop flag; clones share both.
#[derive(Clone, Debug)]
pub struct Runtime {
    runtime: Arc<Owned>,
    stop: Arc<AtomicBool>,
}

/// Shuts the runtime down without blocking when the last handle goes, which may
/// happen on one of its own threads (where a blocking shutdown would panic).
#[derive(Debug)]
struct Owned(Option<tokio::runtime::Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Runtime {
    /// Starts the runtime: one worker thread (the admin server and timers; guests run
    /// on the threads that call [`Self::block_on`]).
    pub fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(16)
            .thread_name("ferry-rt")
            .enable_all()
            .build()
            .context("failed to start the tokio runtime")?;
        Ok(Runtime { runtime: Arc::new(Owned(Some(runtime))), stop: Arc::default() })
    }

    /// The runtime's handle, to spawn tasks on it.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.0.as_ref().expect("the runtime lives until dropped").handle()
    }

    /// Runs `future` to completion on the calling thread, which must not be one of
    /// the runtime's own (pipeline threads, `spawn_blocking` tasks and tools are fine).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle().block_on(future)
    }

    /// The flag that stops everything: set by SIGINT/SIGTERM and by shutdown.
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.stop
    }

    /// Asks everything to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Completes once a stop is asked for (within [`STOP_POLL`]).
    pub async fn stopped(&self) {
        while !self.stopping() {
            tokio::time::sleep(STOP_POLL).await;
        }
    }
}
