//! Ticket KPIs end to end against the real broker, checked against hand-computed values in
//! /metrics, /kpis and on the output topic, then after a SIGKILL and a restart that rebuilds
//! the open tickets by replay: first reply time (customer replies, private notes, replies
//! before their opening, a reopen, a ticket never replied), SLA breaches, one-touch and
//! reopen rates, and the backlog.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

use crate::harness::{
    Metrics, Service, Topics, committed_to_end, eventually, latest_output, now_ms, produce,
    producer, rfc3339,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn ticket(id: &str, kind: &str, ticket: &str, at: i64, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at),
        "customer_id": "c1", "ticket_id": ticket, "segment": "smb"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// The first reply times, by hand:
/// - t-a: opened 3 h ago; a customer reply and a private note, then the first public agent
///   reply 2 h 30 min ago (1,800 s), another 1 h ago;
/// - t-b: its agent reply 100 min ago arrives before its opening, dated 105 min ago (300 s),
///   and is counted at the reply, in the reply's segment (`ent`);
/// - t-c: opened 2 days ago, first reply 1 day 23 h ago (3,600 s): in 7d and 30d only;
/// - t-d: opened, replied 10 min later (600 s), resolved, reopened and replied again: the
///   reopen starts no new first reply;
/// - t-e: opened and never replied.
///
/// 1h: none. 24h: t-a (1,800 s), t-b (300 s), t-d (600 s). 7d: those and t-c (3,600 s).
fn events(now: i64) -> Vec<Value> {
    let agent = |public: bool| json!({"author": "agent", "agent_id": "agent-7", "public": public});
    vec![
        ticket(
            "a1",
            "ticket.opened",
            "t-a",
            now - 3 * HOUR,
            json!({"priority": "high"}),
        ),
        ticket(
            "a2",
            "ticket.replied",
            "t-a",
            now - 170 * MINUTE,
            json!({"author": "customer"}),
        ),
        ticket(
            "a3",
            "ticket.replied",
            "t-a",
            now - 160 * MINUTE,
            agent(false),
        ),
        ticket(
            "a4",
            "ticket.replied",
            "t-a",
            now - 150 * MINUTE,
            agent(true),
        ),
        ticket("a5", "ticket.replied", "t-a", now - HOUR, agent(true)),
        {
            let mut reply = ticket(
                "b1",
                "ticket.replied",
                "t-b",
                now - 100 * MINUTE,
                json!({"author": "agent"}),
            );
            reply["segment"] = json!("ent");
            reply
        },
        ticket("b2", "ticket.opened", "t-b", now - 105 * MINUTE, json!({})),
        ticket("c1", "ticket.opened", "t-c", now - 2 * DAY, json!({})),
        ticket(
            "c2",
            "ticket.replied",
            "t-c",
            now - 2 * DAY + HOUR,
            json!({"author": "agent"}),
        ),
        ticket(
            "d1",
            "ticket.opened",
            "t-d",
            now - 5 * HOUR,
            json!({"priority": "low"}),
        ),
        ticket(
            "d2",
            "ticket.replied",
            "t-d",
            now - 5 * HOUR + 10 * MINUTE,
            json!({"author": "agent"}),
        ),
        ticket(
            "d3",
            "ticket.resolved",
            "t-d",
            now - 4 * HOUR,
            json!({"opened_at": rfc3339(now - 5 * HOUR), "agent_replies": 1, "reopens": 0, "agent_id": "agent-7"}),
        ),
        ticket(
            "d4",
            "ticket.reopened",
            "t-d",
            now - 3 * HOUR,
            json!({"priority": "urgent"}),
        ),
        ticket(
            "d5",
            "ticket.replied",
            "t-d",
            now - 2 * HOUR,
            json!({"author": "agent"}),
        ),
        ticket("e1", "ticket.opened", "t-e", now - 20 * MINUTE, json!({})),
    ]
}

fn check_values(metrics: &Metrics) {
    let g = |name: &str, window: &str, segment: &str| {
        metrics.get(name, &[("window", window), ("segment", segment)])
    };
    assert_eq!(g("kpi_first_reply_time_seconds_mean", "1h", ""), None);
    assert_eq!(g("kpi_first_reply_time_replies", "1h", ""), Some(0.0));
    assert_eq!(g("kpi_first_reply_time_replies", "24h", ""), Some(3.0));
    assert_eq!(
        g("kpi_first_reply_time_total_seconds", "24h", ""),
        Some(2_700.0)
    );
    assert_eq!(
        g("kpi_first_reply_time_seconds_mean", "24h", ""),
        Some(900.0)
    );
    assert_eq!(
        g("kpi_first_reply_time_seconds_mean", "24h", "smb"),
        Some(1_200.0)
    );
    assert_eq!(
        g("kpi_first_reply_time_seconds_mean", "24h", "ent"),
        Some(300.0)
    );
    assert_eq!(
        g("kpi_first_reply_time_seconds_mean", "7d", ""),
        Some(6_300.0 / 4.0)
    );
    assert_eq!(g("kpi_first_reply_time_replies", "30d", ""), Some(4.0));
    let within = |seconds: &str| {
        metrics.get(
            "kpi_first_reply_time_replies_within",
            &[("window", "7d"), ("segment", ""), ("seconds", seconds)],
        )
    };
    assert_eq!(within("300"), Some(1.0));
    assert_eq!(within("900"), Some(2.0));
    assert_eq!(within("1800"), Some(3.0));
    assert_eq!(within("3600"), Some(4.0));
    assert_eq!(within("+Inf"), Some(4.0));
    // p50 of 300, 600, 1,800 and 3,600 s: rank 1, 600 s within 1%.
    let p50 = metrics
        .get(
            "kpi_first_reply_time_percentile_seconds",
            &[("window", "7d"), ("segment", ""), ("percentile", "50")],
        )
        .unwrap();
    assert!((p50 - 600.0).abs() <= 6.0, "{p50}");
    assert_eq!(metrics.get("kpi_tickets_abandoned_total", &[]), Some(0.0));
}

fn check_output(output: &HashMap<String, Value>) {
    let frt = &output["first_reply_time/24h"];
    assert_eq!(frt["value"], json!(900));
    assert_eq!(frt["samples"], json!(3));
    assert_eq!(frt["components"]["count"], json!(3));
    assert_eq!(frt["components"]["sum"], json!(2_700));
    assert_eq!(frt["components"]["le_300"], json!(1));
    assert_eq!(frt["components"]["le_inf"], json!(3));
    assert_eq!(output["first_reply_time/1h"]["value"], Value::Null);
    assert_eq!(
        output["first_reply_time/24h/segment=ent"]["value"],
        json!(300)
    );
}

/// Produces `events` to the tickets topic, keyed by ticket.
async fn produce_tickets(producer: &FutureProducer, topics: &Topics, events: &[Value]) {
    for event in events {
        let key = event["ticket_id"].as_str().unwrap();
        produce(
            producer,
            &topics.tickets,
            Some(key),
            event.to_string().as_bytes(),
        )
        .await;
    }
}

/// SIGKILLs `service` once every offset is committed, produces `after`, and starts it
/// again, ready.
async fn kill_and_restart_after(
    mut service: Service,
    producer: &FutureProducer,
    topics: &Topics,
    after: &[Value],
) -> Service {
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    service.kill();
    produce_tickets(producer, topics, after).await;
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    service
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reply_time_end_to_end_and_after_sigkill() {
    let topics = Topics::create("tickets").await;
    let producer = producer();
    let now = now_ms();
    let events = events(now);
    produce_tickets(&producer, &topics, &events).await;
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    check_values(&metrics);
    assert_eq!(
        metrics.get("kpi_events_processed_total", &[("topic", &topics.tickets)]),
        Some(events.len() as f64)
    );
    assert_eq!(metrics.sum("kpi_events_rejected_total", &[]), 0.0);
    let (status, kpis) = service.get("/kpis").await.unwrap();
    assert_eq!(status, 200);
    let kpis: Vec<Value> = serde_json::from_str(&kpis).unwrap();
    let global = kpis
        .iter()
        .find(|r| r["kpi"] == "first_reply_time" && r["window"] == "7d" && r["labels"] == json!({}))
        .unwrap();
    assert_eq!(global["value"], json!(1_575));
    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        output
            .contains_key("first_reply_time/24h/segment=ent")
            .then_some(output)
    })
    .await;
    check_output(&output);

    // SIGKILL once every offset is committed: the replay rebuilds the open tickets and the
    // same first replies. A reply to t-e after the restart is its first (20 min: 1,200 s),
    // so the open ticket was rebuilt; one to t-a is not.
    let after = [
        ticket(
            "e2",
            "ticket.replied",
            "t-e",
            now,
            json!({"author": "agent"}),
        ),
        ticket(
            "a6",
            "ticket.replied",
            "t-a",
            now,
            json!({"author": "agent"}),
        ),
    ];
    let mut service = kill_and_restart_after(service, &producer, &topics, &after).await;
    let metrics = service.metrics().await;
    let g = |name: &str, window: &str| metrics.get(name, &[("window", window), ("segment", "")]);
    assert_eq!(g("kpi_first_reply_time_replies", "1h"), Some(1.0));
    assert_eq!(g("kpi_first_reply_time_total_seconds", "1h"), Some(1_200.0));
    assert_eq!(g("kpi_first_reply_time_replies", "24h"), Some(4.0));
    assert_eq!(
        g("kpi_first_reply_time_total_seconds", "24h"),
        Some(3_900.0)
    );
    assert_eq!(
        g("kpi_first_reply_time_seconds_mean", "7d"),
        Some(7_500.0 / 5.0)
    );
    let (status, _) = service.terminate();
    assert!(status.success(), "{status:?}");
}

