//! The customer signals one input partition's events make: per customer, that family's part
//! of its signals ([`CustomerSignals`] with one part set), kept where the events are read
//! and taken when they change.
//!
//! A surveys or billing partition holds every event of its customers (those topics are
//! keyed by customer); a tickets partition holds the tickets keyed to it, so a customer's
//! ticket part is spread over the tickets partitions and adds up wherever the parts meet
//! ([`CustomerSignals::merge`]). What a customer keeps here is small and of fixed size (its
//! id, one part of sums over a ring of buckets, its latest event time), and a customer with
//! no event for `forget_after`, no MRR and no open ticket is forgotten, so a partition holds
//! the customers active within that time.
//!
//! Customers are found by a 64-bit hash of their id, keyed at random per partition, as
//! ticket and event ids are: the open tickets keep it to find a ticket's customer when the
//! ticket is dropped for its age, and a producer cannot craft ids that collide.
//!
//! Pure: every time is an argument.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use nohash_hasher::IntMap;
use serde::{Deserialize, Serialize};

use super::customer::{BillingPart, CustomerSignals, NpsAnswer, SurveyPart, TicketPart};
use super::signal_window::SIGNAL_BUCKETS;
use crate::billing::{Applied, Movement};
use crate::event::{CancelReason, Family, Survey};
use crate::open_tickets::OpenChange;

const DAY_MS: i64 = 86_400_000;

/// Sweeps for forgotten customers per `forget_after`: a customer is forgotten at most this
/// fraction of the time after it became forgettable.
const SWEEPS_PER_FORGET: i64 = 64;

/// The time a customer's windowed signals cover, and how long an idle customer is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalSettings {
    /// Whether customers' signals are kept at all (`health.enabled`): off, a partition
    /// spends nothing on them.
    pub enabled: bool,
    /// The signal window (`health.signal_window`): tickets opened, CSAT answers, MRR
    /// movements and failed payments count within it.
    pub window_ms: i64,
    /// A customer with no event for this long, no MRR and no open ticket is forgotten
    /// (`health.forget_after`). At least the window, so that what is forgotten has left the
    /// window already.
    pub forget_after_ms: i64,
}

impl Default for SignalSettings {
    /// 90 days of signals, a customer forgotten after 400 days: a quarter of activity,
    /// and a yearly customer's renewal with room to spare.
    fn default() -> Self {
        SignalSettings {
            enabled: true,
            window_ms: 90 * DAY_MS,
            forget_after_ms: 400 * DAY_MS,
        }
    }
}

impl SignalSettings {
    /// The span of one bucket of a [`super::signal_window::SignalWindow`].
    pub fn bucket_ms(&self) -> i64 {
        (self.window_ms / SIGNAL_BUCKETS as i64).max(1)
    }
}

/// A customer as one partition's signals and open tickets know it: the keyed hash of its
/// id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CustomerKey(pub(crate) u64);

/// What one ticket event did to its customer's signals besides the open tickets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketSignal {
    /// A `ticket.opened`: counted in the tickets opened at the event's time.
    pub opened: bool,
    /// A first reply or a resolution judged to have breached its SLA target, at the time
    /// it was judged (the reply's, or the resolution's).
    pub breached_at_ms: Option<i64>,
}

/// The event a signal hook is called for: whose it is, when it happened and where it is in
/// its partition.
#[derive(Debug, Clone, Copy)]
pub struct CustomerEvent<'a> {
    /// The key of `customer_id`, from [`PartitionSignals::key`].
    pub key: CustomerKey,
    pub customer_id: &'a str,
    /// The event's `segment`, which the customer takes from its latest event.
    pub segment: Option<&'a str>,
    pub at_ms: i64,
    /// The event's offset: an event below a restored part's offset is in that part already.
    pub offset: i64,
    pub event_id: &'a str,
}

/// A detractor's answer, to be followed up: an NPS answer of 0-6 or a CSAT answer of 1-2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetractorAnswer {
    pub customer_id: Arc<str>,
    pub event_id: String,
    pub survey: Survey,
    pub score: u8,
    pub comment: Option<String>,
    pub answered_at_ms: i64,
    /// The answer's offset in its partition: no two answers share it.
    pub offset: i64,
}

/// The longest comment a detractor's answer carries to the feedback topic, in bytes: a
/// comment as long as an event may be would make a message the broker refuses. A longer
/// one is cut at a character boundary.
pub const MAX_COMMENT_BYTES: usize = 8192;

