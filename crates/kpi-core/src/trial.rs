//! The pending trials of a billing partition, and when each one's fate is decided.
//!
//! A trial converts when a `subscription.started` for its subscription is applied no later
//! than its deadline (`trial_ends_at` + `billing.trial_grace`); it expires once the
//! partition's event time, the largest `occurred_at` of the billing events applied on it,
//! passes that deadline. Both are decided from the partition's own events in log order,
//! never from a clock, so that a replay of the billing topic decides every trial exactly as
//! the live run did.
//!
//! Pure: no I/O, no clock reads.

use std::collections::{BTreeMap, HashMap};

use crate::event::{Reason, Rejection};

/// A trial not yet converted nor expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTrial<S> {
    /// `trial_ends_at` + the grace: a start later than this is a new subscription.
    pub deadline_ms: i64,
    /// Where the trial counts: the series of its `subscription.trial_started`.
    pub series: S,
}

/// The pending trials of one billing partition, by subscription and by deadline, so that
/// finding the expired ones costs O(log n) per trial.
#[derive(Debug, Clone)]
pub struct Trials<S> {
    grace_ms: i64,
    /// The position in `by_deadline` of each subscription's pending trial.
    by_subscription: HashMap<Box<str>, (i64, u64)>,
    /// Every pending trial, by deadline then arrival: the sequence number keeps apart
    /// two trials of one subscription with one deadline (an old one replaced by a new
    /// trial stays here until the sweep that follows counts it expired).
    by_deadline: BTreeMap<(i64, u64), (Box<str>, S)>,
    arrivals: u64,
    /// The largest `occurred_at` of the billing events applied on the partition.
    event_time_ms: i64,
}

impl<S> Trials<S> {
    /// No pending trial; a trial converts up to `grace_ms` after its `trial_ends_at`.
    pub fn new(grace_ms: i64) -> Self {
        Trials {
            grace_ms,
            by_subscription: HashMap::new(),
            by_deadline: BTreeMap::new(),
            arrivals: 0,
            event_time_ms: i64::MIN,
        }
    }

    /// The partition's event time once an event dated `at_ms` is applied.
    fn reached(&self, at_ms: i64) -> i64 {
        self.event_time_ms.max(at_ms)
    }

    /// Whether a trial of `subscription_id` dated `at_ms` may begin; `active` says whether
    /// the subscription is active in the ledger. A trial of an active subscription could
    /// only "convert" into what is already paid for, and a second trial of one still
    /// pending would count one trial twice; a trial of a canceled subscription is a new one.
    pub fn check_start(
        &self,
        subscription_id: &str,
        at_ms: i64,
        active: bool,
    ) -> Result<(), Rejection> {
        if active {
            return Err(Rejection {
                reason: Reason::ActiveSubscription,
                detail: format!("subscription {subscription_id:?} is active; it has no trial"),
            });
        }
        if self.pending(subscription_id, self.reached(at_ms)).is_some() {
            return Err(Rejection {
                reason: Reason::PendingTrial,
                detail: format!("subscription {subscription_id:?} has a trial pending"),
            });
        }
        Ok(())
    }

    /// The pending trial of `subscription_id` whose deadline is not before `event_time_ms`.
    fn pending(&self, subscription_id: &str, event_time_ms: i64) -> Option<&(i64, u64)> {
        self.by_subscription
            .get(subscription_id)
            .filter(|(deadline_ms, _)| *deadline_ms >= event_time_ms)
    }

    /// Notes that an event dated `at_ms` was applied: the partition's event time reaches it,
    /// and the trials whose deadline it passed are due ([`Trials::next_expired`]).
    pub fn advance(&mut self, at_ms: i64) {
        self.event_time_ms = self.reached(at_ms);
    }

    /// Takes a trial whose deadline is before the partition's event time, the earliest
    /// first; `None` once there is none.
    pub fn next_expired(&mut self) -> Option<PendingTrial<S>> {
        let entry = self.by_deadline.first_entry()?;
        if entry.key().0 >= self.event_time_ms {
            return None;
        }
        let (key, (id, series)) = entry.remove_entry();
        if self.by_subscription.get(&id) == Some(&key) {
            self.by_subscription.remove(&id);
        }
        Some(PendingTrial {
            deadline_ms: key.0,
            series,
        })
    }

    /// Begins a trial of `subscription_id` ending at `ends_at_ms`, accepted by
    /// [`Trials::check_start`]. A trial whose deadline the event time has passed already
    /// (one read late) expires at the next [`Trials::next_expired`], as does an expired
    /// trial of the same subscription not yet taken.
    pub fn start(&mut self, subscription_id: &str, ends_at_ms: i64, series: S) {
        let key = (ends_at_ms.saturating_add(self.grace_ms), self.arrivals);
        self.arrivals += 1;
        self.by_subscription.insert(subscription_id.into(), key);
        self.by_deadline
            .insert(key, (subscription_id.into(), series));
    }

