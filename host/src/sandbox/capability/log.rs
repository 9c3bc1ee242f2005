//! The `log` capability, and the guest's stdout and stderr: everything a tenant
//! writes ends up in the host's logs under the target `ferry::guest`, sanitized,
//! truncated, and rate-limited per pipeline (lines and bytes per second, all three
//! streams together), so no tenant can flood an operator's logs or disks.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::Grants;
use crate::sandbox::bindings::ferry::processor::log as wit;
use crate::sandbox::text::{sanitize, short};
use crate::sync::lock;

/// The import name.
pub const IMPORT: &str = "ferry:processor/log@0.2.0";

/// Longest guest log line kept, in characters.
pub const MAX_LOG_CHARS: usize = 1024;
/// Longest stdout/stderr line buffered before it is cut, in bytes.
const MAX_STDIO_LINE: usize = 4096;

/// How much a pipeline's processor may log (`[pipeline.logs]`). A second's worth
/// may come in one burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogRate {
    /// Lines per second (log calls, stdout and stderr lines together).
    pub lines_per_sec: u32,
    /// Bytes per second of those lines (after truncation).
    pub bytes_per_sec: u64,
}

impl Default for LogRate {
    fn default() -> Self {
        LogRate { lines_per_sec: 100, bytes_per_sec: 64 << 10 }
    }
}

/// `None` if granted, else how to grant it.
pub(super) fn check_grant(grants: &Grants) -> Option<&'static str> {
    (!grants.log).then_some(" (set `allow_log = true`)")
}

/// Who is logging: shown on every line.
#[derive(Debug, Clone)]
pub struct TenantLabel {
    /// The pipeline.
    pub pipeline: Arc<str>,
    /// Which of the pipeline's workers runs it, when there is more than one.
    pub worker: Option<usize>,
    /// The component's digest.
    pub digest: Arc<str>,
}

/// A pipeline's guest log: the rate limit and its counters, shared by every instance
/// the pipeline runs (so recycling an instance does not reset the limit).
#[derive(Debug)]
pub struct TenantLog {
    pipeline: Arc<str>,
    rate: LogRate,
    bucket: Mutex<Bucket>,
    dropping: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
    /// `Some` for a recording log ([`TenantLog::recording`]).
    recorded: Option<Mutex<Vec<GuestLine>>>,
}

/// A line a guest wrote, as a recording log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLine {
    /// `trace`, `debug`, `info`, `warn` or `error` (stdout and stderr lines are `info`).
    pub level: &'static str,
    /// `log` for the `log` capability, else `stdout` or `stderr`.
    pub stream: String,
    /// The line, sanitized and truncated as the host logs it.
    pub message: String,
}

#[derive(Debug)]
struct Bucket {
    lines: f64,
    bytes: f64,
    at: Instant,
    dropped_since_start: u64,
    last_drop: Option<Instant>,
}

/// How long a pipeline's guest log must go without a dropped line before dropping
/// counts as over (a flood above the rate alternates passing and dropped lines).
const QUIET_BEFORE_STOP: std::time::Duration = std::time::Duration::from_secs(1);

impl TenantLog {
    /// A fresh log for `pipeline` with this rate.
    pub fn new(pipeline: &str, rate: LogRate) -> Arc<Self> {
        Arc::new(Self::with(pipeline, rate, None))
    }

    /// A log that keeps every line in memory, in order and without a rate limit,
    /// instead of writing it to the host's logs: what `ferry test` shows per record.
    pub fn recording(pipeline: &str) -> Arc<Self> {
        Arc::new(Self::with(pipeline, LogRate::default(), Some(Mutex::default())))
    }

    fn with(pipeline: &str, rate: LogRate, recorded: Option<Mutex<Vec<GuestLine>>>) -> Self {
        TenantLog {
            pipeline: pipeline.into(),
            rate,
            bucket: Mutex::new(Bucket {
                lines: f64::from(rate.lines_per_sec),
                bytes: rate.bytes_per_sec as f64,
                at: Instant::now(),
                dropped_since_start: 0,
                last_drop: None,
            }),
            dropping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            recorded,
        }
    }

