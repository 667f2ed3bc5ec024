use super::*;

const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const LIMITS: Limits = Limits {
    max_event_bytes: 4096,
    max_future_skew_ms: 300_000,
};

fn survey(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e1","type":"survey.responded","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c1"{extra}}}"#
    )
}

/// The fields the fast reader reads, if it takes the text.
fn fast(text: &str) -> Option<Wire<'_>> {
    let mut wire = Wire::default();
    flat::read(text, &mut wire).map(|()| wire)
}

fn reject(bytes: &[u8], family: Family) -> Reason {
    match parse(bytes, family, NOW, &LIMITS) {
        Err(r) => r.reason,
        Ok(e) => panic!("accepted {e:?}"),
    }
}

#[test]
fn accepts_a_survey_response_with_dimensions() {
    let text = survey(r#","survey":"nps","score":9,"segment":"smb","extra":{"x":[1]}"#);
    let event = parse(text.as_bytes(), Family::Surveys, NOW, &LIMITS).unwrap();
    assert_eq!(event.occurred_at_ms, NOW - 3_600_000);
    assert_eq!(event.dimensions[0].as_deref(), Some("smb"));
    assert_eq!(event.dimensions[1], None);
    assert_eq!(
        event.payload,
        Payload::SurveyResponded {
            survey: Survey::Nps,
            score: 9,
            comment: None
        }
    );
}

#[test]
fn a_family_index_is_its_position_in_all() {
    for (position, family) in Family::ALL.iter().enumerate() {
        assert_eq!(family.index(), position);
    }
}

#[test]
fn strings_are_borrowed_from_the_message_unless_escaped() {
    let text = survey(r#","survey":"nps","score":9,"segment":"sm\u0062","channel":null"#);
    let event = parse(text.as_bytes(), Family::Surveys, NOW, &LIMITS).unwrap();
    assert!(matches!(event.event_id, Cow::Borrowed("e1")));
    assert!(matches!(event.customer_id, Cow::Borrowed("c1")));
    assert!(matches!(&event.dimensions[0], Some(Cow::Owned(s)) if s == "smb"));
    // null is as good as absent.
    assert_eq!(event.dimensions[2], None);
    let number = survey(r#","survey":"nps","score":9,"segment":5"#);
    assert_eq!(
        reject(number.as_bytes(), Family::Surveys),
        Reason::WrongType
    );
}

#[test]
fn accepts_every_type_on_its_topic() {
    let base = r#""event_id":"e","occurred_at":"2025-12-31T23:00:00+02:00","customer_id":"c""#;
    let cases = [
        (r#""type":"ticket.opened","ticket_id":"t""#, Family::Tickets),
        (
            r#""type":"ticket.reopened","ticket_id":"t""#,
            Family::Tickets,
        ),
        (
            r#""type":"ticket.resolved","ticket_id":"t","opened_at":"2025-12-30T10:00:00Z","agent_replies":0,"reopens":2"#,
            Family::Tickets,
        ),
        (
            r#""type":"ticket.replied","ticket_id":"t","author":"agent""#,
            Family::Tickets,
        ),
        (
            r#""type":"subscription.started","subscription_id":"s","plan":"pro","price":4900,"currency":"USD","interval":"month""#,
            Family::Billing,
        ),
        (
            r#""type":"subscription.changed","subscription_id":"s","plan":"pro","price":49000,"quantity":3,"currency":"EUR","interval":"year","interval_count":2"#,
            Family::Billing,
        ),
        (
            r#""type":"subscription.canceled","subscription_id":"s""#,
            Family::Billing,
        ),
        (
            r#""type":"subscription.renewed","subscription_id":"s""#,
            Family::Billing,
        ),
        (
            r#""type":"subscription.trial_started","subscription_id":"s","plan":"pro","trial_ends_at":"2026-01-14T21:00:00Z""#,
            Family::Billing,
        ),
    ];
    for (fields, family) in cases {
        let text = format!("{{{base},{fields}}}");
        let event = parse(text.as_bytes(), family, NOW, &LIMITS)
            .unwrap_or_else(|e| panic!("{fields}: {e}"));
        assert_eq!(event.payload.family(), family);
    }
}

#[test]
fn defaults_quantity_and_interval_count_to_one() {
    let text = r#"{"event_id":"e","type":"subscription.started","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s","plan":"p","price":100,"currency":"USD","interval":"month"}"#;
    let event = parse(text.as_bytes(), Family::Billing, NOW, &LIMITS).unwrap();
    let Payload::SubscriptionStarted(terms) = event.payload else {
        panic!("wrong payload")
    };
    assert_eq!((terms.quantity, terms.interval_count), (1, 1));
}

#[test]
fn rejects_each_reason() {
    let cases: Vec<(Vec<u8>, Family, Reason)> = vec![
            (vec![], Family::Surveys, Reason::Empty),
            (b"   ".to_vec(), Family::Surveys, Reason::Empty),
            (vec![b'{'; 5000], Family::Surveys, Reason::TooLarge),
            (vec![b'{', 0xff, b'}'], Family::Surveys, Reason::InvalidUtf8),
            (b"{not json".to_vec(), Family::Surveys, Reason::InvalidJson),
            (b"[1,2]".to_vec(), Family::Surveys, Reason::NotObject),
            (b"\"text\"".to_vec(), Family::Surveys, Reason::NotObject),
            (
                survey(r#","survey":"nps","score":9,"score":3"#).into_bytes(),
                Family::Surveys,
                Reason::DuplicateField,
            ),
            (
                survey(r#","survey":"nps""#).into_bytes(),
                Family::Surveys,
                Reason::MissingField,
            ),
            (
                survey(r#","survey":"nps","score":"9""#).into_bytes(),
                Family::Surveys,
                Reason::WrongType,
            ),
            (
                survey(r#","survey":"nps","score":9.0"#).into_bytes(),
                Family::Surveys,
                Reason::WrongType,
            ),
            (
                survey(r#","survey":"nps","score":NaN"#).into_bytes(),
                Family::Surveys,
                Reason::InvalidJson,
            ),
            (
                br#"{"event_id":"e","type":"survey.deleted","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c"}"#.to_vec(),
                Family::Surveys,
                Reason::UnknownType,
            ),
            (
                survey(r#","survey":"nps","score":9"#).into_bytes(),
                Family::Tickets,
                Reason::WrongTopic,
            ),
            (
                survey(r#","survey":"pulse","score":9"#).into_bytes(),
                Family::Surveys,
                Reason::InvalidValue,
            ),
            (
                survey(&format!(r#","survey":"nps","score":9,"segment":"{}""#, "s".repeat(300)))
                    .into_bytes(),
                Family::Surveys,
                Reason::TooLong,
            ),
            (
                survey(r#","survey":"csat","score":0"#).into_bytes(),
                Family::Surveys,
                Reason::OutOfRange,
            ),
            (
                br#"{"event_id":"e","type":"survey.responded","occurred_at":"2025-12-31T23:00:00","customer_id":"c","survey":"nps","score":1}"#.to_vec(),
                Family::Surveys,
                Reason::InvalidTimestamp,
            ),
            (
                br#"{"event_id":"e","type":"survey.responded","occurred_at":"2026-01-01T00:06:00Z","customer_id":"c","survey":"nps","score":1}"#.to_vec(),
                Family::Surveys,
                Reason::FutureTimestamp,
            ),
            (
                br#"{"event_id":"e","type":"ticket.resolved","occurred_at":"2025-12-31T10:00:00Z","customer_id":"c","ticket_id":"t","opened_at":"2025-12-31T10:00:01Z","agent_replies":0,"reopens":0}"#.to_vec(),
                Family::Tickets,
                Reason::NegativeDuration,
            ),
        ];
    for (bytes, family, expected) in cases {
        assert_eq!(
            reject(&bytes, family),
            expected,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

fn ticket(kind: &str, extra: &str) -> String {
    let opened = if kind == "ticket.resolved" {
        r#","opened_at":"2025-12-31T22:00:00Z","agent_replies":1,"reopens":0"#
    } else {
        ""
    };
    format!(
        r#"{{"event_id":"e1","type":"{kind}","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c1","ticket_id":"t1"{opened}{extra}}}"#
    )
}

fn accept(text: &str, family: Family) -> Payload<'_> {
    parse(text.as_bytes(), family, NOW, &LIMITS)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .payload
}

#[test]
fn a_reply_carries_its_author_and_is_public_unless_said_otherwise() {
    for (extra, author, public) in [
        (r#","author":"agent""#, Author::Agent, true),
        (r#","author":"agent","public":null"#, Author::Agent, true),
        (r#","author":"agent","public":false"#, Author::Agent, false),
        (
            r#","author":"customer","public":true,"agent_id":"a7""#,
            Author::Customer,
            true,
        ),
    ] {
        let text = ticket("ticket.replied", extra);
        assert_eq!(
            accept(&text, Family::Tickets),
            Payload::TicketReplied {
                ticket_id: Cow::Borrowed("t1"),
                author,
                public,
                priority: None,
            },
            "{extra}"
        );
    }
    // Read on the fast path, as every common message is.
    let text = ticket("ticket.replied", r#","author":"agent","public":false"#);
    assert_eq!(fast(&text).and_then(|w| w.public), Some(false));
}

#[test]
fn every_ticket_event_takes_a_priority() {
    for kind in [
        "ticket.opened",
        "ticket.reopened",
        "ticket.replied",
        "ticket.resolved",
    ] {
        for expected in Priority::ALL {
            let extra = format!(
                r#","author":"agent","agent_id":"a1","priority":"{}""#,
                expected.name()
            );
            let text = ticket(kind, &extra);
            let found = match accept(&text, Family::Tickets) {
                Payload::TicketOpened { priority, .. }
                | Payload::TicketReopened { priority, .. }
                | Payload::TicketReplied { priority, .. }
                | Payload::TicketResolved { priority, .. } => priority,
                other => panic!("{other:?}"),
            };
            assert_eq!(found, Some(expected), "{kind}");
        }
        // Absent and null are the same: no priority.
        for extra in [
            r#","author":"agent""#,
            r#","author":"agent","priority":null"#,
        ] {
            let text = ticket(kind, extra);
            let found = match accept(&text, Family::Tickets) {
                Payload::TicketOpened { priority, .. }
                | Payload::TicketReopened { priority, .. }
                | Payload::TicketReplied { priority, .. }
                | Payload::TicketResolved { priority, .. } => priority,
                other => panic!("{other:?}"),
            };
            assert_eq!(found, None, "{kind} {extra}");
        }
    }
}

fn cancellation(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e","type":"subscription.canceled","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s"{extra}}}"#
    )
}

#[test]
fn a_cancellation_names_its_reason_voluntary_by_default() {
    for (extra, expected) in [
        ("", CancelReason::Voluntary),
        (r#","reason":null"#, CancelReason::Voluntary),
        (r#","reason":"voluntary""#, CancelReason::Voluntary),
        (r#","reason":"delinquent""#, CancelReason::Delinquent),
    ] {
        let text = cancellation(extra);
        let found = match accept(&text, Family::Billing) {
            Payload::SubscriptionCanceled { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(found, expected, "{extra}");
    }
}

#[test]
fn a_bad_cancellation_reason_is_rejected_with_a_reason() {
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let long = format!(r#","reason":"{long}""#);
    for (extra, expected) in [
        (r#","reason":"failed_payment""#, Reason::InvalidValue),
        (r#","reason":"Delinquent""#, Reason::InvalidValue),
        (r#","reason":"""#, Reason::InvalidValue),
        (r#","reason":" voluntary""#, Reason::InvalidValue),
        (long.as_str(), Reason::InvalidValue),
        (r#","reason":1"#, Reason::WrongType),
        (r#","reason":true"#, Reason::WrongType),
        (r#","reason":["delinquent"]"#, Reason::WrongType),
        (
            r#","reason":"voluntary","reason":"delinquent""#,
            Reason::DuplicateField,
        ),
    ] {
        let text = cancellation(extra);
        assert_eq!(
            reject(text.as_bytes(), Family::Billing),
            expected,
            "{extra}"
        );
    }
}

fn trial_started(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e","type":"subscription.trial_started","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s","plan":"pro"{extra}}}"#
    )
}

#[test]
fn a_trial_ends_after_it_starts_by_at_most_366_days() {
    const START_MS: i64 = 1_767_222_000_000;
    for (extra, ends_at_ms) in [
        (
            r#","trial_ends_at":"2025-12-31T23:00:00.001Z""#,
            START_MS + 1,
        ),
        (
            r#","trial_ends_at":"2026-01-15T01:00:00+02:00""#,
            START_MS + 14 * 86_400_000,
        ),
        (
            r#","trial_ends_at":"2027-01-01T23:00:00Z""#,
            START_MS + MAX_TRIAL_MS,
        ),
    ] {
        let text = trial_started(extra);
        match accept(&text, Family::Billing) {
            Payload::TrialStarted {
                subscription_id,
                trial_ends_at_ms,
            } => assert_eq!(
                (subscription_id.as_ref(), trial_ends_at_ms),
                ("s", ends_at_ms)
            ),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_bad_trial_is_rejected_with_a_reason() {
    let ends = r#","trial_ends_at":"2026-01-14T23:00:00Z""#;
    let ending = |at: &str| trial_started(&format!(r#","trial_ends_at":{at}"#));
    let cases = [
        (trial_started(""), Reason::MissingField),
        (ending("null"), Reason::MissingField),
        (ending(r#""2026-01-14""#), Reason::InvalidTimestamp),
        (ending(r#""2026-01-14T23:00:00""#), Reason::InvalidTimestamp),
        (ending("1768431600000"), Reason::WrongType),
        // At or before its start, or more than 366 days after it.
        (ending(r#""2025-12-31T23:00:00Z""#), Reason::InvalidValue),
        (
            ending(r#""2025-12-31T23:00:00+01:00""#),
            Reason::InvalidValue,
        ),
        (ending(r#""0001-01-01T00:00:00Z""#), Reason::InvalidValue),
        (
            ending(r#""2027-01-01T23:00:00.001Z""#),
            Reason::InvalidValue,
        ),
        (ending(r#""9999-12-31T23:59:59Z""#), Reason::InvalidValue),
        (
            trial_started(&format!("{ends}{ends}")),
            Reason::DuplicateField,
        ),
        (
            trial_started(ends).replace(r#","plan":"pro""#, ""),
            Reason::MissingField,
        ),
        (
            trial_started(ends).replace(r#""plan":"pro""#, r#""plan":"""#),
            Reason::InvalidValue,
        ),
        (
            trial_started(ends).replace(r#","subscription_id":"s""#, ""),
            Reason::MissingField,
        ),
    ];
    for (text, expected) in &cases {
        assert_eq!(
            reject(text.as_bytes(), Family::Billing),
            *expected,
            "{text}"
        );
    }
    assert_eq!(
        reject(trial_started(ends).as_bytes(), Family::Surveys),
        Reason::WrongTopic
    );
}

#[test]
fn a_survey_answer_may_name_its_ticket_and_agent() {
    let text = survey(r#","survey":"csat","score":5,"ticket_id":"t1","agent_id":"a1""#);
    assert!(matches!(
        accept(&text, Family::Surveys),
        Payload::SurveyResponded { score: 5, .. }
    ));
}

/// Whether the survey answer in `text` has a comment.
fn commented(text: &str) -> bool {
    match accept(text, Family::Surveys) {
        Payload::SurveyResponded { comment, .. } => comment.is_some(),
        other => panic!("not an answer: {other:?}"),
    }
}

#[test]
fn an_answer_has_a_comment_unless_it_is_absent_null_empty_or_blank() {
    let with = |comment: &str| survey(&format!(r#","survey":"nps","score":3,"comment":{comment}"#));
    assert!(!commented(&survey(r#","survey":"nps","score":3"#)));
    for blank in [
        "null",
        r#""""#,
        r#""   ""#,
        r#""\t\r\n ""#,
        r#""\u0020""#,
        // Unicode white space: no-break, em and ideographic spaces, line separator.
        r#""\u00a0\u2003\u3000\u2028""#,
        "\"\u{a0} \u{3000}\"",
    ] {
        assert!(!commented(&with(blank)), "{blank}");
    }
    for comment in [
        r#""ok""#,
        r#""  slow export  ""#,
        r#""\n.""#,
        r#""Ünïcode""#,
        // Not white space in Unicode, though it shows nothing.
        r#""\u200b""#,
    ] {
        assert!(commented(&with(comment)), "{comment}");
    }
    // Every survey reads it.
    assert!(commented(&survey(
        r#","survey":"ces","score":7,"comment":"ok""#
    )));
    assert!(commented(&survey(
        r#","survey":"csat","score":1,"comment":"no""#
    )));
    // Its type is still part of the contract.
    for wrong in ["5", "true", "[]", r#"{"text":"ok"}"#] {
        assert_eq!(
            reject(with(wrong).as_bytes(), Family::Surveys),
            Reason::WrongType,
            "{wrong}"
        );
    }
}

#[test]
fn bad_support_fields_are_rejected_with_a_reason() {
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let at_limit = "x".repeat(MAX_FIELD_BYTES);
    let mut cases: Vec<(String, Family, Reason)> = Vec::new();
    let replied = |extra: &str| ticket("ticket.replied", extra);
    for (extra, reason) in [
        ("", Reason::MissingField),
        (r#","author":null"#, Reason::MissingField),
        (r#","author":"bot""#, Reason::InvalidValue),
        (r#","author":"Agent""#, Reason::InvalidValue),
        (r#","author":"""#, Reason::InvalidValue),
        (r#","author":1"#, Reason::WrongType),
        (r#","author":true"#, Reason::WrongType),
        (r#","author":["agent"]"#, Reason::WrongType),
        (
            r#","author":"agent","author":"agent""#,
            Reason::DuplicateField,
        ),
        (r#","author":"agent","public":"true""#, Reason::WrongType),
        (r#","author":"agent","public":1"#, Reason::WrongType),
        (r#","author":"agent","public":0"#, Reason::WrongType),
        (r#","author":"agent","public":{}"#, Reason::WrongType),
        (
            r#","author":"agent","public":true,"public":false"#,
            Reason::DuplicateField,
        ),
        (r#","author":"agent","agent_id":"""#, Reason::InvalidValue),
        (r#","author":"agent","agent_id":7"#, Reason::WrongType),
        (r#","author":"agent","agent_id":false"#, Reason::WrongType),
    ] {
        cases.push((replied(extra), Family::Tickets, reason));
    }
    cases.push((
        replied(&format!(r#","author":"agent","agent_id":"{long}""#)),
        Family::Tickets,
        Reason::TooLong,
    ));
    cases.push((
        replied(r#","author":"agent""#).replace(r#""ticket_id":"t1","#, ""),
        Family::Tickets,
        Reason::MissingField,
    ));
    for kind in [
        "ticket.opened",
        "ticket.reopened",
        "ticket.replied",
        "ticket.resolved",
    ] {
        for (extra, reason) in [
            (
                r#","author":"agent","priority":"critical""#,
                Reason::InvalidValue,
            ),
            (
                r#","author":"agent","priority":"URGENT""#,
                Reason::InvalidValue,
            ),
            (r#","author":"agent","priority":"""#, Reason::InvalidValue),
            (
                r#","author":"agent","priority":" low""#,
                Reason::InvalidValue,
            ),
            (r#","author":"agent","priority":3"#, Reason::WrongType),
            (r#","author":"agent","priority":["low"]"#, Reason::WrongType),
            (
                r#","author":"agent","priority":"low","priority":"high""#,
                Reason::DuplicateField,
            ),
        ] {
            cases.push((ticket(kind, extra), Family::Tickets, reason));
        }
        cases.push((
            ticket(kind, &format!(r#","author":"agent","priority":"{long}""#)),
            Family::Tickets,
            Reason::InvalidValue,
        ));
    }
    for kind in ["ticket.resolved", "ticket.replied"] {
        cases.push((
            ticket(kind, &format!(r#","author":"agent","agent_id":"{long}""#)),
            Family::Tickets,
            Reason::TooLong,
        ));
        cases.push((
            ticket(kind, r#","author":"agent","agent_id":"""#),
            Family::Tickets,
            Reason::InvalidValue,
        ));
    }
    for (extra, reason) in [
        (r#","ticket_id":"""#, Reason::InvalidValue),
        (r#","agent_id":"""#, Reason::InvalidValue),
        (r#","ticket_id":5"#, Reason::WrongType),
        (r#","agent_id":{"id":1}"#, Reason::WrongType),
    ] {
        let text = survey(&format!(r#","survey":"csat","score":5{extra}"#));
        cases.push((text, Family::Surveys, reason));
    }
    for field in ["ticket_id", "agent_id"] {
        let text = survey(&format!(r#","survey":"csat","score":5,"{field}":"{long}""#));
        cases.push((text, Family::Surveys, Reason::TooLong));
    }
    // A reply belongs on the tickets topic only.
    cases.push((
        replied(r#","author":"agent""#),
        Family::Surveys,
        Reason::WrongTopic,
    ));
    for (text, family, expected) in &cases {
        assert_eq!(reject(text.as_bytes(), *family), *expected, "{text}");
    }
    // At the limit is still accepted.
    let text = replied(&format!(r#","author":"agent","agent_id":"{at_limit}""#));
    accept(&text, Family::Tickets);
    let text = survey(&format!(
        r#","survey":"csat","score":5,"ticket_id":"{at_limit}","agent_id":"{at_limit}""#
    ));
    accept(&text, Family::Surveys);
}

#[test]
fn score_edges_follow_each_scale() {
    for survey_kind in Survey::ALL {
        let (low, high) = survey_kind.scale();
        for (score, ok) in [
            (i64::from(low) - 1, false),
            (i64::from(low), true),
            (i64::from(high), true),
            (i64::from(high) + 1, false),
        ] {
            let text = survey(&format!(
                r#","survey":"{}","score":{score}"#,
                survey_kind.name()
            ));
            let result = parse(text.as_bytes(), Family::Surveys, NOW, &LIMITS);
            assert_eq!(result.is_ok(), ok, "{} {score}", survey_kind.name());
        }
    }
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let limits = Limits {
        max_event_bytes: 1 << 20,
        ..LIMITS
    };
    // In a known field, in an unknown one (which the parser would skip), or unclosed.
    for text in [
        survey(&format!(r#","survey":"nps","score":{deep}"#)),
        survey(&format!(r#","survey":"nps","score":9,"extra":{deep}"#)),
        format!(r#"{{"x":{}"#, "[".repeat(10_000)),
    ] {
        let result = parse(text.as_bytes(), Family::Surveys, NOW, &limits);
        assert_eq!(result.unwrap_err().reason, Reason::TooDeep);
    }
    // Brackets inside strings do not count; moderate nesting in unknown fields is fine.
    let brackets = "[".repeat(100);
    let text = survey(&format!(
        r#","survey":"nps","score":9,"comment":"{brackets}","extra":{{"a":[[1]]}}"#
    ));
    assert!(parse(text.as_bytes(), Family::Surveys, NOW, &limits).is_ok());
}

#[test]
fn negative_counts_and_prices_are_out_of_range() {
    let text = r#"{"event_id":"e","type":"ticket.resolved","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","ticket_id":"t","opened_at":"2025-12-31T22:00:00Z","agent_replies":-1,"reopens":0}"#;
    assert_eq!(reject(text.as_bytes(), Family::Tickets), Reason::OutOfRange);
    let text = r#"{"event_id":"e","type":"subscription.started","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s","plan":"p","price":-1,"currency":"USD","interval":"month"}"#;
    assert_eq!(reject(text.as_bytes(), Family::Billing), Reason::OutOfRange);
}

#[test]
fn negative_zero_is_the_integer_zero_and_other_floats_are_not_integers() {
    let started = |price: &str| {
        format!(
            r#"{{"event_id":"e","type":"subscription.started","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s","plan":"p","price":{price},"currency":"USD","interval":"month"}}"#
        )
    };
    let text = started("-0");
    let event = parse(text.as_bytes(), Family::Billing, NOW, &LIMITS).unwrap();
    let Payload::SubscriptionStarted(terms) = event.payload else {
        panic!("not a start: {event:?}");
    };
    assert_eq!(terms.price, 0);
    for price in ["0.0", "1.5", "-0.5", "1e3", "9223372036854775808"] {
        assert_eq!(
            reject(started(price).as_bytes(), Family::Billing),
            Reason::WrongType,
            "{price}"
        );
    }
    let text = survey(r#","survey":"nps","score":-0"#);
    assert!(parse(text.as_bytes(), Family::Surveys, NOW, &LIMITS).is_ok());
}

#[test]
fn every_reason_has_a_distinct_code() {
    let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
}

#[test]
fn the_common_shape_is_read_without_serde_and_borrowed() {
    let text = survey(
        r#","survey":"nps","score":-0,"segment":"smb","channel":null,"comment":"Ünïcode [ok]","extra":true,"n":-12,"s":"x""#,
    );
    let wire = fast(&text).expect("the common shape");
    assert_eq!(Ok(&wire), read_any(&text).as_ref());
    assert!(matches!(wire.event_id, Some(Cow::Borrowed("e1"))));
    assert!(matches!(wire.segment, Some(Cow::Borrowed("smb"))));
    assert_eq!((wire.score, &wire.channel), (Some(0), &None));
    // Whitespace around every token, and an empty object.
    let spaced = " \t{ \"event_id\" :\r\n\"e\" , \"score\" : 7 }\n ";
    assert_eq!(fast(spaced).and_then(|w| w.score), Some(7));
    assert_eq!(fast("{}"), Some(Wire::default()));
}

#[test]
fn anything_outside_the_common_shape_is_left_to_serde() {
    for extra in [
        r#","segment":"sm\u0062""#,
        r#","sm\u0062":"x""#,
        r#","score":9.0"#,
        r#","score":1e3"#,
        r#","score":01"#,
        r#","score":1234567890123456789"#,
        r#","score":"9""#,
        r#","segment":5"#,
        r#","segment":true"#,
        r#","extra":{"x":1}"#,
        r#","extra":[1]"#,
        r#","extra":1.5"#,
        r#","segment":"a","segment":"b""#,
        r#","segment":null,"segment":"b""#,
        ",\"comment\":\"tab\there\"",
        r#","score":NaN"#,
        r#","score":nul"#,
        r#","#,
    ] {
        let text = survey(extra);
        assert_eq!(fast(&text), None, "{text}");
    }
    for text in [
        "",
        "[]",
        "\u{feff}{}",
        "{} {}",
        "{\"a\":1",
        "{\"a\" 1}",
        "{\u{a0}}",
    ] {
        assert_eq!(fast(text), None, "{text}");
    }
    // A repeated unknown field is not a duplicate.
    assert!(fast(r#"{"x":1,"x":"y"}"#).is_some());
}

#[test]
fn common_timestamps_are_read_as_the_full_reader_reads_them() {
    for (text, ms) in [
        ("2026-01-01T00:00:00Z", NOW),
        ("2025-12-31T23:00:00.5+01:00", NOW - 7_200_000 + 500),
        ("2026-01-01T00:00:00.123456789-00:30", NOW + 1_800_123),
        ("1970-01-01T00:00:00Z", 0),
        // Before 1970 the milliseconds are truncated toward zero, as the full reader's are.
        ("1969-12-31T23:59:58.9995Z", -1_000),
        ("0000-03-01T00:00:00Z", -62_162_035_200_000),
        ("2024-02-29T12:00:00Z", 1_709_208_000_000),
    ] {
        assert_eq!(timestamp::unix_ms(text), Some(ms), "{text}");
        assert_eq!(parse_timestamp(text, "t"), Ok(ms), "{text}");
    }
    // Left to the full reader: it accepts some of these and rejects the others.
    for text in [
        "2026-01-01t00:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00z",
        "2016-12-31T23:59:60Z",
        "2026-01-01T00:00:00.1234567891Z",
        "2025-02-29T00:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+01:60",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T24:00:00Z",
    ] {
        assert_eq!(timestamp::unix_ms(text), None, "{text}");
    }
    assert_eq!(
        parse_timestamp("2016-12-31T23:59:60Z", "t"),
        Ok(1_483_228_799_999)
    );
}

#[test]
fn every_day_is_read_as_the_full_reader_reads_it() {
    // Every month and day number of the years around now and of every century year,
    // where the leap-year rule has its exceptions.
    let years = (1895..=2105).chain((0..=9900).step_by(100));
    for year in years {
        for month in 0..=13 {
            for day in 0..=32 {
                let text = format!("{year:04}-{month:02}-{day:02}T12:00:00Z");
                let reference = timestamp::parse(&text).ok();
                assert_eq!(timestamp::unix_ms(&text), reference, "{text}");
            }
        }
    }
}

mod fuzz {
    //! Parser fuzzing as property tests: bounded in the test suite (proptest's default
    //! 256 cases each), longer by hand with `PROPTEST_CASES=1000000 cargo test --release
    //! --lib event::tests::fuzz`.
    use proptest::prelude::*;

    use super::super::*;
    use super::{LIMITS, NOW, fast};

    const VALID: &str = r#"{"event_id":"e1","type":"ticket.resolved","occurred_at":"2025-12-31T23:00:00+01:00","customer_id":"c1","segment":"smb","ticket_id":"t","opened_at":"2025-12-30T10:00:00Z","agent_replies":1,"reopens":0,"survey":"nps","score":9}"#;

    /// `text` with each edit applied in turn: (position, byte, 0 insert / 1 remove /
    /// 2 replace), positions clamped to the text.
    fn mutated(text: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        for &(at, byte, op) in edits {
            let at = at.min(bytes.len());
            match op {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        bytes
    }

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![
            Just(Family::Surveys),
            Just(Family::Tickets),
            Just(Family::Billing)
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), family in family()) {
            let _ = parse(&bytes, family, NOW, &LIMITS);
        }

        #[test]
        fn arbitrary_json_text_never_panics(text in r#"[{}\[\]":,0-9a-z .+\-eE\\]{0,300}"#, family in family()) {
            let _ = parse(text.as_bytes(), family, NOW, &LIMITS);
        }

        /// Random edits of a valid event: accepted events still satisfy the contract.
        #[test]
        fn mutated_events_are_accepted_valid_or_rejected_with_a_reason(
            edits in prop::collection::vec((0..VALID.len(), any::<u8>(), 0..3u8), 1..6),
        ) {
            let bytes = mutated(VALID, &edits);
            match parse(&bytes, Family::Tickets, NOW, &LIMITS) {
                Ok(event) => {
                    prop_assert!(!event.event_id.is_empty() && !event.customer_id.is_empty());
                    prop_assert!(event.occurred_at_ms <= NOW + LIMITS.max_future_skew_ms);
                    if let Payload::TicketResolved { opened_at_ms, .. } = event.payload {
                        prop_assert!(opened_at_ms <= event.occurred_at_ms);
                    }
                }
                Err(rejection) => prop_assert!(!rejection.detail.is_empty()),
            }
        }

        /// Whatever the fast reader takes, the reference parse reads the same fields
        /// from: arbitrary text over JSON's alphabet.
        #[test]
        fn the_fast_reader_agrees_with_the_reference_on_json_text(
            text in r#"[{}\[\]":,0-9a-z .+\-eE\\]{0,200}"#,
        ) {
            agree(&text)?;
        }

        /// ... on objects of contract and unknown fields with values of every JSON type,
        /// repeated fields and spacing included.
        #[test]
        fn the_fast_reader_agrees_with_the_reference_on_objects(
            fields in prop::collection::vec((member(), spacing()), 0..7),
            end in spacing(),
        ) {
            let members: Vec<String> = fields
                .iter()
                .map(|((name, value), space)| format!("{space}\"{name}\"{space}:{space}{value}"))
                .collect();
            agree(&format!("{{{}{end}}}{end}", members.join(",")))?;
        }

        /// ... on random edits of valid events of every family.
        #[test]
        fn the_fast_reader_agrees_with_the_reference_on_mutated_events(
            base in prop::sample::select(&EVENTS[..]),
            edits in prop::collection::vec((0..400usize, prop::sample::select(&EDIT_BYTES[..]), 0..3u8), 1..6),
        ) {
            let bytes = mutated(base, &edits);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agree(text)?;
            }
        }

        /// Whatever the fast timestamp reader takes, the full reader reads as the same
        /// millisecond.
        #[test]
        fn the_fast_timestamp_reader_agrees_with_the_full_reader(
            year in prop_oneof![0..=9999i32, (0..=99i32).prop_map(|c| c * 100)],
            (month, day) in (0..=13u8, prop_oneof![0..=32u8, 28..=31u8]),
            (hour, minute, second) in (0..=24u8, 0..=60u8, prop_oneof![0..=61u8, 58..=61u8]),
            fraction in "(\\.[0-9]{0,11})?",
            separator in prop::sample::select(&["T", "T", "T", "t", " "][..]),
            offset in prop_oneof![
                3 => Just("Z".to_owned()),
                1 => Just("z".to_owned()),
                4 => "[+-](0[0-9]|1[0-9]|2[0-6]):[0-6][0-9]",
            ],
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{offset}");
            agree_on_timestamp(&text)?;
        }

        #[test]
        fn the_fast_timestamp_reader_agrees_with_the_full_reader_on_any_text(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.Z+\\-]{8,20}",
        ) {
            agree_on_timestamp(&text)?;
        }
    }

    /// Valid events of every type, with unknown and null fields.
    const EVENTS: [&str; 6] = [
        VALID,
        r#"{"event_id":"e","type":"survey.responded","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","survey":"ces","score":7,"comment":"ok","region":null,"x":true}"#,
        r#"{"event_id":"e","type":"subscription.changed","occurred_at":"2025-12-31T23:00:00.250Z","customer_id":"c","subscription_id":"s","plan":"p","price":4900,"quantity":3,"currency":"EUR","interval":"year","interval_count":2,"y":-1}"#,
        r#" { "event_id" : "e" , "type" : "ticket.opened" , "occurred_at" : "2025-12-31T23:00:00-05:00" , "customer_id" : "c" , "ticket_id" : "t" , "z" : false } "#,
        r#"{"event_id":"e","type":"ticket.replied","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","ticket_id":"t","author":"agent","agent_id":"a","public":false,"priority":"urgent"}"#,
        r#"{"event_id":"e","type":"subscription.canceled","occurred_at":"2025-12-31T23:00:00Z","customer_id":"c","subscription_id":"s","reason":"delinquent"}"#,
    ];

    /// Bytes that change what JSON means, to edit events with.
    const EDIT_BYTES: [u8; 24] = [
        b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'-', b'0', b'1', b'.', b'e', b'n', b' ',
        b'\t', b'\n', 0x01, 0x7f, b'u', b'a', b'Z', b'T', b'+',
    ];

    /// A field and its value: mostly of the field's JSON type, so that whole objects
    /// are often of the shape the fast reader takes, sometimes anything.
    fn member() -> impl Strategy<Value = (String, String)> {
        let text = prop_oneof![
            8 => "\"[a-z0-9 .:-]{0,8}\"",
            1 => Just("null".to_owned()),
            1 => value(),
        ];
        let integer = prop_oneof![
            6 => "-?(0|[1-9][0-9]{0,17})",
            3 => "-?[0-9]{1,21}",
            1 => "-?[0-9]{1,3}[.eE][0-9+\\-]{0,3}",
            1 => Just("null".to_owned()),
            1 => value(),
        ];
        let boolean = prop_oneof![
            4 => prop::sample::select(&["true", "false", "null"][..]).prop_map(str::to_owned),
            1 => value(),
        ];
        prop_oneof![
            4 => (prop::sample::select(&TEXT_FIELDS[..]).prop_map(str::to_owned), text),
            3 => (prop::sample::select(&INTEGER_FIELDS[..]).prop_map(str::to_owned), integer),
            1 => (Just("public".to_owned()), boolean),
            2 => ("[a-z_]{1,6}", value()),
            1 => (Just("sco\\u0072e".to_owned()), value()),
        ]
    }

    const TEXT_FIELDS: [&str; 19] = [
        "event_id",
        "type",
        "occurred_at",
        "customer_id",
        "segment",
        "region",
        "channel",
        "survey",
        "comment",
        "ticket_id",
        "opened_at",
        "subscription_id",
        "plan",
        "currency",
        "interval",
        "author",
        "agent_id",
        "priority",
        "reason",
    ];

    const INTEGER_FIELDS: [&str; 6] = [
        "score",
        "agent_replies",
        "reopens",
        "price",
        "quantity",
        "interval_count",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[a-z .\\\\/\"\\[{]{0,8}\"",
            "-?[0-9]{1,20}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
            prop::sample::select(
                &[
                    "null",
                    "true",
                    "false",
                    "nul",
                    "[]",
                    "{}",
                    "[1,{\"a\":2}]",
                    "\"\\u00e9\"",
                    "\"\\ud800\"",
                    "-",
                    "-0",
                    "\"\u{1}\""
                ][..]
            )
            .prop_map(str::to_owned),
        ]
    }

    fn spacing() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["", "", " ", "\n\t", "\r ", "\u{a0}", "\u{b}", "\u{c}"][..])
    }

    fn agree(text: &str) -> Result<(), TestCaseError> {
        if let Some(wire) = fast(text) {
            prop_assert_eq!(read_any(text), Ok(wire), "{}", text);
        }
        Ok(())
    }

    fn agree_on_timestamp(text: &str) -> Result<(), TestCaseError> {
        if let Some(ms) = timestamp::unix_ms(text) {
            let at = timestamp::parse(text);
            prop_assert!(
                at.is_ok(),
                "{} accepted, the full reader says {:?}",
                text,
                at
            );
            prop_assert_eq!(at, Ok(ms), "{}", text);
        }
        Ok(())
    }
}

mod comments {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any comment, JSON-escaped or not: the answer has one exactly when the comment
        /// holds a character that is not white space.
        #[test]
        fn an_answer_has_a_comment_when_it_holds_more_than_white_space(
            chars in prop::collection::vec(
                prop::sample::select(&[
                    ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{1680}',
                    '\u{2003}', '\u{2028}', '\u{3000}', '\u{200b}', '\u{feff}', '\u{1}', 'a',
                    'é', '"', '\\', '/',
                ][..]),
                0..8,
            ),
            survey in prop::sample::select(&["nps", "csat", "ces"][..]),
        ) {
            let comment: String = chars.iter().collect();
            let text = super::survey(&format!(
                r#","survey":"{survey}","score":5,"comment":{}"#,
                serde_json::to_string(&comment).unwrap()
            ));
            let expected = comment.chars().any(|c| !c.is_whitespace());
            prop_assert_eq!(commented(&text), expected, "{:?}", comment);
        }
    }
}
