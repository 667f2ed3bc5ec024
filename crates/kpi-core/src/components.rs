//! The KPI components of input partitions: what instances exchange, and how KPI records are
//! computed from them.
//!
//! Every KPI is a function of tallies that merge by addition: score counts, ticket counts,
//! resolution-time sketches, MRR movements and current MRR per series. One input partition's
//! tallies, folded over each window, are its [`PartitionComponents`]. Adding the components of
//! every input partition into [`Totals`] and computing the records from the totals gives the
//! same values whether the partitions were read by one instance or by many: an instance
//! computes its own values from its partitions' components, and the global values from the
//! components of every partition, its own and those the other instances publish.
//!
//! Pure: the caller passes `now`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::backlog::Backlog;
use crate::billing::{self, AtEnd, BillingTally, Current, MicrosSum, WindowRevenue};
use crate::event::{CancelReason, Family};
use crate::kpi::{self, KpiRecord};
use crate::partition::PartitionId;
use crate::survey::SurveyTally;
use crate::ticket::{Durations, ServiceTally, TicketTally};
use crate::window::Tally;

/// The tallies of one input partition, each folded over every window at `as_of_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionComponents {
    /// The window names, in configuration order; every tally list below follows it.
    pub windows: Vec<String>,
    /// Every series the partition has seen, the overall one included once it has an event.
    pub series: Vec<SeriesComponents>,
    /// A tickets partition's open tickets at `as_of_ms`; absent from other partitions and
    /// from the components of an earlier version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
}

/// One series of one partition: `None` overall, or a dimension name and value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesComponents {
    pub dimension: Option<(String, String)>,
    pub tallies: FamilyTallies,
}

/// A partition holds the events of one family, so its series carry that family's tallies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyTallies {
    /// One tally per window.
    Surveys(Vec<SurveyTally>),
    Tickets(Vec<TicketTally>),
    Billing {
        windows: Vec<BillingTally>,
        /// The current MRR and customers of the series on this partition.
        current: Current,
    },
}

impl FamilyTallies {
    pub fn family(&self) -> Family {
        match self {
            FamilyTallies::Surveys(_) => Family::Surveys,
            FamilyTallies::Tickets(_) => Family::Tickets,
            FamilyTallies::Billing { .. } => Family::Billing,
        }
    }

    fn windows(&self) -> usize {
        match self {
            FamilyTallies::Surveys(w) => w.len(),
            FamilyTallies::Tickets(w) => w.len(),
            FamilyTallies::Billing { windows, .. } => windows.len(),
        }
    }
}

/// Why components cannot be added to [`Totals`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Written by an instance configured with other windows (during a rolling change of
    /// `windows.spans`, for instance): adding them would mix different windows.
    #[error("components for windows {theirs:?}, configured {ours:?}")]
    Windows {
        theirs: Vec<String>,
        ours: Vec<String>,
    },
}

/// The tallies of one series summed over partitions.
#[derive(Debug, Clone)]
struct SeriesTotals {
    surveys: Vec<SurveyTally>,
    tickets: Vec<TicketTally>,
    billing: Vec<BillingTally>,
    current: Current,
}

impl SeriesTotals {
    fn new(windows: usize) -> Self {
        SeriesTotals {
            surveys: vec![SurveyTally::default(); windows],
            tickets: vec![TicketTally::default(); windows],
            billing: vec![BillingTally::default(); windows],
            current: Current::default(),
        }
    }

    fn add(&mut self, tallies: &FamilyTallies) {
        fn add_all<T: Tally>(into: &mut [T], from: &[T]) {
            for (a, b) in into.iter_mut().zip(from) {
                a.merge(b);
            }
        }
        match tallies {
            FamilyTallies::Surveys(w) => add_all(&mut self.surveys, w),
            FamilyTallies::Tickets(w) => add_all(&mut self.tickets, w),
            FamilyTallies::Billing { windows, current } => {
                add_all(&mut self.billing, windows);
                self.current.merge(current);
            }
        }
    }
}

