//! Support-ticket KPIs: ticket counts and first-contact resolution.
//!
//! The formulas live here and nowhere else.

use crate::window::Tally;

/// Counts of ticket lifecycle events in a bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TicketTally {
    pub opened: u64,
    pub reopened: u64,
    /// Each `ticket.resolved` is one resolution.
    pub resolved: u64,
    /// Resolutions with at most one agent reply and no reopen.
    pub first_contact: u64,
}

impl Tally for TicketTally {
    fn merge(&mut self, other: &Self) {
        self.opened += other.opened;
        self.reopened += other.reopened;
        self.resolved += other.resolved;
        self.first_contact += other.first_contact;
    }
}

impl TicketTally {
    pub fn record_resolution(&mut self, agent_replies: u32, reopens: u32) {
        self.resolved += 1;
        if is_first_contact(agent_replies, reopens) {
            self.first_contact += 1;
        }
    }

    /// First-contact resolution = first-contact resolutions / resolutions, in 0..=1;
    /// `None` without resolutions.
    pub fn fcr_ratio(&self) -> Option<f64> {
        (self.resolved > 0).then(|| self.first_contact as f64 / self.resolved as f64)
    }
}

/// A resolution counts as first-contact with at most one agent reply and no reopen (the
/// one-touch rule of Zendesk Explore, which also counts zero-reply resolutions).
pub fn is_first_contact(agent_replies: u32, reopens: u32) -> bool {
    agent_replies <= 1 && reopens == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_contact_edges() {
        assert!(is_first_contact(0, 0));
        assert!(is_first_contact(1, 0));
        assert!(!is_first_contact(2, 0));
        assert!(!is_first_contact(1, 1));
        assert!(!is_first_contact(0, 1));
    }

    #[test]
    fn fcr_ratio_edges() {
        let mut t = TicketTally::default();
        assert_eq!(t.fcr_ratio(), None);
        t.record_resolution(1, 0);
        assert_eq!(t.fcr_ratio(), Some(1.0));
        t.record_resolution(3, 0);
        assert_eq!(t.fcr_ratio(), Some(0.5));
        t.record_resolution(0, 2);
        t.record_resolution(5, 1);
        assert_eq!(t.fcr_ratio(), Some(0.25));
        assert_eq!((t.resolved, t.first_contact), (4, 1));
    }

    #[test]
    fn merge_adds_every_count() {
        let mut a = TicketTally {
            opened: 1,
            reopened: 2,
            resolved: 3,
            first_contact: 1,
        };
        a.merge(&a.clone());
        assert_eq!(
            a,
            TicketTally {
                opened: 2,
                reopened: 4,
                resolved: 6,
                first_contact: 2
            }
        );
    }
}
