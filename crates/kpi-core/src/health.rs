//! Customer health: each customer's signals mapped to 0-100, the score their weighted mean,
//! and the band the score falls in.
//!
//! The model is the one Gainsight's scorecards and Totango's health dimensions share: every
//! signal is mapped to 0-100 by ranges or thresholds, each has a weight, and a signal a
//! customer has no data for is left out of the mean rather than counted as 0, so that a
//! customer who never answered a survey is not scored as a detractor. The model is
//! configured (`[health]`), never hard-coded; [`HealthModel::default`] holds the documented
//! defaults (docs/health.md).
//!
//! Pure: the signal values come in, a [`HealthScore`] with every signal's part goes out,
//! so that a score can always be explained by the signals that make it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod customer;
pub mod owned;
pub mod parts;
pub mod signal_window;

/// One signal of a customer's health, from one event family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The customer's latest NPS answer, 0-10.
    Nps,
    /// The mean of the customer's CSAT answers within the signal window, 1-5.
    Csat,
    /// Tickets the customer opened within the signal window.
    TicketsOpened,
    /// The customer's tickets open now.
    TicketsOpen,
    /// First-reply and resolution SLA breaches of the customer's tickets within the
    /// signal window.
    SlaBreaches,
    /// The customer's net MRR change within the signal window (expansion less
    /// contraction), in percent of its MRR before them.
    MrrTrend,
    /// Delinquent churns (failed payments after dunning) within the signal window.
    PaymentFailures,
    /// Days since the customer last became a paying customer.
    TenureDays,
}

impl Signal {
    /// Every signal, in the order of a [`SignalValues`] array and of the configuration.
    pub const ALL: [Signal; 8] = [
        Signal::Nps,
        Signal::Csat,
        Signal::TicketsOpened,
        Signal::TicketsOpen,
        Signal::SlaBreaches,
        Signal::MrrTrend,
        Signal::PaymentFailures,
        Signal::TenureDays,
    ];

    /// The name in the configuration (`health.signals.<name>`), the health topic and
    /// `/customers/{id}`.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Nps => "nps",
            Signal::Csat => "csat",
            Signal::TicketsOpened => "tickets_opened",
            Signal::TicketsOpen => "tickets_open",
            Signal::SlaBreaches => "sla_breaches",
            Signal::MrrTrend => "mrr_trend",
            Signal::PaymentFailures => "payment_failures",
            Signal::TenureDays => "tenure_days",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One customer's signal values, indexed by [`Signal::ALL`]; `None` where the customer has
/// no data for a signal.
pub type SignalValues = [Option<f64>; Signal::ALL.len()];

/// Most thresholds one signal may have: a handful tell bands apart; more would only make a
/// configuration hard to read.
pub const MAX_THRESHOLDS: usize = 16;

/// The largest weight: weights are relative, so a bound keeps the sum far from any
/// rounding trouble without limiting what a configuration can express.
pub const MAX_WEIGHT: f64 = 1000.0;

/// How a signal's value becomes a score of 0-100.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    /// 0 at `zero`, 100 at `full`, linear between and clamped outside; `zero` above `full`
    /// maps a signal where less is better.
    Linear { zero: f64, full: f64 },
    /// Steps: the score of the last threshold whose value is at most the signal's; below
    /// the first threshold, the first threshold's score.
    Thresholds(Vec<Threshold>),
}

/// A step of [`Mapping::Thresholds`]: from `at_least` on, the signal scores `score`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub at_least: f64,
    pub score: f64,
}

/// What makes a [`Mapping`], a weight or the bands invalid; the configuration names the
/// key in front of it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("a linear mapping needs `zero` and `full` to differ")]
    EmptyRange,
    #[error("needs between 1 and {MAX_THRESHOLDS} thresholds")]
    ThresholdCount,
    #[error("thresholds must be in strictly ascending order of `at_least`")]
    ThresholdOrder,
    #[error("a score must be between 0 and 100")]
    ScoreRange,
    #[error("a weight must be between 0 and {MAX_WEIGHT}")]
    WeightRange,
    #[error("at least one signal needs a weight above 0")]
    NoWeight,
    #[error("needs 0 <= at_risk < healthy <= 100")]
    BandOrder,
}

fn finite(value: f64) -> Result<f64, ModelError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ModelError::NotFinite)
    }
}

fn score_in_range(score: f64) -> Result<f64, ModelError> {
    if (0.0..=100.0).contains(&finite(score)?) {
        Ok(score)
    } else {
        Err(ModelError::ScoreRange)
    }
}