/// A window's name and time range at the instant records are computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowFrame {
    pub name: String,
    pub start_ms: i64,
    /// Now for a rolling or to-date window, the period's end for a closed one.
    pub end_ms: i64,
    /// For a closed period, the index of the window that runs from its end until now (the
    /// same period's to-date window): the revenue state at the period's end is the current
    /// one less that window's changes.
    pub followed_by: Option<usize>,
}

/// The components of a set of input partitions added up, per series.
#[derive(Debug, Clone)]
pub struct Totals {
    windows: Vec<String>,
    /// The overall series comes first (`None`), then the dimension series by name and value.
    series: BTreeMap<Option<(String, String)>, SeriesTotals>,
    /// The open tickets of every tickets partition added, overall only.
    backlog: Backlog,
}

impl Totals {
    /// Totals of no partition over the windows named `windows`: the overall series with
    /// empty tallies.
    pub fn new(windows: &[String]) -> Self {
        let mut series = BTreeMap::new();
        series.insert(None, SeriesTotals::new(windows.len()));
        Totals {
            windows: windows.to_vec(),
            series,
            backlog: Backlog::default(),
        }
    }

    pub fn add(&mut self, part: &PartitionComponents) -> Result<(), Mismatch> {
        let mismatch = part.windows != self.windows
            || part
                .series
                .iter()
                .any(|s| s.tallies.windows() != self.windows.len());
        if mismatch {
            return Err(Mismatch::Windows {
                theirs: part.windows.clone(),
                ours: self.windows.clone(),
            });
        }
        if let Some(backlog) = &part.backlog {
            self.backlog.merge(backlog);
        }
        let windows = self.windows.len();
        for s in &part.series {
            self.series
                .entry(s.dimension.clone())
                .or_insert_with(|| SeriesTotals::new(windows))
                .add(&s.tallies);
        }
        Ok(())
    }

    /// The value of every KPI, window and series. `windows` gives each window's range at
    /// `now_ms`, in the order of the names the totals were made with; `clv_window` is the
    /// index of the window whose customer churn ratio divides ARPA into CLV.
    pub fn records(
        &self,
        windows: &[WindowFrame],
        clv_window: Option<usize>,
        now_ms: i64,
    ) -> Vec<KpiRecord> {
        let mut records = Vec::new();
        for (dimension, totals) in &self.series {
            let mut clv_churn = None;
            for (index, window) in windows.iter().enumerate().take(self.windows.len()) {
                let frame = Frame {
                    window: &window.name,
                    dimension,
                    start_ms: window.start_ms,
                    end_ms: window.end_ms,
                };
                survey_records(&totals.surveys[index], &frame, &mut records);
                ticket_records(&totals.tickets[index], &frame, &mut records);
                let now = AtEnd::from(&totals.current);
                let at_end = match window.followed_by.and_then(|i| totals.billing.get(i)) {
                    Some(after) => WindowRevenue::ending_at(now, after).at_start(),
                    None => now,
                };
                let churn = billing_records(&totals.billing[index], at_end, &frame, &mut records);
                if Some(index) == clv_window {
                    clv_churn = churn;
                }
            }
            let frame = Frame {
                window: kpi::CURRENT,
                dimension,
                start_ms: now_ms,
                end_ms: now_ms,
            };
            current_records(&totals.current, clv_churn, &frame, &mut records);
            if dimension.is_none() {
                backlog_records(&self.backlog, &frame, &mut records);
            }
        }
        records
    }
}

/// The newest components received for each input partition, and the partition count of
/// each input topic: what an instance knows of the partitions other instances read.
#[derive(Debug, Default)]
pub struct ReceivedComponents {
    parts: HashMap<PartitionId, Stamped>,
    partitions: [Option<i32>; 3],
}

/// Components and the time they were computed at.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub as_of_ms: i64,
    pub components: PartitionComponents,
}