// Service levels, one-touch and reopen rates, and the backlog.

fn opened(id: &str, ticket_id: &str, at: i64, priority: Option<&str>) -> Value {
    let extra = priority.map_or(json!({}), |p| json!({"priority": p}));
    ticket(id, "ticket.opened", ticket_id, at, extra)
}

fn agent_reply(id: &str, ticket_id: &str, at: i64) -> Value {
    ticket(
        id,
        "ticket.replied",
        ticket_id,
        at,
        json!({"author": "agent"}),
    )
}

fn resolved(id: &str, ticket_id: &str, at: i64, opened_at: i64) -> Value {
    ticket(
        id,
        "ticket.resolved",
        ticket_id,
        at,
        json!({"opened_at": rfc3339(opened_at), "agent_replies": 1, "reopens": 0}),
    )
}

/// SLA judgements with the default targets (normal 8h and 3d, urgent 1h and 8h, high 4h
/// and 1d, low 24h and 7d), by hand:
/// - s-a: urgent, replied after 30 min (achieved), resolved after 9h30 (breached),
///   one-touch;
/// - s-b: no priority (normal), replied after 9h (breached) and again, resolved after 11h
///   (achieved), two replies;
/// - s-c: urgent, replied after 10 min (achieved), resolved after 10h (breached,
///   one-touch), reopened, replied, resolved 19h10 after its opening (breached, reopened);
/// - open: s-h urgent, 30 min old, unreplied (at risk, `lt_1h`); s-i high, 2h old,
///   replied (`1h_8h`); s-j no priority, 9h old, unreplied (breached, `8h_24h`); s-k low,
///   2 days old, replied (`1d_3d`); s-m normal, 8 days old, replied (breached, `gt_7d`).
///
/// 24h: first replies s-a, s-c, s-i achieved, s-b breached (1/4); resolutions s-b
/// achieved, s-a and s-c twice breached (3/4); tracked 4, one-touch 2, reopened 1.
/// 1h: resolutions s-a and s-c's second, both breached, one one-touch, one reopened.
fn service_events(now: i64) -> Vec<Value> {
    let reopened = ticket(
        "c4",
        "ticket.reopened",
        "s-c",
        now - 5 * HOUR,
        json!({"priority": "urgent"}),
    );
    vec![
        opened("b1", "s-b", now - 20 * HOUR, None),
        opened("c1", "s-c", now - 20 * HOUR, Some("urgent")),
        agent_reply("c2", "s-c", now - 19 * HOUR - 50 * MINUTE),
        agent_reply("b2", "s-b", now - 11 * HOUR),
        opened("a1", "s-a", now - 10 * HOUR, Some("urgent")),
        agent_reply("b3", "s-b", now - 10 * HOUR),
        resolved("c3", "s-c", now - 10 * HOUR, now - 20 * HOUR),
        agent_reply("a2", "s-a", now - 9 * HOUR - 30 * MINUTE),
        resolved("b4", "s-b", now - 9 * HOUR, now - 20 * HOUR),
        reopened,
        agent_reply("c5", "s-c", now - 4 * HOUR),
        resolved("c6", "s-c", now - 50 * MINUTE, now - 20 * HOUR),
        resolved("a3", "s-a", now - 30 * MINUTE, now - 10 * HOUR),
        opened("m1", "s-m", now - 8 * DAY, Some("normal")),
        agent_reply("m2", "s-m", now - 8 * DAY + HOUR),
        opened("k1", "s-k", now - 2 * DAY, Some("low")),
        agent_reply("k2", "s-k", now - 2 * DAY + HOUR),
        opened("j1", "s-j", now - 9 * HOUR, None),
        opened("i1", "s-i", now - 2 * HOUR, Some("high")),
        agent_reply("i2", "s-i", now - 110 * MINUTE),
        opened("h1", "s-h", now - 30 * MINUTE, Some("urgent")),
    ]
}

