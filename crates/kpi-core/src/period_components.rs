//! The components of one input partition for one calendar period: what the periods topic
//! keeps, so that a period outlives the input topics' retention.
//!
//! A period's components are written once it has closed (its end plus the grace has
//! passed), again if a message still changes it, and, while it is open, at most once per
//! [`CHECKPOINT_INTERVAL_MS`]. Each record says up to which offset of its partition it
//! counts. After a restart or a rebalance, the service restores the records of its
//! partitions and replays the input from no later than their offsets: a message below a
//! record's offset is already in it and does not count in that period again, and one at or
//! past it does. A period is then exact although the input topics no longer hold its
//! beginning, and the replay need not reach back to it.
//!
//! Pure: the caller passes `now`.

use serde::{Deserialize, Serialize};

use crate::calendar::{Calendar, PeriodKind};
use crate::components::SeriesComponents;

/// How often an open period's components are written while they change: a restart then
/// replays at most this much more than its rolling windows need, whatever the length of
/// the period.
pub const CHECKPOINT_INTERVAL_MS: i64 = 3_600_000;

/// One partition's components for one period of one kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeriodComponents {
    /// `day`, `week`, `month`, `quarter` or `year`.
    pub period: String,
    /// The period's number in its time zone and week start ([`crate::calendar::Calendar::period_of`]).
    pub number: i64,
    /// The time zone and week start the number counts in: a record of another calendar is
    /// not restored.
    pub timezone: String,
    pub week_start: String,
    /// The period's local boundaries, UTC milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Its end and the grace have passed: the record is final unless a message written in
    /// time arrives after all.
    pub closed: bool,
    /// The partition's offset this record counts up to (exclusive).
    pub through_offset: i64,
    /// Every series of the partition, each with one tally: the period's.
    pub series: Vec<SeriesComponents>,
}

impl PeriodComponents {
    /// The kind of period, if known.
    pub fn kind(&self) -> Option<PeriodKind> {
        self.period.parse().ok()
    }

    /// Whether the record was numbered in `calendar`: its time zone and week start. A
    /// record of another calendar counts other periods under the same numbers.
    pub fn counted_in(&self, calendar: &Calendar) -> bool {
        calendar.zone_name() == Some(self.timezone.as_str())
            && calendar.settings().week_start.name() == self.week_start
    }
}

/// Where a partition's replay must start for its calendar periods: the restored periods
/// count up to their offsets, the others have to be replayed from their start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub kind: PeriodKind,
    pub number: i64,
    pub through_offset: i64,
}
