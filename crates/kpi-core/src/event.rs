//! Event contract v1: parsing and validation of one Kafka message into an [`Event`].
//!
//! Pure: no I/O and no clock reads. The caller passes the time the future-skew check is
//! judged against ([`reference_time`]). Every way a message can fail has its own
//! [`Reason`], which becomes a metric label and a dead-letter header, so an operator can
//! tell a producer bug from an attack from a clock problem without reading payloads.
//!
//! Parsing borrows from the message bytes: strings without escapes are never copied.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

mod flat;
mod timestamp;

/// The family of an input topic; each accepts its own event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Surveys,
    Tickets,
    Billing,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Surveys, Family::Tickets, Family::Billing];

    /// The family's position in [`Family::ALL`], to index per-family arrays.
    pub fn index(self) -> usize {
        match self {
            Family::Surveys => 0,
            Family::Tickets => 1,
            Family::Billing => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Surveys => "surveys",
            Family::Tickets => "tickets",
            Family::Billing => "billing",
        }
    }
}

/// Why a message was rejected. The `code()` is the `reason` label of
/// `kpi_events_rejected_total` and the `kpi-stream.reason` dead-letter header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Empty,
    TooLarge,
    TooDeep,
    TooLong,
    InvalidUtf8,
    InvalidJson,
    NotObject,
    DuplicateField,
    MissingField,
    WrongType,
    UnknownType,
    WrongTopic,
    InvalidValue,
    OutOfRange,
    InvalidTimestamp,
    FutureTimestamp,
    NegativeDuration,
    UnknownCurrency,
    UnknownSubscription,
    CanceledSubscription,
    Late,
    /// Counted in the rolling windows, but written after its calendar period closed.
    LateForPeriod,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::Empty,
        Reason::TooLarge,
        Reason::TooDeep,
        Reason::TooLong,
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotObject,
        Reason::DuplicateField,
        Reason::MissingField,
        Reason::WrongType,
        Reason::UnknownType,
        Reason::WrongTopic,
        Reason::InvalidValue,
        Reason::OutOfRange,
        Reason::InvalidTimestamp,
        Reason::FutureTimestamp,
        Reason::NegativeDuration,
        Reason::UnknownCurrency,
        Reason::UnknownSubscription,
        Reason::CanceledSubscription,
        Reason::Late,
        Reason::LateForPeriod,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLarge => "too_large",
            Reason::TooDeep => "too_deep",
            Reason::TooLong => "too_long",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotObject => "not_object",
            Reason::DuplicateField => "duplicate_field",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::UnknownType => "unknown_type",
            Reason::WrongTopic => "wrong_topic",
            Reason::InvalidValue => "invalid_value",
            Reason::OutOfRange => "out_of_range",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::NegativeDuration => "negative_duration",
            Reason::UnknownCurrency => "unknown_currency",
            Reason::UnknownSubscription => "unknown_subscription",
            Reason::CanceledSubscription => "canceled_subscription",
            Reason::Late => "late",
            Reason::LateForPeriod => "late_for_period",
        }
    }
}

/// A rejected message: the reason code and a human-readable detail for the dead-letter header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// The survey kinds and their score scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Survey {
    /// Net Promoter Score question, 0-10.
    Nps,
    /// Customer satisfaction, 1-5.
    Csat,
    /// Customer effort, 1-7 where 7 means "it was easy".
    Ces,
}

impl Survey {
    pub const ALL: [Survey; 3] = [Survey::Nps, Survey::Csat, Survey::Ces];

    pub fn name(self) -> &'static str {
        match self {
            Survey::Nps => "nps",
            Survey::Csat => "csat",
            Survey::Ces => "ces",
        }
    }

    /// Inclusive score range of the survey's scale.
    pub fn scale(self) -> (u8, u8) {
        match self {
            Survey::Nps => (0, 10),
            Survey::Csat => (1, 5),
            Survey::Ces => (1, 7),
        }
    }
}

/// A ticket's priority, as help desks grade it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// Who wrote a ticket reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Author {
    Agent,
    Customer,
}

