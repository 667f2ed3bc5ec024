//! Service levels of support tickets: the targets per priority, and the achieved and
//! breached counts of first replies and resolutions judged against them.
//!
//! A target is judged once, when its clock stops: a first reply against the first-reply
//! target, each resolution against the resolution target, in calendar time. A ticket without
//! a priority is held to the `normal` targets.
//!
//! The formulas live here and nowhere else.

use serde::{Deserialize, Serialize};

use crate::event::Priority;

const HOUR_MS: u64 = 3_600_000;

/// The first-reply and resolution targets of one priority, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub first_reply_ms: u64,
    pub resolution_ms: u64,
}

/// The targets of every priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaTargets {
    /// In the order of [`Priority::ALL`].
    by_priority: [Targets; Priority::ALL.len()],
}

impl Default for SlaTargets {
    /// `low` 24h and 7d, `normal` 8h and 3d, `high` 4h and 1d, `urgent` 1h and 8h (first
    /// reply and resolution).
    fn default() -> Self {
        let targets = |first_reply_h: u64, resolution_h: u64| Targets {
            first_reply_ms: first_reply_h * HOUR_MS,
            resolution_ms: resolution_h * HOUR_MS,
        };
        SlaTargets {
            by_priority: [
                targets(24, 7 * 24),
                targets(8, 3 * 24),
                targets(4, 24),
                targets(1, 8),
            ],
        }
    }
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

impl SlaTargets {
    /// The targets of each priority, in the order of [`Priority::ALL`].
    pub fn new(by_priority: [Targets; Priority::ALL.len()]) -> Self {
        SlaTargets { by_priority }
    }

    /// The targets a ticket of `priority` is held to; `normal` without one.
    pub fn of(&self, priority: Option<Priority>) -> Targets {
        self.by_priority[index(priority.unwrap_or(Priority::Normal))]
    }
}

/// Whether a clock that ran `duration_ms` breached `target_ms`: the target itself is
/// achieved.
pub fn breached(duration_ms: u64, target_ms: u64) -> bool {
    duration_ms > target_ms
}

/// First replies or resolutions judged against their target in a bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaCounts {
    /// Within the target: at most the target after the ticket was opened.
    pub achieved: u64,
    /// Later than the target.
    pub breached: u64,
}

impl SlaCounts {
    /// Judges one clock that ran `duration_ms` against `target_ms`.
    pub fn judge(&mut self, duration_ms: u64, target_ms: u64) {
        if breached(duration_ms, target_ms) {
            self.breached += 1;
        } else {
            self.achieved += 1;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.achieved += other.achieved;
        self.breached += other.breached;
    }

    pub fn judged(&self) -> u64 {
        self.achieved + self.breached
    }

    /// Breach ratio = breached / judged, in 0..=1; `None` without any judged.
    pub fn breach_ratio(&self) -> Option<f64> {
        let judged = self.judged();
        (judged > 0).then(|| self.breached as f64 / judged as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_without_priority_is_held_to_normal_targets() {
        let t = SlaTargets::default();
        assert_eq!(t.of(None), t.of(Some(Priority::Normal)));
        assert_eq!(
            t.of(Some(Priority::Urgent)),
            Targets {
                first_reply_ms: HOUR_MS,
                resolution_ms: 8 * HOUR_MS
            }
        );
        let custom = SlaTargets::new(
            [Targets {
                first_reply_ms: 1,
                resolution_ms: 2,
            }; 4],
        );
        for p in Priority::ALL {
            assert_eq!(custom.of(Some(p)).resolution_ms, 2);
        }
    }

    #[test]
    fn the_target_itself_is_achieved_one_millisecond_more_breached() {
        let mut c = SlaCounts::default();
        assert_eq!(c.breach_ratio(), None);
        c.judge(HOUR_MS, HOUR_MS);
        assert_eq!(c.breach_ratio(), Some(0.0));
        c.judge(HOUR_MS + 1, HOUR_MS);
        assert_eq!(c.breach_ratio(), Some(0.5));
        c.judge(0, 0);
        c.judge(u64::MAX, u64::MAX - 1);
        assert_eq!((c.achieved, c.breached, c.judged()), (2, 2, 4));
        let mut m = c;
        m.merge(&c);
        assert_eq!((m.achieved, m.breached), (4, 4));
    }
}
