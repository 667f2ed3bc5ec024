//! Calendar periods in the company's time zone: today, this week, this month, this quarter,
//! this year, and the complete period before each.
//!
//! Calendar state is kept in two units, local days and local months ([`BucketUnit`]); a week
//! is seven day buckets, a quarter three month buckets and a year twelve. Boundaries come
//! from the time-zone database bundled with jiff (the core reads no files): a local day lasts
//! 23, 24 or 25 hours (23.5 or 24.5 on Lord Howe Island) and starts at the first instant of
//! its local date, which is local midnight unless a daylight-saving gap skips it.
//!
//! Every period is a run of local dates, so each of them is bounded the same way: the local
//! date can only change at a local midnight or at a transition of the zone, and between two
//! transitions local time moves with UTC. The first instant of a period is the latest
//! midnight or transition before an instant at which its period begins, the end the earliest
//! one after it at which the period changes; this holds where local dates jump forward (a
//! skipped day) or back (a repeated one) as well as on ordinary daylight-saving days.
//!
//! [`Calendar::locate`] runs for every event. It answers from a small table of the local days
//! it computed last, checked by range, so that the answer never depends on what the table
//! holds and the common case does no time-zone conversion and no allocation.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

const DAY_MS: i64 = 86_400_000;

/// A calendar period users report by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodKind {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 5] = [
        PeriodKind::Day,
        PeriodKind::Week,
        PeriodKind::Month,
        PeriodKind::Quarter,
        PeriodKind::Year,
    ];

    /// The name used in configuration and in window names.
    pub fn name(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Week => "week",
            PeriodKind::Month => "month",
            PeriodKind::Quarter => "quarter",
            PeriodKind::Year => "year",
        }
    }

    /// The buckets the period is made of: days for days and weeks, months for the rest.
    pub fn unit(self) -> BucketUnit {
        match self {
            PeriodKind::Day | PeriodKind::Week => BucketUnit::Day,
            PeriodKind::Month | PeriodKind::Quarter | PeriodKind::Year => BucketUnit::Month,
        }
    }
}

impl FromStr for PeriodKind {
    type Err = CalendarError;

    /// One of the exact lowercase names of [`PeriodKind::name`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PeriodKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| CalendarError::UnknownPeriod(text.to_owned()))
    }
}

/// The local weekday a week starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeekStart {
    Monday,
    Sunday,
}

impl WeekStart {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            WeekStart::Monday => "monday",
            WeekStart::Sunday => "sunday",
        }
    }

    /// Days from the week's first day to the Thursday 1970-01-01 (day 0), so that week
    /// `w` starts on day `7 w - shift`.
    fn shift(self) -> i64 {
        match self {
            WeekStart::Monday => 3,
            WeekStart::Sunday => 4,
        }
    }
}

impl FromStr for WeekStart {
    type Err = CalendarError;

    /// `monday` or `sunday`, exactly.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [WeekStart::Monday, WeekStart::Sunday]
            .into_iter()
            .find(|start| start.name() == text)
            .ok_or_else(|| CalendarError::UnknownWeekStart(text.to_owned()))
    }
}

/// The unit of calendar state: a local day or a local month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketUnit {
    Day,
    Month,
}

/// Which of a period's two windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodWindow {
    /// From the local start of the period holding now to now.
    ToDate,
    /// The whole period before the one holding now.
    Previous,
}

/// One calendar window, named as it is published: `month_to_date`, `previous_quarter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarWindowSpec {
    pub kind: PeriodKind,
    pub which: PeriodWindow,
    pub name: String,
}

impl CalendarWindowSpec {
    /// The window `which` of `kind`, with its published name.
    pub fn new(kind: PeriodKind, which: PeriodWindow) -> Self {
        let name = match which {
            PeriodWindow::ToDate => format!("{}_to_date", kind.name()),
            PeriodWindow::Previous => format!("previous_{}", kind.name()),
        };
        CalendarWindowSpec { kind, which, name }
    }
}

/// What the calendar is built from (validated where the configuration is loaded).
#[derive(Debug, Clone)]
pub struct CalendarSettings {
    pub zone: TimeZone,
    pub week_start: WeekStart,
    /// The periods in configuration order, each at most once.
    pub periods: Vec<PeriodKind>,
    /// How long after a period's end an event still counts into it, in milliseconds, >= 0.
    pub grace_ms: i64,
}

