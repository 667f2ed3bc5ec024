//! Subscription billing: the ledger of current MRR per customer, MRR movements, and the
//! revenue KPIs computed from them.
//!
//! Money is kept as integer millionths of the base currency's major unit ([`Micros`]), so
//! sums over customers, buckets and partitions are exact and independent of their order.
//!
//! No sum can overflow, by construction rather than by luck: one subscription's, one
//! customer's and one partition's current MRR are each at most [`Micros::MAX`] (an event that
//! would exceed that is rejected, `out_of_range`, before it changes anything), and every sum
//! of amounts over events, buckets or partitions is a [`MicrosSum`] (i128): it adds values
//! below 2^63 in magnitude, so it would take 2^64 of them, far more events than a process
//! can ever read, to reach its limit.
//! Every change of a customer's MRR is classified as one movement, the way ChartMogul does,
//! from the customer's MRR before and after the event. The formulas live here and nowhere
//! else.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{CancelReason, Event, Payload, Reason, Rejection};
use crate::rates::Rates;
use crate::window::Tally;

/// Millionths of one major unit of the base currency: one amount (a subscription's,
/// customer's or partition's current MRR, one movement).
pub type Micros = i64;

/// A sum of [`Micros`] amounts over events, buckets or partitions: wide enough that it
/// cannot overflow (see the module documentation).
pub type MicrosSum = i128;

pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// The rejection of an amount beyond [`Micros`].
pub(crate) fn out_of_range() -> Rejection {
    Rejection {
        reason: Reason::OutOfRange,
        detail: "the MRR is out of range".into(),
    }
}

/// How one change of a customer's MRR counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// 0 to more, for a customer who never paid before.
    New,
    /// 0 to more, for a customer who paid before and churned.
    Reactivation,
    /// Up, from more than 0.
    Expansion,
    /// Down, staying above 0.
    Contraction,
    /// More than 0 to 0.
    Churn,
}

/// Classifies a change of a customer's MRR from `before` to `after`.
pub fn classify(before: Micros, after: Micros, ever_paid: bool) -> Option<Movement> {
    match (before > 0, after > 0) {
        (false, true) if ever_paid => Some(Movement::Reactivation),
        (false, true) => Some(Movement::New),
        (true, false) => Some(Movement::Churn),
        (true, true) if after > before => Some(Movement::Expansion),
        (true, true) if after < before => Some(Movement::Contraction),
        _ => None,
    }
}

/// What one billing event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MrrChange {
    pub movement: Option<Movement>,
    /// Absolute MRR change of the customer.
    pub amount: Micros,
    pub renewal: bool,
    pub cancellation: bool,
    /// Why the subscription was canceled; voluntary for every other event, so that a
    /// customer whose last subscription is changed to a price of 0 churns voluntarily.
    pub reason: CancelReason,
    /// A subscription became active: new, or started again after its cancellation.
    pub subscription_started: bool,
}

impl MrrChange {
    const NONE: MrrChange = MrrChange {
        movement: None,
        amount: 0,
        renewal: false,
        cancellation: false,
        reason: CancelReason::Voluntary,
        subscription_started: false,
    };
}

/// A customer that an event put in other series than its previous event did: where it
/// counted before, and what it carried from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved<S> {
    pub from: S,
    /// Its MRR before the event (0 for a customer with free subscriptions only).
    pub mrr: Micros,
    /// Its active subscriptions before the event.
    pub subscriptions: u64,
}

/// A billing event applied to the ledger: its change, and, when the event put a customer
/// with MRR or active subscriptions in other series than its previous event did (a new
/// segment, say), what it carried from where it counted before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<S> {
    pub change: MrrChange,
    pub moved_from: Option<Moved<S>>,
    /// The `occurred_at` of the event that last took the customer's MRR from 0 to above 0:
    /// the customer has been active without a break since then (until this event, for a
    /// churn).
    pub active_since_ms: i64,
    /// The customer's series after the event, as the ledger keeps it.
    pub series: S,
    /// The customer whose MRR the event changed: the one that owns the subscription,
    /// whatever customer the event names.
    pub customer_id: Arc<str>,
    /// That customer's MRR after the event.
    pub mrr: Micros,
}

