//! Duplicate detection: the upstream ids a stream admitted last, as keyed hashes.

use std::{
    collections::{HashSet, VecDeque},
    hash::BuildHasher as _,
};

/// The dedup set's hasher. The set holds a 64-bit hash of each upstream id, keyed per stream
/// with a random seed, not the id itself: no allocation per event, and an upstream cannot
/// choose ids that collide. Two distinct ids of one stream are taken for each other with odds
/// of about `dedup_ids` in 2^64 per event.
pub(super) type IdHasher = foldhash::fast::RandomState;

/// The keyed hashes of the upstream ids admitted last on a stream
/// ([`super::TrackerLimits::dedup_ids`] of them), oldest evicted first.
///
/// Invariants: `order` holds at most `capacity` hashes, oldest first, and `seen` holds exactly
/// the hashes in `order`. With a capacity of 0 nothing is remembered: no id is a duplicate.
#[derive(Debug)]
pub(super) struct Dedup {
    seen: HashSet<u64, IdHasher>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Dedup {
    /// An empty set remembering up to `capacity` ids.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::with_hasher(IdHasher::default()),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Admits upstream id `id` (hashed with the stream's key `hasher`): `false` if it is one of
    /// the ids remembered (a duplicate), else remembers it, evicting the oldest past capacity.
    pub(super) fn admit(&mut self, hasher: &IdHasher, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        self.insert(hasher.hash_one(id))
    }

    /// [`Self::admit`] of an id already hashed.
    pub(super) fn insert(&mut self, hash: u64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if !self.seen.insert(hash) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(hash);
        true
    }
}