/// `comment`, cut to at most [`MAX_COMMENT_BYTES`] at a character boundary.
fn bounded_comment(comment: &str) -> String {
    let mut end = comment.len().min(MAX_COMMENT_BYTES);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    comment[..end].to_owned()
}

/// Whether an answer of `score` to `survey` is a detractor's.
pub fn is_detractor(survey: Survey, score: u8) -> bool {
    match survey {
        Survey::Nps => score <= 6,
        Survey::Csat => score <= 2,
        Survey::Ces => false,
    }
}

/// A customer's part as one partition holds it: what is written to the customer signals
/// topic, and restored from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerPart {
    /// One family's part (the others are `None`).
    pub signals: CustomerSignals,
    /// The `segment` of the customer's latest event here.
    pub segment: Option<String>,
    /// The latest `occurred_at` of the customer's events here.
    pub last_event_ms: i64,
    /// The part counts every event of the customer below this offset of its partition, and
    /// none above: a replay after restoring it skips the events below.
    pub through_offset: i64,
}

/// A customer whose part changed since the parts were last taken: the part, or `None` once
/// the customer is forgotten.
#[derive(Debug, Clone, PartialEq)]
pub struct PartChange {
    pub customer_id: Arc<str>,
    pub part: Option<CustomerPart>,
}

/// One family's part of a customer's signals.
trait Part: Default + Clone {
    /// Whether the part keeps its customer however long it is idle: MRR or an open ticket
    /// is a signal of now, not of the window.
    fn holds_customer(&self) -> bool;

    /// The part's place among a customer's signals.
    fn place(signals: &mut CustomerSignals) -> &mut Option<Self>;

    /// The part as a customer's signals with this part alone.
    fn signals(&self) -> CustomerSignals {
        let mut signals = CustomerSignals::default();
        *Self::place(&mut signals) = Some(self.clone());
        signals
    }
}

impl Part for SurveyPart {
    fn holds_customer(&self) -> bool {
        false
    }

    fn place(signals: &mut CustomerSignals) -> &mut Option<Self> {
        &mut signals.surveys
    }
}

impl Part for TicketPart {
    fn holds_customer(&self) -> bool {
        self.open > 0
    }

    fn place(signals: &mut CustomerSignals) -> &mut Option<Self> {
        &mut signals.tickets
    }
}

impl Part for BillingPart {
    fn holds_customer(&self) -> bool {
        self.mrr > 0
    }

    fn place(signals: &mut CustomerSignals) -> &mut Option<Self> {
        &mut signals.billing
    }
}

#[derive(Debug, Clone)]
struct Customer<P> {
    id: Arc<str>,
    part: P,
    /// The segment of the customer's latest event here.
    segment: Option<Arc<str>>,
    /// The latest `occurred_at` of the customer's applied events here.
    last_event_ms: i64,
    /// Events below this offset are in the part already (it was restored).
    restored_through: i64,
    /// Changed since the parts were last taken.
    changed: bool,
}

impl<P: Part> Customer<P> {
    /// The customer's part as written, counting the events below `through_offset`.
    fn written(&self, through_offset: i64) -> CustomerPart {
        CustomerPart {
            signals: self.part.signals(),
            segment: self.segment.as_deref().map(str::to_owned),
            last_event_ms: self.last_event_ms,
            through_offset,
        }
    }
}

/// The customers of one partition, with the part of its family.
#[derive(Debug, Clone)]
struct Customers<P> {
    customers: IntMap<u64, Customer<P>>,
    /// The keys of the customers whose `changed` is set, each once.
    changed: Vec<u64>,
}

impl<P> Default for Customers<P> {
    fn default() -> Self {
        Customers {
            customers: IntMap::default(),
            changed: Vec::new(),
        }
    }
}

