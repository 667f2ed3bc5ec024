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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::customer::{BillingPart, CustomerSignals, SurveyPart, TicketPart};
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

/// One input partition's part of a customer: one family's, as the owner keeps it.
#[derive(Debug, Clone)]
enum FamilyPart {
    Surveys(SurveyPart),
    Tickets(TicketPart),
    Billing(BillingPart),
}

impl FamilyPart {
    /// The family part of a part as written (which has one).
    fn of(signals: CustomerSignals) -> Option<Self> {
        let CustomerSignals {
            surveys,
            tickets,
            billing,
        } = signals;
        surveys
            .map(FamilyPart::Surveys)
            .or(tickets.map(FamilyPart::Tickets))
            .or(billing.map(FamilyPart::Billing))
    }

    fn add_to(&self, signals: &mut CustomerSignals) {
        match self {
            FamilyPart::Surveys(part) => signals.add_surveys(part),
            FamilyPart::Tickets(part) => signals.add_tickets(part),
            FamilyPart::Billing(part) => signals.add_billing(part),
        }
    }

    /// Which family's segment a customer takes first: billing's (what the customer pays
    /// for is where finance counts it), then surveys', then tickets'.
    fn segment_rank(&self) -> u8 {
        match self {
            FamilyPart::Billing(_) => 2,
            FamilyPart::Surveys(_) => 1,
            FamilyPart::Tickets(_) => 0,
        }
    }
}

#[derive(Debug, Clone)]
struct SourcePart {
    /// The input partition, as an index into [`OwnedCustomers::sources`].
    source: u32,
    part: FamilyPart,
    /// Shared among the customers of a segment.
    segment: Option<Arc<str>>,
    last_event_ms: i64,
    /// The part counts its input partition's events below this offset.
    through_offset: i64,
}

/// What was last published of a customer, in the fewest bytes: the signals' scores and
/// contributions are computed again from the values when asked for.
#[derive(Debug, Clone)]
struct Scored {
    score: f64,
    band: Band,
    values: SignalValues,
    mrr: i64,
    segment: Option<Arc<str>>,
    changed_at_ms: i64,
    moved_by: Option<Signal>,
}

