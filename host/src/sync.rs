//! Small helpers for shared state.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, going on with the data if a thread panicked while holding it: the
/// state behind ferry's locks stays consistent between statements, and a pipeline
/// that panicked is reported dead by its own liveness mark.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
