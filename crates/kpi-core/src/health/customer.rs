//! One customer's signals as the events of the three families make them, and their values
//! at an instant.
//!
//! A customer's tickets are spread over the tickets partitions (tickets are keyed by
//! ticket), so each partition keeps its own part of the customer's signals; parts add up
//! ([`CustomerSignals::merge`]) wherever they meet, in any order, to what one partition
//! reading every event would keep.

use serde::{Deserialize, Serialize};

use super::signal_window::SignalWindow;
use super::{Signal, SignalValues};
use crate::billing::Micros;

const DAY_MS: f64 = 86_400_000.0;

/// An NPS answer: when it was given, and its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NpsAnswer {
    pub at_ms: i64,
    pub score: u8,
}

/// A customer's signals, or the part of them one partition's events make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSignals {
    pub latest_nps: Option<NpsAnswer>,
    /// CSAT answers within the signal window: the sum of their scores and their number.
    pub csat_points: SignalWindow<u64>,
    pub csat_answers: SignalWindow<u64>,
    /// Whether any ticket event of the customer was seen: without one, the ticket signals
    /// are missing rather than perfect.
    pub tickets_seen: bool,
    pub tickets_opened: SignalWindow<u64>,
    pub tickets_open: u64,
    pub sla_breaches: SignalWindow<u64>,
    /// Whether any billing event of the customer was seen, for the same reason.
    pub billing_seen: bool,
    /// Current MRR, in base-currency micros.
    pub mrr: Micros,
    /// Expansion less contraction within the signal window, in micros.
    pub mrr_change: SignalWindow<i128>,
    pub payment_failures: SignalWindow<u64>,
    /// When the customer last became a paying customer; `None` while it pays nothing.
    pub paying_since_ms: Option<i64>,
}

