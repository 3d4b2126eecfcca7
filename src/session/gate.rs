//! The standalone-stream gate of a legacy session: after the upstream accepted
//! `notifications/initialized`, the session's next requests wait (at most a configured time,
//! once per session) until its standalone `GET` stream is established upstream.
//!
//! Why: an SDK client opens the standalone stream right after `notifications/initialized`
//! without waiting for it, and sends its first request microseconds later on another
//! connection. A server sends the server→client requests that relate to no request
//! (elicitation, sampling, `roots/list`, log notifications) on the standalone stream only if one
//! is registered at that moment. The two connections may be served by different data-plane
//! threads, each with its own upstream pool, so the order in which the proxy reads them says
//! nothing about the order in which the upstream receives them: the gate orders them by what
//! the upstream has answered instead.
//!
//! The gate is shared by every thread serving the session: its state is an atomic and its
//! waiters wait on a `tokio::sync::watch` channel, which wakes tasks on any runtime.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

/// Not opened yet: `notifications/initialized` was not accepted upstream (no request waits).
const IDLE: u8 = 0;
/// Opened: requests wait for the standalone stream.
const OPEN: u8 = 1;
/// The standalone stream's response head arrived, or the one wait timed out: nothing waits
/// any more.
const RELEASED: u8 = 2;

/// What [`StandaloneGate::wait`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateWait {
    /// The gate was not open (or waiting is disabled): the request went on at once.
    NotNeeded,
    /// The request waited, and the standalone stream was established upstream.
    Released,
    /// The request waited the whole configured time: the gate is released for good.
    TimedOut,
}

/// A per-session gate between `notifications/initialized` and the standalone `GET` stream
/// (see the module docs).
#[derive(Debug)]
pub struct StandaloneGate {
    state: AtomicU8,
    released: watch::Sender<bool>,
    /// Set by the first request that waits: every waiter gives up at the same instant, so a
    /// session waits at most once, whatever its number of concurrent requests.
    deadline: OnceLock<Instant>,
}

impl Default for StandaloneGate {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            released: watch::Sender::new(false),
            deadline: OnceLock::new(),
        }
    }
}

impl StandaloneGate {
    /// The upstream accepted `notifications/initialized`: from now on the session's requests
    /// wait for the standalone stream (unless it is already established).
    pub fn open(&self) {
        let _already_opened_or_released =
            self.state
                .compare_exchange(IDLE, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The standalone stream's upstream response head arrived (any status: a `405` from a
    /// server without one releases too), or its request failed: every waiter goes on.
    pub fn release(&self) {
        self.state.store(RELEASED, Ordering::Release);
        self.released.send_replace(true);
    }

    /// Whether requests would wait now.
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    /// Waits until the gate is released, at most `max` from the first wait of the session
    /// (`max` zero: never waits). A wait that times out releases the gate for good.
    pub async fn wait(&self, max: Duration) -> GateWait {
        if max.is_zero() || !self.is_open() {
            return GateWait::NotNeeded;
        }
        let mut released = self.released.subscribe();
        let deadline = *self.deadline.get_or_init(|| Instant::now() + max);
        match tokio::time::timeout_at(deadline, released.wait_for(|r| *r)).await {
            // The sender lives as long as `self`: an error cannot happen while we hold it.
            Ok(_) => GateWait::Released,
            Err(_) => {
                self.release();
                GateWait::TimedOut
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough never to run out in a test that expects a release; short for the timeout.
    const MAX: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_closed_gate_lets_requests_through() {
        let gate = StandaloneGate::default();
        assert_eq!(gate.wait(MAX).await, GateWait::NotNeeded);
        gate.release();
        gate.open();
        assert_eq!(gate.wait(MAX).await, GateWait::NotNeeded, "released first");
    }

    #[tokio::test]
    async fn waiters_go_on_when_the_stream_is_established() {
        let gate = std::sync::Arc::new(StandaloneGate::default());
        gate.open();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait(MAX).await }
        });
        // On this single-threaded runtime the waiter runs up to its wait here.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.release();
        assert_eq!(waiter.await.expect("waiter"), GateWait::Released);
        assert_eq!(gate.wait(MAX).await, GateWait::NotNeeded);
    }

    #[tokio::test]
    async fn a_session_waits_once_then_never_again() {
        let gate = StandaloneGate::default();
        gate.open();
        assert_eq!(gate.wait(SHORT).await, GateWait::TimedOut);
        assert!(!gate.is_open());
        assert_eq!(gate.wait(MAX).await, GateWait::NotNeeded);
    }

    #[tokio::test]
    async fn zero_disables_waiting() {
        let gate = StandaloneGate::default();
        gate.open();
        assert_eq!(gate.wait(Duration::ZERO).await, GateWait::NotNeeded);
    }
}
