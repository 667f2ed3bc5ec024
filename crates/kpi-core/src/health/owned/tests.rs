use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::health::customer::{BillingPart, NpsAnswer, SurveyPart, TicketPart};
use crate::health::{Bands, Mapping, SignalRule};

const T0: i64 = 1_780_000_000_000;
const DAY: i64 = 86_400_000;
const BUCKET: i64 = 90 * DAY / 16;
const MICROS: i64 = 1_000_000;

fn part(signals: CustomerSignals, segment: Option<&str>, at: i64) -> CustomerPart {
    CustomerPart {
        signals,
        segment: segment.map(str::to_owned),
        last_event_ms: at,
        through_offset: 0,
    }
}

fn nps(score: u8, at: i64) -> CustomerSignals {
    CustomerSignals {
        surveys: Some(SurveyPart {
            latest_nps: Some(NpsAnswer { at_ms: at, score }),
            ..SurveyPart::default()
        }),
        ..CustomerSignals::default()
    }
}

fn open_tickets(open: u32) -> CustomerSignals {
    CustomerSignals {
        tickets: Some(TicketPart {
            open,
            ..TicketPart::default()
        }),
        ..CustomerSignals::default()
    }
}

fn paying(mrr: i64, since: i64) -> CustomerSignals {
    CustomerSignals {
        billing: Some(BillingPart {
            mrr,
            paying_since_ms: Some(since),
            ..BillingPart::default()
        }),
        ..CustomerSignals::default()
    }
}

fn health_of(owned: &OwnedCustomers, id: &str) -> Option<CustomerHealth> {
    owned
        .published(id, &HealthModel::default())
        .map(|p| p.health)
}

fn rescore(owned: &mut OwnedCustomers, now: i64, all: bool) -> Vec<HealthChange> {
    owned.rescore(&HealthModel::default(), BUCKET, now, all, |_| true)
}

/// The score of the parts merged by hand, as the model computes it.
fn expected(parts: &[&CustomerSignals], now: i64) -> HealthScore {
    let mut merged = CustomerSignals::default();
    for part in parts {
        merged.merge(part);
    }
    HealthModel::default()
        .score(&merged.values(now, BUCKET))
        .unwrap()
}

#[test]
fn a_customer_is_scored_from_every_part_of_it_and_counted_in_its_band() {
    let mut owned = OwnedCustomers::default();
    let (survey, t1, t2, bill) = (
        nps(3, T0),
        open_tickets(1),
        open_tickets(2),
        paying(500 * MICROS, T0 - 400 * DAY),
    );
    owned.receive(4, "c", "surveys:0", Some(part(survey.clone(), None, T0)));
    owned.receive(4, "c", "tickets:0", Some(part(t1.clone(), Some("smb"), T0)));
    owned.receive(4, "c", "tickets:3", Some(part(t2.clone(), None, T0)));
    owned.receive(
        4,
        "c",
        "billing:1",
        Some(part(bill.clone(), Some("enterprise"), T0 - DAY)),
    );
    let changes = rescore(&mut owned, T0, false);
    assert_eq!(changes.len(), 1);
    let health = changes[0].published.as_ref().map(|p| &p.health).unwrap();
    let score = expected(&[&survey, &t1, &t2, &bill], T0);
    // NPS 3 scores 0 (weight 3), three open tickets 0 (1); no ticket opened in the window
    // (1), no breach (2), a flat MRR (2), no failed payment (3) and 400 days of tenure (1)
    // score 100: 900 / 13, just below healthy.
    assert_eq!(score.score, 900.0 / 13.0);
    assert_eq!(health.score, score);
    assert_eq!(health.score.band, Band::Neutral);
    assert_eq!(health.mrr, 500 * MICROS);
    // Billing's segment wins over a later ticket's.
    assert_eq!(health.segment.as_deref(), Some("enterprise"));
    assert_eq!((health.changed_at_ms, health.moved_by), (T0, None));
    assert_eq!(changes[0].transition, None);
    let totals = owned.totals();
    let neutral = totals[&(Band::Neutral, None)];
    assert_eq!((neutral.customers, neutral.mrr_major()), (1, 500.0));
    assert_eq!(
        totals[&(Band::Neutral, Some("enterprise".into()))].customers,
        1
    );
    assert_eq!(totals[&(Band::Healthy, None)], BandTotal::default());
    // Nothing new, nothing published.
    assert!(rescore(&mut owned, T0, true).is_empty());
}

