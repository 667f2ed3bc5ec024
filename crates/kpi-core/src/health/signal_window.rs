//! Sums over one customer's signal window (`health.signal_window`), small and fixed in
//! size whatever the customer does.
//!
//! A customer's signals count what happened within the window (tickets opened, CSAT
//! answers, MRR change). Keeping every event's time would grow with the customer's
//! activity; a ring of [`SIGNAL_BUCKETS`] buckets does not, at the price of a window that
//! moves a bucket at a time (5.6 days of a 90-day window), which a health score, read daily,
//! does not notice. Buckets merge by addition, so the parts of one customer's signals that
//! several partitions keep add up exactly.

use serde::{Deserialize, Serialize};

/// Buckets of a signal window.
pub const SIGNAL_BUCKETS: usize = 16;

/// A value a bucket sums: counts (u32) and amounts (i64 micros), added without wrapping.
/// Narrow types keep a customer small; a signal at a type's limit maps to the same score
/// as one beyond it, so saturating there changes no score.
pub trait Summed: Copy + Default + PartialEq {
    /// `self + other`, saturating: a bucket that would wrap stops at the type's limit
    /// rather than turning a huge count into a small one.
    fn plus(self, other: Self) -> Self;
}

impl Summed for u32 {
    fn plus(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl Summed for i64 {
    fn plus(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

/// Sums over the buckets of the signal window, numbered by `at_ms / bucket_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SignalWindow<T> {
    /// The number of the newest bucket the ring holds; the ring holds the
    /// [`SIGNAL_BUCKETS`] buckets up to it.
    newest: i64,
    buckets: [T; SIGNAL_BUCKETS],
}

impl<T: Summed> Default for SignalWindow<T> {
    fn default() -> Self {
        SignalWindow {
            newest: i64::MIN,
            buckets: [T::default(); SIGNAL_BUCKETS],
        }
    }
}

fn slot(number: i64) -> usize {
    number.rem_euclid(SIGNAL_BUCKETS as i64) as usize
}

/// The oldest bucket number of a ring whose newest is `newest`.
fn oldest(newest: i64) -> i64 {
    newest.saturating_sub(SIGNAL_BUCKETS as i64 - 1)
}

impl<T: Summed> SignalWindow<T> {
    /// Moves the ring forward so that its newest bucket is `number`, emptying the buckets
    /// it leaves behind.
    fn advance(&mut self, number: i64) {
        if number <= self.newest {
            return;
        }
        if number.saturating_sub(self.newest) >= SIGNAL_BUCKETS as i64 {
            self.buckets = [T::default(); SIGNAL_BUCKETS];
        } else {
            for skipped in self.newest + 1..=number {
                self.buckets[slot(skipped)] = T::default();
            }
        }
        self.newest = number;
    }

    /// Adds `value` in the bucket of `at_ms`; a value older than the ring's oldest bucket
    /// is outside the window already and changes nothing.
    pub fn add(&mut self, at_ms: i64, bucket_ms: i64, value: T) {
        let number = at_ms.div_euclid(bucket_ms);
        self.advance(number);
        if number >= oldest(self.newest) {
            let bucket = &mut self.buckets[slot(number)];
            *bucket = bucket.plus(value);
        }
    }

    /// The sum over the buckets inside the window at `now_ms`: the [`SIGNAL_BUCKETS`]
    /// buckets up to the one of `now_ms`. Buckets ahead of `now_ms` (an event within the
    /// accepted clock skew) count already, as they do in the KPI windows.
    pub fn total(&self, now_ms: i64, bucket_ms: i64) -> T {
        let from = oldest(now_ms.div_euclid(bucket_ms)).max(oldest(self.newest));
        if self.newest == i64::MIN {
            return T::default();
        }
        (from..=self.newest).fold(T::default(), |sum, number| {
            sum.plus(self.buckets[slot(number)])
        })
    }

    /// Adds `other`'s buckets into `self`'s: the sums of both, as one ring would hold them.
    pub fn merge(&mut self, other: &Self) {
        if other.newest == i64::MIN {
            return;
        }
        self.advance(other.newest);
        for number in oldest(other.newest).max(oldest(self.newest))..=other.newest {
            let bucket = &mut self.buckets[slot(number)];
            *bucket = bucket.plus(other.buckets[slot(number)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const BUCKET: i64 = 1_000;

    #[test]
    fn a_value_counts_until_its_bucket_leaves_the_window() {
        let mut window = SignalWindow::<u32>::default();
        assert_eq!(window.total(0, BUCKET), 0);
        window.add(500, BUCKET, 2);
        window.add(1_500, BUCKET, 3);
        assert_eq!(window.total(1_999, BUCKET), 5);
        let last = (SIGNAL_BUCKETS as i64) * BUCKET;
        assert_eq!(window.total(last - 1, BUCKET), 5);
        assert_eq!(window.total(last, BUCKET), 3);
        assert_eq!(window.total(last + BUCKET, BUCKET), 0);
        // Too old for the ring once it has moved on.
        window.add(last + 5 * BUCKET, BUCKET, 1);
        window.add(0, BUCKET, 100);
        assert_eq!(window.total(last + 5 * BUCKET, BUCKET), 1);
    }

    #[test]
    fn sums_saturate_at_the_limits_instead_of_wrapping() {
        let mut window = SignalWindow::<i64>::default();
        window.add(0, BUCKET, i64::MAX);
        window.add(BUCKET, BUCKET, i64::MAX);
        assert_eq!(window.total(BUCKET, BUCKET), i64::MAX);
        let mut window = SignalWindow::<u32>::default();
        window.add(i64::MAX, BUCKET, u32::MAX);
        window.add(i64::MAX, BUCKET, 1);
        assert_eq!(window.total(i64::MAX, BUCKET), u32::MAX);
        window.add(i64::MIN, BUCKET, 7);
        assert_eq!(window.total(i64::MAX, BUCKET), u32::MAX);
        assert_eq!(SignalWindow::<u32>::default().total(i64::MIN, BUCKET), 0);
    }

    proptest! {
        /// Any split of the same additions over several rings, merged in any order, holds
        /// what one ring does, and the total is the sum of the values whose bucket is
        /// among the last SIGNAL_BUCKETS up to now and not older than the newest written
        /// allows.
        #[test]
        fn merged_parts_equal_one_ring_and_the_brute_force(
            adds in prop::collection::vec((0i64..40_000, 0u32..1_000, 0usize..3), 0..60),
            now in 0i64..45_000,
        ) {
            let mut whole = SignalWindow::<u32>::default();
            let mut parts = [SignalWindow::<u32>::default(); 3];
            for &(at, value, part) in &adds {
                whole.add(at, BUCKET, value);
                parts[part].add(at, BUCKET, value);
            }
            let mut merged = SignalWindow::<u32>::default();
            for part in parts.iter().rev() {
                merged.merge(part);
            }
            prop_assert_eq!(merged.total(now, BUCKET), whole.total(now, BUCKET));
            // The ring forgets a value once a later one left its bucket behind: the
            // brute force keeps the values within the ring of the newest bucket written
            // before or after them, and within the window at `now`.
            let newest = adds.iter().map(|a| a.0 / BUCKET).max();
            let expected: u32 = adds
                .iter()
                .enumerate()
                .filter(|(i, (at, _, _))| {
                    let number = at / BUCKET;
                    let newest_then = adds[..=*i].iter().map(|a| a.0 / BUCKET).max().unwrap_or(number);
                    number > newest_then - SIGNAL_BUCKETS as i64
                        && number > newest.unwrap_or(number) - SIGNAL_BUCKETS as i64
                        && number > now / BUCKET - SIGNAL_BUCKETS as i64
                })
                .map(|(_, (_, value, _))| value)
                .sum();
            prop_assert_eq!(whole.total(now, BUCKET), expected);
        }
    }
}