/// Why a calendar setting is refused; each names the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown time zone `{0}`: expected an IANA name such as `Europe/Rome`, or `UTC`")]
    UnknownTimeZone(String),
    #[error("unknown calendar period `{0}`: expected day, week, month, quarter or year")]
    UnknownPeriod(String),
    #[error("unknown week start `{0}`: expected monday or sunday")]
    UnknownWeekStart(String),
    #[error("calendar period `{}` is listed more than once", .0.name())]
    RepeatedPeriod(PeriodKind),
    #[error("calendar grace of {0} ms is negative")]
    NegativeGrace(i64),
}

/// A time-zone name looked up in the tz database bundled with jiff (`UTC` included); the
/// error names it. Names are matched without regard to ASCII case, as jiff matches them.
pub fn time_zone(name: &str) -> Result<TimeZone, CalendarError> {
    // The bundled database explicitly, whatever features other crates enable on jiff: the
    // core reads no files, and a deployment must not depend on the host's zoneinfo.
    match TimeZoneDatabase::bundled().get(name) {
        // `Etc/Unknown` is jiff's name for "no zone": it would silently mean UTC.
        Ok(zone) if !zone.is_unknown() => Ok(zone),
        _ => Err(CalendarError::UnknownTimeZone(name.to_owned())),
    }
}

/// Where an instant falls in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalBuckets {
    /// The local civil date as days since 1970-01-01 (proleptic Gregorian).
    pub day: i64,
    /// UTC ms of the start of the next local day (exclusive end of this one).
    pub day_end_ms: i64,
    /// The local month as `year * 12 + (month - 1)`.
    pub month: i64,
    /// UTC ms of the start of the next local month.
    pub month_end_ms: i64,
}

/// The period, local dates and boundaries of one calendar window at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodSpan {
    /// The period's number among those of its kind ([`Calendar::period_of`]).
    pub period: i64,
    pub unit: BucketUnit,
    /// First bucket index (a day or month index as in [`LocalBuckets`]), inclusive.
    pub first: i64,
    /// Last bucket index, inclusive.
    pub last: i64,
    /// UTC ms of the period's local start.
    pub start_ms: i64,
    /// To date: the instant asked about; previous: UTC ms of the current period's start.
    pub end_ms: i64,
}

/// The calendar of one configuration: its windows, and where instants fall.
#[derive(Debug, Clone)]
pub struct Calendar {
    settings: CalendarSettings,
    windows: Vec<CalendarWindowSpec>,
    days: DayCache,
}

impl Calendar {
    /// Refuses a period listed twice and a negative grace.
    pub fn new(settings: CalendarSettings) -> Result<Self, CalendarError> {
        for (i, kind) in settings.periods.iter().enumerate() {
            if settings.periods[..i].contains(kind) {
                return Err(CalendarError::RepeatedPeriod(*kind));
            }
        }
        if settings.grace_ms < 0 {
            return Err(CalendarError::NegativeGrace(settings.grace_ms));
        }
        let windows = settings
            .periods
            .iter()
            .flat_map(|&kind| {
                [PeriodWindow::ToDate, PeriodWindow::Previous]
                    .map(|which| CalendarWindowSpec::new(kind, which))
            })
            .collect();
        Ok(Calendar {
            settings,
            windows,
            days: DayCache::new(),
        })
    }

    /// The calendar windows in publishing order: for each configured period in
    /// configuration order, `<p>_to_date` then `previous_<p>`. Empty when no period is
    /// configured.
    pub fn windows(&self) -> &[CalendarWindowSpec] {
        &self.windows
    }

    pub fn settings(&self) -> &CalendarSettings {
        &self.settings
    }

    /// The time zone's IANA name, as the tz database spells it.
    pub fn zone_name(&self) -> Option<&str> {
        self.settings.zone.iana_name()
    }

    pub fn grace_ms(&self) -> i64 {
        self.settings.grace_ms
    }

    /// The local day and month holding `at_ms`; `None` outside the range jiff represents
    /// (-9999-01-02T01:59:59Z to 9999-12-30T22:00:00Z). Allocation-free; the common case is
    /// a lookup in the table of recent local days.
    #[inline]
    pub fn locate(&mut self, at_ms: i64) -> Option<LocalBuckets> {
        match self.days.get(at_ms) {
            Some(buckets) => Some(buckets),
            None => self.locate_and_remember(at_ms),
        }
    }

    /// A new local day: converted, and kept in the table.
    #[cold]
    fn locate_and_remember(&mut self, at_ms: i64) -> Option<LocalBuckets> {
        let located = locate_uncached(&self.settings.zone, at_ms)?;
        self.days.insert(at_ms, located);
        Some(located.buckets)
    }