/// Why a subscription was canceled, as billing systems report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The customer canceled (the default when an event names no reason).
    #[default]
    Voluntary,
    /// Payment failed after dunning.
    Delinquent,
}

impl CancelReason {
    pub const ALL: [CancelReason; 2] = [CancelReason::Voluntary, CancelReason::Delinquent];

    pub fn name(self) -> &'static str {
        match self {
            CancelReason::Voluntary => "voluntary",
            CancelReason::Delinquent => "delinquent",
        }
    }
}

/// Billing interval of a subscription price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Month,
    Year,
}

/// The full state of a subscription as carried by `subscription.started` and `.changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionTerms<'a> {
    pub subscription_id: Cow<'a, str>,
    pub plan: Cow<'a, str>,
    /// Minor units of `currency` per interval per unit.
    pub price: i64,
    pub quantity: u32,
    /// ISO 4217 code, upper case.
    pub currency: Cow<'a, str>,
    pub interval: Interval,
    pub interval_count: u32,
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<'a> {
    SurveyResponded {
        survey: Survey,
        score: u8,
    },
    TicketOpened {
        ticket_id: Cow<'a, str>,
        priority: Option<Priority>,
    },
    TicketReopened {
        ticket_id: Cow<'a, str>,
        priority: Option<Priority>,
    },
    /// A reply on a ticket; only a public agent reply is a reply for the support KPIs.
    TicketReplied {
        ticket_id: Cow<'a, str>,
        author: Author,
        public: bool,
        priority: Option<Priority>,
    },
    TicketResolved {
        ticket_id: Cow<'a, str>,
        opened_at_ms: i64,
        agent_replies: u32,
        reopens: u32,
        priority: Option<Priority>,
    },
    SubscriptionStarted(SubscriptionTerms<'a>),
    SubscriptionChanged(SubscriptionTerms<'a>),
    SubscriptionCanceled {
        subscription_id: Cow<'a, str>,
        reason: CancelReason,
    },
    SubscriptionRenewed {
        subscription_id: Cow<'a, str>,
    },
}

impl Payload<'_> {
    pub fn family(&self) -> Family {
        match self {
            Payload::SurveyResponded { .. } => Family::Surveys,
            Payload::TicketOpened { .. }
            | Payload::TicketReopened { .. }
            | Payload::TicketReplied { .. }
            | Payload::TicketResolved { .. } => Family::Tickets,
            Payload::SubscriptionStarted(_)
            | Payload::SubscriptionChanged(_)
            | Payload::SubscriptionCanceled { .. }
            | Payload::SubscriptionRenewed { .. } => Family::Billing,
        }
    }
}

/// Names of the optional dimension fields, in the order of [`Event::dimensions`].
pub const DIMENSION_FIELDS: [&str; 4] = ["segment", "region", "channel", "agent"];

/// A valid event, borrowing from the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Event time, Unix milliseconds.
    pub occurred_at_ms: i64,
    pub customer_id: Cow<'a, str>,
    /// `segment`, `region`, `channel` and `agent` (an answer's, a reply's or a
    /// resolution's `agent_id`), when present.
    pub dimensions: [Option<Cow<'a, str>>; 4],
    pub payload: Payload<'a>,
    /// When the message was written, as far as the log tells: its timestamp, never later
    /// than the service clock ([`reference_time`]). Whether the event came after its
    /// calendar period closed is decided from it, so that a replay decides as the live run
    /// did.
    pub reference_ms: i64,
}

/// Limits applied while parsing, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages larger than this are rejected before parsing.
    pub max_event_bytes: usize,
    /// How far in the future `occurred_at` may be, against the reference time passed to
    /// [`parse`] ([`reference_time`]).
    pub max_future_skew_ms: i64,
}