impl Mapping {
    /// A linear mapping, checked.
    pub fn linear(zero: f64, full: f64) -> Result<Self, ModelError> {
        if finite(zero)? == finite(full)? {
            return Err(ModelError::EmptyRange);
        }
        Ok(Mapping::Linear { zero, full })
    }

    /// A step mapping, checked: finite values in strictly ascending order, scores in
    /// 0-100.
    pub fn thresholds(steps: Vec<Threshold>) -> Result<Self, ModelError> {
        if steps.is_empty() || steps.len() > MAX_THRESHOLDS {
            return Err(ModelError::ThresholdCount);
        }
        for step in &steps {
            finite(step.at_least)?;
            score_in_range(step.score)?;
        }
        if steps.windows(2).any(|w| w[0].at_least >= w[1].at_least) {
            return Err(ModelError::ThresholdOrder);
        }
        Ok(Mapping::Thresholds(steps))
    }

    /// The score of `value`, 0-100.
    pub fn score(&self, value: f64) -> f64 {
        match self {
            Mapping::Linear { zero, full } => {
                (100.0 * (value - zero) / (full - zero)).clamp(0.0, 100.0)
            }
            Mapping::Thresholds(steps) => {
                // Ascending (checked at construction): the steps at or below the value
                // come first.
                let reached = steps.partition_point(|s| s.at_least <= value);
                steps[reached.saturating_sub(1)].score
            }
        }
    }
}

/// One signal's part in the model: its mapping and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRule {
    pub mapping: Mapping,
    pub weight: f64,
}

impl SignalRule {
    /// A rule, its weight checked.
    pub fn new(mapping: Mapping, weight: f64) -> Result<Self, ModelError> {
        if !(0.0..=MAX_WEIGHT).contains(&finite(weight)?) {
            return Err(ModelError::WeightRange);
        }
        Ok(SignalRule { mapping, weight })
    }
}

/// Where a score falls: healthy, neutral or at risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Healthy,
    Neutral,
    AtRisk,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Healthy, Band::Neutral, Band::AtRisk];

    /// The label value on `/metrics` and the name on the health topic.
    pub const fn name(self) -> &'static str {
        match self {
            Band::Healthy => "healthy",
            Band::Neutral => "neutral",
            Band::AtRisk => "at_risk",
        }
    }
}

/// The score limits of the bands: `healthy` from `healthy` up, `at_risk` below `at_risk`,
/// `neutral` between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    healthy: f64,
    at_risk: f64,
}

impl Bands {
    /// The lowest healthy score.
    pub fn healthy(&self) -> f64 {
        self.healthy
    }

    /// The lowest score that is not at risk.
    pub fn at_risk(&self) -> f64 {
        self.at_risk
    }

    /// The bands, checked: `0 <= at_risk < healthy <= 100`.
    pub fn new(healthy: f64, at_risk: f64) -> Result<Self, ModelError> {
        let (healthy, at_risk) = (finite(healthy)?, finite(at_risk)?);
        if !(0.0 <= at_risk && at_risk < healthy && healthy <= 100.0) {
            return Err(ModelError::BandOrder);
        }
        Ok(Bands { healthy, at_risk })
    }

    /// The band of `score`.
    pub fn of(&self, score: f64) -> Band {
        if score >= self.healthy {
            Band::Healthy
        } else if score < self.at_risk {
            Band::AtRisk
        } else {
            Band::Neutral
        }
    }
}

impl Default for Bands {
    /// Healthy from 70, at risk below 40: Totango's Good/Average/Poor split.
    fn default() -> Self {
        Bands {
            healthy: 70.0,
            at_risk: 40.0,
        }
    }
}

/// The whole model: a rule per signal and the bands.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthModel {
    /// Indexed by [`Signal::ALL`].
    rules: [SignalRule; Signal::ALL.len()],
    bands: Bands,
}

/// One signal's part in a customer's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SignalScore {
    pub signal: Signal,
    /// The signal's value.
    pub value: f64,
    /// Its score, 0-100.
    pub mapped: f64,
    /// What it adds to the score: its weight share times its score.
    pub contribution: f64,
}

/// A customer's score and how it is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthScore {
    /// The weighted mean of the mapped signals the customer has, 0-100.
    pub score: f64,
    pub band: Band,
    /// The signals the customer has and a weight above 0 gives a part, in the order of
    /// [`Signal::ALL`]; their contributions add up to the score.
    pub signals: Vec<SignalScore>,
}

impl HealthModel {
    /// A model, checked: at least one signal must weigh.
    pub fn new(rules: [SignalRule; Signal::ALL.len()], bands: Bands) -> Result<Self, ModelError> {
        if rules.iter().all(|r| r.weight == 0.0) {
            return Err(ModelError::NoWeight);
        }
        Ok(HealthModel { rules, bands })
    }