#[test]
fn a_band_change_is_a_transition_explained_by_the_signal_that_moved() {
    let mut owned = OwnedCustomers::default();
    owned.receive(0, "c", "surveys:0", Some(part(nps(10, T0), None, T0)));
    owned.receive(0, "c", "tickets:0", Some(part(open_tickets(0), None, T0)));
    let first = rescore(&mut owned, T0, false);
    assert_eq!(
        first[0]
            .published
            .as_ref()
            .map(|p| &p.health)
            .unwrap()
            .score
            .band,
        Band::Healthy
    );
    // A replaced part, not an added one: the tickets partition now has three open.
    owned.receive(0, "c", "tickets:0", Some(part(open_tickets(3), None, T0)));
    owned.receive(
        0,
        "c",
        "surveys:0",
        Some(part(nps(2, T0 + DAY), None, T0 + DAY)),
    );
    let changes = rescore(&mut owned, T0 + DAY, false);
    let health = changes[0].published.as_ref().map(|p| &p.health).unwrap();
    // NPS 2 and three open tickets score 0 (weights 3 and 1), no ticket opened and no
    // breach 100 (1 and 2): 300 / 7.
    assert_eq!(health.score.score, 300.0 / 7.0);
    assert_eq!(changes[0].transition, Some((Band::Healthy, Band::Neutral)));
    assert_eq!(health.changed_at_ms, T0 + DAY);
    // NPS (weight 3) moved the score more than the open tickets (weight 1).
    assert_eq!(health.moved_by, Some(Signal::Nps));
}

#[test]
fn a_customer_whose_parts_are_all_gone_is_forgotten_and_unpublished() {
    let mut owned = OwnedCustomers::default();
    owned.receive(0, "c", "surveys:0", Some(part(nps(0, T0), None, T0)));
    owned.receive(0, "c", "tickets:1", Some(part(open_tickets(0), None, T0)));
    rescore(&mut owned, T0, false);
    owned.receive(0, "c", "surveys:0", None);
    let changes = rescore(&mut owned, T0, false);
    // Still scored from its tickets alone.
    assert_eq!(
        changes[0]
            .published
            .as_ref()
            .map(|p| &p.health)
            .unwrap()
            .score
            .score,
        100.0
    );
    owned.receive(0, "c", "tickets:1", None);
    let changes = rescore(&mut owned, T0, false);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].published, None);
    assert!(!owned.holds("c"));
    assert_eq!(owned.take_forgotten(), 1);
    assert_eq!(owned.take_forgotten(), 0);
    assert_eq!(owned.totals()[&(Band::Healthy, None)].customers, 0);
}

#[test]
fn a_small_move_is_no_news_but_tenure_crossing_a_band_is() {
    // Tenure alone, linear from 0 at 0 days to 100 at 100 days.
    let defaults = HealthModel::default();
    let rules = std::array::from_fn(|i| {
        let signal = Signal::ALL[i];
        let weight = if signal == Signal::TenureDays {
            1.0
        } else {
            0.0
        };
        SignalRule::new(defaults.rule(signal).mapping.clone(), weight).unwrap()
    });
    let mut rules: [SignalRule; 8] = rules;
    rules[Signal::TenureDays as usize] =
        SignalRule::new(Mapping::linear(0.0, 100.0).unwrap(), 1.0).unwrap();
    let model = HealthModel::new(rules, Bands::default()).unwrap();
    let rescore =
        |owned: &mut OwnedCustomers, now, all| owned.rescore(&model, BUCKET, now, all, |_| true);
    let mut owned = OwnedCustomers::default();
    let since = T0 - 69 * DAY;
    owned.receive(
        0,
        "c",
        "billing:0",
        Some(part(paying(MICROS, since), None, since)),
    );
    // 69 days: 69, neutral.
    let first = rescore(&mut owned, T0, false);
    assert_eq!(
        first[0]
            .published
            .as_ref()
            .map(|p| &p.health)
            .unwrap()
            .score
            .band,
        Band::Neutral
    );
    // A move below a tenth of a point is no news.
    assert!(rescore(&mut owned, T0 + DAY / 20, true).is_empty());
    // Nothing is scored again without a part unless every customer is asked for.
    assert!(rescore(&mut owned, T0 + 2 * DAY, false).is_empty());
    let changes = rescore(&mut owned, T0 + 2 * DAY, true);
    assert_eq!(
        changes[0]
            .published
            .as_ref()
            .map(|p| &p.health)
            .unwrap()
            .score
            .band,
        Band::Healthy
    );
    assert_eq!(changes[0].transition, Some((Band::Neutral, Band::Healthy)));
    assert_eq!(
        changes[0]
            .published
            .as_ref()
            .map(|p| &p.health)
            .unwrap()
            .moved_by,
        Some(Signal::TenureDays)
    );
}