impl<P: Part> Customers<P> {
    /// Applies `event` to the customer of `key`: `update` changes the part and says whether
    /// it did. A customer seen for the first time starts with an empty part, which is a
    /// change; an event its restored part counts already changes nothing, and the customer
    /// is returned only when the event applied.
    fn update(
        &mut self,
        key: CustomerKey,
        event: &CustomerEvent<'_>,
        id: impl FnOnce() -> Arc<str>,
        update: impl FnOnce(&mut P) -> bool,
    ) -> Option<Arc<str>> {
        let mut created = false;
        let customer = self.customers.entry(key.0).or_insert_with(|| {
            created = true;
            Customer {
                id: id(),
                part: P::default(),
                segment: None,
                last_event_ms: event.at_ms,
                restored_through: i64::MIN,
                changed: false,
            }
        });
        if event.offset < customer.restored_through {
            return None;
        }
        // The customer takes the segment of its latest event; allocated only when it moves,
        // and a move is a change to write, whatever the signals do.
        let moved =
            event.at_ms >= customer.last_event_ms && customer.segment.as_deref() != event.segment;
        if moved {
            customer.segment = event.segment.map(Arc::from);
        }
        customer.last_event_ms = customer.last_event_ms.max(event.at_ms);
        let changed = update(&mut customer.part) || created || moved;
        Self::mark(&mut self.changed, key.0, customer, changed);
        Some(customer.id.clone())
    }

    /// Changes the part of a customer known here, for the event at `offset`; one not known
    /// (forgotten) is left alone.
    fn update_known(&mut self, key: CustomerKey, offset: i64, update: impl FnOnce(&mut P) -> bool) {
        if let Some(customer) = self.customers.get_mut(&key.0)
            && offset >= customer.restored_through
        {
            let changed = update(&mut customer.part);
            Self::mark(&mut self.changed, key.0, customer, changed);
        }
    }

    /// Puts a restored part in place, replacing what the customer had.
    fn restore(&mut self, key: CustomerKey, customer_id: &str, mut part: CustomerPart) {
        let Some(restored) = P::place(&mut part.signals).take() else {
            return;
        };
        self.customers.insert(
            key.0,
            Customer {
                id: customer_id.into(),
                part: restored,
                segment: part.segment.map(Arc::from),
                last_event_ms: part.last_event_ms,
                restored_through: part.through_offset,
                changed: false,
            },
        );
    }

    fn mark(list: &mut Vec<u64>, key: u64, customer: &mut Customer<P>, changed: bool) {
        if changed && !customer.changed {
            customer.changed = true;
            list.push(key);
        }
    }

    /// Forgets the customers with no event after `idle_before_ms` that nothing holds, into
    /// `taken` as `None`.
    fn forget(&mut self, idle_before_ms: i64, taken: &mut Vec<PartChange>) {
        self.customers.retain(|_, customer| {
            let keep = customer.last_event_ms > idle_before_ms || customer.part.holds_customer();
            if !keep {
                taken.push(PartChange {
                    customer_id: customer.id.clone(),
                    part: None,
                });
            }
            keep
        });
    }

    /// The parts changed since the last call, counting the events below `through_offset`,
    /// into `taken`.
    fn take_changed(&mut self, through_offset: i64, taken: &mut Vec<PartChange>) {
        for key in self.changed.drain(..) {
            // A forgotten customer's key stays in the list; its tombstone is taken already.
            if let Some(customer) = self.customers.get_mut(&key) {
                customer.changed = false;
                taken.push(PartChange {
                    customer_id: customer.id.clone(),
                    part: Some(customer.written(through_offset)),
                });
            }
        }
    }

    fn get(&self, key: CustomerKey) -> Option<CustomerPart> {
        self.customers.get(&key.0).map(|c| c.written(i64::MAX))
    }

    fn len(&self) -> usize {
        self.customers.len()
    }
}

/// `$body` with `$customers` of whichever family the partition's are.
macro_rules! each_family {
    ($family:expr, $customers:ident => $body:expr) => {
        match $family {
            FamilyCustomers::Surveys($customers) => $body,
            FamilyCustomers::Tickets($customers) => $body,
            FamilyCustomers::Billing($customers) => $body,
        }
    };
}

/// The customers of a partition of each family.
#[derive(Debug, Clone)]
enum FamilyCustomers {
    Surveys(Customers<SurveyPart>),
    Tickets(Customers<TicketPart>),
    Billing(Customers<BillingPart>),
}

/// The customer signals of one input partition.
#[derive(Debug, Clone)]
pub struct PartitionSignals {
    keys: RandomState,
    /// Off (`health.enabled = false`): no customer is kept and every hook returns at once.
    enabled: bool,
    bucket_ms: i64,
    forget_after_ms: i64,
    /// Forgotten customers are looked for from this time of the clock on.
    next_sweep_ms: i64,
    customers: FamilyCustomers,
    /// Detractors' answers applied since they were last taken.
    detractors: Vec<DetractorAnswer>,
    /// Answers below this offset were followed up before (a replay's): not kept.
    detractors_from: i64,
}