/// Where a customer's values count, as the ledger keeps it between its events. Equal
/// series are the same place; a series that replaces another may keep what it remembers
/// of the customer where the two agree (since when it counts there, say).
pub trait CustomerSeries: Clone + PartialEq {
    /// `self` replaces `previous` as the customer's series.
    fn succeed(&mut self, previous: &Self);
}

/// The places of the ledger's tests: one series, or one segment name.
#[cfg(test)]
impl CustomerSeries for () {
    fn succeed(&mut self, _previous: &Self) {}
}

#[cfg(test)]
impl CustomerSeries for &str {
    fn succeed(&mut self, _previous: &Self) {}
}

#[derive(Debug, Clone)]
struct Customer<S> {
    /// Shared with [`BillingLedger::customer_ids`]: one copy of the id.
    id: Arc<str>,
    mrr: Micros,
    ever_paid: bool,
    /// Subscriptions started and not canceled, free ones included.
    subscriptions: u64,
    /// See [`Applied::active_since_ms`]; meaningless while the MRR is 0.
    active_since_ms: i64,
    /// The series of the customer's latest event, where its current MRR counts.
    series: S,
}

impl<S> Customer<S> {
    fn new(id: Arc<str>, series: S) -> Self {
        Customer {
            id,
            mrr: 0,
            ever_paid: false,
            subscriptions: 0,
            active_since_ms: i64::MIN,
            series,
        }
    }
}

/// The partition's total MRR after a customer at `before` changes by `delta`; both the
/// customer's new MRR and the new total must fit.
fn checked_total(before: Micros, total: Micros, delta: Micros) -> Result<Micros, Rejection> {
    before.checked_add(delta).ok_or_else(out_of_range)?;
    total.checked_add(delta).ok_or_else(out_of_range)
}

#[derive(Debug, Clone)]
struct Subscription {
    /// The customer's position in [`BillingLedger::customers`]: an event for a known
    /// subscription finds its customer without hashing the customer id again.
    customer: usize,
    mrr: Micros,
    /// Canceled and not started again: it can no longer change, renew or cancel.
    canceled: bool,
}

/// Current MRR of every customer and subscription of one partition. `S` is where a
/// customer's current values are reported (its KPI series).
#[derive(Debug, Clone)]
pub struct BillingLedger<S> {
    /// Every customer that ever had a subscription here, in the order they came; never
    /// removed, so a position stays valid.
    customers: Vec<Customer<S>>,
    /// The position in `customers` of each customer id: one copy of an id however many
    /// subscriptions it has.
    customer_ids: HashMap<Arc<str>, usize>,
    subscriptions: HashMap<Box<str>, Subscription>,
    /// The sum of every customer's MRR, kept within [`Micros`] so that each series' current
    /// MRR (a part of it) fits too.
    total: Micros,
}

impl<S> Default for BillingLedger<S> {
    fn default() -> Self {
        BillingLedger {
            customers: Vec::new(),
            customer_ids: HashMap::new(),
            subscriptions: HashMap::new(),
            total: 0,
        }
    }
}

/// The subscription an event other than `subscription.started` refers to must have started
/// and not be canceled.
fn check_active(subscription: Option<&Subscription>, id: &str) -> Result<(), Rejection> {
    match subscription {
        None => Err(Rejection {
            reason: Reason::UnknownSubscription,
            detail: format!("no subscription.started was seen for subscription {id:?}"),
        }),
        Some(s) if s.canceled => Err(Rejection {
            reason: Reason::CanceledSubscription,
            detail: format!(
                "subscription {id:?} was canceled; only a subscription.started brings it back"
            ),
        }),
        Some(_) => Ok(()),
    }
}

