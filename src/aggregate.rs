//! Windowed state of every assigned input partition, and the KPI snapshot merged from it.
//!
//! State is kept per input partition so that a revoked partition's contribution can be
//! dropped and a newly assigned one rebuilt by replay, without touching the others. At
//! publish time each partition's state is folded into its [`PartitionComponents`], and the
//! snapshot adds them up ([`crate::components`]); merging is addition of tallies, so the
//! result equals one state fed with every event.
//!
//! Pure: the caller passes `now`.

use std::collections::HashMap;

/// Maps keyed by partitions and series, looked up for every event. Their keys are small
/// and bounded (partitions, interned dimension values), so a fast hash is safe here.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::billing::{BillingLedger, BillingTally, Current, Rates};
use crate::components::{FamilyTallies, PartitionComponents, SeriesComponents, Totals};
use crate::dedup::SeenIds;
use crate::dimension::Dimensions;
use crate::event::{Event, Family, Payload, Reason, Rejection};
use crate::kpi::KpiRecord;
use crate::survey::SurveyTally;
use crate::ticket::TicketTally;
use crate::window::{Tally, Window, WindowSpec};

/// An input partition: the topic's family and the partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub family: Family,
    pub partition: i32,
}

impl PartitionId {
    pub fn new(family: Family, partition: i32) -> Self {
        PartitionId { family, partition }
    }
}

/// A KPI series: overall, or one value of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Overall,
    /// Dimension index (configuration order) and interned value id.
    Dimension(u8, u32),
}

/// What became of an event offered to [`Aggregates::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the state.
    Counted,
    /// Its `occurred_at` is older than the largest window: nothing changed (but for a
    /// billing event, which still updated the current MRR).
    Late,
    /// Its `event_id` was already applied within the deduplication horizon: nothing changed.
    Duplicate,
}

/// One window ring per configured window, for one series.
#[derive(Debug, Clone)]
struct SeriesWindows<T> {
    windows: Box<[Window<T>]>,
}

#[derive(Debug)]
struct PartitionState {
    seen: SeenIds,
    /// Series windows are kept once created, so a series keeps being published (components
    /// at 0) after its window empties, instead of flickering in and out.
    surveys: FastMap<SeriesKey, SeriesWindows<SurveyTally>>,
    tickets: FastMap<SeriesKey, SeriesWindows<TicketTally>>,
    billing: FastMap<SeriesKey, SeriesWindows<BillingTally>>,
    /// Current MRR per customer; each customer counts in the series of its latest event.
    ledger: BillingLedger<Box<[SeriesKey]>>,
}

impl PartitionState {
    fn new(dedup_horizon_ms: i64) -> Self {
        PartitionState {
            seen: SeenIds::new(dedup_horizon_ms),
            surveys: FastMap::default(),
            tickets: FastMap::default(),
            billing: FastMap::default(),
            ledger: BillingLedger::default(),
        }
    }
}

/// The service's whole KPI state.
#[derive(Debug)]
pub struct Aggregates {
    windows: Vec<WindowSpec>,
    lead_ms: i64,
    dimensions: Dimensions,
    rates: Rates,
    /// Index of the window whose customer churn ratio divides ARPA into CLV.
    clv_window: Option<usize>,
    dedup_horizon_ms: i64,
    partitions: FastMap<PartitionId, PartitionState>,
    /// Scratch list of the series an event updates; reused to keep the hot path free of
    /// allocation.
    touched: Vec<SeriesKey>,
}

/// Where one event lands: its series, time and the clock.
struct Landing<'a> {
    windows: &'a [WindowSpec],
    lead_ms: i64,
    touched: &'a [SeriesKey],
    at_ms: i64,
    now_ms: i64,
}

impl Landing<'_> {
    /// Applies `apply` to the bucket holding the event in every window of every series.
    fn apply<T: Tally>(
        &self,
        map: &mut FastMap<SeriesKey, SeriesWindows<T>>,
        apply: impl Fn(&mut T),
    ) {
        for key in self.touched {
            self.apply_to(map, *key, &apply);
        }
    }

    /// Applies `apply` to the bucket holding the event in every window of one series.
    fn apply_to<T: Tally>(
        &self,
        map: &mut FastMap<SeriesKey, SeriesWindows<T>>,
        key: SeriesKey,
        apply: impl Fn(&mut T),
    ) {
        let series = map.entry(key).or_insert_with(|| SeriesWindows {
            windows: self
                .windows
                .iter()
                .map(|w| Window::new(w, self.lead_ms))
                .collect(),
        });
        for (spec, window) in self.windows.iter().zip(series.windows.iter_mut()) {
            if let Some(tally) = window.bucket_mut(spec, self.at_ms, self.now_ms) {
                apply(tally);
            }
        }
    }
}