/// Why global values cannot be computed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("the partition count of the {0} topic is not known yet")]
    UnknownPartitions(&'static str),
    /// Partitions whose components are missing or older than the accepted age.
    #[error("{} input partitions have no recent components", .0.len())]
    Missing(Vec<PartitionId>),
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

impl ReceivedComponents {
    /// Keeps the newer of `stamped` and what is held for `partition`. An older message
    /// can arrive last when a partition changed owner while its former owner's message
    /// was still in flight.
    pub fn offer(&mut self, partition: PartitionId, stamped: Stamped) {
        match self.parts.get(&partition) {
            Some(held) if held.as_of_ms > stamped.as_of_ms => {}
            _ => {
                self.parts.insert(partition, stamped);
            }
        }
    }

    pub fn set_partitions(&mut self, family: Family, count: i32) {
        self.partitions[family.index()] = Some(count);
    }

    /// Whether the partition count of every input topic has been read.
    pub fn partitions_known(&self) -> bool {
        self.partitions.iter().all(Option::is_some)
    }

    /// The totals of every input partition: `local` components where given, otherwise
    /// received ones computed at `fresh_since_ms` or later. Never a part of the partitions:
    /// if one is missing, nothing.
    pub fn totals(
        &self,
        windows: &[String],
        local: &HashMap<PartitionId, PartitionComponents>,
        fresh_since_ms: i64,
    ) -> Result<(Totals, Option<i64>), Incomplete> {
        let mut totals = Totals::new(windows);
        let mut missing = Vec::new();
        let mut oldest: Option<i64> = None;
        for family in Family::ALL {
            let count = self.partitions[family.index()]
                .ok_or(Incomplete::UnknownPartitions(family.name()))?;
            for p in 0..count {
                let id = PartitionId::new(family, p);
                if let Some(part) = local.get(&id) {
                    totals.add(part)?;
                    continue;
                }
                match self.parts.get(&id) {
                    Some(s) if s.as_of_ms >= fresh_since_ms => {
                        totals.add(&s.components)?;
                        oldest = Some(oldest.map_or(s.as_of_ms, |o| o.min(s.as_of_ms)));
                    }
                    _ => missing.push(id),
                }
            }
        }
        if missing.is_empty() {
            Ok((totals, oldest))
        } else {
            Err(Incomplete::Missing(missing))
        }
    }
}

/// Where a set of records belongs: window, series and time range.
struct Frame<'a> {
    window: &'a str,
    dimension: &'a Option<(String, String)>,
    start_ms: i64,
    end_ms: i64,
}

impl Frame<'_> {
    fn record(
        &self,
        def: &'static kpi::KpiDef,
        value: Option<f64>,
        samples: u64,
        components: Vec<Option<f64>>,
    ) -> KpiRecord {
        KpiRecord {
            def,
            window: self.window.to_owned(),
            dimension: self.dimension.clone(),
            value,
            samples,
            components,
            window_start_ms: self.start_ms,
            window_end_ms: self.end_ms,
        }
    }
}

/// Counts as defined components.
fn counts<const N: usize>(values: [u64; N]) -> Vec<Option<f64>> {
    values.iter().map(|&v| Some(v as f64)).collect()
}

fn ticket_records(tally: &TicketTally, frame: &Frame<'_>, out: &mut Vec<KpiRecord>) {
    for (def, count) in [
        (&kpi::TICKETS_OPENED, tally.opened),
        (&kpi::TICKETS_REOPENED, tally.reopened),
        (&kpi::TICKETS_RESOLVED, tally.resolved),
    ] {
        out.push(frame.record(def, Some(count as f64), count, Vec::new()));
    }
    out.push(frame.record(
        &kpi::FCR,
        tally.fcr_ratio(),
        tally.resolved,
        counts([tally.first_contact, tally.resolved]),
    ));
    out.push(duration_record(
        &kpi::RESOLUTION_TIME,
        &tally.resolution,
        frame,
    ));
    out.push(duration_record(
        &kpi::FIRST_REPLY_TIME,
        &tally.first_reply,
        frame,
    ));
    service_records(&tally.service, frame, out);
}