impl<S: CustomerSeries> BillingLedger<S> {
    /// Applies a billing event; `series` is where the customer's values count from now on.
    /// A change, renewal or cancellation of an unknown or canceled subscription is rejected:
    /// a second cancellation would count twice, and a renewal of a dead subscription would
    /// raise the renewal rate.
    pub fn apply(
        &mut self,
        event: &Event<'_>,
        rates: &Rates,
        series: S,
    ) -> Result<Applied<S>, Rejection> {
        let mut reason = CancelReason::Voluntary;
        let (subscription_id, terms, renewal, cancellation) = match &event.payload {
            Payload::SubscriptionStarted(terms) | Payload::SubscriptionChanged(terms) => {
                (terms.subscription_id.as_ref(), Some(terms), false, false)
            }
            Payload::SubscriptionCanceled {
                subscription_id,
                reason: why,
            } => {
                reason = *why;
                (subscription_id.as_ref(), None, false, true)
            }
            Payload::SubscriptionRenewed { subscription_id } => {
                (subscription_id.as_ref(), None, true, false)
            }
            _ => {
                // No subscription changes: the customer the event names, as it is.
                let id = event.customer_id.as_ref();
                let known = self.customer_ids.get_key_value(id);
                return Ok(Applied {
                    change: MrrChange::NONE,
                    moved_from: None,
                    active_since_ms: event.occurred_at_ms,
                    series,
                    customer_id: known.map_or_else(|| id.into(), |(id, _)| id.clone()),
                    mrr: known.map_or(0, |(_, &position)| self.customers[position].mrr),
                });
            }
        };
        let BillingLedger {
            customers,
            customer_ids,
            subscriptions,
            total,
        } = self;
        // One lookup of the subscription decides the rejections, the owner and the old MRR;
        // the same entry is then updated.
        let subscription = subscriptions.get_mut(subscription_id);
        if !matches!(event.payload, Payload::SubscriptionStarted(_)) {
            check_active(subscription.as_deref(), subscription_id)?;
        }
        let new_mrr = match terms {
            Some(terms) => Some(rates.mrr(terms, event.occurred_at_ms)?),
            None => cancellation.then_some(0),
        };
        let old_mrr = subscription.as_ref().map_or(0, |s| s.mrr);
        // Both MRRs are in 0..=Micros::MAX, so their difference fits; the customer's and the
        // partition's new totals are checked before anything changes: a rejected event
        // leaves no trace.
        let delta = new_mrr.map_or(0, |m| m - old_mrr);
        // Only a start reaches a canceled subscription (checked above).
        let subscription_started = subscription.as_ref().is_none_or(|s| s.canceled);
        let customer = match subscription {
            Some(subscription) => {
                let customer = &mut customers[subscription.customer];
                *total = checked_total(customer.mrr, *total, delta)?;
                subscription.mrr += delta;
                subscription.canceled = cancellation;
                customer
            }
            None => {
                let id = event.customer_id.as_ref();
                let known = customer_ids.get(id).copied();
                let before = known.map_or(0, |position| customers[position].mrr);
                *total = checked_total(before, *total, delta)?;
                let position = known.unwrap_or_else(|| {
                    let id: Arc<str> = id.into();
                    customer_ids.insert(id.clone(), customers.len());
                    customers.push(Customer::new(id, series.clone()));
                    customers.len() - 1
                });
                subscriptions.insert(
                    subscription_id.into(),
                    Subscription {
                        customer: position,
                        mrr: delta,
                        canceled: cancellation,
                    },
                );
                &mut customers[position]
            }
        };
        let before = customer.mrr;
        let after = before + delta;
        let movement = classify(before, after, customer.ever_paid);
        customer.mrr = after;
        customer.ever_paid |= after > 0;
        if before == 0 && after > 0 {
            customer.active_since_ms = event.occurred_at_ms;
        }
        let subscriptions_before = customer.subscriptions;
        customer.subscriptions =
            subscriptions_before + u64::from(subscription_started) - u64::from(cancellation);
        let moved_from = if customer.series == series {
            None
        } else {
            let mut series = series;
            series.succeed(&customer.series);
            let previous = std::mem::replace(&mut customer.series, series);
            (before > 0 || subscriptions_before > 0).then_some(Moved {
                from: previous,
                mrr: before,
                subscriptions: subscriptions_before,
            })
        };
        Ok(Applied {
            change: MrrChange {
                movement,
                amount: (after - before).abs(),
                renewal,
                cancellation,
                reason,
                subscription_started,
            },
            moved_from,
            active_since_ms: customer.active_since_ms,
            series: customer.series.clone(),
            customer_id: customer.id.clone(),
            mrr: customer.mrr,
        })
    }

