//! Tests of the service levels, one-touch and reopen rates against hand-computed values and
//! a brute-force recomputation.

use std::borrow::Cow;
use std::collections::HashMap;

use proptest::prelude::*;

use super::tests::{DAY, HOUR, MINUTE, T0, aggregates, find, settings, specs, ticket_event};
use super::*;
use crate::event::{Author, Priority};

const P: PartitionId = PartitionId {
    family: Family::Tickets,
    partition: 0,
};

fn opened(at: i64, ticket: &'static str, priority: Option<Priority>) -> Event<'static> {
    ticket_event(
        at,
        Payload::TicketOpened {
            ticket_id: Cow::Borrowed(ticket),
            priority,
        },
    )
}

fn reopened(at: i64, ticket: &'static str, priority: Option<Priority>) -> Event<'static> {
    ticket_event(
        at,
        Payload::TicketReopened {
            ticket_id: Cow::Borrowed(ticket),
            priority,
        },
    )
}

fn replied(
    at: i64,
    ticket: &'static str,
    author: Author,
    public: bool,
    priority: Option<Priority>,
) -> Event<'static> {
    ticket_event(
        at,
        Payload::TicketReplied {
            ticket_id: Cow::Borrowed(ticket),
            author,
            public,
            priority,
        },
    )
}

fn agent(at: i64, ticket: &'static str) -> Event<'static> {
    replied(at, ticket, Author::Agent, true, None)
}

/// A resolution whose producer counts one agent reply and no reopen.
fn resolved(
    at: i64,
    ticket: &'static str,
    opened_at_ms: i64,
    priority: Option<Priority>,
) -> Event<'static> {
    ticket_event(
        at,
        Payload::TicketResolved {
            ticket_id: Cow::Borrowed(ticket),
            opened_at_ms,
            agent_replies: 1,
            reopens: 0,
            priority,
        },
    )
}

/// A record's value and components.
type Values = (Option<f64>, Vec<Option<f64>>);

/// The value and components of `kpi` in `window`.
fn values(records: &[KpiRecord], kpi: &str, window: &str) -> Values {
    let r = find(records, &format!("{kpi}/{window}"));
    (r.value, r.components.clone())
}

#[test]
fn breaches_one_touch_and_reopens_are_judged_at_the_reply_and_the_resolution() {
    use Priority::{High, Low, Urgent};
    let mut agg = aggregates(10);
    // Default targets: normal 8h and 3d, urgent 1h and 8h, low 24h and 7d.
    let events = [
        // b: no priority (normal); first agent reply after 9h: breached; two replies.
        opened(T0 - 20 * HOUR, "b", None),
        // c: urgent, replied after 10 minutes, resolved after 10h (breached, one-touch),
        // reopened and resolved again after 19h10m from its opening (breached, reopened).
        opened(T0 - 20 * HOUR, "c", Some(Urgent)),
        agent(T0 - 19 * HOUR - 50 * MINUTE, "c"),
        replied(T0 - 19 * HOUR, "b", Author::Customer, true, None),
        agent(T0 - 11 * HOUR, "b"),
        // a: urgent, replied after 30 minutes, resolved after 9h30 (breached, one-touch).
        opened(T0 - 10 * HOUR, "a", Some(Urgent)),
        agent(T0 - 10 * HOUR, "b"),
        resolved(T0 - 10 * HOUR, "c", T0 - 20 * HOUR, None),
        agent(T0 - 9 * HOUR - 30 * MINUTE, "a"),
        resolved(T0 - 9 * HOUR, "b", T0 - 20 * HOUR, None),
        // f: opened low, made urgent by its reply after 61 minutes: breached; resolved
        // after 5h30 within urgent's 8h, one-touch.
        opened(T0 - 6 * HOUR, "f", Some(Low)),
        reopened(T0 - 5 * HOUR, "c", Some(Urgent)),
        replied(
            T0 - 5 * HOUR + MINUTE,
            "f",
            Author::Agent,
            true,
            Some(Urgent),
        ),
        agent(T0 - 4 * HOUR, "c"),
        // d: its reply (made low) arrives before its opening (urgent) 90 minutes earlier:
        // within low's 24h; never resolved.
        replied(T0 - 3 * HOUR, "d", Author::Agent, true, Some(Low)),
        opened(T0 - 4 * HOUR - 30 * MINUTE, "d", Some(Urgent)),
        // e: never replied nor resolved; a private note is no reply.
        opened(T0 - 2 * HOUR, "e", Some(High)),
        replied(T0 - 90 * MINUTE, "e", Author::Agent, false, None),
        resolved(T0 - 50 * MINUTE, "c", T0 - 20 * HOUR, None),
        resolved(T0 - 30 * MINUTE, "a", T0 - 10 * HOUR, None),
        resolved(T0 - 30 * MINUTE, "f", T0 - 6 * HOUR, None),
        // g: its opening was never seen: judged (normal, 100h: breached), not tracked.
        resolved(T0 - 20 * MINUTE, "g", T0 - 100 * HOUR, None),
    ];
    for e in &events {
        assert_eq!(agg.record(P, e, T0), Ok(Outcome::Counted), "{e:?}");
    }
    let records = agg.snapshot(T0);
    let v = |kpi, window| values(&records, kpi, window);
    // First replies in 24h: c, a, d achieved; b, f breached. None in the last hour.
    assert_eq!(
        v("first_reply_sla_breach", "24h"),
        (Some(0.4), vec![Some(3.0), Some(2.0)])
    );
    assert_eq!(
        v("first_reply_sla_breach", "1h"),
        (None, vec![Some(0.0), Some(0.0)])
    );
    // Resolutions in 24h: b, f achieved; c twice, a, g breached. In 1h: c, a, f, g.
    assert_eq!(
        v("resolution_sla_breach", "24h"),
        (Some(4.0 / 6.0), vec![Some(2.0), Some(4.0)])
    );
    assert_eq!(
        v("resolution_sla_breach", "1h"),
        (Some(0.75), vec![Some(1.0), Some(3.0)])
    );
    // Tracked in 24h: c twice, b, a, f; one-touch c (first time), a, f; reopened c.
    assert_eq!(
        v("one_touch", "24h"),
        (Some(0.6), vec![Some(3.0), Some(5.0)])
    );
    assert_eq!(v("reopen", "24h"), (Some(0.2), vec![Some(1.0), Some(5.0)]));
    assert_eq!(
        v("one_touch", "1h"),
        (Some(2.0 / 3.0), vec![Some(2.0), Some(3.0)])
    );
    assert_eq!(
        v("reopen", "1h"),
        (Some(1.0 / 3.0), vec![Some(1.0), Some(3.0)])
    );
    // FCR still reads the producer's counts: every resolution says one reply, no reopen.
    assert_eq!(find(&records, "fcr/24h").value, Some(1.0));
}

#[test]
fn configured_targets_decide_the_breach() {
    use crate::sla::Targets;
    let mut settings = settings(10);
    let minute = Targets {
        first_reply_ms: MINUTE as u64,
        resolution_ms: 2 * MINUTE as u64,
    };
    settings.sla = SlaTargets::new([minute; 4]);
    let mut agg = Aggregates::new(settings);
    for e in [
        opened(T0 - 10 * MINUTE, "a", None),
        agent(T0 - 9 * MINUTE, "a"),
        resolved(T0 - 8 * MINUTE, "a", T0 - 10 * MINUTE, None),
        opened(T0 - 10 * MINUTE, "b", Some(Priority::Low)),
        agent(T0 - 8 * MINUTE, "b"),
        resolved(T0 - 7 * MINUTE, "b", T0 - 10 * MINUTE, None),
    ] {
        agg.record(P, &e, T0).unwrap();
    }
    let records = agg.snapshot(T0);
    let v = |kpi| values(&records, kpi, "1h").1;
    assert_eq!(v("first_reply_sla_breach"), [Some(1.0), Some(1.0)]);
    assert_eq!(v("resolution_sla_breach"), [Some(1.0), Some(1.0)]);
}

/// The backlog's records at `now`: (open, components), at risk, breached.
fn backlog(agg: &Aggregates, now: i64) -> (Values, f64, f64) {
    let records = agg.snapshot(now);
    let count = |key| find(&records, key).value.unwrap();
    (
        values(&records, "backlog", "current"),
        count("sla_at_risk/current"),
        count("sla_breached_open/current"),
    )
}

fn counts<const N: usize>(values: [u32; N]) -> Vec<Option<f64>> {
    values.iter().map(|&v| Some(f64::from(v))).collect()
}

#[test]
fn the_backlog_counts_open_tickets_at_the_snapshot_over_every_partition() {
    use Priority::{High, Low, Normal, Urgent};
    let mut agg = aggregates(10);
    let other = PartitionId::new(Family::Tickets, 1);
    let events = [
        // h: urgent, waiting 30 minutes for its first reply (1h): at risk.
        (P, opened(T0 - 30 * MINUTE, "h", Some(Urgent))),
        // i: urgent, replied: only its 8h resolution clock runs.
        (P, opened(T0 - 2 * HOUR, "i", Some(Urgent))),
        (P, agent(T0 - 110 * MINUTE, "i")),
        // j: no priority, waiting 9h for a reply (normal: 8h): breached.
        (P, opened(T0 - 9 * HOUR, "j", None)),
        // n: resolved, not in the backlog.
        (P, opened(T0 - 3 * HOUR, "n", Some(Urgent))),
        (P, resolved(T0 - HOUR, "n", T0 - 3 * HOUR, None)),
        // o: a reopen of a ticket not held opens it at the reopen, its reply settled.
        (P, reopened(T0 - 10 * MINUTE, "o", Some(High))),
        // k: low, 2 days, replied; l: high, 5 days (resolution 1d: breached); m: normal,
        // 8 days (3d: breached); on another partition.
        (other, opened(T0 - 2 * DAY, "k", Some(Low))),
        (other, agent(T0 - 2 * DAY + HOUR, "k")),
        (other, opened(T0 - 5 * DAY, "l", Some(High))),
        (other, opened(T0 - 8 * DAY, "m", Some(Normal))),
        (other, agent(T0 - 8 * DAY + HOUR, "m")),
    ];
    for (p, e) in &events {
        agg.record(*p, e, T0).unwrap();
    }
    // By priority (low, normal, high, urgent, none), then by age band.
    assert_eq!(
        backlog(&agg, T0),
        (
            (Some(7.0), counts([1, 1, 2, 2, 1, 2, 1, 1, 1, 1, 1])),
            1.0,
            3.0
        )
    );
    // An hour later, h has breached and o has aged into 1h_8h, with no new event.
    assert_eq!(
        backlog(&agg, T0 + HOUR),
        (
            (Some(7.0), counts([1, 1, 2, 2, 1, 0, 3, 1, 1, 1, 1])),
            0.0,
            4.0
        )
    );
    // Only the overall series has a backlog.
    let records = agg.snapshot(T0);
    assert!(
        records
            .iter()
            .filter(|r| r.def.kpi == "backlog")
            .all(|r| r.dimension.is_none())
    );
}

/// A ticket's open spell as the recomputation keeps it.
#[derive(Debug, Clone, Copy)]
struct Spell {
    opened_at: i64,
    priority: Option<Priority>,
    /// Its first reply is still to come.
    awaited: bool,
    replies: u32,
    reopened: bool,
}

/// One ticket: its open spell, and a public agent reply waiting for its opening (time,
/// replies, priority).
#[derive(Debug, Default, Clone, Copy)]
struct Recomputed {
    open: Option<Spell>,
    waiting: Option<(i64, u32, Option<Priority>)>,
}

/// Judged at an instant: (when, duration, priority).
type Judged = (i64, u64, Option<Priority>);

/// What every event decides, recomputed in delivery order by ticket name: first replies,
/// resolutions (with tracked replies and reopen), by the rules of docs/kpis.md.
#[derive(Debug, Default)]
struct Decisions {
    first_replies: Vec<Judged>,
    resolutions: Vec<(Judged, Option<(u32, bool)>)>,
}

#[derive(Debug, Clone)]
struct ServiceStep {
    at: i64,
    kind: u8,
    ticket: usize,
    author: Author,
    public: bool,
    priority: Option<Priority>,
    duration: i64,
    swap: bool,
}

/// The decisions, and the spells open at the end.
fn recompute(steps: &[ServiceStep]) -> (Decisions, Vec<Spell>) {
    let mut tickets: HashMap<usize, Recomputed> = HashMap::new();
    let mut decisions = Decisions::default();
    let mut newest = i64::MIN;
    for s in steps {
        newest = newest.max(s.at);
        let t = tickets.entry(s.ticket).or_default();
        let fresh = |w: &(i64, u32, Option<Priority>)| w.0 >= newest - HOUR;
        match (s.kind, t.open.as_mut()) {
            (0, Some(open)) => open.priority = s.priority.or(open.priority),
            (0, None) => {
                let waiting = t.waiting.take().filter(fresh);
                let priority = waiting.and_then(|w| w.2).or(s.priority);
                t.open = Some(Spell {
                    opened_at: s.at,
                    priority,
                    awaited: waiting.is_none(),
                    replies: waiting.map_or(0, |w| w.1),
                    reopened: false,
                });
                if let Some(w) = waiting {
                    let duration = u64::try_from(w.0 - s.at).unwrap_or(0);
                    decisions.first_replies.push((w.0, duration, priority));
                }
            }
            (1, Some(open)) => {
                open.reopened = true;
                open.priority = s.priority.or(open.priority);
            }
            (1, None) => {
                t.open = Some(Spell {
                    opened_at: s.at,
                    priority: s.priority,
                    awaited: false,
                    replies: 0,
                    reopened: true,
                });
            }
            (2, open) => {
                let counts = s.author == Author::Agent && s.public;
                if let Some(open) = open {
                    open.priority = s.priority.or(open.priority);
                    if counts {
                        open.replies += 1;
                        if open.awaited {
                            open.awaited = false;
                            let duration = u64::try_from(s.at - open.opened_at).unwrap_or(0);
                            decisions
                                .first_replies
                                .push((s.at, duration, open.priority));
                        }
                    }
                } else if counts && s.at >= newest - HOUR {
                    t.waiting = match t.waiting.filter(fresh) {
                        Some((at, n, p)) => Some((at, n + 1, s.priority.or(p))),
                        None => Some((s.at, 1, s.priority)),
                    };
                }
            }
            (_, open) => {
                let open = open.copied();
                let priority = s.priority.or(open.and_then(|o| o.priority));
                let tracked = open.map(|o| (o.replies, o.reopened));
                decisions
                    .resolutions
                    .push(((s.at, s.duration as u64, priority), tracked));
                t.open = None;
                t.waiting = None;
            }
        }
    }
    let open = tickets.values().filter_map(|t| t.open).collect();
    (decisions, open)
}

fn service_steps() -> impl Strategy<Value = Vec<ServiceStep>> {
    let priority = prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(&Priority::ALL[..]).prop_map(Some),
    ];
    prop::collection::vec(
        (
            1..20 * MINUTE,
            prop_oneof![2 => Just(0u8), 1 => Just(1u8), 4 => Just(2u8), 2 => Just(3u8)],
            0..5usize,
            prop_oneof![3 => Just(Author::Agent), 1 => Just(Author::Customer)],
            prop::bool::weighted(0.8),
            priority,
            prop_oneof![0..10 * HOUR, 0..10 * DAY],
            prop::bool::weighted(0.3),
        ),
        1..60,
    )
    .prop_map(|raw| {
        let mut at = T0 - 20 * HOUR;
        let mut steps: Vec<ServiceStep> = raw
            .into_iter()
            .map(
                |(gap, kind, ticket, author, public, priority, duration, swap)| {
                    at += gap;
                    ServiceStep {
                        at,
                        kind,
                        ticket,
                        author,
                        public,
                        priority,
                        duration,
                        swap,
                    }
                },
            )
            .collect();
        // A reply delivered before the opening it follows: out of order in a partition.
        for i in 1..steps.len() {
            let (before, after) = (&steps[i - 1], &steps[i]);
            if after.swap && before.kind == 0 && after.kind == 2 && before.ticket == after.ticket {
                steps.swap(i - 1, i);
            }
        }
        steps
    })
}

