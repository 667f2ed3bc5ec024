//! Kafka client errors, logged once per kind a minute.
//!
//! librdkafka reports an error for every attempt while a broker is away, about ten a second
//! for each client, and the service has four (the consumer, two producers and the
//! components reader). Logged as they came, a broker outage wrote about 2,000 lines a minute
//! and buried everything else. Now the outage itself is logged once, as a change of broker
//! reachability (by the consumer's statistics), and every other kind of error at most once a
//! minute, with the number of repeats left out since.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, warn};

/// How long the same kind of error stays quiet after it was logged.
const QUIET: Duration = Duration::from_secs(60);

/// When each kind of error was last logged, and how many were left out since.
#[derive(Debug, Default)]
pub struct ErrorLog {
    kinds: Mutex<HashMap<Option<i32>, (Instant, u64)>>,
}

impl ErrorLog {
    /// Whether an error of `kind` seen at `now` is to be logged; with the number of errors of
    /// that kind left out since the last one logged.
    fn admit(&self, kind: Option<RDKafkaErrorCode>, now: Instant) -> Option<u64> {
        let kind = kind.map(|code| code as i32);
        let Ok(mut kinds) = self.kinds.lock() else {
            return Some(0);
        };
        match kinds.get_mut(&kind) {
            Some((last, left_out)) if now.duration_since(*last) < QUIET => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }

    /// Logs `error` (what the client was doing: `what`) unless an error of its kind was
    /// logged within the last minute. Broker outages are left to the reachability report.
    pub fn report(&self, what: &str, error: &KafkaError, reason: &str) {
        let kind = error.rdkafka_error_code();
        if matches!(
            kind,
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            debug!(error = %error, reason, "{what}");
            return;
        }
        match self.admit(kind, Instant::now()) {
            Some(left_out) => warn!(
                error = %error,
                reason,
                repeats_not_logged = left_out,
                "{what} (the same kind is logged at most once a minute)"
            ),
            None => debug!(error = %error, reason, "{what}"),
        }
    }
}

/// The client context of the producers and the components reader: errors through an
/// [`ErrorLog`] instead of one line each.
#[derive(Debug, Default)]
pub struct LoggedErrors {
    log: ErrorLog,
}

impl ClientContext for LoggedErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.report("kafka client error", &error, reason);
    }
}

impl ConsumerContext for LoggedErrors {}

/// The service's producers.
pub type Producer = FutureProducer<LoggedErrors>;

/// A consumer outside the group (the components reader).
pub type Reader = BaseConsumer<LoggedErrors>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_logged_once_a_minute_with_the_repeats_left_out() {
        let log = ErrorLog::default();
        let t0 = Instant::now();
        let timed_out = Some(RDKafkaErrorCode::MessageTimedOut);
        let unknown = Some(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert_eq!(log.admit(timed_out, t0), Some(0));
        for s in 1..60 {
            assert_eq!(log.admit(timed_out, t0 + Duration::from_secs(s)), None);
        }
        // Another kind is not held back by the first.
        assert_eq!(log.admit(unknown, t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(log.admit(timed_out, t0 + QUIET), Some(59));
        assert_eq!(log.admit(timed_out, t0 + QUIET + QUIET), Some(0));
        assert_eq!(log.admit(None, t0), Some(0));
        assert_eq!(log.admit(None, t0), None);
    }
}
