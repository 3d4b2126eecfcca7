//! The pump slot: at most one pump reads a stream's upstream, and a reader-driven pump is
//! parked here between polls.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// A stream pump that a client's reader drives instead of a task (`proxy::pump::InlinePump`),
/// kept in its tracker between polls so that whoever must take it over can: a reader that
/// resumes the stream while the driving one is stuck, or shutdown.
pub struct ParkedPump {
    /// The pump itself.
    pub future: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Keeps the data plane's pump tracker (`Pumps`, which shutdown waits on) waiting for it.
    pub tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    /// The reader driving it.
    pub driver: u64,
}

impl std::fmt::Debug for ParkedPump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedPump")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

/// Who pumps the stream. Kept apart from the tracker's state lock: the claim is one atomic,
/// and the parked pump has its own short lock, taken once per poll of a reader-driven pump,
/// never while the state lock is held.
///
/// Invariants: a pump is parked only while the claim is held (the pump holding it parks
/// itself); a parked pump is polled only by whoever took it out.
#[derive(Debug, Default)]
pub(super) struct PumpSlot {
    /// Set while a pump reads the upstream for this stream (at most one at a time).
    active: AtomicBool,
    /// The pump, while a reader drives it rather than a task, between that reader's polls.
    parked: Mutex<Option<ParkedPump>>,
}

impl PumpSlot {
    /// Claims the right to run the pump; `false` if one is already running.
    pub(super) fn claim(&self) -> bool {
        !self.active.swap(true, Ordering::AcqRel)
    }

    /// Releases the claim (the pump stopped).
    pub(super) fn release(&self) {
        self.active.store(false, Ordering::Release);
    }

    /// Parks a reader-driven pump between polls.
    pub(super) fn park(&self, pump: ParkedPump) {
        *self.parked.lock() = Some(pump);
    }

    /// Takes the parked pump if `driver` drives it (`None`: whoever does).
    pub(super) fn take(&self, driver: Option<u64>) -> Option<ParkedPump> {
        let mut parked = self.parked.lock();
        if driver.is_some_and(|d| parked.as_ref().is_some_and(|p| p.driver != d)) {
            return None;
        }
        parked.take()
    }

    /// Makes `driver` the reader driving the parked pump; `false` if none is parked.
    pub(super) fn drive(&self, driver: u64) -> bool {
        match self.parked.lock().as_mut() {
            Some(parked) => {
                parked.driver = driver;
                true
            }
            None => false,
        }
    }
}
