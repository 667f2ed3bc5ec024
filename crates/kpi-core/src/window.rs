//! Rolling windows as rings of time buckets.
//!
//! A window of span W and bucket width B holds N = W / B buckets ending with the bucket that
//! contains `now`, so its value covers between W - B and W of history. Each bucket keeps
//! mergeable components (a [`Tally`]), never a ratio: folding buckets, partitions or
//! instances is then plain addition, and exact.
//!
//! Events slightly in the future (within the accepted clock skew) land in their own bucket
//! ahead of `now` and count at once; the ring has spare slots for them, and refuses any
//! event further ahead: its slot would still hold a bucket inside the window, and reusing it
//! would erase other events' counts.
//!
//! Pure: `now` is always an argument.

use std::time::Duration;

/// Mergeable per-bucket state.
pub trait Tally: Default + Clone {
    /// Whether a merge costs enough (a quantile sketch's) that a rolling window keeps the
    /// merged totals of whole blocks of buckets ([`Window::refresh_blocks`]), so that a fold
    /// merges a few totals rather than every bucket.
    const FOLDED_IN_BLOCKS: bool = false;

    /// Adds `other` into `self`. Must be associative and commutative.
    fn merge(&mut self, other: &Self);
}

/// Buckets per block of [`Tally::FOLDED_IN_BLOCKS`] windows: about the square root of a
/// window's buckets (60 by default), so that a fold merges at most a block's worth of
/// loose buckets at each end and a total per block between.
const BLOCK: i64 = 8;

/// The shape of one configured window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// The label value, as configured (`1h`, `24h`, `7d`, `30d`).
    pub name: String,
    pub span_ms: i64,
    pub bucket_ms: i64,
}

impl WindowSpec {
    /// `bucket` must divide `span` (checked when the configuration is loaded).
    pub fn new(name: impl Into<String>, span: Duration, bucket: Duration) -> Self {
        WindowSpec {
            name: name.into(),
            span_ms: span.as_millis() as i64,
            bucket_ms: bucket.as_millis() as i64,
        }
    }

    pub fn buckets(&self) -> i64 {
        self.span_ms / self.bucket_ms
    }

    /// Buckets a ring keeps ahead of the one holding `now` for events up to `lead_ms` ahead.
    fn lead_buckets(&self, lead_ms: i64) -> i64 {
        (lead_ms.max(0) + self.bucket_ms - 1) / self.bucket_ms
    }

    /// Slots of a ring of this window whose events may be up to `lead_ms` ahead of `now`:
    /// the window's buckets, one per bucket of lead, and the bucket being recycled.
    pub fn ring_slots(&self, lead_ms: i64) -> i64 {
        self.buckets() + self.lead_buckets(lead_ms) + 1
    }

    fn bucket_index(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.bucket_ms)
    }

    /// Index of the oldest bucket still inside the window at `now_ms`.
    fn oldest_index(&self, now_ms: i64) -> i64 {
        self.bucket_index(now_ms) - self.buckets() + 1
    }

    /// Start of the oldest bucket inside the window at `now_ms` (inclusive).
    pub fn start_ms(&self, now_ms: i64) -> i64 {
        self.oldest_index(now_ms) * self.bucket_ms
    }

    /// Whether an event at `at_ms` still falls inside this window at `now_ms`.
    pub fn contains(&self, at_ms: i64, now_ms: i64) -> bool {
        at_ms >= self.start_ms(now_ms)
    }

    /// The shape of this window's rings whose events may be up to `lead_ms` ahead (those
    /// [`Window::new`] makes with `lead_ms`).
    pub fn ring(&self, lead_ms: i64) -> Ring {
        Ring {
            bucket_ms: self.bucket_ms,
            buckets: self.buckets(),
            lead_buckets: self.lead_buckets(lead_ms),
            slots: self.ring_slots(lead_ms),
        }
    }
}

/// The shape of the rings of one window and lead: what placing an event needs, worked out
/// once rather than for every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    bucket_ms: i64,
    buckets: i64,
    lead_buckets: i64,
    slots: i64,
}

impl Ring {
    /// Where an event at `at_ms` lands at `now_ms` in every ring of this shape; `None` when
    /// its bucket has left the window or lies further ahead than the lead. The same for
    /// every series, so an event's placement is computed once.
    pub fn place(&self, at_ms: i64, now_ms: i64) -> Option<Placement> {
        let index = at_ms.div_euclid(self.bucket_ms);
        let now_index = now_ms.div_euclid(self.bucket_ms);
        if index <= now_index - self.buckets || index > now_index + self.lead_buckets {
            return None;
        }
        Some(Placement {
            index,
            slot: index.rem_euclid(self.slots) as usize,
        })
    }
}