/// Pushes the SLA breach ratios and the one-touch and reopen rates.
fn service_records(service: &ServiceTally, frame: &Frame<'_>, out: &mut Vec<KpiRecord>) {
    for (def, sla) in [
        (&kpi::FIRST_REPLY_SLA_BREACH, &service.first_reply_sla),
        (&kpi::RESOLUTION_SLA_BREACH, &service.resolution_sla),
    ] {
        out.push(frame.record(
            def,
            sla.breach_ratio(),
            sla.judged(),
            counts([sla.achieved, sla.breached]),
        ));
    }
    let tracked = service.tracked_resolved;
    out.push(frame.record(
        &kpi::ONE_TOUCH,
        service.one_touch_ratio(),
        tracked,
        counts([service.one_touch, tracked]),
    ));
    out.push(frame.record(
        &kpi::REOPEN,
        service.reopen_ratio(),
        tracked,
        counts([service.reopened_resolved, tracked]),
    ));
}

/// The record of a duration KPI: the mean, with count, sum, percentiles and cumulative
/// bucket counts as components.
fn duration_record(def: &'static kpi::KpiDef, times: &Durations, frame: &Frame<'_>) -> KpiRecord {
    let mut components = vec![
        Some(times.count as f64),
        Some(times.sum_ms as f64 / 1000.0),
        times.quantile_seconds(0.5),
        times.quantile_seconds(0.9),
        times.quantile_seconds(0.99),
    ];
    components.extend(times.cumulative().iter().map(|&c| Some(c as f64)));
    frame.record(def, times.mean_seconds(), times.count, components)
}

/// Pushes the backlog's current records: open tickets by priority and age, at risk and
/// breached.
fn backlog_records(backlog: &Backlog, frame: &Frame<'_>, out: &mut Vec<KpiRecord>) {
    let mut components = counts(backlog.by_priority);
    components.extend(counts(backlog.by_age));
    out.push(frame.record(
        &kpi::BACKLOG,
        Some(backlog.open as f64),
        backlog.open,
        components,
    ));
    for (def, count) in [
        (&kpi::SLA_AT_RISK, backlog.at_risk),
        (&kpi::SLA_BREACHED_OPEN, backlog.breached),
    ] {
        out.push(frame.record(def, Some(count as f64), backlog.open, Vec::new()));
    }
}

/// Pushes the windowed revenue records; returns the window's customer churn ratio.
fn billing_records(
    tally: &BillingTally,
    at_end: AtEnd,
    frame: &Frame<'_>,
    out: &mut Vec<KpiRecord>,
) -> Option<f64> {
    let money = |m: MicrosSum| Some(billing::major(m));
    for (def, amount, samples) in [
        (&kpi::MRR_NEW, tally.new, tally.new_customers),
        (
            &kpi::MRR_REACTIVATION,
            tally.reactivation,
            tally.reactivated_customers,
        ),
        (&kpi::MRR_EXPANSION, tally.expansion, tally.expansions),
        (&kpi::MRR_CONTRACTION, tally.contraction, tally.contractions),
        (&kpi::MRR_CHURN, tally.churn, tally.churned_customers),
    ] {
        out.push(frame.record(def, money(amount), samples, Vec::new()));
    }
    let movements = tally.movements();
    out.push(frame.record(
        &kpi::NET_NEW_MRR,
        money(tally.net_new()),
        movements,
        Vec::new(),
    ));
    let w = WindowRevenue::ending_at(at_end, tally);
    let active_at_start = Some(w.active_at_start as f64);
    let churn = w.customer_churn_ratio(tally);
    out.push(frame.record(
        &kpi::CUSTOMER_CHURN,
        churn,
        tally.churned_customers,
        vec![Some(tally.churned_customers as f64), active_at_start],
    ));
    out.push(frame.record(
        &kpi::REVENUE_CHURN,
        w.revenue_churn_ratio(tally),
        tally.churned_customers + tally.contractions,
        vec![
            money(tally.churn),
            money(tally.contraction),
            money(w.mrr_at_start),
        ],
    ));
    out.push(frame.record(
        &kpi::NET_REVENUE_RETENTION,
        w.net_revenue_retention_ratio(tally),
        movements,
        vec![
            money(w.mrr_at_start),
            money(tally.expansion),
            money(tally.contraction),
            money(tally.churn),
        ],
    ));
    let acquired = tally.acquired_customers();
    out.push(frame.record(
        &kpi::CUSTOMER_RETENTION,
        w.customer_retention_ratio(tally),
        movements,
        vec![
            active_at_start,
            Some(w.active_at_end as f64),
            Some(acquired as f64),
        ],
    ));
    out.push(frame.record(
        &kpi::RENEWAL,
        billing::renewal_ratio(tally),
        tally.renewals + tally.cancellations,
        counts([tally.renewals, tally.cancellations]),
    ));
    revenue_records(tally, &w, frame, out);
    churn
}

