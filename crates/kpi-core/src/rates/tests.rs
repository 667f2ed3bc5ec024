use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::billing::BillingLedger;
use crate::billing::tests::{rates, terms};
use crate::event::{CancelReason, Event, Payload};

const DAY_MS: i64 = 86_400_000;

fn monthly(price: i64, currency: &str) -> SubscriptionTerms<'static> {
    terms("s", price, 1, currency, Interval::Month)
}

fn change(currency: &str, rate: f64, valid_from_ms: i64) -> RateChange {
    RateChange {
        currency: currency.to_owned(),
        rate,
        valid_from_ms,
    }
}

#[test]
fn mrr_normalises_interval_quantity_and_currency() {
    let r = rates();
    let mrr = |t: &SubscriptionTerms<'_>| r.mrr(t, 0);
    assert_eq!(mrr(&monthly(4900, "USD")), Ok(49_000_000));
    assert_eq!(
        mrr(&terms("s", 4900, 3, "USD", Interval::Month)),
        Ok(147_000_000)
    );
    // 990.00 a year is 82.50 a month.
    assert_eq!(
        mrr(&terms("s", 99_000, 1, "USD", Interval::Year)),
        Ok(82_500_000)
    );
    let mut two_years = terms("s", 120_000, 1, "USD", Interval::Year);
    two_years.interval_count = 2;
    assert_eq!(mrr(&two_years), Ok(50_000_000));
    // 49.00 EUR at 1.08 = 52.92 USD.
    assert_eq!(mrr(&monthly(4900, "EUR")), Ok(52_920_000));
    // JPY has no minor unit: 10,000 JPY at 0.0067 = 67 USD.
    assert_eq!(mrr(&monthly(10_000, "JPY")), Ok(67_000_000));
    // A tiny rate keeps its precision: 1,000,000.00 IDR at 0.0000613 = 61.30 USD.
    assert_eq!(mrr(&monthly(100_000_000, "IDR")), Ok(61_300_000));
    let err = mrr(&monthly(100, "GBP")).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownCurrency);
}

#[test]
fn a_rate_holds_from_its_valid_from_and_the_fixed_one_before_the_first() {
    let mut r = rates();
    r.insert(&change("EUR", 1.10, 10 * DAY_MS), 10).unwrap();
    // Inserted out of order: the table keeps them by valid_from.
    r.insert(&change("EUR", 1.20, 20 * DAY_MS), 10).unwrap();
    r.insert(&change("EUR", 1.15, 15 * DAY_MS), 10).unwrap();
    let eur = monthly(10_000, "EUR");
    let at = |ms: i64| r.mrr(&eur, ms).unwrap();
    assert_eq!(at(i64::MIN), 108_000_000);
    assert_eq!(at(10 * DAY_MS - 1), 108_000_000);
    assert_eq!(at(10 * DAY_MS), 110_000_000);
    assert_eq!(at(15 * DAY_MS - 1), 110_000_000);
    assert_eq!(at(15 * DAY_MS), 115_000_000);
    assert_eq!(at(20 * DAY_MS), 120_000_000);
    assert_eq!(at(i64::MAX), 120_000_000);
    assert_eq!(r.changes(), 3);
    // Other currencies keep theirs.
    assert_eq!(r.mrr(&monthly(100, "USD"), i64::MAX), Ok(1_000_000));
    assert_eq!(r.mrr(&monthly(10_000, "JPY"), i64::MAX), Ok(67_000_000));
}

#[test]
fn a_currency_without_a_fixed_rate_has_none_before_its_first() {
    let mut r = rates();
    r.insert(&change("GBP", 1.25, 10 * DAY_MS), 10).unwrap();
    let gbp = monthly(10_000, "GBP");
    let err = r.mrr(&gbp, 10 * DAY_MS - 1).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownCurrency);
    assert!(err.detail.contains("valid yet"), "{}", err.detail);
    assert_eq!(r.mrr(&gbp, 10 * DAY_MS), Ok(125_000_000));
}

#[test]
fn the_same_valid_from_again_corrects_the_rate() {
    let mut r = rates();
    r.insert(&change("EUR", 1.5, DAY_MS), 1).unwrap();
    // The table is full, but a correction adds no rate.
    r.insert(&change("EUR", 1.1, DAY_MS), 1).unwrap();
    assert_eq!(r.changes(), 1);
    assert_eq!(r.mrr(&monthly(10_000, "EUR"), DAY_MS), Ok(110_000_000));
}