/// The shape of a ring of calendar buckets (local days, weeks, months...), numbered by the
/// calendar rather than by a fixed width, since a local day lasts 23 to 25 hours and a
/// month 28 to 31 days: it keeps `kept` buckets up to and including the one holding `now`,
/// and `lead` buckets ahead of it for events within the accepted clock skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRing {
    kept: i64,
    lead: i64,
}

impl IndexRing {
    pub const fn new(kept: i64, lead: i64) -> Self {
        IndexRing {
            kept: if kept < 1 { 1 } else { kept },
            lead: if lead < 0 { 0 } else { lead },
        }
    }

    /// Every index the ring may hold at one time has its own slot.
    pub const fn slots(&self) -> i64 {
        self.kept + self.lead
    }

    /// Where the bucket numbered `index` lands when the bucket holding `now` is `now_index`;
    /// `None` when it is older than the ring keeps or further ahead than its lead, where it
    /// would take the slot of a bucket still kept.
    pub fn place(&self, index: i64, now_index: i64) -> Option<Placement> {
        if index <= now_index.saturating_sub(self.kept)
            || index > now_index.saturating_add(self.lead)
        {
            return None;
        }
        Some(Placement {
            index,
            slot: index.rem_euclid(self.slots()) as usize,
        })
    }
}

/// The bucket an event lands in, and the ring slot that holds it ([`Ring::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    index: i64,
    slot: usize,
}

impl Placement {
    /// The bucket's number.
    pub fn index(&self) -> i64 {
        self.index
    }

    /// The ring slot that holds it.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// One bucket slot of the ring: the bucket index it currently holds, and its tally.
#[derive(Debug, Clone)]
struct Slot<T> {
    index: i64,
    tally: T,
}

/// The merged tally of the buckets numbered `block * BLOCK ..= block * BLOCK + BLOCK - 1`,
/// valid while no bucket of the block has been written or recycled since.
#[derive(Debug, Clone)]
struct BlockTotal<T> {
    block: i64,
    valid: bool,
    total: T,
}

/// A ring of buckets for one window and one series.
#[derive(Debug, Clone)]
pub struct Window<T> {
    slots: Box<[Slot<T>]>,
    /// Buckets kept ahead of the one holding `now`.
    lead: i64,
    /// For a rolling window of a [`Tally::FOLDED_IN_BLOCKS`] tally, the totals of whole
    /// blocks, by block number modulo their count; empty otherwise.
    blocks: Box<[BlockTotal<T>]>,
}

/// Marks the block holding bucket `index` as changed.
fn invalidate<T>(blocks: &mut [BlockTotal<T>], index: i64) {
    if blocks.is_empty() {
        return;
    }
    let block = index.div_euclid(BLOCK);
    let entry = &mut blocks[block.rem_euclid(blocks.len() as i64) as usize];
    if entry.block == block {
        entry.valid = false;
    }
}

impl<T: Tally> Window<T> {
    /// `lead_ms` is how far ahead of `now` an event may be (the accepted clock skew).
    pub fn new(spec: &WindowSpec, lead_ms: i64) -> Self {
        let len = spec.ring_slots(lead_ms) as usize;
        // Every block a fold can cover has its own entry: the ring's slots span at most
        // one block more than their number.
        let blocks = if T::FOLDED_IN_BLOCKS {
            len.div_ceil(BLOCK as usize) + 1
        } else {
            0
        };
        Window {
            lead: spec.lead_buckets(lead_ms),
            slots: vec![
                Slot {
                    index: i64::MIN,
                    tally: T::default(),
                };
                len
            ]
            .into_boxed_slice(),
            blocks: vec![
                BlockTotal {
                    block: i64::MIN,
                    valid: false,
                    total: T::default(),
                };
                blocks
            ]
            .into_boxed_slice(),
        }
    }

    /// A ring of calendar buckets of the shape `ring`.
    pub fn calendar(ring: &IndexRing) -> Self {
        Window {
            lead: ring.lead,
            slots: vec![
                Slot {
                    index: i64::MIN,
                    tally: T::default(),
                };
                ring.slots() as usize
            ]
            .into_boxed_slice(),
            blocks: Box::default(),
        }
    }