impl Aggregates {
    /// `lead_ms` is the accepted future clock skew of events; `clv_window` names the window
    /// whose churn ratio CLV uses; a repeated `event_id` within `dedup_horizon_ms` of event
    /// time is a duplicate (0 turns detection off).
    pub fn new(
        windows: Vec<WindowSpec>,
        lead_ms: i64,
        dimensions: Dimensions,
        rates: Rates,
        clv_window: &str,
        dedup_horizon_ms: i64,
    ) -> Self {
        Aggregates {
            clv_window: windows.iter().position(|w| w.name == clv_window),
            dedup_horizon_ms,
            windows,
            lead_ms,
            dimensions,
            rates,
            partitions: FastMap::default(),
            touched: Vec::new(),
        }
    }

    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }

    /// Start of the largest window at `now_ms`: events older than this are late.
    pub fn horizon_ms(&self, now_ms: i64) -> i64 {
        self.windows
            .iter()
            .map(|w| w.start_ms(now_ms))
            .min()
            .unwrap_or(now_ms)
    }

    /// Forgets a partition's state (revoked, or about to be replayed from scratch).
    pub fn drop_partition(&mut self, partition: PartitionId) {
        self.partitions.remove(&partition);
    }

    /// Applies one valid event read from `partition`. Billing events always update the
    /// current MRR, even when too old for any window; a billing event that cannot apply (an
    /// unknown subscription or currency) is rejected and changes nothing.
    pub fn record(
        &mut self,
        partition: PartitionId,
        event: &Event<'_>,
        now_ms: i64,
    ) -> Result<Outcome, Rejection> {
        // Parsing judged the skew against the message's timestamp bounded by the clock; this
        // holds whatever reference the caller used, since the windows keep no room beyond.
        if event.occurred_at_ms > now_ms.saturating_add(self.lead_ms) {
            return Err(Rejection {
                reason: Reason::FutureTimestamp,
                detail: format!(
                    "occurred_at is {} ms ahead of the service clock (limit {} ms)",
                    event.occurred_at_ms.saturating_sub(now_ms),
                    self.lead_ms
                ),
            });
        }
        let late = event.occurred_at_ms < self.horizon_ms(now_ms);
        let billing = event.payload.family() == Family::Billing;
        if late && !billing {
            return Ok(Outcome::Late);
        }
        // Disjoint borrows of the fields: one partition lookup per event.
        let Aggregates {
            windows,
            lead_ms,
            dimensions,
            rates,
            partitions,
            touched,
            dedup_horizon_ms,
            ..
        } = self;
        let state = partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(*dedup_horizon_ms));
        if state.seen.seen(&event.event_id) {
            return Ok(Outcome::Duplicate);
        }
        collect_series(dimensions, touched, event);
        let landing = Landing {
            windows,
            lead_ms: *lead_ms,
            touched,
            at_ms: event.occurred_at_ms,
            now_ms,
        };
        match event.payload {
            Payload::SurveyResponded { survey, score } => {
                landing.apply(&mut state.surveys, |t| t.record(survey, score));
            }
            Payload::TicketOpened { .. } => landing.apply(&mut state.tickets, |t| t.opened += 1),
            Payload::TicketReopened { .. } => {
                landing.apply(&mut state.tickets, |t| t.reopened += 1)
            }
            Payload::TicketResolved {
                agent_replies,
                reopens,
                opened_at_ms,
                ..
            } => {
                // Validation guarantees opened_at <= occurred_at.
                let duration_ms = u64::try_from(event.occurred_at_ms - opened_at_ms).unwrap_or(0);
                landing.apply(&mut state.tickets, |t| {
                    t.record_resolution(agent_replies, reopens, duration_ms)
                });
            }
            Payload::SubscriptionStarted(_)
            | Payload::SubscriptionChanged(_)
            | Payload::SubscriptionCanceled { .. }
            | Payload::SubscriptionRenewed { .. } => {
                let applied = state
                    .ledger
                    .apply(event, rates, touched.as_slice().into())?;
                if let Some((from, mrr)) = &applied.moved_from {
                    for (old, new) in from.iter().zip(touched.iter()) {
                        if old != new {
                            landing.apply_to(&mut state.billing, *old, |t| t.record_move_out(*mrr));
                            landing.apply_to(&mut state.billing, *new, |t| t.record_move_in(*mrr));
                        }
                    }
                }
                landing.apply(&mut state.billing, |t| t.record(&applied.change));
            }
        }
        // Only an applied event is remembered: a corrected resend of a rejected one applies.
        state.seen.remember(&event.event_id, event.occurred_at_ms);
        Ok(if late {
            Outcome::Late
        } else {
            Outcome::Counted
        })
    }

    /// The value of every KPI, window and known series, merged over all partitions.
    pub fn snapshot(&self, now_ms: i64) -> Vec<KpiRecord> {
        let parts: Vec<PartitionComponents> = self
            .partitions
            .keys()
            .map(|partition| self.components(*partition, now_ms))
            .collect();
        self.records(&parts, now_ms)
    }

    /// The records of components this instance computed (so with its own windows): its
    /// own values.
    pub fn records<'p>(
        &self,
        parts: impl IntoIterator<Item = &'p PartitionComponents>,
        now_ms: i64,
    ) -> Vec<KpiRecord> {
        let mut totals = Totals::new(&self.windows);
        for part in parts {
            // Cannot mismatch: the windows are this instance's.
            let _ = totals.add(part);
        }
        self.records_of(&totals, now_ms)
    }

    /// The records of `totals`, with this instance's windows and CLV window.
    pub fn records_of(&self, totals: &Totals, now_ms: i64) -> Vec<KpiRecord> {
        totals.records(&self.windows, self.clv_window, now_ms)
    }

    /// The partitions holding state.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.partitions.keys().copied()
    }

    /// The tallies of one partition folded over each window at `now_ms`; no series for a
    /// partition without state (it had no event yet, which is still a known value: empty).
    pub fn components(&self, partition: PartitionId, now_ms: i64) -> PartitionComponents {
        let windows = self.windows.iter().map(|w| w.name.clone()).collect();
        let Some(state) = self.partitions.get(&partition) else {
            return PartitionComponents {
                windows,
                series: Vec::new(),
            };
        };
        let mut current: HashMap<SeriesKey, Current> = HashMap::new();
        if partition.family == Family::Billing {
            for (mrr, series) in state.ledger.customers() {
                for key in series.iter() {
                    current.entry(*key).or_default().add(mrr);
                }
            }
        }
        let tallies: Vec<(SeriesKey, FamilyTallies)> = match partition.family {
            Family::Surveys => self
                .fold(&state.surveys, now_ms)
                .map(|(key, t)| (key, FamilyTallies::Surveys(t)))
                .collect(),
            Family::Tickets => self
                .fold(&state.tickets, now_ms)
                .map(|(key, t)| (key, FamilyTallies::Tickets(t)))
                .collect(),
            Family::Billing => self
                .fold(&state.billing, now_ms)
                .map(|(key, windows)| {
                    let current = current.get(&key).copied().unwrap_or_default();
                    (key, FamilyTallies::Billing { windows, current })
                })
                .collect(),
        };
        let series = tallies
            .into_iter()
            .map(|(key, tallies)| SeriesComponents {
                dimension: self.dimension_label(key),
                tallies,
            })
            .collect();
        PartitionComponents { windows, series }
    }

    /// The dimension name and value of a series; `None` for the overall one.
    fn dimension_label(&self, key: SeriesKey) -> Option<(String, String)> {
        match key {
            SeriesKey::Overall => None,
            SeriesKey::Dimension(dim, id) => {
                let dim = usize::from(dim);
                let name = self.dimensions.names().nth(dim).unwrap_or_default();
                Some((name.to_owned(), self.dimensions.value(dim, id).to_owned()))
            }
        }
    }

    /// Every series' tally per window at `now_ms`.
    fn fold<'s, T: Tally>(
        &'s self,
        map: &'s FastMap<SeriesKey, SeriesWindows<T>>,
        now_ms: i64,
    ) -> impl Iterator<Item = (SeriesKey, Vec<T>)> + 's {
        map.iter().map(move |(key, series)| {
            let tallies = self
                .windows
                .iter()
                .zip(series.windows.iter())
                .map(|(spec, window)| {
                    let mut tally = T::default();
                    window.fold_into(spec, now_ms, &mut tally);
                    tally
                })
                .collect();
            (*key, tallies)
        })
    }
}