    /// The lines recorded since the last call (none unless [`Self::recording`]).
    pub fn take_recorded(&self) -> Vec<GuestLine> {
        let Some(recorded) = &self.recorded else { return Vec::new() };
        std::mem::take(&mut *recorded.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Lines dropped by the rate limit since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines written since start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes one line if the rate allows; `stream` is `stdout`/`stderr`, or `None`
    /// for the `log` capability.
    pub fn line(&self, label: &TenantLabel, level: wit::Level, stream: Option<&str>, text: &str) {
        let message = sanitize(text, MAX_LOG_CHARS);
        if let Some(recorded) = &self.recorded {
            let level = match level {
                wit::Level::Trace => "trace",
                wit::Level::Debug => "debug",
                wit::Level::Info => "info",
                wit::Level::Warn => "warn",
                wit::Level::Error => "error",
            };
            let line = GuestLine { level, stream: stream.unwrap_or("log").to_owned(), message };
            recorded.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            return;
        }
        if !self.admit(message.len(), Instant::now()) {
            return;
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        let (pipeline, worker, digest) = (&*label.pipeline, label.worker, short(&label.digest));
        let stream = stream.unwrap_or("log");
        match level {
            wit::Level::Trace => tracing::trace!(target: "ferry::guest", pipeline, worker, digest, stream, "{message}"),
            wit::Level::Debug => tracing::debug!(target: "ferry::guest", pipeline, worker, digest, stream, "{message}"),
            wit::Level::Info => tracing::info!(target: "ferry::guest", pipeline, worker, digest, stream, "{message}"),
            wit::Level::Warn => tracing::warn!(target: "ferry::guest", pipeline, worker, digest, stream, "{message}"),
            wit::Level::Error => tracing::error!(target: "ferry::guest", pipeline, worker, digest, stream, "{message}"),
        }
    }

    /// Takes a line of `bytes` from the buckets; says once when dropping starts and
    /// once when it stops.
    fn admit(&self, bytes: usize, now: Instant) -> bool {
        let mut bucket = lock(&self.bucket);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        let (max_lines, max_bytes) = (f64::from(self.rate.lines_per_sec), self.rate.bytes_per_sec as f64);
        bucket.lines = (bucket.lines + elapsed * max_lines).min(max_lines);
        bucket.bytes = (bucket.bytes + elapsed * max_bytes).min(max_bytes);
        if bucket.lines >= 1.0 && bucket.bytes >= bytes as f64 {
            bucket.lines -= 1.0;
            bucket.bytes -= bytes as f64;
            let quiet = bucket.last_drop.is_none_or(|at| now.saturating_duration_since(at) >= QUIET_BEFORE_STOP);
            if quiet && self.dropping.swap(false, Ordering::Relaxed) {
                let dropped = std::mem::take(&mut bucket.dropped_since_start);
                tracing::warn!(target: "ferry::guest", pipeline = &*self.pipeline, dropped, "guest logs are under the limit again: stopped dropping");
            }
            return true;
        }
        bucket.dropped_since_start += 1;
        bucket.last_drop = Some(now);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "ferry::guest",
                pipeline = &*self.pipeline,
                lines_per_sec = self.rate.lines_per_sec,
                bytes_per_sec = self.rate.bytes_per_sec,
                "guest logs over the pipeline's limit: dropping lines (counted in ferry_guest_log_lines_dropped_total)"
            );
        }
        false
    }
}

/// The `log` capability's part of a guest's store.
pub struct LogState {
    pub(crate) label: TenantLabel,
    pub(crate) log: Arc<TenantLog>,
}

impl wit::Host for LogState {
    fn log(&mut self, level: wit::Level, message: String) {
        self.log.line(&self.label, level, None, &message);
    }
}

/// A guest's stdout or stderr: complete lines go to the tenant's log; an endless line
/// is cut into pieces instead of buffered forever.
#[derive(Clone)]
pub struct GuestStdio {
    label: TenantLabel,
    log: Arc<TenantLog>,
    stream: &'static str,
    line: Arc<Mutex<Vec<u8>>>,
}

impl GuestStdio {
    /// The `stream` (`stdout` or `stderr`) of a guest of `label`.
    pub fn new(label: TenantLabel, log: Arc<TenantLog>, stream: &'static str) -> Self {
        GuestStdio { label, log, stream, line: Arc::default() }
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
                self.log.line(&self.label, wit::Level::Info, Some(self.stream), &String::from_utf8_lossy(&line));
                line.clear();
            }
            bytes = rest;
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lines_over_the_rate_are_dropped_and_counted_until_it_refills() {
        let log = TenantLog::new("p", LogRate { lines_per_sec: 3, bytes_per_sec: 1 << 20 });
        let start = log.bucket.lock().unwrap().at;
        let admitted: Vec<bool> = (0..5).map(|_| log.admit(10, start)).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert_eq!(log.dropped(), 2);
        assert!(log.dropping.load(Ordering::Relaxed));
        // A third of a second later one line's worth has come back; dropping goes on
        // until a second passes without a drop.
        let later = start + Duration::from_millis(334);
        assert!(log.admit(10, later));
        assert!(log.dropping.load(Ordering::Relaxed), "a flood alternates passing and dropped lines");
        assert!(!log.admit(10, later));
        let quiet = later + Duration::from_millis(1000);
        assert!(log.admit(10, quiet));
        assert!(!log.dropping.load(Ordering::Relaxed), "a second without drops ends the dropping");
    }

    #[test]
    fn bytes_count_too() {
        let log = TenantLog::new("p", LogRate { lines_per_sec: 1000, bytes_per_sec: 100 });
        let start = log.bucket.lock().unwrap().at;
        assert!(log.admit(80, start));
        assert!(!log.admit(80, start), "only 20 bytes left");
        assert!(log.admit(20, start));
    }

    #[test]
    fn stdio_lines_are_split_and_cut() {
        let log = TenantLog::new("p", LogRate { lines_per_sec: 1000, bytes_per_sec: 1 << 20 });
        let label = TenantLabel { pipeline: "p".into(), worker: None, digest: "d".into() };
        let out = GuestStdio::new(label, log.clone(), "stdout");
        out.write_bytes(b"one\ntw");
        out.write_bytes(b"o\n");
        assert_eq!(log.written(), 2);
        out.write_bytes(&vec![b'x'; MAX_STDIO_LINE * 2 + 10]);
        assert_eq!(log.written(), 4, "an endless line is cut every {MAX_STDIO_LINE} bytes");
    }

    #[test]
    fn a_recording_log_keeps_every_line_in_order() {
        let log = TenantLog::recording("p");
        let label = TenantLabel { pipeline: "p".into(), worker: None, digest: "d".into() };
        for i in 0..500 {
            log.line(&label, wit::Level::Debug, None, &format!("line {i}\x1b[2J"));
        }
        GuestStdio::new(label, log.clone(), "stderr").write_bytes(b"panicked\n");
        let lines = log.take_recorded();
        assert_eq!(lines.len(), 501, "no rate limit");
        assert_eq!(lines[0], GuestLine { level: "debug", stream: "log".into(), message: "line 0\u{fffd}[2J".into() });
        assert_eq!(lines[500], GuestLine { level: "info", stream: "stderr".into(), message: "panicked".into() });
        assert!(log.take_recorded().is_empty());
        assert_eq!(log.written(), 0, "nothing reached the host's logs");
    }
}