    /// The tally of the bucket holding `at_ms`, or `None` when that bucket has left the
    /// window at `now_ms` or lies further ahead of it than the lead: the ring holds the
    /// window's buckets and the lead's, and a bucket beyond would take the slot of one still
    /// inside the window.
    pub fn bucket_mut(&mut self, spec: &WindowSpec, at_ms: i64, now_ms: i64) -> Option<&mut T> {
        let ring = Ring {
            bucket_ms: spec.bucket_ms,
            buckets: spec.buckets(),
            lead_buckets: self.lead,
            slots: self.slots.len() as i64,
        };
        self.bucket_at(ring.place(at_ms, now_ms)?)
    }

    /// The tally of the bucket at `placement`, made by the [`Ring`] of this ring's window
    /// and lead (`None` only for a placement made for another ring size).
    pub fn bucket_at(&mut self, placement: Placement) -> Option<&mut T> {
        let slot = self.slots.get_mut(placement.slot)?;
        if slot.index != placement.index {
            // The slot still holds a bucket that has left the window: recycle it.
            invalidate(&mut self.blocks, slot.index);
            slot.index = placement.index;
            slot.tally = T::default();
        }
        invalidate(&mut self.blocks, placement.index);
        Some(&mut slot.tally)
    }

    /// The slot holding bucket `index`, if the ring holds it.
    fn slot_of(&self, index: i64) -> Option<&Slot<T>> {
        let slot = &self.slots[index.rem_euclid(self.slots.len() as i64) as usize];
        (slot.index == index).then_some(slot)
    }

    /// The total of `block` if it is valid and every bucket of it is inside the window
    /// whose oldest bucket is `oldest`.
    fn block_total(&self, block: i64, oldest: i64) -> Option<&T> {
        let entry = &self.blocks[block.rem_euclid(self.blocks.len() as i64) as usize];
        (entry.valid && entry.block == block && block.saturating_mul(BLOCK) >= oldest)
            .then_some(&entry.total)
    }

    /// Merges again the totals of the whole blocks inside the window at `now_ms` that
    /// changed, up to the block before the newest bucket's, which events still fill. Folds
    /// are exact without it, only slower: a block without a valid total is folded bucket
    /// by bucket.
    pub fn refresh_blocks(&mut self, spec: &WindowSpec, now_ms: i64) {
        if self.blocks.is_empty() {
            return;
        }
        let Some(newest) = self.slots.iter().map(|s| s.index).max() else {
            return;
        };
        let oldest = spec.oldest_index(now_ms);
        let last = newest.div_euclid(BLOCK) - 1;
        // Blocks below the ring's reach hold no bucket: bounded whatever the clock says.
        let reach = last - self.blocks.len() as i64 + 1;
        let first =
            (oldest.div_euclid(BLOCK) + i64::from(oldest.rem_euclid(BLOCK) != 0)).max(reach);
        for block in first..=last {
            let position = block.rem_euclid(self.blocks.len() as i64) as usize;
            let entry = &self.blocks[position];
            if entry.valid && entry.block == block {
                continue;
            }
            let mut total = T::default();
            for index in block.saturating_mul(BLOCK)..block.saturating_add(1).saturating_mul(BLOCK)
            {
                if let Some(slot) = self.slot_of(index) {
                    total.merge(&slot.tally);
                }
            }
            self.blocks[position] = BlockTotal {
                block,
                valid: true,
                total,
            };
        }
    }

    /// Merges the buckets numbered `first` to `last` (inclusive) into `into`: the buckets of
    /// one calendar period.
    pub fn fold_indices(&self, first: i64, last: i64, into: &mut T) {
        for slot in self
            .slots
            .iter()
            .filter(|s| (first..=last).contains(&s.index))
        {
            into.merge(&slot.tally);
        }
    }

