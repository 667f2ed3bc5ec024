//! The calendar against jiff's own zoned arithmetic (start of day, tomorrow, first of
//! month, month and year spans) and against invariants checked with jiff's plain
//! timestamp-to-local conversion, in zones with every odd feature the tz database has.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use jiff::civil::{self, DateTime};
use jiff::{ToSpan, Unit};
use proptest::prelude::*;

use super::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// Zones whose local dates never go backwards and whose midnights are skipped, if ever, by
/// gaps that start at midnight: there jiff's start of day is the first instant of a date.
const ORDINARY_ZONES: [&str; 12] = [
    "UTC",
    "Europe/Rome",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "America/Havana",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Europe/Dublin",
    "Antarctica/Troll",
    "Africa/Casablanca",
];

/// Zones with skipped and repeated dates, offsets of more than 12 hours, local mean time
/// with seconds, a fold across midnight: only invariants hold here.
const ODD_ZONES: [&str; 10] = [
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "Pacific/Kwajalein",
    "America/St_Johns",
    "America/Sitka",
    "America/Juneau",
    "Asia/Manila",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "Europe/Amsterdam",
];

fn zone(name: &str) -> TimeZone {
    time_zone(name).unwrap()
}

fn calendar(zone_name: &str, week_start: WeekStart, periods: &[PeriodKind]) -> Calendar {
    Calendar::new(CalendarSettings {
        zone: zone(zone_name),
        week_start,
        periods: periods.to_vec(),
        grace_ms: HOUR,
    })
    .unwrap()
}

fn all_periods(zone_name: &str) -> Calendar {
    calendar(zone_name, WeekStart::Monday, &PeriodKind::ALL)
}

/// UTC ms of an RFC 3339 instant.
fn utc(text: &str) -> i64 {
    text.parse::<Timestamp>().unwrap().as_millisecond()
}

/// UTC ms of a local civil time in `zone_name` (the earlier of a repeated time).
fn local(zone_name: &str, text: &str) -> i64 {
    let civil: DateTime = text.parse().unwrap();
    civil
        .to_zoned(zone(zone_name))
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn day_number(date: Date) -> i64 {
    i64::from(date.since((Unit::Day, EPOCH)).unwrap().get_days())
}

fn date_number(text: &str) -> i64 {
    day_number(text.parse().unwrap())
}

fn month_number(date: Date) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month()) - 1
}

fn window(kind: PeriodKind, which: PeriodWindow) -> CalendarWindowSpec {
    CalendarWindowSpec::new(kind, which)
}

fn span(calendar: &Calendar, kind: PeriodKind, which: PeriodWindow, now_ms: i64) -> PeriodSpan {
    calendar.span(&window(kind, which), now_ms).unwrap()
}

/// The first and last millisecond jiff takes.
fn jiff_range_ms() -> (i64, i64) {
    (
        Timestamp::MIN.as_second() * 1000,
        Timestamp::MAX.as_second() * 1000,
    )
}

/// The local date of an instant by jiff's plain conversion; `None` outside its range.
fn local_date(zone: &TimeZone, at_ms: i64) -> Option<Date> {
    Some(
        zone.to_datetime(Timestamp::from_millisecond(at_ms).ok()?)
            .date(),
    )
}

