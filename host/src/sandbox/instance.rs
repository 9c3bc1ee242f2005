//! One tenant's live instance: runs batches under its limits, and is discarded and
//! rebuilt from the pre-instantiated component whenever it faults.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use super::bindings::{Batch, OutputRecord, Processor};
use super::component::ProcessorComponent;
use super::engine::{EPOCH_TICK, Sandbox};
use super::fault::GuestFault;
use super::guest_state::{Grants, GuestState, Limits, TenantLabel};
use super::reply::Reply;

struct Live {
    store: Store<GuestState>,
    bindings: Processor,
}

/// A tenant's processor, instantiated on demand.
pub struct ProcessorInstance {
    sandbox: Sandbox,
    component: Arc<ProcessorComponent>,
    grants: Arc<Grants>,
    limits: Limits,
    label: TenantLabel,
    live: Option<Live>,
    instantiations: u64,
}

impl ProcessorInstance {
    /// Prepares an instance of `component` for `pipeline`; nothing runs until the
    /// first batch.
    pub fn new(
        sandbox: Sandbox,
        component: Arc<ProcessorComponent>,
        pipeline: &str,
        grants: Arc<Grants>,
        limits: Limits,
    ) -> Self {
        let label = TenantLabel { pipeline: pipeline.into(), digest: component.digest().into() };
        Self { sandbox, component, grants, limits, label, live: None, instantiations: 0 }
    }

    /// The component this instance runs.
    pub fn component(&self) -> &Arc<ProcessorComponent> {
        &self.component
    }

    /// How many times a fresh instance was created (the first time included).
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }

    /// Processes `batch`, whose records have these `offsets` (ascending). Returns the
    /// validated reply and the output records the guest emitted.
    ///
    /// On any fault the instance is discarded and the next call starts fresh.
    pub fn process(&mut self, batch: &Batch, offsets: &[i64]) -> Result<(Reply, Vec<OutputRecord>), GuestFault> {
        let time_limit_ms = self.limits.time_per_batch_ms;
        let memory_limit = self.limits.memory_bytes;
        let live = self.live()?;
        live.store.data_mut().limiter.hit = false;
        live.store.data_mut().outputs.clear();
        live.store.set_epoch_deadline(deadline_ticks(time_limit_ms));
        let result = live.bindings.ferry_processor_handler().call_process(&mut live.store, batch);
        let state = live.store.data_mut();
        let outputs = std::mem::take(&mut state.outputs);
        let memory_hit = state.limiter.hit.then_some(memory_limit);
        let high_water = state.limiter.high_water;
        let reply = match result {
            Ok(result) => Reply::validate(result, offsets).map_err(GuestFault::BadReturn),
            Err(error) => Err(GuestFault::classify(&error, memory_hit, time_limit_ms)),
        };
        // Wasm memory never shrinks: start over once a guest has grown large, and
        // never reuse an instance after it faulted.
        if reply.is_err() || high_water > memory_limit / 2 {
            self.live = None;
        }
        Ok((reply?, outputs))
    }

    /// Runs the guest's self-test (used before a new version goes live).
    pub fn self_test(&mut self) -> Result<Result<(), String>, GuestFault> {
        let time_limit_ms = self.limits.time_per_batch_ms;
        let live = self.live()?;
        live.store.set_epoch_deadline(deadline_ticks(time_limit_ms));
        let result = live.bindings.ferry_processor_handler().call_self_test(&mut live.store);
        let memory_hit = live.store.data().limiter.hit.then_some(self.limits.memory_bytes);
        result.map_err(|error| {
            self.live = None;
            GuestFault::classify(&error, memory_hit, time_limit_ms)
        })
    }

    /// Drops the live instance, if any, returning its slot to the pool.
    pub fn recycle(&mut self) {
        self.live = None;
    }

    fn live(&mut self) -> Result<&mut Live, GuestFault> {
        if self.live.is_none() {
            let started = Instant::now();
            let state = GuestState::new(self.grants.clone(), self.limits, self.label.clone());
            let mut store = Store::new(self.sandbox.engine(), state);
            store.limiter(|state| &mut state.limiter);
            // The deadline also covers start functions run during instantiation.
            store.set_epoch_deadline(deadline_ticks(self.limits.time_per_batch_ms));
            let bindings = self
                .component
                .pre
                .instantiate(&mut store)
                .map_err(|e| GuestFault::Instantiate(super::sanitize(&format!("{e:#}"), 300)))?;
            self.instantiations += 1;
            tracing::debug!(
                pipeline = &*self.label.pipeline,
                micros = started.elapsed().as_micros() as u64,
                "instantiated processor"
            );
            self.live = Some(Live { store, bindings });
        }
        Ok(self.live.as_mut().expect("just instantiated"))
    }
}

fn deadline_ticks(time_limit_ms: u64) -> u64 {
    (time_limit_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
}