/// In a window: (achieved, breached) first replies, the same of resolutions, and
/// (one-touch, reopened, tracked) resolutions.
type Window = ((f64, f64), (f64, f64), (f64, f64, f64));

/// The backlog: open tickets by priority (low, normal, high, urgent, none) and by age band
/// (`lt_1h` to `gt_7d`), and (at risk, breached).
type Backlog = ([f64; 5], [f64; 6], (f64, f64));

/// The windows `24h` then `1h`, with their ratios recomputed from the counts, and the
/// backlog.
fn check_service_levels(metrics: &Metrics, windows: [Window; 2], backlog: Backlog) {
    for (window, expected) in ["24h", "1h"].into_iter().zip(windows) {
        check_window(metrics, window, expected);
    }
    check_backlog(metrics, backlog);
}

fn check_window(metrics: &Metrics, window: &str, (first_reply, resolution, tracked): Window) {
    let g = |name: &str| metrics.get(name, &[("window", window), ("segment", "")]);
    let pair = |prefix: &str| {
        (
            g(&format!("kpi_{prefix}_sla_achieved")).unwrap(),
            g(&format!("kpi_{prefix}_sla_breached")).unwrap(),
        )
    };
    assert_eq!(pair("first_reply"), first_reply, "{window}");
    assert_eq!(pair("resolution"), resolution, "{window}");
    for (prefix, (achieved, breached)) in [("first_reply", first_reply), ("resolution", resolution)]
    {
        let ratio = (achieved + breached > 0.0).then(|| breached / (achieved + breached));
        assert_eq!(
            g(&format!("kpi_{prefix}_sla_breach_ratio")),
            ratio,
            "{window}"
        );
    }
    let (one_touch, reopened, tracked) = tracked;
    assert_eq!(
        (
            g("kpi_one_touch_resolutions"),
            g("kpi_reopened_resolutions"),
            g("kpi_tracked_resolutions"),
        ),
        (Some(one_touch), Some(reopened), Some(tracked)),
        "{window}"
    );
    assert_eq!(g("kpi_one_touch_ratio"), Some(one_touch / tracked));
    assert_eq!(g("kpi_reopen_ratio"), Some(reopened / tracked));
}