/// The time an event's `occurred_at` is judged against: the message's Kafka timestamp, but
/// never later than the service clock.
///
/// The Kafka timestamp makes the decision repeatable: a replay of the log judges each
/// message as the live run did, since a correct producer's timestamp was already in the past
/// when the message first arrived. The service clock bounds it because a producer sets that
/// timestamp (`CreateTime`) and brokers accept it an hour ahead or more: taken alone, a
/// producer whose clock runs ahead would widen the accepted skew by its own error, and an
/// event could land beyond the room the windows keep ahead of `now`. A message without a
/// timestamp is judged against the clock.
pub fn reference_time(message_ms: Option<i64>, now_ms: i64) -> i64 {
    message_ms.map_or(now_ms, |t| t.min(now_ms))
}

/// Deepest JSON nesting accepted anywhere in a message; events are flat objects, so only a
/// hostile or broken producer goes deeper. Unknown fields are skipped without a depth limit
/// by the parser, hence this check.
pub const MAX_DEPTH: usize = 32;

/// Longest identifier (`event_id`, `customer_id`, `ticket_id`, `agent_id`, `subscription_id`,
/// `plan`) or
/// dimension value accepted, in bytes: these become map keys and label values.
pub const MAX_FIELD_BYTES: usize = 256;

/// Whether `bytes` nests arrays and objects deeper than [`MAX_DEPTH`].
fn too_deep(bytes: &[u8]) -> bool {
    // Few brackets cannot nest deeply; this count is cheap and settles most messages.
    let opening = memchr::memchr2_iter(b'{', b'[', bytes).count();
    if opening <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Rejects a string field longer than [`MAX_FIELD_BYTES`]. It only looks at the value, so
/// that the value is moved once, into the event.
fn within_limit(value: Option<&str>, field: &str) -> Result<(), Rejection> {
    match value {
        Some(v) if v.len() > MAX_FIELD_BYTES => Err(Rejection::new(
            Reason::TooLong,
            format!(
                "field `{field}` is {} bytes; the limit is {MAX_FIELD_BYTES}",
                v.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Every field the contract knows. Unknown fields are skipped; a field that appears twice
/// is an error (`duplicate_field`), so a message cannot say two things at once.
#[derive(Default, Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Wire<'a> {
    #[serde(borrow, default, deserialize_with = "text")]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text", rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    segment: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    region: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    survey: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "integer")]
    score: Option<i64>,
    #[serde(borrow, default, deserialize_with = "text")]
    comment: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    ticket_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    opened_at: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "integer")]
    agent_replies: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    reopens: Option<i64>,
    #[serde(borrow, default, deserialize_with = "text")]
    author: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    agent_id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "boolean")]
    public: Option<bool>,
    #[serde(borrow, default, deserialize_with = "text")]
    priority: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    subscription_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    plan: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "integer")]
    price: Option<i64>,
    #[serde(default, deserialize_with = "integer")]
    quantity: Option<i64>,
    #[serde(borrow, default, deserialize_with = "text")]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    interval: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "integer")]
    interval_count: Option<i64>,
}

/// A string field, borrowed from the message unless it holds an escape sequence. serde's
/// `borrow` alone does not borrow a `Cow` inside an `Option`: it would copy every string of
/// every event into its own allocation.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
    }
    deserializer.deserialize_option(Text)
}

