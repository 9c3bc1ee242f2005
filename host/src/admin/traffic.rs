//! What the admin server's clients did: open connections and refusals, for
//! `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the server refused a request before doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Missing or wrong bearer token, or no token configured (401, 403).
    Unauthorized,
    /// Too many requests at once, or no deploy turn in time (503).
    Busy,
    /// A body larger than the limit (413).
    TooLarge,
    /// A body not read in time (408).
    Timeout,
}

impl Refusal {
    /// Every kind, in the order of the metric's samples.
    pub(crate) const ALL: [Refusal; 4] = [Refusal::Unauthorized, Refusal::Busy, Refusal::TooLarge, Refusal::Timeout];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Busy => "busy",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
        }
    }
}

/// Counters shared by the accept loop, the connections and the request handlers.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    open: AtomicU64,
    refused_connections: AtomicU64,
    evicted_connections: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrafficSnapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once because the limit was reached.
    pub refused_connections: u64,
    /// Idle connections closed to make room for a new one at the limit.
    pub evicted_connections: u64,
    /// Requests refused, by reason (every reason, in [`Refusal::ALL`] order).
    pub refused: Vec<(Refusal, u64)>,
}

impl Traffic {
    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn opened(&self) -> OpenConnection<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// Counts a connection closed at once for the limit.
    pub(crate) fn refused_connection(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an idle connection closed to make room for a new one.
    pub(crate) fn evicted_connection(&self) {
        self.evicted_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            open: self.open.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            evicted_connections: self.evicted_connections.load(Ordering::Relaxed),
            refused: Refusal::ALL
                .iter()
                .map(|&why| (why, self.refused[why as usize].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// An open connection, counted until dropped.
pub(crate) struct OpenConnection<'a>(&'a Traffic);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
