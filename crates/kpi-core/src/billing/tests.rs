use std::borrow::Cow;
use std::collections::BTreeMap;

use super::*;
use crate::event::{Interval, SubscriptionTerms};

pub(crate) fn rates() -> Rates {
    let mut r = BTreeMap::new();
    r.insert("EUR".to_owned(), 1.08);
    r.insert("JPY".to_owned(), 0.0067);
    r.insert("IDR".to_owned(), 0.0000613);
    Rates::new("USD", &r)
}

pub(crate) fn terms(
    id: &str,
    price: i64,
    quantity: u32,
    currency: &str,
    interval: Interval,
) -> SubscriptionTerms<'static> {
    SubscriptionTerms {
        subscription_id: Cow::Owned(id.to_owned()),
        plan: Cow::Borrowed("pro"),
        price,
        quantity,
        currency: Cow::Owned(currency.to_owned()),
        interval,
        interval_count: 1,
    }
}

fn event(customer: &str, payload: Payload<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: 0,
        customer_id: Cow::Owned(customer.to_owned()),
        dimensions: [None, None, None, None],
        payload,
        reference_ms: 0,
    }
}

fn started(customer: &str, id: &str, price: i64) -> Event<'static> {
    event(
        customer,
        Payload::SubscriptionStarted(terms(id, price, 1, "USD", Interval::Month)),
    )
}

fn changed(customer: &str, id: &str, price: i64) -> Event<'static> {
    event(
        customer,
        Payload::SubscriptionChanged(terms(id, price, 1, "USD", Interval::Month)),
    )
}

fn canceled(customer: &str, id: &str) -> Event<'static> {
    event(
        customer,
        Payload::SubscriptionCanceled {
            subscription_id: Cow::Owned(id.to_owned()),
            reason: CancelReason::Voluntary,
        },
    )
}

#[test]
fn classification_follows_the_customer_mrr() {
    assert_eq!(classify(0, 10, false), Some(Movement::New));
    assert_eq!(classify(0, 10, true), Some(Movement::Reactivation));
    assert_eq!(classify(10, 20, true), Some(Movement::Expansion));
    assert_eq!(classify(20, 10, true), Some(Movement::Contraction));
    assert_eq!(classify(10, 0, true), Some(Movement::Churn));
    assert_eq!(classify(10, 10, true), None);
    assert_eq!(classify(0, 0, true), None);
}

fn apply(ledger: &mut BillingLedger<()>, e: &Event<'_>) -> MrrChange {
    ledger.apply(e, &rates(), ()).unwrap().change
}

#[test]
fn first_subscription_then_a_second_one_then_cancellations() {
    let mut l = BillingLedger::default();
    let c = apply(&mut l, &started("c1", "s1", 1000));
    assert_eq!((c.movement, c.amount), (Some(Movement::New), 10_000_000));
    // A second subscription of the same customer is expansion, not new business.
    let c = apply(&mut l, &started("c1", "s2", 500));
    assert_eq!(
        (c.movement, c.amount),
        (Some(Movement::Expansion), 5_000_000)
    );
    // Cancelling one of two is contraction; the last one is churn.
    let c = apply(&mut l, &canceled("c1", "s1"));
    assert_eq!(
        (c.movement, c.amount, c.cancellation),
        (Some(Movement::Contraction), 10_000_000, true)
    );
    let c = apply(&mut l, &canceled("c1", "s2"));
    assert_eq!((c.movement, c.amount), (Some(Movement::Churn), 5_000_000));
    // Restarting after churn is reactivation.
    let c = apply(&mut l, &started("c1", "s3", 2000));
    assert_eq!(
        (c.movement, c.amount),
        (Some(Movement::Reactivation), 20_000_000)
    );
    let c = apply(&mut l, &changed("c1", "s3", 1500));
    assert_eq!(
        (c.movement, c.amount),
        (Some(Movement::Contraction), 5_000_000)
    );
    let renewed = event(
        "c1",
        Payload::SubscriptionRenewed {
            subscription_id: Cow::Borrowed("s3"),
        },
    );
    let c = apply(&mut l, &renewed);
    assert_eq!((c.movement, c.renewal), (None, true));
    let mrr: Vec<_> = l.customers().map(|(m, _, _)| m).collect();
    assert_eq!(mrr, [15_000_000]);
}

