//! `[sla]`: the service levels of support tickets, and how long a ticket may stay open in
//! the open tickets each tickets partition keeps.

use std::time::Duration;

use kpi_core::event::Priority;
use kpi_core::sla::{SlaTargets, Targets};
use serde::{Deserialize, Deserializer};

use super::{ConfigError, bounded_duration};

/// Bounds of `sla.max_open_age`: every start replays this much of the tickets topic, which
/// must retain it.
const MIN_MAX_OPEN_AGE: Duration = Duration::from_secs(3600);
const MAX_MAX_OPEN_AGE: Duration = Duration::from_secs(366 * 86_400);

/// Bounds of every SLA target: a minute to the longest window.
const MIN_TARGET: Duration = Duration::from_secs(60);
const MAX_TARGET: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// A ticket open longer than this is dropped from the open tickets and counted in
    /// `kpi_tickets_abandoned_total`.
    #[serde(deserialize_with = "super::duration")]
    pub max_open_age: Duration,
    /// The targets of each priority; a target not given in a priority's table keeps its
    /// default.
    pub low: PriorityTargets,
    pub normal: PriorityTargets,
    pub high: PriorityTargets,
    pub urgent: PriorityTargets,
}

/// `sla.<priority>`: how long after its opening a ticket of the priority may wait for its
/// first public agent reply, and for its resolution, in calendar time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityTargets {
    #[serde(deserialize_with = "some_duration")]
    pub first_reply: Option<Duration>,
    #[serde(deserialize_with = "some_duration")]
    pub resolution: Option<Duration>,
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration(d).map(Some)
}

impl PriorityTargets {
    /// The default targets of `priority`, as the configuration would write them.
    fn default_of(priority: Priority) -> Self {
        let targets = SlaTargets::default().of(Some(priority));
        PriorityTargets {
            first_reply: Some(Duration::from_millis(targets.first_reply_ms)),
            resolution: Some(Duration::from_millis(targets.resolution_ms)),
        }
    }
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            max_open_age: Duration::from_secs(90 * 86_400),
            low: PriorityTargets::default_of(Priority::Low),
            normal: PriorityTargets::default_of(Priority::Normal),
            high: PriorityTargets::default_of(Priority::High),
            urgent: PriorityTargets::default_of(Priority::Urgent),
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

    /// The targets of every priority, the defaults where none is given, each within its
    /// bounds.
    pub fn targets(&self) -> Result<SlaTargets, ConfigError> {
        let defaults = SlaTargets::default();
        let mut by_priority = [defaults.of(None); Priority::ALL.len()];
        for (slot, priority) in by_priority.iter_mut().zip(Priority::ALL) {
            let given = match priority {
                Priority::Low => &self.low,
                Priority::Normal => &self.normal,
                Priority::High => &self.high,
                Priority::Urgent => &self.urgent,
            };
            let default = defaults.of(Some(priority));
            let target = |name: &str, value: Option<Duration>, default_ms: u64| {
                let Some(value) = value else {
                    return Ok(default_ms);
                };
                bounded_duration(
                    &format!("sla.{}.{name}", priority.name()),
                    value,
                    MIN_TARGET..=MAX_TARGET,
                    "an SLA target is between a minute and the longest window",
                )?;
                Ok::<u64, ConfigError>(value.as_millis() as u64)
            };
            *slot = Targets {
                first_reply_ms: target("first_reply", given.first_reply, default.first_reply_ms)?,
                resolution_ms: target("resolution", given.resolution, default.resolution_ms)?,
            };
        }
        Ok(SlaTargets::new(by_priority))
    }
}
