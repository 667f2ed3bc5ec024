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
use std::sync::Arc;

/// Maps keyed by partitions and series, looked up for every event. Their keys are small
/// and bounded (partitions, interned dimension values), so a fast hash is safe here.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::backlog::Backlog;
use crate::billing::{BillingLedger, BillingTally, Current, CustomerSeries, Movement};
use crate::calendar::{Calendar, CalendarWindowSpec, PeriodKind, PeriodWindow};
use crate::components::{
    FamilyTallies, PartitionComponents, SeriesComponents, Totals, WindowFrame,
};
use crate::dedup::SeenIds;
use crate::dimension::Dimensions;
use crate::event::{DIMENSION_FIELDS, Event, Family, Payload, Reason, Rejection};
use crate::health::customer::CustomerSignals;
use crate::health::parts::{
    CustomerEvent, CustomerPart, DetractorAnswer, PartChange, PartitionSignals, SignalSettings,
    TicketSignal,
};
use crate::kpi::KpiRecord;
use crate::open_tickets::{FirstReplyTime, OpenTicket, OpenTickets};
use crate::partition::PartitionId;
use crate::period_components::{CHECKPOINT_INTERVAL_MS, PeriodComponents, Restored};
use crate::rates::Rates;
use crate::sla::{self, SlaTargets};
use crate::survey::SurveyTally;
use crate::ticket::TicketTally;
use crate::trial::Trials;
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
    /// The overall series alone.
    const OVERALL: EventSeries = EventSeries {
        keys: [SeriesKey::Overall; 1 + DIMENSION_FIELDS.len()],
        len: 1,
    };

    /// The series of `event`, interning its dimension values.
    fn of(dimensions: &mut Dimensions, event: &Event<'_>) -> Self {
        let mut series = EventSeries::OVERALL;
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

/// Where a billing customer counts, as the ledger keeps it: the series of its latest event,
/// and since when it has counted in each (the `occurred_at` of the event that put it
/// there), which tells whether its losses are those of a customer that was in the series
/// at a window's start.
#[derive(Debug, Clone, Copy)]
struct CustomerPlace {
    series: EventSeries,
    joined_ms: [i64; 1 + DIMENSION_FIELDS.len()],
}

impl CustomerPlace {
    fn new(series: EventSeries, at_ms: i64) -> Self {
        CustomerPlace {
            series,
            joined_ms: [at_ms; 1 + DIMENSION_FIELDS.len()],
        }
    }
}

/// The same series are the same place, whenever the customer joined them.
impl PartialEq for CustomerPlace {
    fn eq(&self, other: &Self) -> bool {
        self.series == other.series
    }
}

impl CustomerSeries for CustomerPlace {
    fn succeed(&mut self, previous: &Self) {
        let before = previous.series.keys.iter().zip(&previous.joined_ms);
        let now = self.joined_ms.iter_mut().zip(&self.series.keys);
        for ((joined, key), (old_key, old_joined)) in now.zip(before) {
            if key == old_key {
                *joined = *old_joined;
            }
        }
    }
}

/// A calendar period's ring: the previous period, the current one and, for events within
/// the accepted skew, the next. Each period of each kind is one bucket, so that whether a
/// message came too late is decided for the period itself (an answer too late for its day
/// may still count in its week).
const PERIOD_RING: IndexRing = IndexRing::new(2, 1);
const PERIOD_SLOTS: usize = PERIOD_RING.slots() as usize;

/// Where an event dated `at_ms`, whose message was written at `reference_ms`, lands at
/// `now_ms` in each window, rolling then calendar, into `placements`. Returns whether its
/// message came after one of its calendar periods had closed (it lands in none of those).
fn place(
    rings: &[Ring],
    calendar: Option<&mut Calendar>,
    periods: &[PeriodKind],
    at_ms: i64,
    reference_ms: i64,
    now_ms: i64,
    placements: &mut Vec<Option<Placement>>,
) -> bool {
    placements.clear();
    placements.extend(rings.iter().map(|r| r.place(at_ms, now_ms)));
    let mut late_for_period = false;
    if let Some(calendar) = calendar {
        let at = calendar.locate(at_ms);
        let now = calendar.locate(now_ms);
        for &kind in periods {
            let placement = at.zip(now).and_then(|(at, now)| {
                let period = calendar.period_of(kind, &at);
                let placement = PERIOD_RING.place(period, calendar.period_of(kind, &now))?;
                // Decided from the message, never from when it is read, so that a replay
                // decides as the live run did.
                if calendar.written_late(kind, at_ms, &at, reference_ms) {
                    late_for_period = true;
                    return None;
                }
                Some(placement)
            });
            placements.push(placement);
        }
    }
    late_for_period
}

/// Notes a change by the message at `offset` in the calendar periods it lands in
/// (`placements`, one per period): a message below a restored record's offset is in that
/// record already, and its placement there is dropped.
fn claim_periods(
    marks: &mut [[PeriodMark; PERIOD_SLOTS]],
    placements: &mut [Option<Placement>],
    offset: i64,
) {
    for (marks, slot) in marks.iter_mut().zip(placements) {
        let Some(placement) = *slot else { continue };
        let Some(mark) = marks.get_mut(placement.slot()) else {
            continue;
        };
        if mark.number != placement.index() {
            *mark = PeriodMark::new(placement.index());
        }
        if offset < mark.restored_through {
            *slot = None;
        } else {
            mark.version += 1;
        }
    }
}

/// What became of an event offered to [`Aggregates::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the state.
    Counted,
    /// Its `occurred_at` is older than the largest window: it counts in no window (but a
    /// billing event still updated the current MRR, and a ticket event the open tickets).
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
    ledger: BillingLedger<CustomerPlace>,
    /// The pending trials of a billing partition, each in the series of its start.
    trials: Trials<EventSeries>,
    /// The open tickets of a tickets partition; a waiting reply keeps its series.
    open_tickets: OpenTickets<EventSeries>,
    /// For each calendar period, in configuration order, what is known of the period in
    /// each slot of its ring: whether it changed since written, and up to which offset a
    /// restored record counts.
    marks: Vec<[PeriodMark; PERIOD_SLOTS]>,
    /// The partition's part of its customers' health signals.
    signals: PartitionSignals,
}

