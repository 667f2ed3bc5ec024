//! RFC 3339 timestamps: the shape producers write, read without a general parser, and the
//! general reader behind it.
//!
//! [`unix_ms`] reads `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, and `Z`
//! or an offset `±HH:MM`, with every component in range, and gives up ([`None`]) on
//! anything else: another separator, a lower-case `z`, a leap second, a longer fraction, a
//! day the month does not have. The caller then asks [`parse`], which decides those and
//! every error. Whatever the fast reader accepts, [`parse`] accepts as the same instant,
//! truncated to the millisecond the same way; the property tests of `event` hold it to that.
//!
//! [`parse`] accepts exactly what the contract has always accepted (the RFC 3339 reading of
//! the `time` crate 0.3, which the service used before): any single character between date
//! and time, as RFC 3339 section 5.6 allows; a fraction of any length, cut after the
//! nanosecond; `Z` or `z`; an offset of at most 23:59; a leap second `:60` only where one can
//! fall (the last second of a UTC month), read as the last nanosecond before it. A general
//! ISO 8601 parser (jiff's included) reads a wider language (basic format, hour-only
//! offsets, bracketed annotations), which would widen the contract.

use jiff::SignedDuration;
use jiff::civil::{Date, DateTime, Time};

/// The timestamp in Unix milliseconds, truncated toward zero (as [`parse`] truncates);
/// `None` outside the shape described above.
pub(super) fn unix_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let [b'.', fraction @ ..] = rest {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(&fraction[..count])? * 10i64.pow(9 - count as u32);
        rest = &fraction[count..];
    }
    let offset_s = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let truncated_up = seconds < 0 && nanos % 1_000_000 != 0;
    Some(seconds * 1000 + nanos / 1_000_000 + i64::from(truncated_up))
}

/// The value of a run of ASCII digits; `None` if any byte is not one.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + i64::from(b - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The Unix epoch as a civil date-time, the origin [`parse`] counts seconds from.
const EPOCH: DateTime = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);

/// Any RFC 3339 timestamp with an offset, in Unix milliseconds truncated toward zero; the
/// error says what is wrong. Dates and times are checked by jiff's civil types, an
/// implementation independent of [`unix_ms`]'s arithmetic.
pub(super) fn parse(text: &str) -> Result<i64, String> {
    let mut reader = Reader(text.as_bytes());
    let year = reader.number(4, "a four-digit year")?;
    reader.literal(b'-', "`-` after the year")?;
    let month = reader.number(2, "a two-digit month")?;
    reader.literal(b'-', "`-` after the month")?;
    let day = reader.number(2, "a two-digit day")?;
    reader.any_byte("a separator between date and time")?;
    let hour = reader.number(2, "a two-digit hour")?;
    reader.literal(b':', "`:` after the hour")?;
    let minute = reader.number(2, "two-digit minutes")?;
    reader.literal(b':', "`:` after the minutes")?;
    let second = reader.number(2, "two-digit seconds")?;
    let nanos = if reader.0.first() == Some(&b'.') {
        reader.0 = &reader.0[1..];
        reader.fraction()?
    } else {
        0
    };
    let offset_s = reader.offset()?;
    if !reader.0.is_empty() {
        return Err("unexpected characters after the offset".into());
    }
    let leap_second = second == 60;
    let (second, nanos) = if leap_second {
        (59, 999_999_999)
    } else {
        (second, nanos)
    };
    // Every component has at most four digits: the casts cannot truncate.
    let date = Date::new(year as i16, month as i8, day as i8).map_err(|e| e.to_string())?;
    let time = Time::new(hour as i8, minute as i8, second as i8, 0).map_err(|e| e.to_string())?;
    let local = date.to_datetime(time);
    if leap_second {
        let utc = local
            .checked_sub(SignedDuration::from_secs(offset_s))
            .map_err(|e| e.to_string())?;
        let last_of_month = utc.day() == utc.date().days_in_month();
        if (utc.hour(), utc.minute(), utc.second()) != (23, 59, 59) || !last_of_month {
            return Err("second 60 is a leap second only at the end of a UTC month".into());
        }
    }
    let seconds = local.duration_since(EPOCH).as_secs() - offset_s;
    let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    // Years 0 to 9999 with an offset under a day: always within i64 milliseconds.
    Ok((nanos / 1_000_000) as i64)
}

/// The bytes of a timestamp not yet read.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// Exactly `count` ASCII digits.
    fn number(&mut self, count: usize, expected: &str) -> Result<i64, String> {
        let value = self
            .0
            .get(..count)
            .and_then(digits)
            .ok_or_else(|| format!("expected {expected}"))?;
        self.0 = &self.0[count..];
        Ok(value)
    }

    fn literal(&mut self, byte: u8, expected: &str) -> Result<(), String> {
        match self.0 {
            [first, rest @ ..] if *first == byte => {
                self.0 = rest;
                Ok(())
            }
            _ => Err(format!("expected {expected}")),
        }
    }

    fn any_byte(&mut self, expected: &str) -> Result<(), String> {
        match self.0 {
            [_, rest @ ..] => {
                self.0 = rest;
                Ok(())
            }
            [] => Err(format!("expected {expected}")),
        }
    }

    /// The digits after the decimal point as nanoseconds: at least one, digits past the
    /// ninth are read and dropped.
    fn fraction(&mut self) -> Result<i64, String> {
        let count = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 {
            return Err("expected a digit after the decimal point".into());
        }
        let kept = count.min(9);
        let value = digits(&self.0[..kept]).unwrap_or(0) * 10i64.pow(9 - kept as u32);
        self.0 = &self.0[count..];
        Ok(value)
    }

    /// `Z`, `z` or `±HH:MM` with hours to 23 and minutes to 59, in seconds east of UTC.
    fn offset(&mut self) -> Result<i64, String> {
        let sign = match self.0 {
            [b'Z' | b'z', rest @ ..] => {
                self.0 = rest;
                return Ok(0);
            }
            [b'+', rest @ ..] => {
                self.0 = rest;
                1
            }
            [b'-', rest @ ..] => {
                self.0 = rest;
                -1
            }
            _ => return Err("expected `Z` or an offset `±HH:MM`".into()),
        };
        let hours = self.number(2, "two-digit offset hours")?;
        self.literal(b':', "`:` in the offset")?;
        let minutes = self.number(2, "two-digit offset minutes")?;
        if hours > 23 || minutes > 59 {
            return Err(format!("offset {hours:02}:{minutes:02} is out of range"));
        }
        Ok(sign * (hours * 3600 + minutes * 60))
    }
}