#[test]
fn customers_of_a_partition_not_restored_wait_and_a_dropped_partition_leaves() {
    let mut owned = OwnedCustomers::default();
    owned.receive(0, "a", "surveys:0", Some(part(nps(9, T0), None, T0)));
    owned.receive(1, "b", "surveys:0", Some(part(nps(9, T0), None, T0)));
    let changes = owned.rescore(&HealthModel::default(), BUCKET, T0, false, |p| p == 0);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].customer_id, "a");
    let changes = rescore(&mut owned, T0, false);
    assert_eq!(changes[0].customer_id, "b");
    owned.drop_partition(0);
    assert!(!owned.holds("a") && owned.holds("b"));
    assert!(health_of(&owned, "b").is_some());
}

/// One step of a random history: a part (or a tombstone) of a customer from a source, or a
/// rescoring at a later time.
#[derive(Debug, Clone)]
enum Step {
    Part {
        customer: usize,
        source: usize,
        nps: Option<u8>,
        open: u32,
        mrr: i64,
    },
    Tombstone {
        customer: usize,
        source: usize,
    },
    Rescore {
        days: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, 0..3usize, proptest::option::of(0..=10u8), 0..4u32, 0..1_000i64).prop_map(
            |(customer, source, nps, open, mrr)| Step::Part { customer, source, nps, open, mrr }
        ),
        1 => (0..4usize, 0..3usize).prop_map(|(customer, source)| Step::Tombstone { customer, source }),
        2 => (0..40i64).prop_map(|days| Step::Rescore { days }),
    ]
}

fn signals_of(source: usize, nps: Option<u8>, open: u32, mrr: i64) -> CustomerSignals {
    match source {
        0 => CustomerSignals {
            surveys: Some(SurveyPart {
                latest_nps: nps.map(|score| NpsAnswer { at_ms: T0, score }),
                ..SurveyPart::default()
            }),
            ..CustomerSignals::default()
        },
        1 => open_tickets(open),
        _ => paying(mrr * MICROS, T0 - 100 * DAY),
    }
}

