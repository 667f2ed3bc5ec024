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
use crate::calendar::{Calendar, PeriodKind, PeriodWindow};
use crate::components::{
    FamilyTallies, PartitionComponents, SeriesComponents, Totals, WindowFrame,
};
use crate::dedup::SeenIds;
use crate::dimension::Dimensions;
use crate::event::{DIMENSION_FIELDS, Event, Family, Payload, Reason, Rejection};
use crate::kpi::KpiRecord;
use crate::partition::PartitionId;
use crate::survey::SurveyTally;
use crate::ticket::TicketTally;
use crate::window::{IndexRing, Placement, Ring, Tally, Window, WindowSpec};

/// A KPI series: overall, or one value of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Overall,
    /// Dimension index (configuration order) and interned value id.
    Dimension(u8, u32),
}

/// The series one event counts in: overall, then one per configured dimension. Inline and
/// `Copy`, so that no event allocates for them, though a billing customer keeps those of
/// its latest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventSeries {
    keys: [SeriesKey; 1 + DIMENSION_FIELDS.len()],
    len: usize,
}

impl EventSeries {
    /// The series of `event`, interning its dimension values.
    fn of(dimensions: &mut Dimensions, event: &Event<'_>) -> Self {
        let mut series = EventSeries {
            keys: [SeriesKey::Overall; 1 + DIMENSION_FIELDS.len()],
            len: 1,
        };
        // Dimensions holds each field at most once, so every one has a place.
        for (key, dim) in series.keys[1..].iter_mut().zip(0..dimensions.len()) {
            let raw = event.dimensions[dimensions.field(dim)].as_deref();
            *key = SeriesKey::Dimension(dim as u8, dimensions.intern(dim, raw));
            series.len += 1;
        }
        series
    }

    fn keys(&self) -> &[SeriesKey] {
        self.keys.get(..self.len).unwrap_or_default()
    }
}

/// A calendar period's ring: the previous period, the current one and, for events within
/// the accepted skew, the next. Each period of each kind is one bucket, so that whether a
/// message came too late is decided for the period itself (an answer too late for its day
/// may still count in its week).
const PERIOD_RING: IndexRing = IndexRing::new(2, 1);

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
    /// It counts in the rolling windows (or, for a billing event, at least in the current
    /// MRR), but its message came after the end of its calendar period plus the grace: the
    /// period was closed, and it does not count there.
    LateForPeriod,
}

/// The rings of one series: one per rolling window, in configuration order, then one per
/// calendar period, in configuration order. An event's placements follow the same order.
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
    ledger: BillingLedger<EventSeries>,
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

/// What the windowed state is built from: the configuration, checked once where the service
/// loads it (and `kpi-stream check-config` reports), so that nothing here parses a setting
/// again or falls back to a default.
#[derive(Debug)]
pub struct StateSettings {
    /// The windows, in configuration order: the order of every list of tallies.
    pub windows: Vec<WindowSpec>,
    /// How far ahead of the clock an event may be (the accepted skew): the room each
    /// window's ring keeps ahead of `now`.
    pub lead_ms: i64,
    /// The dimensions that split every KPI into series, each capped in distinct values.
    pub dimensions: Dimensions,
    pub rates: Rates,
    /// Index in `windows` of the window whose customer churn ratio divides ARPA into CLV.
    pub clv_window: usize,
    /// A repeated `event_id` within this much event time is a duplicate; 0 turns duplicate
    /// detection off.
    pub dedup_horizon_ms: i64,
    /// The calendar periods beside the rolling windows; `None` when none is configured.
    pub calendar: Option<Calendar>,
}

impl StateSettings {
    /// How far back a replay starts to rebuild every window: the largest window and one
    /// bucket (a window covers up to one bucket more than its span), and the lead, since an
    /// event produced that long ago can be dated that much later.
    pub fn replay_span_ms(&self) -> i64 {
        self.windows
            .iter()
            .map(|w| w.span_ms + w.bucket_ms)
            .max()
            .unwrap_or(0)
            + self.lead_ms
    }

    /// Where a replay starts to rebuild every window, rolling and calendar.
    pub fn replay_horizon(&self) -> ReplayHorizon {
        ReplayHorizon {
            rolling_span_ms: self.replay_span_ms(),
            lead_ms: self.lead_ms,
            calendar: self.calendar.clone(),
        }
    }
}

/// How far back a replay of the input starts: the rolling windows need a fixed span, a
/// calendar period reaches back to the start of the previous period, which depends on the
/// date.
#[derive(Debug, Clone)]
pub struct ReplayHorizon {
    rolling_span_ms: i64,
    lead_ms: i64,
    calendar: Option<Calendar>,
}