/// An integer field. JSON's `-0` is an integer literal, but serde_json reads it as the float
/// -0.0 to keep its sign; it is the integer 0 here. Every other float stays a `wrong_type`.
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct Integer;
    impl<'de> Visitor<'de> for Integer {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_i64(self)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v == 0.0 && v.is_sign_negative() {
                Ok(Some(0))
            } else {
                Err(E::invalid_type(de::Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_option(Integer)
}

/// A boolean field; `null` is absent, as for every field.
fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    Option::<bool>::deserialize(deserializer)
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Rejection> {
    value.ok_or_else(|| Rejection::new(Reason::MissingField, format!("missing field `{field}`")))
}

fn required_str<'a>(value: Option<Cow<'a, str>>, field: &str) -> Result<Cow<'a, str>, Rejection> {
    within_limit(value.as_deref(), field)?;
    let value = required(value, field)?;
    if value.is_empty() {
        return Err(Rejection::new(
            Reason::InvalidValue,
            format!("field `{field}` is empty"),
        ));
    }
    Ok(value)
}

/// An optional identifier: when present, non-empty and within [`MAX_FIELD_BYTES`].
fn optional_id(value: Option<&str>, field: &str) -> Result<(), Rejection> {
    within_limit(value, field)?;
    if value.is_some_and(str::is_empty) {
        return Err(Rejection::new(
            Reason::InvalidValue,
            format!("field `{field}` is empty"),
        ));
    }
    Ok(())
}

/// The optional `priority` of a ticket event.
fn priority(value: Option<&str>) -> Result<Option<Priority>, Rejection> {
    let Some(text) = value else {
        return Ok(None);
    };
    match Priority::ALL.into_iter().find(|p| p.name() == text) {
        Some(priority) => Ok(Some(priority)),
        None => Err(Rejection::new(
            Reason::InvalidValue,
            format!(
                "field `priority` = {:?} is not one of low, normal, high, urgent",
                truncate(text.to_owned(), 40)
            ),
        )),
    }
}

/// The optional `reason` of a cancellation: voluntary when absent or null.
fn cancel_reason(value: Option<&str>) -> Result<CancelReason, Rejection> {
    let Some(text) = value else {
        return Ok(CancelReason::Voluntary);
    };
    match CancelReason::ALL.into_iter().find(|r| r.name() == text) {
        Some(reason) => Ok(reason),
        None => Err(Rejection::new(
            Reason::InvalidValue,
            format!(
                "field `reason` = {:?} is not one of voluntary, delinquent",
                truncate(text.to_owned(), 40)
            ),
        )),
    }
}

fn author(value: Option<Cow<'_, str>>) -> Result<Author, Rejection> {
    match required(value, "author")?.as_ref() {
        "agent" => Ok(Author::Agent),
        "customer" => Ok(Author::Customer),
        other => Err(Rejection::new(
            Reason::InvalidValue,
            format!(
                "field `author` = {:?} is not one of agent, customer",
                truncate(other.to_owned(), 40)
            ),
        )),
    }
}

fn counter(value: Option<i64>, field: &str) -> Result<u32, Rejection> {
    let value = required(value, field)?;
    u32::try_from(value).map_err(|_| {
        Rejection::new(
            Reason::OutOfRange,
            format!("field `{field}` = {value} is not in 0..={}", u32::MAX),
        )
    })
}

fn positive(value: Option<i64>, field: &str) -> Result<u32, Rejection> {
    let value = value.unwrap_or(1);
    match u32::try_from(value) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(Rejection::new(
            Reason::OutOfRange,
            format!("field `{field}` = {value} must be an integer >= 1"),
        )),
    }
}

/// Parses an RFC 3339 timestamp with offset into Unix milliseconds.
pub fn parse_timestamp(text: &str, field: &str) -> Result<i64, Rejection> {
    if let Some(ms) = timestamp::unix_ms(text) {
        return Ok(ms);
    }
    timestamp::parse(text).map_err(|e| {
        Rejection::new(
            Reason::InvalidTimestamp,
            format!("field `{field}` is not an RFC 3339 timestamp with offset: {e}"),
        )
    })
}

/// Detail strings echo parser messages, which can quote input; keep headers small.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn classify_json_error(error: serde_json::Error) -> Rejection {
    let message = truncate(error.to_string(), 200);
    let reason = match error.classify() {
        serde_json::error::Category::Data if message.starts_with("duplicate field") => {
            Reason::DuplicateField
        }
        serde_json::error::Category::Data => Reason::WrongType,
        _ => Reason::InvalidJson,
    };
    Rejection::new(reason, message)
}

/// Parses and validates one message from a topic of `family`; `occurred_at` may be at most
/// `limits.max_future_skew_ms` ahead of `reference_ms` ([`reference_time`]).
pub fn parse<'a>(
    bytes: &'a [u8],
    family: Family,
    reference_ms: i64,
    limits: &Limits,
) -> Result<Event<'a>, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::new(Reason::Empty, "empty message"));
    }
    if bytes.len() > limits.max_event_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!(
                "{} bytes exceeds the limit of {}",
                bytes.len(),
                limits.max_event_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            Reason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut wire = Wire::default();
    if flat::read(text, &mut wire).is_none() {
        wire = read_any(text)?;
    }
    validate(wire, family, reference_ms, limits)
}