impl PartitionSignals {
    /// The signals of a partition of `family`; events of other families change nothing.
    pub fn new(family: Family, settings: SignalSettings) -> Self {
        let customers = match family {
            Family::Surveys => FamilyCustomers::Surveys(Customers::default()),
            Family::Tickets => FamilyCustomers::Tickets(Customers::default()),
            Family::Billing => FamilyCustomers::Billing(Customers::default()),
        };
        PartitionSignals {
            keys: RandomState::new(),
            enabled: settings.enabled,
            bucket_ms: settings.bucket_ms(),
            forget_after_ms: settings.forget_after_ms.max(1),
            next_sweep_ms: i64::MIN,
            customers,
            detractors: Vec::new(),
            detractors_from: i64::MIN,
        }
    }

    /// The key under which this partition keeps `customer_id`; computed once per event
    /// (the default key when signals are off).
    pub fn key(&self, customer_id: &str) -> CustomerKey {
        if !self.enabled {
            return CustomerKey::default();
        }
        CustomerKey(self.keys.hash_one(customer_id))
    }

    /// A survey answer of `score`: an NPS answer is the latest if no answer here is later,
    /// a CSAT answer counts in the window; CES is no signal. A detractor's answer is kept
    /// to be taken, and changes the part (its offset must be written with it, so that a
    /// replay does not take it again).
    pub fn answered(
        &mut self,
        event: &CustomerEvent<'_>,
        survey: Survey,
        score: u8,
        comment: Option<&str>,
    ) {
        let FamilyCustomers::Surveys(customers) = &mut self.customers else {
            return;
        };
        if !self.enabled {
            return;
        }
        let bucket_ms = self.bucket_ms;
        let at_ms = event.at_ms;
        let detractor = is_detractor(survey, score);
        let applied = customers.update(
            event.key,
            event,
            || event.customer_id.into(),
            |part| match survey {
                Survey::Nps => {
                    // Ties at one instant go to the higher score, as merging parts decides.
                    let latest = part.latest_nps.max(Some(NpsAnswer { at_ms, score }));
                    std::mem::replace(&mut part.latest_nps, latest) != latest || detractor
                }
                Survey::Csat => {
                    part.csat_points.add(at_ms, bucket_ms, u32::from(score));
                    part.csat_answers.add(at_ms, bucket_ms, 1);
                    true
                }
                Survey::Ces => false,
            },
        );
        if let Some(customer_id) =
            applied.filter(|_| detractor && event.offset >= self.detractors_from)
        {
            self.detractors.push(DetractorAnswer {
                customer_id,
                event_id: event.event_id.to_owned(),
                survey,
                score,
                comment: comment.map(bounded_comment),
                answered_at_ms: at_ms,
                offset: event.offset,
            });
        }
    }

    /// Keeps detractors' answers from `offset` on only: those below were counted before, by
    /// the run whose replay this is, so a replay holds none of them in memory.
    pub fn keep_detractors_from(&mut self, offset: i64) {
        self.detractors_from = offset;
    }

    /// The detractors' answers applied since the last call, in the order applied.
    pub fn take_detractors(&mut self) -> Vec<DetractorAnswer> {
        std::mem::take(&mut self.detractors)
    }

    /// A ticket event, and the changes of the partition's open tickets it made: a ticket
    /// that became open or left counts for the customer the ticket was opened for, whoever
    /// the event names.
    pub fn ticket(
        &mut self,
        event: &CustomerEvent<'_>,
        signal: TicketSignal,
        open_changes: impl IntoIterator<Item = OpenChange>,
    ) {
        let FamilyCustomers::Tickets(customers) = &mut self.customers else {
            return;
        };
        if !self.enabled {
            return;
        }
        let bucket_ms = self.bucket_ms;
        customers.update(
            event.key,
            event,
            || event.customer_id.into(),
            |part| {
                if signal.opened {
                    part.opened.add(event.at_ms, bucket_ms, 1);
                }
                if let Some(breached_at_ms) = signal.breached_at_ms {
                    part.sla_breaches.add(breached_at_ms, bucket_ms, 1);
                }
                signal.opened || signal.breached_at_ms.is_some()
            },
        );
        for change in open_changes {
            customers.update_known(change.customer, event.offset, |part| {
                part.open = if change.opened {
                    part.open.saturating_add(1)
                } else {
                    part.open.saturating_sub(1)
                };
                true
            });
        }
    }