#[test]
fn a_rejected_event_leaves_no_trace() {
    let mut l = BillingLedger::<()>::default();
    apply(&mut l, &started("c1", "s1", 1000));
    let huge = event(
        "c1",
        Payload::SubscriptionStarted(terms("s2", i64::MAX / 10_000, 1, "USD", Interval::Month)),
    );
    let err = l.apply(&huge, &rates(), ()).unwrap_err();
    assert_eq!(err.reason, Reason::OutOfRange);
    // s2 was never applied: it is unknown, and c1 still pays 10.
    let err = l.apply(&canceled("c1", "s2"), &rates(), ()).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownSubscription);
    let mrr: Vec<_> = l.customers().map(|(m, _, _)| m).collect();
    assert_eq!(mrr, [10_000_000]);
}

/// MRR of `units` base-currency units a month, in minor units of USD.
fn whale_price(units: i64) -> i64 {
    units * 100
}

#[test]
fn whales_that_would_overflow_the_partition_total_are_rejected_before_any_change() {
    let mut l = BillingLedger::<()>::default();
    // 5e12 USD a month each: one fits in Micros (9.2e12 units), two do not.
    let whale = whale_price(5_000_000_000_000);
    apply(&mut l, &started("c1", "s1", 1000));
    apply(&mut l, &started("w1", "s2", whale));
    let err = l
        .apply(&started("w2", "s3", whale), &rates(), ())
        .unwrap_err();
    assert_eq!(err.reason, Reason::OutOfRange);
    // The same whale as an expansion of an existing customer, or a change of one.
    let err = l
        .apply(&started("c1", "s4", whale), &rates(), ())
        .unwrap_err();
    assert_eq!(err.reason, Reason::OutOfRange);
    let err = l
        .apply(&changed("c1", "s1", whale), &rates(), ())
        .unwrap_err();
    assert_eq!(err.reason, Reason::OutOfRange);
    let mut mrr: Vec<_> = l.customers().map(|(m, _, _)| m).collect();
    mrr.sort();
    assert_eq!(mrr, [10_000_000, 5_000_000_000_000_000_000]);
    assert_eq!(l.total, 5_000_000_000_010_000_000);
    // w2 and s3 were never applied.
    let err = l.apply(&canceled("w2", "s3"), &rates(), ()).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownSubscription);
    // Room again once the first whale leaves.
    apply(&mut l, &canceled("w1", "s2"));
    let c = apply(&mut l, &started("w2", "s3", whale));
    assert_eq!(c.amount, 5_000_000_000_000_000_000);
}

#[test]
fn movement_sums_of_whales_do_not_wrap() {
    let mut l = BillingLedger::<()>::default();
    let whale = whale_price(9_000_000_000_000);
    let mut tally = BillingTally::default();
    // Start, cancel and restart the same whale: each movement is below Micros::MAX,
    // their sums are not.
    tally.record(&apply(&mut l, &started("w", "s", whale)));
    for _ in 0..3 {
        tally.record(&apply(&mut l, &canceled("w", "s")));
        tally.record(&apply(&mut l, &started("w", "s", whale)));
    }
    let one = MicrosSum::from(9_000_000_000_000_000_000_i64);
    assert_eq!(tally.new, one);
    assert_eq!(tally.reactivation, 3 * one);
    assert_eq!(tally.churn, 3 * one);
    assert_eq!(tally.net_new(), one);
    let mut merged = tally.clone();
    for _ in 0..1000 {
        merged.merge(&tally);
    }
    assert_eq!(merged.reactivation, 3003 * one);
    let current = Current {
        mrr: one,
        active_customers: 1,
        active_subscriptions: 1,
        active_trials: 0,
    };
    assert_eq!(WindowRevenue::new(&current, &tally).mrr_at_start, 0);
}

#[test]
fn a_canceled_subscription_cannot_cancel_renew_or_change_until_started_again() {
    let mut l = BillingLedger::<()>::default();
    apply(&mut l, &started("c1", "s1", 1000));
    let c = apply(&mut l, &canceled("c1", "s1"));
    assert!(c.cancellation);
    let renewed = event(
        "c1",
        Payload::SubscriptionRenewed {
            subscription_id: Cow::Borrowed("s1"),
        },
    );
    for e in [
        canceled("c1", "s1"),
        renewed.clone(),
        changed("c1", "s1", 500),
    ] {
        let err = l.apply(&e, &rates(), ()).unwrap_err();
        assert_eq!(err.reason, Reason::CanceledSubscription, "{e:?}");
    }
    assert_eq!(l.total, 0);
    let c = apply(&mut l, &started("c1", "s1", 2000));
    assert_eq!(c.movement, Some(Movement::Reactivation));
    assert!(apply(&mut l, &renewed).renewal);
}

