//! One tenant's live instance: runs batches under its limits, and is discarded and
//! rebuilt from the pre-instantiated component whenever it faults.
//!
//! A pipeline's instance can keep a spare ([`ProcessorInstance::keep_spare`]): a
//! second instance of the same component, with the same provisions and limits,
//! instantiated by [`ProcessorInstance::prepare_spare`] when the pipeline thread has
//! nothing else to do. After a trap or a recycle the next batch takes the spare
//! instead of waiting for an instantiation. A spare is never told about partitions and
//! runs nothing until it goes live; it belongs to one [`ProcessorInstance`], so a new
//! processor version (a new `ProcessorInstance`) never gets an old version's spare.
//!
//! Every call into a guest is a future on ferry's runtime, raced against the batch's
//! deadline and against shutdown. A guest that computes yields at every epoch tick;
//! a guest that waits (a sleep, a poll, blocking I/O) waits in an async host call. In
//! both cases the deadline wins the race: the call is dropped, which unwinds the
//! guest, and the instance is thrown away. Nothing a guest does can hold its thread
//! past its deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::bindings::{Batch, Processor, TopicPartition};
use super::capability::log::TenantLabel;
use super::capability::output::{Emitted, OutputUsed};
use super::capability::state::StateBatch;
use super::component::ProcessorComponent;
use super::engine::Sandbox;
use super::fault::GuestFault;
use super::guest_state::{GuestState, Limits, Provisions};
use super::reply::BatchReply;

struct Live {
    store: Store<GuestState>,
    bindings: Processor,
    /// Partitions this instance was told about with `assigned`.
    told: Vec<(String, i32)>,
}

/// A tenant's processor, instantiated on demand.
pub struct ProcessorInstance {
    sandbox: Sandbox,
    component: Arc<ProcessorComponent>,
    provisions: Provisions,
    limits: Limits,
    label: TenantLabel,
    live: Option<Live>,
    instantiations: u64,
    /// Whether a spare is kept (pipelines do; one-off self-tests and trials do not).
    keeps_spare: bool,
    /// The spare, instantiated and idle.
    spare: Option<Live>,
    /// The last spare could not be instantiated: no new attempt until an instance is
    /// instantiated in place again (which reports why, as a fault).
    spare_refused: bool,
}

/// Why a guest call did not return.
enum Stopped {
    Deadline,
    Shutdown,
}

impl ProcessorInstance {
    /// Prepares an instance of `component` for `pipeline`; nothing runs until the
    /// first batch.
    pub fn new(
        sandbox: Sandbox,
        component: Arc<ProcessorComponent>,
        pipeline: &str,
        provisions: Provisions,
        limits: Limits,
    ) -> Self {
        let label = TenantLabel { pipeline: pipeline.into(), worker: None, digest: component.digest().into() };
        Self {
            sandbox,
            component,
            provisions,
            limits,
            label,
            live: None,
            instantiations: 0,
            keeps_spare: false,
            spare: None,
            spare_refused: false,
        }
    }

    /// Keeps a spare instance (see [`Self::prepare_spare`]), so that a fresh instance
    /// after a fault or a recycle does not wait for an instantiation. The spare holds
    /// a second slot of the instance pool and its own linear memory.
    pub fn keep_spare(mut self, keep: bool) -> Self {
        self.keeps_spare = keep;
        self
    }

    /// Whether it keeps a spare.
    pub fn keeps_spare(&self) -> bool {
        self.keeps_spare
    }

    /// Instantiates the spare, if this instance keeps one, has none, and has been
    /// instantiated before (a pipeline that never ran a batch holds no spare). Call it
    /// when the thread would otherwise wait: it takes an instantiation's time (tens
    /// of µs), within one batch's time limit. An instantiation that fails leaves no
    /// spare, and none is tried again until the next instance instantiated in place.
    pub fn prepare_spare(&mut self) {
        if !self.keeps_spare || self.spare.is_some() || self.spare_refused || self.instantiations == 0 {
            return;
        }
        match self.instantiate(self.deadline_from_now()) {
            Ok(spare) => self.spare = Some(spare),
            Err(fault) => {
                tracing::debug!(pipeline = &*self.label.pipeline, %fault, "no spare instance");
                self.spare_refused = true;
            }
        }
    }

    /// Whether a spare is ready.
    pub fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// The same, run by worker `worker` of a pipeline with more than one: the guest's
    /// log lines name it.
    pub fn of_worker(mut self, worker: Option<usize>) -> Self {
        self.label.worker = worker;
        self
    }

    /// The component this instance runs.
    pub fn component(&self) -> &Arc<ProcessorComponent> {
        &self.component
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many times a fresh instance was created (the first time included).
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }

