//! What a guest's [`Store`](wasmtime::Store) holds: its limits, its (empty) WASI
//! context, and the capabilities its pipeline granted.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::ferry::processor::{log, output, types};
use super::bindings::{EmitError, OutputRecord};
use super::text::sanitize;

/// Per-tenant resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit for one batch, in milliseconds.
    pub time_per_batch_ms: u64,
    /// Most output records one batch may emit.
    pub max_outputs_per_batch: usize,
    /// Largest output record (key + value + headers), in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            time_per_batch_ms: 5_000,
            max_outputs_per_batch: 100_000,
            max_output_bytes: 1 << 20,
        }
    }
}

/// What a pipeline allows its processor to do beyond pure computation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Topics the processor may emit output records to. Empty: no `output` capability.
    pub output_topics: BTreeSet<String>,
    /// Whether the processor may log through the `log` capability.
    pub log: bool,
}

/// Longest guest log line kept, in characters.
const MAX_LOG_CHARS: usize = 1024;
/// Longest stdout/stderr buffer kept per line before it is flushed, in bytes.
const MAX_STDIO_LINE: usize = 4096;

/// Identifies the tenant in logs.
#[derive(Debug, Clone)]
pub(crate) struct TenantLabel {
    pub pipeline: Arc<str>,
    pub digest: Arc<str>,
}

/// The data of one guest's store.
pub(crate) struct GuestState {
    pub limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    pub label: TenantLabel,
    /// Output records emitted during the current batch.
    pub outputs: Vec<OutputRecord>,
}

impl GuestState {
    pub fn new(grants: Arc<Grants>, limits: Limits, label: TenantLabel) -> Self {
        // No preopens, no environment, no arguments, no network: std works, nothing
        // outside the sandbox is reachable. Stdout and stderr go to our logs.
        let wasi = WasiCtx::builder()
            .stdout(GuestStdio::new(label.clone(), "stdout"))
            .stderr(GuestStdio::new(label.clone(), "stderr"))
            .allow_blocking_current_thread(false)
            .build();
        Self {
            limiter: MemoryLimiter::new(limits.memory_bytes),
            wasi,
            table: ResourceTable::new(),
            grants,
            limits,
            label,
            outputs: Vec::new(),
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

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

impl types::Host for GuestState {}

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = sanitize(&message, MAX_LOG_CHARS);
        let (pipeline, digest) = (&*self.label.pipeline, short(&self.label.digest));
        match level {
            log::Level::Trace => tracing::trace!(target: "ferry::guest", pipeline, digest, "{message}"),
            log::Level::Debug => tracing::debug!(target: "ferry::guest", pipeline, digest, "{message}"),
            log::Level::Info => tracing::info!(target: "ferry::guest", pipeline, digest, "{message}"),
            log::Level::Warn => tracing::warn!(target: "ferry::guest", pipeline, digest, "{message}"),
            log::Level::Error => tracing::error!(target: "ferry::guest", pipeline, digest, "{message}"),
        }
    }
}

impl output::Host for GuestState {
    fn emit(&mut self, record: OutputRecord) -> Result<(), EmitError> {
        if !self.grants.output_topics.contains(&record.topic) {
            return Err(EmitError::TopicNotAllowed(sanitize(&record.topic, 200)));
        }
        if self.outputs.len() >= self.limits.max_outputs_per_batch {
            return Err(EmitError::TooMany);
        }
        let size = output_size(&record);
        if size > self.limits.max_output_bytes {
            return Err(EmitError::TooLarge(size as u64));
        }
        self.outputs.push(record);
        Ok(())
    }
}

fn output_size(record: &OutputRecord) -> usize {
    let opt = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
    opt(&record.key) + opt(&record.value) + record.headers.iter().map(|h| h.name.len() + opt(&h.value)).sum::<usize>()
}

/// The first 12 hex digits of a digest: enough to tell versions apart in logs.
pub(crate) fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// A guest's stdout or stderr: complete lines go to the host's logs, sanitized and
/// truncated; an endless line is cut into pieces instead of buffered forever.
#[derive(Clone)]
struct GuestStdio {
    label: TenantLabel,
    stream: &'static str,
    line: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl GuestStdio {
    fn new(label: TenantLabel, stream: &'static str) -> Self {
        Self { label, stream, line: Arc::default() }
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() {
            let room = MAX_STDIO_LINE - line.len();
            let (chunk, rest, ends_line) = match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= room => (&bytes[..nl], &bytes[nl + 1..], true),
                _ if bytes.len() >= room => (&bytes[..room], &bytes[room..], true),
                _ => (bytes, &[][..], false),
            };
            line.extend_from_slice(chunk);
            if ends_line {
                self.emit_line(&line);
                line.clear();
            }
            bytes = rest;
        }
    }

    fn emit_line(&self, line: &[u8]) {
        let text = sanitize(&String::from_utf8_lossy(line), MAX_LOG_CHARS);
        tracing::info!(
            target: "ferry::guest",
            pipeline = &*self.label.pipeline,
            digest = short(&self.label.digest),
            stream = self.stream,
            "{text}"
        );
    }
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStdio {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStdio {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestStdio {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