    /// The bucket range and boundaries of `window` at `now_ms` (`None` outside the range
    /// jiff represents).
    pub fn span(&self, window: &CalendarWindowSpec, now_ms: i64) -> Option<PeriodSpan> {
        let zone = &self.settings.zone;
        let grain = self.grain(window.kind);
        let unit = window.kind.unit();
        let start_ms = run_start(zone, grain, now_ms)?;
        match window.which {
            PeriodWindow::ToDate => {
                let day = local_day(zone, now_ms)?;
                let period = grain.key(day)?;
                let (first, _) = grain.buckets(period)?;
                let last = match unit {
                    BucketUnit::Day => day,
                    BucketUnit::Month => month_of_day(day)?,
                };
                Some(PeriodSpan {
                    period,
                    unit,
                    first,
                    last,
                    start_ms,
                    end_ms: now_ms,
                })
            }
            PeriodWindow::Previous => {
                let before = start_ms.checked_sub(1)?;
                let period = grain.key(local_day(zone, before)?)?;
                let (first, last) = grain.buckets(period)?;
                Some(PeriodSpan {
                    period,
                    unit,
                    first,
                    last,
                    start_ms: run_start(zone, grain, before)?,
                    end_ms: start_ms,
                })
            }
        }
    }

    /// The end of the period of `kind` holding `at_ms`: the first instant of the next one
    /// (`None` outside the range jiff represents). For days and months it is what
    /// [`Calendar::locate`] gives; for weeks, quarters and years it is converted at each call.
    /// An event in time for its day is in time for its week, and one in time for its month
    /// for its quarter and year, so only events late for a day or month need it.
    pub fn period_end_ms(&self, kind: PeriodKind, at_ms: i64) -> Option<i64> {
        run_end(&self.settings.zone, self.grain(kind), at_ms)
    }

    /// The number of the period of `kind` holding a located instant. Consecutive periods of
    /// a kind have consecutive numbers (but for a date a zone skipped), so a period's state
    /// is a bucket numbered by it, and the previous period's is the one before.
    pub fn period_of(&self, kind: PeriodKind, at: &LocalBuckets) -> i64 {
        match kind {
            PeriodKind::Day => at.day,
            PeriodKind::Week => (at.day + self.settings.week_start.shift()).div_euclid(7),
            PeriodKind::Month => at.month,
            PeriodKind::Quarter => at.month.div_euclid(3),
            PeriodKind::Year => at.month.div_euclid(12),
        }
    }

    /// Whether an event at `at_ms` (located at `at`) whose message was written at
    /// `written_ms` came after its period of `kind` closed: after the period's end plus the
    /// grace. A period ends no earlier than the day or month holding the event, so only a
    /// message late for those needs the period's own end, which is converted then.
    pub fn written_late(
        &self,
        kind: PeriodKind,
        at_ms: i64,
        at: &LocalBuckets,
        written_ms: i64,
    ) -> bool {
        let grace = self.settings.grace_ms;
        let bucket_end = match kind.unit() {
            BucketUnit::Day => at.day_end_ms,
            BucketUnit::Month => at.month_end_ms,
        };
        if written_ms <= bucket_end.saturating_add(grace) {
            return false;
        }
        match kind {
            PeriodKind::Day | PeriodKind::Month => true,
            // Outside jiff's range there is no later end to wait for.
            _ => self
                .period_end_ms(kind, at_ms)
                .is_none_or(|end| written_ms > end.saturating_add(grace)),
        }
    }

    /// The earliest instant any calendar window needs at `now_ms`, the start of the oldest
    /// previous period: where a replay must start to rebuild them. `None` when no period is
    /// configured, or when a period's start is outside the range jiff represents.
    pub fn oldest_start_ms(&self, now_ms: i64) -> Option<i64> {
        let previous = self
            .windows
            .iter()
            .filter(|w| w.which == PeriodWindow::Previous);
        let mut oldest: Option<i64> = None;
        for window in previous {
            let start = self.span(window, now_ms)?.start_ms;
            oldest = Some(oldest.map_or(start, |o| o.min(start)));
        }
        oldest
    }

    fn grain(&self, kind: PeriodKind) -> Grain {
        Grain {
            kind,
            week_shift: self.settings.week_start.shift(),
        }
    }
}

/// A period kind with the week start it is counted from.
#[derive(Debug, Clone, Copy)]
struct Grain {
    kind: PeriodKind,
    week_shift: i64,
}

