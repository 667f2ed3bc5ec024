//! Customer health end to end on the broker: three customers with hand-built histories
//! over the three input topics (one customer's tickets on every tickets partition), scored
//! by hand; the health topic and `GET /customers/{id}` give those scores; after SIGKILL and
//! a restart with the input topics emptied (as retention would), the scores come back from
//! the customer signals topic alone; with three instances, and after one of them is
//! killed, every customer has exactly one owner, which gives the same score.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use crate::billing::{billing, terms};
use crate::harness::{
    Service, Topics, brokers, committed_to_end, delete_records, end_offsets, eventually,
    latest_output, now_ms, producer, rfc3339,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The scores by hand, with the default model (docs/health.md). Weights: NPS 3, CSAT 2,
/// tickets opened 1, tickets open 1, SLA breaches 2, MRR trend 2, failed payments 3,
/// tenure 1.
///
/// - h-alice (enterprise): NPS 10 (100), CSAT 5 (100); two tickets opened on two tickets
///   partitions (2: 100), one resolved in 10 minutes (one open: 60, no breach: 100); 100
///   a month for 400 days, 120 for 10 days (+20%: 100), no failed payment (100), tenure
///   400 days (100). (300 + 200 + 100 + 60 + 200 + 200 + 300 + 100) / 15 = 1460 / 15.
/// - h-bob (smb): NPS 3 (0); four tickets opened on three partitions, none resolved (4
///   opened: 60, 4 open: 0, no breach: 100); 200 a month for 400 days, 100 for 5 days
///   (-50%: 0), a second subscription of 50 canceled for failed payment a day ago (1: 0),
///   tenure 100. (0 + 60 + 0 + 200 + 0 + 0 + 100) / 13 = 360 / 13.
/// - h-carol (smb): NPS 8 (60) and a CES answer (no signal): 60.
fn expected() -> Expected {
    BTreeMap::from([
        ("h-alice", (1460.0 / 15.0, "healthy", "enterprise", 120.0)),
        ("h-bob", (360.0 / 13.0, "at_risk", "smb", 100.0)),
        ("h-carol", (60.0, "neutral", "smb", 0.0)),
    ])
}

fn survey(id: &str, customer: &str, segment: &str, at: i64, kind: &str, score: i64) -> Value {
    json!({"event_id": id, "type": "survey.responded", "occurred_at": rfc3339(at),
        "customer_id": customer, "segment": segment, "survey": kind, "score": score})
}

fn ticket(id: &str, customer: &str, kind: &str, ticket: &str, at: i64, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "type": kind, "occurred_at": rfc3339(at),
        "customer_id": customer, "ticket_id": ticket, "segment": "smb"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// Which input topic of [`Topics`] a message is written to.
type InputTopic = fn(&Topics) -> &str;

/// Each input message with the partition it is written to.
fn history(now: i64) -> Vec<(InputTopic, i32, Value)> {
    let surveys: InputTopic = |t| &t.surveys;
    let tickets: InputTopic = |t| &t.tickets;
    let bills: InputTopic = |t| &t.billing;
    let opened = |id: &str, customer: &str, t: &str| {
        ticket(id, customer, "ticket.opened", t, now - 3 * HOUR, json!({}))
    };
    let start = |id: &str, at: i64, customer: &str, segment: &str, sub: &str, price: i64| {
        billing(
            id,
            "subscription.started",
            at,
            customer,
            segment,
            terms(sub, price, 1, "USD", "month"),
        )
    };
    let change = |id: &str, at: i64, customer: &str, segment: &str, sub: &str, price: i64| {
        billing(
            id,
            "subscription.changed",
            at,
            customer,
            segment,
            terms(sub, price, 1, "USD", "month"),
        )
    };
    vec![
        (
            surveys,
            0,
            survey("s1", "h-alice", "enterprise", now - 30 * MINUTE, "nps", 10),
        ),
        (
            surveys,
            0,
            survey("s2", "h-alice", "enterprise", now - 20 * MINUTE, "csat", 5),
        ),
        (
            surveys,
            1,
            survey("s3", "h-bob", "smb", now - 30 * MINUTE, "nps", 3),
        ),
        (
            surveys,
            1,
            survey("s4", "h-carol", "smb", now - 30 * MINUTE, "nps", 8),
        ),
        (
            surveys,
            1,
            survey("s5", "h-carol", "smb", now - 25 * MINUTE, "ces", 2),
        ),
        (tickets, 0, opened("t1", "h-alice", "ta-1")),
        (tickets, 1, opened("t2", "h-alice", "ta-2")),
        (
            tickets,
            1,
            ticket(
                "t3",
                "h-alice",
                "ticket.resolved",
                "ta-2",
                now - 3 * HOUR + 10 * MINUTE,
                json!({"opened_at": rfc3339(now - 3 * HOUR), "agent_replies": 1, "reopens": 0}),
            ),
        ),
        (tickets, 0, opened("t4", "h-bob", "tb-1")),
        (tickets, 1, opened("t5", "h-bob", "tb-2")),
        (tickets, 2, opened("t6", "h-bob", "tb-3")),
        (tickets, 0, opened("t7", "h-bob", "tb-4")),
        (
            bills,
            0,
            start("b1", now - 400 * DAY, "h-alice", "enterprise", "sa", 10_000),
        ),
        (
            bills,
            0,
            change("b2", now - 10 * DAY, "h-alice", "enterprise", "sa", 12_000),
        ),
        (
            bills,
            1,
            start("b3", now - 400 * DAY, "h-bob", "smb", "sb", 20_000),
        ),
        (
            bills,
            1,
            start("b4", now - 400 * DAY, "h-bob", "smb", "sb2", 5_000),
        ),
        (
            bills,
            1,
            change("b5", now - 5 * DAY, "h-bob", "smb", "sb", 10_000),
        ),
        (
            bills,
            1,
            billing(
                "b6",
                "subscription.canceled",
                now - DAY,
                "h-bob",
                "smb",
                json!({"subscription_id": "sb2", "reason": "delinquent"}),
            ),
        ),
    ]
}

async fn produce_to(producer: &FutureProducer, topic: &str, partition: i32, event: &Value) {
    let payload = event.to_string();
    let key = event["customer_id"].as_str().unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&payload)
                .partition(partition),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// What `GET /customers/{id}` answers on `service`: the status and the body.
async fn customer(service: &Service, id: &str) -> Option<(u16, Value)> {
    let (status, body) = service.get(&format!("/customers/{id}")).await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

type Expected = BTreeMap<&'static str, (f64, &'static str, &'static str, f64)>;

/// Checks a customer's health object against the hand-computed score.
fn matches(expected: &Expected, id: &str, health: &Value) -> bool {
    let (score, band, segment, mrr) = expected[id];
    (health["score"].as_f64().unwrap_or(-1.0) - score).abs() < 1e-9
        && health["band"] == band
        && health["segment"] == segment
        && health["mrr"].as_f64() == Some(mrr)
        && health["currency"] == "USD"
        && health["customer_id"] == id
}

/// Every customer, from its one owner among `services`: `None` until each customer has
/// exactly one owner that answers 200, every other instance pointing elsewhere (404 with
/// the signals topic and partition).
async fn owned_by_one(services: &[&Service]) -> Option<BTreeMap<String, (usize, Value)>> {
    let mut found = BTreeMap::new();
    for id in expected().keys() {
        let mut owners = Vec::new();
        for (i, service) in services.iter().enumerate() {
            match customer(service, id).await? {
                (200, body) => owners.push((i, body)),
                (404, body) if body["partition"].is_i64() => {}
                _ => return None,
            }
        }
        if owners.len() != 1 {
            return None;
        }
        found.insert(id.to_string(), owners.remove(0));
    }
    Some(found)
}

/// Every customer from its one owner among `services`, each scored as `want` says; `None`
/// until then.
async fn scored_by_one(
    services: &[&Service],
    want: &Expected,
) -> Option<BTreeMap<String, (usize, Value)>> {
    let owners = owned_by_one(services).await?;
    owners
        .iter()
        .all(|(id, (_, health))| matches(want, id, health))
        .then_some(owners)
}

#[tokio::test]
async fn hand_built_customers_are_scored_restored_from_signals_and_owned_once() {
    let topics = Topics::create_with(&brokers(), "health", [2, 3, 2], true).await;
    let now = now_ms();
    let producer = producer();
    for (topic, partition, event) in history(now) {
        produce_to(&producer, topic(&topics), partition, &event).await;
    }
    let env = topics.env();
    let mut want = expected();
    let mut first = Service::start(&env);
    first.wait_ready().await;
    let owners = eventually(
        "every customer scored by hand",
        Duration::from_secs(60),
        async || scored_by_one(&[&first], &want).await,
    )
    .await;
    let alice = &owners["h-alice"].1;
    assert_eq!(alice["moved_by"], Value::Null);
    let signals: BTreeMap<String, (f64, f64)> = alice["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["signal"].as_str().unwrap().to_owned();
            (
                name,
                (s["value"].as_f64().unwrap(), s["mapped"].as_f64().unwrap()),
            )
        })
        .collect();
    assert_eq!(signals["tickets_opened"], (2.0, 100.0));
    assert_eq!(signals["tickets_open"], (1.0, 60.0));
    assert_eq!(signals["mrr_trend"], (20.0, 100.0));
    assert!(signals["tenure_days"].0 >= 400.0);
    // The health topic's newest message of each customer is the object /customers serves.
    let health_topic = eventually("the health topic", Duration::from_secs(30), async || {
        let latest = latest_output(&topics.customer_health);
        (latest.len() == 3).then_some(latest)
    })
    .await;
    for (id, (_, served)) in &owners {
        assert_eq!(&health_topic[id], served, "{id}");
    }
    let metrics = first.metrics().await;
    let band = |band: &str| {
        metrics
            .get(
                "kpi_customers_by_health",
                &[("band", band), ("segment", "")],
            )
            .unwrap()
    };
    assert_eq!(
        (band("healthy"), band("neutral"), band("at_risk")),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        metrics.get(
            "kpi_mrr_by_health",
            &[("band", "at_risk"), ("segment", "smb"), ("currency", "USD")]
        ),
        Some(100.0)
    );

    // Retention takes every input message; the restarted service replays nothing, and its
    // customers' signals come from the signals topic alone.
    let inputs = topics.inputs();
    eventually("committed offsets", Duration::from_secs(30), async || {
        committed_to_end(&topics.group, &inputs).then_some(())
    })
    .await;
    // The parts of the last changes are written at the publish after them.
    let signals_written = end_offsets(&brokers(), &[&topics.customer_signals]);
    assert!(signals_written >= 3, "{signals_written}");
    first.kill();
    for (topic, partitions) in [
        (&topics.surveys, 2),
        (&topics.tickets, 3),
        (&topics.billing, 2),
    ] {
        let ends: Vec<(i32, i64)> = (0..partitions)
            .map(|p| (p, end_offsets_of(topic, p)))
            .collect();
        delete_records(&brokers(), topic, &ends).await;
    }
    let health_before = end_offsets(&brokers(), &[&topics.customer_health]);
    let restarted = Service::start(&env);
    restarted.wait_ready().await;
    // The restored publications are served before the owner scores again: wait for a
    // scoring after every customer is served, which must publish nothing new.
    eventually(
        "the restored customers",
        Duration::from_secs(60),
        async || owned_by_one(&[&restarted]).await.map(|_| ()),
    )
    .await;
    let served = now_ms() as f64 / 1000.0;
    eventually(
        "a scoring after the restore",
        Duration::from_secs(30),
        async || {
            let metrics = restarted.try_metrics().await?;
            let scored = metrics.get("kpi_health_last_rescore_timestamp_seconds", &[])?;
            (scored > served).then_some(())
        },
    )
    .await;
    let after = owned_by_one(&[&restarted]).await.unwrap();
    for (id, (_, health)) in &after {
        assert!(matches(&want, id, health), "{id}: {health}");
    }
    for (id, (_, health)) in &after {
        // Restored with what was published: not changed since.
        assert_eq!(health["changed_at"], owners[id].1["changed_at"], "{id}");
    }
    assert_eq!(
        end_offsets(&brokers(), &[&topics.customer_health]),
        health_before,
        "nothing changed, so nothing is published again"
    );
    // A new ticket of h-alice on the tickets partition whose events are gone adds to the
    // restored part: 3 opened (60) and 2 open (60), (300 + 200 + 60 + 60 + 200 + 200 + 300
    // + 100) / 15. Without the restored part, the partition would count this ticket alone
    // and the score would not move.
    let new_ticket = ticket(
        "t8",
        "h-alice",
        "ticket.opened",
        "ta-3",
        now_ms() - MINUTE,
        json!({}),
    );
    produce_to(&producer, &topics.tickets, 0, &new_ticket).await;
    want.insert("h-alice", (1420.0 / 15.0, "healthy", "enterprise", 120.0));
    let moved = eventually(
        "h-alice moved by the new ticket",
        Duration::from_secs(60),
        async || {
            let (status, health) = customer(&restarted, "h-alice").await?;
            (status == 200 && matches(&want, "h-alice", &health)).then_some(health)
        },
    )
    .await;
    assert_eq!(moved["moved_by"], "tickets_opened");

    // Three instances: each customer has one owner, with the single instance's score.
    let second = Service::start(&env);
    let third = Service::start(&env);
    second.wait_ready().await;
    third.wait_ready().await;
    let mut services = vec![restarted, second, third];
    let spread = eventually(
        "one owner per customer among three",
        Duration::from_secs(90),
        async || {
            let refs: Vec<&Service> = services.iter().collect();
            scored_by_one(&refs, &want).await
        },
    )
    .await;
    // Kill the owner of the customer at risk; its customers move to a survivor.
    let victim = spread["h-bob"].0;
    services[victim].kill();
    services.remove(victim);
    eventually(
        "one owner per customer among the survivors",
        Duration::from_secs(90),
        async || {
            let refs: Vec<&Service> = services.iter().collect();
            let owners = scored_by_one(&refs, &want).await?;
            owners
                .iter()
                .all(|(id, (_, health))| health["changed_at"] == spread[id].1["changed_at"])
                .then_some(())
        },
    )
    .await;
}

/// The end offset of one partition.
fn end_offsets_of(topic: &str, partition: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap()
        .1
}

/// The feedback topic's messages by event id.
fn feedback(topics: &Topics) -> Vec<Value> {
    crate::harness::read_all(&topics.feedback)
        .into_iter()
        .map(|m| serde_json::from_slice(&m.payload.unwrap()).unwrap())
        .collect()
}

/// Detractors' answers that the owner followed up: their tombstones on the signals topic.
fn followed_up(topics: &Topics) -> usize {
    crate::harness::read_all(&topics.customer_signals)
        .into_iter()
        .filter(|m| {
            m.payload.is_none()
                && m.key
                    .as_deref()
                    .is_some_and(|k| String::from_utf8_lossy(k).contains("|answer:"))
        })
        .count()
}

/// Every NPS answer of 0-6 and CSAT answer of 1-2 reaches the feedback topic once, with the
/// customer's MRR, band and segment: not its duplicate, not again after a SIGKILL and the
/// replay that follows, not a duplicate sent after the restart.
#[tokio::test]
async fn detractors_reach_the_feedback_topic_once_through_a_duplicate_and_a_restart() {
    let topics = Topics::create("feedback").await;
    let now = now_ms();
    let producer = producer();
    let commented = |mut answer: Value, comment: &str| {
        answer["comment"] = json!(comment);
        answer
    };
    let detractor = commented(
        survey("f1", "f-ann", "smb", now - 20 * MINUTE, "nps", 3),
        "Waited two days for an answer.",
    );
    let answers = [
        detractor.clone(),
        survey("f2", "f-ann", "smb", now - 19 * MINUTE, "csat", 2),
        survey("f3", "f-ann", "smb", now - 18 * MINUTE, "nps", 7),
        survey("f4", "f-ben", "ent", now - 17 * MINUTE, "csat", 3),
        commented(
            survey("f5", "f-ben", "ent", now - 16 * MINUTE, "nps", 0),
            "   ",
        ),
        survey("f6", "f-ben", "ent", now - 15 * MINUTE, "ces", 1),
        detractor.clone(),
    ];
    for answer in &answers {
        let partition = i32::from(answer["customer_id"] == "f-ben");
        produce_to(&producer, &topics.surveys, partition, answer).await;
    }
    let start = billing(
        "fb1",
        "subscription.started",
        now - 400 * DAY,
        "f-ann",
        "smb",
        terms("fs", 9_900, 1, "USD", "month"),
    );
    produce_to(&producer, &topics.billing, 0, &start).await;
    let env = topics.env();
    let mut first = Service::start(&env);
    first.wait_ready().await;
    let messages = eventually("three followed up", Duration::from_secs(60), async || {
        let messages = feedback(&topics);
        (messages.len() == 3 && followed_up(&topics) == 3).then_some(messages)
    })
    .await;
    let by_event: BTreeMap<String, Value> = messages
        .into_iter()
        .map(|m| (m["event_id"].as_str().unwrap().to_owned(), m))
        .collect();
    assert_eq!(by_event.keys().collect::<Vec<_>>(), ["f1", "f2", "f5"]);
    let ann = &by_event["f1"];
    assert_eq!(ann["customer_id"], "f-ann");
    assert_eq!((&ann["survey"], &ann["score"]), (&json!("nps"), &json!(3)));
    assert_eq!(ann["comment"], "Waited two days for an answer.");
    assert_eq!(
        (&ann["mrr"], &ann["currency"]),
        (&json!(99.0), &json!("USD"))
    );
    assert_eq!(ann["segment"], "smb");
    assert_eq!(ann["answered_at"], rfc3339(now - 20 * MINUTE));
    // NPS 7 is the latest (60, weight 3), CSAT 2 (0, weight 2), a flat MRR, no failed
    // payment and 400 days (100, weights 2, 3 and 1): (180 + 0 + 200 + 300 + 100) / 11.
    assert!(
        (ann["health_score"].as_f64().unwrap() - 780.0 / 11.0).abs() < 1e-9,
        "{ann}"
    );
    assert_eq!(ann["band"], "healthy");
    // A blank comment is no comment; a customer without MRR has 0.
    let ben = &by_event["f5"];
    assert_eq!((&ben["comment"], &ben["score"]), (&Value::Null, &json!(0)));
    assert_eq!((&ben["mrr"], &ben["segment"]), (&json!(0.0), &json!("ent")));

    first.kill();
    let restarted = Service::start(&env);
    restarted.wait_ready().await;
    let again = commented(
        survey("f7", "f-ben", "ent", now_ms() - MINUTE, "csat", 1),
        "Still broken.",
    );
    // The duplicate in the partition of its customer, as a producer keying by customer
    // writes it.
    produce_to(&producer, &topics.surveys, 0, &detractor).await;
    produce_to(&producer, &topics.surveys, 1, &again).await;
    let messages = eventually(
        "the new answer followed up",
        Duration::from_secs(60),
        async || {
            let messages = feedback(&topics);
            (followed_up(&topics) >= 4 && messages.len() >= 4).then_some(messages)
        },
    )
    .await;
    let mut events: Vec<&str> = messages
        .iter()
        .map(|m| m["event_id"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(events, ["f1", "f2", "f5", "f7"]);
    let metrics = restarted.metrics().await;
    assert_eq!(metrics.get("kpi_feedback_messages_total", &[]), Some(1.0));
}
