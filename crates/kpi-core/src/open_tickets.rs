//! The open tickets of one input partition: when each was opened, its priority, its public
//! agent replies and whether it was reopened. First reply time is decided here.
//!
//! A ticket is open from its `ticket.opened` until its `ticket.resolved`, and again from a
//! `ticket.reopened`. Only public agent replies are replies. What a ticket keeps is small and
//! of fixed size (its id's and its customer's keyed hashes, about 48 bytes in all), and a ticket open longer than
//! the configured maximum age is dropped and counted as abandoned, so the set stays bounded
//! by the tickets opened within that age.
//!
//! Ages are judged in event time, against the newest `occurred_at` the partition has applied,
//! never against the clock, so that a replay of the log makes the decisions the live run
//! made. A ticket that has passed the age is treated as gone when it is next looked up,
//! whether or not a sweep has removed it yet: sweeps only give its memory back.
//!
//! Each ticket keeps the keyed hash of the customer it was opened for, and every ticket that
//! comes into the set or leaves it (resolved, or dropped for its age) is noted as an
//! [`OpenChange`] of that customer, so that the customer's count of open tickets
//! ([`crate::health::parts`]) follows the set exactly.
//!
//! Events of one ticket are expected in the order they happened. The one disorder handled is
//! a public agent reply that arrives before its ticket's `ticket.opened`: it waits, at most
//! [`WAIT_MS`] of event time and at most [`MAX_WAITING`] per partition, and is counted as the
//! first reply once the `ticket.opened` arrives (docs/kpis.md).
//!
//! Ticket ids are kept as 64-bit hashes, keyed at random per process: two open tickets of
//! one partition are taken for one only on a hash collision (about 1 in 3.6e7 for a million
//! open tickets), and a producer cannot craft ids that collide.
//!
//! Pure: every time is an argument.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use nohash_hasher::IntMap;

use crate::event::{Author, Priority};
use crate::health::parts::CustomerKey;

/// How long, in event time, a public agent reply waits for its ticket's `ticket.opened`.
pub const WAIT_MS: i64 = 3_600_000;

/// Most replies waiting for their ticket's `ticket.opened` on one partition; a reply beyond
/// is not remembered.
pub const MAX_WAITING: usize = 65_536;

/// Sweeps of the open tickets per maximum age: a ticket's memory is given back at most this
/// fraction of the age after the ticket has expired.
const SWEEPS_PER_AGE: i64 = 64;

/// What is known of a ticket's first public agent reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstReply {
    /// None yet: the next public agent reply is the first.
    Awaited,
    /// The first public agent reply came at this time.
    At(i64),
    /// The ticket came back by a `ticket.reopened` after it had left the set: its first
    /// reply, if it had one, came before, and a reopen starts no new one.
    Settled,
}

/// One open ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTicket {
    /// When it was opened: the earliest `ticket.opened` seen, or the `ticket.reopened` that
    /// brought it back after it had left the set.
    pub opened_at_ms: i64,
    /// Of the latest event that gave one.
    pub priority: Option<Priority>,
    pub first_reply: FirstReply,
    pub public_agent_replies: u32,
    /// A `ticket.reopened` was seen since it was opened.
    pub reopened: bool,
    /// The customer it was opened for.
    pub customer: CustomerKey,
}

/// A ticket that came into the open tickets or left them, and the customer it was opened
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenChange {
    pub customer: CustomerKey,
    /// Came in; otherwise left (resolved, or dropped for its age).
    pub opened: bool,
}

/// A public agent reply seen before its ticket's `ticket.opened`, and the series `S` it
/// counts in.
#[derive(Debug, Clone, Copy)]
struct WaitingReply<S> {
    at_ms: i64,
    series: S,
    public_agent_replies: u32,
    priority: Option<Priority>,
}

