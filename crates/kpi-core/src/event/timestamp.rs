//! The RFC 3339 timestamps producers write, read without the general parser.
//!
//! [`unix_ms`] reads `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, and `Z`
//! or an offset `±HH:MM`, with every component in range, and gives up ([`None`]) on
//! anything else: another separator, a lower-case `z`, a leap second, a longer fraction, a
//! day the month does not have. The caller then asks `time`'s RFC 3339 parser, which
//! decides those and every error. Whatever this reader accepts, `time` accepts as the same
//! instant, truncated to the millisecond the same way; the property tests of `event` hold
//! it to that.

/// The timestamp in Unix milliseconds, truncated toward zero as `time`'s nanoseconds
/// divided by a million are; `None` outside the shape described above.
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
