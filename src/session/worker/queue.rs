//! What waits for the persistence worker's next flush: a latest-only coalescing queue, pure
//! data (no I/O, no clock), so its rules are tested on their own.
//!
//! - A stream is queued at most once: its tracker's `persist_queued` flag is set while it is
//!   queued, and the flush reads the tracker's latest position, so a burst of events costs one
//!   entry.
//! - A session has at most one operation queued: a record queued again replaces the queued one
//!   (or its deletion), in place, keeping the entry's age.
//! - Every entry carries the sequence number it was first queued with; streams and sessions are
//!   each kept in that order, so shedding takes the globally oldest entry.
//! - A session whose deletion is queued or being written is "deleting": the store may still
//!   hold it, but it must not be restored from there.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    mem,
    sync::{Arc, atomic::Ordering},
};

use crate::session::{SessionId, store::SessionRecord, tracker::EventTracker};

/// A queued session operation.
#[derive(Debug, Clone)]
pub(super) enum SessionOp {
    /// Insert or replace the session's record.
    Put(SessionRecord),
    /// Delete the session and its stream positions.
    Delete,
}

/// One flush's worth of entries, taken whole from [`Pending`].
#[derive(Default)]
pub(super) struct Queue {
    streams: VecDeque<(u64, Arc<EventTracker>)>,
    sessions: HashMap<SessionId, (u64, SessionOp)>,
    /// Session ids in first-queued order: exactly one entry per key of `sessions`.
    session_order: VecDeque<(u64, SessionId)>,
}

impl Queue {
    /// Entries queued (streams and session operations).
    pub(super) fn len(&self) -> usize {
        self.streams.len() + self.sessions.len()
    }

    /// The queued session operations, in no particular order.
    pub(super) fn sessions(&self) -> impl Iterator<Item = (&SessionId, &SessionOp)> {
        self.sessions.iter().map(|(id, (_, op))| (id, op))
    }

    /// The queued streams' trackers, oldest first.
    pub(super) fn streams(&self) -> impl Iterator<Item = &Arc<EventTracker>> {
        self.streams.iter().map(|(_, tracker)| tracker)
    }

    /// Whether the deletion of `session` is queued.
    pub(super) fn deletes(&self, session: &str) -> bool {
        matches!(self.sessions.get(session), Some((_, SessionOp::Delete)))
    }

    /// Drops the oldest entry. Returns whether one was dropped.
    fn shed_oldest(&mut self) -> bool {
        let stream_seq = self.streams.front().map(|e| e.0);
        let session_seq = self.session_order.front().map(|e| e.0);
        let stream_is_older = match (stream_seq, session_seq) {
            (None, None) => return false,
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if stream_is_older {
            if let Some((_, tracker)) = self.streams.pop_front() {
                // It queues itself again on its next event.
                tracker.persist_queued.store(false, Ordering::Release);
            }
        } else if let Some((_, id)) = self.session_order.pop_front() {
            self.sessions.remove(&id);
        }
        true
    }
}

/// The pending state: the queue, and the deletions being written right now.
#[derive(Default)]
pub(super) struct Pending {
    next_seq: u64,
    queue: Queue,
    /// Sessions whose deletion is being written right now (taken from `queue`).
    deleting: HashSet<SessionId>,
}

impl Pending {
    /// Entries waiting for the next flush.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Queues a stream. The caller has just set the tracker's `persist_queued` flag (it was
    /// clear), so the tracker is not queued already.
    pub(super) fn push_stream(&mut self, tracker: Arc<EventTracker>) {
        let seq = self.next_seq();
        self.queue.streams.push_back((seq, tracker));
    }

    /// Queues a session operation; one already queued for the session is replaced in place
    /// (it keeps its age).
    pub(super) fn push_session(&mut self, id: SessionId, op: SessionOp) {
        if let Some(entry) = self.queue.sessions.get_mut(&id) {
            entry.1 = op;
            return;
        }
        let seq = self.next_seq();
        self.queue.session_order.push_back((seq, id.clone()));
        self.queue.sessions.insert(id, (seq, op));
    }