impl ReplayHorizon {
    /// The earliest message time a replay at `now_ms` reads from. A calendar period needs
    /// every event dated from its start, and an event may be dated up to the lead after its
    /// message was written.
    pub fn since_ms(&self, now_ms: i64) -> i64 {
        let rolling = now_ms.saturating_sub(self.rolling_span_ms);
        self.calendar
            .as_ref()
            .and_then(|c| c.oldest_start_ms(now_ms))
            .map_or(rolling, |start| {
                rolling.min(start.saturating_sub(self.lead_ms))
            })
    }
}

/// The service's whole KPI state.
#[derive(Debug)]
pub struct Aggregates {
    windows: Vec<WindowSpec>,
    calendar: Option<Calendar>,
    /// The calendar periods, in configuration order: each has a ring of its own in a series.
    periods: Vec<PeriodKind>,
    /// The names of the rolling windows then of the calendar windows: the order of every
    /// list of tallies in components.
    names: Vec<String>,
    lead_ms: i64,
    dimensions: Dimensions,
    rates: Rates,
    /// Index of the window whose customer churn ratio divides ARPA into CLV.
    clv_window: usize,
    dedup_horizon_ms: i64,
    partitions: FastMap<PartitionId, PartitionState>,
    /// The shape of each window's rings, in the order of `windows`.
    rings: Vec<Ring>,
    /// Scratch list of where an event lands in each window; reused to keep the hot path
    /// free of allocation.
    placements: Vec<Option<Placement>>,
}

/// Where one event lands: its series, and its bucket in each window (the same in every
/// series, so computed once).
struct Landing<'a> {
    windows: &'a [WindowSpec],
    periods: usize,
    lead_ms: i64,
    series: &'a [SeriesKey],
    placements: &'a [Option<Placement>],
}

impl Landing<'_> {
    /// Applies `apply` to the bucket holding the event in every window of every series.
    fn apply<T: Tally>(
        &self,
        map: &mut FastMap<SeriesKey, SeriesWindows<T>>,
        apply: impl Fn(&mut T),
    ) {
        for key in self.series {
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
                .chain((0..self.periods).map(|_| Window::calendar(&PERIOD_RING)))
                .collect(),
        });
        for (placement, window) in self.placements.iter().zip(series.windows.iter_mut()) {
            if let Some(tally) = placement.and_then(|p| window.bucket_at(p)) {
                apply(tally);
            }
        }
    }
}

