//! Conversion rates into the base currency, over time.
//!
//! The fixed rates of the configuration (`billing.rates`) hold from the beginning of time.
//! The rates topic (`billing.rates_topic`) adds rates that hold from an instant on
//! ([`RateChange`]): an amount is converted at the rate of its event's `occurred_at`, the
//! rate with the latest `valid_from` at or before it, or the fixed rate before the first.
//! The ledger keeps each subscription's converted MRR until its next event, as ChartMogul
//! does: a new rate alone converts nothing again, so it moves no MRR.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

use serde::Deserialize;

use crate::billing::{MICROS_PER_UNIT, Micros, out_of_range};
use crate::event::{self, Interval, Reason, Rejection, SubscriptionTerms};

/// Base-currency units per major unit of another currency: no currency is worth a billion
/// times another.
pub const RATE_BOUNDS: RangeInclusive<f64> = 1e-9..=1e9;

/// Rates are kept in millionths of a micro (1e-12 of a base unit), so that the rate of a
/// currency worth a ten-thousandth of the base (IDR, VND against USD) keeps nine significant
/// digits.
const RATE_SCALE: i128 = 1_000_000_000_000;

/// `rate` (within [`RATE_BOUNDS`]) in units of 1e-12.
fn scaled(rate: f64) -> i128 {
    (rate * RATE_SCALE as f64).round() as i128
}

/// Minor units per major unit of `code`: 10^exponent, 100 for a code ISO 4217 does not list.
fn minor_units(code: &str) -> i128 {
    let exponent = iso_currency::Currency::from_code(code)
        .and_then(|c| c.exponent())
        .unwrap_or(2);
    10i128.pow(u32::from(exponent))
}

/// One currency's rates.
#[derive(Debug, Clone)]
struct CurrencyRates {
    /// 10^exponent, looked up once here rather than per event.
    minor_units: i128,
    /// The configured rate, x 1e12: it holds before the first of `changes`.
    fixed: Option<i128>,
    /// (valid_from in Unix ms, rate x 1e12), ascending, one per valid_from.
    changes: Vec<(i64, i128)>,
}

impl CurrencyRates {
    fn new(code: &str, fixed: Option<i128>) -> Self {
        CurrencyRates {
            minor_units: minor_units(code),
            fixed,
            changes: Vec::new(),
        }
    }

    /// The rate valid at `at_ms`.
    fn at(&self, at_ms: i64) -> Option<i128> {
        let valid = self.changes.partition_point(|(from, _)| *from <= at_ms);
        match valid.checked_sub(1) {
            Some(latest) => Some(self.changes[latest].1),
            None => self.fixed,
        }
    }
}

/// Conversion rates into the base currency: the fixed ones, and those that hold from an
/// instant on.
#[derive(Debug, Clone)]
pub struct Rates {
    pub base: String,
    /// Keyed by currency code: the configured ones and ISO 4217 codes from the rates topic,
    /// a few hundred at most, so a fast hash cannot be made to degrade.
    currencies: HashMap<String, CurrencyRates, foldhash::fast::RandomState>,
    /// Rates from the rates topic held, every currency's.
    changes: usize,
}

impl Rates {
    /// `rates`: base-currency major units per major unit of each other currency, from the
    /// beginning of time.
    pub fn new(base: &str, rates: &BTreeMap<String, f64>) -> Self {
        let mut currencies: HashMap<String, CurrencyRates, _> = rates
            .iter()
            .map(|(code, rate)| (code.clone(), CurrencyRates::new(code, Some(scaled(*rate)))))
            .collect();
        currencies.insert(base.to_owned(), CurrencyRates::new(base, Some(RATE_SCALE)));
        Rates {
            base: base.to_owned(),
            currencies,
            changes: 0,
        }
    }

    /// Rates from the rates topic held.
    pub fn changes(&self) -> usize {
        self.changes
    }

