//! `[sla]`: the service levels of support tickets, and how long a ticket may stay open in
//! the open tickets each tickets partition keeps.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, bounded_duration};

/// Bounds of `sla.max_open_age`: every start replays this much of the tickets topic, which
/// must retain it.
const MIN_MAX_OPEN_AGE: Duration = Duration::from_secs(3600);
const MAX_MAX_OPEN_AGE: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// A ticket open longer than this is dropped from the open tickets and counted in
    /// `kpi_tickets_abandoned_total`.
    #[serde(deserialize_with = "super::duration")]
    pub max_open_age: Duration,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            max_open_age: Duration::from_secs(90 * 86_400),
        }
    }
}

impl SlaConfig {
    /// `sla.max_open_age` in milliseconds, within its bounds.
    pub fn max_open_age_ms(&self) -> Result<i64, ConfigError> {
        bounded_duration(
            "sla.max_open_age",
            self.max_open_age,
            MIN_MAX_OPEN_AGE..=MAX_MAX_OPEN_AGE,
            "every start replays this much of the tickets topic",
        )?;
        Ok(self.max_open_age.as_millis() as i64)
    }
}