    /// A subscription event that the ledger applied: its MRR change counts for the customer
    /// that owns the subscription (`applied.customer_id`), whoever the event names.
    pub fn billed<S>(&mut self, event: &CustomerEvent<'_>, applied: &Applied<S>) {
        if !self.enabled {
            return;
        }
        let key = if *applied.customer_id == *event.customer_id {
            event.key
        } else {
            self.key(&applied.customer_id)
        };
        let FamilyCustomers::Billing(customers) = &mut self.customers else {
            return;
        };
        let bucket_ms = self.bucket_ms;
        let at_ms = event.at_ms;
        let change = &applied.change;
        customers.update(
            key,
            event,
            || applied.customer_id.clone(),
            |part| {
                let trend = match change.movement {
                    Some(Movement::Expansion) => change.amount,
                    Some(Movement::Contraction) => -change.amount,
                    _ => 0,
                };
                if trend != 0 {
                    part.mrr_change.add(at_ms, bucket_ms, trend);
                }
                let failed = change.cancellation && change.reason == CancelReason::Delinquent;
                if failed {
                    part.payment_failures.add(at_ms, bucket_ms, 1);
                }
                let paying_since_ms = (applied.mrr > 0).then_some(applied.active_since_ms);
                let moved = part.mrr != applied.mrr || part.paying_since_ms != paying_since_ms;
                part.mrr = applied.mrr;
                part.paying_since_ms = paying_since_ms;
                moved || trend != 0 || failed
            },
        );
    }

    /// Puts the parts written earlier (restored from the customer signals topic) in place,
    /// before the partition's replay: the replay then skips, for each customer, the events
    /// its part counts already. A part of another family is ignored.
    pub fn restore(&mut self, parts: impl IntoIterator<Item = (Arc<str>, CustomerPart)>) {
        if !self.enabled {
            return;
        }
        for (customer_id, part) in parts {
            let key = self.key(&customer_id);
            each_family!(&mut self.customers, c => c.restore(key, &customer_id, part));
        }
    }

    /// The parts changed since the last call, each counting the events below
    /// `through_offset` (the partition's next offset), and `None` for the customers
    /// forgotten since: no event for `forget_after` at `now_ms`, and no MRR or open ticket.
    /// Each customer once, a tombstone never beside a part.
    pub fn take_changes(&mut self, now_ms: i64, through_offset: i64) -> Vec<PartChange> {
        let mut taken = Vec::new();
        if !self.enabled {
            return taken;
        }
        if now_ms >= self.next_sweep_ms {
            let idle_before_ms = now_ms.saturating_sub(self.forget_after_ms);
            each_family!(&mut self.customers, c => c.forget(idle_before_ms, &mut taken));
            self.next_sweep_ms =
                now_ms.saturating_add((self.forget_after_ms / SWEEPS_PER_FORGET).max(1));
        }
        each_family!(&mut self.customers, c => c.take_changed(through_offset, &mut taken));
        taken
    }

    /// The part of `customer_id` this partition holds.
    pub fn get(&self, customer_id: &str) -> Option<CustomerPart> {
        let key = self.key(customer_id);
        each_family!(&self.customers, c => c.get(key))
    }

    /// Customers held.
    pub fn len(&self) -> usize {
        each_family!(&self.customers, c => c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_comment_is_cut_at_a_character_boundary() {
        assert_eq!(bounded_comment("short"), "short");
        let long = "é".repeat(MAX_COMMENT_BYTES);
        let cut = bounded_comment(&long);
        assert_eq!(cut.len(), MAX_COMMENT_BYTES);
        assert!(long.starts_with(&cut));
        let odd = format!("a{long}");
        let cut = bounded_comment(&odd);
        assert_eq!(cut.len(), MAX_COMMENT_BYTES - 1);
        assert!(odd.starts_with(&cut));
    }

    /// What a customer keeps per partition, as docs/health.md gives it: its entry in the
    /// table (the key and the customer), whatever it does.
    #[test]
    fn a_customer_is_small_and_fixed_in_size() {
        let entry = |part: usize| std::mem::size_of::<u64>() + part;
        let surveys = entry(std::mem::size_of::<Customer<SurveyPart>>());
        let tickets = entry(std::mem::size_of::<Customer<TicketPart>>());
        let billing = entry(std::mem::size_of::<Customer<BillingPart>>());
        // 232, 216 and 296 bytes on 64-bit targets, the id's and segment's own
        // allocations besides.
        assert!(
            surveys <= 240 && tickets <= 224 && billing <= 304,
            "{surveys} {tickets} {billing}"
        );
    }
}