/// The reference parse of a message's text, which decides every message: whether it is one
/// JSON object within the depth limit, and its contract fields ([`Wire`]). [`flat::read`]
/// reads the common shape faster with the same result, and leaves everything else here.
fn read_any(text: &str) -> Result<Wire<'_>, Rejection> {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(_) => {
            return Err(Rejection::new(
                Reason::NotObject,
                "the message is not a JSON object",
            ));
        }
        None => return Err(Rejection::new(Reason::Empty, "only whitespace")),
    }
    if too_deep(text.as_bytes()) {
        return Err(Rejection::new(
            Reason::TooDeep,
            format!("JSON nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    serde_json::from_str(text).map_err(classify_json_error)
}

fn validate<'a>(
    wire: Wire<'a>,
    family: Family,
    reference_ms: i64,
    limits: &Limits,
) -> Result<Event<'a>, Rejection> {
    let kind = required(wire.kind, "type")?;
    let event_id = required_str(wire.event_id, "event_id")?;
    let occurred_at = required(wire.occurred_at, "occurred_at")?;
    let customer_id = required_str(wire.customer_id, "customer_id")?;
    let occurred_at_ms = parse_timestamp(&occurred_at, "occurred_at")?;
    // The comment is free text that no KPI reads; only its type is part of the contract.
    let _ = wire.comment;

    let payload = match kind.as_ref() {
        "survey.responded" => {
            let survey = match required(wire.survey, "survey")?.as_ref() {
                "nps" => Survey::Nps,
                "csat" => Survey::Csat,
                "ces" => Survey::Ces,
                other => {
                    return Err(Rejection::new(
                        Reason::InvalidValue,
                        format!(
                            "field `survey` = {:?} is not one of nps, csat, ces",
                            truncate(other.to_owned(), 40)
                        ),
                    ));
                }
            };
            let score = required(wire.score, "score")?;
            let (low, high) = survey.scale();
            if score < i64::from(low) || score > i64::from(high) {
                return Err(Rejection::new(
                    Reason::OutOfRange,
                    format!(
                        "score {score} is outside the {} scale {low}-{high}",
                        survey.name()
                    ),
                ));
            }
            // The ticket an answer is about: checked, read by no KPI yet; its agent is the
            // `agent` dimension.
            optional_id(wire.ticket_id.as_deref(), "ticket_id")?;
            optional_id(wire.agent_id.as_deref(), "agent_id")?;
            Payload::SurveyResponded {
                survey,
                score: score as u8,
            }
        }
        "ticket.opened" => Payload::TicketOpened {
            ticket_id: required_str(wire.ticket_id, "ticket_id")?,
            priority: priority(wire.priority.as_deref())?,
        },
        "ticket.reopened" => Payload::TicketReopened {
            ticket_id: required_str(wire.ticket_id, "ticket_id")?,
            priority: priority(wire.priority.as_deref())?,
        },
        "ticket.replied" => {
            // The replying agent: the `agent` dimension.
            optional_id(wire.agent_id.as_deref(), "agent_id")?;
            Payload::TicketReplied {
                ticket_id: required_str(wire.ticket_id, "ticket_id")?,
                author: author(wire.author)?,
                public: wire.public.unwrap_or(true),
                priority: priority(wire.priority.as_deref())?,
            }
        }
        "ticket.resolved" => {
            // The resolving agent: the `agent` dimension.
            optional_id(wire.agent_id.as_deref(), "agent_id")?;
            Payload::TicketResolved {
                ticket_id: required_str(wire.ticket_id, "ticket_id")?,
                opened_at_ms: parse_timestamp(
                    &required(wire.opened_at, "opened_at")?,
                    "opened_at",
                )?,
                agent_replies: counter(wire.agent_replies, "agent_replies")?,
                reopens: counter(wire.reopens, "reopens")?,
                priority: priority(wire.priority.as_deref())?,
            }
        }
        "subscription.started" | "subscription.changed" => {
            let currency = required(wire.currency, "currency")?;
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Rejection::new(
                    Reason::InvalidValue,
                    "field `currency` is not an ISO 4217 code (three upper-case letters)",
                ));
            }
            let interval = match required(wire.interval, "interval")?.as_ref() {
                "month" => Interval::Month,
                "year" => Interval::Year,
                _ => {
                    return Err(Rejection::new(
                        Reason::InvalidValue,
                        "field `interval` is not one of month, year",
                    ));
                }
            };
            let price = required(wire.price, "price")?;
            if price < 0 {
                return Err(Rejection::new(
                    Reason::OutOfRange,
                    format!("price {price} is negative"),
                ));
            }
            let terms = SubscriptionTerms {
                subscription_id: required_str(wire.subscription_id, "subscription_id")?,
                plan: required_str(wire.plan, "plan")?,
                price,
                quantity: positive(wire.quantity, "quantity")?,
                currency,
                interval,
                interval_count: positive(wire.interval_count, "interval_count")?,
            };
            if kind == "subscription.started" {
                Payload::SubscriptionStarted(terms)
            } else {
                Payload::SubscriptionChanged(terms)
            }
        }
        "subscription.canceled" => Payload::SubscriptionCanceled {
            subscription_id: required_str(wire.subscription_id, "subscription_id")?,
            reason: cancel_reason(wire.reason.as_deref())?,
        },
        "subscription.renewed" => Payload::SubscriptionRenewed {
            subscription_id: required_str(wire.subscription_id, "subscription_id")?,
        },
        other => {
            return Err(Rejection::new(
                Reason::UnknownType,
                format!("unknown event type {:?}", truncate(other.to_owned(), 60)),
            ));
        }
    };
    if payload.family() != family {
        return Err(Rejection::new(
            Reason::WrongTopic,
            format!(
                "a {kind} event does not belong on the {} topic",
                family.name()
            ),
        ));
    }
    if let Payload::TicketResolved { opened_at_ms, .. } = payload
        && opened_at_ms > occurred_at_ms
    {
        return Err(Rejection::new(
            Reason::NegativeDuration,
            format!(
                "resolved {} ms before it was opened",
                opened_at_ms - occurred_at_ms
            ),
        ));
    }
    if occurred_at_ms > reference_ms.saturating_add(limits.max_future_skew_ms) {
        return Err(Rejection::new(
            Reason::FutureTimestamp,
            format!(
                "occurred_at is {} ms ahead of the message timestamp or the service clock, whichever is earlier (limit {} ms)",
                occurred_at_ms - reference_ms,
                limits.max_future_skew_ms
            ),
        ));
    }
    within_limit(wire.segment.as_deref(), "segment")?;
    within_limit(wire.region.as_deref(), "region")?;
    within_limit(wire.channel.as_deref(), "channel")?;
    // The agent of an answer, a reply or a resolution, the events whose contract has one.
    let agent = matches!(
        payload,
        Payload::SurveyResponded { .. }
            | Payload::TicketReplied { .. }
            | Payload::TicketResolved { .. }
    )
    .then_some(wire.agent_id)
    .flatten();
    Ok(Event {
        event_id,
        occurred_at_ms,
        customer_id,
        dimensions: [wire.segment, wire.region, wire.channel, agent],
        payload,
        reference_ms,
    })
}

#[cfg(test)]
mod tests {
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
                score: 9
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

    #[test]
    fn a_survey_answer_may_name_its_ticket_and_agent() {
        let text = survey(r#","survey":"csat","score":5,"ticket_id":"t1","agent_id":"a1""#);
        assert!(matches!(
            accept(&text, Family::Surveys),
            Payload::SurveyResponded { score: 5, .. }
        ));
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
            b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'-', b'0', b'1', b'.', b'e', b'n',
            b' ', b'\t', b'\n', 0x01, 0x7f, b'u', b'a', b'Z', b'T', b'+',
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
}