/// A first reply to count: when it came, how long after the ticket was opened, the series
/// of the reply, and the ticket's priority once the reply applied (its SLA target's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstReplyTime<S> {
    pub replied_at_ms: i64,
    pub duration_ms: u64,
    pub series: S,
    pub priority: Option<Priority>,
}

/// The open tickets of one partition; `S` is the series a reply counts in.
#[derive(Debug, Clone)]
pub struct OpenTickets<S> {
    max_open_age_ms: i64,
    tickets: IntMap<u64, OpenTicket>,
    waiting: IntMap<u64, WaitingReply<S>>,
    keys: RandomState,
    /// The newest `occurred_at` applied: the "now" of every age.
    newest_ms: i64,
    next_sweep_ms: i64,
    next_waiting_sweep_ms: i64,
    /// Tickets dropped for their age and not yet taken by [`OpenTickets::take_abandoned`].
    abandoned: u64,
    /// Tickets that came in or left, not yet taken by [`OpenTickets::take_changes`].
    changes: Vec<OpenChange>,
}

/// The time from opening to a reply; a reply dated before the opening (producers' clocks
/// disagree) took no time.
fn elapsed(opened_at_ms: i64, replied_at_ms: i64) -> u64 {
    u64::try_from(replied_at_ms.saturating_sub(opened_at_ms)).unwrap_or(0)
}

impl<S: Copy> OpenTickets<S> {
    /// `max_open_age_ms`: how long a ticket may stay open before it is dropped (at least 1).
    pub fn new(max_open_age_ms: i64) -> Self {
        OpenTickets {
            max_open_age_ms: max_open_age_ms.max(1),
            tickets: IntMap::default(),
            waiting: IntMap::default(),
            keys: RandomState::new(),
            newest_ms: i64::MIN,
            next_sweep_ms: i64::MIN,
            next_waiting_sweep_ms: i64::MIN,
            abandoned: 0,
            changes: Vec::new(),
        }
    }

    /// The open ticket `ticket_id`, unless it has passed the maximum age.
    pub fn get(&self, ticket_id: &str) -> Option<&OpenTicket> {
        let key = self.keys.hash_one(ticket_id);
        self.tickets
            .get(&key)
            .filter(|t| !self.expired(t.opened_at_ms))
    }

    /// The open tickets, those past the maximum age left out.
    pub fn iter(&self) -> impl Iterator<Item = &OpenTicket> {
        self.tickets
            .values()
            .filter(|t| !self.expired(t.opened_at_ms))
    }

    /// Open tickets held, those past the maximum age and not swept yet included.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Replies held waiting for their ticket's `ticket.opened`.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Tickets dropped for their age since the last call.
    pub fn take_abandoned(&mut self) -> u64 {
        std::mem::take(&mut self.abandoned)
    }