    /// The rule of `signal`.
    pub fn rule(&self, signal: Signal) -> &SignalRule {
        &self.rules[signal.index()]
    }

    /// The score of a customer with `values`; `None` when it has no weighted signal at all,
    /// since a score from nothing would put an unknown customer in a band.
    pub fn score(&self, values: &SignalValues) -> Option<HealthScore> {
        let present = || {
            Signal::ALL.into_iter().filter_map(|signal| {
                let rule = self.rule(signal);
                let value = values[signal.index()].filter(|v| v.is_finite())?;
                (rule.weight > 0.0).then_some((signal, rule, value))
            })
        };
        let total_weight: f64 = present().map(|(_, rule, _)| rule.weight).sum();
        if total_weight == 0.0 {
            return None;
        }
        let signals: Vec<SignalScore> = present()
            .map(|(signal, rule, value)| {
                let mapped = rule.mapping.score(value);
                SignalScore {
                    signal,
                    value,
                    mapped,
                    contribution: rule.weight / total_weight * mapped,
                }
            })
            .collect();
        // The weights' shares add up to 1, so the mean of scores in 0-100 is in 0-100 but
        // for rounding, which must not push a score out of its range or band.
        let score = signals
            .iter()
            .map(|s| s.contribution)
            .sum::<f64>()
            .clamp(0.0, 100.0);
        Some(HealthScore {
            score,
            band: self.bands.of(score),
            signals,
        })
    }
}

impl HealthModel {
    /// The signal that moved a customer's score most from `before` to `after`: the one
    /// whose change alone, undone, would take the score furthest back. Shares of the other
    /// signals' weights move whenever a signal comes or goes, so comparing contributions
    /// would blame a signal that did not change. A signal that alone makes the score (there
    /// was none without it) moved it. `None` when no signal changed or there is no score.
    pub fn moved_by(&self, before: &SignalValues, after: &SignalValues) -> Option<Signal> {
        let now = self.score(after)?.score;
        let mut undone = *after;
        Signal::ALL
            .into_iter()
            .filter(|signal| before[signal.index()] != after[signal.index()])
            .map(|signal| {
                let i = signal.index();
                undone[i] = before[i];
                let without = self.score(&undone).map(|s| s.score);
                undone[i] = after[i];
                (signal, without.map_or(f64::INFINITY, |w| (now - w).abs()))
            })
            // The first of equal effects, in the order of Signal::ALL, so the answer is
            // stable.
            .fold(
                None,
                |best: Option<(Signal, f64)>, (signal, effect)| match best {
                    Some((_, most)) if most >= effect => best,
                    _ => Some((signal, effect)),
                },
            )
            .map(|(signal, _)| signal)
    }
}

fn steps(points: &[(f64, f64)]) -> Mapping {
    Mapping::Thresholds(
        points
            .iter()
            .map(|&(at_least, score)| Threshold { at_least, score })
            .collect(),
    )
}

impl Default for HealthModel {
    /// The documented defaults (docs/health.md, with the reasoning): good, average and poor
    /// at 100, 60 and 0 as Totango scores them; what the customer says and whether it pays
    /// weigh most.
    fn default() -> Self {
        let rule = |mapping, weight| SignalRule { mapping, weight };
        HealthModel {
            rules: [
                // Detractor, passive, promoter.
                rule(steps(&[(0.0, 0.0), (7.0, 60.0), (9.0, 100.0)]), 3.0),
                // Unsatisfied below 3.5, satisfied from 4.5.
                rule(steps(&[(1.0, 0.0), (3.5, 60.0), (4.5, 100.0)]), 2.0),
                rule(steps(&[(0.0, 100.0), (3.0, 60.0), (6.0, 0.0)]), 1.0),
                rule(steps(&[(0.0, 100.0), (1.0, 60.0), (3.0, 0.0)]), 1.0),
                rule(steps(&[(0.0, 100.0), (1.0, 60.0), (2.0, 0.0)]), 2.0),
                // Contraction of more than a tenth is poor; flat or growing is good.
                rule(steps(&[(-100.0, 0.0), (-10.0, 60.0), (0.0, 100.0)]), 2.0),
                rule(steps(&[(0.0, 100.0), (1.0, 0.0)]), 3.0),
                // The first quarter is onboarding, when churn is likeliest.
                rule(steps(&[(0.0, 40.0), (90.0, 70.0), (365.0, 100.0)]), 1.0),
            ],
            bands: Bands::default(),
        }
    }
}

#[cfg(test)]
mod tests;
