//! History: the live core replayed at past instants.
//!
//! A [`Replay`] feeds messages to the same [`Aggregates`] the live service keeps, in the
//! order they were received, with the time each was received as the clock, and evaluates
//! the KPIs at each instant of a series as the clock passes it: at instant T it gives
//! exactly what the live service would have published at T, having received those
//! messages by then. Nothing is re-implemented, so history and live values cannot drift
//! apart.
//!
//! Pure: the times are the messages'.

use crate::aggregate::{Aggregates, Outcome};
use crate::event::{Event, Rejection};
use crate::kpi::KpiRecord;
use crate::partition::PartitionId;

/// Why a series of instants cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("the step must be at least 1 ms, not {0} ms")]
    Step(i64),
    #[error("--from ({from} ms) is after --to ({to} ms)")]
    Order { from: i64, to: i64 },
    #[error("{0} instants are more than the {MAX_INSTANTS} a run evaluates")]
    TooMany(i64),
}

/// The most instants one run evaluates: a year of minutes. Each instant writes every KPI of
/// every window and series, so more is a mistake in `--step`.
pub const MAX_INSTANTS: i64 = 527_040;

/// The instants `from`, `from + step`, ... up to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instants {
    /// `None` once the series is over.
    next: Option<i64>,
    to: i64,
    step: i64,
}

impl Instants {
    pub fn new(from: i64, to: i64, step: i64) -> Result<Self, HistoryError> {
        if step < 1 {
            return Err(HistoryError::Step(step));
        }
        if from > to {
            return Err(HistoryError::Order { from, to });
        }
        let count = (to - from) / step + 1;
        if count > MAX_INSTANTS {
            return Err(HistoryError::TooMany(count));
        }
        Ok(Instants {
            next: Some(from),
            to,
            step,
        })
    }

    /// The next instant not after `until`, if any is left.
    fn next_until(&mut self, until: i64) -> Option<i64> {
        let instant = self.next.filter(|next| *next <= until)?;
        self.next = instant
            .checked_add(self.step)
            .filter(|next| *next <= self.to);
        Some(instant)
    }
}

/// How the records of an instant are computed from the state: [`Aggregates::snapshot`], or
/// the same computation with the partitions' components spread over threads
/// ([`Replay::with_snapshot`]).
pub type Snapshot = fn(&Aggregates, i64) -> Vec<KpiRecord>;

/// A replay of received messages that evaluates the KPIs at each instant the clock passes.
#[derive(Debug)]
pub struct Replay {
    aggregates: Aggregates,
    instants: Instants,
    /// The latest receipt time seen: the clock of the replay, as the live service's never
    /// goes back.
    clock: Option<i64>,
    snapshot: Snapshot,
}

impl Replay {
    pub fn new(aggregates: Aggregates, instants: Instants) -> Self {
        Replay {
            aggregates,
            instants,
            clock: None,
            snapshot: Aggregates::snapshot,
        }
    }

    /// The replay with `snapshot` computing each instant's records; it must give what
    /// [`Aggregates::snapshot`] gives.
    pub fn with_snapshot(self, snapshot: Snapshot) -> Self {
        Replay { snapshot, ..self }
    }

    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    /// The latest receipt time offered so far: how far the replay has come.
    pub fn clock(&self) -> Option<i64> {
        self.clock
    }

    /// Offers the message at `offset` of `partition`, received at `received_ms`: first every
    /// instant before that time is evaluated and handed to `emit`, then the event is
    /// recorded as the live service records it on receipt.
    pub fn offer(
        &mut self,
        partition: PartitionId,
        event: &Event<'_>,
        offset: i64,
        received_ms: i64,
        emit: &mut impl FnMut(i64, Vec<KpiRecord>),
    ) -> Result<Outcome, Rejection> {
        let now = self.clock.map_or(received_ms, |c| c.max(received_ms));
        self.clock = Some(now);
        // An instant is evaluated with what was received strictly before it.
        while let Some(instant) = self.instants.next_until(now.saturating_sub(1)) {
            self.aggregates.refresh_blocks(instant);
            emit(instant, (self.snapshot)(&self.aggregates, instant));
        }
        self.aggregates.record_at(partition, event, offset, now)
    }

    /// Evaluates the instants left, after the last message.
    pub fn finish(mut self, emit: &mut impl FnMut(i64, Vec<KpiRecord>)) {
        while let Some(instant) = self.instants.next_until(i64::MAX) {
            self.aggregates.refresh_blocks(instant);
            emit(instant, (self.snapshot)(&self.aggregates, instant));
        }
    }
}

#[cfg(test)]
mod tests;
