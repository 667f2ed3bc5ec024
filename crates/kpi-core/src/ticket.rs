//! Support-ticket KPIs: ticket counts, first-contact resolution, resolution time, first
//! reply time, SLA breaches, one-touch and reopen rates.
//!
//! The formulas live here and nowhere else.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::DDSketch;

use crate::sla::SlaCounts;
use crate::window::Tally;

/// Upper bounds (seconds) of the resolution-time and first-reply-time buckets exported for
/// `histogram_quantile`: 5 minutes to 14 days; a last bucket holds everything above.
pub const DURATION_BOUNDS_SECONDS: [u64; 12] = [
    300, 900, 1_800, 3_600, 7_200, 14_400, 28_800, 43_200, 86_400, 172_800, 604_800, 1_209_600,
];

/// Durations of a bucket (resolution times, first reply times): exact count, sum and fixed
/// buckets, plus a DDSketch (1% relative error) for quantiles. Every part merges exactly.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Durations {
    pub count: u64,
    /// u128: a duration lasts at most about 2^48 ms (the contract's timestamps span years
    /// 0 to 9999), so no number of resolutions a process can read overflows it.
    pub sum_ms: u128,
    /// Non-cumulative counts per bound of [`DURATION_BOUNDS_SECONDS`], then above them.
    buckets: [u64; DURATION_BOUNDS_SECONDS.len() + 1],
    #[serde(with = "sketch_bytes")]
    sketch: DDSketch,
}

/// A sketch as the base64 of its binary encoding (DataDog's, shared with the Java
/// library): exact, compact (only non-empty bins), and free of the infinite minimum and
/// maximum of an empty sketch, which JSON cannot hold.
mod sketch_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de};
    use sketches_ddsketch::DDSketch;

    pub fn serialize<S: Serializer>(sketch: &DDSketch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(sketch.to_java_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DDSketch, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(de::Error::custom)?;
        DDSketch::from_java_bytes(&bytes).map_err(|e| de::Error::custom(format!("{e:?}")))
    }
}

impl std::fmt::Debug for Durations {
    // The sketch has no Debug of its own; its bins say nothing a reader needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durations")
            .field("count", &self.count)
            .field("sum_ms", &self.sum_ms)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl Durations {
    pub fn record(&mut self, duration_ms: u64) {
        self.count += 1;
        self.sum_ms += u128::from(duration_ms);
        let index = DURATION_BOUNDS_SECONDS.partition_point(|&b| b * 1000 < duration_ms);
        self.buckets[index] += 1;
        self.sketch.add(duration_ms as f64 / 1000.0);
    }

    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.sum_ms += other.sum_ms;
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        // Both sketches use the default configuration, so merging cannot fail.
        let _ = self.sketch.merge(&other.sketch);
    }

    /// Mean duration in seconds; `None` without any.
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms as f64 / 1000.0 / self.count as f64)
    }

    /// The `q` quantile in seconds, within 1% relative error; `None` without any duration.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).ok().flatten()
    }

    /// Cumulative counts at each bound of [`DURATION_BOUNDS_SECONDS`], then the total.
    pub fn cumulative(&self) -> [u64; DURATION_BOUNDS_SECONDS.len() + 1] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// Counts of ticket lifecycle events in a bucket, resolution times and first reply times.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TicketTally {
    pub opened: u64,
    pub reopened: u64,
    /// Each `ticket.resolved` is one resolution.
    pub resolved: u64,
    /// Resolutions with at most one agent reply and no reopen.
    pub first_contact: u64,
    pub resolution: Durations,
    /// From each ticket's opening to its first public agent reply, counted at the reply.
    /// Absent from the components of an earlier version: none.
    #[serde(default)]
    pub first_reply: Durations,
    /// Service levels and resolutions as the open tickets saw them; absent from the
    /// components of an earlier version: none.
    #[serde(default)]
    pub service: ServiceTally,
}

/// First replies and resolutions judged against their SLA targets, and the resolutions of
/// tickets whose opening or reopening the open tickets hold, for one-touch and reopen rates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceTally {
    /// Each first reply against its ticket's first-reply target, counted at the reply.
    pub first_reply_sla: SlaCounts,
    /// Each resolution against its ticket's resolution target.
    pub resolution_sla: SlaCounts,
    /// Resolutions of tickets held in the open tickets: the base of the one-touch and
    /// reopen rates.
    pub tracked_resolved: u64,
    /// Of those, resolved with exactly one public agent reply and never reopened.
    pub one_touch: u64,
    /// Of those, of tickets reopened at least once.
    pub reopened_resolved: u64,
}

