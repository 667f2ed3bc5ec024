//! The backlog: the tickets open now, by priority and by age, and those whose SLA clock is
//! about to breach or has breached, computed from a partition's open tickets at the
//! snapshot's `now`.
//!
//! A current value, not a windowed one: each partition counts its own open tickets, and the
//! counts add up exactly across partitions and instances. The cost is one pass over the
//! open tickets per snapshot, a few arithmetic operations per ticket.
//!
//! Pure: `now` is an argument.

use serde::{Deserialize, Serialize};

use crate::event::Priority;
use crate::open_tickets::{FirstReply, OpenTicket};
use crate::sla::SlaTargets;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// An open ticket is at risk when one of its SLA clocks breaches within this much time.
pub const AT_RISK_MS: i64 = HOUR_MS;

/// The age bands, youngest first; a ticket's age is `now` − its opening.
pub const AGE_BANDS: [&str; 6] = ["lt_1h", "1h_8h", "8h_24h", "1d_3d", "3d_7d", "gt_7d"];

/// Where each age band after the first starts (inclusive).
const AGE_BAND_STARTS_MS: [i64; AGE_BANDS.len() - 1] =
    [HOUR_MS, 8 * HOUR_MS, DAY_MS, 3 * DAY_MS, 7 * DAY_MS];

/// The priority labels of [`Backlog::by_priority`]: those of [`Priority::ALL`], then tickets
/// without a priority.
pub const PRIORITIES: [&str; 5] = ["low", "normal", "high", "urgent", "none"];

/// The open tickets of a set of partitions at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub open: u64,
    /// In the order of [`PRIORITIES`].
    pub by_priority: [u64; PRIORITIES.len()],
    /// In the order of [`AGE_BANDS`].
    pub by_age: [u64; AGE_BANDS.len()],
    /// Open tickets with no SLA clock breached yet, one of which breaches within
    /// [`AT_RISK_MS`].
    pub at_risk: u64,
    /// Open tickets with a running SLA clock already past its target.
    pub breached: u64,
}

/// The band of an age in milliseconds; a ticket dated ahead of `now` is in the first.
pub fn age_band(age_ms: i64) -> usize {
    AGE_BAND_STARTS_MS.partition_point(|&start| start <= age_ms)
}

fn priority_index(priority: Option<Priority>) -> usize {
    match priority {
        Some(Priority::Low) => 0,
        Some(Priority::Normal) => 1,
        Some(Priority::High) => 2,
        Some(Priority::Urgent) => 3,
        None => 4,
    }
}

/// Where one SLA clock stands at an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Clock {
    Safe,
    AtRisk,
    Breached,
}

fn clock(age_ms: i64, target_ms: u64) -> Clock {
    let target_ms = i64::try_from(target_ms).unwrap_or(i64::MAX);
    if age_ms > target_ms {
        Clock::Breached
    } else if age_ms > target_ms.saturating_sub(AT_RISK_MS) {
        Clock::AtRisk
    } else {
        Clock::Safe
    }
}

impl Backlog {
    /// Counts `ticket`, open at `now_ms`. Its running clocks are the resolution clock and,
    /// until its first public agent reply, the first-reply clock, both from its opening.
    pub fn count(&mut self, ticket: &OpenTicket, targets: &SlaTargets, now_ms: i64) {
        let age_ms = now_ms.saturating_sub(ticket.opened_at_ms);
        self.open += 1;
        self.by_priority[priority_index(ticket.priority)] += 1;
        self.by_age[age_band(age_ms)] += 1;
        let target = targets.of(ticket.priority);
        let mut worst = clock(age_ms, target.resolution_ms);
        if ticket.first_reply == FirstReply::Awaited {
            worst = worst.max(clock(age_ms, target.first_reply_ms));
        }
        match worst {
            Clock::Safe => {}
            Clock::AtRisk => self.at_risk += 1,
            Clock::Breached => self.breached += 1,
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.open += other.open;
        for (a, b) in self.by_priority.iter_mut().zip(&other.by_priority) {
            *a += b;
        }
        for (a, b) in self.by_age.iter_mut().zip(&other.by_age) {
            *a += b;
        }
        self.at_risk += other.at_risk;
        self.breached += other.breached;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::parts::CustomerKey;

    fn ticket(
        opened_at_ms: i64,
        priority: Option<Priority>,
        first_reply: FirstReply,
    ) -> OpenTicket {
        OpenTicket {
            opened_at_ms,
            priority,
            first_reply,
            public_agent_replies: 0,
            reopened: false,
            customer: CustomerKey::default(),
        }
    }

    #[test]
    fn age_bands_start_inclusive() {
        let bands: Vec<usize> = [
            i64::MIN,
            -1,
            0,
            HOUR_MS - 1,
            HOUR_MS,
            8 * HOUR_MS,
            DAY_MS - 1,
            DAY_MS,
            3 * DAY_MS,
            7 * DAY_MS - 1,
            7 * DAY_MS,
            i64::MAX,
        ]
        .into_iter()
        .map(age_band)
        .collect();
        assert_eq!(bands, [0, 0, 0, 0, 1, 2, 2, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn clocks_at_their_edges() {
        let targets = SlaTargets::default();
        let now = 1_000 * DAY_MS;
        let urgent = Some(Priority::Urgent);
        let at = |age, first_reply| {
            let mut b = Backlog::default();
            b.count(&ticket(now - age, urgent, first_reply), &targets, now);
            (b.at_risk, b.breached)
        };
        // Urgent: first reply 1h, resolution 8h.
        assert_eq!(at(0, FirstReply::Awaited), (0, 0));
        assert_eq!(at(1, FirstReply::Awaited), (1, 0));
        assert_eq!(at(HOUR_MS, FirstReply::Awaited), (1, 0));
        assert_eq!(at(HOUR_MS + 1, FirstReply::Awaited), (0, 1));
        // Replied: only the resolution clock runs.
        assert_eq!(at(HOUR_MS + 1, FirstReply::At(0)), (0, 0));
        assert_eq!(at(7 * HOUR_MS, FirstReply::Settled), (0, 0));
        assert_eq!(at(7 * HOUR_MS + 1, FirstReply::Settled), (1, 0));
        assert_eq!(at(8 * HOUR_MS + 1, FirstReply::At(0)), (0, 1));
        // Without a priority: normal's 8h first reply.
        let mut b = Backlog::default();
        b.count(
            &ticket(now - 7 * HOUR_MS - 1, None, FirstReply::Awaited),
            &targets,
            now,
        );
        assert_eq!((b.at_risk, b.by_priority[4], b.by_age[1]), (1, 1, 1));
        // The ends of time.
        b.count(
            &ticket(i64::MIN, None, FirstReply::Awaited),
            &targets,
            i64::MAX,
        );
        b.count(
            &ticket(i64::MAX, None, FirstReply::Awaited),
            &targets,
            i64::MIN,
        );
        assert_eq!((b.open, b.breached, b.by_age[5], b.by_age[0]), (3, 1, 1, 1));
        let mut m = b;
        m.merge(&b);
        assert_eq!((m.open, m.at_risk, m.by_priority[4]), (6, 2, 6));
    }
}
