//! What one `Calendar::locate` costs, in nanoseconds per call, for events near one instant,
//! spread over 30 days, and spread over 20 years (nearly every call converts):
//!
//! ```text
//! cargo run --release -p kpi-core --example locate_cost
//! ```

use std::hint::black_box;
use std::time::Instant;

use kpi_core::calendar::{Calendar, CalendarSettings, PeriodKind, WeekStart, time_zone};

/// 2026-07-15T10:00:00Z.
const NOW_MS: i64 = 1_784_109_600_000;
const DAY_MS: i64 = 86_400_000;

fn main() {
    let zone = time_zone("Europe/Rome").expect("the bundled tz database has Europe/Rome");
    let settings = CalendarSettings {
        zone,
        week_start: WeekStart::Monday,
        periods: PeriodKind::ALL.to_vec(),
        grace_ms: 3_600_000,
    };
    for (what, spread_ms) in [
        ("within 10 minutes of one instant", 10 * 60_000),
        ("spread over 30 days", 30 * DAY_MS),
        ("spread over 20 years", 20 * 365 * DAY_MS),
    ] {
        let mut calendar = Calendar::new(settings.clone()).expect("valid settings");
        let instants = instants(spread_ms, 1 << 16);
        let rounds = 200;
        let started = Instant::now();
        let mut sum = 0i64;
        for _ in 0..rounds {
            for &at in &instants {
                sum = sum.wrapping_add(black_box(calendar.locate(at)).map_or(0, |b| b.day));
            }
        }
        let elapsed = started.elapsed();
        // The same loop without the calls: reading the instants and summing.
        let started = Instant::now();
        for _ in 0..rounds {
            for &at in &instants {
                sum = sum.wrapping_add(black_box(at) / DAY_MS);
            }
        }
        let overhead = started.elapsed();
        let calls = (rounds * instants.len()) as f64;
        let ns = elapsed.saturating_sub(overhead).as_nanos() as f64 / calls;
        println!("{what:>34}: {ns:8.2} ns per locate ({calls} calls, checksum {sum})");
    }
}

/// `count` instants spread uniformly over `spread_ms` before `NOW_MS`, in random order.
fn instants(spread_ms: i64, count: usize) -> Vec<i64> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..count)
        .map(|_| {
            // xorshift64*: cheap, and the same sequence on every run.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let random = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            NOW_MS - (random % spread_ms as u64) as i64
        })
        .collect()
}