impl ServiceTally {
    fn merge(&mut self, other: &Self) {
        self.first_reply_sla.merge(&other.first_reply_sla);
        self.resolution_sla.merge(&other.resolution_sla);
        self.tracked_resolved += other.tracked_resolved;
        self.one_touch += other.one_touch;
        self.reopened_resolved += other.reopened_resolved;
    }

    /// Records the resolution of a ticket held in the open tickets, with the public agent
    /// replies seen since it was opened and whether it was reopened.
    pub fn record_tracked_resolution(&mut self, public_agent_replies: u32, reopened: bool) {
        self.tracked_resolved += 1;
        if is_one_touch(public_agent_replies, reopened) {
            self.one_touch += 1;
        }
        if reopened {
            self.reopened_resolved += 1;
        }
    }

    /// One-touch rate = one-touch resolutions / tracked resolutions, in 0..=1; `None`
    /// without any.
    pub fn one_touch_ratio(&self) -> Option<f64> {
        (self.tracked_resolved > 0).then(|| self.one_touch as f64 / self.tracked_resolved as f64)
    }

    /// Reopen rate = resolutions of reopened tickets / tracked resolutions, in 0..=1; `None`
    /// without any.
    pub fn reopen_ratio(&self) -> Option<f64> {
        (self.tracked_resolved > 0)
            .then(|| self.reopened_resolved as f64 / self.tracked_resolved as f64)
    }
}

/// A resolution is one-touch with exactly one public agent reply and no reopen (Zendesk's
/// one-touch tickets); unlike first-contact resolution, a resolution without a reply is not.
pub fn is_one_touch(public_agent_replies: u32, reopened: bool) -> bool {
    public_agent_replies == 1 && !reopened
}

impl Tally for TicketTally {
    // Two quantile sketches per bucket: their merges were most of a snapshot's time.
    const FOLDED_IN_BLOCKS: bool = true;

    fn merge(&mut self, other: &Self) {
        self.opened += other.opened;
        self.reopened += other.reopened;
        self.resolved += other.resolved;
        self.first_contact += other.first_contact;
        self.resolution.merge(&other.resolution);
        self.first_reply.merge(&other.first_reply);
        self.service.merge(&other.service);
    }
}

impl TicketTally {
    /// Records one `ticket.resolved`; `duration_ms` = occurred_at - opened_at (validated >= 0).
    pub fn record_resolution(&mut self, agent_replies: u32, reopens: u32, duration_ms: u64) {
        self.resolved += 1;
        if is_first_contact(agent_replies, reopens) {
            self.first_contact += 1;
        }
        self.resolution.record(duration_ms);
    }

    /// First-contact resolution = first-contact resolutions / resolutions, in 0..=1;
    /// `None` without resolutions.
    pub fn fcr_ratio(&self) -> Option<f64> {
        (self.resolved > 0).then(|| self.first_contact as f64 / self.resolved as f64)
    }
}

