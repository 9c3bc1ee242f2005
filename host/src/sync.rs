//! Small helpers for shared state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Locks `mutex`, going on with the data if a thread panicked while holding it: the
/// state behind ferry's locks stays consistent between statements, and a pipeline
/// that panicked is reported dead by its own liveness mark.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Background threads that share one stop flag: asked to stop together, and stopped
/// and joined when dropped (so none outlives what owns them).
#[derive(Default)]
pub(crate) struct StoppableThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StoppableThreads {
    /// Starts a thread named `name` running `body`, which should return soon after
    /// the flag it is given turns true.
    pub(crate) fn spawn(
        &mut self,
        name: String,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || body(&stop))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Asks every thread to stop (waking those parked), without waiting for them.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in &self.threads {
            thread.thread().unpark();
        }
    }
}

impl Drop for StoppableThreads {
    fn drop(&mut self) {
        self.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn dropping_stops_and_joins_parked_and_polling_threads() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut threads = StoppableThreads::default();
        let done = finished.clone();
        threads
            .spawn("parked".into(), move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park();
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let done = finished.clone();
        threads
            .spawn("polling".into(), move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        drop(threads);
        assert_eq!(finished.load(Ordering::Relaxed), 2, "both ran to their end before drop returned");
    }
}
