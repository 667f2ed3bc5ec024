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
    /// A trial of a subscription that is already active.
    ActiveSubscription,
    /// A second trial of a subscription whose trial is still pending.
    PendingTrial,
    Late,
    /// Counted in the rolling windows, but written after its calendar period closed.
    LateForPeriod,
    /// A rate message that would grow the rate table beyond `billing.max_rates`.
    TooManyRates,
}

impl Reason {
    pub const ALL: [Reason; 25] = [
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
        Reason::ActiveSubscription,
        Reason::PendingTrial,
        Reason::Late,
        Reason::LateForPeriod,
        Reason::TooManyRates,
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
            Reason::ActiveSubscription => "active_subscription",
            Reason::PendingTrial => "pending_trial",
            Reason::Late => "late",
            Reason::LateForPeriod => "late_for_period",
            Reason::TooManyRates => "too_many_rates",
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
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
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
        /// The answer's comment, when it has at least one character that is not Unicode
        /// white space: an empty or blank comment is no comment.
        comment: Option<Cow<'a, str>>,
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
    /// A trial of a subscription began; it converts when the subscription starts before
    /// the trial's end plus `billing.trial_grace`. It carries no MRR.
    TrialStarted {
        subscription_id: Cow<'a, str>,
        /// When the trial ends, Unix milliseconds: after `occurred_at`, by at most
        /// [`MAX_TRIAL_MS`].
        trial_ends_at_ms: i64,
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
            | Payload::SubscriptionRenewed { .. }
            | Payload::TrialStarted { .. } => Family::Billing,
        }
    }
}

/// The longest trial: a `trial_ends_at` further after `occurred_at` is rejected, so that a
/// trial cannot stay pending, and held in memory, for ever.
pub const MAX_TRIAL_MS: i64 = 366 * 86_400_000;

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
    #[serde(borrow, default, deserialize_with = "text")]
    trial_ends_at: Option<Cow<'a, str>>,
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

pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, Rejection> {
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
pub(crate) fn truncate(mut text: String, max: usize) -> String {
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
    let text = message_text(bytes, limits.max_event_bytes)?;
    let mut wire = Wire::default();
    if flat::read(text, &mut wire).is_none() {
        wire = read_any(text)?;
    }
    validate(wire, family, reference_ms, limits)
}

/// The text of a message: not empty, at most `max_bytes`, UTF-8.
pub(crate) fn message_text(bytes: &[u8], max_bytes: usize) -> Result<&str, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::new(Reason::Empty, "empty message"));
    }
    if bytes.len() > max_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!("{} bytes exceeds the limit of {max_bytes}", bytes.len()),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            Reason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })
}

/// The reference parse of a message's text, which decides every message: whether it is one
/// JSON object within the depth limit, and its fields (an event's [`Wire`], or another
/// message's). [`flat::read`] reads the common shape of an event faster with the same
/// result, and leaves everything else here.
pub(crate) fn read_any<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
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
                comment: wire.comment.filter(|comment| !comment.trim().is_empty()),
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
        "subscription.trial_started" => {
            let subscription_id = required_str(wire.subscription_id, "subscription_id")?;
            // The plan on trial: checked, read by no KPI.
            required_str(wire.plan, "plan")?;
            let trial_ends_at_ms = parse_timestamp(
                &required(wire.trial_ends_at, "trial_ends_at")?,
                "trial_ends_at",
            )?;
            let length_ms = trial_ends_at_ms.saturating_sub(occurred_at_ms);
            if !(1..=MAX_TRIAL_MS).contains(&length_ms) {
                return Err(Rejection::new(
                    Reason::InvalidValue,
                    format!(
                        "trial_ends_at is {length_ms} ms after occurred_at; a trial ends after it starts, by at most 366 days"
                    ),
                ));
            }
            Payload::TrialStarted {
                subscription_id,
                trial_ends_at_ms,
            }
        }
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
mod tests;