#[test]
fn a_customer_in_other_series_carries_its_mrr_from_the_previous_ones() {
    let mut l = BillingLedger::<&str>::default();
    let ok = |l: &mut BillingLedger<&'static str>, e: &Event<'_>, series| {
        l.apply(e, &rates(), series).unwrap()
    };
    assert_eq!(
        ok(&mut l, &started("c1", "s1", 1000), "smb").moved_from,
        None
    );
    let a = ok(&mut l, &changed("c1", "s1", 1500), "ent");
    assert_eq!(
        a.moved_from,
        Some(Moved {
            from: "smb",
            mrr: 10_000_000,
            subscriptions: 1
        })
    );
    assert_eq!(a.change.movement, Some(Movement::Expansion));
    assert_eq!(ok(&mut l, &canceled("c1", "s1"), "ent").moved_from, None);
    // A customer without MRR carries nothing: it only counts where its next start does.
    let a = ok(&mut l, &started("c1", "s2", 1000), "mid");
    assert_eq!(a.moved_from, None);
    assert_eq!(a.change.movement, Some(Movement::Reactivation));
    let series: Vec<_> = l.customers().map(|(_, _, s)| *s).collect();
    assert_eq!(series, ["mid"]);
}

fn canceled_as(customer: &str, id: &str, reason: CancelReason) -> Event<'static> {
    event(
        customer,
        Payload::SubscriptionCanceled {
            subscription_id: Cow::Owned(id.to_owned()),
            reason,
        },
    )
}

#[test]
fn a_churn_carries_the_reason_of_the_last_cancellation_and_free_subscriptions_count() {
    let mut l = BillingLedger::<&str>::default();
    let ok = |l: &mut BillingLedger<&'static str>, e: &Event<'_>, series| {
        l.apply(e, &rates(), series).unwrap()
    };
    let a = ok(&mut l, &started("c1", "s1", 1000), "smb");
    assert!(a.change.subscription_started);
    // A free subscription is active: started, though it moves no MRR.
    let a = ok(&mut l, &started("c1", "free", 0), "smb");
    assert_eq!(
        (a.change.movement, a.change.subscription_started),
        (None, true)
    );
    // Starting an active subscription again is a change, not a start.
    let a = ok(&mut l, &started("c1", "s1", 1200), "smb");
    assert_eq!(
        (a.change.movement, a.change.subscription_started),
        (Some(Movement::Expansion), false)
    );
    let a = ok(
        &mut l,
        &canceled_as("c1", "s1", CancelReason::Delinquent),
        "smb",
    );
    assert_eq!(a.change.movement, Some(Movement::Churn));
    assert_eq!(a.change.reason, CancelReason::Delinquent);
    // A customer without MRR but with a free subscription carries it to its new series.
    let a = ok(&mut l, &started("c1", "s2", 500), "ent");
    assert_eq!(a.change.movement, Some(Movement::Reactivation));
    assert_eq!(
        a.moved_from,
        Some(Moved {
            from: "smb",
            mrr: 0,
            subscriptions: 1
        })
    );
    let state: Vec<_> = l.customers().map(|(m, n, s)| (m, n, *s)).collect();
    assert_eq!(state, [(5_000_000, 2, "ent")]);
    // A last subscription changed to a price of 0 churns voluntarily.
    ok(&mut l, &canceled("c1", "free"), "ent");
    let a = ok(&mut l, &changed("c1", "s2", 0), "ent");
    assert_eq!(
        (a.change.movement, a.change.reason),
        (Some(Movement::Churn), CancelReason::Voluntary)
    );
}