impl CustomerSignals {
    /// Adds another part of the same customer's signals.
    pub fn merge(&mut self, other: &CustomerSignals) {
        self.latest_nps = self.latest_nps.max(other.latest_nps);
        self.csat_points.merge(&other.csat_points);
        self.csat_answers.merge(&other.csat_answers);
        self.tickets_seen |= other.tickets_seen;
        self.tickets_opened.merge(&other.tickets_opened);
        self.tickets_open = self.tickets_open.saturating_add(other.tickets_open);
        self.sla_breaches.merge(&other.sla_breaches);
        self.billing_seen |= other.billing_seen;
        // Billing events are keyed by customer: one part holds the MRR. Saturating, so
        // that a part forged with an absurd amount cannot wrap another's into a small one.
        self.mrr = self.mrr.saturating_add(other.mrr);
        self.mrr_change.merge(&other.mrr_change);
        self.payment_failures.merge(&other.payment_failures);
        self.paying_since_ms = match (self.paying_since_ms, other.paying_since_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The signal values at `now_ms`, over the signal window of buckets of `bucket_ms`;
    /// a signal the customer has no data for is `None`.
    pub fn values(&self, now_ms: i64, bucket_ms: i64) -> SignalValues {
        let mut values = [None; Signal::ALL.len()];
        let mut set = |signal: Signal, value: Option<f64>| values[signal as usize] = value;
        set(Signal::Nps, self.latest_nps.map(|a| f64::from(a.score)));
        let answers = self.csat_answers.total(now_ms, bucket_ms);
        set(
            Signal::Csat,
            (answers > 0)
                .then(|| self.csat_points.total(now_ms, bucket_ms) as f64 / answers as f64),
        );
        if self.tickets_seen {
            let opened = self.tickets_opened.total(now_ms, bucket_ms);
            set(Signal::TicketsOpened, Some(opened as f64));
            set(Signal::TicketsOpen, Some(self.tickets_open as f64));
            let breaches = self.sla_breaches.total(now_ms, bucket_ms);
            set(Signal::SlaBreaches, Some(breaches as f64));
        }
        if self.billing_seen {
            let change = self.mrr_change.total(now_ms, bucket_ms);
            // Relative to the MRR before the changes; none when there was none.
            let before = i128::from(self.mrr).saturating_sub(change);
            set(
                Signal::MrrTrend,
                (before > 0).then(|| 100.0 * change as f64 / before as f64),
            );
            let failures = self.payment_failures.total(now_ms, bucket_ms);
            set(Signal::PaymentFailures, Some(failures as f64));
            set(
                Signal::TenureDays,
                self.paying_since_ms
                    .map(|since| (now_ms.saturating_sub(since)).max(0) as f64 / DAY_MS),
            );
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKET: i64 = 86_400_000;

    fn value(values: &SignalValues, signal: Signal) -> Option<f64> {
        values[signal as usize]
    }

    #[test]
    fn a_customer_without_events_of_a_family_misses_its_signals() {
        let values = CustomerSignals::default().values(0, BUCKET);
        assert!(values.iter().all(Option::is_none), "{values:?}");
        let surveyed = CustomerSignals {
            latest_nps: Some(NpsAnswer { at_ms: 0, score: 9 }),
            ..Default::default()
        };
        let values = surveyed.values(0, BUCKET);
        assert_eq!(value(&values, Signal::Nps), Some(9.0));
        assert_eq!(value(&values, Signal::TicketsOpened), None);
        assert_eq!(value(&values, Signal::PaymentFailures), None);
    }

    #[test]
    fn parts_of_one_customer_add_up_and_the_latest_answer_wins() {
        let mut a = CustomerSignals {
            latest_nps: Some(NpsAnswer { at_ms: 5, score: 2 }),
            tickets_seen: true,
            tickets_open: 1,
            ..Default::default()
        };
        a.tickets_opened.add(0, BUCKET, 2);
        a.csat_points.add(0, BUCKET, 5);
        a.csat_answers.add(0, BUCKET, 1);
        let mut b = CustomerSignals {
            latest_nps: Some(NpsAnswer {
                at_ms: 9,
                score: 10,
            }),
            tickets_seen: true,
            tickets_open: 2,
            billing_seen: true,
            mrr: 110_000_000,
            paying_since_ms: Some(-10 * BUCKET),
            ..Default::default()
        };
        b.tickets_opened.add(BUCKET, BUCKET, 1);
        b.csat_points.add(BUCKET, BUCKET, 2);
        b.csat_answers.add(BUCKET, BUCKET, 1);
        b.mrr_change.add(BUCKET, BUCKET, 10_000_000);
        b.payment_failures.add(BUCKET, BUCKET, 1);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        let values = ab.values(2 * BUCKET, BUCKET);
        assert_eq!(value(&values, Signal::Nps), Some(10.0));
        assert_eq!(value(&values, Signal::Csat), Some(3.5));
        assert_eq!(value(&values, Signal::TicketsOpened), Some(3.0));
        assert_eq!(value(&values, Signal::TicketsOpen), Some(3.0));
        assert_eq!(value(&values, Signal::SlaBreaches), Some(0.0));
        // 100 before, 110 after: +10%.
        assert_eq!(value(&values, Signal::MrrTrend), Some(10.0));
        assert_eq!(value(&values, Signal::PaymentFailures), Some(1.0));
        assert_eq!(value(&values, Signal::TenureDays), Some(12.0));
    }

    #[test]
    fn the_mrr_trend_needs_mrr_before_the_changes() {
        let mut signals = CustomerSignals {
            billing_seen: true,
            ..Default::default()
        };
        signals.mrr_change.add(0, BUCKET, 50);
        signals.mrr = 50;
        assert_eq!(value(&signals.values(0, BUCKET), Signal::MrrTrend), None);
        signals.mrr = i64::MAX;
        signals.mrr_change = SignalWindow::default();
        signals.mrr_change.add(0, BUCKET, i128::MIN);
        let trend = value(&signals.values(0, BUCKET), Signal::MrrTrend).unwrap();
        assert!(trend.is_finite() && trend < 0.0, "{trend}");
    }
}
