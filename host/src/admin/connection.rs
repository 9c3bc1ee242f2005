//! One admin connection: HTTP/1.1 with hyper on ferry's runtime, as a task that
//! costs no thread while it waits, closed when it stalls, when the server stops, or
//! when the server needs its place for a new connection while it idles.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};

use super::limits::{HEADER_TIMEOUT, MAX_HEADER_BYTES, MAX_HEADERS, MAX_READ_BUFFER_BYTES, STALL_TIMEOUT};
use super::request::{self, Served};
use crate::sync::lock;

/// Every open connection, so that at the connection limit the one idle longest can
/// be closed to make room for a new one ([`Connections::evict_idlest`]).
#[derive(Debug, Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<Open>>>,
    next: AtomicU64,
}

/// One open connection, as [`Connections`] sees it.
#[derive(Debug)]
struct Open {
    progress: Arc<Progress>,
    /// Told to close to make room.
    evict: Notify,
}

/// A connection's place in [`Connections`], given up when dropped.
pub(crate) struct Entry {
    connections: Arc<Connections>,
    id: u64,
    open: Arc<Open>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.connections.open).remove(&self.id);
    }
}

impl Connections {
    /// Registers a new connection.
    pub(crate) fn register(self: &Arc<Self>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(Open { progress: Arc::new(Progress::new()), evict: Notify::new() });
        lock(&self.open).insert(id, open.clone());
        Entry { connections: self.clone(), id, open }
    }

    /// Tells the connection that has moved no byte for longest, among those with no
    /// request in progress, to close. Returns whether there was one.
    pub(crate) fn evict_idlest(&self) -> bool {
        let open = lock(&self.open);
        let idlest = open
            .values()
            .filter(|o| o.progress.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|o| o.progress.last_moved());
        match idlest {
            Some(connection) => {
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `stream` until the client leaves, a timeout closes it, `stop` turns true,
/// or the server needs its place while it idles. `permit` is its place under the
/// connection limit and `entry` its registration, both given back at the end.
pub(crate) async fn serve(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    entry: Entry,
    served: Arc<Served>,
    mut stop: watch::Receiver<bool>,
) {
    let _open = served.traffic.opened();
    let progress = entry.open.progress.clone();
    let io = TokioIo::new(Tracked { inner: stream, progress: progress.clone() });
    let handler_progress = progress.clone();
    let handler_served = served.clone();
    let service = service_fn(move |request| {
        let busy = handler_progress.busy();
        let served = handler_served.clone();
        async move {
            let _busy = busy;
            request::handle(&served, request).await
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "admin connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                // Idle connections close now; a request being answered finishes first.
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = progress.stalled(STALL_TIMEOUT) => {
                tracing::debug!("closing an admin connection that stalled");
                break;
            }
            () = entry.open.evict.notified() => {
                // A request may have begun since it was chosen: it is answered.
                if progress.busy.load(Ordering::Relaxed) == 0 {
                    tracing::debug!("closing an idle admin connection to make room for a new one");
                    served.traffic.evicted_connection();
                    break;
                }
            }
        }
    }
    drop(entry);
    drop(permit);
}

/// When a connection last moved a byte, and how many of its requests are being
/// worked on (a deploy may compute for a while without any byte moving).
#[derive(Debug)]
struct Progress {
    started: Instant,
    /// Milliseconds from `started` to the last byte read or written.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

/// A request being worked on; the connection cannot stall meanwhile.
struct Busy(Arc<Progress>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress {
    fn new() -> Self {
        Self { started: Instant::now(), last_ms: AtomicU64::new(0), busy: AtomicUsize::new(0) }
    }

    fn moved(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When it last moved a byte (or opened).
    fn last_moved(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn quiet_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once no byte moved for `limit` while no request was being worked on.
    /// Wakes about once per `limit`, not per byte.
    async fn stalled(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_for();
            if quiet >= limit && self.busy.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(limit.saturating_sub(quiet).max(limit / 4)).await;
        }
    }
}

/// A stream that notes every byte it moves in its [`Progress`].
struct Tracked {
    inner: TcpStream,
    progress: Arc<Progress>,
}

impl Tracked {
    fn note<T>(&self, polled: Poll<io::Result<T>>, moved: bool) -> Poll<io::Result<T>> {
        if moved {
            self.progress.moved();
        }
        polled
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        self.note(polled, moved)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.note(polled, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.note(polled, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    /// At the limit, the connection quiet longest with no request in progress makes
    /// room; one answering a request is never chosen.
    #[test]
    fn the_idlest_connection_without_a_request_is_evicted() {
        let connections = Arc::new(Connections::default());
        let (answering, quiet, recent) = (connections.register(), connections.register(), connections.register());
        std::thread::sleep(Duration::from_millis(5));
        recent.open.progress.moved();
        let _request = answering.open.progress.busy();
        assert!(connections.evict_idlest());
        let told = |entry: &Entry| {
            runtime().block_on(async {
                tokio::time::timeout(Duration::from_millis(1), entry.open.evict.notified()).await.is_ok()
            })
        };
        assert!(told(&quiet) && !told(&answering) && !told(&recent), "the quiet one without a request");
        drop((quiet, recent));
        assert!(!connections.evict_idlest(), "the only one left is answering a request");
    }

    #[test]
    fn a_quiet_connection_with_no_request_in_progress_stalls() {
        let progress = Progress::new();
        runtime().block_on(progress.stalled(Duration::from_millis(10)));
        assert!(progress.quiet_for() >= Duration::from_millis(10));
    }

    #[test]
    fn a_request_in_progress_holds_the_stall_off_until_it_ends() {
        let progress = Arc::new(Progress::new());
        let busy = progress.busy();
        let runtime = runtime();
        let ended = runtime.block_on(async {
            let watch = progress.stalled(Duration::from_millis(10));
            tokio::pin!(watch);
            // The watchdog looks several times while the request is in progress.
            for _ in 0..4 {
                tokio::select! {
                    () = &mut watch => return false,
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            drop(busy);
            watch.await;
            true
        });
        assert!(ended, "the watchdog fired while a request was in progress");
    }
}
