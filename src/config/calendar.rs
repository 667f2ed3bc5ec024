//! `[calendar]`: the company's calendar, for the calendar periods published beside the
//! rolling windows (`month_to_date`, `previous_quarter`).

use std::time::Duration;

use kpi_core::calendar::{self, Calendar, CalendarSettings, PeriodKind, WeekStart};
use serde::Deserialize;

use super::{ConfigError, bounded_duration, invalid};

/// How long after its end a period still takes events. A closed period is final: the grace
/// is how long its value may still change after it has become `previous_<period>`.
const MAX_GRACE: Duration = Duration::from_secs(31 * 86_400);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// IANA time-zone name of the company's calendar (`Europe/Rome`), from the tz database
    /// built into the service.
    pub timezone: String,
    /// `monday` or `sunday`.
    pub week_start: String,
    /// Any of `day`, `week`, `month`, `quarter`, `year`; `[]` turns calendar periods off.
    pub periods: Vec<String>,
    /// How long after a period's end an event still counts into it.
    #[serde(deserialize_with = "super::duration")]
    pub grace: Duration,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            timezone: "UTC".into(),
            week_start: "monday".into(),
            periods: ["day", "month", "quarter"].map(String::from).to_vec(),
            grace: Duration::from_secs(3600),
        }
    }
}

impl CalendarConfig {
    /// The calendar of the configured periods, `None` when there are none. Every error
    /// names its key.
    pub fn calendar(&self) -> Result<Option<Calendar>, ConfigError> {
        let zone = calendar::time_zone(&self.timezone)
            .map_err(|e| invalid("calendar.timezone", e.to_string()))?;
        let week_start: WeekStart = self
            .week_start
            .parse()
            .map_err(|e: calendar::CalendarError| invalid("calendar.week_start", e.to_string()))?;
        let mut periods: Vec<PeriodKind> = Vec::new();
        for name in &self.periods {
            let period: PeriodKind = name
                .parse()
                .map_err(|e: calendar::CalendarError| invalid("calendar.periods", e.to_string()))?;
            if periods.contains(&period) {
                return Err(invalid(
                    "calendar.periods",
                    format!("{name:?} is listed twice"),
                ));
            }
            periods.push(period);
        }
        bounded_duration(
            "calendar.grace",
            self.grace,
            Duration::ZERO..=MAX_GRACE,
            "a closed period is final once its grace has passed",
        )?;
        if periods.is_empty() {
            return Ok(None);
        }
        let settings = CalendarSettings {
            zone,
            week_start,
            periods,
            grace_ms: self.grace.as_millis() as i64,
        };
        Calendar::new(settings)
            .map(Some)
            .map_err(|e| invalid("calendar.periods", e.to_string()))
    }
}
