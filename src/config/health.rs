//! `[health]`: the customers' health: whether it is computed, the window its signals'
//! counts cover, how long a customer without an event, MRR or open ticket is kept, and the
//! score's model (each signal's mapping and weight, the bands).

use std::collections::BTreeMap;
use std::time::Duration;

use kpi_core::health::parts::SignalSettings;
use kpi_core::health::{Bands, HealthModel, Mapping, Signal, SignalRule, Threshold};
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
    /// Customers' signals, their scores and the health outputs; off, the input partitions
    /// keep no customer and no owner runs.
    pub enabled: bool,
    /// Tickets opened, CSAT answers, SLA breaches, MRR movements and failed payments count
    /// within it.
    #[serde(deserialize_with = "super::duration")]
    pub signal_window: Duration,
    /// A customer with no event for this long, no MRR and no open ticket is forgotten.
    #[serde(deserialize_with = "super::duration")]
    pub forget_after: Duration,
    /// The score's bands.
    pub bands: BandsConfig,
    /// Each signal's mapping and weight, by signal name; a signal not given keeps its
    /// default rule, a signal given with only a weight keeps its default mapping.
    pub signals: BTreeMap<String, SignalConfig>,
}

/// `[health.bands]`: a score at or above `healthy` is healthy, below `at_risk` at risk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandsConfig {
    pub healthy: f64,
    pub at_risk: f64,
}

impl Default for BandsConfig {
    fn default() -> Self {
        let bands = Bands::default();
        BandsConfig {
            healthy: bands.healthy(),
            at_risk: bands.at_risk(),
        }
    }
}

/// `[health.signals.<name>]`: a weight, and a mapping (`linear` or `thresholds`, not both).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub weight: Option<f64>,
    pub linear: Option<LinearConfig>,
    /// `[at_least, score]` pairs in ascending order of `at_least`.
    pub thresholds: Option<Vec<(f64, f64)>>,
}

/// A linear mapping: 0 at `zero`, 100 at `full`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    pub zero: f64,
    pub full: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let defaults = SignalSettings::default();
        HealthConfig {
            enabled: defaults.enabled,
            bands: BandsConfig::default(),
            signals: BTreeMap::new(),
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
            enabled: self.enabled,
            window_ms: self.signal_window.as_millis() as i64,
            forget_after_ms: self.forget_after.as_millis() as i64,
        })
    }

    /// The score's model: the default rules with the configured signals' replaced, each
    /// checked and named by its key.
    pub fn model(&self) -> Result<HealthModel, ConfigError> {
        if let Some(name) = self
            .signals
            .keys()
            .find(|name| !Signal::ALL.iter().any(|s| s.name() == name.as_str()))
        {
            let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
            return Err(invalid(
                &format!("health.signals.{name}"),
                format!("no such signal; the signals are {}", known.join(", ")),
            ));
        }
        let defaults = HealthModel::default();
        let mut rules: Vec<SignalRule> = Vec::with_capacity(Signal::ALL.len());
        for signal in Signal::ALL {
            let default = defaults.rule(signal);
            let Some(configured) = self.signals.get(signal.name()) else {
                rules.push(default.clone());
                continue;
            };
            let key = |field: &str| format!("health.signals.{}.{field}", signal.name());
            let mapping = match (&configured.linear, &configured.thresholds) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &key("linear"),
                        "a signal is mapped by `linear` or by `thresholds`, not both",
                    ));
                }
                (Some(linear), None) => Mapping::linear(linear.zero, linear.full)
                    .map_err(|e| invalid(&key("linear"), e.to_string()))?,
                (None, Some(steps)) => Mapping::thresholds(
                    steps
                        .iter()
                        .map(|&(at_least, score)| Threshold { at_least, score })
                        .collect(),
                )
                .map_err(|e| invalid(&key("thresholds"), e.to_string()))?,
                (None, None) => default.mapping.clone(),
            };
            let weight = configured.weight.unwrap_or(default.weight);
            rules.push(
                SignalRule::new(mapping, weight)
                    .map_err(|e| invalid(&key("weight"), e.to_string()))?,
            );
        }
        let bands = Bands::new(self.bands.healthy, self.bands.at_risk)
            .map_err(|e| invalid("health.bands", e.to_string()))?;
        let rules: [SignalRule; Signal::ALL.len()] = rules
            .try_into()
            .map_err(|_| invalid("health.signals", "one rule per signal"))?;
        HealthModel::new(rules, bands).map_err(|e| invalid("health.signals", e.to_string()))
    }
}