    /// Whether `subscription_id` was started and not canceled since.
    pub fn is_active(&self, subscription_id: &str) -> bool {
        self.subscriptions
            .get(subscription_id)
            .is_some_and(|s| !s.canceled)
    }

    /// Every customer's current MRR and active subscriptions with its series.
    pub fn customers(&self) -> impl Iterator<Item = (Micros, u64, &S)> {
        self.customers
            .iter()
            .map(|c| (c.mrr, c.subscriptions, &c.series))
    }
}

/// Billing activity in a bucket: movement amounts and counts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingTally {
    pub new: MicrosSum,
    pub reactivation: MicrosSum,
    pub expansion: MicrosSum,
    pub contraction: MicrosSum,
    pub churn: MicrosSum,
    pub expansions: u64,
    pub contractions: u64,
    pub new_customers: u64,
    pub reactivated_customers: u64,
    pub churned_customers: u64,
    pub renewals: u64,
    pub cancellations: u64,
    /// MRR and active customers that came from or left for another series of the same
    /// dimension (a customer whose segment changed): neither new business nor churn, but
    /// part of what the series held at the start of a window. Absent in components written
    /// before they existed.
    #[serde(default)]
    pub moved_in: MicrosSum,
    #[serde(default)]
    pub moved_out: MicrosSum,
    #[serde(default)]
    pub moved_in_customers: u64,
    #[serde(default)]
    pub moved_out_customers: u64,
    /// The part of `churn` and `churned_customers` whose last subscription was canceled as
    /// delinquent (failed payment); the rest is voluntary.
    #[serde(default)]
    pub churn_delinquent: MicrosSum,
    #[serde(default)]
    pub churned_customers_delinquent: u64,
    /// Subscriptions that became active (new, or started again after a cancellation).
    #[serde(default)]
    pub subscriptions_started: u64,
    /// Active subscriptions that came from or left for another series with their customer.
    #[serde(default)]
    pub moved_in_subscriptions: u64,
    #[serde(default)]
    pub moved_out_subscriptions: u64,
    /// Contraction and churn MRR of customers that joined the series in this bucket,
    /// wherever the loss itself counts (see `aggregate`): what gross revenue retention
    /// leaves out of a window holding this bucket.
    #[serde(default)]
    pub joiner_losses: MicrosSum,
    /// Trials begun (at their `subscription.trial_started`), converted (at the
    /// `subscription.started` of their subscription, no later than their deadline) and
    /// expired (at their deadline, once the partition's event time passed it), each in the
    /// series of the trial's `subscription.trial_started`.
    #[serde(default)]
    pub trials_started: u64,
    #[serde(default)]
    pub trials_converted: u64,
    #[serde(default)]
    pub trials_expired: u64,
}

