//! Duplicate detection by `event_id` within a horizon of event time.
//!
//! Producers deliver at least once, so the same event can appear twice on a partition. The
//! horizon is measured in event time (against the newest `occurred_at` seen on the
//! partition), not in processing time, so that a replay of the log makes exactly the same
//! decisions as the live run did: the state after a restart equals the state before it.
//!
//! Ids are kept as 64-bit hashes in a few generations of hash sets, each covering a quarter
//! of the horizon of event time; the oldest generation is dropped whole once it lies
//! entirely outside the horizon. That costs about 9 to 20 bytes per id (docs/reliability.md
//! gives the figure) and no per-id sweep, and a false "duplicate" needs a 64-bit hash
//! collision among the ids of one horizon (about 1 in 3.6e7 for a million ids). The hash
//! keys are random per process, so a producer cannot craft ids that collide on purpose.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use nohash_hasher::IntSet;

/// Generations per horizon: more means less memory past the horizon, more lookups.
const GENERATIONS: i64 = 4;

/// An event id as [`SeenIds`] keeps it: its keyed hash, computed once per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdHash(u64);

/// The event ids seen on one partition within the horizon.
#[derive(Debug, Clone)]
pub struct SeenIds {
    horizon_ms: i64,
    /// Ids first seen while the newest event time was in `[start, start + horizon / 4)`,
    /// oldest first.
    /// The keys are already random hashes, so the sets use them as they are.
    generations: VecDeque<(i64, IntSet<u64>)>,
    newest_ms: i64,
    keys: RandomState,
}

impl SeenIds {
    pub fn new(horizon_ms: i64) -> Self {
        SeenIds {
            horizon_ms,
            generations: VecDeque::new(),
            newest_ms: i64::MIN,
            keys: RandomState::new(),
        }
    }

    fn generation_ms(&self) -> i64 {
        (self.horizon_ms / GENERATIONS).max(1)
    }

    /// The key under which this partition's ids keep `event_id`.
    pub fn hash(&self, event_id: &str) -> IdHash {
        IdHash(self.keys.hash_one(event_id))
    }

    /// Whether the id was remembered within the horizon.
    pub fn seen(&self, id: IdHash) -> bool {
        if self.horizon_ms <= 0 {
            return false;
        }
        self.generations.iter().any(|(_, ids)| ids.contains(&id.0))
    }

    /// Remembers an applied event. An event older than the horizon is not remembered, so
    /// its duplicates are not detected.
    pub fn remember(&mut self, id: IdHash, occurred_at_ms: i64) {
        if self.horizon_ms <= 0 || occurred_at_ms < self.newest_ms.saturating_sub(self.horizon_ms) {
            return;
        }
        let IdHash(key) = id;
        self.newest_ms = self.newest_ms.max(occurred_at_ms);
        let generation = self.generation_ms();
        match self.generations.back_mut() {
            Some((start, ids)) if self.newest_ms < *start + generation => {
                ids.insert(key);
            }
            _ => {
                let start = self.newest_ms - self.newest_ms.rem_euclid(generation);
                let mut ids = IntSet::default();
                ids.insert(key);
                self.generations.push_back((start, ids));
            }
        }
        let oldest = self.newest_ms.saturating_sub(self.horizon_ms);
        while self
            .generations
            .front()
            .is_some_and(|(start, _)| *start + generation < oldest)
        {
            self.generations.pop_front();
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.generations.iter().map(|(_, ids)| ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    impl SeenIds {
        /// Check and remember in one step, as the aggregation does for an applied event.
        fn first_sighting(&mut self, event_id: &str, occurred_at_ms: i64) -> bool {
            let id = self.hash(event_id);
            if self.seen(id) {
                return false;
            }
            self.remember(id, occurred_at_ms);
            true
        }
    }

    #[test]
    fn a_repeated_id_within_the_horizon_is_a_duplicate() {
        let mut seen = SeenIds::new(HOUR);
        assert!(seen.first_sighting("a", 10 * HOUR));
        assert!(!seen.first_sighting("a", 10 * HOUR));
        assert!(seen.first_sighting("b", 10 * HOUR));
        // Out of order within the horizon is fine.
        assert!(seen.first_sighting("c", 10 * HOUR - HOUR / 2));
        assert!(!seen.first_sighting("c", 10 * HOUR - HOUR / 2));
    }

    #[test]
    fn ids_older_than_the_horizon_are_forgotten() {
        let mut seen = SeenIds::new(HOUR);
        assert!(seen.first_sighting("a", 0));
        assert!(seen.first_sighting("b", 2 * HOUR));
        // "a" is older than newest - horizon: no longer remembered.
        assert!(seen.first_sighting("a", 0));
        assert!(seen.first_sighting("a", 0));
    }

    #[test]
    fn memory_stays_bounded_by_the_horizon() {
        let mut seen = SeenIds::new(HOUR);
        for i in 0..100_000i64 {
            // One event per second for about 28 hours.
            assert!(seen.first_sighting(&i.to_string(), i * 1000));
        }
        // At most a horizon and one generation of ids: 3,600 + 900, plus one in flight.
        assert!(seen.len() <= 3_600 + 900 + 1, "{}", seen.len());
        assert!(seen.len() >= 3_600, "{}", seen.len());
    }

    #[test]
    fn a_zero_horizon_turns_detection_off() {
        let mut seen = SeenIds::new(0);
        assert!(seen.first_sighting("a", 0));
        assert!(seen.first_sighting("a", 0));
        assert!(seen.is_empty());
    }
}