    /// Drops the oldest entries until at most `max` remain. Returns how many were dropped.
    pub(super) fn shed_past(&mut self, max: usize) -> u64 {
        let mut shed = 0;
        while self.queue.len() > max && self.queue.shed_oldest() {
            shed += 1;
        }
        shed
    }

    /// Whether the session's deletion is queued or being written.
    pub(super) fn is_deleting(&self, id: &str) -> bool {
        self.deleting.contains(id) || self.queue.deletes(id)
    }

    /// Takes everything queued for a flush; the deletions in it count as being written until
    /// [`Pending::written`] or [`Pending::requeue`].
    pub(super) fn take(&mut self) -> Queue {
        let queue = mem::take(&mut self.queue);
        for (id, op) in queue.sessions() {
            if matches!(op, SessionOp::Delete) {
                self.deleting.insert(id.clone());
            }
        }
        queue
    }

    /// The taken entries were written: their deletions are done.
    pub(super) fn written(&mut self) {
        self.deleting.clear();
    }

    /// Puts a failed flush's entries back in front of what was queued since, keeping newer
    /// state: a stream queued again meanwhile stays where it is, and a session operation
    /// queued meanwhile wins over the failed one.
    pub(super) fn requeue(&mut self, failed: Queue) {
        self.deleting.clear();
        let Queue {
            streams,
            mut sessions,
            session_order,
        } = failed;
        for (seq, tracker) in streams.into_iter().rev() {
            if !tracker.persist_queued.swap(true, Ordering::AcqRel) {
                self.queue.streams.push_front((seq, tracker));
            }
        }
        for (seq, id) in session_order.into_iter().rev() {
            let Some(entry) = sessions.remove(&id) else {
                continue;
            };
            if !self.queue.sessions.contains_key(&id) {
                self.queue.session_order.push_front((seq, id.clone()));
                self.queue.sessions.insert(id, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::session::{
        StreamId,
        tracker::{StreamKind, TrackerLimits},
    };

    fn tracker(stream: &str) -> Arc<EventTracker> {
        Arc::new(EventTracker::new(
            Some(SessionId::from("s")),
            StreamId::from(stream),
            StreamKind::Post,
            TrackerLimits::default(),
        ))
    }

    /// Queues `tracker` the way the worker's handle does: only when its flag was clear.
    fn push_stream(pending: &mut Pending, tracker: &Arc<EventTracker>) {
        if !tracker.persist_queued.swap(true, Ordering::AcqRel) {
            pending.push_stream(tracker.clone());
        }
    }

    fn put(id: &str, protocol_version: &str) -> SessionOp {
        let now = SystemTime::UNIX_EPOCH;
        SessionOp::Put(SessionRecord {
            session_id: id.into(),
            upstream_session_id: format!("up-{id}"),
            upstream: "http://127.0.0.1:1/mcp".into(),
            route: "/mcp".into(),
            protocol_version: protocol_version.into(),
            created: now,
            last_activity: now,
        })
    }

    fn version(queue: &Queue, id: &str) -> Option<String> {
        queue.sessions().find_map(|(queued, op)| match op {
            SessionOp::Put(r) if queued.as_str() == id => Some(r.protocol_version.clone()),
            _ => None,
        })
    }

    fn stream_ids(queue: &Queue) -> Vec<String> {
        queue.streams().map(|t| t.stream().to_string()).collect()
    }

    #[test]
    fn a_session_queued_again_replaces_its_entry_and_keeps_its_age() {
        let mut p = Pending::default();
        p.push_session(SessionId::from("a"), put("a", "v1"));
        p.push_session(SessionId::from("b"), put("b", "v1"));
        p.push_session(SessionId::from("a"), put("a", "v2"));
        assert_eq!(p.len(), 2);
        // `a` is still the oldest entry: it is shed first.
        assert_eq!(p.shed_past(1), 1);
        let queue = p.take();
        assert_eq!(version(&queue, "a"), None);
        assert_eq!(version(&queue, "b").as_deref(), Some("v1"));

        let mut p = Pending::default();
        p.push_session(SessionId::from("a"), put("a", "v1"));
        p.push_session(SessionId::from("a"), put("a", "v2"));
        assert_eq!(
            version(&p.take(), "a").as_deref(),
            Some("v2"),
            "latest wins"
        );
    }

    #[test]
    fn a_stream_is_queued_once_until_taken() {
        let mut p = Pending::default();
        let t = tracker("st");
        for _ in 0..100 {
            push_stream(&mut p, &t);
        }
        assert_eq!(p.len(), 1);
        let queue = p.take();
        assert_eq!(stream_ids(&queue), ["st"]);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_deletion_is_deleting_while_queued_and_while_written() {
        let mut p = Pending::default();
        let id = SessionId::from("a");
        p.push_session(id.clone(), put("a", "v1"));
        assert!(!p.is_deleting("a"));
        p.push_session(id.clone(), SessionOp::Delete);
        assert!(p.is_deleting("a"), "queued");
        let queue = p.take();
        assert!(queue.deletes("a"));
        assert!(p.is_deleting("a"), "being written");
        p.written();
        assert!(!p.is_deleting("a"));

        // A failed write puts the deletion back: still deleting.
        p.push_session(id, SessionOp::Delete);
        let queue = p.take();
        p.requeue(queue);
        assert!(p.is_deleting("a"));
    }

    #[test]
    fn shedding_drops_the_globally_oldest_entries_and_a_shed_stream_queues_itself_again() {
        let mut p = Pending::default();
        let (t0, t1) = (tracker("st0"), tracker("st1"));
        push_stream(&mut p, &t0);
        p.push_session(SessionId::from("a"), put("a", "v1"));
        push_stream(&mut p, &t1);
        p.push_session(SessionId::from("b"), put("b", "v1"));
        assert_eq!(p.shed_past(2), 2);
        assert!(
            !t0.persist_queued.load(Ordering::Acquire),
            "a shed stream is no longer marked queued"
        );
        push_stream(&mut p, &t0);
        assert_eq!(p.shed_past(10), 0);
        let queue = p.take();
        assert_eq!(stream_ids(&queue), ["st1", "st0"]);
        assert_eq!(version(&queue, "a"), None);
        assert_eq!(version(&queue, "b").as_deref(), Some("v1"));
    }

    #[test]
    fn a_failed_flush_goes_back_in_front_and_newer_state_wins() {
        let mut p = Pending::default();
        let (t0, t1) = (tracker("st0"), tracker("st1"));
        push_stream(&mut p, &t0);
        p.push_session(SessionId::from("a"), put("a", "old"));
        p.push_session(SessionId::from("b"), put("b", "old"));
        let failed = p.take();
        // The flush clears the flags of what it takes before reading the trackers.
        for t in failed.streams() {
            t.persist_queued.store(false, Ordering::Release);
        }
        // Queued while the flush was failing.
        push_stream(&mut p, &t1);
        p.push_session(SessionId::from("a"), put("a", "new"));
        p.requeue(failed);
        assert!(t0.persist_queued.load(Ordering::Acquire), "queued again");
        assert_eq!(p.len(), 4);
        // The failed entries are the oldest: shedding two drops st0 and b.
        assert_eq!(p.shed_past(2), 2);
        let queue = p.take();
        assert_eq!(stream_ids(&queue), ["st1"]);
        assert_eq!(version(&queue, "a").as_deref(), Some("new"));
        assert_eq!(version(&queue, "b"), None);
    }

    #[test]
    fn a_stream_queued_again_during_a_failed_flush_is_not_queued_twice() {
        let mut p = Pending::default();
        let t = tracker("st");
        push_stream(&mut p, &t);
        let failed = p.take();
        t.persist_queued.store(false, Ordering::Release);
        push_stream(&mut p, &t);
        p.requeue(failed);
        assert_eq!(p.len(), 1);
    }
}