#[test]
fn quick_ratio_subscription_churn_and_churn_by_reason_of_a_window() {
    // Start of W: 4 customers paying 100 each on 6 subscriptions. In W: one new
    // customer at 30 (one subscription), one expands by 50, one contracts by 20 (a
    // canceled subscription), one churns (100, delinquent, its last subscription).
    let mut w = BillingTally::default();
    for change in [
        (
            Some(Movement::New),
            30,
            false,
            CancelReason::Voluntary,
            true,
        ),
        (
            Some(Movement::Expansion),
            50,
            false,
            CancelReason::Voluntary,
            false,
        ),
        (
            Some(Movement::Contraction),
            20,
            true,
            CancelReason::Voluntary,
            false,
        ),
        (
            Some(Movement::Churn),
            100,
            true,
            CancelReason::Delinquent,
            false,
        ),
    ] {
        let (movement, amount, cancellation, reason, subscription_started) = change;
        w.record(&MrrChange {
            movement,
            amount,
            renewal: false,
            cancellation,
            reason,
            subscription_started,
        });
    }
    assert_eq!(w.quick_ratio(), Some(80.0 / 120.0));
    assert_eq!(w.churn_by(CancelReason::Delinquent), (100, 1));
    assert_eq!(w.churn_by(CancelReason::Voluntary), (0, 0));
    let now = Current {
        mrr: 400 - 100 - 20 + 50 + 30,
        active_customers: 4,
        active_subscriptions: 6 + 1 - 2,
        active_trials: 0,
    };
    let r = WindowRevenue::new(&now, &w);
    assert_eq!(r.subscriptions_at_start, 6);
    assert_eq!(r.subscription_churn_ratio(&w), Some(2.0 / 6.0));
    assert_eq!(
        r.customer_churn_ratio_by(&w, CancelReason::Delinquent),
        Some(0.25)
    );
    assert_eq!(
        r.customer_churn_ratio_by(&w, CancelReason::Voluntary),
        Some(0.0)
    );
    // Nothing lost: no quick ratio; nothing active at the start: no churn ratios.
    let gains = BillingTally {
        new: 10,
        new_customers: 1,
        subscriptions_started: 1,
        ..BillingTally::default()
    };
    assert_eq!(gains.quick_ratio(), None);
    let fresh = WindowRevenue::new(
        &Current {
            mrr: 10,
            active_customers: 1,
            active_subscriptions: 1,
            active_trials: 0,
        },
        &gains,
    );
    assert_eq!(fresh.subscription_churn_ratio(&gains), None);
    assert_eq!(
        fresh.customer_churn_ratio_by(&gains, CancelReason::Voluntary),
        None
    );
}

#[test]
fn unknown_subscriptions_are_rejected() {
    let mut l = BillingLedger::<()>::default();
    for e in [changed("c", "s9", 10), canceled("c", "s9")] {
        let err = l.apply(&e, &rates(), ()).unwrap_err();
        assert_eq!(err.reason, Reason::UnknownSubscription);
    }
    assert_eq!(l.customers().count(), 0);
}

#[test]
fn window_rates_from_the_current_state_and_the_window_activity() {
    // Start of W: 4 customers paying 100 each. In W: one churns (100), one contracts
    // by 20, one expands by 50, one new customer at 30; one renewal, one cancellation.
    let w = BillingTally {
        new: 30,
        expansion: 50,
        contraction: 20,
        churn: 100,
        new_customers: 1,
        churned_customers: 1,
        renewals: 1,
        cancellations: 1,
        ..BillingTally::default()
    };
    let now = Current {
        mrr: 400 - 100 - 20 + 50 + 30,
        active_customers: 4,
        active_subscriptions: 4,
        active_trials: 0,
    };
    let r = WindowRevenue::new(&now, &w);
    assert_eq!(
        (r.mrr_at_start, r.active_at_start, r.active_at_end),
        (400, 4, 4)
    );
    assert_eq!(r.customer_churn_ratio(&w), Some(0.25));
    assert_eq!(r.revenue_churn_ratio(&w), Some(120.0 / 400.0));
    assert_eq!(r.net_revenue_retention_ratio(&w), Some(330.0 / 400.0));
    assert_eq!(r.customer_retention_ratio(&w), Some(0.75));
    assert_eq!(renewal_ratio(&w), Some(0.5));
    assert_eq!(w.net_new(), -40);
    assert_eq!(now.arpa(), Some(90.0));
    assert_eq!(clv(now.arpa(), r.customer_churn_ratio(&w)), Some(360.0));
}

#[test]
fn empty_windows_and_zero_churn_have_no_ratio() {
    let w = BillingTally::default();
    let none = WindowRevenue::new(&Current::default(), &w);
    assert_eq!(none.customer_churn_ratio(&w), None);
    assert_eq!(none.revenue_churn_ratio(&w), None);
    assert_eq!(renewal_ratio(&w), None);
    assert_eq!(Current::default().arpa(), None);
    let some = WindowRevenue::new(
        &Current {
            mrr: 100,
            active_customers: 1,
            active_subscriptions: 1,
            active_trials: 0,
        },
        &w,
    );
    assert_eq!(some.customer_churn_ratio(&w), Some(0.0));
    assert_eq!(clv(Some(100.0), Some(0.0)), None);
    assert_eq!(clv(Some(100.0), None), None);
}