/// The quick ratio, gross revenue retention, subscription churn, churn by reason and trial
/// conversion of one window.
fn revenue_records(
    tally: &BillingTally,
    w: &WindowRevenue,
    frame: &Frame<'_>,
    out: &mut Vec<KpiRecord>,
) {
    let money = |m: MicrosSum| Some(billing::major(m));
    out.push(frame.record(
        &kpi::QUICK_RATIO,
        tally.quick_ratio(),
        tally.movements(),
        vec![
            money(tally.new),
            money(tally.reactivation),
            money(tally.expansion),
            money(tally.contraction),
            money(tally.churn),
        ],
    ));
    out.push(frame.record(
        &kpi::GROSS_REVENUE_RETENTION,
        w.gross_revenue_retention_ratio(tally),
        tally.contractions + tally.churned_customers,
        vec![
            money(w.mrr_at_start),
            money(tally.losses_of_customers_at_start()),
        ],
    ));
    out.push(frame.record(
        &kpi::SUBSCRIPTION_CHURN,
        w.subscription_churn_ratio(tally),
        tally.cancellations,
        vec![
            Some(tally.cancellations as f64),
            Some(w.subscriptions_at_start as f64),
            Some(tally.subscriptions_started as f64),
        ],
    ));
    for (reason, movement, ratio) in [
        (
            CancelReason::Voluntary,
            &kpi::MRR_CHURN_VOLUNTARY,
            &kpi::CUSTOMER_CHURN_VOLUNTARY,
        ),
        (
            CancelReason::Delinquent,
            &kpi::MRR_CHURN_DELINQUENT,
            &kpi::CUSTOMER_CHURN_DELINQUENT,
        ),
    ] {
        let (amount, churned) = tally.churn_by(reason);
        out.push(frame.record(movement, money(amount), churned, Vec::new()));
        out.push(frame.record(
            ratio,
            w.customer_churn_ratio_by(tally, reason),
            churned,
            vec![Some(churned as f64), Some(w.active_at_start as f64)],
        ));
    }
    trial_records(tally, frame, out);
}

/// Trial conversion and the trials started, converted and expired in one window.
fn trial_records(tally: &BillingTally, frame: &Frame<'_>, out: &mut Vec<KpiRecord>) {
    let (converted, expired) = (tally.trials_converted, tally.trials_expired);
    out.push(frame.record(
        &kpi::TRIAL_CONVERSION,
        tally.trial_conversion_ratio(),
        converted + expired,
        counts([converted, expired]),
    ));
    for (def, count) in [
        (&kpi::TRIALS_STARTED, tally.trials_started),
        (&kpi::TRIALS_CONVERTED, converted),
        (&kpi::TRIALS_EXPIRED, expired),
    ] {
        out.push(frame.record(def, Some(count as f64), count, Vec::new()));
    }
}

fn current_records(
    now: &Current,
    clv_churn: Option<f64>,
    frame: &Frame<'_>,
    out: &mut Vec<KpiRecord>,
) {
    let mrr = Some(billing::major(now.mrr));
    let customers = now.active_customers;
    out.push(frame.record(&kpi::MRR, mrr, customers, Vec::new()));
    out.push(frame.record(
        &kpi::CUSTOMERS_ACTIVE,
        Some(customers as f64),
        customers,
        Vec::new(),
    ));
    let subscriptions = now.active_subscriptions;
    out.push(frame.record(
        &kpi::SUBSCRIPTIONS_ACTIVE,
        Some(subscriptions as f64),
        subscriptions,
        Vec::new(),
    ));
    out.push(frame.record(
        &kpi::TRIALS_ACTIVE,
        Some(now.active_trials as f64),
        now.active_trials,
        Vec::new(),
    ));
    let arpa = now.arpa().map(|a| a / billing::MICROS_PER_UNIT as f64);
    out.push(frame.record(
        &kpi::ARPA,
        arpa,
        customers,
        vec![mrr, Some(customers as f64)],
    ));
    out.push(frame.record(
        &kpi::CLV,
        billing::clv(arpa, clv_churn),
        customers,
        vec![arpa, clv_churn],
    ));
}