    /// The largest linear memory the live instance has had, in bytes (`None` when
    /// there is no live instance).
    pub fn memory_high_water(&self) -> Option<u64> {
        self.live.as_ref().map(|live| live.store.data().limiter.high_water)
    }

    /// The deadline of a call starting now.
    pub fn deadline_from_now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.limits.time_per_batch_ms)
    }

    /// Processes `batch`, whose records have these `offsets` (ascending), before
    /// `deadline`. Returns the validated reply and the records the guest emitted.
    ///
    /// On any fault the instance is discarded and the next call starts fresh.
    pub fn process(
        &mut self,
        batch: &Batch,
        offsets: &[i64],
        deadline: Instant,
    ) -> Result<(BatchReply, Vec<Emitted>), GuestFault> {
        self.process_within(batch, offsets, deadline, &mut OutputUsed::default(), &mut None)
    }

    /// [`Self::process`] as one call of a batch that takes several (split around a
    /// faulting record): the batch's output limits are `used` that far, and what
    /// this call emits is added, whether it returns or faults. `state`, when the
    /// pipeline keeps state, is the batch's partition state: lent to the guest for
    /// the call and handed back with the call's writes kept (it returned) or dropped
    /// (it faulted).
    pub fn process_within(
        &mut self,
        batch: &Batch,
        offsets: &[i64],
        deadline: Instant,
        used: &mut OutputUsed,
        lent: &mut Option<StateBatch>,
    ) -> Result<(BatchReply, Vec<Emitted>), GuestFault> {
        let limit_ms = self.limits.time_per_batch_ms;
        let memory_limit = self.limits.memory_bytes;
        let sandbox = self.sandbox.clone();
        let live = self.live(deadline)?;
        live.store.data_mut().http.begin(deadline);
        if !live.told.iter().any(|(t, p)| *p == batch.partition && *t == batch.topic) {
            let partition = TopicPartition { topic: batch.topic.clone(), partition: batch.partition };
            let handler = live.bindings.ferry_processor_handler();
            let told = run_until(&sandbox, deadline, handler.call_assigned(&mut live.store, &partition));
            if let Err(fault) = settle_call(told, live, memory_limit, limit_ms) {
                self.live = None;
                return Err(fault);
            }
            live.told.push((batch.topic.clone(), batch.partition));
        }
        let state = live.store.data_mut();
        state.limiter.hit = false;
        state.output.begin(offsets, *used);
        state.state.active = lent.take();
        let handler = live.bindings.ferry_processor_handler();
        let result = run_until(&sandbox, deadline, handler.call_process(&mut live.store, batch));
        let outputs;
        (outputs, *used) = live.store.data_mut().output.take();
        let mut returned = live.store.data_mut().state.active.take();
        let high_water = live.store.data().limiter.high_water;
        let reply = settle_call(result, live, memory_limit, limit_ms)
            .and_then(|result| BatchReply::validate(result, offsets).map_err(GuestFault::BadReturn));
        if let Some(returned) = returned.as_mut() {
            if reply.is_ok() { returned.keep_call() } else { returned.drop_call() }
        }
        *lent = returned;
        // Wasm memory never shrinks: start over once a guest has grown through half
        // of its room (the room above the memory it starts with: an interpreter's
        // snapshot alone is 9-13 MiB), and never reuse an instance after it faulted.
        let initial = self.component.initial_memory();
        if reply.is_err() || high_water > initial + memory_limit.saturating_sub(initial) / 2 {
            self.live = None;
        }
        Ok((reply?, outputs))
    }

    /// Tells the live instance, if it was told about the partition, that it is gone.
    /// Returns whether the guest was called.
    pub fn revoked(&mut self, topic: &str, partition: i32) -> bool {
        let Some(live) = self.live.as_mut() else { return false };
        let Some(at) = live.told.iter().position(|(t, p)| *p == partition && t == topic) else { return false };
        live.told.swap_remove(at);
        let deadline = Instant::now() + Duration::from_millis(self.limits.time_per_batch_ms);
        let tp = TopicPartition { topic: topic.to_owned(), partition };
        live.store.data_mut().http.begin(deadline);
        let handler = live.bindings.ferry_processor_handler();
        let result = run_until(&self.sandbox, deadline, handler.call_revoked(&mut live.store, &tp));
        if let Err(fault) = settle_call(result, live, self.limits.memory_bytes, self.limits.time_per_batch_ms) {
            tracing::warn!(pipeline = &*self.label.pipeline, topic, partition, %fault, "guest fault while told of a revoke");
            self.live = None;
        }
        true
    }

    /// Runs the guest's self-test (before a version goes live) on a fresh instance,
    /// in a pool slot no worker needs: with none free (other self-tests hold them),
    /// it fails as the pool being full, which passes.
    pub fn self_test(&mut self) -> Result<Result<(), String>, GuestFault> {
        let Some(_slot) = self.sandbox.one_off_slot() else {
            return Err(GuestFault::PoolFull(
                "every slot not kept for the pipelines' workers is taken by other self-tests".to_owned(),
            ));
        };
        let deadline = self.deadline_from_now();
        let sandbox = self.sandbox.clone();
        let (memory_limit, limit_ms) = (self.limits.memory_bytes, self.limits.time_per_batch_ms);
        let live = self.live(deadline)?;
        live.store.data_mut().http.begin(deadline);
        let handler = live.bindings.ferry_processor_handler();
        let result = run_until(&sandbox, deadline, handler.call_self_test(&mut live.store));
        let verdict = settle_call(result, live, memory_limit, limit_ms);
        self.live = None;
        verdict
    }

    /// Drops the live instance, if any, returning its slot to the pool.
    pub fn recycle(&mut self) {
        self.live = None;
    }

    fn live(&mut self, deadline: Instant) -> Result<&mut Live, GuestFault> {
        if self.live.is_none() {
            let live = match self.spare.take() {
                Some(spare) => spare,
                None => {
                    let started = Instant::now();
                    let live = self.instantiate(deadline)?;
                    self.spare_refused = false;
                    tracing::debug!(
                        pipeline = &*self.label.pipeline,
                        micros = started.elapsed().as_micros() as u64,
                        "instantiated processor"
                    );
                    live
                }
            };
            self.instantiations += 1;
            self.live = Some(live);
        }
        Ok(self.live.as_mut().expect("just instantiated"))
    }

    /// A fresh instance, under this instance's provisions and limits.
    fn instantiate(&self, deadline: Instant) -> Result<Live, GuestFault> {
        let needs = self.component.initial_memory();
        if needs > self.limits.memory_bytes {
            return Err(GuestFault::Instantiate(format!(
                "the component starts with {:.1} MiB of linear memory, more than its limit of {} MiB \
                 (limits.memory_mib): raise it to at least {}",
                needs as f64 / MIB,
                self.limits.memory_bytes >> 20,
                minimum_memory_mib(needs)
            )));
        }
        let state = GuestState::new(&self.provisions, self.limits, self.label.clone());
        let mut store = Store::new(self.sandbox.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // What one call may copy from the guest into the host (a log line, a WASI
        // write; `emit` reads in place): no more than the guest may hold itself, and
        // a call that tries faults. (wasmtime's default is 128 MiB whatever the guest.)
        store.set_hostcall_fuel(usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX));
        // Yield at every tick: computing guests give the runtime a chance to check
        // their deadline (set before anything runs, start functions too).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let instantiated = run_until(&self.sandbox, deadline, self.component.pre.instantiate_async(&mut store));
        match instantiated {
            Ok(Ok(bindings)) => Ok(Live { store, bindings, told: Vec::new() }),
            // The pool is the host's: every slot taken is no fault of this guest.
            Ok(Err(e)) if e.chain().any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>()) => {
                Err(GuestFault::PoolFull(super::sanitize(&format!("{e:#}"), 300)))
            }
            Ok(Err(e)) => Err(GuestFault::Instantiate(super::sanitize(&format!("{e:#}"), 300))),
            Err(Stopped::Deadline) => Err(GuestFault::Timeout(self.limits.time_per_batch_ms)),
            Err(Stopped::Shutdown) => Err(GuestFault::Cancelled),
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

/// The smallest `limits.memory_mib` an instance of a component whose largest memory
/// starts at `initial` bytes can be created with.
pub fn minimum_memory_mib(initial: u64) -> u64 {
    initial.div_ceil(1 << 20).max(1)
}

/// Turns the end of a guest call into its value or a classified fault.
fn settle_call<T>(
    result: Result<wasmtime::Result<T>, Stopped>,
    live: &Live,
    memory_limit: u64,
    limit_ms: u64,
) -> Result<T, GuestFault> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            let memory_hit = live.store.data().limiter.hit.then_some(memory_limit);
            Err(GuestFault::classify(&error, memory_hit, limit_ms))
        }
        Err(Stopped::Deadline) => Err(GuestFault::Timeout(limit_ms)),
        Err(Stopped::Shutdown) => Err(GuestFault::Cancelled),
    }
}

/// Runs a guest call on the runtime until it returns, `deadline` passes, or the host
/// stops. A call that does not return is dropped, which unwinds the guest.
fn run_until<F: Future>(sandbox: &Sandbox, deadline: Instant, call: F) -> Result<F::Output, Stopped> {
    let runtime = sandbox.runtime();
    runtime.block_on(async {
        tokio::select! {
            biased;
            output = call => Ok(output),
            () = tokio::time::sleep_until(deadline.into()) => Err(Stopped::Deadline),
            () = runtime.stopped() => Err(Stopped::Shutdown),
        }
    })
}