impl Tally for BillingTally {
    fn merge(&mut self, o: &Self) {
        self.new += o.new;
        self.reactivation += o.reactivation;
        self.expansion += o.expansion;
        self.contraction += o.contraction;
        self.churn += o.churn;
        self.expansions += o.expansions;
        self.contractions += o.contractions;
        self.new_customers += o.new_customers;
        self.reactivated_customers += o.reactivated_customers;
        self.churned_customers += o.churned_customers;
        self.renewals += o.renewals;
        self.cancellations += o.cancellations;
        self.moved_in += o.moved_in;
        self.moved_out += o.moved_out;
        self.moved_in_customers += o.moved_in_customers;
        self.moved_out_customers += o.moved_out_customers;
        self.churn_delinquent += o.churn_delinquent;
        self.churned_customers_delinquent += o.churned_customers_delinquent;
        self.subscriptions_started += o.subscriptions_started;
        self.moved_in_subscriptions += o.moved_in_subscriptions;
        self.moved_out_subscriptions += o.moved_out_subscriptions;
        self.joiner_losses += o.joiner_losses;
        self.trials_started += o.trials_started;
        self.trials_converted += o.trials_converted;
        self.trials_expired += o.trials_expired;
    }
}

impl BillingTally {
    pub fn record(&mut self, change: &MrrChange) {
        match change.movement {
            Some(Movement::New) => {
                self.new += MicrosSum::from(change.amount);
                self.new_customers += 1;
            }
            Some(Movement::Reactivation) => {
                self.reactivation += MicrosSum::from(change.amount);
                self.reactivated_customers += 1;
            }
            Some(Movement::Expansion) => {
                self.expansion += MicrosSum::from(change.amount);
                self.expansions += 1;
            }
            Some(Movement::Contraction) => {
                self.contraction += MicrosSum::from(change.amount);
                self.contractions += 1;
            }
            Some(Movement::Churn) => {
                self.churn += MicrosSum::from(change.amount);
                self.churned_customers += 1;
                if change.reason == CancelReason::Delinquent {
                    self.churn_delinquent += MicrosSum::from(change.amount);
                    self.churned_customers_delinquent += 1;
                }
            }
            None => {}
        }
        self.renewals += u64::from(change.renewal);
        self.cancellations += u64::from(change.cancellation);
        self.subscriptions_started += u64::from(change.subscription_started);
    }

    /// A customer with `mrr` and `subscriptions` joined this series from another.
    pub fn record_move_in(&mut self, mrr: Micros, subscriptions: u64) {
        self.moved_in += MicrosSum::from(mrr);
        self.moved_in_customers += u64::from(mrr > 0);
        self.moved_in_subscriptions += subscriptions;
    }

    /// A customer with `mrr` and `subscriptions` left this series for another.
    pub fn record_move_out(&mut self, mrr: Micros, subscriptions: u64) {
        self.moved_out += MicrosSum::from(mrr);
        self.moved_out_customers += u64::from(mrr > 0);
        self.moved_out_subscriptions += subscriptions;
    }

    /// Churned MRR and customers in W whose last cancellation had `reason`.
    pub fn churn_by(&self, reason: CancelReason) -> (MicrosSum, u64) {
        match reason {
            CancelReason::Delinquent => (self.churn_delinquent, self.churned_customers_delinquent),
            CancelReason::Voluntary => (
                self.churn - self.churn_delinquent,
                self.churned_customers - self.churned_customers_delinquent,
            ),
        }
    }

    /// SaaS quick ratio = (new + reactivation + expansion) / (contraction + churn) MRR in
    /// W; `None` when nothing was lost.
    pub fn quick_ratio(&self) -> Option<f64> {
        let lost = self.contraction + self.churn;
        (lost > 0).then(|| (self.new + self.reactivation + self.expansion) as f64 / lost as f64)
    }

    /// A contraction or churn of `amount` by a customer that joined the series (became
    /// active, or moved in) in this bucket.
    pub fn record_joiner_loss(&mut self, amount: Micros) {
        self.joiner_losses += MicrosSum::from(amount);
    }

