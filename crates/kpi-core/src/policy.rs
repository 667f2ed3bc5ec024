//! The decisions of the consume loop, as pure functions: where a replay starts and where
//! reporting begins, what an event's outcome means for the counters and the dead-letter
//! topic, the offset that is safe to commit, which instance publishes, when a full snapshot
//! is due and which values changed. The service's loop only moves messages and calls these,
//! so each decision is tested here without a broker.

use std::collections::HashMap;

use crate::aggregate::Outcome;
use crate::event::{Family, Reason};
use crate::kpi::KpiRecord;
use crate::partition::PartitionId;

/// An end offset that could not be read yet.
pub const UNKNOWN_END: i64 = i64::MAX;

/// Where the replay of an assigned partition starts, from its low watermark and the broker's
/// answer to "the first offset at or after the replay span" (`by_time`).
///
/// A billing partition replays from its beginning: the MRR ledger is the result of every
/// billing event. A survey or ticket partition replays from the offset found by time. "No
/// message at or after that time" is also the broker's answer while messages are being
/// appended (their timestamps are not indexed yet), so it cannot be trusted to skip
/// anything: it, and no answer at all, replay from the beginning, which with the retention
/// the topic needs costs at most one bucket more than the replay span. Replaying more than
/// needed is safe; less is not.
///
/// `restored`: the lowest offset the partition's restored period records count up to. The
/// replay starts no later, so that every message past a record counts in its period; a
/// record below the low watermark misses what retention deleted after it, which no replay
/// can bring back.
pub fn replay_start(family: Family, by_time: Option<i64>, low: i64, restored: Option<i64>) -> i64 {
    let start = match (family, by_time) {
        (Family::Billing, _) | (_, None) => low,
        (_, Some(offset)) => offset.max(low),
    };
    restored.map_or(start, |through| start.min(through.max(low)))
}

/// Whether the messages a partition held before this run's first assignment are reported
/// (counted, and dead-lettered when rejected) by a group that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// The group committed offsets, or is asked to report its history: a partition without
    /// a committed offset (added to the topic, say) is reported from its replay start.
    Reported,
    /// A new group (a second deployment, a debug instance) that was not asked to report the
    /// history: another group most likely dead-lettered it already.
    LeftUnreported,
}

impl History {
    /// The history of this run's first assignment: a group without any committed offset in
    /// it is new, unless asked to report its history. `committed` is `None` when the offsets
    /// could not be read: that is not taken for a new group.
    pub fn of_first_assignment(committed: Option<&[Option<i64>]>, report_history: bool) -> Self {
        match committed {
            Some(offsets) if !report_history && offsets.iter().all(Option::is_none) => {
                History::LeftUnreported
            }
            _ => History::Reported,
        }
    }
}

/// The offset from which a replayed partition's messages are reported: the group's
/// committed offset (earlier messages were reported by an earlier run), else the replay
/// start, or, for a new group that leaves its history unreported, the end offset seen at
/// assignment. Never before `start`; an unknown end reports from `start`, since reporting
/// twice is better than never.
pub fn count_from(committed: Option<i64>, start: i64, end: i64, history: History) -> i64 {
    match (committed, history) {
        (Some(c), _) => c.max(start),
        (None, History::LeftUnreported) if end != UNKNOWN_END => end.max(start),
        (None, _) => start,
    }
}

/// What handling one message comes to, for the counters and the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// It changed the state (`kpi_events_processed_total`).
    pub processed: bool,
    /// It counts in the windows: it moves the newest event time.
    pub counted: bool,
    /// It counts in the raw-input counters (survey responses, resolution times).
    pub input: bool,
    pub late: bool,
    pub duplicate: bool,
    /// Counted as rejected for this reason, and dead-lettered.
    pub rejected: Option<Reason>,
}