fn survey_records(tally: &SurveyTally, frame: &Frame<'_>, out: &mut Vec<KpiRecord>) {
    let nps = tally.nps();
    out.push(frame.record(
        &kpi::NPS,
        nps.value(),
        nps.responses(),
        counts([nps.promoters, nps.passives, nps.detractors, nps.responses()]),
    ));
    let csat = tally.csat();
    out.push(frame.record(
        &kpi::CSAT,
        csat.ratio(),
        csat.responses,
        counts([csat.satisfied, csat.responses]),
    ));
    let ces = tally.ces();
    out.push(frame.record(
        &kpi::CES,
        ces.mean(),
        ces.responses,
        counts([ces.score_sum, ces.responses]),
    ));
    out.push(frame.record(
        &kpi::CES_EASY,
        ces.easy_ratio(),
        ces.responses,
        counts([ces.easy, ces.responses]),
    ));
    let comments = tally.comments();
    out.push(frame.record(
        &kpi::SURVEY_COMMENT,
        comments.ratio(),
        comments.answers,
        counts([comments.commented, comments.answers]),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event;

    const NOW: i64 = 1_800_000_000_000;

    fn part(windows: &[&str], nps_promoters: u64) -> PartitionComponents {
        let mut tally = SurveyTally::default();
        for _ in 0..nps_promoters {
            tally.record(event::Survey::Nps, 10, false);
        }
        survey_part(windows, tally)
    }

    fn survey_part(windows: &[&str], tally: SurveyTally) -> PartitionComponents {
        PartitionComponents {
            windows: windows.iter().map(|w| (*w).to_owned()).collect(),
            series: vec![SeriesComponents {
                dimension: None,
                tallies: FamilyTallies::Surveys(vec![tally; windows.len()]),
            }],
            backlog: None,
        }
    }

    fn one_window() -> Vec<String> {
        vec!["1h".to_owned()]
    }

    /// The overall record of `kpi` in the window `1h`.
    fn overall_1h(totals: &Totals, kpi: &str) -> KpiRecord {
        let frame = WindowFrame {
            name: "1h".into(),
            start_ms: NOW - 3_600_000,
            end_ms: NOW,
            followed_by: None,
        };
        let key = format!("{kpi}/1h");
        totals
            .records(&[frame], None, NOW)
            .into_iter()
            .find(|r| r.key() == key)
            .unwrap()
    }

    fn nps_responses(totals: &Totals) -> Option<f64> {
        overall_1h(totals, "nps").components[3]
    }

    fn board_of_one_partition_per_topic() -> ReceivedComponents {
        let mut board = ReceivedComponents::default();
        for family in Family::ALL {
            board.set_partitions(family, 1);
        }
        board
    }

    fn stamped(as_of_ms: i64, promoters: u64) -> Stamped {
        Stamped {
            as_of_ms,
            components: part(&["1h"], promoters),
        }
    }

    fn empty_elsewhere(board: &mut ReceivedComponents) {
        for family in [Family::Tickets, Family::Billing] {
            board.offer(
                PartitionId::new(family, 0),
                Stamped {
                    as_of_ms: NOW,
                    components: PartitionComponents {
                        windows: vec!["1h".into()],
                        series: Vec::new(),
                        backlog: None,
                    },
                },
            );
        }
    }

    #[test]
    fn an_older_message_does_not_replace_a_newer_one() {
        let mut board = board_of_one_partition_per_topic();
        empty_elsewhere(&mut board);
        let p = PartitionId::new(Family::Surveys, 0);
        board.offer(p, stamped(NOW, 2));
        board.offer(p, stamped(NOW - 1, 5));
        let (totals, _) = board.totals(&one_window(), &HashMap::new(), 0).unwrap();
        assert_eq!(nps_responses(&totals), Some(2.0));
        board.offer(p, stamped(NOW + 1, 7));
        let (totals, oldest) = board.totals(&one_window(), &HashMap::new(), 0).unwrap();
        assert_eq!(nps_responses(&totals), Some(7.0));
        assert_eq!(oldest, Some(NOW));
    }

    #[test]
    fn a_missing_or_stale_partition_gives_no_totals() {
        let mut board = ReceivedComponents::default();
        let windows = one_window();
        assert_eq!(
            board.totals(&windows, &HashMap::new(), 0).unwrap_err(),
            Incomplete::UnknownPartitions("surveys")
        );
        board = board_of_one_partition_per_topic();
        empty_elsewhere(&mut board);
        let p = PartitionId::new(Family::Surveys, 0);
        assert_eq!(
            board.totals(&windows, &HashMap::new(), 0).unwrap_err(),
            Incomplete::Missing(vec![p])
        );
        board.offer(p, stamped(NOW - 10, 1));
        assert_eq!(
            board
                .totals(&windows, &HashMap::new(), NOW - 9)
                .unwrap_err(),
            Incomplete::Missing(vec![p])
        );
        // The instance's own components stand in for what it received.
        let local = HashMap::from([(p, part(&["1h"], 3))]);
        let (totals, _) = board.totals(&windows, &local, NOW - 9).unwrap();
        assert_eq!(nps_responses(&totals), Some(3.0));
    }

    #[test]
    fn components_of_other_windows_are_refused() {
        let mut totals = Totals::new(&one_window());
        let err = totals.add(&part(&["24h"], 1)).unwrap_err();
        assert!(matches!(err, Mismatch::Windows { .. }), "{err:?}");
        assert_eq!(nps_responses(&totals), Some(0.0));
    }

    #[test]
    fn the_comment_ratio_of_summed_partitions_is_not_the_mean_of_their_ratios() {
        use event::Survey::{Ces, Csat, Nps};
        // One partition: 1 answer of 1 with a comment; the other: 1 of 3. Summed, as
        // instances exchange them: 2 / 4 = 0.5, where the mean of the ratios is 0.667.
        let mut one = SurveyTally::default();
        one.record(Csat, 5, true);
        let mut other = SurveyTally::default();
        other.record(Nps, 2, true);
        other.record(Nps, 9, false);
        other.record(Ces, 4, false);
        let mut totals = Totals::new(&one_window());
        for tally in [one, other] {
            let sent = serde_json::to_string(&survey_part(&["1h"], tally)).unwrap();
            totals.add(&serde_json::from_str(&sent).unwrap()).unwrap();
        }
        let comments = overall_1h(&totals, "survey_comment");
        assert_eq!(comments.value, Some(0.5));
        assert_eq!(comments.samples, 4);
        assert_eq!(comments.components, vec![Some(2.0), Some(4.0)]);
        // Without answers: no value, the components at 0.
        let empty = overall_1h(&Totals::new(&one_window()), "survey_comment");
        assert_eq!(empty.value, None);
        assert_eq!(empty.components, vec![Some(0.0), Some(0.0)]);
    }

    #[test]
    fn an_empty_resolution_sketch_survives_json() {
        let mut tally = TicketTally::default();
        let empty = serde_json::to_string(&tally).unwrap();
        let back: TicketTally = serde_json::from_str(&empty).unwrap();
        assert_eq!(back.resolution.quantile_seconds(0.5), None);
        tally.record_resolution(1, 0, 90_000);
        tally.record_resolution(1, 0, 5_000);
        let back: TicketTally =
            serde_json::from_str(&serde_json::to_string(&tally).unwrap()).unwrap();
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(
                back.resolution.quantile_seconds(q),
                tally.resolution.quantile_seconds(q)
            );
        }
    }
}