    /// The tickets that came in or left since the last call, in order.
    pub fn take_changes(&mut self) -> std::vec::Drain<'_, OpenChange> {
        self.changes.drain(..)
    }

    fn note(&mut self, customer: CustomerKey, opened: bool) {
        self.changes.push(OpenChange { customer, opened });
    }

    fn expired(&self, opened_at_ms: i64) -> bool {
        opened_at_ms < self.newest_ms.saturating_sub(self.max_open_age_ms)
    }

    /// Moves the partition's event time to `at_ms` and sweeps what it has aged out.
    fn advance(&mut self, at_ms: i64) {
        if at_ms <= self.newest_ms {
            return;
        }
        self.newest_ms = at_ms;
        if at_ms >= self.next_sweep_ms {
            let oldest = at_ms.saturating_sub(self.max_open_age_ms);
            let (abandoned, changes) = (&mut self.abandoned, &mut self.changes);
            self.tickets.retain(|_, t| {
                let keep = t.opened_at_ms >= oldest;
                if !keep {
                    *abandoned += 1;
                    changes.push(OpenChange {
                        customer: t.customer,
                        opened: false,
                    });
                }
                keep
            });
            self.next_sweep_ms =
                at_ms.saturating_add((self.max_open_age_ms / SWEEPS_PER_AGE).max(1));
        }
        if at_ms >= self.next_waiting_sweep_ms {
            let oldest = at_ms.saturating_sub(WAIT_MS);
            self.waiting.retain(|_, w| w.at_ms >= oldest);
            self.next_waiting_sweep_ms = at_ms.saturating_add(WAIT_MS / 4);
        }
    }

    /// The live entry of `key`: an expired one is dropped (and counted) first.
    fn live(&mut self, key: u64) -> Option<&mut OpenTicket> {
        let expired = self
            .tickets
            .get(&key)
            .map(|t| self.expired(t.opened_at_ms))?;
        if expired {
            if let Some(ticket) = self.tickets.remove(&key) {
                self.abandoned += 1;
                self.note(ticket.customer, false);
            }
            return None;
        }
        self.tickets.get_mut(&key)
    }

    /// The waiting reply of `key`, unless it waited too long.
    fn take_waiting(&mut self, key: u64) -> Option<WaitingReply<S>> {
        let oldest = self.newest_ms.saturating_sub(WAIT_MS);
        self.waiting.remove(&key).filter(|w| w.at_ms >= oldest)
    }

    /// A `ticket.opened` of `customer` at `at_ms`. Returns the first reply to count when a
    /// public agent reply was waiting for it.
    pub fn opened(
        &mut self,
        ticket_id: &str,
        customer: CustomerKey,
        at_ms: i64,
        priority: Option<Priority>,
    ) -> Option<FirstReplyTime<S>> {
        self.advance(at_ms);
        let key = self.keys.hash_one(ticket_id);
        if let Some(ticket) = self.live(key) {
            // Opened again while open: the earliest opening stands.
            ticket.opened_at_ms = ticket.opened_at_ms.min(at_ms);
            ticket.priority = priority.or(ticket.priority);
            return None;
        }
        if self.expired(at_ms) {
            // Older than the maximum age already: it would be dropped at once.
            return None;
        }
        let waiting = self.take_waiting(key);
        // The reply came after the opening, so its priority is the later one.
        let priority = waiting.and_then(|w| w.priority).or(priority);
        let ticket = OpenTicket {
            opened_at_ms: at_ms,
            priority,
            first_reply: waiting.map_or(FirstReply::Awaited, |w| FirstReply::At(w.at_ms)),
            public_agent_replies: waiting.map_or(0, |w| w.public_agent_replies),
            reopened: false,
            customer,
        };
        self.tickets.insert(key, ticket);
        self.note(customer, true);
        waiting.map(|w| FirstReplyTime {
            replied_at_ms: w.at_ms,
            duration_ms: elapsed(at_ms, w.at_ms),
            series: w.series,
            priority,
        })
    }

    /// A `ticket.reopened` of `customer` at `at_ms`.
    pub fn reopened(
        &mut self,
        ticket_id: &str,
        customer: CustomerKey,
        at_ms: i64,
        priority: Option<Priority>,
    ) {
        self.advance(at_ms);
        let key = self.keys.hash_one(ticket_id);
        if let Some(ticket) = self.live(key) {
            ticket.reopened = true;
            ticket.priority = priority.or(ticket.priority);
            return;
        }
        if self.expired(at_ms) {
            return;
        }
        self.tickets.insert(
            key,
            OpenTicket {
                opened_at_ms: at_ms,
                priority,
                first_reply: FirstReply::Settled,
                public_agent_replies: 0,
                reopened: true,
                customer,
            },
        );
        self.note(customer, true);
    }

    /// A `ticket.replied` at `at_ms`, counted in `series`. Returns the first reply time when
    /// this is the ticket's first public agent reply.
    pub fn replied(
        &mut self,
        ticket_id: &str,
        at_ms: i64,
        author: Author,
        public: bool,
        priority: Option<Priority>,
        series: S,
    ) -> Option<FirstReplyTime<S>> {
        self.advance(at_ms);
        let key = self.keys.hash_one(ticket_id);
        let counts = author == Author::Agent && public;
        if let Some(ticket) = self.live(key) {
            ticket.priority = priority.or(ticket.priority);
            if !counts {
                return None;
            }
            ticket.public_agent_replies = ticket.public_agent_replies.saturating_add(1);
            if ticket.first_reply != FirstReply::Awaited {
                return None;
            }
            ticket.first_reply = FirstReply::At(at_ms);
            return Some(FirstReplyTime {
                replied_at_ms: at_ms,
                duration_ms: elapsed(ticket.opened_at_ms, at_ms),
                series,
                priority: ticket.priority,
            });
        }
        let oldest = self.newest_ms.saturating_sub(WAIT_MS);
        if !counts || at_ms < oldest {
            return None;
        }
        let full = self.waiting.len() >= MAX_WAITING;
        match self.waiting.get_mut(&key) {
            Some(waiting) if waiting.at_ms >= oldest => {
                waiting.public_agent_replies = waiting.public_agent_replies.saturating_add(1);
                waiting.priority = priority.or(waiting.priority);
                return None;
            }
            // One that waited too long is replaced.
            Some(_) => {}
            None if full => return None,
            None => {}
        }
        self.waiting.insert(
            key,
            WaitingReply {
                at_ms,
                series,
                public_agent_replies: 1,
                priority,
            },
        );
        None
    }

    /// A `ticket.resolved` at `at_ms`: the ticket leaves the set. Returns it as it was.
    pub fn resolved(&mut self, ticket_id: &str, at_ms: i64) -> Option<OpenTicket> {
        self.advance(at_ms);
        let key = self.keys.hash_one(ticket_id);
        self.waiting.remove(&key);
        self.live(key)?;
        let ticket = self.tickets.remove(&key)?;
        self.note(ticket.customer, false);
        Some(ticket)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const T0: i64 = 20_000 * HOUR;
    const C: CustomerKey = CustomerKey(1);

    fn tickets() -> OpenTickets<u8> {
        OpenTickets::new(90 * DAY)
    }

    fn reply(t: &mut OpenTickets<u8>, id: &str, at: i64) -> Option<FirstReplyTime<u8>> {
        t.replied(id, at, Author::Agent, true, None, 7)
    }

    fn first(at: i64, duration_ms: u64, series: u8) -> Option<FirstReplyTime<u8>> {
        Some(FirstReplyTime {
            replied_at_ms: at,
            duration_ms,
            series,
            priority: None,
        })
    }

    fn with_priority(
        first: Option<FirstReplyTime<u8>>,
        priority: Priority,
    ) -> Option<FirstReplyTime<u8>> {
        first.map(|f| FirstReplyTime {
            priority: Some(priority),
            ..f
        })
    }

    #[test]
    fn only_the_first_public_agent_reply_is_a_first_reply() {
        let mut t = tickets();
        assert_eq!(t.opened("a", C, T0, Some(Priority::High)), None);
        assert_eq!(
            t.replied("a", T0 + MINUTE, Author::Customer, true, None, 1),
            None
        );
        assert_eq!(
            t.replied("a", T0 + 2 * MINUTE, Author::Agent, false, None, 1),
            None
        );
        assert_eq!(
            reply(&mut t, "a", T0 + HOUR),
            with_priority(first(T0 + HOUR, HOUR as u64, 7), Priority::High)
        );
        assert_eq!(reply(&mut t, "a", T0 + 2 * HOUR), None);
        let a = t.get("a").copied().unwrap();
        assert_eq!(
            a,
            OpenTicket {
                opened_at_ms: T0,
                priority: Some(Priority::High),
                first_reply: FirstReply::At(T0 + HOUR),
                public_agent_replies: 2,
                reopened: false,
                customer: C,
            }
        );
        // Other tickets are apart.
        assert_eq!(t.get("b"), None);
        assert_eq!(t.opened("b", C, T0, None), None);
        assert_eq!(reply(&mut t, "b", T0 + 1), first(T0 + 1, 1, 7));
    }

    #[test]
    fn a_reopen_starts_no_new_first_reply() {
        let mut t = tickets();
        t.opened("a", C, T0, None);
        reply(&mut t, "a", T0 + MINUTE);
        t.reopened("a", C, T0 + HOUR, Some(Priority::Urgent));
        assert_eq!(reply(&mut t, "a", T0 + 2 * HOUR), None);
        let a = t.get("a").unwrap();
        assert!(a.reopened);
        assert_eq!(a.priority, Some(Priority::Urgent));
        // Reopened after its resolution: it is open again, with no first reply to come.
        assert_eq!(
            t.resolved("a", T0 + 3 * HOUR)
                .map(|a| a.public_agent_replies),
            Some(2)
        );
        assert_eq!(t.get("a"), None);
        t.reopened("a", C, T0 + 4 * HOUR, None);
        assert_eq!(reply(&mut t, "a", T0 + 5 * HOUR), None);
        let a = t.get("a").unwrap();
        assert_eq!(
            (a.opened_at_ms, a.first_reply),
            (T0 + 4 * HOUR, FirstReply::Settled)
        );
        // A reopen before any reply keeps the reply to come.
        t.opened("b", C, T0, None);
        t.reopened("b", C, T0 + MINUTE, None);
        assert_eq!(
            reply(&mut t, "b", T0 + HOUR),
            first(T0 + HOUR, HOUR as u64, 7)
        );
    }

    #[test]
    fn a_reply_before_its_opening_is_counted_when_the_opening_arrives() {
        let mut t = tickets();
        assert_eq!(
            t.replied("a", T0 + HOUR, Author::Agent, true, Some(Priority::Low), 3),
            None
        );
        assert_eq!(reply(&mut t, "a", T0 + 2 * HOUR), None);
        assert_eq!((t.len(), t.waiting()), (0, 1));
        // Counted at the first reply's time, in its series.
        assert_eq!(
            t.opened("a", C, T0, Some(Priority::High)),
            with_priority(first(T0 + HOUR, HOUR as u64, 3), Priority::Low)
        );
        let a = t.get("a").unwrap();
        assert_eq!(a.public_agent_replies, 2);
        assert_eq!(a.priority, Some(Priority::Low));
        assert_eq!(t.waiting(), 0);
        // Dated before its opening: no time.
        reply(&mut t, "b", T0 + 2 * HOUR);
        assert_eq!(
            t.opened("b", C, T0 + 2 * HOUR + MINUTE, None),
            first(T0 + 2 * HOUR, 0, 7)
        );
        // Customer and private replies do not wait.
        t.replied("c", T0, Author::Customer, true, None, 1);
        t.replied("c", T0, Author::Agent, false, None, 1);
        assert_eq!(t.waiting(), 0);
        assert_eq!(t.opened("c", C, T0, None), None);
    }

    #[test]
    fn a_reply_waits_an_hour_of_event_time() {
        let mut t = tickets();
        reply(&mut t, "a", T0);
        reply(&mut t, "b", T0);
        t.opened("x", C, T0 + WAIT_MS, None);
        assert_eq!(t.opened("a", C, T0, None), first(T0, 0, 7));
        t.opened("x", C, T0 + WAIT_MS + 1, None);
        assert_eq!(t.opened("b", C, T0, None), None);
        assert_eq!(
            reply(&mut t, "b", T0 + WAIT_MS + 2),
            first(T0 + WAIT_MS + 2, (WAIT_MS + 2) as u64, 7)
        );
        // Older than the wait already: not kept.
        assert_eq!(reply(&mut t, "c", T0), None);
        assert_eq!(t.waiting(), 0);
        // A waiting reply is replaced by a newer one once it has waited too long.
        reply(&mut t, "d", T0 + WAIT_MS);
        t.opened("x", C, T0 + 2 * WAIT_MS + 1, None);
        reply(&mut t, "d", T0 + 2 * WAIT_MS + 1);
        assert_eq!(
            t.opened("d", C, T0 + 2 * WAIT_MS, None),
            first(T0 + 2 * WAIT_MS + 1, 1, 7)
        );
        // A resolution forgets it.
        reply(&mut t, "e", T0 + 2 * WAIT_MS + 1);
        assert_eq!(t.resolved("e", T0 + 2 * WAIT_MS + 1), None);
        assert_eq!(t.opened("e", C, T0 + 2 * WAIT_MS, None), None);
    }

    #[test]
    fn waiting_replies_are_capped() {
        let mut t = tickets();
        for i in 0..=MAX_WAITING {
            reply(&mut t, &i.to_string(), T0);
        }
        assert_eq!(t.waiting(), MAX_WAITING);
        assert_eq!(t.opened("0", C, T0, None), first(T0, 0, 7));
        assert_eq!(t.opened(&MAX_WAITING.to_string(), C, T0, None), None);
    }

    #[test]
    fn a_ticket_open_past_the_maximum_age_is_dropped_and_counted_once() {
        let mut t = OpenTickets::<u8>::new(DAY);
        t.opened("a", C, T0, None);
        t.opened("b", C, T0 + HOUR, None);
        t.opened("x", C, T0 + DAY, None);
        assert!(t.get("a").is_some());
        // One millisecond past the age: gone, whether swept or not.
        t.opened("x", C, T0 + DAY + 1, None);
        assert_eq!(t.get("a"), None);
        assert_eq!(reply(&mut t, "a", T0 + DAY + 1), None);
        assert_eq!(t.take_abandoned(), 1);
        assert_eq!(t.take_abandoned(), 0);
        // A sweep gives back the memory of those never looked up again.
        t.opened("y", C, T0 + 2 * DAY, None);
        assert_eq!(t.get("b"), None);
        assert_eq!(t.take_abandoned(), 1);
        assert_eq!(t.len(), 2);
        // An opening already past the age is not kept, nor counted.
        assert_eq!(t.opened("old", C, T0, None), None);
        assert_eq!(t.get("old"), None);
        assert_eq!(t.take_abandoned(), 0);
    }

    #[test]
    fn priorities_follow_the_latest_event_that_gives_one() {
        let mut t = tickets();
        t.opened("a", C, T0, Some(Priority::Low));
        t.replied("a", T0, Author::Customer, false, Some(Priority::Normal), 0);
        assert_eq!(t.get("a").unwrap().priority, Some(Priority::Normal));
        t.replied("a", T0, Author::Agent, true, None, 0);
        t.reopened("a", C, T0, None);
        assert_eq!(t.get("a").unwrap().priority, Some(Priority::Normal));
        t.opened("a", C, T0 - HOUR, Some(Priority::Urgent));
        let a = t.get("a").unwrap();
        // Opened again while open: the earliest opening stands.
        assert_eq!(
            (a.priority, a.opened_at_ms),
            (Some(Priority::Urgent), T0 - HOUR)
        );
    }

    #[test]
    fn instants_at_the_ends_of_time_do_not_overflow() {
        let mut t = tickets();
        t.opened("a", C, i64::MIN, None);
        assert_eq!(reply(&mut t, "a", i64::MIN), first(i64::MIN, 0, 7));
        t.opened("b", C, i64::MIN, None);
        assert_eq!(reply(&mut t, "b", i64::MAX), None);
        assert_eq!(t.get("b"), None);
        t.opened("c", C, i64::MAX - 1, None);
        assert_eq!(reply(&mut t, "c", i64::MAX), first(i64::MAX, 1, 7));
        reply(&mut t, "d", i64::MAX);
        assert_eq!(t.opened("d", C, i64::MIN, None), None);
    }

    /// A ticket as the brute-force model keeps it: the same rules, kept by name, with every
    /// expiry applied at once.
    #[derive(Debug, Clone, Copy)]
    struct ModelTicket {
        opened_at: i64,
        priority: Option<Priority>,
        first: FirstReply,
        replies: u32,
        reopened: bool,
    }

    #[derive(Debug, Default)]
    struct Model {
        max_age: i64,
        tickets: HashMap<String, ModelTicket>,
        /// (first reply time, series, replies, priority)
        waiting: HashMap<String, (i64, u8, u32, Option<Priority>)>,
        newest: Option<i64>,
        abandoned: u64,
    }

    impl Model {
        fn advance(&mut self, at: i64) {
            let newest = self.newest.map_or(at, |n| n.max(at));
            self.newest = Some(newest);
            let before = self.tickets.len();
            self.tickets
                .retain(|_, t| t.opened_at >= newest - self.max_age);
            self.abandoned += (before - self.tickets.len()) as u64;
            self.waiting.retain(|_, w| w.0 >= newest - WAIT_MS);
        }

        fn apply(&mut self, event: &TicketStep) -> Option<(i64, u64, u8, Option<Priority>)> {
            let TicketStep {
                kind,
                ticket,
                at,
                priority,
                author,
                public,
                series,
            } = *event;
            self.advance(at);
            let id = ticket.to_string();
            let elapsed = |from: i64, to: i64| (to - from).max(0) as u64;
            match kind {
                0 => {
                    if let Some(t) = self.tickets.get_mut(&id) {
                        t.opened_at = t.opened_at.min(at);
                        t.priority = priority.or(t.priority);
                        self.advance(at);
                        return None;
                    }
                    if at < self.newest.unwrap_or(at) - self.max_age {
                        return None;
                    }
                    let waiting = self.waiting.remove(&id);
                    let priority = waiting.and_then(|w| w.3).or(priority);
                    self.tickets.insert(
                        id,
                        ModelTicket {
                            opened_at: at,
                            priority,
                            first: waiting.map_or(FirstReply::Awaited, |w| FirstReply::At(w.0)),
                            replies: waiting.map_or(0, |w| w.2),
                            reopened: false,
                        },
                    );
                    waiting.map(|w| (w.0, elapsed(at, w.0), w.1, priority))
                }
                1 => {
                    if let Some(t) = self.tickets.get_mut(&id) {
                        t.reopened = true;
                        t.priority = priority.or(t.priority);
                    } else if at >= self.newest.unwrap_or(at) - self.max_age {
                        self.tickets.insert(
                            id,
                            ModelTicket {
                                opened_at: at,
                                priority,
                                first: FirstReply::Settled,
                                replies: 0,
                                reopened: true,
                            },
                        );
                    }
                    None
                }
                2 => {
                    let counts = author == Author::Agent && public;
                    if let Some(t) = self.tickets.get_mut(&id) {
                        t.priority = priority.or(t.priority);
                        if !counts {
                            return None;
                        }
                        t.replies += 1;
                        if t.first != FirstReply::Awaited {
                            return None;
                        }
                        t.first = FirstReply::At(at);
                        return Some((at, elapsed(t.opened_at, at), series, t.priority));
                    }
                    if !counts || at < self.newest.unwrap_or(at) - WAIT_MS {
                        return None;
                    }
                    let w = self.waiting.entry(id).or_insert((at, series, 0, None));
                    w.2 += 1;
                    w.3 = priority.or(w.3);
                    None
                }
                _ => {
                    self.waiting.remove(&id);
                    self.tickets.remove(&id);
                    None
                }
            }
        }
    }

    /// One ticket event: 0 opened, 1 reopened, 2 replied, 3 resolved.
    #[derive(Debug, Clone, Copy)]
    struct TicketStep {
        kind: u8,
        ticket: u8,
        at: i64,
        priority: Option<Priority>,
        author: Author,
        public: bool,
        series: u8,
    }

    fn ticket_steps() -> impl Strategy<Value = Vec<TicketStep>> {
        let priority = prop_oneof![
            3 => Just(None),
            1 => prop::sample::select(&Priority::ALL[..]).prop_map(Some),
        ];
        let author = prop_oneof![3 => Just(Author::Agent), 1 => Just(Author::Customer)];
        prop::collection::vec(
            (
                prop_oneof![2 => Just(0u8), 1 => Just(1u8), 4 => Just(2u8), 2 => Just(3u8)],
                0..6u8,
                // Mostly forward in time, sometimes back: out of order within a partition.
                prop_oneof![4 => 0..3 * HOUR, 1 => -3 * HOUR..0],
                priority,
                author,
                prop::bool::weighted(0.8),
                0..3u8,
            ),
            1..120,
        )
        .prop_map(|steps| {
            let mut at = T0;
            steps
                .into_iter()
                .map(|(kind, ticket, step, priority, author, public, series)| {
                    at += step;
                    TicketStep {
                        kind,
                        ticket,
                        at,
                        priority,
                        author,
                        public,
                        series,
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// The open tickets and every first reply equal a model that keeps tickets by name
        /// and expires them at once; dropped tickets are counted once.
        #[test]
        fn open_tickets_equal_a_brute_force_model(
            steps in ticket_steps(),
            max_age in prop_oneof![Just(90 * DAY), 2 * HOUR..12 * HOUR],
        ) {
            let mut open = OpenTickets::<u8>::new(max_age);
            let mut model = Model { max_age, ..Model::default() };
            let mut abandoned = 0;
            let mut held: HashMap<CustomerKey, i64> = HashMap::new();
            for step in &steps {
                let id = step.ticket.to_string();
                let customer = CustomerKey(u64::from(step.ticket % 3));
                let got = match step.kind {
                    0 => open.opened(&id, customer, step.at, step.priority),
                    1 => {
                        open.reopened(&id, customer, step.at, step.priority);
                        None
                    }
                    2 => open.replied(&id, step.at, step.author, step.public, step.priority, step.series),
                    _ => {
                        open.resolved(&id, step.at);
                        None
                    }
                };
                abandoned += open.take_abandoned();
                for change in open.take_changes() {
                    let count = held.entry(change.customer).or_insert(0i64);
                    *count += if change.opened { 1 } else { -1 };
                }
                // The changes add up, per customer, to the tickets held for it.
                let mut by_customer: HashMap<CustomerKey, i64> = HashMap::new();
                for ticket in open.tickets.values() {
                    *by_customer.entry(ticket.customer).or_default() += 1;
                }
                held.retain(|_, count| *count != 0);
                prop_assert_eq!(&held, &by_customer);
                let expected = model.apply(step);
                prop_assert_eq!(got.map(|f| (f.replied_at_ms, f.duration_ms, f.series, f.priority)), expected, "{:?}", step);
                for ticket in 0..6u8 {
                    let id = ticket.to_string();
                    let got = open.get(&id).copied();
                    let expected = model.tickets.get(&id).map(|t| OpenTicket {
                        opened_at_ms: t.opened_at,
                        priority: t.priority,
                        first_reply: t.first,
                        public_agent_replies: t.replies,
                        reopened: t.reopened,
                        customer: CustomerKey(u64::from(ticket % 3)),
                    });
                    prop_assert_eq!(got, expected, "ticket {}", ticket);
                }
            }
            // Every dropped ticket is counted, or still held until swept or looked up.
            let held_expired = open.len() - model.tickets.len();
            prop_assert_eq!(abandoned + held_expired as u64, model.abandoned);
        }
    }
}
