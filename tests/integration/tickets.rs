//! First reply time end to end against the real broker: tickets with customer replies,
//! private notes, replies before their opening, a reopen and a ticket never replied, checked
//! against hand-computed values in /metrics, /kpis and on the output topic, then after a
//! SIGKILL and a restart that rebuilds the open tickets by replay.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reply_time_end_to_end_and_after_sigkill() {
    let topics = Topics::create("tickets").await;
    let producer = producer();
    let now = now_ms();
    let events = events(now);
    produce_tickets(&producer, &topics, &events).await;
    let mut service = Service::start(&topics.env());
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
    // same first replies.
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    service.kill();
    // A reply to t-e after the restart is its first (20 min: 1,200 s), so the open ticket
    // was rebuilt; one to t-a is not.
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
    produce_tickets(&producer, &topics, &after).await;
    let mut service = Service::start(&topics.env());
    service.wait_ready().await;
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