    /// Merges every bucket inside the window at `now_ms` into `into`.
    pub fn fold_into(&self, spec: &WindowSpec, now_ms: i64, into: &mut T) {
        let oldest = spec.oldest_index(now_ms);
        if self.blocks.is_empty() {
            for slot in self.slots.iter().filter(|s| s.index >= oldest) {
                into.merge(&slot.tally);
            }
            return;
        }
        // A bucket of a whole block with a valid total counts through the total.
        for entry in self.blocks.iter() {
            if let Some(total) = self.block_total(entry.block, oldest) {
                into.merge(total);
            }
        }
        for slot in self.slots.iter().filter(|s| s.index >= oldest) {
            if self
                .block_total(slot.index.div_euclid(BLOCK), oldest)
                .is_none()
            {
                into.merge(&slot.tally);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Count(u64);

    impl Tally for Count {
        fn merge(&mut self, other: &Self) {
            self.0 += other.0;
        }
    }

    const MINUTE: i64 = 60_000;

    fn hour() -> WindowSpec {
        WindowSpec::new("1h", Duration::from_secs(3600), Duration::from_secs(60))
    }

    fn add(w: &mut Window<Count>, spec: &WindowSpec, at: i64, now: i64) -> bool {
        w.bucket_mut(spec, at, now).map(|c| c.0 += 1).is_some()
    }

    fn total(w: &Window<Count>, spec: &WindowSpec, now: i64) -> u64 {
        let mut c = Count::default();
        w.fold_into(spec, now, &mut c);
        c.0
    }

    #[test]
    fn buckets_roll_over_as_the_clock_advances() {
        let spec = hour();
        let mut w = Window::<Count>::new(&spec, 5 * MINUTE);
        let t0 = 1_000 * 60 * MINUTE; // aligned to an hour
        assert!(add(&mut w, &spec, t0, t0));
        assert!(add(&mut w, &spec, t0 + 30 * MINUTE, t0 + 30 * MINUTE));
        assert_eq!(total(&w, &spec, t0 + 30 * MINUTE), 2);
        // The first bucket [t0, t0+1m) stays until now reaches t0+60m.
        assert_eq!(total(&w, &spec, t0 + 59 * MINUTE + 59_999), 2);
        assert_eq!(total(&w, &spec, t0 + 60 * MINUTE), 1);
        assert_eq!(total(&w, &spec, t0 + 90 * MINUTE), 0);
    }

    #[test]
    fn an_event_older_than_the_window_is_refused() {
        let spec = hour();
        let mut w = Window::<Count>::new(&spec, 0);
        let now = 500 * 60 * MINUTE;
        assert!(!add(&mut w, &spec, now - 60 * MINUTE, now));
        assert!(add(&mut w, &spec, now - 59 * MINUTE, now));
        assert!(!spec.contains(now - 60 * MINUTE, now));
        assert!(spec.contains(now - 59 * MINUTE, now));
    }

    #[test]
    fn a_recycled_slot_forgets_its_old_bucket() {
        let spec = hour();
        let mut w = Window::<Count>::new(&spec, 0);
        let t0 = 700 * 60 * MINUTE;
        add(&mut w, &spec, t0, t0);
        let later = t0 + w.slots.len() as i64 * MINUTE; // same slot, new bucket
        assert!(add(&mut w, &spec, later, later));
        assert_eq!(total(&w, &spec, later), 1);
    }

    #[test]
    fn future_events_within_the_lead_count_immediately() {
        let spec = hour();
        let mut w = Window::<Count>::new(&spec, 5 * MINUTE);
        let now = 900 * 60 * MINUTE;
        // Fill the whole window, then add events up to 5 minutes ahead.
        for m in 0..60 {
            add(&mut w, &spec, now - m * MINUTE, now);
        }
        for m in 1..=5 {
            assert!(add(&mut w, &spec, now + m * MINUTE, now));
        }
        assert_eq!(total(&w, &spec, now), 65);
    }

    #[test]
    fn an_event_beyond_the_lead_is_refused_and_erases_nothing() {
        let spec = hour();
        let mut w = Window::<Count>::new(&spec, 5 * MINUTE);
        let now = 900 * 60 * MINUTE;
        for m in 0..60 {
            add(&mut w, &spec, now - m * MINUTE, now);
        }
        // Every bucket from just past the lead to a whole ring ahead maps onto a slot that
        // holds a bucket inside the window.
        let ring = w.slots.len() as i64;
        for ahead in 6..=ring + 6 {
            assert!(
                !add(&mut w, &spec, now + ahead * MINUTE, now),
                "{ahead} min"
            );
        }
        assert_eq!(total(&w, &spec, now), 60);
        assert!(add(&mut w, &spec, now + 5 * MINUTE + 59_999, now));
        assert_eq!(total(&w, &spec, now), 61);
    }

    #[test]
    fn a_calendar_ring_keeps_its_buckets_and_refuses_those_that_would_erase_one() {
        // Two days kept (yesterday and today), one ahead.
        let ring = IndexRing::new(2, 1);
        let mut w = Window::<Count>::calendar(&ring);
        let today = 20_000;
        let mut add = |day: i64, now: i64| -> bool {
            ring.place(day, now)
                .and_then(|p| w.bucket_at(p))
                .map(|c| c.0 += 1)
                .is_some()
        };
        assert!(add(today - 1, today));
        assert!(add(today, today));
        assert!(add(today + 1, today));
        // The day before yesterday and the day after tomorrow share slots with kept days.
        assert!(!add(today - 2, today));
        assert!(!add(today + 2, today));
        assert!(!add(i64::MIN, today));
        assert!(!add(i64::MAX, today));
        let fold = |w: &Window<Count>, first, last| {
            let mut c = Count::default();
            w.fold_indices(first, last, &mut c);
            c.0
        };
        assert_eq!(fold(&w, today - 1, today - 1), 1);
        assert_eq!(fold(&w, today - 1, today + 1), 3);
        // A day later, tomorrow's bucket is today's, and its slot is reused for the new
        // tomorrow only once that day comes.
        let mut add_later = |day: i64| -> bool {
            ring.place(day, today + 1)
                .and_then(|p| w.bucket_at(p))
                .map(|c| c.0 += 1)
                .is_some()
        };
        assert!(add_later(today + 2));
        assert!(!add_later(today - 1));
        assert_eq!(fold(&w, today, today + 2), 3);
        assert_eq!(fold(&w, today - 1, today - 1), 0);
    }

    #[test]
    fn start_is_aligned_to_the_oldest_bucket() {
        let spec = hour();
        let now = 42 * 60 * MINUTE + 90_000; // 1.5 minutes past a whole hour
        // The bucket holding `now` starts 30 s before it.
        assert_eq!(spec.start_ms(now), now - 30_000 - 59 * MINUTE);
    }

    /// Each event's id, kept sorted: a fold that counts a bucket twice or misses one
    /// differs from the direct fold.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Ids(Vec<u32>);

    impl Tally for Ids {
        const FOLDED_IN_BLOCKS: bool = true;

        fn merge(&mut self, other: &Self) {
            self.0.extend_from_slice(&other.0);
            self.0.sort_unstable();
        }
    }

    /// Every bucket inside the window at `now`, one by one.
    fn direct(w: &Window<Ids>, spec: &WindowSpec, now: i64) -> Ids {
        let mut ids = Ids::default();
        for slot in w.slots.iter().filter(|s| s.index >= spec.oldest_index(now)) {
            ids.merge(&slot.tally);
        }
        ids
    }

    proptest::proptest! {
        /// Whatever the order of writes, refreshes and folds, and whichever way the clock
        /// moves, a fold through the block totals equals the bucket-by-bucket fold.
        #[test]
        fn block_totals_fold_as_the_buckets_do(
            steps in proptest::collection::vec(
                (0u8..4, -90i64..90, 0i64..400),
                1..200,
            ),
        ) {
            let spec = hour();
            let mut w = Window::<Ids>::new(&spec, 5 * MINUTE);
            let mut now = 1_000 * MINUTE;
            for (id, (op, offset, shift)) in steps.into_iter().enumerate() {
                match op {
                    0 => {
                        if let Some(ids) = w.bucket_mut(&spec, now + offset * MINUTE, now) {
                            ids.0.push(id as u32);
                        }
                    }
                    1 => w.refresh_blocks(&spec, now),
                    // The clock moves on, and at times back.
                    2 => now += (shift - 200) * MINUTE / 2,
                    _ => {}
                }
                let mut folded = Ids::default();
                w.fold_into(&spec, now, &mut folded);
                proptest::prop_assert_eq!(&folded, &direct(&w, &spec, now));
            }
        }
    }

    #[test]
    fn refreshed_blocks_cover_the_whole_blocks_before_the_newest() {
        let spec = hour();
        let mut w = Window::<Ids>::new(&spec, 0);
        let now = 1_000 * MINUTE;
        for minute in 0..60 {
            w.bucket_mut(&spec, now - minute * MINUTE, now)
                .unwrap()
                .0
                .push(minute as u32);
        }
        w.refresh_blocks(&spec, now);
        let valid = w.blocks.iter().filter(|b| b.valid).count();
        // Minutes 941 to 1000: whole blocks 118 (944-951) to 124 (992-999); 125 holds now.
        assert_eq!(valid, 7);
        let mut folded = Ids::default();
        w.fold_into(&spec, now, &mut folded);
        assert_eq!(folded, direct(&w, &spec, now));
        // A late write makes its block's total invalid until the next refresh.
        w.bucket_mut(&spec, now - 50 * MINUTE, now)
            .unwrap()
            .0
            .push(99);
        assert_eq!(w.blocks.iter().filter(|b| b.valid).count(), 6);
        let mut folded = Ids::default();
        w.fold_into(&spec, now, &mut folded);
        assert_eq!(folded, direct(&w, &spec, now));
    }
}
