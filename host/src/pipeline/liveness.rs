//! Whether a pipeline thread is alive, has joined its group, and keeps turning its
//! loop: the facts behind the admin server's `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const DIED: u8 = 2;

/// The state of a pipeline thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// Starting or running.
    Running,
    /// Returned after a shutdown request.
    Stopped,
    /// Ended by a panic.
    Died,
}

/// Written by the pipeline thread and its rebalance callback, read by the admin server.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds from `origin` to the last loop turn, plus one; 0 = never.
    last_turn: AtomicU64,
    joined: AtomicBool,
    state: AtomicU8,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_turn: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            state: AtomicU8::new(RUNNING),
        }
    }
}

/// A copy of a pipeline's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessSnapshot {
    /// The thread's state.
    pub thread: ThreadState,
    /// Whether the consumer ever received an assignment (possibly empty) from its group.
    pub joined: bool,
    /// Time since the loop last turned; `None` before its first turn.
    pub since_last_turn: Option<Duration>,
}

impl Liveness {
    /// The loop turned at `now` (an instant the loop read anyway). Only the pipeline
    /// thread calls this, so a plain store is enough and costs nothing.
    pub fn turned(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.last_turn.store(ms + 1, Ordering::Relaxed);
    }

    /// The group gave this member an assignment (possibly empty).
    pub fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The thread ended.
    pub fn ended(&self, panicked: bool) {
        self.state.store(if panicked { DIED } else { STOPPED }, Ordering::Relaxed);
    }

    /// A copy, as of now.
    pub fn snapshot(&self) -> LivenessSnapshot {
        self.snapshot_at(Instant::now())
    }

    /// A copy, as of `now`.
    fn snapshot_at(&self, now: Instant) -> LivenessSnapshot {
        let thread = match self.state.load(Ordering::Relaxed) {
            RUNNING => ThreadState::Running,
            STOPPED => ThreadState::Stopped,
            _ => ThreadState::Died,
        };
        let since_last_turn = match self.last_turn.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(now.saturating_duration_since(self.origin).saturating_sub(Duration::from_millis(ms - 1))),
        };
        LivenessSnapshot { thread, joined: self.joined.load(Ordering::Relaxed), since_last_turn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_turns_joins_and_ends() {
        let l = Liveness::default();
        assert_eq!(
            l.snapshot(),
            LivenessSnapshot { thread: ThreadState::Running, joined: false, since_last_turn: None }
        );
        let turn = l.origin + Duration::from_millis(1500);
        l.turned(turn);
        l.joined();
        let s = l.snapshot_at(turn + Duration::from_secs(3));
        assert!(s.joined);
        assert_eq!(s.since_last_turn, Some(Duration::from_secs(3)));
        l.ended(true);
        assert_eq!(l.snapshot().thread, ThreadState::Died);
    }
}
