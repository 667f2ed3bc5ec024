//! `[health]`: the customers' health signals: the window their counts cover, and how long
//! a customer without an event, MRR or open ticket is kept.

use std::time::Duration;

use kpi_core::health::parts::SignalSettings;
use serde::Deserialize;

use super::{ConfigError, bounded_duration, invalid};

/// Bounds of `health.signal_window`: a day to a year; its 16 buckets are a 16th of it.
const MIN_SIGNAL_WINDOW: Duration = Duration::from_secs(86_400);
const MAX_SIGNAL_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// The longest `health.forget_after`: ten years; longer would keep customers that left
/// for good.
const MAX_FORGET_AFTER: Duration = Duration::from_secs(3660 * 86_400);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Tickets opened, CSAT answers, SLA breaches, MRR movements and failed payments count
    /// within it.
    #[serde(deserialize_with = "super::duration")]
    pub signal_window: Duration,
    /// A customer with no event for this long, no MRR and no open ticket is forgotten.
    #[serde(deserialize_with = "super::duration")]
    pub forget_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let defaults = SignalSettings::default();
        HealthConfig {
            signal_window: Duration::from_millis(defaults.window_ms as u64),
            forget_after: Duration::from_millis(defaults.forget_after_ms as u64),
        }
    }
}

impl HealthConfig {
    /// The signals' settings, each within its bounds, `forget_after` no shorter than the
    /// window.
    pub fn signal_settings(&self) -> Result<SignalSettings, ConfigError> {
        bounded_duration(
            "health.signal_window",
            self.signal_window,
            MIN_SIGNAL_WINDOW..=MAX_SIGNAL_WINDOW,
            "the window of a customer's signals is between a day and a year",
        )?;
        bounded_duration(
            "health.forget_after",
            self.forget_after,
            MIN_SIGNAL_WINDOW..=MAX_FORGET_AFTER,
            "a customer is kept between a day and ten years",
        )?;
        if self.forget_after < self.signal_window {
            return Err(invalid(
                "health.forget_after",
                "must be at least health.signal_window, so that what is forgotten has left \
                 the window",
            ));
        }
        Ok(SignalSettings {
            window_ms: self.signal_window.as_millis() as i64,
            forget_after_ms: self.forget_after.as_millis() as i64,
        })
    }
}
