//! The workers of one pipeline leave their group together. Each worker's last commit
//! must land while the group is stable: a worker that leaves starts a rebalance, and
//! the broker refuses the commits of the others' generation meanwhile
//! (`REBALANCE_IN_PROGRESS`), which would make a clean stop redeliver what they
//! finished. So every worker commits, then waits here for the others (bounded), and
//! only then do they all leave.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::sync::lock;

/// Where a pipeline's workers meet before leaving the group.
#[derive(Debug)]
pub(crate) struct Gate {
    arrived: Mutex<usize>,
    all_here: Condvar,
    workers: usize,
}

impl Gate {
    /// A gate for `workers` workers.
    pub(crate) fn new(workers: usize) -> Arc<Self> {
        Arc::new(Gate { arrived: Mutex::new(0), all_here: Condvar::new(), workers })
    }

    fn arrive(&self) {
        *lock(&self.arrived) += 1;
        self.all_here.notify_all();
    }

    /// Waits until every worker arrived, or `deadline`; returns whether they all did.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut arrived = lock(&self.arrived);
        while *arrived < self.workers {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            arrived = self.all_here.wait_timeout(arrived, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// One worker's place at the [`Gate`]. It arrives once: when it waits, or when it is
/// dropped without waiting (a worker whose thread panicked holds nobody up).
#[derive(Debug)]
pub(crate) struct Departure {
    gate: Arc<Gate>,
    arrived: bool,
}

impl Departure {
    /// A place at `gate`.
    pub(crate) fn at(gate: &Arc<Gate>) -> Self {
        Departure { gate: gate.clone(), arrived: false }
    }

    /// Arrives and waits for the other workers until `deadline`; returns whether they
    /// all came.
    pub(crate) fn wait_for_the_others(&mut self, deadline: Instant) -> bool {
        if !self.arrived {
            self.arrived = true;
            self.gate.arrive();
        }
        self.gate.wait_until(deadline)
    }
}

impl Drop for Departure {
    fn drop(&mut self) {
        if !self.arrived {
            self.gate.arrive();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn workers_leave_once_all_have_committed() {
        let gate = Gate::new(3);
        let (mut first, mut second, third) = (Departure::at(&gate), Departure::at(&gate), Departure::at(&gate));
        let past = Instant::now();
        assert!(!first.wait_for_the_others(past), "two are still committing");
        // The second waits (no deadline it could reach) while the third ends without
        // waiting, as a panicking worker does.
        let waiting =
            std::thread::spawn(move || second.wait_for_the_others(Instant::now() + Duration::from_secs(3600)));
        drop(third);
        assert!(waiting.join().unwrap(), "everyone arrived");
        assert!(first.wait_for_the_others(past), "arriving twice counts once, and all are here");
    }

    #[test]
    fn one_worker_never_waits() {
        assert!(Departure::at(&Gate::new(1)).wait_for_the_others(Instant::now()));
    }
}
