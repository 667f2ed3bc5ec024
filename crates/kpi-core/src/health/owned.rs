//! The customers one instance owns: every part of their signals that the input partitions
//! wrote to the customer signals topic, brought together, scored, and the score's changes.
//!
//! The customer signals topic is partitioned by customer, so one instance (the owner of a
//! signals partition in its group) holds every part of each of its customers, from every
//! input partition that has its events: one surveys and one billing partition (those topics
//! are keyed by customer) and any number of tickets partitions. A part replaces the earlier
//! part of the same input partition, as compaction does; a customer whose every part is
//! gone (forgotten where its events are) is forgotten here.
//!
//! A customer is scored again when a part of it arrives, and every customer at once when
//! the caller asks (the signal window moves and tenure grows with time alone). A score is
//! news when its band changes or it moves by [`SCORE_STEP`] or more since last published,
//! so that tenure growing by a second does not republish a million customers.
//!
//! Pure: every time is an argument.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::customer::CustomerSignals;
use super::parts::CustomerPart;
use super::{Band, HealthModel, HealthScore, Signal, SignalValues};
use crate::billing::major;

/// The smallest move of a score that is published without a change of band: a tenth of a
/// point. The score is published at full precision; moves below this are not news.
pub const SCORE_STEP: f64 = 0.1;

/// A customer's health as published: on the customer health topic and `/customers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerHealth {
    pub customer_id: String,
    /// The weighted mean of the customer's signals' scores, and its band, with every
    /// signal's value, mapped score and contribution.
    pub score: HealthScore,
    /// The customer's MRR, in micros of the base currency.
    pub mrr: i64,
    /// The segment of the customer's latest event (billing first, then surveys, then
    /// tickets); `None` when its events carry none.
    pub segment: Option<String>,
    /// When the score or band last changed (Unix ms).
    pub changed_at_ms: i64,
    /// The signal whose change moved the score most at that change; `None` at a customer's
    /// first score.
    pub moved_by: Option<Signal>,
}

/// What the owner last published of a customer, with the signal values it was scored
/// from: kept in the customer signals topic, so that the next owner (a restart, a
/// rebalance) publishes only what changes after it, and explains it against these values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub health: CustomerHealth,
    pub values: SignalValues,
}

/// What a rescoring found for one customer: what is published now, or `None` when it has
/// no score any more (forgotten, or no signal with a weight left), and its band change.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChange {
    pub customer_id: String,
    pub published: Option<Published>,
    /// From and to, when the customer moved from one band to another.
    pub transition: Option<(Band, Band)>,
}

/// Customers and MRR of one band and segment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandTotal {
    pub customers: u64,
    /// Micros of the base currency, summed exactly.
    pub mrr: i128,
}

impl BandTotal {
    /// The MRR in base-currency major units.
    pub fn mrr_major(&self) -> f64 {
        major(self.mrr)
    }
}

#[derive(Debug, Clone, Default)]
struct OwnedCustomer {
    /// The signals partition the customer is read from.
    partition: i32,
    /// Each input partition's part, by the input partition's name (`topic:partition`).
    parts: Vec<(Box<str>, CustomerPart)>,
    /// What was last published.
    published: Option<Published>,
    /// A part arrived since the customer was last scored.
    dirty: bool,
}

impl OwnedCustomer {
    fn signals(&self) -> CustomerSignals {
        let mut merged = CustomerSignals::default();
        for (_, part) in &self.parts {
            merged.merge(&part.signals);
        }
        merged
    }

    /// The segment of the latest event, billing's first: what the customer pays for is
    /// where finance counts it.
    fn segment(&self) -> Option<String> {
        let family_rank = |part: &CustomerPart| {
            if part.signals.billing.is_some() {
                2
            } else if part.signals.surveys.is_some() {
                1
            } else {
                0
            }
        };
        self.parts
            .iter()
            .filter(|(_, part)| part.segment.is_some())
            .max_by_key(|(_, part)| (family_rank(part), part.last_event_ms))
            .and_then(|(_, part)| part.segment.clone())
    }
}

/// The customers of the signals partitions this instance owns.
#[derive(Debug, Default)]
pub struct OwnedCustomers {
    customers: HashMap<Box<str>, OwnedCustomer>,
    /// Customers forgotten since the last call of [`OwnedCustomers::take_forgotten`].
    forgotten: u64,
}

impl OwnedCustomers {
    /// A message of the signals topic: `part` of `customer_id` from input partition
    /// `source`, or `None` (a tombstone) when that input partition forgot the customer.
    pub fn receive(
        &mut self,
        partition: i32,
        customer_id: &str,
        source: &str,
        part: Option<CustomerPart>,
    ) {
        match part {
            Some(part) => {
                let customer = self.customers.entry(customer_id.into()).or_default();
                customer.partition = partition;
                customer.dirty = true;
                match customer.parts.iter_mut().find(|(s, _)| &**s == source) {
                    Some((_, mine)) => *mine = part,
                    None => customer.parts.push((source.into(), part)),
                }
            }
            None => {
                if let Some(customer) = self.customers.get_mut(customer_id) {
                    customer.parts.retain(|(s, _)| &**s != source);
                    customer.dirty = true;
                }
            }
        }
    }

