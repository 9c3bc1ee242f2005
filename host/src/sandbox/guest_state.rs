//! What a guest's [`Store`](wasmtime::Store) holds: its memory limiter, its (empty)
//! WASI context, and each capability's state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ferry::processor::types;
use super::capability::headers::HeadersState;
use super::capability::http::{HttpMeter, HttpState};
use super::capability::log::{LogState, TenantLabel, TenantLog};
use super::capability::output::{OutputLimits, OutputState};
use super::capability::settings::SettingsState;
use super::capability::state::{StateLimits, StateState};
use super::capability::{Grants, wasi};

/// Per-tenant resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for one batch, in milliseconds (waits included).
    pub time_per_batch_ms: u64,
    /// What one batch may emit.
    pub output: OutputLimits,
    /// What state a partition may hold and a batch may write.
    pub state: StateLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            time_per_batch_ms: 5_000,
            output: OutputLimits::default(),
            state: StateLimits::default(),
        }
    }
}

/// Everything a pipeline gives its processor: grants, settings and its log.
#[derive(Debug, Clone)]
pub struct Provisions {
    /// What it may do.
    pub grants: Arc<Grants>,
    /// The pipeline's settings.
    pub settings: Arc<BTreeMap<String, String>>,
    /// Where its logs go (rate-limited per pipeline).
    pub log: Arc<TenantLog>,
    /// Its outgoing requests, counted (shared by the pipeline's workers).
    pub http_meter: Arc<HttpMeter>,
}

impl Provisions {
    /// Provisions for `pipeline` with default log rate and no settings (tools, tests).
    pub fn simple(pipeline: &str, grants: Grants) -> Self {
        Provisions {
            grants: Arc::new(grants),
            settings: Arc::default(),
            log: TenantLog::new(pipeline, Default::default()),
            http_meter: Arc::default(),
        }
    }
}

/// The data of one guest's store.
pub(crate) struct GuestState {
    pub limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
    pub log: LogState,
    pub output: OutputState,
    pub settings: SettingsState,
    pub headers: HeadersState,
    pub state: StateState,
    pub http: HttpState,
}

impl GuestState {
    pub(crate) fn new(provisions: &Provisions, limits: Limits, label: TenantLabel) -> Self {
        let topics: Arc<BTreeSet<String>> = Arc::new(provisions.grants.output_topics.clone());
        Self {
            limiter: MemoryLimiter::new(limits.memory_bytes),
            wasi: wasi::context(&label, &provisions.log),
            table: ResourceTable::new(),
            log: LogState { label, log: provisions.log.clone() },
            output: OutputState::new(topics, limits.output),
            settings: SettingsState { values: provisions.settings.clone() },
            headers: HeadersState,
            state: StateState::default(),
            http: HttpState::new(provisions.grants.http.clone(), provisions.http_meter.clone()),
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for GuestState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl types::Host for GuestState {}

/// Caps linear memory and remembers that the cap was hit, so an abort that follows
/// a refused allocation is reported as out-of-memory rather than as a panic.
pub(crate) struct MemoryLimiter {
    limit: u64,
    /// Set when a growth past the limit was refused during the current call.
    pub hit: bool,
    /// The largest memory size granted so far, for recycling on a high-water mark.
    pub high_water: u64,
}

impl MemoryLimiter {
    fn new(limit: u64) -> Self {
        Self { limit, hit: false, high_water: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.high_water = self.high_water.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        4
    }
}