/// `locate` and the day's start as jiff's zoned arithmetic gives them: the local date, its
/// start of day, the start of tomorrow and of the first of next month.
fn zoned_reference(zone: &TimeZone, at_ms: i64) -> (LocalBuckets, i64) {
    let at = Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_zoned(zone.clone());
    let start_of = |date: Date| {
        date.to_zoned(zone.clone())
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    let date = at.date();
    let next_month = date.first_of_month().checked_add(1.month()).unwrap();
    let buckets = LocalBuckets {
        day: day_number(date),
        day_end_ms: start_of(date.tomorrow().unwrap()),
        month: month_number(date),
        month_end_ms: start_of(next_month),
    };
    (
        buckets,
        at.start_of_day().unwrap().timestamp().as_millisecond(),
    )
}

/// A window's span by civil date arithmetic: the period's first date from the weekday or
/// the month number, the previous period one period length earlier, boundaries at jiff's
/// start of each date.
fn civil_reference(
    zone: &TimeZone,
    week_start: WeekStart,
    kind: PeriodKind,
    which: PeriodWindow,
    now_ms: i64,
) -> PeriodSpan {
    let today = local_date(zone, now_ms).unwrap();
    let first_date = |date: Date| match kind {
        PeriodKind::Day => date,
        PeriodKind::Week => {
            let back = match week_start {
                WeekStart::Monday => date.weekday().to_monday_zero_offset(),
                WeekStart::Sunday => date.weekday().to_sunday_zero_offset(),
            };
            date.checked_sub(i64::from(back).days()).unwrap()
        }
        PeriodKind::Month => date.first_of_month(),
        PeriodKind::Quarter => civil::date(date.year(), (date.month() - 1) / 3 * 3 + 1, 1),
        PeriodKind::Year => date.first_of_year(),
    };
    let length = match kind {
        PeriodKind::Day => 1.day(),
        PeriodKind::Week => 1.week(),
        PeriodKind::Month => 1.month(),
        PeriodKind::Quarter => 3.months(),
        PeriodKind::Year => 1.year(),
    };
    let start_of = |date: Date| {
        date.to_zoned(zone.clone())
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    let bucket = |date: Date| match kind.unit() {
        BucketUnit::Day => day_number(date),
        BucketUnit::Month => month_number(date),
    };
    // Periods numbered by their first date: every week's first date is 3 (from Monday) or 4
    // (from Sunday) days before a multiple of 7 days after the Thursday 1970-01-01.
    let number = |first: Date| match kind {
        PeriodKind::Day => day_number(first),
        PeriodKind::Week => {
            let shift = if week_start == WeekStart::Monday {
                3
            } else {
                4
            };
            (day_number(first) + shift).div_euclid(7)
        }
        PeriodKind::Month => month_number(first),
        PeriodKind::Quarter => month_number(first).div_euclid(3),
        PeriodKind::Year => month_number(first).div_euclid(12),
    };
    let current = first_date(today);
    match which {
        PeriodWindow::ToDate => PeriodSpan {
            period: number(current),
            unit: kind.unit(),
            first: bucket(current),
            last: bucket(today),
            start_ms: start_of(current),
            end_ms: now_ms,
        },
        PeriodWindow::Previous => {
            let previous = current.checked_sub(length).unwrap();
            PeriodSpan {
                period: number(previous),
                unit: kind.unit(),
                first: bucket(previous),
                last: bucket(current.yesterday().unwrap()),
                start_ms: start_of(previous),
                end_ms: start_of(current),
            }
        }
    }
}

#[test]
fn periods_and_week_starts_are_read_by_their_exact_names() {
    for kind in PeriodKind::ALL {
        assert_eq!(kind.name().parse::<PeriodKind>(), Ok(kind));
    }
    assert_eq!("sunday".parse::<WeekStart>(), Ok(WeekStart::Sunday));
    assert_eq!("monday".parse::<WeekStart>(), Ok(WeekStart::Monday));
    for text in ["Day", "days", "", " month", "fortnight"] {
        let error = text.parse::<PeriodKind>().unwrap_err();
        assert_eq!(error, CalendarError::UnknownPeriod(text.to_owned()));
        assert!(error.to_string().contains(&format!("`{text}`")), "{error}");
    }
    for text in ["Monday", "saturday", "mon"] {
        let error = text.parse::<WeekStart>().unwrap_err();
        assert_eq!(error, CalendarError::UnknownWeekStart(text.to_owned()));
        assert!(error.to_string().contains(&format!("`{text}`")), "{error}");
    }
    let units: Vec<_> = PeriodKind::ALL.iter().map(|k| k.unit()).collect();
    assert_eq!(
        units,
        [
            BucketUnit::Day,
            BucketUnit::Day,
            BucketUnit::Month,
            BucketUnit::Month,
            BucketUnit::Month
        ]
    );
}

#[test]
fn unknown_time_zones_are_rejected_with_their_name() {
    for name in [
        "Europe/Rom",
        "",
        "Etc/Unknown",
        "Mars/Olympus_Mons",
        "../../etc/passwd",
        "/usr/share/zoneinfo/Europe/Rome",
        "+01:00",
        "CET-1CEST,M3.5.0,M10.5.0/3",
    ] {
        let error = time_zone(name).unwrap_err();
        assert_eq!(error, CalendarError::UnknownTimeZone(name.to_owned()));
        assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
    }
    for name in ["UTC", "Europe/Rome", "America/New_York", "Asia/Kolkata"] {
        assert_eq!(time_zone(name).unwrap().iana_name(), Some(name));
    }
}

#[test]
fn repeated_periods_and_a_negative_grace_are_refused() {
    let settings = |periods: Vec<PeriodKind>, grace_ms| CalendarSettings {
        zone: TimeZone::UTC,
        week_start: WeekStart::Monday,
        periods,
        grace_ms,
    };
    let repeated = vec![PeriodKind::Month, PeriodKind::Day, PeriodKind::Month];
    let error = Calendar::new(settings(repeated, 0)).unwrap_err();
    assert_eq!(error, CalendarError::RepeatedPeriod(PeriodKind::Month));
    assert!(error.to_string().contains("`month`"), "{error}");
    let error = Calendar::new(settings(vec![PeriodKind::Day], -1)).unwrap_err();
    assert_eq!(error, CalendarError::NegativeGrace(-1));
    let calendar = Calendar::new(settings(vec![PeriodKind::Day], 0)).unwrap();
    assert_eq!(calendar.grace_ms(), 0);
    assert_eq!(calendar.settings().periods, [PeriodKind::Day]);
}

#[test]
fn windows_follow_the_configuration_order() {
    let names = |periods: &[PeriodKind]| -> Vec<String> {
        calendar("UTC", WeekStart::Monday, periods)
            .windows()
            .iter()
            .map(|w| w.name.clone())
            .collect()
    };
    assert_eq!(
        names(&[PeriodKind::Quarter, PeriodKind::Day, PeriodKind::Week]),
        [
            "quarter_to_date",
            "previous_quarter",
            "day_to_date",
            "previous_day",
            "week_to_date",
            "previous_week"
        ]
    );
    assert_eq!(
        names(&[PeriodKind::Year]),
        ["year_to_date", "previous_year"]
    );
    assert!(names(&[]).is_empty());
    let calendar = calendar("UTC", WeekStart::Monday, &[PeriodKind::Month]);
    assert_eq!(
        calendar.windows(),
        [
            window(PeriodKind::Month, PeriodWindow::ToDate),
            window(PeriodKind::Month, PeriodWindow::Previous)
        ]
    );
    assert_eq!(calendar.windows()[1].kind, PeriodKind::Month);
    assert_eq!(calendar.windows()[1].which, PeriodWindow::Previous);
}

#[test]
fn locate_matches_jiffs_zoned_arithmetic_every_half_hour() {
    let years = |zone_name| match zone_name {
        // Its last daylight-saving time, whose gap skips midnight.
        "America/Sao_Paulo" => ("2018-10-01T00:00:00Z", "2019-03-01T00:00:00Z"),
        _ => ("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    };
    for zone_name in ORDINARY_ZONES {
        let tz = zone(zone_name);
        let mut calendar = all_periods(zone_name);
        let (from, to) = years(zone_name);
        for at in (utc(from)..utc(to)).step_by(30 * MINUTE as usize) {
            let (expected, start) = zoned_reference(&tz, at);
            assert_eq!(calendar.locate(at), Some(expected), "{zone_name} {at}");
            let day = span(&calendar, PeriodKind::Day, PeriodWindow::ToDate, at);
            assert_eq!(day.start_ms, start, "{zone_name} {at}");
        }
    }
}

#[test]
fn local_days_last_23_to_25_hours_where_the_offset_changes() {
    let cases = [
        ("Europe/Rome", "2026-03-29", 23 * 60),
        ("Europe/Rome", "2026-10-25", 25 * 60),
        ("Europe/Rome", "2026-03-28", 24 * 60),
        ("America/New_York", "2026-03-08", 23 * 60),
        ("America/New_York", "2026-11-01", 25 * 60),
        ("Australia/Lord_Howe", "2026-04-05", 24 * 60 + 30),
        ("Australia/Lord_Howe", "2026-10-04", 23 * 60 + 30),
        ("Asia/Kolkata", "2026-03-29", 24 * 60),
        ("America/Sao_Paulo", "2018-11-04", 23 * 60),
        ("America/Sao_Paulo", "2019-02-16", 25 * 60),
    ];
    for (zone_name, date, minutes) in cases {
        let mut calendar = all_periods(zone_name);
        // Noon is on that date whatever the offset.
        let noon = local(zone_name, &format!("{date}T12:00"));
        let day = calendar.locate(noon).unwrap();
        assert_eq!(day.day, date_number(date), "{zone_name} {date}");
        let start = span(&calendar, PeriodKind::Day, PeriodWindow::ToDate, noon).start_ms;
        assert_eq!(
            day.day_end_ms - start,
            minutes * MINUTE,
            "{zone_name} {date}"
        );
    }
    // The day the clocks go forward in Sao Paulo starts at 01:00, the end of the gap.
    let calendar = all_periods("America/Sao_Paulo");
    let noon = local("America/Sao_Paulo", "2018-11-04T12:00");
    let start = span(&calendar, PeriodKind::Day, PeriodWindow::ToDate, noon).start_ms;
    assert_eq!(start, utc("2018-11-04T03:00:00Z"));
}

#[test]
fn days_and_months_tile_2026_without_gap_or_overlap() {
    // Every local day of 2026 that does not last 24 hours, in minutes.
    let expected: [(&str, &[(&str, i64)]); 5] = [
        ("UTC", &[]),
        ("Asia/Kolkata", &[]),
        (
            "Europe/Rome",
            &[("2026-03-29", 23 * 60), ("2026-10-25", 25 * 60)],
        ),
        (
            "America/New_York",
            &[("2026-03-08", 23 * 60), ("2026-11-01", 25 * 60)],
        ),
        (
            "Australia/Lord_Howe",
            &[("2026-04-05", 24 * 60 + 30), ("2026-10-04", 23 * 60 + 30)],
        ),
    ];
    for (zone_name, odd_days) in expected {
        let mut calendar = all_periods(zone_name);
        let mut start = local(zone_name, "2026-01-01T00:00");
        let mut lengths = BTreeMap::new();
        for offset in 0..365 {
            let day = calendar.locate(start).unwrap();
            assert_eq!(day.day, date_number("2026-01-01") + offset, "{zone_name}");
            assert_eq!(
                span(&calendar, PeriodKind::Day, PeriodWindow::ToDate, start).start_ms,
                start
            );
            // The last millisecond of the day is still in it; the next one is not.
            let last = calendar.locate(day.day_end_ms - 1).unwrap();
            assert_eq!(last.day, day.day, "{zone_name}");
            assert_eq!(last.day_end_ms, day.day_end_ms, "{zone_name}");
            let length = (day.day_end_ms - start) / MINUTE;
            if length != 24 * 60 {
                let date = date_of_day(day.day).unwrap().to_string();
                lengths.insert(date, length);
            }
            start = day.day_end_ms;
        }
        assert_eq!(start, local(zone_name, "2027-01-01T00:00"), "{zone_name}");
        let odd_days: BTreeMap<_, _> = odd_days.iter().map(|&(d, l)| (d.to_owned(), l)).collect();
        assert_eq!(lengths, odd_days, "{zone_name}");

        let mut start = local(zone_name, "2026-01-01T00:00");
        for month in 1..=12 {
            let buckets = calendar.locate(start).unwrap();
            assert_eq!(buckets.month, 2026 * 12 + month - 1, "{zone_name}");
            let this_month = span(&calendar, PeriodKind::Month, PeriodWindow::ToDate, start);
            assert_eq!(this_month.start_ms, start, "{zone_name} {month}");
            let last = calendar.locate(buckets.month_end_ms - 1).unwrap();
            assert_eq!(last.month, buckets.month, "{zone_name} {month}");
            start = buckets.month_end_ms;
        }
        assert_eq!(start, local(zone_name, "2027-01-01T00:00"), "{zone_name}");
    }
}

#[test]
fn an_instant_on_a_boundary_belongs_to_the_period_that_starts_there() {
    // November starts in Rome at 23:00 UTC on October 31st.
    let mut calendar = all_periods("Europe/Rome");
    let boundary = utc("2026-10-31T23:00:00Z");
    let october = 2026 * 12 + 9;
    let on = calendar.locate(boundary).unwrap();
    let before = calendar.locate(boundary - 1).unwrap();
    assert_eq!((on.day, on.month), (date_number("2026-11-01"), october + 1));
    assert_eq!(
        (before.day, before.month),
        (date_number("2026-10-31"), october)
    );
    assert_eq!(before.day_end_ms, boundary);
    assert_eq!(before.month_end_ms, boundary);
    assert_eq!(on.day_end_ms, utc("2026-11-01T23:00:00Z"));
    assert_eq!(on.month_end_ms, utc("2026-11-30T23:00:00Z"));

    use PeriodKind::{Day, Month};
    use PeriodWindow::{Previous, ToDate};
    let (september, august) = (utc("2026-09-30T22:00:00Z"), utc("2026-08-31T22:00:00Z"));
    let (oct, now) = (october, boundary);
    let cases = [
        (Month, ToDate, now, oct + 1, oct + 1, now, now),
        (Month, Previous, now, oct, oct, september, now),
        // A millisecond earlier, October is still to date and September is previous.
        (Month, ToDate, now - 1, oct, oct, september, now - 1),
        (
            Month,
            Previous,
            now - 1,
            oct - 1,
            oct - 1,
            august,
            september,
        ),
    ];
    for (kind, which, at_ms, first, last, start_ms, end_ms) in cases {
        // Month numbers; a quarter's or a year's number counts quarters or years.
        let period = match kind {
            PeriodKind::Quarter => first.div_euclid(3),
            PeriodKind::Year => first.div_euclid(12),
            _ => first,
        };
        let expected = PeriodSpan {
            period,
            unit: BucketUnit::Month,
            first,
            last,
            start_ms,
            end_ms,
        };
        assert_eq!(
            span(&calendar, kind, which, at_ms),
            expected,
            "{which:?} {at_ms}"
        );
    }
    // The previous day right after midnight is the whole of yesterday.
    let yesterday = span(&calendar, Day, Previous, boundary);
    let october_31 = date_number("2026-10-31");
    assert_eq!(
        (yesterday.unit, yesterday.first, yesterday.last),
        (BucketUnit::Day, october_31, october_31)
    );
    assert_eq!(
        (yesterday.start_ms, yesterday.end_ms),
        (utc("2026-10-30T23:00:00Z"), boundary)
    );
}

#[test]
fn februaries_have_28_days_in_2026_and_29_in_2028() {
    for zone_name in ["UTC", "Europe/Rome", "America/New_York"] {
        let mut calendar = all_periods(zone_name);
        for (year, days) in [(2026, 28), (2028, 29)] {
            let march = local(zone_name, &format!("{year}-03-01T00:00"));
            let february = span(&calendar, PeriodKind::Month, PeriodWindow::Previous, march);
            assert_eq!(
                (february.first, february.last),
                (year * 12 + 1, year * 12 + 1)
            );
            assert_eq!(february.end_ms - february.start_ms, days * 24 * HOUR);
            let mid = calendar.locate(february.start_ms + 14 * 24 * HOUR).unwrap();
            assert_eq!(mid.month, year * 12 + 1);
            assert_eq!(mid.month_end_ms, march);
            let last_day = calendar.locate(march - 1).unwrap();
            assert_eq!(
                last_day.day,
                date_number(&format!("{year}-02-{days}")),
                "{zone_name}"
            );
        }
    }
}

#[test]
fn quarters_and_years_turn_at_local_new_year() {
    for zone_name in ["Europe/Rome", "America/New_York", "Asia/Kolkata"] {
        let calendar = all_periods(zone_name);
        let new_year = local(zone_name, "2027-01-01T00:00");
        let january = 2027 * 12;
        let month_start = |text: &str| local(zone_name, &format!("{text}T00:00"));
        let at = |kind, which, now| {
            let s = span(&calendar, kind, which, now);
            (s.first, s.last, s.start_ms, s.end_ms)
        };
        use PeriodKind::{Quarter, Year};
        use PeriodWindow::{Previous, ToDate};
        // At local midnight, and at the last millisecond of 2026 (fourth quarter, year to date).
        let last = new_year - 1;
        let (october, july) = (month_start("2026-10-01"), month_start("2026-07-01"));
        let (year_2026, year_2025) = (month_start("2026-01-01"), month_start("2025-01-01"));
        let (now, jan) = (new_year, january);
        let cases = [
            (Quarter, ToDate, now, jan, jan, now, now),
            (Quarter, Previous, now, jan - 3, jan - 1, october, now),
            (Year, ToDate, now, jan, jan, now, now),
            (Year, Previous, now, jan - 12, jan - 1, year_2026, now),
            (Quarter, ToDate, last, jan - 3, jan - 1, october, last),
            (Quarter, Previous, last, jan - 6, jan - 4, july, october),
            (Year, ToDate, last, jan - 12, jan - 1, year_2026, last),
            (
                Year,
                Previous,
                last,
                jan - 24,
                jan - 13,
                year_2025,
                year_2026,
            ),
        ];
        for (kind, which, at_ms, first, last, start, end) in cases {
            let expected = (first, last, start, end);
            assert_eq!(
                at(kind, which, at_ms),
                expected,
                "{zone_name} {kind:?} {which:?} {at_ms}"
            );
        }
        assert_eq!(
            calendar.oldest_start_ms(new_year),
            Some(month_start("2026-01-01"))
        );
    }
}

#[test]
fn weeks_start_on_the_configured_weekday() {
    let rome = "Europe/Rome";
    let day = date_number;
    let monday = calendar(rome, WeekStart::Monday, &[PeriodKind::Week]);
    let sunday = calendar(rome, WeekStart::Sunday, &[PeriodKind::Week]);
    let at = |calendar: &Calendar, which, now| {
        let s = span(calendar, PeriodKind::Week, which, now);
        assert_eq!(s.unit, BucketUnit::Day);
        (s.first, s.last, s.start_ms, s.end_ms)
    };
    use PeriodWindow::{Previous, ToDate};
    // Sunday 2026-03-29, the day the clocks go forward.
    let sunday_noon = local(rome, "2026-03-29T12:00");
    assert_eq!(
        at(&monday, ToDate, sunday_noon),
        (
            day("2026-03-23"),
            day("2026-03-29"),
            utc("2026-03-22T23:00:00Z"),
            sunday_noon
        )
    );
    assert_eq!(
        at(&monday, Previous, sunday_noon),
        (
            day("2026-03-16"),
            day("2026-03-22"),
            utc("2026-03-15T23:00:00Z"),
            utc("2026-03-22T23:00:00Z")
        )
    );
    assert_eq!(
        at(&sunday, ToDate, sunday_noon),
        (
            day("2026-03-29"),
            day("2026-03-29"),
            utc("2026-03-28T23:00:00Z"),
            sunday_noon
        )
    );
    assert_eq!(
        at(&sunday, Previous, sunday_noon),
        (
            day("2026-03-22"),
            day("2026-03-28"),
            utc("2026-03-21T23:00:00Z"),
            utc("2026-03-28T23:00:00Z")
        )
    );
    // Monday 2026-03-30, at its first instant: a week of 7 days less the skipped hour ended.
    let monday_start = utc("2026-03-29T22:00:00Z");
    assert_eq!(
        at(&monday, ToDate, monday_start),
        (
            day("2026-03-30"),
            day("2026-03-30"),
            monday_start,
            monday_start
        )
    );
    let previous = at(&monday, Previous, monday_start);
    assert_eq!(
        previous,
        (
            day("2026-03-23"),
            day("2026-03-29"),
            utc("2026-03-22T23:00:00Z"),
            monday_start
        )
    );
    assert_eq!(previous.3 - previous.2, 7 * 24 * HOUR - HOUR);
    assert_eq!(
        at(&sunday, ToDate, monday_start),
        (
            day("2026-03-29"),
            day("2026-03-30"),
            utc("2026-03-28T23:00:00Z"),
            monday_start
        )
    );
}

#[test]
fn a_skipped_date_has_no_instant_and_the_previous_day_is_the_one_before_it() {
    // Samoa moved across the date line: 2011-12-29 24:00 (-10) was 2011-12-31 00:00 (+14).
    let mut calendar = all_periods("Pacific/Apia");
    let jump = utc("2011-12-30T10:00:00Z");
    let before = calendar.locate(jump - 1).unwrap();
    assert_eq!(before.day, date_number("2011-12-29"));
    assert_eq!(before.day_end_ms, jump);
    let after = calendar.locate(jump).unwrap();
    assert_eq!(after.day, date_number("2011-12-31"));
    let yesterday = span(&calendar, PeriodKind::Day, PeriodWindow::Previous, jump);
    assert_eq!(
        (yesterday.first, yesterday.last, yesterday.end_ms),
        (date_number("2011-12-29"), date_number("2011-12-29"), jump)
    );
    assert_eq!(yesterday.start_ms, utc("2011-12-29T10:00:00Z"));
}

#[test]
fn a_fold_across_midnight_repeats_the_end_of_a_day() {
    // St. John's ended daylight time at 00:01 until 2006: on 2006-10-29 the clocks went from
    // 00:01 back to 23:01 of the 28th, so the 29th began twice.
    let mut calendar = all_periods("America/St_Johns");
    let first_midnight = utc("2006-10-29T02:30:00Z");
    let transition = utc("2006-10-29T02:31:00Z");
    let second_midnight = utc("2006-10-29T03:30:00Z");
    let day = |calendar: &mut Calendar, at| {
        let b = calendar.locate(at).unwrap();
        let start = span(calendar, PeriodKind::Day, PeriodWindow::ToDate, at).start_ms;
        (b.day, start, b.day_end_ms)
    };
    let (d28, d29) = (date_number("2006-10-28"), date_number("2006-10-29"));
    let start_28 = utc("2006-10-28T02:30:00Z");
    assert_eq!(
        day(&mut calendar, first_midnight - 1),
        (d28, start_28, first_midnight)
    );
    assert_eq!(
        day(&mut calendar, first_midnight),
        (d29, first_midnight, transition)
    );
    assert_eq!(
        day(&mut calendar, transition),
        (d28, transition, second_midnight)
    );
    let next_midnight = utc("2006-10-30T03:30:00Z");
    assert_eq!(
        day(&mut calendar, second_midnight),
        (d29, second_midnight, next_midnight)
    );
}

#[test]
fn a_message_is_late_only_after_its_own_period_ended_plus_the_grace() {
    use PeriodKind::{Day, Month, Quarter, Week, Year};
    let mut calendar = all_periods("Europe/Rome");
    let rome = |text| local("Europe/Rome", text);
    let late = |calendar: &mut Calendar, kind, at: i64, written: i64| {
        let located = calendar.locate(at).unwrap();
        calendar.written_late(kind, at, &located, written)
    };
    // Monday 30 November 2026: the week ends on Monday 7 December, the month on 1 December.
    let monday = rome("2026-11-30T10:00");
    let tuesday = rome("2026-12-01T02:00");
    assert!(late(&mut calendar, Day, monday, tuesday));
    assert!(late(&mut calendar, Month, monday, tuesday));
    assert!(!late(&mut calendar, Week, monday, tuesday));
    assert!(!late(&mut calendar, Quarter, monday, tuesday));
    assert!(!late(&mut calendar, Day, monday, rome("2026-12-01T01:00")));
    assert!(!late(&mut calendar, Week, monday, rome("2026-12-07T01:00")));
    assert!(late(
        &mut calendar,
        Week,
        monday,
        rome("2026-12-07T01:00") + 1
    ));
    // 15 January: late for its month in February, for its quarter after 1 April 01:00 (the
    // grace of an hour), for its year after 1 January 01:00.
    let january = rome("2026-01-15T12:00");
    let february = rome("2026-02-10T12:00");
    assert!(late(&mut calendar, Month, january, february));
    assert!(!late(&mut calendar, Quarter, january, february));
    assert!(!late(
        &mut calendar,
        Quarter,
        january,
        rome("2026-04-01T01:00")
    ));
    assert!(late(
        &mut calendar,
        Quarter,
        january,
        rome("2026-04-01T01:00") + 1
    ));
    assert!(!late(
        &mut calendar,
        Year,
        january,
        rome("2026-04-01T02:00")
    ));
    assert!(!late(
        &mut calendar,
        Year,
        january,
        rome("2027-01-01T01:00")
    ));
    assert!(late(
        &mut calendar,
        Year,
        january,
        rome("2027-01-01T01:00") + 1
    ));
}

#[test]
fn oldest_start_is_the_start_of_the_oldest_previous_period() {
    let now = local("Europe/Rome", "2026-05-20T10:00");
    let defaults = calendar(
        "Europe/Rome",
        WeekStart::Monday,
        &[PeriodKind::Day, PeriodKind::Month, PeriodKind::Quarter],
    );
    assert_eq!(
        defaults.oldest_start_ms(now),
        Some(local("Europe/Rome", "2026-01-01T00:00"))
    );
    let days = calendar("Europe/Rome", WeekStart::Monday, &[PeriodKind::Day]);
    assert_eq!(
        days.oldest_start_ms(now),
        Some(local("Europe/Rome", "2026-05-19T00:00"))
    );
    let none = calendar("Europe/Rome", WeekStart::Monday, &[]);
    assert_eq!(none.oldest_start_ms(now), None);
}

#[test]
fn extreme_instants_give_none_or_a_consistent_answer() {
    let (min_ms, max_ms) = jiff_range_ms();
    let instants = [
        i64::MIN,
        i64::MIN + 1,
        min_ms - 1,
        min_ms,
        min_ms + 1,
        min_ms + 3 * 24 * HOUR,
        utc("0001-01-01T00:00:00Z"),
        utc("0000-01-01T00:00:00Z"),
        -1,
        0,
        utc("9999-12-01T00:00:00Z"),
        max_ms - 3 * 24 * HOUR,
        max_ms,
        max_ms + 1,
        i64::MAX - 1,
        i64::MAX,
    ];
    for zone_name in ORDINARY_ZONES.into_iter().chain(ODD_ZONES) {
        let tz = zone(zone_name);
        let mut calendar = all_periods(zone_name);
        for at in instants {
            let located = calendar.locate(at);
            assert_eq!(
                located,
                all_periods(zone_name).locate(at),
                "{zone_name} {at}"
            );
            match located {
                Some(b) => {
                    let date = local_date(&tz, at).unwrap();
                    assert_eq!(b.day, day_number(date), "{zone_name} {at}");
                    assert_eq!(b.month, month_number(date), "{zone_name} {at}");
                    assert!(at < b.day_end_ms && b.day_end_ms <= b.month_end_ms);
                }
                None => assert!(!(min_ms..=max_ms).contains(&at), "{zone_name} {at}"),
            }
            for window in calendar.windows() {
                if let Some(s) = calendar.span(window, at) {
                    assert!(
                        s.first <= s.last && s.start_ms <= s.end_ms,
                        "{zone_name} {at}"
                    );
                }
            }
            calendar.oldest_start_ms(at);
        }
    }
    let mut utc_calendar = all_periods("UTC");
    let year_one = utc_calendar.locate(utc("0001-01-01T00:00:00Z")).unwrap();
    assert_eq!(year_one.day, date_number("0001-01-01"));
    assert_eq!(year_one.month, 12);
    let last_month = utc_calendar.locate(max_ms).unwrap();
    assert_eq!(last_month.month, 9999 * 12 + 11);
    // The end of year 9999 is past jiff's range but still a number.
    assert_eq!(
        last_month.month_end_ms,
        (date_number("9999-12-31") + 1) * 24 * HOUR
    );
}

/// Counts the allocations of the current thread, to show `locate` makes none.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches a
// const-initialized thread local that needs no allocation itself.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn locate_allocates_nothing_on_a_hit_or_a_miss() {
    for zone_name in ["Europe/Rome", "America/New_York", "Australia/Lord_Howe"] {
        let mut calendar = all_periods(zone_name);
        let from = utc("2026-01-01T00:00:00Z");
        let before = ALLOCATIONS.with(Cell::get);
        let mut found = 0;
        // A year in steps of 7 hours 13 minutes: misses at every new day, hits between.
        for at in (from..from + 366 * 24 * HOUR).step_by((7 * HOUR + 13 * MINUTE) as usize) {
            found += calendar.locate(at).map_or(0, |b| b.day);
        }
        assert_eq!(ALLOCATIONS.with(Cell::get), before, "{zone_name}");
        assert!(found > 0);
    }
}

/// An instant: anywhere in i64, anywhere jiff represents, or in the years around now.
fn any_instant() -> impl Strategy<Value = i64> {
    let (min_ms, max_ms) = jiff_range_ms();
    prop_oneof![
        1 => any::<i64>(),
        2 => min_ms - 2 * 24 * HOUR..max_ms + 2 * 24 * HOUR,
        6 => utc("1850-01-01T00:00:00Z")..utc("2100-01-01T00:00:00Z"),
    ]
}

/// An instant close to a transition of the zone (or anywhere, if it has none after it).
fn near_a_transition(zone: &TimeZone, from: i64, delta: i64) -> i64 {
    let at = Timestamp::from_millisecond(from).unwrap();
    zone.following(at)
        .next()
        .map_or(from, |t| t.timestamp().as_millisecond())
        .saturating_add(delta)
}

/// Checks that `at_ms` lies in a maximal run of instants of one local date and month, from
/// the outside: jiff's conversion at the run's ends and just outside them.
fn check_runs(calendar: &mut Calendar, tz: &TimeZone, at_ms: i64) -> Result<(), TestCaseError> {
    let Some(b) = calendar.locate(at_ms) else {
        prop_assert!(local_date(tz, at_ms).is_none(), "{}", at_ms);
        return Ok(());
    };
    let date = local_date(tz, at_ms).unwrap();
    prop_assert_eq!(b.day, day_number(date));
    prop_assert_eq!(b.month, month_number(date));
    let start = calendar
        .span(&window(PeriodKind::Day, PeriodWindow::ToDate), at_ms)
        .unwrap()
        .start_ms;
    let month_start = calendar
        .span(&window(PeriodKind::Month, PeriodWindow::ToDate), at_ms)
        .unwrap()
        .start_ms;
    prop_assert!(
        start <= at_ms && at_ms < b.day_end_ms,
        "{} {} {:?}",
        at_ms,
        start,
        b
    );
    prop_assert!(month_start <= start && b.day_end_ms <= b.month_end_ms);
    let day_of = |ms| local_date(tz, ms).map(day_number);
    let month_of = |ms| local_date(tz, ms).map(month_number);
    // Ends past the range jiff represents are checked by the instants inside it.
    if let Some(first) = day_of(start) {
        prop_assert_eq!(first, b.day);
    }
    if let Some(first) = month_of(month_start) {
        prop_assert_eq!(first, b.month);
    }
    if let Some(last) = day_of(b.day_end_ms - 1) {
        prop_assert_eq!(last, b.day);
    }
    if let Some(last) = month_of(b.month_end_ms - 1) {
        prop_assert_eq!(last, b.month);
    }
    prop_assert_ne!(day_of(start - 1), Some(b.day));
    prop_assert_ne!(day_of(b.day_end_ms), Some(b.day));
    prop_assert_ne!(month_of(month_start - 1), Some(b.month));
    prop_assert_ne!(month_of(b.month_end_ms), Some(b.month));
    Ok(())
}

proptest! {
    /// Whatever came before, the table answers as the uncached computation does.
    #[test]
    fn locate_agrees_with_the_uncached_computation(
        zone_index in 0..ORDINARY_ZONES.len() + ODD_ZONES.len(),
        first in any_instant(),
        steps in prop::collection::vec(
            (0..4u8, any_instant(), -3 * 24 * HOUR..3 * 24 * HOUR),
            1..64,
        ),
    ) {
        let zone_name = ORDINARY_ZONES.into_iter().chain(ODD_ZONES).nth(zone_index).unwrap();
        let tz = zone(zone_name);
        let mut calendar = all_periods(zone_name);
        let mut at = first;
        for (how, anywhere, delta) in steps {
            let previous = calendar.locate(at);
            prop_assert_eq!(previous, locate_uncached(&tz, at).map(|d| d.buckets));
            at = match (how, previous) {
                (0, _) | (_, None) => anywhere,
                (1, _) => at.saturating_add(delta),
                // Just either side of the end of the day or the month.
                (2, Some(b)) => b.day_end_ms + delta % 3,
                (_, Some(b)) => b.month_end_ms + delta % 3,
            };
        }
        prop_assert_eq!(calendar.locate(at), locate_uncached(&tz, at).map(|d| d.buckets));
    }

    /// Every instant lies in a maximal run of its local date and month, in every zone.
    #[test]
    fn every_instant_lies_in_its_local_day_and_month(
        zone_index in 0..ORDINARY_ZONES.len() + ODD_ZONES.len(),
        at in any_instant(),
        delta in -36 * HOUR..36 * HOUR,
        at_a_transition in any::<bool>(),
    ) {
        let zone_name = ORDINARY_ZONES.into_iter().chain(ODD_ZONES).nth(zone_index).unwrap();
        let tz = zone(zone_name);
        let mut calendar = all_periods(zone_name);
        let at = if at_a_transition && local_date(&tz, at).is_some() {
            near_a_transition(&tz, at, delta)
        } else {
            at
        };
        check_runs(&mut calendar, &tz, at)?;
    }

    /// Windows agree with civil date arithmetic in the zones where jiff's start of day is
    /// the first instant of a date.
    #[test]
    fn spans_agree_with_civil_date_arithmetic(
        zone_index in 0..ORDINARY_ZONES.len(),
        now in utc("1970-01-01T00:00:00Z")..utc("2100-01-01T00:00:00Z"),
        delta in -36 * HOUR..36 * HOUR,
        at_a_transition in any::<bool>(),
        kind_index in 0..5usize,
        previous in any::<bool>(),
        sunday in any::<bool>(),
    ) {
        let zone_name = ORDINARY_ZONES[zone_index];
        let tz = zone(zone_name);
        let now = if at_a_transition { near_a_transition(&tz, now, delta) } else { now };
        let week_start = if sunday { WeekStart::Sunday } else { WeekStart::Monday };
        let kind = PeriodKind::ALL[kind_index];
        let which = if previous { PeriodWindow::Previous } else { PeriodWindow::ToDate };
        let mut calendar = calendar(zone_name, week_start, &PeriodKind::ALL);
        let expected = civil_reference(&tz, week_start, kind, which, now);
        prop_assert_eq!(calendar.span(&window(kind, which), now), Some(expected));
        prop_assert_eq!(calendar.locate(now).map(|_| ()), Some(()));
        let (located, _) = zoned_reference(&tz, now);
        prop_assert_eq!(calendar.locate(now), Some(located));
        // The period ends where the next one starts, and the instant before is still in it.
        let end = calendar.period_end_ms(kind, now).unwrap();
        let to_date = window(kind, PeriodWindow::ToDate);
        prop_assert_eq!(calendar.span(&to_date, end).unwrap().start_ms, end);
        let start = calendar.span(&to_date, now).unwrap().start_ms;
        prop_assert_eq!(calendar.span(&to_date, end - 1).unwrap().start_ms, start);
        match kind {
            PeriodKind::Day => prop_assert_eq!(end, located.day_end_ms),
            PeriodKind::Month => prop_assert_eq!(end, located.month_end_ms),
            _ => prop_assert!(end > now),
        }
    }

    /// A window's period number is the number of the period holding its instants, and the
    /// previous period is numbered one less.
    #[test]
    fn period_numbers_follow_the_windows(
        zone_index in 0..ORDINARY_ZONES.len(),
        now in utc("1970-01-01T00:00:00Z")..utc("2100-01-01T00:00:00Z"),
        sunday in any::<bool>(),
    ) {
        let week_start = if sunday { WeekStart::Sunday } else { WeekStart::Monday };
        let mut calendar = calendar(ORDINARY_ZONES[zone_index], week_start, &PeriodKind::ALL);
        let located = calendar.locate(now).unwrap();
        for kind in PeriodKind::ALL {
            let to_date = span(&calendar, kind, PeriodWindow::ToDate, now);
            let previous = span(&calendar, kind, PeriodWindow::Previous, now);
            prop_assert_eq!(calendar.period_of(kind, &located), to_date.period);
            prop_assert_eq!(previous.period, to_date.period - 1);
            for at in [previous.start_ms, previous.end_ms - 1] {
                let located = calendar.locate(at).unwrap();
                prop_assert_eq!(calendar.period_of(kind, &located), previous.period);
            }
        }
    }
}