impl Aggregates {
    pub fn new(settings: StateSettings) -> Self {
        let StateSettings {
            windows,
            lead_ms,
            dimensions,
            rates,
            clv_window,
            dedup_horizon_ms,
            calendar,
        } = settings;
        let names = windows
            .iter()
            .map(|w| w.name.clone())
            .chain(
                calendar
                    .iter()
                    .flat_map(|c| c.windows().iter().map(|w| w.name.clone())),
            )
            .collect();
        Aggregates {
            periods: calendar
                .as_ref()
                .map(|c| c.settings().periods.clone())
                .unwrap_or_default(),
            names,
            calendar,
            clv_window,
            dedup_horizon_ms,
            lead_ms,
            dimensions,
            rates,
            partitions: FastMap::default(),
            rings: windows.iter().map(|w| w.ring(lead_ms)).collect(),
            placements: Vec::new(),
            windows,
        }
    }

    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }

    /// The names of every window, rolling then calendar: the order of the tallies in
    /// components.
    pub fn window_names(&self) -> &[String] {
        &self.names
    }

    /// Every window's name and time range at `now_ms`, in the order of
    /// [`Aggregates::window_names`].
    pub fn frames(&self, now_ms: i64) -> Vec<WindowFrame> {
        let mut frames: Vec<WindowFrame> = self
            .windows
            .iter()
            .map(|w| WindowFrame {
                name: w.name.clone(),
                start_ms: w.start_ms(now_ms),
                end_ms: now_ms,
                followed_by: None,
            })
            .collect();
        if let Some(calendar) = &self.calendar {
            let first = frames.len();
            for window in calendar.windows() {
                // Outside the calendar's range (year 9999), an empty range at now.
                let (start_ms, end_ms) = calendar
                    .span(window, now_ms)
                    .map_or((now_ms, now_ms), |s| (s.start_ms, s.end_ms));
                // A previous period is followed until now by the same period's to-date
                // window.
                let followed_by = (window.which == PeriodWindow::Previous)
                    .then(|| {
                        calendar
                            .windows()
                            .iter()
                            .position(|w| w.kind == window.kind && w.which == PeriodWindow::ToDate)
                    })
                    .flatten()
                    .map(|to_date| first + to_date);
                frames.push(WindowFrame {
                    name: window.name.clone(),
                    start_ms,
                    end_ms,
                    followed_by,
                });
            }
        }
        frames
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
        // Disjoint borrows of the fields: one partition lookup per event.
        let Aggregates {
            windows,
            calendar,
            periods,
            lead_ms,
            dimensions,
            rates,
            partitions,
            rings,
            placements,
            dedup_horizon_ms,
            ..
        } = self;
        placements.clear();
        placements.extend(rings.iter().map(|r| r.place(event.occurred_at_ms, now_ms)));
        let mut late_for_period = false;
        if let Some(calendar) = calendar {
            let at = calendar.locate(event.occurred_at_ms);
            let now = calendar.locate(now_ms);
            for &kind in periods.iter() {
                let placement = at.zip(now).and_then(|(at, now)| {
                    let period = calendar.period_of(kind, &at);
                    let placement = PERIOD_RING.place(period, calendar.period_of(kind, &now))?;
                    // Decided from the message, never from when it is read, so that a
                    // replay decides as the live run did.
                    if calendar.written_late(kind, event.occurred_at_ms, &at, event.reference_ms) {
                        late_for_period = true;
                        return None;
                    }
                    Some(placement)
                });
                placements.push(placement);
            }
        }
        // No event is beyond the lead here (checked above), so an event without a bucket in
        // any window is older than the largest one: late.
        let late = placements.iter().all(Option::is_none);
        let billing = event.payload.family() == Family::Billing;
        if late && !billing {
            return Ok(Outcome::Late);
        }
        let state = partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(*dedup_horizon_ms));
        let id = state.seen.hash(&event.event_id);
        if state.seen.seen(id) {
            return Ok(Outcome::Duplicate);
        }
        let series = EventSeries::of(dimensions, event);
        let landing = Landing {
            windows,
            periods: periods.len(),
            lead_ms: *lead_ms,
            series: series.keys(),
            placements,
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
                let applied = state.ledger.apply(event, rates, series)?;
                if let Some((from, mrr)) = &applied.moved_from {
                    for (old, new) in from.keys().iter().zip(series.keys()) {
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
        state.seen.remember(id, event.occurred_at_ms);
        Ok(if late {
            Outcome::Late
        } else if late_for_period {
            Outcome::LateForPeriod
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
        let mut totals = Totals::new(&self.names);
        for part in parts {
            // Cannot mismatch: the windows are this instance's.
            let _ = totals.add(part);
        }
        self.records_of(&totals, now_ms)
    }

    /// The records of `totals`, with this instance's windows and CLV window.
    pub fn records_of(&self, totals: &Totals, now_ms: i64) -> Vec<KpiRecord> {
        totals.records(&self.frames(now_ms), Some(self.clv_window), now_ms)
    }

    /// The partitions holding state.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.partitions.keys().copied()
    }

    /// The tallies of one partition folded over each window at `now_ms`; no series for a
    /// partition without state (it had no event yet, which is still a known value: empty).
    pub fn components(&self, partition: PartitionId, now_ms: i64) -> PartitionComponents {
        let windows = self.names.clone();
        let Some(state) = self.partitions.get(&partition) else {
            return PartitionComponents {
                windows,
                series: Vec::new(),
            };
        };
        let mut current: HashMap<SeriesKey, Current> = HashMap::new();
        if partition.family == Family::Billing {
            for (mrr, series) in state.ledger.customers() {
                for key in series.keys() {
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

    /// Every series' tally per window at `now_ms`, rolling then calendar windows.
    fn fold<'s, T: Tally>(
        &'s self,
        map: &'s FastMap<SeriesKey, SeriesWindows<T>>,
        now_ms: i64,
    ) -> impl Iterator<Item = (SeriesKey, Vec<T>)> + 's {
        let periods = self.period_buckets(now_ms);
        map.iter().map(move |(key, series)| {
            let rolling = self
                .windows
                .iter()
                .zip(series.windows.iter())
                .map(|(spec, window)| {
                    let mut tally = T::default();
                    window.fold_into(spec, now_ms, &mut tally);
                    tally
                });
            let calendar = periods.iter().map(|period| {
                let mut tally = T::default();
                if let Some((ring, index)) = period
                    && let Some(window) = series.windows.get(*ring)
                {
                    window.fold_indices(*index, *index, &mut tally);
                }
                tally
            });
            (*key, rolling.chain(calendar).collect())
        })
    }

    /// For each calendar window at `now_ms`: the position of its period's ring in a series'
    /// rings and the number of its bucket; `None` outside the calendar's range.
    fn period_buckets(&self, now_ms: i64) -> Vec<Option<(usize, i64)>> {
        let Some(calendar) = &self.calendar else {
            return Vec::new();
        };
        calendar
            .windows()
            .iter()
            .map(|window| {
                let span = calendar.span(window, now_ms)?;
                let kind = self.periods.iter().position(|k| *k == window.kind)?;
                Some((self.windows.len() + kind, span.period))
            })
            .collect()
    }
}

#[cfg(test)]
mod period_tests;
#[cfg(test)]
mod tests;