impl Grain {
    const DAY: Grain = Grain {
        kind: PeriodKind::Day,
        week_shift: 0,
    };
    const MONTH: Grain = Grain {
        kind: PeriodKind::Month,
        week_shift: 0,
    };

    /// The period holding local date `day`: a day, week, month, quarter or year number.
    fn key(self, day: i64) -> Option<i64> {
        Some(match self.kind {
            PeriodKind::Day => day,
            PeriodKind::Week => (day + self.week_shift).div_euclid(7),
            PeriodKind::Month => month_of_day(day)?,
            PeriodKind::Quarter => month_of_day(day)?.div_euclid(3),
            PeriodKind::Year => month_of_day(day)?.div_euclid(12),
        })
    }

    /// The local dates of period `key`: its first day and its number of days.
    fn days(self, key: i64) -> Option<(i64, i64)> {
        match self.kind {
            PeriodKind::Day => Some((key, 1)),
            PeriodKind::Week => Some((key * 7 - self.week_shift, 7)),
            PeriodKind::Month => months_days(key, 1),
            PeriodKind::Quarter => months_days(key * 3, 3),
            PeriodKind::Year => months_days(key * 12, 12),
        }
    }

    /// The first and last bucket (of the kind's unit) of period `key`.
    fn buckets(self, key: i64) -> Option<(i64, i64)> {
        let (first, count) = match self.kind {
            PeriodKind::Day | PeriodKind::Week => self.days(key)?,
            PeriodKind::Month => (key, 1),
            PeriodKind::Quarter => (key * 3, 3),
            PeriodKind::Year => (key * 12, 12),
        };
        Some((first, first + count - 1))
    }
}

/// The Thursday all day numbers count from.
const EPOCH: Date = jiff::civil::date(1970, 1, 1);

/// The civil date `day` days after 1970-01-01; `None` outside jiff's years -9999 to 9999.
fn date_of_day(day: i64) -> Option<Date> {
    // Jiff's dates reach 4.4 million days back and 2.9 million ahead; the bound keeps the
    // hours below from overflowing and leaves the range check to jiff.
    if day.unsigned_abs() > 10_000_000 {
        return None;
    }
    EPOCH.checked_add(SignedDuration::from_hours(day * 24)).ok()
}

fn day_of_date(date: Date) -> i64 {
    date.duration_since(EPOCH).as_hours() / 24
}

/// The month of local date `day` as `year * 12 + (month - 1)`.
fn month_of_day(day: i64) -> Option<i64> {
    let date = date_of_day(day)?;
    Some(i64::from(date.year()) * 12 + i64::from(date.month()) - 1)
}

/// The first day of month number `first` and the number of days of `count` months from it.
fn months_days(first: i64, count: i64) -> Option<(i64, i64)> {
    let first_date = |month: i64| {
        let year = i16::try_from(month.div_euclid(12)).ok()?;
        // rem_euclid(12) + 1 is 1..=12.
        Date::new(year, month.rem_euclid(12) as i8 + 1, 1).ok()
    };
    let mut days = 0;
    for month in first..first + count {
        days += i64::from(first_date(month)?.days_in_month());
    }
    Some((day_of_date(first_date(first)?), days))
}