/// What the outcome of one message means. `live` says whether it is new to the group (at or
/// past where reporting begins, [`count_from`]): a replayed message changes the state again
/// but was already counted and dead-lettered by an earlier run, so it is neither again.
///
/// A late survey or ticket event counts in no window (a ticket event changes only the open
/// tickets, which no counter reports); it is dead-lettered (reason `late`) only
/// with `late_to_deadletter`. A late billing event still changed the current MRR, so it was
/// processed and is never a rejection.
pub fn report(
    outcome: Result<Outcome, Reason>,
    family: Family,
    live: bool,
    late_to_deadletter: bool,
) -> Report {
    match outcome {
        Ok(Outcome::Counted) => Report {
            processed: true,
            counted: true,
            input: live,
            ..Report::default()
        },
        Ok(Outcome::Duplicate) => Report {
            duplicate: live,
            ..Report::default()
        },
        Ok(Outcome::Late) => {
            let billing = family == Family::Billing;
            Report {
                processed: billing,
                late: live,
                rejected: (live && late_to_deadletter && !billing).then_some(Reason::Late),
                ..Report::default()
            }
        }
        // Counted everywhere but in its closed calendar period: processed, and reported
        // late, and dead-lettered when asked, so that the period's owners can see what it
        // left out.
        Ok(Outcome::LateForPeriod) => Report {
            processed: true,
            counted: true,
            input: live,
            late: live,
            rejected: (live && late_to_deadletter).then_some(Reason::LateForPeriod),
            ..Report::default()
        },
        Err(reason) => Report {
            rejected: live.then_some(reason),
            ..Report::default()
        },
    }
}

/// The dead-letter detail of a valid event reported late (`reason` is [`Reason::Late`] or
/// [`Reason::LateForPeriod`]): what it was left out of.
pub fn late_detail(reason: Reason) -> &'static str {
    match reason {
        Reason::LateForPeriod => {
            "written after its calendar period closed (the period's end plus the grace); counted in the rolling windows only"
        }
        _ => "occurred_at is older than the largest window",
    }
}

/// The offset to commit for a partition, if any: one past the last message handled live
/// (`handled_to`), or, for a caught-up partition without one, where reporting began (so that
/// the group's commits cover every partition it read, and a partition without a commit is
/// one new to the group). Never past a dead letter the broker has not acknowledged
/// (`oldest_pending`), which the next run must send again, and never below where reporting
/// began, which is at least what the group had committed.
pub fn commit_offset(
    handled_to: Option<i64>,
    caught_up: bool,
    oldest_pending: Option<i64>,
    count_from: i64,
) -> Option<i64> {
    let next = handled_to.or(caught_up.then_some(count_from))?;
    Some(
        oldest_pending
            .map_or(next, |pending| pending.min(next))
            .max(count_from),
    )
}

/// The partition whose owner publishes the global values on the output topic: one owner at a
/// time, known to every instance from the assignment alone.
pub const PUBLISHER_PARTITION: PartitionId = PartitionId {
    family: Family::Surveys,
    partition: 0,
};

/// Whether the instance that holds `assigned` publishes the output topic.
pub fn publishes<'a>(mut assigned: impl Iterator<Item = &'a PartitionId>) -> bool {
    assigned.any(|p| *p == PUBLISHER_PARTITION)
}

/// Whether the next publish sends every value rather than the changed ones: when asked (on
/// catching up, at shutdown), after a lost output message (it may have carried a change), or
/// when the last full snapshot is `snapshot_interval_ms` old (a compacted topic's subscriber
/// then never waits longer for a value that did not change).
pub fn full_snapshot_due(
    asked: bool,
    output_lost: bool,
    last_full_ms: Option<i64>,
    now_ms: i64,
    snapshot_interval_ms: i64,
) -> bool {
    asked || output_lost || last_full_ms.is_none_or(|t| now_ms - t >= snapshot_interval_ms)
}

/// The value and samples last sent for each output key, to send only what changed.
#[derive(Debug, Default)]
pub struct SentValues {
    sent: HashMap<String, (Option<f64>, u64)>,
}

impl SentValues {
    /// Whether `record` is to be sent: always in a full snapshot, else when its value or its
    /// sample count differ from what was last sent under its key.
    pub fn is_news(&self, key: &str, record: &KpiRecord, full: bool) -> bool {
        full || self.sent.get(key) != Some(&(record.value, record.samples))
    }