proptest! {
    /// After any history of parts, tombstones and rescorings, every customer's published
    /// score is the model's score of the latest part of each source, recomputed by brute
    /// force at the time it was last rescored; the band totals are the sums over them; and
    /// the transitions are exactly the band changes between successive publications.
    #[test]
    fn published_scores_totals_and_transitions_match_a_brute_force(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let model = HealthModel::default();
        let mut owned = OwnedCustomers::default();
        // The brute force: the latest part per customer and source.
        let mut latest: HashMap<(usize, usize), CustomerSignals> = HashMap::new();
        let mut published: HashMap<usize, HealthScore> = HashMap::new();
        let mut now = T0;
        for step in steps {
            match step {
                Step::Part { customer, source, nps, open, mrr } => {
                    let signals = signals_of(source, nps, open, mrr);
                    latest.insert((customer, source), signals.clone());
                    owned.receive(0, &format!("c{customer}"), &format!("s{source}"),
                        Some(part(signals, None, T0)));
                }
                Step::Tombstone { customer, source } => {
                    latest.remove(&(customer, source));
                    owned.receive(0, &format!("c{customer}"), &format!("s{source}"), None);
                }
                Step::Rescore { days } => {
                    now += days * DAY;
                    for change in owned.rescore(&model, BUCKET, now, true, |_| true) {
                        let customer: usize = change.customer_id[1..].parse().unwrap();
                        let before = published.get(&customer).map(|s| s.band);
                        match change.published.as_ref().map(|p| &p.health) {
                            Some(health) => {
                                let after = health.score.band;
                                let expected_transition =
                                    before.filter(|b| *b != after).map(|b| (b, after));
                                prop_assert_eq!(change.transition, expected_transition);
                                published.insert(customer, health.score.clone());
                            }
                            None => {
                                published.remove(&customer);
                            }
                        }
                    }
                    for customer in 0..4 {
                        let mut merged = CustomerSignals::default();
                        let mut any = false;
                        for source in 0..3 {
                            if let Some(part) = latest.get(&(customer, source)) {
                                merged.merge(part);
                                any = true;
                            }
                        }
                        let truth = any.then(|| model.score(&merged.values(now, BUCKET))).flatten();
                        let got = health_of(&owned, &format!("c{customer}")).map(|h| h.score);
                        match (&truth, &got) {
                            (Some(t), Some(g)) => {
                                prop_assert_eq!(t.band, g.band);
                                prop_assert!((t.score - g.score).abs() < SCORE_STEP);
                            }
                            (None, None) => {}
                            _ => prop_assert!(false, "c{}: {:?} against {:?}", customer, truth, got),
                        }
                    }
                    let totals = owned.totals();
                    for band in Band::ALL {
                        let count = published.values().filter(|s| s.band == band).count() as u64;
                        prop_assert_eq!(totals[&(band, None)].customers, count);
                    }
                }
            }
        }
    }
}

/// A new owner restores what the former one published: the same parts publish nothing,
/// keep the change time, and a later band change is a transition from the restored band.
#[test]
fn a_restored_publication_is_the_baseline_of_the_next_owner() {
    let mut former = OwnedCustomers::default();
    former.receive(2, "c", "surveys:0", Some(part(nps(10, T0), None, T0)));
    let published = rescore(&mut former, T0, false)[0]
        .published
        .clone()
        .unwrap();
    let mut owner = OwnedCustomers::default();
    owner.receive(2, "c", "surveys:0", Some(part(nps(10, T0), None, T0)));
    owner.restore_published(2, "c", Some(published.clone()));
    assert!(rescore(&mut owner, T0 + DAY, false).is_empty());
    assert_eq!(health_of(&owner, "c"), Some(published.health.clone()));
    owner.receive(
        2,
        "c",
        "surveys:0",
        Some(part(nps(0, T0 + DAY), None, T0 + DAY)),
    );
    let changes = rescore(&mut owner, T0 + DAY, false);
    assert_eq!(changes[0].transition, Some((Band::Healthy, Band::AtRisk)));
    assert_eq!(
        changes[0].published.as_ref().unwrap().health.moved_by,
        Some(Signal::Nps)
    );
    // Without the restored publication, the same parts would be a first score.
    let mut fresh = OwnedCustomers::default();
    fresh.receive(
        2,
        "c",
        "surveys:0",
        Some(part(nps(0, T0 + DAY), None, T0 + DAY)),
    );
    assert_eq!(rescore(&mut fresh, T0 + DAY, false)[0].transition, None);
}

/// A part older than the one held (by its offset) is a former reader's late write, and is
/// not kept; an unscored publication of an unknown customer makes no customer.
#[test]
fn an_older_part_does_not_replace_a_newer_one() {
    let mut owned = OwnedCustomers::default();
    let newer = CustomerPart {
        through_offset: 10,
        ..part(open_tickets(0), None, T0)
    };
    let older = CustomerPart {
        through_offset: 5,
        ..part(open_tickets(3), None, T0)
    };
    owned.receive(0, "c", "tickets:0", Some(newer));
    owned.receive(0, "c", "tickets:0", Some(older));
    let changes = rescore(&mut owned, T0, false);
    let health = &changes[0].published.as_ref().unwrap().health;
    assert_eq!(health.score.score, 100.0);
    owned.restore_published(0, "ghost", None);
    assert!(!owned.holds("ghost"));
    assert!(rescore(&mut owned, T0, true).is_empty());
    assert_eq!(owned.take_forgotten(), 0);
}