    /// Contraction and churn MRR in W of the customers active in the series at its start:
    /// every loss in W less those of customers that joined it in W.
    pub fn losses_of_customers_at_start(&self) -> MicrosSum {
        self.contraction + self.churn - self.joiner_losses
    }

    /// Customers who joined the series in the window: new, reactivated or moved in.
    pub fn acquired_customers(&self) -> u64 {
        self.new_customers + self.reactivated_customers + self.moved_in_customers
    }

    /// Movements of every kind in W.
    pub fn movements(&self) -> u64 {
        self.new_customers
            + self.reactivated_customers
            + self.expansions
            + self.contractions
            + self.churned_customers
    }

    /// Trial conversion = trials converted in W / trials that ended in W (converted or
    /// expired); `None` when none ended.
    pub fn trial_conversion_ratio(&self) -> Option<f64> {
        let ended = self.trials_converted + self.trials_expired;
        (ended > 0).then(|| self.trials_converted as f64 / ended as f64)
    }

    /// Net new MRR = new + reactivation + expansion - contraction - churn.
    pub fn net_new(&self) -> MicrosSum {
        self.new + self.reactivation + self.expansion - self.contraction - self.churn
    }
}

/// Current totals of a series: MRR, customers whose MRR is above 0, and active
/// subscriptions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub mrr: MicrosSum,
    pub active_customers: u64,
    /// Absent in components written before it existed.
    #[serde(default)]
    pub active_subscriptions: u64,
    /// Trials pending: begun, and neither converted nor expired yet.
    #[serde(default)]
    pub active_trials: u64,
}

impl Current {
    /// Adds a customer with `mrr` and `subscriptions` active.
    pub fn add(&mut self, mrr: Micros, subscriptions: u64) {
        if mrr > 0 {
            self.mrr += MicrosSum::from(mrr);
            self.active_customers += 1;
        }
        self.active_subscriptions += subscriptions;
    }

    /// Adds the totals of other customers (another partition's).
    pub fn merge(&mut self, other: &Current) {
        self.mrr += other.mrr;
        self.active_customers += other.active_customers;
        self.active_subscriptions += other.active_subscriptions;
        self.active_trials += other.active_trials;
    }

    /// ARPA = MRR / active customers, in base-currency micros; `None` without customers.
    pub fn arpa(&self) -> Option<f64> {
        (self.active_customers > 0).then(|| self.mrr as f64 / self.active_customers as f64)
    }
}

/// The MRR and active customers of a series at the end of a window: the current ones for a
/// window that ends now, those at its end for a closed calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtEnd {
    pub mrr: MicrosSum,
    pub active_customers: i64,
    pub active_subscriptions: i64,
}

impl From<&Current> for AtEnd {
    fn from(current: &Current) -> Self {
        AtEnd {
            mrr: current.mrr,
            active_customers: i64::try_from(current.active_customers).unwrap_or(i64::MAX),
            active_subscriptions: i64::try_from(current.active_subscriptions).unwrap_or(i64::MAX),
        }
    }
}

/// The revenue KPIs of one window, from its activity and the state at its end. The state at
/// the start of the window is the state at its end minus the window's changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowRevenue {
    pub mrr_at_start: MicrosSum,
    pub active_at_start: i64,
    pub active_at_end: i64,
    /// Subscriptions active at the start of W: active at its end, less those started or
    /// moved in during W, plus those canceled or moved out.
    pub subscriptions_at_start: i64,
}

impl WindowRevenue {
    /// A window that ends now: its start is the current state less every change inside the
    /// window, movements and customers moved in or out of the series.
    pub fn new(current: &Current, window: &BillingTally) -> Self {
        WindowRevenue::ending_at(AtEnd::from(current), window)
    }