impl Scored {
    fn published(&self, customer_id: &str, model: &HealthModel) -> Published {
        let signals = model
            .score(&self.values)
            .map(|s| s.signals)
            .unwrap_or_default();
        Published {
            health: CustomerHealth {
                customer_id: customer_id.to_owned(),
                score: HealthScore {
                    score: self.score,
                    band: self.band,
                    signals,
                },
                mrr: self.mrr,
                segment: self.segment.as_deref().map(str::to_owned),
                changed_at_ms: self.changed_at_ms,
                moved_by: self.moved_by,
            },
            values: self.values,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct OwnedCustomer {
    /// The signals partition the customer is read from.
    partition: i32,
    /// A part arrived since the customer was last scored.
    dirty: bool,
    /// Each input partition's part.
    parts: Vec<SourcePart>,
    /// What was last published.
    published: Option<Scored>,
}

impl OwnedCustomer {
    fn signals(&self) -> CustomerSignals {
        let mut merged = CustomerSignals::default();
        for part in &self.parts {
            part.part.add_to(&mut merged);
        }
        merged
    }

    /// The segment of the latest event, billing's first.
    fn segment(&self) -> Option<Arc<str>> {
        self.parts
            .iter()
            .filter(|part| part.segment.is_some())
            .max_by_key(|part| (part.part.segment_rank(), part.last_event_ms))
            .and_then(|part| part.segment.clone())
    }
}

/// The customers of the signals partitions this instance owns.
#[derive(Debug, Default)]
pub struct OwnedCustomers {
    customers: HashMap<Box<str>, OwnedCustomer>,
    /// The input partitions' names (`topic:partition`), each once.
    sources: Vec<Box<str>>,
    source_index: HashMap<Box<str>, u32>,
    /// The segments, each once.
    segments: HashSet<Arc<str>>,
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
        let source = self.source(source);
        match part {
            Some(part) => {
                let Some(family) = FamilyPart::of(part.signals) else {
                    return;
                };
                let segment = part.segment.map(|s| self.segment(&s));
                let part = SourcePart {
                    source,
                    part: family,
                    segment,
                    last_event_ms: part.last_event_ms,
                    through_offset: part.through_offset,
                };
                let customer = self.customers.entry(customer_id.into()).or_default();
                customer.partition = partition;
                customer.dirty = true;
                match customer.parts.iter_mut().find(|p| p.source == source) {
                    // A part older than the one held (a former reader's late write, after
                    // the partition's new reader wrote) is not kept.
                    Some(mine) if part.through_offset >= mine.through_offset => *mine = part,
                    Some(_) => {}
                    None => customer.parts.push(part),
                }
            }
            None => {
                if let Some(customer) = self.customers.get_mut(customer_id) {
                    customer.parts.retain(|p| p.source != source);
                    customer.dirty = true;
                }
            }
        }
    }

    fn source(&mut self, name: &str) -> u32 {
        if let Some(index) = self.source_index.get(name) {
            return *index;
        }
        let index = self.sources.len() as u32;
        self.sources.push(name.into());
        self.source_index.insert(name.into(), index);
        index
    }

    fn segment(&mut self, name: &str) -> Arc<str> {
        if let Some(segment) = self.segments.get(name) {
            return segment.clone();
        }
        let segment: Arc<str> = name.into();
        self.segments.insert(segment.clone());
        segment
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
        let scored = published.map(|p| Scored {
            score: p.health.score.score,
            band: p.health.score.band,
            values: p.values,
            mrr: p.health.mrr,
            segment: p.health.segment.map(|s| self.segment(&s)),
            changed_at_ms: p.health.changed_at_ms,
            moved_by: p.health.moved_by,
        });
        // A customer published as unscored is only cleared: no entry is made for it.
        let customer = match scored {
            Some(_) => self.customers.entry(customer_id.into()).or_default(),
            None => match self.customers.get_mut(customer_id) {
                Some(customer) => customer,
                None => return,
            },
        };
        customer.partition = partition;
        customer.published = scored;
        customer.dirty = true;
    }

    /// Drops the customers of a signals partition this instance no longer owns, and the
    /// segments no customer has any more.
    pub fn drop_partition(&mut self, partition: i32) {
        self.customers.retain(|_, c| c.partition != partition);
        self.prune_segments();
    }

    fn prune_segments(&mut self) {
        self.segments
            .retain(|segment| Arc::strong_count(segment) > 1);
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
            let unpublished = |id: &str| HealthChange {
                customer_id: id.to_owned(),
                published: None,
                transition: None,
            };
            if customer.parts.is_empty() {
                gone.push(id.clone());
                if customer.published.is_some() {
                    changes.push(unpublished(id));
                }
                continue;
            }
            let signals = customer.signals();
            let values = signals.values(now_ms, bucket_ms);
            let Some(score) = model.score(&values) else {
                if customer.published.take().is_some() {
                    changes.push(unpublished(id));
                }
                continue;
            };
            let mrr = signals.billing.as_ref().map_or(0, |b| b.mrr);
            let segment = customer.segment();
            let before = customer.published.as_ref();
            let moved = before.is_none_or(|b| {
                b.band != score.band || (b.score - score.score).abs() >= SCORE_STEP
            });
            let news = moved || before.is_none_or(|b| b.segment != segment || b.mrr != mrr);
            if !news {
                continue;
            }
            let transition = before
                .map(|b| b.band)
                .filter(|band| *band != score.band)
                .map(|band| (band, score.band));
            let (changed_at_ms, moved_by) = match before {
                Some(b) if !moved => (b.changed_at_ms, b.moved_by),
                Some(b) => (now_ms, model.moved_by(&b.values, &values)),
                None => (now_ms, None),
            };
            let scored = Scored {
                score: score.score,
                band: score.band,
                values,
                mrr,
                segment,
                changed_at_ms,
                moved_by,
            };
            let published = Published {
                health: CustomerHealth {
                    customer_id: id.to_string(),
                    score,
                    mrr,
                    segment: scored.segment.as_deref().map(str::to_owned),
                    changed_at_ms,
                    moved_by,
                },
                values,
            };
            customer.published = Some(scored);
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
        if all {
            self.prune_segments();
        }
        changes
    }

    /// What was last published of `customer_id`, with the values it was scored from, if
    /// this instance holds a score of it; the signals' scores computed by `model`.
    pub fn published(&self, customer_id: &str, model: &HealthModel) -> Option<Published> {
        let scored = self.customers.get(customer_id)?.published.as_ref()?;
        Some(scored.published(customer_id, model))
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
        for scored in self.customers.values().filter_map(|c| c.published.as_ref()) {
            let mut add = |segment: Option<String>| {
                let total = totals.entry((scored.band, segment)).or_default();
                total.customers += 1;
                total.mrr += i128::from(scored.mrr);
            };
            add(None);
            if let Some(segment) = &scored.segment {
                add(Some(segment.to_string()));
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests;
