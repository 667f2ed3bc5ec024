//! One customer's signals as the events of the three families make them, and their values
//! at an instant.
//!
//! Each family's events make one part of a customer's signals, kept where those events are
//! read. A customer's tickets are spread over the tickets partitions (tickets are keyed by
//! ticket), so several partitions each keep a [`TicketPart`] of the same customer; parts add
//! up ([`CustomerSignals::merge`]) wherever they meet, in any order, to what one partition
//! reading every event would keep. A family the customer has no event of leaves its signals
//! missing, not perfect: a customer who never opened a ticket is not scored as one whose
//! support goes well.

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

/// What a customer's survey answers say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurveyPart {
    pub latest_nps: Option<NpsAnswer>,
    /// CSAT answers within the signal window: the sum of their scores and their number.
    pub csat_points: SignalWindow<u32>,
    pub csat_answers: SignalWindow<u32>,
}

/// What happens to a customer's tickets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TicketPart {
    pub opened: SignalWindow<u32>,
    /// Open now.
    pub open: u32,
    /// First-reply and resolution SLA breaches.
    pub sla_breaches: SignalWindow<u32>,
}

/// What a customer pays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingPart {
    /// Current MRR, in base-currency micros.
    pub mrr: Micros,
    /// Expansion less contraction, in micros.
    pub mrr_change: SignalWindow<i64>,
    /// Delinquent churns: payments that failed after dunning.
    pub payment_failures: SignalWindow<u32>,
    /// When the customer last became a paying customer; `None` while it pays nothing.
    pub paying_since_ms: Option<i64>,
}

/// A customer's signals, or the part of them some partitions' events make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSignals {
    pub surveys: Option<SurveyPart>,
    pub tickets: Option<TicketPart>,
    pub billing: Option<BillingPart>,
}

/// Adds `other` into `mine`, which may be missing.
fn add_part<T: Clone>(mine: &mut Option<T>, other: &T, add: impl FnOnce(&mut T, &T)) {
    match mine.as_mut() {
        Some(mine) => add(mine, other),
        None => *mine = Some(other.clone()),
    }
}

impl CustomerSignals {
    /// Adds another part of the same customer's signals. Sums saturate, so that a part with
    /// an absurd amount cannot wrap another's into a small one.
    pub fn merge(&mut self, other: &CustomerSignals) {
        if let Some(surveys) = &other.surveys {
            self.add_surveys(surveys);
        }
        if let Some(tickets) = &other.tickets {
            self.add_tickets(tickets);
        }
        if let Some(billing) = &other.billing {
            self.add_billing(billing);
        }
    }

    /// Adds a survey part, as [`CustomerSignals::merge`] does.
    pub fn add_surveys(&mut self, other: &SurveyPart) {
        add_part(&mut self.surveys, other, |a, b| {
            a.latest_nps = a.latest_nps.max(b.latest_nps);
            a.csat_points.merge(&b.csat_points);
            a.csat_answers.merge(&b.csat_answers);
        });
    }

    /// Adds a ticket part, as [`CustomerSignals::merge`] does.
    pub fn add_tickets(&mut self, other: &TicketPart) {
        add_part(&mut self.tickets, other, |a, b| {
            a.opened.merge(&b.opened);
            a.open = a.open.saturating_add(b.open);
            a.sla_breaches.merge(&b.sla_breaches);
        });
    }

    /// Adds a billing part, as [`CustomerSignals::merge`] does.
    pub fn add_billing(&mut self, other: &BillingPart) {
        add_part(&mut self.billing, other, |a, b| {
            a.mrr = a.mrr.saturating_add(b.mrr);
            a.mrr_change.merge(&b.mrr_change);
            a.payment_failures.merge(&b.payment_failures);
            a.paying_since_ms = match (a.paying_since_ms, b.paying_since_ms) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        });
    }