impl PartitionState {
    fn new(settings: &PartitionSettings, periods: usize, family: Family) -> Self {
        let PartitionSettings {
            dedup_horizon_ms,
            max_open_age_ms,
            trial_grace_ms,
            signals,
        } = *settings;
        PartitionState {
            seen: SeenIds::new(dedup_horizon_ms),
            surveys: FastMap::default(),
            tickets: FastMap::default(),
            billing: FastMap::default(),
            ledger: BillingLedger::default(),
            trials: Trials::new(trial_grace_ms),
            open_tickets: OpenTickets::new(max_open_age_ms),
            marks: vec![[PeriodMark::new(i64::MIN); PERIOD_SLOTS]; periods],
            signals: PartitionSignals::new(family, signals),
        }
    }
}

/// The settings a partition's state is made with.
#[derive(Debug, Clone, Copy)]
struct PartitionSettings {
    dedup_horizon_ms: i64,
    max_open_age_ms: i64,
    trial_grace_ms: i64,
    signals: SignalSettings,
}

/// What is known of one period of a partition beside its tallies.
#[derive(Debug, Clone, Copy)]
struct PeriodMark {
    number: i64,
    /// Counts the events applied to the period; `written` is the count its last record had.
    version: u64,
    written: u64,
    written_at_ms: Option<i64>,
    /// Messages below this offset are in the restored record already.
    restored_through: i64,
}