proptest! {
    /// SLA breach ratios, one-touch and reopen rates equal a recomputation over the raw
    /// events, priorities changing, replies before their opening, reopens after breaches
    /// and tickets never replied included.
    #[test]
    fn service_levels_equal_a_brute_force_recomputation(steps in service_steps()) {
        const TICKETS: [&str; 5] = ["a", "b", "c", "d", "e"];
        let mut agg = aggregates(10);
        for s in &steps {
            let id = TICKETS[s.ticket];
            let event = match s.kind {
                0 => opened(s.at, id, s.priority),
                1 => reopened(s.at, id, s.priority),
                2 => replied(s.at, id, s.author, s.public, s.priority),
                _ => resolved(s.at, id, s.at - s.duration, s.priority),
            };
            prop_assert_eq!(agg.record(P, &event, T0), Ok(Outcome::Counted));
        }
        let (decisions, open) = recompute(&steps);
        let targets = SlaTargets::default();
        let records = agg.snapshot(T0);
        for spec in specs() {
            let inside = |at: i64| at >= spec.start_ms(T0);
            let count = |judged: &mut dyn Iterator<Item = (u64, u64)>| {
                judged.fold((0.0, 0.0), |(a, b), (d, target)| {
                    if d <= target { (a + 1.0, b) } else { (a, b + 1.0) }
                })
            };
            let (achieved, breached) = count(&mut decisions
                .first_replies
                .iter()
                .filter(|f| inside(f.0))
                .map(|f| (f.1, targets.of(f.2).first_reply_ms)));
            let ratio = (achieved + breached > 0.0).then(|| breached / (achieved + breached));
            prop_assert_eq!(
                values(&records, "first_reply_sla_breach", &spec.name),
                (ratio, vec![Some(achieved), Some(breached)])
            );
            let resolutions: Vec<_> =
                decisions.resolutions.iter().filter(|r| inside(r.0.0)).collect();
            let (achieved, breached) = count(&mut resolutions
                .iter()
                .map(|r| (r.0.1, targets.of(r.0.2).resolution_ms)));
            let ratio = (achieved + breached > 0.0).then(|| breached / (achieved + breached));
            prop_assert_eq!(
                values(&records, "resolution_sla_breach", &spec.name),
                (ratio, vec![Some(achieved), Some(breached)])
            );
            let tracked: Vec<(u32, bool)> = resolutions.iter().filter_map(|r| r.1).collect();
            let n = tracked.len() as f64;
            let one_touch = tracked.iter().filter(|t| t.0 == 1 && !t.1).count() as f64;
            let reopened = tracked.iter().filter(|t| t.1).count() as f64;
            prop_assert_eq!(
                values(&records, "one_touch", &spec.name),
                ((n > 0.0).then(|| one_touch / n), vec![Some(one_touch), Some(n)])
            );
            prop_assert_eq!(
                values(&records, "reopen", &spec.name),
                ((n > 0.0).then(|| reopened / n), vec![Some(reopened), Some(n)])
            );
        }
        // The backlog at T0 and a day later, from the spells still open.
        for now in [T0, T0 + DAY] {
            let mut by_priority = [0u32; 5];
            let mut by_age = [0u32; 6];
            let (mut at_risk, mut breached) = (0.0, 0.0);
            for spell in &open {
                let age = now - spell.opened_at;
                let p = match spell.priority {
                    Some(Priority::Low) => 0,
                    Some(Priority::Normal) => 1,
                    Some(Priority::High) => 2,
                    Some(Priority::Urgent) => 3,
                    None => 4,
                };
                by_priority[p] += 1;
                let band = if age < HOUR {
                    0
                } else if age < 8 * HOUR {
                    1
                } else if age < DAY {
                    2
                } else if age < 3 * DAY {
                    3
                } else if age < 7 * DAY {
                    4
                } else {
                    5
                };
                by_age[band] += 1;
                let target = targets.of(spell.priority);
                let mut deadlines = vec![target.resolution_ms as i64];
                if spell.awaited {
                    deadlines.push(target.first_reply_ms as i64);
                }
                if deadlines.iter().any(|&d| age > d) {
                    breached += 1.0;
                } else if deadlines.iter().any(|&d| age + HOUR > d) {
                    at_risk += 1.0;
                }
            }
            let mut components = counts(by_priority);
            components.extend(counts(by_age));
            prop_assert_eq!(
                backlog(&agg, now),
                ((Some(open.len() as f64), components), at_risk, breached)
            );
        }
    }
}

