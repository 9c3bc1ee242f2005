//! The one [`Engine`] of a host: its configuration, the epoch ticker that makes
//! running guests yield, the linker every component is checked and instantiated
//! against, and the runtime guests run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::ArtifactCache;
use super::capability;
use super::function_cache::FunctionCache;
use super::guest_state::GuestState;
use super::settings::SandboxSettings;
use crate::runtime::Runtime;

/// How often the epoch advances: how often a computing guest yields, so its
/// deadline (and shutdown) can stop it.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Stack room for host code (WASI, ferry's capabilities) above the guest's own
/// stack on the fiber a guest runs on.
const HOST_STACK_ROOM: usize = 1 << 20;

/// Core instances one component instance may need from the pool (see
/// `engine_config`).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Bytes of a pool slot's linear memory kept resident (reset in place) when its
/// instance goes.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
/// The same for its tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The shared engine, linker and runtime.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<GuestState>,
    settings: SandboxSettings,
    cache: Option<ArtifactCache>,
    runtime: Runtime,
    ticker_stop: Arc<AtomicBool>,
    /// Pool slots left for instances that are not a worker's (self-tests).
    one_offs: OneOffSlots,
}

/// The instance pool's slots for instances that belong to no worker: the self-tests
/// of start-up and of deploys. The workers' slots are set aside
/// ([`Sandbox::reserve_for_workers`]), so a self-test never takes the slot a live
/// worker needs; one that finds none free fails as the pool being full (a
/// transient fault: group deploys try again).
#[derive(Debug)]
struct OneOffSlots {
    free: Mutex<usize>,
}

/// A slot for one instance that belongs to no worker; given back when dropped.
pub(crate) struct OneOffSlot {
    sandbox: Sandbox,
}

impl Drop for OneOffSlot {
    fn drop(&mut self) {
        *crate::sync::lock(&self.sandbox.inner.one_offs.free) += 1;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// Builds the engine (pooling allocator, epoch interruption) with a runtime of its
    /// own (tools and tests; a host passes its own with [`Self::with_runtime`]).
    pub fn new(settings: SandboxSettings) -> anyhow::Result<Self> {
        Self::with_runtime(settings, Runtime::new()?)
    }

    /// Builds the engine, running guests on `runtime`, and starts its ticker.
    pub fn with_runtime(settings: SandboxSettings, runtime: Runtime) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(&settings))
            .map_err(anyhow::Error::from)
            .context("failed to create the wasmtime engine")?;
        let mut linker = Linker::<GuestState>::new(&engine);
        capability::link(&mut linker).context("failed to link the host's capabilities")?;
        // The cache only saves time: a host whose cache is unusable still runs.
        let cache = settings.cache_dir.as_deref().and_then(|dir| {
            ArtifactCache::open(dir, &engine, &settings)
                .inspect_err(|e| tracing::warn!(error = %format!("{e:#}"), "not caching compiled components"))
                .ok()
        });
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), ticker_stop.clone());
        let one_offs = OneOffSlots { free: Mutex::new(settings.max_instances as usize) };
        Ok(Self { inner: Arc::new(Inner { engine, linker, settings, cache, runtime, ticker_stop, one_offs }) })
    }

    /// Sets aside `instances` slots of the pool for the workers' instances (live and
    /// spare); self-tests share the rest. Call it once, before anything runs.
    pub fn reserve_for_workers(&self, instances: usize) {
        let left = (self.inner.settings.max_instances as usize).saturating_sub(instances);
        *crate::sync::lock(&self.inner.one_offs.free) = left;
    }

    /// A pool slot for an instance that belongs to no worker, if one is free.
    pub(crate) fn one_off_slot(&self) -> Option<OneOffSlot> {
        let mut free = crate::sync::lock(&self.inner.one_offs.free);
        *free = free.checked_sub(1)?;
        Some(OneOffSlot { sandbox: self.clone() })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<GuestState> {
        &self.inner.linker
    }

    /// The runtime guests run on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The settings the engine was built with.
    pub fn settings(&self) -> &SandboxSettings {
        &self.inner.settings
    }

    /// The on-disk cache of compiled components, when one is configured and usable.
    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.inner.cache.as_ref()
    }
}

fn engine_config(settings: &SandboxSettings) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(settings.max_wasm_stack);
    // Guests run on fibers of this size: their own stack plus room for host calls.
    config.async_stack_size(settings.max_wasm_stack + HOST_STACK_ROOM);
    // A fresh instance maps its initial memory copy-on-write from the compiled
    // component's image (wasmtime's default, relied on here): a pre-initialised
    // Python or JavaScript snapshot (9-13 MiB of data) is mapped, not copied, and
    // only the pages the guest writes are copied. Without it a fresh Python
    // instance costs ~4× more. The snapshots' data segments sit at constant offsets
    // and are dense, so wasmtime builds the image whatever their size.
    config.memory_init_cow(true);
    // Instances come from a pool of pre-reserved slots: instantiation is a few
    // microseconds, and a slot's memory is reset before it is reused.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(settings.max_instances);
    // A counter, not a reservation: a componentize-py component instantiates 15
    // core modules (CPython, its libraries, WASI adapters), componentize-js 4,
    // a Rust guest 3.
    pool.total_core_instances(settings.max_instances * CORE_INSTANCES_PER_COMPONENT);
    pool.total_memories(settings.max_instances * 2);
    pool.total_tables(settings.max_instances * 4);
    pool.max_memories_per_component(4);
    pool.max_tables_per_component(8);
    pool.max_memory_size(settings.max_memory_bytes as usize);
    pool.max_component_instance_size(1 << 20);
    pool.max_core_instance_size(1 << 20);
    pool.table_elements(100_000);
    // One fiber stack per live instance, plus the self-tests of deploys.
    pool.total_stacks(settings.max_instances);
    // A slot given back (a recycle, a trap) is reset by rewriting the pages the
    // instance dirtied, found with Linux's PAGEMAP_SCAN, instead of unmapping them:
    // the next instance in the slot starts without page faults on the memory its
    // predecessor used (a fresh instance 6 µs instead of 16, BENCHMARKS.md). Up to
    // this much per slot stays resident; past it, pages are released as before.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
    pool.table_keep_resident(KEEP_RESIDENT_TABLE);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    // Reuse the least recently used slot rather than warm a cold one: the slots
    // ever used (and what they keep resident) stay as many as the instances that
    // were alive at once, not up to the whole pool after many deploys.
    pool.max_unused_warm_slots(0);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // A component compiled for the first time takes from disk every function the
    // host compiled before (function_cache.rs): a new version of a Python or
    // JavaScript processor compiles little more than its own code. Like the
    // artifact cache, it only saves time.
    if let Some(dir) = settings.cache_dir.as_deref() {
        let enabled = FunctionCache::open(dir)
            .and_then(|cache| Ok(config.enable_incremental_compilation(Arc::new(cache)).map(|_| ())?));
        if let Err(error) = enabled {
            tracing::warn!(error = %format!("{error:#}"), "not caching compiled functions");
        }
    }
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so running guests yield. Stops
/// when the engine is dropped.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    thread::Builder::new()
        .name("ferry-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("failed to spawn the epoch ticker thread");
}