    /// Ends the pending trial of `subscription_id`, whose subscription just started, as
    /// converted; `None` when it has none (or its deadline has passed).
    pub fn convert(&mut self, subscription_id: &str) -> Option<PendingTrial<S>> {
        let key = *self.pending(subscription_id, self.event_time_ms)?;
        self.by_subscription.remove(subscription_id);
        let (_, series) = self.by_deadline.remove(&key)?;
        Some(PendingTrial {
            deadline_ms: key.0,
            series,
        })
    }

    /// The series of every pending trial.
    pub fn series(&self) -> impl Iterator<Item = &S> {
        self.by_deadline.values().map(|(_, series)| series)
    }

    /// How many trials are pending.
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn expired(trials: &mut Trials<&'static str>) -> Vec<(i64, &'static str)> {
        std::iter::from_fn(|| trials.next_expired())
            .map(|t| (t.deadline_ms, t.series))
            .collect()
    }

    #[test]
    fn a_trial_converts_until_its_deadline_and_expires_after_it() {
        let mut trials = Trials::new(3 * DAY);
        trials.advance(0);
        trials.start("a", 14 * DAY, "smb");
        trials.start("b", 14 * DAY, "ent");
        // After the trial's end, within the grace: a conversion.
        trials.advance(16 * DAY);
        assert_eq!(expired(&mut trials), vec![]);
        assert_eq!(
            trials.convert("a"),
            Some(PendingTrial {
                deadline_ms: 17 * DAY,
                series: "smb"
            })
        );
        assert_eq!(trials.convert("a"), None);
        // At the deadline exactly, still pending; a millisecond after, expired.
        trials.advance(17 * DAY);
        assert_eq!(expired(&mut trials), vec![]);
        trials.advance(17 * DAY + 1);
        assert_eq!(expired(&mut trials), vec![(17 * DAY, "ent")]);
        assert_eq!(trials.convert("b"), None);
        assert!(trials.is_empty());
    }

    #[test]
    fn an_older_event_does_not_move_the_event_time_back() {
        let mut trials = Trials::new(0);
        trials.advance(10 * DAY);
        trials.start("a", 12 * DAY, ());
        trials.advance(13 * DAY);
        trials.advance(DAY);
        // Expired by the event time reached, whatever the date of the latest event.
        assert_eq!(trials.convert("a"), None);
        assert_eq!(trials.next_expired().map(|t| t.deadline_ms), Some(12 * DAY));
    }

    #[test]
    fn each_rejection_has_its_reason() {
        let mut trials = Trials::new(DAY);
        trials.advance(0);
        assert_eq!(
            trials.check_start("a", 0, true).unwrap_err().reason,
            Reason::ActiveSubscription
        );
        trials.check_start("a", 0, false).unwrap();
        trials.start("a", DAY, ());
        assert_eq!(
            trials.check_start("a", 2 * DAY, false).unwrap_err().reason,
            Reason::PendingTrial
        );
        // A new trial of a subscription whose trial the event passes is a new trial; the
        // old one expires.
        trials.check_start("a", 2 * DAY + 1, false).unwrap();
        trials.advance(2 * DAY + 1);
        trials.start("a", 5 * DAY, ());
        assert_eq!(
            std::iter::from_fn(|| trials.next_expired())
                .map(|t| t.deadline_ms)
                .collect::<Vec<_>>(),
            vec![2 * DAY]
        );
        assert_eq!(trials.len(), 1);
        assert_eq!(trials.convert("a").map(|t| t.deadline_ms), Some(6 * DAY));
    }

    #[test]
    fn a_trial_read_after_its_deadline_expires_at_once_and_deadlines_saturate() {
        let mut trials = Trials::new(DAY);
        trials.advance(30 * DAY);
        trials.start("late", 2 * DAY, ());
        trials.start("far", i64::MAX - 1, ());
        assert_eq!(trials.next_expired().map(|t| t.deadline_ms), Some(3 * DAY));
        assert_eq!(trials.next_expired(), None);
        trials.advance(i64::MAX);
        assert_eq!(trials.convert("far").map(|t| t.deadline_ms), Some(i64::MAX));
    }

    #[test]
    fn trials_of_one_deadline_expire_one_by_one() {
        let mut trials = Trials::new(0);
        for id in ["a", "b", "c"] {
            trials.start(id, DAY, id);
        }
        trials.advance(DAY + 1);
        let mut series: Vec<_> = expired(&mut trials).into_iter().map(|(_, s)| s).collect();
        series.sort_unstable();
        assert_eq!(series, ["a", "b", "c"]);
    }
}