/// With `agent` among the dimensions, CSAT, FCR, resolutions and first replies count in
/// the series of the agent of the answer, the resolution and the reply; an opening names
/// no agent.
#[test]
fn csat_fcr_resolutions_and_first_replies_count_per_agent() {
    let mut settings = settings(10);
    settings.dimensions = Dimensions::new(&["agent".to_owned()], 10);
    let mut aggregates = Aggregates::new(settings);
    let at = |minutes: i64| crate::kpi::rfc3339(T0 + minutes * MINUTE);
    let events = [
        (
            Family::Tickets,
            format!(
                r#"{{"event_id":"o1","type":"ticket.opened","occurred_at":"{}","customer_id":"c","ticket_id":"t1","agent_id":"a9"}}"#,
                at(0)
            ),
        ),
        (
            Family::Tickets,
            format!(
                r#"{{"event_id":"r1","type":"ticket.replied","occurred_at":"{}","customer_id":"c","ticket_id":"t1","author":"agent","agent_id":"a2"}}"#,
                at(10)
            ),
        ),
        (
            Family::Tickets,
            format!(
                r#"{{"event_id":"z1","type":"ticket.resolved","occurred_at":"{}","customer_id":"c","ticket_id":"t1","opened_at":"{}","agent_replies":1,"reopens":0,"agent_id":"a1"}}"#,
                at(20),
                at(0)
            ),
        ),
        (
            Family::Surveys,
            format!(
                r#"{{"event_id":"s1","type":"survey.responded","occurred_at":"{}","customer_id":"c","survey":"csat","score":5,"ticket_id":"t1","agent_id":"a1"}}"#,
                at(30)
            ),
        ),
        (
            Family::Surveys,
            format!(
                r#"{{"event_id":"s2","type":"survey.responded","occurred_at":"{}","customer_id":"c","survey":"csat","score":1,"agent_id":"a2"}}"#,
                at(31)
            ),
        ),
    ];
    let now = T0 + 40 * MINUTE;
    let limits = crate::event::Limits {
        max_event_bytes: 1 << 20,
        max_future_skew_ms: 5 * MINUTE,
    };
    for (family, text) in &events {
        let event = crate::event::parse(text.as_bytes(), *family, now, &limits).unwrap();
        aggregates
            .record(PartitionId::new(*family, 0), &event, now)
            .unwrap();
    }
    let records = aggregates.snapshot(now);
    let value = |key: &str| find(&records, key).value;
    assert_eq!(value("csat/1h/agent=a1"), Some(1.0));
    assert_eq!(value("csat/1h/agent=a2"), Some(0.0));
    assert_eq!(value("fcr/1h/agent=a1"), Some(1.0));
    assert_eq!(value("tickets_resolved/1h/agent=a1"), Some(1.0));
    assert_eq!(value("first_reply_time/1h/agent=a2"), Some(600.0));
    // The opening's agent_id is not in its contract: no series of its own.
    assert!(records.iter().all(|r| !r.key().ends_with("agent=a9")));
    assert_eq!(value("tickets_opened/1h/agent=unknown"), Some(1.0));
}