/// Fills `touched` with the series `event` belongs to: overall, then one per dimension.
fn collect_series(dimensions: &mut Dimensions, touched: &mut Vec<SeriesKey>, event: &Event<'_>) {
    touched.clear();
    touched.push(SeriesKey::Overall);
    for dim in 0..dimensions.len() {
        let raw = event.dimensions[dimensions.field(dim)].as_deref();
        let key = SeriesKey::Dimension(dim as u8, dimensions.intern(dim, raw));
        touched.push(key);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::billing;
    use crate::event::Survey;
    use crate::kpi;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const T0: i64 = 20_000 * HOUR;

    fn specs() -> Vec<WindowSpec> {
        vec![
            WindowSpec::new("1h", Duration::from_secs(3600), Duration::from_secs(60)),
            WindowSpec::new(
                "24h",
                Duration::from_secs(86_400),
                Duration::from_secs(1440),
            ),
        ]
    }

    fn aggregates(cap: usize) -> Aggregates {
        let mut rates = std::collections::BTreeMap::new();
        rates.insert("EUR".to_owned(), 1.5);
        Aggregates::new(
            specs(),
            5 * MINUTE,
            Dimensions::new(&["segment".to_owned()], cap),
            Rates::new("USD", &rates),
            "24h",
            0,
        )
    }

    fn survey_event(at: i64, survey: Survey, score: u8, segment: Option<&str>) -> Event<'_> {
        Event {
            event_id: Cow::Borrowed("e"),
            occurred_at_ms: at,
            customer_id: Cow::Borrowed("c"),
            dimensions: [segment.map(Cow::Borrowed), None, None],
            payload: Payload::SurveyResponded { survey, score },
        }
    }

    fn find<'a>(records: &'a [KpiRecord], key: &str) -> &'a KpiRecord {
        records
            .iter()
            .find(|r| r.key() == key)
            .unwrap_or_else(|| panic!("no record {key}"))
    }

    #[test]
    fn empty_state_publishes_null_values_for_the_overall_series() {
        let records = aggregates(10).snapshot(T0);
        // Every windowed KPI per window, and the four current values once.
        let current = records.iter().filter(|r| r.window == kpi::CURRENT).count();
        assert_eq!(current, 4);
        assert_eq!(records.len(), 2 * (kpi::KPIS.len() - current) + current);
        for r in &records {
            // Counts are 0 in an empty window; ratios and means have no value.
            let expected = r.def.components.is_empty().then_some(0.0);
            assert_eq!(r.value, expected, "{}", r.key());
            assert_eq!(r.samples, 0);
            assert!(
                r.components.iter().all(|c| c.is_none_or(|c| c == 0.0)),
                "{}",
                r.key()
            );
        }
    }

    #[test]
    fn partitions_merge_and_a_dropped_partition_leaves_no_trace() {
        let mut agg = aggregates(10);
        let p0 = PartitionId::new(Family::Surveys, 0);
        let p1 = PartitionId::new(Family::Surveys, 1);
        agg.record(
            p0,
            &survey_event(T0 - MINUTE, Survey::Nps, 10, Some("smb")),
            T0,
        )
        .unwrap();
        agg.record(
            p1,
            &survey_event(T0 - MINUTE, Survey::Nps, 0, Some("ent")),
            T0,
        )
        .unwrap();
        let records = agg.snapshot(T0);
        assert_eq!(find(&records, "nps/1h").value, Some(0.0));
        assert_eq!(find(&records, "nps/1h/segment=smb").value, Some(100.0));
        agg.drop_partition(p1);
        let records = agg.snapshot(T0);
        assert_eq!(find(&records, "nps/1h").value, Some(100.0));
        // The series belonged to the dropped partition only: its new owner publishes it.
        assert!(
            records
                .iter()
                .all(|r| r.dimension != Some(("segment".into(), "ent".into())))
        );
        // A series whose windows have emptied stays known, with zero components.
        let records = agg.snapshot(T0 + 31 * DAY);
        let smb = find(&records, "nps/1h/segment=smb");
        assert_eq!((smb.value, smb.samples), (None, 0));
    }

    #[test]
    fn events_older_than_the_largest_window_are_late() {
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Surveys, 0);
        let horizon = agg.horizon_ms(T0);
        let old = survey_event(horizon - 1, Survey::Csat, 5, None);
        assert_eq!(agg.record(p, &old, T0), Ok(Outcome::Late));
        let edge = survey_event(horizon, Survey::Csat, 5, None);
        assert_eq!(agg.record(p, &edge, T0), Ok(Outcome::Counted));
        let records = agg.snapshot(T0);
        assert_eq!(find(&records, "csat/24h").samples, 1);
        assert_eq!(find(&records, "csat/1h").samples, 0);
    }

    fn ticket_event(at: i64, payload: Payload<'static>) -> Event<'static> {
        Event {
            event_id: Cow::Borrowed("t"),
            occurred_at_ms: at,
            customer_id: Cow::Borrowed("c"),
            dimensions: [Some(Cow::Borrowed("smb")), None, None],
            payload,
        }
    }

    #[test]
    fn ticket_events_count_per_window_and_feed_fcr() {
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Tickets, 0);
        let id = || Cow::Borrowed("t1");
        let resolved = |agent_replies, reopens| Payload::TicketResolved {
            ticket_id: id(),
            opened_at_ms: T0 - 3 * HOUR,
            agent_replies,
            reopens,
        };
        let events = [
            ticket_event(T0 - MINUTE, Payload::TicketOpened { ticket_id: id() }),
            ticket_event(T0 - 2 * HOUR, Payload::TicketOpened { ticket_id: id() }),
            ticket_event(T0 - MINUTE, Payload::TicketReopened { ticket_id: id() }),
            ticket_event(T0 - MINUTE, resolved(1, 0)),
            ticket_event(T0 - MINUTE, resolved(2, 0)),
            ticket_event(T0 - 2 * HOUR, resolved(0, 0)),
        ];
        for e in &events {
            assert_eq!(agg.record(p, e, T0), Ok(Outcome::Counted));
        }
        let records = agg.snapshot(T0);
        assert_eq!(find(&records, "tickets_opened/1h").value, Some(1.0));
        assert_eq!(find(&records, "tickets_opened/24h").value, Some(2.0));
        assert_eq!(find(&records, "tickets_reopened/1h").value, Some(1.0));
        assert_eq!(find(&records, "tickets_resolved/24h").value, Some(3.0));
        assert_eq!(find(&records, "fcr/1h").value, Some(0.5));
        assert_eq!(find(&records, "fcr/24h/segment=smb").value, Some(2.0 / 3.0));
        assert_eq!(
            find(&records, "fcr/24h").components,
            vec![Some(2.0), Some(3.0)]
        );
        // Surveys and tickets share series but not tallies.
        assert_eq!(find(&records, "nps/24h/segment=smb").samples, 0);
    }

    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: i64,
        age_ms: i64,
        survey: Survey,
        score: u8,
        segment: Option<&'static str>,
        partition: i32,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0..20 * MINUTE,
            -5 * MINUTE..30 * HOUR,
            prop_oneof![Just(Survey::Nps), Just(Survey::Csat), Just(Survey::Ces)],
            0u8..=10,
            prop_oneof![
                Just(None),
                Just(Some("smb")),
                Just(Some("mid")),
                Just(Some("ent")),
                Just(Some(""))
            ],
            0..3i32,
        )
            .prop_map(|(advance_ms, age_ms, survey, score, segment, partition)| {
                let (low, high) = survey.scale();
                Step {
                    advance_ms,
                    age_ms,
                    survey,
                    score: low + score % (high - low + 1),
                    segment,
                    partition,
                }
            })
    }

    proptest! {
        /// The windowed values equal a recomputation over the raw accepted events.
        #[test]
        fn windowed_values_equal_a_brute_force_recomputation(
            steps in prop::collection::vec(step(), 1..200),
            final_advance in 0..48 * HOUR,
        ) {
            let cap = 2;
            let mut agg = aggregates(cap);
            let mut now = T0;
            // (occurred_at, survey, score, segment label) of every counted event.
            let mut accepted: Vec<(i64, Survey, u8, String)> = Vec::new();
            let mut interned: Vec<String> = Vec::new();
            for s in &steps {
                now += s.advance_ms;
                let at = now - s.age_ms;
                let event = survey_event(at, s.survey, s.score, s.segment);
                let outcome = agg.record(PartitionId::new(Family::Surveys, s.partition), &event, now);
                let expect_late = at < agg.horizon_ms(now);
                prop_assert_eq!(outcome == Ok(Outcome::Late), expect_late);
                if !expect_late {
                    let value = match s.segment { Some(v) if !v.is_empty() => v, _ => "unknown" };
                    let label = if interned.iter().any(|i| i == value) {
                        value.to_owned()
                    } else if interned.len() < cap {
                        interned.push(value.to_owned());
                        value.to_owned()
                    } else {
                        "other".to_owned()
                    };
                    accepted.push((at, s.survey, s.score, label));
                }
            }
            now += final_advance;
            let records = agg.snapshot(now);
            for spec in specs() {
                let start = spec.start_ms(now);
                let mut series: Vec<Option<String>> = vec![None];
                series.extend(accepted.iter().map(|a| Some(a.3.clone())));
                series.dedup();
                for label in series {
                    let mut expected = SurveyTally::default();
                    for (at, survey, score, seg) in &accepted {
                        if *at >= start && label.as_ref().is_none_or(|l| l == seg) {
                            expected.record(*survey, *score);
                        }
                    }
                    let suffix = label.as_ref().map(|l| format!("/segment={l}")).unwrap_or_default();
                    let nps = find(&records, &format!("nps/{}{suffix}", spec.name));
                    prop_assert_eq!(nps.value, expected.nps().value());
                    prop_assert_eq!(nps.samples, expected.nps().responses());
                    let csat = find(&records, &format!("csat/{}{suffix}", spec.name));
                    prop_assert_eq!(csat.value, expected.csat().ratio());
                    let ces = find(&records, &format!("ces/{}{suffix}", spec.name));
                    prop_assert_eq!(ces.value, expected.ces().mean());
                    let easy = find(&records, &format!("ces_easy/{}{suffix}", spec.name));
                    prop_assert_eq!(easy.value, expected.ces().easy_ratio());
                }
            }
        }
    }

    fn billing_event(
        at: i64,
        customer: &'static str,
        segment: &'static str,
        payload: Payload<'static>,
    ) -> Event<'static> {
        Event {
            event_id: Cow::Borrowed("b"),
            occurred_at_ms: at,
            customer_id: Cow::Borrowed(customer),
            dimensions: [Some(Cow::Borrowed(segment)), None, None],
            payload,
        }
    }

    fn terms(
        id: &'static str,
        price: i64,
        currency: &'static str,
        interval: crate::event::Interval,
    ) -> crate::event::SubscriptionTerms<'static> {
        crate::event::SubscriptionTerms {
            subscription_id: Cow::Borrowed(id),
            plan: Cow::Borrowed("pro"),
            price,
            quantity: 1,
            currency: Cow::Borrowed(currency),
            interval,
            interval_count: 1,
        }
    }

    #[test]
    fn billing_movements_rates_and_current_values() {
        use crate::event::Interval::{Month, Year};
        let mut agg = aggregates(10);
        let p = PartitionId::new(Family::Billing, 0);
        let sub = |id| Cow::Borrowed(id);
        let ok = [
            // Older than every window: changes the current MRR only.
            (
                billing_event(
                    T0 - 30 * HOUR,
                    "c1",
                    "smb",
                    Payload::SubscriptionStarted(terms("s1", 10_000, "USD", Month)),
                ),
                Outcome::Late,
            ),
            // 100 EUR at 1.5 = 150 USD.
            (
                billing_event(
                    T0 - 2 * HOUR,
                    "c2",
                    "smb",
                    Payload::SubscriptionStarted(terms("s2", 10_000, "EUR", Month)),
                ),
                Outcome::Counted,
            ),
            (
                billing_event(
                    T0 - 30 * MINUTE,
                    "c1",
                    "smb",
                    Payload::SubscriptionChanged(terms("s1", 12_000, "USD", Month)),
                ),
                Outcome::Counted,
            ),
            (
                billing_event(
                    T0 - 10 * MINUTE,
                    "c2",
                    "smb",
                    Payload::SubscriptionCanceled {
                        subscription_id: sub("s2"),
                    },
                ),
                Outcome::Counted,
            ),
            // 1200 a year = 100 a month.
            (
                billing_event(
                    T0 - 5 * MINUTE,
                    "c3",
                    "ent",
                    Payload::SubscriptionStarted(terms("s3", 120_000, "USD", Year)),
                ),
                Outcome::Counted,
            ),
            (
                billing_event(
                    T0 - MINUTE,
                    "c1",
                    "smb",
                    Payload::SubscriptionRenewed {
                        subscription_id: sub("s1"),
                    },
                ),
                Outcome::Counted,
            ),
        ];
        for (event, outcome) in &ok {
            assert_eq!(agg.record(p, event, T0), Ok(*outcome));
        }
        let unknown = billing_event(
            T0,
            "c4",
            "smb",
            Payload::SubscriptionCanceled {
                subscription_id: sub("s9"),
            },
        );
        assert_eq!(
            agg.record(p, &unknown, T0).unwrap_err().reason,
            crate::event::Reason::UnknownSubscription
        );
        let jpy = billing_event(
            T0,
            "c5",
            "smb",
            Payload::SubscriptionStarted(terms("s5", 1000, "JPY", Month)),
        );
        assert_eq!(
            agg.record(p, &jpy, T0).unwrap_err().reason,
            crate::event::Reason::UnknownCurrency
        );

        // A rejected event's segment does not become a series.
        let stray = billing_event(
            T0,
            "c6",
            "never-applied",
            Payload::SubscriptionRenewed {
                subscription_id: sub("s6"),
            },
        );
        assert!(agg.record(p, &stray, T0).is_err());

        let r = agg.snapshot(T0);
        assert!(
            r.iter()
                .all(|rec| rec.dimension != Some(("segment".into(), "never-applied".into())))
        );
        let v = |key: &str| find(&r, key).value;
        assert_eq!(v("mrr/current"), Some(220.0));
        assert_eq!(v("customers_active/current"), Some(2.0));
        assert_eq!(v("arpa/current"), Some(110.0));
        assert_eq!(v("mrr/current/segment=smb"), Some(120.0));
        assert_eq!(v("mrr/current/segment=ent"), Some(100.0));
        // 24h: new 150 + 100, expansion 20, churn 150; at its start c1 paid 100.
        assert_eq!(v("mrr_new/24h"), Some(250.0));
        assert_eq!(v("mrr_expansion/24h"), Some(20.0));
        assert_eq!(v("mrr_churn/24h"), Some(150.0));
        assert_eq!(v("mrr_contraction/24h"), Some(0.0));
        assert_eq!(v("net_new_mrr/24h"), Some(120.0));
        assert_eq!(v("customer_churn/24h"), Some(1.0));
        assert_eq!(v("revenue_churn/24h"), Some(1.5));
        assert_eq!(v("net_revenue_retention/24h"), Some(-0.3));
        assert_eq!(v("customer_retention/24h"), Some(0.0));
        assert_eq!(v("renewal/24h"), Some(0.5));
        // 1h: c1 at 100 and c2 at 150 at its start.
        assert_eq!(v("mrr_new/1h"), Some(100.0));
        assert_eq!(v("net_new_mrr/1h"), Some(-30.0));
        assert_eq!(v("customer_churn/1h"), Some(0.5));
        assert_eq!(v("revenue_churn/1h"), Some(0.6));
        assert_eq!(v("net_revenue_retention/1h"), Some(0.48));
        assert_eq!(v("customer_retention/1h"), Some(0.5));
        assert_eq!(
            find(&r, "customer_retention/1h").components,
            vec![Some(2.0), Some(2.0), Some(1.0)]
        );
        // CLV uses the 24h churn ratio here: 110 / 1.0.
        assert_eq!(v("clv/current"), Some(110.0));
        assert_eq!(v("clv/current/segment=ent"), None);
    }

    #[derive(Debug, Clone)]
    enum BillingAction {
        Start(u8, i64, bool),
        Change(u8, i64),
        Cancel(u8),
        Renew(u8),
    }

    fn billing_step() -> impl Strategy<Value = (i64, i64, u8, BillingAction)> {
        let price = prop_oneof![Just(1_000i64), Just(2_500), Just(4_900)];
        let action = prop_oneof![
            (0..4u8, price.clone(), any::<bool>())
                .prop_map(|(s, p, eur)| BillingAction::Start(s, p, eur)),
            (0..4u8, price).prop_map(|(s, p)| BillingAction::Change(s, p)),
            (0..4u8).prop_map(BillingAction::Cancel),
            (0..4u8).prop_map(BillingAction::Renew),
        ];
        (0..30 * MINUTE, 0..30 * HOUR, 0..3u8, action)
    }

    proptest! {
        /// Current MRR and windowed movements equal a recomputation over the raw events.
        #[test]
        fn billing_values_equal_a_brute_force_recomputation(
            steps in prop::collection::vec(billing_step(), 1..120),
        ) {
            const IDS: [&str; 4] = ["s0", "s1", "s2", "s3"];
            const CUSTOMERS: [&str; 3] = ["c0", "c1", "c2"];
            let mut agg = aggregates(10);
            let p = PartitionId::new(Family::Billing, 0);
            let mut now = T0;
            // Brute force: subscription -> (customer, micros); customer -> ever paid.
            let mut subs: HashMap<u8, (u8, i64)> = HashMap::new();
            let mut canceled: std::collections::HashSet<u8> = Default::default();
            let mut ever_paid = [false; 3];
            // (occurred_at, movement kind index, amount)
            let mut movements: Vec<(i64, usize, i64)> = Vec::new();
            for (advance, age, customer, action) in &steps {
                now += advance;
                let at = now - age;
                let c = CUSTOMERS[usize::from(*customer)];
                let (payload, sub, micros) = match *action {
                    BillingAction::Start(s, price, eur) => {
                        let currency = if eur { "EUR" } else { "USD" };
                        let micros = price * if eur { 15_000 } else { 10_000 };
                        (Payload::SubscriptionStarted(terms(IDS[usize::from(s)], price, currency, crate::event::Interval::Month)), s, Some(micros))
                    }
                    BillingAction::Change(s, price) => (
                        Payload::SubscriptionChanged(terms(IDS[usize::from(s)], price, "USD", crate::event::Interval::Month)),
                        s, Some(price * 10_000)),
                    BillingAction::Cancel(s) => (Payload::SubscriptionCanceled { subscription_id: Cow::Borrowed(IDS[usize::from(s)]) }, s, Some(0)),
                    BillingAction::Renew(s) => (Payload::SubscriptionRenewed { subscription_id: Cow::Borrowed(IDS[usize::from(s)]) }, s, None),
                };
                let starts = matches!(action, BillingAction::Start(..));
                let result = agg.record(p, &billing_event(at, c, "smb", payload), now);
                if !starts && (!subs.contains_key(&sub) || canceled.contains(&sub)) {
                    prop_assert!(result.is_err());
                    continue;
                }
                prop_assert!(result.is_ok());
                if matches!(action, BillingAction::Cancel(_)) {
                    canceled.insert(sub);
                } else {
                    canceled.remove(&sub);
                }
                let owner = subs.get(&sub).map_or(*customer, |(o, _)| *o);
                let total = |subs: &HashMap<u8, (u8, i64)>| -> i64 {
                    subs.values().filter(|(o, _)| *o == owner).map(|(_, m)| m).sum()
                };
                let before = total(&subs);
                let entry = subs.entry(sub).or_insert((owner, 0));
                if let Some(m) = micros {
                    entry.1 = m;
                }
                let after = total(&subs);
                let o = usize::from(owner);
                let kind = match (before > 0, after > 0) {
                    (false, true) if ever_paid[o] => Some(1),
                    (false, true) => Some(0),
                    (true, false) => Some(4),
                    (true, true) if after > before => Some(2),
                    (true, true) if after < before => Some(3),
                    _ => None,
                };
                ever_paid[o] |= after > 0;
                if let Some(kind) = kind {
                    movements.push((at, kind, (after - before).abs()));
                }
            }
            let records = agg.snapshot(now);
            let mrr: i64 = subs.values().map(|(_, m)| m).sum();
            let mut per_customer = [0i64; 3];
            for (o, m) in subs.values() {
                per_customer[usize::from(*o)] += m;
            }
            let active = per_customer.iter().filter(|m| **m > 0).count() as f64;
            prop_assert_eq!(find(&records, "mrr/current").value, Some(billing::major(mrr.into())));
            prop_assert_eq!(find(&records, "customers_active/current").value, Some(active));
            for spec in specs() {
                let start = spec.start_ms(now);
                for (kind, name) in ["mrr_new", "mrr_reactivation", "mrr_expansion", "mrr_contraction", "mrr_churn"].iter().enumerate() {
                    let sum: i64 = movements.iter().filter(|m| m.0 >= start && m.1 == kind).map(|m| m.2).sum();
                    let key = format!("{name}/{}", spec.name);
                    prop_assert_eq!(find(&records, &key).value, Some(billing::major(sum.into())), "{}", key);
                }
            }
        }
    }

    /// A brute-force model of the ledger, for the property tests: subscription -> (owner,
    /// micros, canceled); customer -> (segment of its latest applied event, ever paid).
    #[derive(Default, Clone)]
    struct LedgerModel {
        subs: HashMap<u8, (u8, i64, bool)>,
        customers: HashMap<u8, &'static str>,
    }

    impl LedgerModel {
        /// Applies an action as the contract says; false when it must be rejected.
        fn apply(&mut self, customer: u8, segment: &'static str, action: &BillingAction) -> bool {
            let (sub, micros, cancel) = match *action {
                BillingAction::Start(s, price, _) => (s, Some(price * 10_000), false),
                BillingAction::Change(s, price) => (s, Some(price * 10_000), false),
                BillingAction::Cancel(s) => (s, Some(0), true),
                BillingAction::Renew(s) => (s, None, false),
            };
            let starts = matches!(action, BillingAction::Start(..));
            let usable = self
                .subs
                .get(&sub)
                .is_some_and(|(_, _, canceled)| !canceled);
            if !starts && !usable {
                return false;
            }
            let entry = self.subs.entry(sub).or_insert((customer, 0, false));
            if let Some(m) = micros {
                entry.1 = m;
            }
            entry.2 = cancel;
            let owner = entry.0;
            self.customers.insert(owner, segment);
            true
        }

        /// (MRR, active customers) of the customers whose latest event was in `segment`.
        fn segment(&self, segment: &str) -> (i64, u64) {
            let mut per_customer: HashMap<u8, i64> = HashMap::new();
            for (owner, micros, _) in self.subs.values() {
                *per_customer.entry(*owner).or_default() += micros;
            }
            per_customer
                .iter()
                .filter(|(c, _)| self.customers.get(*c) == Some(&segment))
                .fold((0, 0), |(mrr, n), (_, m)| (mrr + m, n + u64::from(*m > 0)))
        }
    }

    proptest! {
        /// Customers whose segment changes: every segment's current MRR and customers, and
        /// its MRR and customers at the start of each window, equal the state of a model fed
        /// with the events up to then; nothing is ever negative.
        #[test]
        fn segment_values_are_exact_when_customers_change_segment(
            steps in prop::collection::vec(
                (0..40 * MINUTE, 0..3u8, prop::bool::ANY, billing_step().prop_map(|s| s.3)),
                1..150,
            ),
        ) {
            const IDS: [&str; 4] = ["s0", "s1", "s2", "s3"];
            const CUSTOMERS: [&str; 3] = ["c0", "c1", "c2"];
            const SEGMENTS: [&str; 2] = ["smb", "ent"];
            let mut agg = aggregates(10);
            let p = PartitionId::new(Family::Billing, 0);
            let mut now = T0;
            let mut model = LedgerModel::default();
            // The model after each applied event, with its time, in time order.
            let mut history: Vec<(i64, LedgerModel)> = Vec::new();
            for (advance, customer, ent, action) in &steps {
                now += advance;
                let segment = SEGMENTS[usize::from(*ent)];
                let payload = match *action {
                    BillingAction::Start(s, price, _) => Payload::SubscriptionStarted(terms(IDS[usize::from(s)], price, "USD", crate::event::Interval::Month)),
                    BillingAction::Change(s, price) => Payload::SubscriptionChanged(terms(IDS[usize::from(s)], price, "USD", crate::event::Interval::Month)),
                    BillingAction::Cancel(s) => Payload::SubscriptionCanceled { subscription_id: Cow::Borrowed(IDS[usize::from(s)]) },
                    BillingAction::Renew(s) => Payload::SubscriptionRenewed { subscription_id: Cow::Borrowed(IDS[usize::from(s)]) },
                };
                let result = agg.record(p, &billing_event(now, CUSTOMERS[usize::from(*customer)], segment, payload), now);
                let accepted = model.apply(*customer, segment, action);
                prop_assert_eq!(result.is_ok(), accepted);
                if accepted {
                    history.push((now, model.clone()));
                }
            }
            let records = agg.snapshot(now);
            let empty = LedgerModel::default();
            for segment in SEGMENTS {
                let suffix = format!("/segment={segment}");
                let Some(current) = records.iter().find(|r| r.key() == format!("mrr/current{suffix}")) else {
                    // A segment no applied event named has no series.
                    prop_assert!(history.iter().all(|(_, m)| m.customers.values().all(|s| *s != segment)));
                    continue;
                };
                let (mrr, active) = model.segment(segment);
                prop_assert_eq!(current.value, Some(billing::major(mrr.into())));
                prop_assert_eq!(find(&records, &format!("customers_active/current{suffix}")).value, Some(active as f64));
                for spec in specs() {
                    let start = spec.start_ms(now);
                    let before = history.iter().rev().find(|(at, _)| *at < start).map_or(&empty, |(_, m)| m);
                    let (mrr, active) = before.segment(segment);
                    let revenue = find(&records, &format!("revenue_churn/{}{suffix}", spec.name));
                    prop_assert_eq!(revenue.components[2], Some(billing::major(mrr.into())), "{} {}", spec.name, segment);
                    let churn = find(&records, &format!("customer_churn/{}{suffix}", spec.name));
                    prop_assert_eq!(churn.components[1], Some(active as f64), "{} {}", spec.name, segment);
                }
            }
        }
    }

    proptest! {
        /// Ticket counts, FCR and resolution times equal a recomputation over the raw events.
        #[test]
        fn ticket_values_equal_a_brute_force_recomputation(
            steps in prop::collection::vec(
                (0..20 * MINUTE, -5 * MINUTE..30 * HOUR, 0..3u8, 0..4u32, 0..2u32, 0..3 * DAY),
                1..150,
            ),
        ) {
            let mut agg = aggregates(10);
            let mut now = T0;
            // (occurred_at, kind, agent_replies, reopens, duration)
            let mut accepted: Vec<(i64, u8, u32, u32, u64)> = Vec::new();
            for (advance, age, kind, replies, reopens, duration) in &steps {
                now += advance;
                let at = now - age;
                let id = Cow::Borrowed("t");
                let payload = match kind {
                    0 => Payload::TicketOpened { ticket_id: id },
                    1 => Payload::TicketReopened { ticket_id: id },
                    _ => Payload::TicketResolved {
                        ticket_id: id,
                        opened_at_ms: at - duration,
                        agent_replies: *replies,
                        reopens: *reopens,
                    },
                };
                let outcome = agg.record(PartitionId::new(Family::Tickets, 0), &ticket_event(at, payload), now);
                if outcome == Ok(Outcome::Counted) {
                    accepted.push((at, *kind, *replies, *reopens, *duration as u64));
                }
            }
            let records = agg.snapshot(now);
            for spec in specs() {
                let inside: Vec<_> = accepted.iter().filter(|a| a.0 >= spec.start_ms(now)).collect();
                let count = |k: u8| inside.iter().filter(|a| a.1 == k).count() as f64;
                let value = |name: &str| find(&records, &format!("{name}/{}", spec.name)).value;
                prop_assert_eq!(value("tickets_opened"), Some(count(0)));
                prop_assert_eq!(value("tickets_reopened"), Some(count(1)));
                prop_assert_eq!(value("tickets_resolved"), Some(count(2)));
                let resolved: Vec<_> = inside.iter().filter(|a| a.1 == 2).collect();
                let first = resolved.iter().filter(|a| a.2 <= 1 && a.3 == 0).count() as f64;
                let n = resolved.len() as f64;
                prop_assert_eq!(value("fcr"), (n > 0.0).then(|| first / n));
                let sum_ms: u64 = resolved.iter().map(|a| a.4).sum();
                prop_assert_eq!(
                    value("resolution_time"),
                    (n > 0.0).then(|| sum_ms as f64 / 1000.0 / n)
                );
                let rt = find(&records, &format!("resolution_time/{}", spec.name));
                for (i, bound) in crate::ticket::RESOLUTION_BOUNDS_SECONDS.iter().enumerate() {
                    let le = resolved.iter().filter(|a| a.4 <= bound * 1000).count() as f64;
                    prop_assert_eq!(rt.components[5 + i], Some(le));
                }
            }
        }
    }
}