fn check_backlog(metrics: &Metrics, (by_priority, by_age, risk): Backlog) {
    let current = |name: &str, label: Option<(&str, &str)>| {
        let mut labels = vec![("window", "current"), ("segment", "")];
        labels.extend(label);
        metrics.get(name, &labels)
    };
    let open: f64 = by_priority.iter().sum();
    assert_eq!(current("kpi_backlog_tickets", None), Some(open));
    for (priority, count) in ["low", "normal", "high", "urgent", "none"]
        .into_iter()
        .zip(by_priority)
    {
        let got = current(
            "kpi_backlog_tickets_by_priority",
            Some(("priority", priority)),
        );
        assert_eq!(got, Some(count), "{priority}");
    }
    for (age, count) in ["lt_1h", "1h_8h", "8h_24h", "1d_3d", "3d_7d", "gt_7d"]
        .into_iter()
        .zip(by_age)
    {
        let got = current("kpi_backlog_tickets_by_age", Some(("age", age)));
        assert_eq!(got, Some(count), "{age}");
    }
    assert_eq!(
        (
            current("kpi_sla_at_risk_tickets", None),
            current("kpi_sla_breached_open_tickets", None)
        ),
        (Some(risk.0), Some(risk.1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_levels_and_backlog_end_to_end_and_after_sigkill() {
    let topics = Topics::create("service-levels").await;
    let producer = producer();
    let now = now_ms();
    let events = service_events(now);
    produce_tickets(&producer, &topics, &events).await;
    let service = Service::start(&topics.env());
    service.wait_ready().await;
    let metrics = service.metrics().await;
    assert_eq!(metrics.sum("kpi_events_rejected_total", &[]), 0.0);
    check_service_levels(
        &metrics,
        [
            ((3.0, 1.0), (1.0, 3.0), (2.0, 1.0, 4.0)),
            ((0.0, 0.0), (0.0, 2.0), (1.0, 1.0, 2.0)),
        ],
        (
            [1.0, 1.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
            (1.0, 2.0),
        ),
    );
    let (status, kpis) = service.get("/kpis").await.unwrap();
    assert_eq!(status, 200);
    let kpis: Vec<Value> = serde_json::from_str(&kpis).unwrap();
    let global = |kpi: &str, window: &str| {
        kpis.iter()
            .find(|r| r["kpi"] == kpi && r["window"] == window && r["labels"] == json!({}))
            .unwrap()
            .clone()
    };
    assert_eq!(global("resolution_sla_breach", "24h")["value"], json!(0.75));
    assert_eq!(global("backlog", "current")["value"], json!(5));
    let output = eventually("the output topic", Duration::from_secs(30), async || {
        let output = latest_output(&topics.output);
        output.contains_key("backlog/current").then_some(output)
    })
    .await;
    assert_eq!(output["first_reply_sla_breach/24h"]["value"], json!(0.25));
    assert_eq!(
        output["first_reply_sla_breach/24h"]["components"],
        json!({"achieved": 3, "breached": 1})
    );
    assert_eq!(output["one_touch/24h"]["value"], json!(0.5));
    assert_eq!(output["reopen/24h"]["value"], json!(0.25));
    let backlog = &output["backlog/current"];
    assert_eq!(backlog["value"], json!(5));
    assert_eq!(backlog["components"]["gt_7d"], json!(1));
    assert_eq!(backlog["components"]["none"], json!(1));
    assert_eq!(output["sla_at_risk/current"]["value"], json!(1));
    assert_eq!(output["sla_breached_open/current"]["value"], json!(2));

    // SIGKILL once every offset is committed; after the restart the replay has rebuilt the
    // open tickets: s-j's reply now is its first (9h: breached, its clock stops), s-h
    // resolved now is judged urgent (achieved, no reply), s-k resolved now has its reply
    // from before the kill (one-touch).
    let after = [
        agent_reply("j2", "s-j", now),
        resolved("h2", "s-h", now, now - 30 * MINUTE),
        resolved("k3", "s-k", now, now - 2 * DAY),
    ];
    let mut service = kill_and_restart_after(service, &producer, &topics, &after).await;
    let metrics = service.metrics().await;
    check_service_levels(
        &metrics,
        [
            ((3.0, 2.0), (3.0, 3.0), (3.0, 1.0, 6.0)),
            ((0.0, 1.0), (2.0, 2.0), (2.0, 1.0, 4.0)),
        ],
        (
            [0.0, 1.0, 1.0, 0.0, 1.0],
            [0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
            (0.0, 1.0),
        ),
    );
    let (status, _) = service.terminate();
    assert!(status.success(), "{status:?}");
}