fn timestamp(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

fn offset_ms(zone: &TimeZone, at: Timestamp) -> i64 {
    i64::from(zone.to_offset(at).seconds()) * 1000
}

/// The local date of `at_ms` as days since 1970-01-01.
fn local_day(zone: &TimeZone, at_ms: i64) -> Option<i64> {
    let at = timestamp(at_ms)?;
    Some((at_ms + offset_ms(zone, at)).div_euclid(DAY_MS))
}

/// The first instant of the run of instants up to `at_ms` whose local dates are all in the
/// period holding `at_ms`.
fn run_start(zone: &TimeZone, grain: Grain, at_ms: i64) -> Option<i64> {
    let key = grain.key(local_day(zone, at_ms)?)?;
    let first_local_ms = grain.days(key)?.0 * DAY_MS;
    let mut t = at_ms;
    loop {
        let at = timestamp(t)?;
        // Where local time reaches the period's first midnight at the offset in force at t.
        let midnight = first_local_ms - offset_ms(zone, at);
        let after = at.checked_add(SignedDuration::from_nanos(1)).ok()?;
        let Some(transition) = zone.preceding(after).next() else {
            return Some(midnight);
        };
        // Transitions fall on whole seconds: the milliseconds are exact.
        let segment_start = transition.timestamp().as_millisecond();
        if midnight > segment_start {
            return Some(midnight);
        }
        // The whole segment is in the period; so is the one before, unless the transition
        // changed the period.
        let before = segment_start - 1;
        if grain.key(local_day(zone, before)?)? != key {
            return Some(segment_start);
        }
        t = before;
    }
}

/// The first instant after `at_ms` whose local date is not in the period holding `at_ms`.
fn run_end(zone: &TimeZone, grain: Grain, at_ms: i64) -> Option<i64> {
    let key = grain.key(local_day(zone, at_ms)?)?;
    let (first_day, days) = grain.days(key)?;
    let next_local_ms = (first_day + days) * DAY_MS;
    let mut t = at_ms;
    loop {
        let at = timestamp(t)?;
        let midnight = next_local_ms - offset_ms(zone, at);
        let Some(transition) = zone.following(at).next() else {
            return Some(midnight);
        };
        let segment_end = transition.timestamp().as_millisecond();
        if midnight < segment_end {
            return Some(midnight);
        }
        if grain.key(local_day(zone, segment_end)?)? != key {
            return Some(segment_end);
        }
        t = segment_end;
    }
}

/// A local day with the range of instants it covers, `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy)]
struct LocatedDay {
    start_ms: i64,
    /// The day's end, kept apart from `buckets.day_end_ms` because the table narrows it.
    end_ms: i64,
    /// The offset in force at the instant it was computed for.
    offset_ms: i64,
    buckets: LocalBuckets,
}

/// [`Calendar::locate`] without the table: the time-zone conversion itself.
fn locate_uncached(zone: &TimeZone, at_ms: i64) -> Option<LocatedDay> {
    let at = timestamp(at_ms)?;
    let offset_ms = offset_ms(zone, at);
    let day = (at_ms + offset_ms).div_euclid(DAY_MS);
    let day_end_ms = run_end(zone, Grain::DAY, at_ms)?;
    Some(LocatedDay {
        start_ms: run_start(zone, Grain::DAY, at_ms)?,
        end_ms: day_end_ms,
        offset_ms,
        buckets: LocalBuckets {
            day,
            day_end_ms,
            month: month_of_day(day)?,
            month_end_ms: run_end(zone, Grain::MONTH, at_ms)?,
        },
    })
}

const CACHED_DAYS: usize = 64;

/// The local days computed last, direct-mapped by day number at the last offset seen, so
/// that a month of events spread over time stays in the table. An entry answers only for
/// the instants of its own range, so a slot holding another day is a miss, never a wrong
/// answer.
#[derive(Clone)]
struct DayCache {
    slots: [LocatedDay; CACHED_DAYS],
    offset_ms: i64,
}

impl DayCache {
    fn new() -> Self {
        let empty = LocatedDay {
            start_ms: 0,
            end_ms: 0,
            offset_ms: 0,
            buckets: LocalBuckets {
                day: 0,
                day_end_ms: 0,
                month: 0,
                month_end_ms: 0,
            },
        };
        DayCache {
            slots: [empty; CACHED_DAYS],
            offset_ms: 0,
        }
    }

    #[inline]
    fn slot(&self, at_ms: i64) -> usize {
        // Wrapping only at the ends of i64, where the range check refuses the slot anyway.
        let day = at_ms.wrapping_add(self.offset_ms).div_euclid(DAY_MS);
        day.rem_euclid(CACHED_DAYS as i64) as usize
    }

    #[inline]
    fn get(&self, at_ms: i64) -> Option<LocalBuckets> {
        let entry = &self.slots[self.slot(at_ms)];
        (entry.start_ms <= at_ms && at_ms < entry.end_ms).then_some(entry.buckets)
    }

    fn insert(&mut self, at_ms: i64, day: LocatedDay) {
        // Kept within the range the uncached path answers, so the table never answers an
        // instant that path refuses.
        // Jiff takes whole milliseconds from its first second to its last one.
        let min_ms = Timestamp::MIN.as_second() * 1000;
        let max_ms = Timestamp::MAX.as_second() * 1000;
        let day = LocatedDay {
            start_ms: day.start_ms.max(min_ms),
            end_ms: day.end_ms.min(max_ms + 1),
            ..day
        };
        self.offset_ms = day.offset_ms;
        let slot = self.slot(at_ms);
        self.slots[slot] = day;
    }
}

impl fmt::Debug for DayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = self.slots.iter().filter(|s| s.start_ms < s.end_ms).count();
        f.debug_struct("DayCache")
            .field("filled", &filled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