    /// The signal values at `now_ms`, over the signal window of buckets of `bucket_ms`;
    /// a signal the customer has no data for is `None`.
    pub fn values(&self, now_ms: i64, bucket_ms: i64) -> SignalValues {
        let mut values = [None; Signal::ALL.len()];
        let mut set = |signal: Signal, value: Option<f64>| values[signal as usize] = value;
        let total = |window: &SignalWindow<u32>| f64::from(window.total(now_ms, bucket_ms));
        if let Some(surveys) = &self.surveys {
            set(Signal::Nps, surveys.latest_nps.map(|a| f64::from(a.score)));
            let answers = total(&surveys.csat_answers);
            set(
                Signal::Csat,
                (answers > 0.0).then(|| total(&surveys.csat_points) / answers),
            );
        }
        if let Some(tickets) = &self.tickets {
            set(Signal::TicketsOpened, Some(total(&tickets.opened)));
            set(Signal::TicketsOpen, Some(f64::from(tickets.open)));
            set(Signal::SlaBreaches, Some(total(&tickets.sla_breaches)));
        }
        if let Some(billing) = &self.billing {
            let change = i128::from(billing.mrr_change.total(now_ms, bucket_ms));
            // Relative to the MRR before the changes; none when there was none.
            let before = i128::from(billing.mrr) - change;
            set(
                Signal::MrrTrend,
                (before > 0).then(|| 100.0 * change as f64 / before as f64),
            );
            set(
                Signal::PaymentFailures,
                Some(total(&billing.payment_failures)),
            );
            set(
                Signal::TenureDays,
                billing
                    .paying_since_ms
                    .map(|since| now_ms.saturating_sub(since).max(0) as f64 / DAY_MS),
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
            surveys: Some(SurveyPart {
                latest_nps: Some(NpsAnswer { at_ms: 0, score: 9 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let values = surveyed.values(0, BUCKET);
        assert_eq!(value(&values, Signal::Nps), Some(9.0));
        assert_eq!(value(&values, Signal::Csat), None);
        assert_eq!(value(&values, Signal::TicketsOpened), None);
        assert_eq!(value(&values, Signal::PaymentFailures), None);
    }

    #[test]
    fn parts_of_one_customer_add_up_and_the_latest_answer_wins() {
        let mut surveys = SurveyPart {
            latest_nps: Some(NpsAnswer { at_ms: 5, score: 2 }),
            ..Default::default()
        };
        surveys.csat_points.add(0, BUCKET, 5);
        surveys.csat_answers.add(0, BUCKET, 1);
        let mut tickets = TicketPart {
            open: 1,
            ..Default::default()
        };
        tickets.opened.add(0, BUCKET, 2);
        let a = CustomerSignals {
            surveys: Some(surveys),
            tickets: Some(tickets),
            billing: None,
        };
        let mut surveys = SurveyPart {
            latest_nps: Some(NpsAnswer {
                at_ms: 9,
                score: 10,
            }),
            ..Default::default()
        };
        surveys.csat_points.add(BUCKET, BUCKET, 2);
        surveys.csat_answers.add(BUCKET, BUCKET, 1);
        let mut tickets = TicketPart {
            open: 2,
            ..Default::default()
        };
        tickets.opened.add(BUCKET, BUCKET, 1);
        let mut billing = BillingPart {
            mrr: 110_000_000,
            paying_since_ms: Some(-10 * BUCKET),
            ..Default::default()
        };
        billing.mrr_change.add(BUCKET, BUCKET, 10_000_000);
        billing.payment_failures.add(BUCKET, BUCKET, 1);
        let b = CustomerSignals {
            surveys: Some(surveys),
            tickets: Some(tickets),
            billing: Some(billing),
        };
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
        let mut billing = BillingPart {
            mrr: 50,
            ..Default::default()
        };
        billing.mrr_change.add(0, BUCKET, 50);
        let mut signals = CustomerSignals {
            billing: Some(billing),
            ..Default::default()
        };
        assert_eq!(value(&signals.values(0, BUCKET), Signal::MrrTrend), None);
        let mut billing = BillingPart {
            mrr: i64::MAX,
            ..Default::default()
        };
        billing.mrr_change.add(0, BUCKET, i64::MIN);
        signals.billing = Some(billing);
        let trend = value(&signals.values(0, BUCKET), Signal::MrrTrend).unwrap();
        assert!(trend.is_finite() && trend < 0.0, "{trend}");
    }
}