    /// Adds a rate from its `valid_from` on; a rate with the same currency and `valid_from`
    /// is replaced (a correction). A rate for the base currency is rejected, and so is a new
    /// one when `max_changes` rates are held already (`too_many_rates`).
    pub fn insert(&mut self, change: &RateChange, max_changes: usize) -> Result<(), Rejection> {
        if change.currency == self.base {
            return Err(Rejection::new(
                Reason::InvalidValue,
                format!(
                    "{} is the base currency: its rate is 1, always",
                    change.currency
                ),
            ));
        }
        let full = self.changes >= max_changes;
        let rates = self
            .currencies
            .entry(change.currency.clone())
            .or_insert_with(|| CurrencyRates::new(&change.currency, None));
        let rate = scaled(change.rate);
        let at = rates
            .changes
            .partition_point(|(from, _)| *from < change.valid_from_ms);
        match rates.changes.get_mut(at) {
            Some((from, held)) if *from == change.valid_from_ms => *held = rate,
            _ if full => {
                return Err(Rejection::new(
                    Reason::TooManyRates,
                    format!("{max_changes} rates are held already (billing.max_rates)"),
                ));
            }
            _ => {
                rates.changes.insert(at, (change.valid_from_ms, rate));
                self.changes += 1;
            }
        }
        Ok(())
    }

    /// The monthly recurring revenue of `terms` in base-currency micros: price x quantity /
    /// months in the interval, converted at the rate valid at `at_ms`.
    pub fn mrr(&self, terms: &SubscriptionTerms<'_>, at_ms: i64) -> Result<Micros, Rejection> {
        let code = terms.currency.as_ref();
        let currency = self.currencies.get(code);
        let (rate, minor_units) = currency
            .and_then(|c| Some((c.at(at_ms)?, c.minor_units)))
            .ok_or_else(|| Rejection {
                reason: Reason::UnknownCurrency,
                detail: match currency {
                    Some(_) => format!("no rate from {code} to {} valid yet", self.base),
                    None => format!("no conversion rate from {code} to {}", self.base),
                },
            })?;
        let months = match terms.interval {
            Interval::Month => i128::from(terms.interval_count),
            Interval::Year => 12 * i128::from(terms.interval_count),
        };
        // price x quantity x rate / 10^exponent / months, in micros: x 1e6 / RATE_SCALE.
        let numerator = i128::from(terms.price)
            .checked_mul(i128::from(terms.quantity))
            .and_then(|n| n.checked_mul(rate))
            .ok_or_else(out_of_range)?;
        let denominator = minor_units * months * (RATE_SCALE / i128::from(MICROS_PER_UNIT));
        // Round half up; amounts are never negative.
        let micros = (2 * numerator + denominator) / (2 * denominator);
        i64::try_from(micros).map_err(|_| out_of_range())
    }
}

/// A message of the rates topic: `currency` is worth `rate` base-currency units from
/// `valid_from` on.
#[derive(Debug, Clone, PartialEq)]
pub struct RateChange {
    /// An ISO 4217 code.
    pub currency: String,
    /// Within [`RATE_BOUNDS`].
    pub rate: f64,
    pub valid_from_ms: i64,
}

/// The fields of a rate message; unknown ones are skipped, as an event's.
#[derive(Deserialize)]
struct WireRate {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    valid_from: Option<String>,
}

/// Parses and validates one message of the rates topic, at most `max_bytes` long, with the
/// event contract's reason codes.
pub fn parse_rate_change(bytes: &[u8], max_bytes: usize) -> Result<RateChange, Rejection> {
    let text = event::message_text(bytes, max_bytes)?;
    let wire: WireRate = event::read_any(text)?;
    let currency = event::required(wire.currency, "currency")?;
    let rate = event::required(wire.rate, "rate")?;
    let valid_from = event::required(wire.valid_from, "valid_from")?;
    let is_code = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !is_code || iso_currency::Currency::from_code(&currency).is_none() {
        return Err(Rejection::new(
            Reason::InvalidValue,
            format!(
                "field `currency` = {:?} is not an ISO 4217 code",
                event::truncate(currency, 40)
            ),
        ));
    }
    if !RATE_BOUNDS.contains(&rate) {
        return Err(Rejection::new(
            Reason::OutOfRange,
            format!(
                "rate {rate} is outside {}..={}: no currency is worth a billion times another",
                RATE_BOUNDS.start(),
                RATE_BOUNDS.end()
            ),
        ));
    }
    Ok(RateChange {
        currency,
        rate,
        valid_from_ms: event::parse_timestamp(&valid_from, "valid_from")?,
    })
}

#[cfg(test)]
mod tests;