    /// Remembers `record` as sent under `key`.
    pub fn sent(&mut self, key: String, record: &KpiRecord) {
        self.sent.insert(key, (record.value, record.samples));
    }

    /// Forgets everything: the next publisher starts from a full snapshot.
    pub fn forget(&mut self) {
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_replays_from_the_beginning_and_the_others_from_the_time_found() {
        assert_eq!(replay_start(Family::Billing, Some(500), 10, None), 10);
        assert_eq!(replay_start(Family::Surveys, Some(500), 10, None), 500);
        assert_eq!(replay_start(Family::Tickets, Some(500), 10, None), 500);
        // An offset below the low watermark (deleted since) starts at the watermark.
        assert_eq!(replay_start(Family::Tickets, Some(3), 10, None), 10);
        // No answer, or "nothing at or after that time": from the beginning.
        assert_eq!(replay_start(Family::Surveys, None, 10, None), 10);
    }

    #[test]
    fn a_replay_starts_no_later_than_its_restored_periods_count() {
        // A record counting up to 400 needs the messages from 400 on.
        assert_eq!(replay_start(Family::Surveys, Some(500), 10, Some(400)), 400);
        // One counting further changes nothing: the messages before it are skipped there.
        assert_eq!(replay_start(Family::Surveys, Some(500), 10, Some(700)), 500);
        // Below the low watermark, the watermark: nothing older is left to read.
        assert_eq!(replay_start(Family::Tickets, Some(500), 10, Some(3)), 10);
        assert_eq!(replay_start(Family::Billing, Some(500), 10, Some(400)), 10);
    }

    #[test]
    fn a_first_assignment_without_any_commit_is_a_new_group_unless_history_is_asked() {
        let none: &[Option<i64>] = &[None, None];
        let some: &[Option<i64>] = &[None, Some(4)];
        assert_eq!(
            History::of_first_assignment(Some(none), false),
            History::LeftUnreported
        );
        assert_eq!(
            History::of_first_assignment(Some(none), true),
            History::Reported
        );
        assert_eq!(
            History::of_first_assignment(Some(some), false),
            History::Reported
        );
        // Offsets that could not be read are no evidence of a new group.
        assert_eq!(History::of_first_assignment(None, false), History::Reported);
    }

    #[test]
    fn counting_begins_at_the_commit_or_for_a_new_group_at_the_end_unless_history_is_asked() {
        let reported = History::Reported;
        let unreported = History::LeftUnreported;
        // A committed offset wins, but never before the replay start.
        assert_eq!(count_from(Some(40), 10, 90, reported), 40);
        assert_eq!(count_from(Some(40), 10, 90, unreported), 40);
        assert_eq!(count_from(Some(5), 10, 90, reported), 10);
        // No commit: the replay start, or the end for a new group that leaves its history.
        assert_eq!(count_from(None, 10, 90, reported), 10);
        assert_eq!(count_from(None, 10, 90, unreported), 90);
        // An end that could not be read: report rather than miss.
        assert_eq!(count_from(None, 10, UNKNOWN_END, unreported), 10);
    }

    #[test]
    fn each_outcome_reports_as_documented() {
        use Family::{Billing, Surveys, Tickets};
        let counted = Report {
            processed: true,
            counted: true,
            input: true,
            ..Report::default()
        };
        assert_eq!(report(Ok(Outcome::Counted), Surveys, true, false), counted);
        // Replayed: the state changes again, nothing is reported again.
        assert_eq!(
            report(Ok(Outcome::Counted), Surveys, false, false),
            Report {
                input: false,
                ..counted
            }
        );
        assert_eq!(
            report(Ok(Outcome::Duplicate), Tickets, true, true),
            Report {
                duplicate: true,
                ..Report::default()
            }
        );
        assert_eq!(
            report(Ok(Outcome::Duplicate), Tickets, false, true),
            Report::default()
        );
        // Late: a survey or ticket event is dead-lettered only when asked; a billing one
        // was applied to the current MRR and is never rejected.
        let late = Report {
            late: true,
            ..Report::default()
        };
        assert_eq!(report(Ok(Outcome::Late), Surveys, true, false), late);
        assert_eq!(
            report(Ok(Outcome::Late), Tickets, true, true),
            Report {
                rejected: Some(Reason::Late),
                ..late
            }
        );
        assert_eq!(
            report(Ok(Outcome::Late), Billing, true, true),
            Report {
                processed: true,
                ..late
            }
        );
        assert_eq!(
            report(Ok(Outcome::Late), Billing, false, true),
            Report {
                processed: true,
                ..Report::default()
            }
        );
        // Late for its calendar period only: counted in the rolling windows, reported late,
        // dead-lettered when asked, whatever its family; replayed, only counted again.
        for family in [Surveys, Tickets, Billing] {
            assert_eq!(
                report(Ok(Outcome::LateForPeriod), family, true, false),
                Report {
                    late: true,
                    ..counted
                }
            );
            assert_eq!(
                report(Ok(Outcome::LateForPeriod), family, true, true),
                Report {
                    late: true,
                    rejected: Some(Reason::LateForPeriod),
                    ..counted
                }
            );
            assert_eq!(
                report(Ok(Outcome::LateForPeriod), family, false, true),
                Report {
                    input: false,
                    ..counted
                }
            );
        }
        assert_eq!(
            report(Err(Reason::OutOfRange), Billing, true, false),
            Report {
                rejected: Some(Reason::OutOfRange),
                ..Report::default()
            }
        );
        assert_eq!(
            report(Err(Reason::InvalidJson), Surveys, false, true),
            Report::default()
        );
    }

    #[test]
    fn the_commit_stops_at_an_unacknowledged_dead_letter_and_never_goes_back() {
        assert_eq!(commit_offset(Some(50), false, None, 10), Some(50));
        assert_eq!(commit_offset(Some(50), true, Some(42), 10), Some(42));
        assert_eq!(commit_offset(Some(50), false, Some(60), 10), Some(50));
        // A dead letter pending from before this assignment does not move it back.
        assert_eq!(commit_offset(Some(50), false, Some(3), 10), Some(10));
        // Caught up without a live message: where reporting began; still replaying: nothing.
        assert_eq!(commit_offset(None, true, None, 10), Some(10));
        assert_eq!(commit_offset(None, false, None, 10), None);
    }

    #[test]
    fn the_owner_of_the_first_survey_partition_publishes() {
        let owned = [
            PartitionId::new(Family::Tickets, 0),
            PartitionId::new(Family::Surveys, 1),
        ];
        assert!(!publishes(owned.iter()));
        let owned = [
            PartitionId::new(Family::Billing, 0),
            PartitionId::new(Family::Surveys, 0),
        ];
        assert!(publishes(owned.iter()));
        assert!(!publishes([].iter()));
    }

    #[test]
    fn a_full_snapshot_is_due_when_asked_after_a_loss_or_once_an_interval() {
        assert!(full_snapshot_due(false, false, None, 1_000, 300));
        assert!(!full_snapshot_due(false, false, Some(800), 1_000, 300));
        assert!(full_snapshot_due(false, false, Some(700), 1_000, 300));
        assert!(full_snapshot_due(true, false, Some(800), 1_000, 300));
        assert!(full_snapshot_due(false, true, Some(800), 1_000, 300));
    }

    #[test]
    fn only_changed_values_and_sample_counts_are_news_unless_full() {
        let record = |value: Option<f64>, samples: u64| KpiRecord {
            def: &crate::kpi::NPS,
            window: "1h".into(),
            dimension: None,
            value,
            samples,
            components: Vec::new(),
            window_start_ms: 0,
            window_end_ms: 0,
        };
        let mut sent = SentValues::default();
        let first = record(Some(1.0), 3);
        assert!(sent.is_news("k", &first, false));
        sent.sent("k".into(), &first);
        assert!(!sent.is_news("k", &first, false));
        assert!(sent.is_news("k", &first, true));
        assert!(sent.is_news("k", &record(Some(2.0), 3), false));
        assert!(sent.is_news("k", &record(Some(1.0), 4), false));
        assert!(sent.is_news("k", &record(None, 3), false));
        assert!(sent.is_news("other", &first, false));
        sent.forget();
        assert!(sent.is_news("k", &first, false));
    }
}