    /// A window whose end state is `end`. A closed calendar period ends where the same
    /// period's to-date window starts, so its end is the current state less that window's
    /// changes ([`WindowRevenue::at_start`]).
    pub fn ending_at(end: AtEnd, window: &BillingTally) -> Self {
        let active_at_end = end.active_customers;
        WindowRevenue {
            mrr_at_start: end.mrr - window.net_new() - window.moved_in + window.moved_out,
            active_at_start: active_at_end - window.acquired_customers() as i64
                + window.churned_customers as i64
                + window.moved_out_customers as i64,
            active_at_end,
            subscriptions_at_start: end.active_subscriptions
                - window.subscriptions_started as i64
                - window.moved_in_subscriptions as i64
                + window.cancellations as i64
                + window.moved_out_subscriptions as i64,
        }
    }

    /// The state at the window's start.
    pub fn at_start(&self) -> AtEnd {
        AtEnd {
            mrr: self.mrr_at_start,
            active_customers: self.active_at_start,
            active_subscriptions: self.subscriptions_at_start,
        }
    }

    /// Customers churned in W / active customers at the start of W.
    pub fn customer_churn_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.active_at_start > 0).then(|| w.churned_customers as f64 / self.active_at_start as f64)
    }

    /// Customers churned in W whose last cancellation had `reason` / active customers at
    /// the start of W: the parts add up to [`WindowRevenue::customer_churn_ratio`].
    pub fn customer_churn_ratio_by(&self, w: &BillingTally, reason: CancelReason) -> Option<f64> {
        let (_, churned) = w.churn_by(reason);
        (self.active_at_start > 0).then(|| churned as f64 / self.active_at_start as f64)
    }

    /// Gross revenue retention = (MRR at start − contraction − churn of the customers
    /// active at the start of W) / MRR at start: at most 1.
    pub fn gross_revenue_retention_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.mrr_at_start > 0).then(|| {
            (self.mrr_at_start - w.losses_of_customers_at_start()) as f64 / self.mrr_at_start as f64
        })
    }

    /// Subscriptions canceled in W / subscriptions active at the start of W.
    pub fn subscription_churn_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.subscriptions_at_start > 0)
            .then(|| w.cancellations as f64 / self.subscriptions_at_start as f64)
    }

    /// (Churn + contraction MRR in W) / MRR at the start of W.
    pub fn revenue_churn_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.mrr_at_start > 0).then(|| (w.churn + w.contraction) as f64 / self.mrr_at_start as f64)
    }

    /// (MRR at start + expansion - contraction - churn) / MRR at start.
    pub fn net_revenue_retention_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.mrr_at_start > 0).then(|| {
            (self.mrr_at_start + w.expansion - w.contraction - w.churn) as f64
                / self.mrr_at_start as f64
        })
    }

    /// (E - N) / S: customers active at the end, less those acquired in W (new, reactivated
    /// and moved in), over those active at the start.
    pub fn customer_retention_ratio(&self, w: &BillingTally) -> Option<f64> {
        (self.active_at_start > 0).then(|| {
            (self.active_at_end - w.acquired_customers() as i64) as f64
                / self.active_at_start as f64
        })
    }
}

/// Renewals / (renewals + cancellations) in W.
pub fn renewal_ratio(w: &BillingTally) -> Option<f64> {
    let due = w.renewals + w.cancellations;
    (due > 0).then(|| w.renewals as f64 / due as f64)
}

/// CLV = ARPA / customer churn ratio; `None` when either is undefined or the ratio is 0.
pub fn clv(arpa: Option<f64>, churn_ratio: Option<f64>) -> Option<f64> {
    match (arpa, churn_ratio) {
        (Some(arpa), Some(churn)) if churn > 0.0 => Some(arpa / churn),
        _ => None,
    }
}

/// Micros as base-currency major units.
pub fn major(micros: MicrosSum) -> f64 {
    micros as f64 / MICROS_PER_UNIT as f64
}

#[cfg(test)]
pub(crate) mod tests;