#[test]
fn the_base_currency_and_a_rate_beyond_the_bound_are_rejected() {
    let mut r = rates();
    let err = r.insert(&change("USD", 1.1, 0), 10).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidValue);
    r.insert(&change("EUR", 1.1, 0), 2).unwrap();
    r.insert(&change("GBP", 1.3, 0), 2).unwrap();
    for refused in [change("EUR", 1.2, 1), change("CHF", 1.1, 0)] {
        let err = r.insert(&refused, 2).unwrap_err();
        assert_eq!(err.reason, Reason::TooManyRates);
        assert!(err.detail.contains("billing.max_rates"), "{}", err.detail);
    }
    assert_eq!(r.changes(), 2);
    // A refused rate left nothing behind: CHF still has no rate.
    assert_eq!(
        r.mrr(&monthly(100, "CHF"), 0).unwrap_err().reason,
        Reason::UnknownCurrency
    );
    assert_eq!(r.mrr(&monthly(10_000, "EUR"), 1), Ok(110_000_000));
}

#[test]
fn a_rate_message_is_read_with_its_fields_in_any_order_and_unknown_ones_skipped() {
    let parsed = parse_rate_change(
        br#"{"valid_from":"2026-01-01T00:00:00+01:00","source":"ecb","rate":1.0825,"currency":"EUR"}"#,
        1024,
    );
    assert_eq!(
        parsed,
        Ok(change("EUR", 1.0825, 1_767_222_000_000)),
        "2025-12-31T23:00:00Z"
    );
    // An integer rate, at the bounds.
    for (text, rate) in [("1", 1.0), ("1e9", 1e9), ("1e-9", 1e-9)] {
        let message =
            format!(r#"{{"currency":"IDR","rate":{text},"valid_from":"2026-01-01T00:00:00Z"}}"#);
        assert_eq!(
            parse_rate_change(message.as_bytes(), 1024).map(|c| c.rate),
            Ok(rate)
        );
    }
}

#[test]
fn every_malformed_rate_message_has_its_reason() {
    let valid_from = r#""valid_from":"2026-01-01T00:00:00Z""#;
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let message = |currency: &str, rate: &str| {
        format!(r#"{{"currency":{currency},"rate":{rate},{valid_from}}}"#)
    };
    let cases: Vec<(String, Reason)> = vec![
        (String::new(), Reason::Empty),
        ("x".repeat(2000), Reason::TooLarge),
        ("not json".into(), Reason::NotObject),
        ("{\"currency\":".into(), Reason::InvalidJson),
        (format!(r#"{{"x":{deep}}}"#), Reason::TooDeep),
        (
            message(r#""EUR","currency":"GBP""#, "1"),
            Reason::DuplicateField,
        ),
        (
            format!(r#"{{"rate":1,{valid_from}}}"#),
            Reason::MissingField,
        ),
        (message("null", "1"), Reason::MissingField),
        (
            format!(r#"{{"currency":"EUR",{valid_from}}}"#),
            Reason::MissingField,
        ),
        (
            r#"{"currency":"EUR","rate":1}"#.into(),
            Reason::MissingField,
        ),
        (message(r#""EUR""#, r#""1.08""#), Reason::WrongType),
        (message("978", "1"), Reason::WrongType),
        (
            r#"{"currency":"EUR","rate":1,"valid_from":1767225600}"#.into(),
            Reason::WrongType,
        ),
        (message(r#""eur""#, "1"), Reason::InvalidValue),
        (message(r#""EURO""#, "1"), Reason::InvalidValue),
        // Three upper-case letters, but no ISO 4217 code: its minor unit is unknown.
        (message(r#""XYZ""#, "1"), Reason::InvalidValue),
        (message(r#""EUR""#, "0"), Reason::OutOfRange),
        (message(r#""EUR""#, "-1.08"), Reason::OutOfRange),
        (message(r#""EUR""#, "1.000001e9"), Reason::OutOfRange),
        (message(r#""EUR""#, "0.999999e-9"), Reason::OutOfRange),
        (
            r#"{"currency":"EUR","rate":1,"valid_from":"2026-01-01"}"#.into(),
            Reason::InvalidTimestamp,
        ),
        (
            r#"{"currency":"EUR","rate":1,"valid_from":"2026-01-01T00:00:00"}"#.into(),
            Reason::InvalidTimestamp,
        ),
    ];
    for (message, reason) in cases {
        let err = parse_rate_change(message.as_bytes(), 1024).unwrap_err();
        assert_eq!(err.reason, reason, "{message}: {}", err.detail);
    }
    let err = parse_rate_change(b"{\"currency\":\"\xff\"}", 1024).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidUtf8);
    // A number beyond f64 is no rate, whatever serde calls it; nothing panics.
    let huge = message(r#""EUR""#, "1e999");
    assert!(parse_rate_change(huge.as_bytes(), 1024).is_err());
    // A long code is cut in the detail.
    let long = message(&format!("{:?}", "A".repeat(500)), "1");
    let err = parse_rate_change(long.as_bytes(), 1024).unwrap_err();
    assert!(err.detail.len() < 100, "{}", err.detail);
}

fn event(subscription: &str, at_ms: i64, payload: Payload<'static>) -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: at_ms,
        customer_id: Cow::Owned(format!("c-{subscription}")),
        dimensions: [None, None, None, None],
        payload,
        reference_ms: at_ms,
    }
}

fn terms_of(subscription: &str, price: i64, currency: &str) -> SubscriptionTerms<'static> {
    terms(subscription, price, 1, currency, Interval::Month)
}

#[test]
fn a_rate_change_alone_moves_no_mrr_and_the_next_event_converts_at_its_own_time() {
    let mut r = rates();
    let mut ledger = BillingLedger::<()>::default();
    let started = event(
        "s1",
        DAY_MS,
        Payload::SubscriptionStarted(terms_of("s1", 10_000, "EUR")),
    );
    ledger.apply(&started, &r, ()).unwrap();
    let mrr = |l: &BillingLedger<()>| l.customers().map(|(m, _, _)| m).sum::<i64>();
    assert_eq!(mrr(&ledger), 108_000_000);
    // Valid before and after the start: the MRR stays as converted.
    r.insert(&change("EUR", 0.5, 0), 10).unwrap();
    r.insert(&change("EUR", 2.0, 2 * DAY_MS), 10).unwrap();
    assert_eq!(mrr(&ledger), 108_000_000);
    // A renewal converts nothing.
    let renewed = event(
        "s1",
        3 * DAY_MS,
        Payload::SubscriptionRenewed {
            subscription_id: Cow::Borrowed("s1"),
        },
    );
    let applied = ledger.apply(&renewed, &r, ()).unwrap();
    assert_eq!((applied.change.movement, mrr(&ledger)), (None, 108_000_000));
    // The same price, changed after the new rate: converted at it, an expansion.
    let changed = event(
        "s1",
        3 * DAY_MS,
        Payload::SubscriptionChanged(terms_of("s1", 10_000, "EUR")),
    );
    let applied = ledger.apply(&changed, &r, ()).unwrap();
    assert_eq!(applied.change.amount, 92_000_000);
    assert_eq!(mrr(&ledger), 200_000_000);
    let canceled = event(
        "s1",
        4 * DAY_MS,
        Payload::SubscriptionCanceled {
            subscription_id: Cow::Borrowed("s1"),
            reason: CancelReason::Voluntary,
        },
    );
    assert_eq!(
        ledger.apply(&canceled, &r, ()).unwrap().change.amount,
        200_000_000
    );
}

/// What happens to one subscription.
#[derive(Debug, Clone)]
enum Step {
    /// A rate of `CURRENCIES[currency]`, in hundredths, from `day` on.
    Rate {
        currency: usize,
        hundredths: i64,
        day: i64,
    },
    /// A `subscription.started`, or with `start` false a `subscription.changed`.
    Terms {
        start: bool,
        subscription: usize,
        currency: usize,
        price: i64,
        day: i64,
    },
    Canceled {
        subscription: usize,
        day: i64,
    },
}

/// USD is the base, EUR has a fixed rate of 1.08, GBP none.
const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];

fn step() -> impl Strategy<Value = Step> {
    let day = 0..8i64;
    prop_oneof![
        (0..4usize, 1..400i64, day.clone()).prop_map(|(currency, hundredths, day)| Step::Rate {
            currency,
            hundredths,
            day
        }),
        (
            any::<bool>(),
            0..3usize,
            0..3usize,
            0..100_000i64,
            day.clone()
        )
            .prop_map(|(start, subscription, currency, price, day)| Step::Terms {
                start,
                subscription,
                currency,
                price,
                day
            }),
        (0..3usize, day).prop_map(|(subscription, day)| Step::Canceled { subscription, day }),
    ]
}

/// The rate in hundredths of `currency` at `day`, from every rate inserted so far: the one
/// with the latest valid_from at or before it, the last inserted of equals; the fixed one
/// before any.
fn brute_rate(inserted: &[(usize, i64, i64)], currency: usize, day: i64) -> Option<i64> {
    let fixed = [Some(100), Some(108), None][currency];
    inserted
        .iter()
        .filter(|(c, _, from)| *c == currency && *from <= day)
        .fold(None, |best: Option<(i64, i64)>, (_, h, from)| match best {
            Some((best_from, _)) if best_from > *from => best,
            _ => Some((*from, *h)),
        })
        .map(|(_, h)| h)
        .or(fixed)
}

proptest! {
    /// Rates inserted before, between and after a subscription's events: each event is
    /// converted at the rate valid at its time among those inserted before it, and the MRR
    /// then held until the subscription's next event, whatever rates come later.
    #[test]
    fn each_event_converts_at_the_rate_of_its_time_and_keeps_it(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let mut r = Rates::new("USD", &[("EUR".to_owned(), 1.08)].into_iter().collect());
        let mut ledger = BillingLedger::<()>::default();
        let mut inserted: Vec<(usize, i64, i64)> = Vec::new();
        // Per subscription: its MRR in micros and whether it is active; in the order the
        // ledger first took them.
        let mut expected: Vec<(usize, i64, bool)> = Vec::new();
        for step in steps {
            match step {
                Step::Rate { currency, hundredths, day } => {
                    // A fourth currency index stands for the base itself.
                    let code = CURRENCIES.get(currency).copied().unwrap_or("USD");
                    let result = r.insert(&change(code, hundredths as f64 / 100.0, day * DAY_MS), 100);
                    if code == "USD" {
                        prop_assert_eq!(result.unwrap_err().reason, Reason::InvalidValue);
                    } else {
                        prop_assert!(result.is_ok());
                        inserted.push((currency, hundredths, day));
                    }
                }
                Step::Terms { start, subscription, currency, price, day } => {
                    let id = format!("s{subscription}");
                    let terms = terms_of(&id, price, CURRENCIES[currency]);
                    let payload = if start {
                        Payload::SubscriptionStarted(terms)
                    } else {
                        Payload::SubscriptionChanged(terms)
                    };
                    let result = ledger.apply(&event(&id, day * DAY_MS, payload), &r, ());
                    let known = expected.iter().position(|(s, _, _)| *s == subscription);
                    let active = known.is_some_and(|i| expected[i].2);
                    match brute_rate(&inserted, currency, day) {
                        _ if !start && !active => prop_assert!(result.is_err()),
                        None => prop_assert_eq!(result.unwrap_err().reason, Reason::UnknownCurrency),
                        // price cents x hundredths: x 10,000 micros / 100.
                        Some(hundredths) => {
                            prop_assert!(result.is_ok());
                            let mrr = price * hundredths * 100;
                            match known {
                                Some(i) => expected[i] = (subscription, mrr, true),
                                None => expected.push((subscription, mrr, true)),
                            }
                        }
                    }
                }
                Step::Canceled { subscription, day } => {
                    let id = format!("s{subscription}");
                    let payload = Payload::SubscriptionCanceled {
                        subscription_id: Cow::Owned(id.clone()),
                        reason: CancelReason::Voluntary,
                    };
                    let result = ledger.apply(&event(&id, day * DAY_MS, payload), &r, ());
                    match expected.iter().position(|(s, _, active)| *s == subscription && *active) {
                        Some(i) => {
                            prop_assert!(result.is_ok());
                            expected[i] = (subscription, 0, false);
                        }
                        None => prop_assert!(result.is_err()),
                    }
                }
            }
            let held: Vec<i64> = ledger.customers().map(|(mrr, _, _)| mrr).collect();
            let wanted: Vec<i64> = expected.iter().map(|(_, mrr, _)| *mrr).collect();
            prop_assert_eq!(held, wanted);
        }
    }
}
