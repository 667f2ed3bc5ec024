//! Duplicate detection by `event_id` within a horizon of event time.
//!
//! Producers deliver at least once, so the same event can appear twice on a partition. The
//! horizon is measured in event time (against the newest `occurred_at` seen on the
//! partition), not in processing time, so that a replay of the log makes exactly the same
//! decisions as the live run did: the state after a restart equals the state before it.
//!
//! Ids are kept as 64-bit hashes: a few tens of bytes per id (docs/reliability.md gives the
//! figure), and a false "duplicate" needs a hash collision among the ids of one horizon
//! (about 1 in 3.6e7 for a million ids).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The event ids seen on one partition within the horizon.
#[derive(Debug, Clone)]
pub struct SeenIds {
    horizon_ms: i64,
    /// Hash of `event_id` to its `occurred_at`.
    ids: HashMap<u64, i64>,
    newest_ms: i64,
    /// Size after the last sweep; the next sweep runs once the map has doubled.
    swept_len: usize,
}

impl SeenIds {
    pub fn new(horizon_ms: i64) -> Self {
        SeenIds {
            horizon_ms,
            ids: HashMap::new(),
            newest_ms: i64::MIN,
            swept_len: 1024,
        }
    }

    /// True the first time `event_id` is offered within the horizon; false for a duplicate.
    /// An event older than the horizon is never remembered, so its duplicates pass too.
    pub fn first_sighting(&mut self, event_id: &str, occurred_at_ms: i64) -> bool {
        if self.horizon_ms <= 0 {
            return true;
        }
        let oldest = self.newest_ms.saturating_sub(self.horizon_ms);
        let mut hasher = DefaultHasher::new();
        event_id.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(&seen_at) = self.ids.get(&key)
            && seen_at >= oldest
        {
            return false;
        }
        if occurred_at_ms < oldest {
            return true;
        }
        self.ids.insert(key, occurred_at_ms);
        if occurred_at_ms > self.newest_ms {
            self.newest_ms = occurred_at_ms;
        }
        if self.ids.len() >= 2 * self.swept_len {
            let oldest = self.newest_ms.saturating_sub(self.horizon_ms);
            self.ids.retain(|_, at| *at >= oldest);
            self.swept_len = self.ids.len().max(1024);
        }
        true
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

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
        // At most two horizons' worth of ids (3,600 each) stay between sweeps.
        assert!(seen.len() <= 2 * 3_601, "{}", seen.len());
    }

    #[test]
    fn a_zero_horizon_turns_detection_off() {
        let mut seen = SeenIds::new(0);
        assert!(seen.first_sighting("a", 0));
        assert!(seen.first_sighting("a", 0));
        assert!(seen.is_empty());
    }
}