    /// What an earlier owner published of `customer_id` (read back from the customer
    /// signals topic while restoring `partition`), or `None` when it published that the
    /// customer has no score: the next rescoring publishes only what differs from it.
    pub fn restore_published(
        &mut self,
        partition: i32,
        customer_id: &str,
        published: Option<Published>,
    ) {
        let customer = self.customers.entry(customer_id.into()).or_default();
        customer.partition = partition;
        customer.published = published;
        customer.dirty = true;
    }

    /// Drops the customers of a signals partition this instance no longer owns.
    pub fn drop_partition(&mut self, partition: i32) {
        self.customers.retain(|_, c| c.partition != partition);
    }

    /// Scores the customers a part of which arrived since, or every customer when `all`,
    /// at `now_ms`, among those of the partitions `ready` says are restored; the customers
    /// whose score is news, and those whose every part is gone (forgotten).
    pub fn rescore(
        &mut self,
        model: &HealthModel,
        bucket_ms: i64,
        now_ms: i64,
        all: bool,
        ready: impl Fn(i32) -> bool,
    ) -> Vec<HealthChange> {
        let mut changes = Vec::new();
        let mut gone = Vec::new();
        for (id, customer) in &mut self.customers {
            if !(customer.dirty || all) || !ready(customer.partition) {
                continue;
            }
            customer.dirty = false;
            if customer.parts.is_empty() {
                gone.push(id.clone());
                if customer.published.is_some() {
                    changes.push(HealthChange {
                        customer_id: id.to_string(),
                        published: None,
                        transition: None,
                    });
                }
                continue;
            }
            let signals = customer.signals();
            let values = signals.values(now_ms, bucket_ms);
            let Some(score) = model.score(&values) else {
                if customer.published.take().is_some() {
                    changes.push(HealthChange {
                        customer_id: id.to_string(),
                        published: None,
                        transition: None,
                    });
                }
                continue;
            };
            let mrr = signals.billing.as_ref().map_or(0, |b| b.mrr);
            let segment = customer.segment();
            let before = customer.published.as_ref();
            let news = before.is_none_or(|Published { health, .. }| {
                health.score.band != score.band
                    || (health.score.score - score.score).abs() >= SCORE_STEP
                    || health.segment != segment
                    || health.mrr != mrr
            });
            if !news {
                continue;
            }
            let moved = before.is_none_or(|Published { health, .. }| {
                health.score.band != score.band
                    || (health.score.score - score.score).abs() >= SCORE_STEP
            });
            let transition = before
                .map(|p| p.health.score.band)
                .filter(|band| *band != score.band)
                .map(|band| (band, score.band));
            let (changed_at_ms, moved_by) = match before {
                Some(Published { health, .. }) if !moved => (health.changed_at_ms, health.moved_by),
                Some(Published {
                    values: before_values,
                    ..
                }) => (now_ms, model.moved_by(before_values, &values)),
                None => (now_ms, None),
            };
            let health = CustomerHealth {
                customer_id: id.to_string(),
                score,
                mrr,
                segment,
                changed_at_ms,
                moved_by,
            };
            let published = Published { health, values };
            customer.published = Some(published.clone());
            changes.push(HealthChange {
                customer_id: id.to_string(),
                published: Some(published),
                transition,
            });
        }
        self.forgotten += gone.len() as u64;
        for id in gone {
            self.customers.remove(&id);
        }
        changes
    }

    /// The published health of `customer_id`, if this instance holds a score of it.
    pub fn get(&self, customer_id: &str) -> Option<&CustomerHealth> {
        self.customers
            .get(customer_id)?
            .published
            .as_ref()
            .map(|p| &p.health)
    }

    /// What was last published of `customer_id`, with the values it was scored from.
    pub fn published(&self, customer_id: &str) -> Option<&Published> {
        self.customers.get(customer_id)?.published.as_ref()
    }

    /// Whether this instance holds any part of `customer_id`.
    pub fn holds(&self, customer_id: &str) -> bool {
        self.customers.contains_key(customer_id)
    }

    /// Customers held, scored or not.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Customers forgotten since the last call.
    pub fn take_forgotten(&mut self) -> u64 {
        std::mem::take(&mut self.forgotten)
    }

    /// Customers and MRR by band and segment, over the scored customers: the key's segment
    /// is `None` for the band's total, and each customer with a segment counts in its
    /// segment's too.
    pub fn totals(&self) -> BTreeMap<(Band, Option<String>), BandTotal> {
        let mut totals: BTreeMap<(Band, Option<String>), BandTotal> = BTreeMap::new();
        for band in Band::ALL {
            totals.insert((band, None), BandTotal::default());
        }
        for Published { health, .. } in self.customers.values().filter_map(|c| c.published.as_ref())
        {
            let band = health.score.band;
            let mut add = |segment: Option<String>| {
                let total = totals.entry((band, segment)).or_default();
                total.customers += 1;
                total.mrr += i128::from(health.mrr);
            };
            add(None);
            if let Some(segment) = &health.segment {
                add(Some(segment.clone()));
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests;
