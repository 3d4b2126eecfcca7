//! Session changes, told to whoever watches: the SessionManager publishes one [`SessionChange`]
//! when a session is created, when its streams change, and when it ends; the control plane's
//! `WatchSessions` subscribes.
//!
//! A bounded `tokio::sync::broadcast` ring ([`CHANGES_KEPT`] changes): publishing never waits
//! and costs one short lock (nothing when nobody watches); a watcher that falls further behind
//! than the ring learns how many changes it missed and resynchronises from the current state.

use std::{sync::Arc, time::SystemTime};

use tokio::sync::broadcast;

use super::Session;

/// Changes kept for watchers that have not read them yet (count).
pub const CHANGES_KEPT: usize = 1024;

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChangeKind {
    /// The session was created (`initialize` answered with an upstream session id).
    Created,
    /// One of its streams opened, closed or was resumed, a client attached to or left one, or
    /// its upstream side started or finished reconnecting.
    Updated,
    /// The session ended (client `DELETE`, upstream 404, idle expiry, or an operator).
    Ended,
}

/// One change of one session.
#[derive(Debug, Clone)]
pub struct SessionChange {
    /// What happened: created, updated (a stream changed) or ended.
    pub kind: SessionChangeKind,
    /// The session itself: a watcher reads its state when it sends the change.
    pub session: Arc<Session>,
    /// When the change happened.
    pub at: SystemTime,
}

/// The publishing side, owned by the SessionManager.
#[derive(Debug)]
pub struct SessionChanges {
    tx: broadcast::Sender<SessionChange>,
}

impl Default for SessionChanges {
    fn default() -> Self {
        Self {
            tx: broadcast::Sender::new(CHANGES_KEPT),
        }
    }
}

impl SessionChanges {
    /// A receiver of every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionChange> {
        self.tx.subscribe()
    }

    /// Tells every watcher about `kind` happening to `session`. Never waits.
    pub(super) fn publish(&self, kind: SessionChangeKind, session: &Arc<Session>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let change = SessionChange {
            kind,
            session: session.clone(),
            at: SystemTime::now(),
        };
        // The only error is "no receiver left", i.e. nobody to tell.
        self.tx.send(change).ok();
    }
}
