//! The processor version each pipeline runs, swapped atomically; the pipeline loop
//! picks up a new version at its next batch boundary.

use std::sync::{Arc, RwLock};

use crate::sandbox::ProcessorComponent;

/// The running and previous version of one pipeline's processor.
#[derive(Clone, Debug)]
pub struct ProcessorSlot {
    inner: Arc<RwLock<Versions>>,
}

#[derive(Debug)]
struct Versions {
    current: Arc<ProcessorComponent>,
    previous: Option<Arc<ProcessorComponent>>,
}

impl ProcessorSlot {
    /// A slot running `component`.
    pub fn new(component: Arc<ProcessorComponent>) -> Self {
        Self { inner: Arc::new(RwLock::new(Versions { current: component, previous: None })) }
    }

    /// The version new batches run on.
    pub fn current(&self) -> Arc<ProcessorComponent> {
        self.read().current.clone()
    }

    /// The version kept for rollback.
    pub fn previous(&self) -> Option<Arc<ProcessorComponent>> {
        self.read().previous.clone()
    }

    /// Makes `component` current; the old one becomes the rollback target.
    pub fn deploy(&self, component: Arc<ProcessorComponent>) {
        let mut versions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut versions.current, component);
        versions.previous = Some(old);
    }

    /// Swaps current and previous. Returns false when there is nothing to go back to.
    pub fn rollback(&self) -> bool {
        let mut versions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match versions.previous.take() {
            Some(previous) => {
                let failed = std::mem::replace(&mut versions.current, previous);
                versions.previous = Some(failed);
                true
            }
            None => false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}