impl PeriodMark {
    const fn new(number: i64) -> Self {
        PeriodMark {
            number,
            version: 0,
            written: 0,
            written_at_ms: None,
            restored_through: i64::MIN,
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
    /// How long a ticket may stay open before it is dropped from the open tickets and
    /// counted as abandoned (`sla.max_open_age`).
    pub max_open_age_ms: i64,
    /// The first-reply and resolution targets of each priority.
    pub sla: SlaTargets,
    /// How long after its `trial_ends_at` a trial still converts (`billing.trial_grace`).
    pub trial_grace_ms: i64,
    /// The customers' health signals: their window, and when an idle customer is
    /// forgotten.
    pub signals: SignalSettings,
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

    /// How far back the replay of a tickets partition starts: also every ticket that can
    /// still be open, opened up to the maximum open age ago, and dated up to the lead after
    /// its message.
    pub fn tickets_replay_span_ms(&self) -> i64 {
        self.replay_span_ms()
            .max(self.max_open_age_ms.saturating_add(self.lead_ms))
    }

    /// Where a replay starts to rebuild every window, rolling and calendar, and the open
    /// tickets.
    pub fn replay_horizon(&self) -> ReplayHorizon {
        ReplayHorizon {
            rolling_span_ms: self.replay_span_ms(),
            tickets_span_ms: self.tickets_replay_span_ms(),
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
    /// A tickets partition also rebuilds its open tickets.
    tickets_span_ms: i64,
    lead_ms: i64,
    calendar: Option<Calendar>,
}

impl ReplayHorizon {
    /// The earliest message time a replay of a `family` partition at `now_ms` reads from.
    /// A calendar period needs every event dated from its start, and an event may be dated
    /// up to the lead after its message was written.
    pub fn since_ms(&self, family: Family, now_ms: i64) -> i64 {
        self.since_ms_restored(family, now_ms, &[])
    }

    /// The earliest message time a replay of a `family` partition at `now_ms` reads from,
    /// when the periods in `restored` are restored from their records: those need no replay
    /// of their start (the replay must then also start no later than their offsets).
    pub fn since_ms_restored(&self, family: Family, now_ms: i64, restored: &[Restored]) -> i64 {
        let span_ms = match family {
            Family::Tickets => self.tickets_span_ms,
            Family::Surveys | Family::Billing => self.rolling_span_ms,
        };
        let rolling = now_ms.saturating_sub(span_ms);
        let Some(calendar) = &self.calendar else {
            return rolling;
        };
        calendar
            .windows()
            .iter()
            .filter_map(|window| calendar.span(window, now_ms).map(|s| (window.kind, s)))
            .filter(|(kind, span)| {
                !restored
                    .iter()
                    .any(|r| r.kind == *kind && r.number == span.period)
            })
            .map(|(_, span)| span.start_ms.saturating_sub(self.lead_ms))
            .fold(rolling, i64::min)
    }

    /// The periods whose records a replay at `now_ms` can restore: the current and the
    /// previous period of each configured kind.
    pub fn wanted(&self, now_ms: i64) -> Vec<(PeriodKind, i64)> {
        let Some(calendar) = &self.calendar else {
            return Vec::new();
        };
        calendar
            .windows()
            .iter()
            .filter_map(|w| Some((w.kind, calendar.span(w, now_ms)?.period)))
            .collect()
    }

    /// Whether a record was numbered in this calendar: its time zone and week start.
    pub fn matches(&self, record: &PeriodComponents) -> bool {
        self.calendar.as_ref().is_some_and(|c| record.counted_in(c))
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
    /// Shared with the other workers' state, and replaced whole when the rates change.
    rates: Arc<Rates>,
    /// Index of the window whose customer churn ratio divides ARPA into CLV.
    clv_window: usize,
    partition_settings: PartitionSettings,
    sla: SlaTargets,
    /// Tickets dropped from the open tickets for their age, not yet taken.
    abandoned_tickets: u64,
    partitions: FastMap<PartitionId, PartitionState>,
    /// The shape of each window's rings, in the order of `windows`.
    rings: Vec<Ring>,
    /// Scratch list of where an event lands in each window; reused to keep the hot path
    /// free of allocation.
    placements: Vec<Option<Placement>>,
    /// The same for a first reply counted at its ticket's `ticket.opened`, which lands
    /// where the reply's time does.
    reply_placements: Vec<Option<Placement>>,
    /// The same for the losses of a customer that joined a series inside a window
    /// ([`joiner_placements`]).
    joiner_placements: Vec<Option<Placement>>,
    /// The same for a trial expired at its deadline.
    trial_placements: Vec<Option<Placement>>,
}

/// The rings every series has: one per rolling window, with room for the lead, then one
/// per calendar period.
#[derive(Clone, Copy)]
struct RingShapes<'a> {
    windows: &'a [WindowSpec],
    periods: usize,
    lead_ms: i64,
}

impl RingShapes<'_> {
    /// The rings of one series, made when the series first appears.
    fn series_windows<'m, T: Tally>(
        &self,
        map: &'m mut FastMap<SeriesKey, SeriesWindows<T>>,
        key: SeriesKey,
    ) -> &'m mut SeriesWindows<T> {
        map.entry(key).or_insert_with(|| SeriesWindows {
            windows: self
                .windows
                .iter()
                .map(|w| Window::new(w, self.lead_ms))
                .chain((0..self.periods).map(|_| Window::calendar(&PERIOD_RING)))
                .collect(),
        })
    }

    /// Adds a restored period's tally (the first of `tallies`) into ring `ring` of one
    /// series, at `placement`.
    fn restore<T: Tally>(
        &self,
        map: &mut FastMap<SeriesKey, SeriesWindows<T>>,
        key: SeriesKey,
        ring: usize,
        placement: Placement,
        tallies: &[T],
    ) {
        let Some(restored) = tallies.first() else {
            return;
        };
        let series = self.series_windows(map, key);
        if let Some(tally) = series
            .windows
            .get_mut(ring)
            .and_then(|w| w.bucket_at(placement))
        {
            tally.merge(restored);
        }
    }
}

/// Where one event lands: its series, and its bucket in each window (the same in every
/// series, so computed once).
struct Landing<'a> {
    shapes: RingShapes<'a>,
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
        let series = self.shapes.series_windows(map, key);
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
            max_open_age_ms,
            sla,
            trial_grace_ms,
            signals,
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
            partition_settings: PartitionSettings {
                dedup_horizon_ms,
                max_open_age_ms,
                trial_grace_ms,
                signals,
            },
            sla,
            abandoned_tickets: 0,
            lead_ms,
            dimensions,
            rates: Arc::new(rates),
            partitions: FastMap::default(),
            rings: windows.iter().map(|w| w.ring(lead_ms)).collect(),
            placements: Vec::new(),
            reply_placements: Vec::new(),
            joiner_placements: Vec::new(),
            trial_placements: Vec::new(),
            windows,
        }
    }

    pub fn dimensions(&self) -> &Dimensions {
        &self.dimensions
    }

    /// Converts the amounts of the events recorded from now on at `rates`; what the ledger
    /// holds already stays as it was converted.
    pub fn set_rates(&mut self, rates: Arc<Rates>) {
        self.rates = rates;
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

    /// Forgets a partition's state, its customers' signal parts included (revoked, or about
    /// to be replayed from scratch).
    pub fn drop_partition(&mut self, partition: PartitionId) {
        self.partitions.remove(&partition);
    }

    /// Restores periods of `partition` from their records, before its replay: each record
    /// of this calendar whose period a window holds at `now_ms` becomes that period's
    /// tallies, and messages below its offset will not count in it again
    /// ([`Aggregates::record_at`]). Others are ignored; the replay rebuilds their periods.
    pub fn restore(&mut self, partition: PartitionId, records: &[PeriodComponents], now_ms: i64) {
        let Aggregates {
            windows,
            calendar,
            periods,
            lead_ms,
            dimensions,
            partitions,
            partition_settings,
            ..
        } = self;
        let Some(calendar) = calendar else {
            return;
        };
        let Some(now) = calendar.locate(now_ms) else {
            return;
        };
        let state = partitions.entry(partition).or_insert_with(|| {
            PartitionState::new(partition_settings, periods.len(), partition.family)
        });
        for record in records {
            if !record.counted_in(calendar) {
                continue;
            }
            let Some(kind) = record.kind() else { continue };
            let Some(k) = periods.iter().position(|p| *p == kind) else {
                continue;
            };
            let Some(placement) = PERIOD_RING.place(record.number, calendar.period_of(kind, &now))
            else {
                continue;
            };
            let shapes = RingShapes {
                windows,
                periods: periods.len(),
                lead_ms: *lead_ms,
            };
            for series in &record.series {
                let key = match &series.dimension {
                    None => SeriesKey::Overall,
                    Some((name, value)) => {
                        let Some(dim) = dimensions.names().position(|n| n == name) else {
                            continue;
                        };
                        SeriesKey::Dimension(dim as u8, dimensions.intern(dim, Some(value)))
                    }
                };
                let ring = windows.len() + k;
                match &series.tallies {
                    FamilyTallies::Surveys(t) => {
                        shapes.restore(&mut state.surveys, key, ring, placement, t)
                    }
                    FamilyTallies::Tickets(t) => {
                        shapes.restore(&mut state.tickets, key, ring, placement, t)
                    }
                    FamilyTallies::Billing { windows: t, .. } => {
                        shapes.restore(&mut state.billing, key, ring, placement, t)
                    }
                }
            }
            if let Some(mark) = state.marks[k].get_mut(placement.slot()) {
                *mark = PeriodMark {
                    written_at_ms: Some(now_ms),
                    restored_through: record.through_offset,
                    ..PeriodMark::new(record.number)
                };
            }
        }
    }

    /// The records of `partition`'s periods due to be written at `now_ms`, each with the
    /// version to confirm once written ([`Aggregates::periods_written`]): a closed period
    /// that changed since written, and an open one that changed and was last written a
    /// [`CHECKPOINT_INTERVAL_MS`] ago or never. `through_offset` is the partition's next
    /// offset, every message below which has been handled.
    pub fn period_components(
        &self,
        partition: PartitionId,
        through_offset: i64,
        now_ms: i64,
    ) -> Vec<(PeriodComponents, u64)> {
        let (Some(calendar), Some(state)) = (&self.calendar, self.partitions.get(&partition))
        else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for (k, kind) in self.periods.iter().enumerate() {
            for which in [PeriodWindow::Previous, PeriodWindow::ToDate] {
                let Some(span) = calendar.span(&CalendarWindowSpec::new(*kind, which), now_ms)
                else {
                    continue;
                };
                let slot = span.period.rem_euclid(PERIOD_SLOTS as i64) as usize;
                let Some(mark) = state.marks[k].get(slot) else {
                    continue;
                };
                let closed = which == PeriodWindow::Previous
                    && now_ms > span.end_ms.saturating_add(calendar.grace_ms());
                let checkpoint = mark
                    .written_at_ms
                    .is_none_or(|at| now_ms.saturating_sub(at) >= CHECKPOINT_INTERVAL_MS);
                if mark.number != span.period || mark.version <= mark.written {
                    continue;
                }
                if !(closed || checkpoint) {
                    continue;
                }
                let ring = self.windows.len() + k;
                let series = self.period_series(state, partition.family, ring, span.period);
                due.push((
                    PeriodComponents {
                        period: kind.name().to_owned(),
                        number: span.period,
                        timezone: calendar.zone_name().unwrap_or_default().to_owned(),
                        week_start: calendar.settings().week_start.name().to_owned(),
                        start_ms: span.start_ms,
                        end_ms: match which {
                            PeriodWindow::Previous => span.end_ms,
                            PeriodWindow::ToDate => calendar
                                .period_end_ms(*kind, span.start_ms)
                                .unwrap_or(span.end_ms),
                        },
                        closed,
                        through_offset,
                        series,
                    },
                    mark.version,
                ));
            }
        }
        due
    }

    /// Notes that the records of `partition`'s periods with these versions were written at
    /// `now_ms`.
    pub fn periods_written(
        &mut self,
        partition: PartitionId,
        written: &[(PeriodKind, i64, u64)],
        now_ms: i64,
    ) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        for (kind, number, version) in written {
            let Some(k) = self.periods.iter().position(|p| p == kind) else {
                continue;
            };
            let slot = number.rem_euclid(PERIOD_SLOTS as i64) as usize;
            if let Some(mark) = state.marks[k].get_mut(slot)
                && mark.number == *number
            {
                mark.written = mark.written.max(*version);
                mark.written_at_ms = Some(now_ms);
            }
        }
    }

    /// Every series' tally of one period of a partition.
    fn period_series(
        &self,
        state: &PartitionState,
        family: Family,
        ring: usize,
        number: i64,
    ) -> Vec<SeriesComponents> {
        fn one<T: Tally>(
            map: &FastMap<SeriesKey, SeriesWindows<T>>,
            ring: usize,
            number: i64,
        ) -> impl Iterator<Item = (SeriesKey, T)> + '_ {
            map.iter().map(move |(key, series)| {
                let mut tally = T::default();
                if let Some(window) = series.windows.get(ring) {
                    window.fold_indices(number, number, &mut tally);
                }
                (*key, tally)
            })
        }
        let tallies: Vec<(SeriesKey, FamilyTallies)> = match family {
            Family::Surveys => one(&state.surveys, ring, number)
                .map(|(k, t)| (k, FamilyTallies::Surveys(vec![t])))
                .collect(),
            Family::Tickets => one(&state.tickets, ring, number)
                .map(|(k, t)| (k, FamilyTallies::Tickets(vec![t])))
                .collect(),
            Family::Billing => one(&state.billing, ring, number)
                .map(|(k, t)| {
                    let tallies = FamilyTallies::Billing {
                        windows: vec![t],
                        current: Current::default(),
                    };
                    (k, tallies)
                })
                .collect(),
        };
        tallies
            .into_iter()
            .map(|(key, tallies)| SeriesComponents {
                dimension: self.dimension_label(key),
                tallies,
            })
            .collect()
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
        self.record_at(partition, event, i64::MAX, now_ms)
    }

    /// [`Aggregates::record`] for the message at `offset` of `partition`: a message below
    /// the offset of a period restored from its record ([`Aggregates::restore`]) does not
    /// count in that period again.
    pub fn record_at(
        &mut self,
        partition: PartitionId,
        event: &Event<'_>,
        offset: i64,
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
            reply_placements,
            joiner_placements,
            trial_placements,
            partition_settings,
            sla,
            abandoned_tickets,
            ..
        } = self;
        let late_for_period = place(
            rings,
            calendar.as_mut(),
            periods,
            event.occurred_at_ms,
            event.reference_ms,
            now_ms,
            placements,
        );
        // No event is beyond the lead here (checked above), so an event without a bucket in
        // any window is older than the largest one: late.
        let late = placements.iter().all(Option::is_none);
        let family = event.payload.family();
        // A late billing event still changes the current MRR, a late ticket event the open
        // tickets; a late survey answer changes nothing.
        if late && family == Family::Surveys {
            return Ok(Outcome::Late);
        }
        let state = partitions.entry(partition).or_insert_with(|| {
            PartitionState::new(partition_settings, periods.len(), partition.family)
        });
        let id = state.seen.hash(&event.event_id);
        if state.seen.seen(id) {
            return Ok(if late && family == Family::Tickets {
                Outcome::Late
            } else {
                Outcome::Duplicate
            });
        }
        let rolling = windows.len();
        claim_periods(&mut state.marks, &mut placements[rolling..], offset);
        let shapes = RingShapes {
            windows,
            periods: periods.len(),
            lead_ms: *lead_ms,
        };
        // A late ticket event counts in no window: its dimension values are not interned,
        // and it makes no series.
        let series = if late && family == Family::Tickets {
            EventSeries::OVERALL
        } else {
            EventSeries::of(dimensions, event)
        };
        let landing = Landing {
            shapes,
            series: series.keys(),
            placements,
        };
        let open = &mut state.open_tickets;
        let at = event.occurred_at_ms;
        // The customer's health signals count every applied event, late ones included.
        let customer = CustomerEvent {
            key: state.signals.key(&event.customer_id),
            customer_id: &event.customer_id,
            segment: event.dimensions[0].as_deref(),
            at_ms: at,
            offset,
            event_id: &event.event_id,
        };
        let mut ticket_signal = TicketSignal::default();
        let first_reply = match &event.payload {
            Payload::SurveyResponded {
                survey,
                score,
                comment,
            } => {
                let commented = comment.is_some();
                landing.apply(&mut state.surveys, |t| t.record(*survey, *score, commented));
                state
                    .signals
                    .answered(&customer, *survey, *score, comment.as_deref());
                None
            }
            Payload::TicketOpened {
                ticket_id,
                priority,
            } => {
                if !late {
                    landing.apply(&mut state.tickets, |t| t.opened += 1);
                }
                ticket_signal.opened = true;
                open.opened(ticket_id, customer.key, at, *priority)
            }
            Payload::TicketReopened {
                ticket_id,
                priority,
            } => {
                if !late {
                    landing.apply(&mut state.tickets, |t| t.reopened += 1);
                }
                open.reopened(ticket_id, customer.key, at, *priority);
                None
            }
            Payload::TicketReplied {
                ticket_id,
                author,
                public,
                priority,
            } => open.replied(ticket_id, at, *author, *public, *priority, series),
            Payload::TicketResolved {
                ticket_id,
                agent_replies,
                reopens,
                opened_at_ms,
                priority,
            } => {
                let ticket = open.resolved(ticket_id, at);
                // Validation guarantees opened_at <= occurred_at.
                let duration_ms = u64::try_from(at - opened_at_ms).unwrap_or(0);
                let priority = priority.or(ticket.and_then(|t| t.priority));
                let target_ms = sla.of(priority).resolution_ms;
                if sla::breached(duration_ms, target_ms) {
                    ticket_signal.breached_at_ms = Some(at);
                }
                if !late {
                    landing.apply(&mut state.tickets, |t| {
                        t.record_resolution(*agent_replies, *reopens, duration_ms);
                        t.service.resolution_sla.judge(duration_ms, target_ms);
                        if let Some(ticket) = ticket {
                            t.service.record_tracked_resolution(
                                ticket.public_agent_replies,
                                ticket.reopened,
                            );
                        }
                    });
                }
                None
            }
            Payload::SubscriptionStarted(_)
            | Payload::SubscriptionChanged(_)
            | Payload::SubscriptionCanceled { .. }
            | Payload::SubscriptionRenewed { .. }
            | Payload::TrialStarted { .. } => {
                if let Payload::TrialStarted {
                    subscription_id, ..
                } = &event.payload
                {
                    let active = state.ledger.is_active(subscription_id);
                    state.trials.check_start(subscription_id, at, active)?;
                } else {
                    let place_now = CustomerPlace::new(series, at);
                    let applied = state.ledger.apply(event, rates, place_now)?;
                    state.signals.billed(&customer, &applied);
                    if let Some(moved) = &applied.moved_from {
                        let (mrr, subscriptions) = (moved.mrr, moved.subscriptions);
                        for (old, new) in moved.from.series.keys().iter().zip(series.keys()) {
                            if old != new {
                                landing.apply_to(&mut state.billing, *old, |t| {
                                    t.record_move_out(mrr, subscriptions)
                                });
                                landing.apply_to(&mut state.billing, *new, |t| {
                                    t.record_move_in(mrr, subscriptions)
                                });
                            }
                        }
                    }
                    landing.apply(&mut state.billing, |t| t.record(&applied.change));
                    let change = &applied.change;
                    if matches!(
                        change.movement,
                        Some(Movement::Contraction | Movement::Churn)
                    ) {
                        // Per series, the loss of a customer that was not there at a window's
                        // start counts again in the bucket where the customer joined it (became
                        // active, or moved in; the loss's own time if that came later): in a
                        // rolling window, that bucket leaves the window exactly when the joining
                        // does. A calendar period has one bucket, so there it is the loss's own,
                        // and only if the customer joined in the same period.
                        let mut last: Option<i64> = None;
                        for (slot, key) in series.keys().iter().enumerate() {
                            let joined = applied.series.joined_ms[slot]
                                .max(applied.active_since_ms)
                                .min(at);
                            if last != Some(joined) {
                                place(
                                    rings,
                                    calendar.as_mut(),
                                    periods,
                                    joined,
                                    event.reference_ms,
                                    now_ms,
                                    joiner_placements,
                                );
                                let own = landing.placements.iter().skip(rolling);
                                for (period, own) in
                                    joiner_placements.iter_mut().skip(rolling).zip(own)
                                {
                                    if period != own {
                                        *period = None;
                                    }
                                }
                                last = Some(joined);
                            }
                            let joiners = Landing {
                                shapes,
                                series: series.keys(),
                                placements: joiner_placements,
                            };
                            joiners.apply_to(&mut state.billing, *key, |t| {
                                t.record_joiner_loss(change.amount)
                            });
                        }
                    }
                }
                // Accepted: the partition's event time reaches the event, and the trials
                // it decides are counted in their own series.
                state.trials.advance(at);
                match &event.payload {
                    Payload::TrialStarted {
                        subscription_id,
                        trial_ends_at_ms,
                    } => {
                        state
                            .trials
                            .start(subscription_id, *trial_ends_at_ms, series);
                        landing.apply(&mut state.billing, |t| t.trials_started += 1);
                    }
                    Payload::SubscriptionStarted(terms) => {
                        if let Some(trial) = state.trials.convert(&terms.subscription_id) {
                            let converted = Landing {
                                shapes,
                                series: trial.series.keys(),
                                placements: landing.placements,
                            };
                            converted.apply(&mut state.billing, |t| t.trials_converted += 1);
                        }
                    }
                    _ => {}
                }
                // An expiry counts at the trial's deadline, the time its fate was decided,
                // from this message: a replay that restored a period past this message
                // does not count it there again.
                while let Some(trial) = state.trials.next_expired() {
                    place(
                        rings,
                        calendar.as_mut(),
                        periods,
                        trial.deadline_ms,
                        event.reference_ms,
                        now_ms,
                        trial_placements,
                    );
                    claim_periods(&mut state.marks, &mut trial_placements[rolling..], offset);
                    let expired = Landing {
                        shapes,
                        series: trial.series.keys(),
                        placements: trial_placements,
                    };
                    expired.apply(&mut state.billing, |t| t.trials_expired += 1);
                }
                None
            }
        };
        *abandoned_tickets += state.open_tickets.take_abandoned();
        if let Some(FirstReplyTime {
            replied_at_ms,
            duration_ms,
            series,
            priority,
        }) = first_reply
        {
            // Counted where the reply lands, in the reply's series: a reply that came before
            // its ticket's `ticket.opened` is counted with the opening, at its own time.
            let placements: &[Option<Placement>] = if replied_at_ms == at {
                landing.placements
            } else {
                place(
                    rings,
                    calendar.as_mut(),
                    periods,
                    replied_at_ms,
                    event.reference_ms,
                    now_ms,
                    reply_placements,
                );
                claim_periods(&mut state.marks, &mut reply_placements[rolling..], offset);
                reply_placements
            };
            let reply_landing = Landing {
                shapes,
                series: series.keys(),
                placements,
            };
            let target_ms = sla.of(priority).first_reply_ms;
            reply_landing.apply(&mut state.tickets, |t| {
                t.first_reply.record(duration_ms);
                t.service.first_reply_sla.judge(duration_ms, target_ms);
            });
            if sla::breached(duration_ms, target_ms) {
                ticket_signal.breached_at_ms = Some(replied_at_ms);
            }
        }
        if family == Family::Tickets {
            let changes = state.open_tickets.take_changes();
            state.signals.ticket(&customer, ticket_signal, changes);
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

    /// The customer signal parts of `partition` changed since the last call, each counting
    /// the partition's events below `through_offset`, and `None` for each customer forgotten
    /// since (no event for `forget_after` at `now_ms`, no MRR and no open ticket): the count
    /// of `None`s is the count of customers forgotten.
    pub fn take_signal_changes(
        &mut self,
        partition: PartitionId,
        now_ms: i64,
        through_offset: i64,
    ) -> Vec<PartChange> {
        self.partitions
            .get_mut(&partition)
            .map(|state| state.signals.take_changes(now_ms, through_offset))
            .unwrap_or_default()
    }

    /// The detractors' answers `partition` applied since the last call, in the order
    /// applied.
    pub fn take_detractors(&mut self, partition: PartitionId) -> Vec<DetractorAnswer> {
        self.partitions
            .get_mut(&partition)
            .map(|state| state.signals.take_detractors())
            .unwrap_or_default()
    }

    /// Keeps the detractors' answers of `partition` from `offset` on only (where its replay
    /// starts counting, as dead letters do).
    pub fn keep_detractors_from(&mut self, partition: PartitionId, offset: i64) {
        self.signals_of(partition).keep_detractors_from(offset);
    }

    /// Puts the customer signal parts `partition` wrote earlier in place, before its replay
    /// (which then skips, for each customer, the events its part counts).
    pub fn restore_signals(
        &mut self,
        partition: PartitionId,
        parts: impl IntoIterator<Item = (Arc<str>, CustomerPart)>,
    ) {
        self.signals_of(partition).restore(parts);
    }

    /// The customer signals of `partition`, made with its state if it has none yet.
    fn signals_of(&mut self, partition: PartitionId) -> &mut PartitionSignals {
        let settings = self.partition_settings;
        let periods = self.periods.len();
        &mut self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionState::new(&settings, periods, partition.family))
            .signals
    }

    /// The part of `customer_id`'s signals that `partition` holds.
    pub fn customer_signals(
        &self,
        partition: PartitionId,
        customer_id: &str,
    ) -> Option<CustomerSignals> {
        let part = self.partitions.get(&partition)?.signals.get(customer_id)?;
        Some(part.signals)
    }

    /// Tickets dropped from the open tickets for their age since the last call, over every
    /// partition.
    pub fn take_abandoned_tickets(&mut self) -> u64 {
        std::mem::take(&mut self.abandoned_tickets)
    }

    /// The open ticket `ticket_id` of `partition`, unless it has passed the maximum age.
    pub fn open_ticket(&self, partition: PartitionId, ticket_id: &str) -> Option<&OpenTicket> {
        self.partitions.get(&partition)?.open_tickets.get(ticket_id)
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

    /// Brings the block totals of every rolling window up to date at `now_ms`
    /// ([`Window::refresh_blocks`]), so that the snapshots that follow fold a few totals
    /// rather than every bucket. Values are the same without it.
    /// Every family's windows are visited: a tally that keeps no blocks returns at once, so
    /// which tallies keep them is decided by [`Tally::FOLDED_IN_BLOCKS`] alone.
    pub fn refresh_blocks(&mut self, now_ms: i64) {
        fn refresh<T: Tally>(
            specs: &[WindowSpec],
            map: &mut FastMap<SeriesKey, SeriesWindows<T>>,
            now_ms: i64,
        ) {
            for series in map.values_mut() {
                for (spec, window) in specs.iter().zip(series.windows.iter_mut()) {
                    window.refresh_blocks(spec, now_ms);
                }
            }
        }
        let specs = &self.windows;
        for state in self.partitions.values_mut() {
            refresh(specs, &mut state.surveys, now_ms);
            refresh(specs, &mut state.tickets, now_ms);
            refresh(specs, &mut state.billing, now_ms);
        }
    }

    /// The tallies of one partition folded over each window at `now_ms`; no series for a
    /// partition without state (it had no event yet, which is still a known value: empty).
    pub fn components(&self, partition: PartitionId, now_ms: i64) -> PartitionComponents {
        let windows = self.names.clone();
        let Some(state) = self.partitions.get(&partition) else {
            return PartitionComponents {
                windows,
                series: Vec::new(),
                backlog: None,
            };
        };
        let mut current: HashMap<SeriesKey, Current> = HashMap::new();
        if partition.family == Family::Billing {
            for (mrr, subscriptions, place) in state.ledger.customers() {
                for key in place.series.keys() {
                    current.entry(*key).or_default().add(mrr, subscriptions);
                }
            }
            for series in state.trials.series() {
                for key in series.keys() {
                    current.entry(*key).or_default().active_trials += 1;
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
        let backlog = (partition.family == Family::Tickets).then(|| {
            let mut backlog = Backlog::default();
            for ticket in state.open_tickets.iter() {
                backlog.count(ticket, &self.sla, now_ms);
            }
            backlog
        });
        PartitionComponents {
            windows,
            series,
            backlog,
        }
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
mod service_tests;
#[cfg(test)]
mod signal_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trial_tests;