/// A resolution counts as first-contact with at most one agent reply and no reopen (the
/// one-touch rule of Zendesk Explore, which also counts zero-reply resolutions).
pub fn is_first_contact(agent_replies: u32, reopens: u32) -> bool {
    agent_replies <= 1 && reopens == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_time_sums_of_extreme_durations_do_not_wrap() {
        // A ticket opened in year 0 and resolved in 2026: about 6.4e13 ms.
        let longest: u64 = 63_939_513_600_000;
        let mut times = Durations::default();
        for _ in 0..290_000 {
            times.record(longest);
        }
        assert_eq!(times.sum_ms, 290_000 * u128::from(longest));
        assert!(times.sum_ms > u128::from(u64::MAX));
        let mean = times.mean_seconds().unwrap();
        assert_eq!(mean, longest as f64 / 1000.0);
    }

    #[test]
    fn first_contact_edges() {
        assert!(is_first_contact(0, 0));
        assert!(is_first_contact(1, 0));
        assert!(!is_first_contact(2, 0));
        assert!(!is_first_contact(1, 1));
        assert!(!is_first_contact(0, 1));
    }

    #[test]
    fn one_touch_and_reopen_edges() {
        assert!(is_one_touch(1, false));
        assert!(!is_one_touch(0, false));
        assert!(!is_one_touch(2, false));
        assert!(!is_one_touch(1, true));
        let mut s = ServiceTally::default();
        assert_eq!((s.one_touch_ratio(), s.reopen_ratio()), (None, None));
        s.record_tracked_resolution(1, false);
        s.record_tracked_resolution(0, false);
        s.record_tracked_resolution(1, true);
        s.record_tracked_resolution(u32::MAX, true);
        assert_eq!(s.one_touch_ratio(), Some(0.25));
        assert_eq!(s.reopen_ratio(), Some(0.5));
        let mut m = s;
        m.merge(&s);
        assert_eq!(
            (m.tracked_resolved, m.one_touch, m.reopened_resolved),
            (8, 2, 4)
        );
    }

    #[test]
    fn components_of_an_earlier_version_have_no_service_counts() {
        let mut t = TicketTally::default();
        t.record_resolution(1, 0, 1000);
        let mut json = serde_json::to_value(&t).unwrap();
        let object = json.as_object_mut().unwrap();
        for key in ["first_reply", "service"] {
            assert!(object.remove(key).is_some(), "{key}");
        }
        let back: TicketTally = serde_json::from_value(json).unwrap();
        assert_eq!(back.service, ServiceTally::default());
        assert_eq!(back.resolved, 1);
    }

    #[test]
    fn fcr_ratio_edges() {
        let mut t = TicketTally::default();
        assert_eq!(t.fcr_ratio(), None);
        t.record_resolution(1, 0, 1000);
        assert_eq!(t.fcr_ratio(), Some(1.0));
        t.record_resolution(3, 0, 1000);
        assert_eq!(t.fcr_ratio(), Some(0.5));
        t.record_resolution(0, 2, 1000);
        t.record_resolution(5, 1, 1000);
        assert_eq!(t.fcr_ratio(), Some(0.25));
        assert_eq!((t.resolved, t.first_contact), (4, 1));
    }

    #[test]
    fn merge_adds_every_count() {
        let mut a = TicketTally {
            opened: 1,
            reopened: 2,
            ..TicketTally::default()
        };
        a.record_resolution(1, 0, 600_000);
        a.merge(&a.clone());
        assert_eq!(
            (a.opened, a.reopened, a.resolved, a.first_contact),
            (2, 4, 2, 2)
        );
        assert_eq!((a.resolution.count, a.resolution.sum_ms), (2, 1_200_000));
    }

    #[test]
    fn resolution_buckets_are_cumulative_and_inclusive() {
        let mut r = Durations::default();
        for ms in [0, 300_000, 300_001, 86_400_000, 2_000_000_000] {
            r.record(ms);
        }
        let c = r.cumulative();
        assert_eq!(c[0], 2); // le 300 s holds 0 and exactly 300 s
        assert_eq!(c[1], 3); // le 900 s
        assert_eq!(c[8], 4); // le 1 day
        assert_eq!(c[11], 4); // le 14 days
        assert_eq!(c[12], 5); // +Inf
        assert_eq!(
            r.mean_seconds(),
            Some((300_000 + 300_001 + 86_400_000 + 2_000_000_000) as f64 / 1000.0 / 5.0)
        );
        assert_eq!(Durations::default().mean_seconds(), None);
        assert_eq!(Durations::default().quantile_seconds(0.5), None);
    }

    #[test]
    fn quantiles_are_within_one_percent_and_survive_merging() {
        // 1..=1000 minutes, split over two tallies.
        let mut a = Durations::default();
        let mut b = Durations::default();
        for m in 1..=1000u64 {
            if m % 2 == 0 {
                a.record(m * 60_000)
            } else {
                b.record(m * 60_000)
            }
        }
        a.merge(&b);
        for (q, exact) in [
            (0.5, 500.0 * 60.0),
            (0.9, 900.0 * 60.0),
            (0.99, 990.0 * 60.0),
        ] {
            let got = a.quantile_seconds(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.011,
                "q{q}: {got} vs {exact}"
            );
        }
    }
}
