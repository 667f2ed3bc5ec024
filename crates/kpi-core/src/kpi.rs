//! The published shape of a KPI value: one [`KpiRecord`] per KPI, window and series.
//!
//! The same records feed the Prometheus gauges, `GET /kpis` and the output topic, so the
//! three can never disagree. [`KPIS`] names every KPI with its gauge and its components.

use serde_json::{Map, Value, json};

/// Version of the output-topic message schema (docs/output.md).
pub const SCHEMA_VERSION: u32 = 1;

/// A constant label (name, value) that tells apart gauges sharing a name.
pub type ConstLabel = (&'static str, &'static str);

/// A KPI and the gauges it is exported as.
#[derive(Debug)]
pub struct KpiDef {
    /// The `kpi` field of a record and the first part of its key.
    pub kpi: &'static str,
    /// Gauge holding the value; absent while the value is undefined.
    pub metric: &'static str,
    pub help: &'static str,
    /// A constant label that tells this KPI apart from others sharing its gauge.
    pub label: Option<ConstLabel>,
    /// An amount of money: exported with the label `currency` = the base currency.
    pub money: bool,
    /// Components, in the order of [`KpiRecord::components`], each exported as a gauge
    /// unless its gauge is another KPI's value gauge.
    pub components: &'static [ComponentDef],
}

#[derive(Debug)]
pub struct ComponentDef {
    pub name: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
    pub label: Option<ConstLabel>,
    pub money: bool,
}

/// The window label of values that are current rather than windowed (MRR, ARPA, CLV, the
/// backlog).
pub const CURRENT: &str = "current";

const fn kpi(
    kpi: &'static str,
    metric: &'static str,
    help: &'static str,
    components: &'static [ComponentDef],
) -> KpiDef {
    KpiDef {
        kpi,
        metric,
        help,
        label: None,
        money: false,
        components,
    }
}

const fn money(mut def: KpiDef) -> KpiDef {
    def.money = true;
    def
}

const fn component(name: &'static str, metric: &'static str, help: &'static str) -> ComponentDef {
    ComponentDef {
        name,
        metric,
        help,
        label: None,
        money: false,
    }
}

const fn money_component(
    name: &'static str,
    metric: &'static str,
    help: &'static str,
) -> ComponentDef {
    ComponentDef {
        money: true,
        ..component(name, metric, help)
    }
}

const fn labelled(
    name: &'static str,
    metric: &'static str,
    help: &'static str,
    label: ConstLabel,
) -> ComponentDef {
    ComponentDef {
        label: Some(label),
        ..component(name, metric, help)
    }
}

const NPS_RESPONSES: ComponentDef = component(
    "responses",
    "kpi_nps_responses",
    "NPS responses in the window",
);
const CES_RESPONSES: ComponentDef = component(
    "responses",
    "kpi_ces_responses",
    "CES responses in the window",
);

pub const NPS: KpiDef = kpi(
    "nps",
    "kpi_nps",
    "Net Promoter Score in the window: 100 x (promoters - detractors) / responses",
    &[
        component(
            "promoters",
            "kpi_nps_promoters",
            "NPS responses scoring 9-10 in the window",
        ),
        component(
            "passives",
            "kpi_nps_passives",
            "NPS responses scoring 7-8 in the window",
        ),
        component(
            "detractors",
            "kpi_nps_detractors",
            "NPS responses scoring 0-6 in the window",
        ),
        NPS_RESPONSES,
    ],
);

pub const CSAT: KpiDef = kpi(
    "csat",
    "kpi_csat_ratio",
    "Customer satisfaction in the window: responses scoring 4-5 / responses",
    &[
        component(
            "satisfied",
            "kpi_csat_satisfied",
            "CSAT responses scoring 4-5 in the window",
        ),
        component(
            "responses",
            "kpi_csat_responses",
            "CSAT responses in the window",
        ),
    ],
);

pub const CES: KpiDef = kpi(
    "ces",
    "kpi_ces_mean",
    "Customer effort score in the window: mean score on the 1-7 scale (7 = easy)",
    &[
        component(
            "score_sum",
            "kpi_ces_total_score",
            "Sum of CES scores in the window",
        ),
        CES_RESPONSES,
    ],
);

pub const CES_EASY: KpiDef = kpi(
    "ces_easy",
    "kpi_ces_easy_ratio",
    "Share of CES responses scoring 5 or more in the window",
    &[
        component(
            "easy",
            "kpi_ces_easy",
            "CES responses scoring 5-7 in the window",
        ),
        CES_RESPONSES,
    ],
);

pub const SURVEY_COMMENT: KpiDef = kpi(
    "survey_comment",
    "kpi_survey_comment_ratio",
    "Share of the survey answers (NPS, CSAT and CES) in the window with a comment: commented answers / answers",
    &[
        component(
            "commented",
            "kpi_survey_commented_answers",
            "Survey answers (NPS, CSAT and CES) in the window with a comment that is not blank",
        ),
        component(
            "answers",
            "kpi_survey_answers",
            "Survey answers (NPS, CSAT and CES) in the window",
        ),
    ],
);

pub const TICKETS_OPENED: KpiDef = kpi(
    "tickets_opened",
    "kpi_tickets_opened",
    "ticket.opened events in the window",
    &[],
);

pub const TICKETS_REOPENED: KpiDef = kpi(
    "tickets_reopened",
    "kpi_tickets_reopened",
    "ticket.reopened events in the window",
    &[],
);

pub const TICKETS_RESOLVED: KpiDef = kpi(
    "tickets_resolved",
    "kpi_tickets_resolved",
    "ticket.resolved events in the window",
    &[],
);

pub const FCR: KpiDef = kpi(
    "fcr",
    "kpi_fcr_ratio",
    "First-contact resolution in the window: resolutions with at most one agent reply and no reopen / resolutions",
    &[
        component(
            "first_contact",
            "kpi_fcr_first_contact_resolutions",
            "Resolutions with at most one agent reply and no reopen in the window",
        ),
        component(
            "resolutions",
            "kpi_fcr_resolutions",
            "Resolutions in the window",
        ),
    ],
);

/// The components of a duration KPI (resolution time, first reply time): count, sum, the
/// three percentiles and the cumulative count within each bound of
/// [`crate::ticket::DURATION_BOUNDS_SECONDS`], then in all.
macro_rules! duration_components {
    (
        count: $count:literal, $count_help:literal,
        sum: $sum:literal, $sum_help:literal,
        percentile: $percentile:literal, $percentile_help:literal,
        within: $within:literal, $within_help:literal $(,)?
    ) => {
        &[
            component("count", $count, $count_help),
            component("sum", $sum, $sum_help),
            labelled("p50", $percentile, $percentile_help, ("percentile", "50")),
            labelled("p90", $percentile, $percentile_help, ("percentile", "90")),
            labelled("p99", $percentile, $percentile_help, ("percentile", "99")),
            labelled("le_300", $within, $within_help, ("seconds", "300")),
            labelled("le_900", $within, $within_help, ("seconds", "900")),
            labelled("le_1800", $within, $within_help, ("seconds", "1800")),
            labelled("le_3600", $within, $within_help, ("seconds", "3600")),
            labelled("le_7200", $within, $within_help, ("seconds", "7200")),
            labelled("le_14400", $within, $within_help, ("seconds", "14400")),
            labelled("le_28800", $within, $within_help, ("seconds", "28800")),
            labelled("le_43200", $within, $within_help, ("seconds", "43200")),
            labelled("le_86400", $within, $within_help, ("seconds", "86400")),
            labelled("le_172800", $within, $within_help, ("seconds", "172800")),
            labelled("le_604800", $within, $within_help, ("seconds", "604800")),
            labelled("le_1209600", $within, $within_help, ("seconds", "1209600")),
            labelled("le_inf", $within, $within_help, ("seconds", "+Inf")),
        ]
    };
}

pub const RESOLUTION_TIME: KpiDef = kpi(
    "resolution_time",
    "kpi_resolution_time_seconds_mean",
    "Mean resolution time (resolved occurred_at - opened_at) in the window, seconds",
    duration_components!(
        count: "kpi_resolution_time_resolutions", "Resolutions in the window",
        sum: "kpi_resolution_time_total_seconds", "Sum of resolution times in the window, seconds",
        percentile: "kpi_resolution_time_percentile_seconds",
        "Resolution-time percentile in the window, seconds (DDSketch, 1% relative error; not aggregatable)",
        within: "kpi_resolution_time_resolutions_within",
        "Resolutions in the window that took at most the number of seconds in the `seconds` label (cumulative; aggregatable)",
    ),
);

pub const FIRST_REPLY_TIME: KpiDef = kpi(
    "first_reply_time",
    "kpi_first_reply_time_seconds_mean",
    "Mean first reply time (first public agent reply - ticket opened_at) of the first replies in the window, seconds",
    duration_components!(
        count: "kpi_first_reply_time_replies", "First public agent replies in the window",
        sum: "kpi_first_reply_time_total_seconds",
        "Sum of the first reply times of the first replies in the window, seconds",
        percentile: "kpi_first_reply_time_percentile_seconds",
        "First-reply-time percentile in the window, seconds (DDSketch, 1% relative error; not aggregatable)",
        within: "kpi_first_reply_time_replies_within",
        "First replies in the window that came at most the number of seconds in the `seconds` label after the ticket was opened (cumulative; aggregatable)",
    ),
);

// Service levels, one-touch and reopen rates (crate::sla, crate::ticket::ServiceTally).

pub const FIRST_REPLY_SLA_BREACH: KpiDef = kpi(
    "first_reply_sla_breach",
    "kpi_first_reply_sla_breach_ratio",
    "Share of the first replies in the window later than their priority's first-reply target: breached / (achieved + breached)",
    &[
        component(
            "achieved",
            "kpi_first_reply_sla_achieved",
            "First replies in the window within their priority's first-reply target",
        ),
        component(
            "breached",
            "kpi_first_reply_sla_breached",
            "First replies in the window later than their priority's first-reply target",
        ),
    ],
);

pub const RESOLUTION_SLA_BREACH: KpiDef = kpi(
    "resolution_sla_breach",
    "kpi_resolution_sla_breach_ratio",
    "Share of the resolutions in the window later than their priority's resolution target: breached / (achieved + breached)",
    &[
        component(
            "achieved",
            "kpi_resolution_sla_achieved",
            "Resolutions in the window within their priority's resolution target",
        ),
        component(
            "breached",
            "kpi_resolution_sla_breached",
            "Resolutions in the window later than their priority's resolution target",
        ),
    ],
);

const TRACKED_RESOLUTIONS: ComponentDef = component(
    "tracked",
    "kpi_tracked_resolutions",
    "Resolutions in the window of tickets held in the open tickets (their opening or reopening seen)",
);

pub const ONE_TOUCH: KpiDef = kpi(
    "one_touch",
    "kpi_one_touch_ratio",
    "One-touch rate in the window: resolutions with exactly one public agent reply and no reopen / tracked resolutions",
    &[
        component(
            "one_touch",
            "kpi_one_touch_resolutions",
            "Resolutions in the window with exactly one public agent reply and no reopen",
        ),
        TRACKED_RESOLUTIONS,
    ],
);

pub const REOPEN: KpiDef = kpi(
    "reopen",
    "kpi_reopen_ratio",
    "Reopen rate in the window: resolutions of tickets reopened at least once / tracked resolutions",
    &[
        component(
            "reopened",
            "kpi_reopened_resolutions",
            "Resolutions in the window of tickets reopened at least once",
        ),
        TRACKED_RESOLUTIONS,
    ],
);

// The backlog (crate::backlog), current values.

const BY_PRIORITY_HELP: &str = "Open tickets now by priority (`none`: without one)";
const BY_AGE_HELP: &str = "Open tickets now by age band (now - opening)";

pub const BACKLOG: KpiDef = kpi(
    "backlog",
    "kpi_backlog_tickets",
    "Open tickets now: opened or reopened and not resolved since",
    &[
        labelled(
            "low",
            "kpi_backlog_tickets_by_priority",
            BY_PRIORITY_HELP,
            ("priority", "low"),
        ),
        labelled(
            "normal",
            "kpi_backlog_tickets_by_priority",
            BY_PRIORITY_HELP,
            ("priority", "normal"),
        ),
        labelled(
            "high",
            "kpi_backlog_tickets_by_priority",
            BY_PRIORITY_HELP,
            ("priority", "high"),
        ),
        labelled(
            "urgent",
            "kpi_backlog_tickets_by_priority",
            BY_PRIORITY_HELP,
            ("priority", "urgent"),
        ),
        labelled(
            "none",
            "kpi_backlog_tickets_by_priority",
            BY_PRIORITY_HELP,
            ("priority", "none"),
        ),
        labelled(
            "lt_1h",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "lt_1h"),
        ),
        labelled(
            "1h_8h",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "1h_8h"),
        ),
        labelled(
            "8h_24h",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "8h_24h"),
        ),
        labelled(
            "1d_3d",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "1d_3d"),
        ),
        labelled(
            "3d_7d",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "3d_7d"),
        ),
        labelled(
            "gt_7d",
            "kpi_backlog_tickets_by_age",
            BY_AGE_HELP,
            ("age", "gt_7d"),
        ),
    ],
);

pub const SLA_AT_RISK: KpiDef = kpi(
    "sla_at_risk",
    "kpi_sla_at_risk_tickets",
    "Open tickets now with no SLA target breached yet whose first-reply or resolution target is breached within the next hour",
    &[],
);

pub const SLA_BREACHED_OPEN: KpiDef = kpi(
    "sla_breached_open",
    "kpi_sla_breached_open_tickets",
    "Open tickets now past their first-reply target without a reply, or past their resolution target",
    &[],
);

const MOVEMENT_HELP: &str =
    "MRR movement in the window by kind, base-currency major units (absolute amounts)";

const fn movement(kpi_name: &'static str, kind: &'static str) -> KpiDef {
    KpiDef {
        label: Some(("kind", kind)),
        money: true,
        ..kpi(kpi_name, "kpi_mrr_movement", MOVEMENT_HELP, &[])
    }
}

pub const MRR_NEW: KpiDef = movement("mrr_new", "new");
pub const MRR_REACTIVATION: KpiDef = movement("mrr_reactivation", "reactivation");
pub const MRR_EXPANSION: KpiDef = movement("mrr_expansion", "expansion");
pub const MRR_CONTRACTION: KpiDef = movement("mrr_contraction", "contraction");
pub const MRR_CHURN: KpiDef = movement("mrr_churn", "churn");

pub const NET_NEW_MRR: KpiDef = money(kpi(
    "net_new_mrr",
    "kpi_net_new_mrr",
    "Net new MRR in the window: new + reactivation + expansion - contraction - churn",
    &[],
));

const MRR_AT_START: ComponentDef = money_component(
    "mrr_at_start",
    "kpi_mrr_at_window_start",
    "MRR at the start of the window, base-currency major units",
);
const ACTIVE_AT_START: ComponentDef = component(
    "active_at_start",
    "kpi_customers_active_at_window_start",
    "Customers with MRR > 0 at the start of the window",
);
const MOVEMENT_CHURN: ComponentDef = money_component("churn", "kpi_mrr_movement", MOVEMENT_HELP);
const MOVEMENT_CONTRACTION: ComponentDef =
    money_component("contraction", "kpi_mrr_movement", MOVEMENT_HELP);
const MOVEMENT_EXPANSION: ComponentDef =
    money_component("expansion", "kpi_mrr_movement", MOVEMENT_HELP);

pub const CUSTOMER_CHURN: KpiDef = kpi(
    "customer_churn",
    "kpi_customer_churn_ratio",
    "Customers churned in the window / active customers at its start",
    &[
        component(
            "churned",
            "kpi_customers_churned",
            "Customers whose MRR went from > 0 to 0 in the window",
        ),
        ACTIVE_AT_START,
    ],
);

pub const REVENUE_CHURN: KpiDef = kpi(
    "revenue_churn",
    "kpi_revenue_churn_ratio",
    "(Churned + contraction MRR in the window) / MRR at its start",
    &[MOVEMENT_CHURN, MOVEMENT_CONTRACTION, MRR_AT_START],
);

pub const NET_REVENUE_RETENTION: KpiDef = kpi(
    "net_revenue_retention",
    "kpi_net_revenue_retention_ratio",
    "(MRR at the window's start + expansion - contraction - churn) / MRR at its start",
    &[
        MRR_AT_START,
        MOVEMENT_EXPANSION,
        MOVEMENT_CONTRACTION,
        MOVEMENT_CHURN,
    ],
);

pub const CUSTOMER_RETENTION: KpiDef = kpi(
    "customer_retention",
    "kpi_customer_retention_ratio",
    "(Active customers at the window's end - customers acquired in it) / active at its start",
    &[
        ACTIVE_AT_START,
        component(
            "active_at_end",
            "kpi_customers_active_at_window_end",
            "Customers with MRR > 0 at the end of the window (now, or a closed period's end)",
        ),
        component(
            "acquired",
            "kpi_customers_acquired",
            "Customers new or reactivated in the window",
        ),
    ],
);

pub const RENEWAL: KpiDef = kpi(
    "renewal",
    "kpi_renewal_ratio",
    "Renewals / (renewals + cancellations) in the window",
    &[
        component(
            "renewals",
            "kpi_renewals",
            "subscription.renewed events in the window",
        ),
        component(
            "cancellations",
            "kpi_cancellations",
            "subscription.canceled events in the window",
        ),
    ],
);

pub const MRR: KpiDef = money(kpi(
    "mrr",
    "kpi_mrr",
    "Current monthly recurring revenue, base-currency major units",
    &[],
));

pub const CUSTOMERS_ACTIVE: KpiDef = kpi(
    "customers_active",
    "kpi_customers_active",
    "Customers whose current MRR is above 0",
    &[],
);

pub const ARPA: KpiDef = money(kpi(
    "arpa",
    "kpi_arpa",
    "Average revenue per account: current MRR / active customers",
    &[
        money_component(
            "mrr",
            "kpi_mrr",
            "Current monthly recurring revenue, base-currency major units",
        ),
        component(
            "customers",
            "kpi_customers_active",
            "Customers whose current MRR is above 0",
        ),
    ],
));

pub const CLV: KpiDef = money(kpi(
    "clv",
    "kpi_clv",
    "Customer lifetime value: ARPA / customer churn ratio of the CLV window",
    &[
        money_component(
            "arpa",
            "kpi_arpa",
            "Average revenue per account: current MRR / active customers",
        ),
        component(
            "customer_churn_ratio",
            "kpi_customer_churn_ratio",
            "Customers churned in the window / active customers at its start",
        ),
    ],
));

// Revenue KPIs of subscription-analytics tools: the quick ratio, subscription churn, and
// churn split by why the last subscription was canceled.

const MOVEMENT_NEW: ComponentDef = money_component("new", "kpi_mrr_movement", MOVEMENT_HELP);
const MOVEMENT_REACTIVATION: ComponentDef =
    money_component("reactivation", "kpi_mrr_movement", MOVEMENT_HELP);

pub const QUICK_RATIO: KpiDef = kpi(
    "quick_ratio",
    "kpi_quick_ratio",
    "SaaS quick ratio in the window: (new + reactivation + expansion) / (contraction + churn) MRR",
    &[
        MOVEMENT_NEW,
        MOVEMENT_REACTIVATION,
        MOVEMENT_EXPANSION,
        MOVEMENT_CONTRACTION,
        MOVEMENT_CHURN,
    ],
);

pub const GROSS_REVENUE_RETENTION: KpiDef = kpi(
    "gross_revenue_retention",
    "kpi_gross_revenue_retention_ratio",
    "(MRR at the window's start - contraction - churn of the customers active at its start) / MRR at its start",
    &[
        MRR_AT_START,
        money_component(
            "lost",
            "kpi_mrr_lost_by_customers_at_window_start",
            "Contraction and churn MRR in the window of the customers active at its start, base-currency major units",
        ),
    ],
);

const SUBSCRIPTIONS_ACTIVE_HELP: &str =
    "Subscriptions started and not canceled, free ones included";

pub const SUBSCRIPTION_CHURN: KpiDef = kpi(
    "subscription_churn",
    "kpi_subscription_churn_ratio",
    "Subscriptions canceled in the window / subscriptions active at its start",
    &[
        component(
            "canceled",
            "kpi_cancellations",
            "subscription.canceled events in the window",
        ),
        component(
            "active_at_start",
            "kpi_subscriptions_active_at_window_start",
            "Subscriptions active at the start of the window",
        ),
        component(
            "started",
            "kpi_subscriptions_started",
            "Subscriptions that became active (new, or started again) in the window",
        ),
    ],
);

pub const SUBSCRIPTIONS_ACTIVE: KpiDef = kpi(
    "subscriptions_active",
    "kpi_subscriptions_active",
    SUBSCRIPTIONS_ACTIVE_HELP,
    &[],
);

// Churn by reason has gauges of its own, labelled `reason`: beside the total on the same
// gauge, every sum over the gauge's series would count churn twice.

const fn churn_by_reason(
    kpi_name: &'static str,
    metric: &'static str,
    help: &'static str,
    reason: &'static str,
    components: &'static [ComponentDef],
) -> KpiDef {
    KpiDef {
        label: Some(("reason", reason)),
        ..kpi(kpi_name, metric, help, components)
    }
}

const MRR_CHURN_BY_REASON_HELP: &str = "Churned MRR in the window by the reason of the cancellation that took the customer's MRR to 0, base-currency major units";
const CUSTOMER_CHURN_BY_REASON_HELP: &str =
    "Customers churned in the window for the reason in `reason` / active customers at its start";
const CHURNED_BY_REASON_HELP: &str =
    "Customers whose MRR went from > 0 to 0 in the window, by the reason of the cancellation";

pub const MRR_CHURN_VOLUNTARY: KpiDef = money(churn_by_reason(
    "mrr_churn_voluntary",
    "kpi_mrr_churn_by_reason",
    MRR_CHURN_BY_REASON_HELP,
    "voluntary",
    &[],
));
pub const MRR_CHURN_DELINQUENT: KpiDef = money(churn_by_reason(
    "mrr_churn_delinquent",
    "kpi_mrr_churn_by_reason",
    MRR_CHURN_BY_REASON_HELP,
    "delinquent",
    &[],
));
pub const CUSTOMER_CHURN_VOLUNTARY: KpiDef = churn_by_reason(
    "customer_churn_voluntary",
    "kpi_customer_churn_by_reason_ratio",
    CUSTOMER_CHURN_BY_REASON_HELP,
    "voluntary",
    &[
        labelled(
            "churned",
            "kpi_customers_churned_by_reason",
            CHURNED_BY_REASON_HELP,
            ("reason", "voluntary"),
        ),
        ACTIVE_AT_START,
    ],
);
pub const CUSTOMER_CHURN_DELINQUENT: KpiDef = churn_by_reason(
    "customer_churn_delinquent",
    "kpi_customer_churn_by_reason_ratio",
    CUSTOMER_CHURN_BY_REASON_HELP,
    "delinquent",
    &[
        labelled(
            "churned",
            "kpi_customers_churned_by_reason",
            CHURNED_BY_REASON_HELP,
            ("reason", "delinquent"),
        ),
        ACTIVE_AT_START,
    ],
);

// Trials (crate::trial): each counted in the series of its `subscription.trial_started`.

const TRIALS_CONVERTED_HELP: &str = "Trials converted in the window: their subscription started no later than trial_ends_at + billing.trial_grace";
const TRIALS_EXPIRED_HELP: &str = "Trials expired in the window: the partition's event time passed trial_ends_at + billing.trial_grace without a start";

pub const TRIAL_CONVERSION: KpiDef = kpi(
    "trial_conversion",
    "kpi_trial_conversion_ratio",
    "Trial conversion in the window: trials converted / trials ended (converted or expired)",
    &[
        component("converted", "kpi_trials_converted", TRIALS_CONVERTED_HELP),
        component("expired", "kpi_trials_expired", TRIALS_EXPIRED_HELP),
    ],
);

pub const TRIALS_STARTED: KpiDef = kpi(
    "trials_started",
    "kpi_trials_started",
    "subscription.trial_started events in the window",
    &[],
);

pub const TRIALS_CONVERTED: KpiDef = kpi(
    "trials_converted",
    "kpi_trials_converted",
    TRIALS_CONVERTED_HELP,
    &[],
);

pub const TRIALS_EXPIRED: KpiDef = kpi(
    "trials_expired",
    "kpi_trials_expired",
    TRIALS_EXPIRED_HELP,
    &[],
);

pub const TRIALS_ACTIVE: KpiDef = kpi(
    "trials_active",
    "kpi_trials_active",
    "Trials pending now: begun, neither converted nor expired",
    &[],
);

/// Every KPI the service computes.
pub const KPIS: [&KpiDef; 46] = [
    &NPS,
    &CSAT,
    &CES,
    &CES_EASY,
    &SURVEY_COMMENT,
    &TICKETS_OPENED,
    &TICKETS_REOPENED,
    &TICKETS_RESOLVED,
    &FCR,
    &RESOLUTION_TIME,
    &FIRST_REPLY_TIME,
    &FIRST_REPLY_SLA_BREACH,
    &RESOLUTION_SLA_BREACH,
    &ONE_TOUCH,
    &REOPEN,
    &BACKLOG,
    &SLA_AT_RISK,
    &SLA_BREACHED_OPEN,
    &MRR_NEW,
    &MRR_REACTIVATION,
    &MRR_EXPANSION,
    &MRR_CONTRACTION,
    &MRR_CHURN,
    &NET_NEW_MRR,
    &CUSTOMER_CHURN,
    &REVENUE_CHURN,
    &NET_REVENUE_RETENTION,
    &CUSTOMER_RETENTION,
    &RENEWAL,
    &MRR,
    &CUSTOMERS_ACTIVE,
    &ARPA,
    &CLV,
    // Revenue KPIs of subscription-analytics tools.
    &QUICK_RATIO,
    &GROSS_REVENUE_RETENTION,
    &SUBSCRIPTION_CHURN,
    &SUBSCRIPTIONS_ACTIVE,
    &MRR_CHURN_VOLUNTARY,
    &MRR_CHURN_DELINQUENT,
    &CUSTOMER_CHURN_VOLUNTARY,
    &CUSTOMER_CHURN_DELINQUENT,
    &TRIAL_CONVERSION,
    &TRIALS_STARTED,
    &TRIALS_CONVERTED,
    &TRIALS_EXPIRED,
    &TRIALS_ACTIVE,
];

/// The value of one KPI for one window and series.
#[derive(Debug, Clone)]
pub struct KpiRecord {
    pub def: &'static KpiDef,
    pub window: String,
    /// The dimension label of the series (`("segment", "smb")`), or `None` overall.
    pub dimension: Option<(String, String)>,
    /// `None` while undefined (no samples): published as JSON null, absent from /metrics.
    pub value: Option<f64>,
    pub samples: u64,
    /// Values of `def.components`, in order; `None` where undefined (a quantile without
    /// samples), published as null and absent from /metrics.
    pub components: Vec<Option<f64>>,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
}

impl KpiRecord {
    /// `<kpi>/<window>` overall, `<kpi>/<window>/<dim>=<value>` per dimension value.
    pub fn key(&self) -> String {
        match &self.dimension {
            None => format!("{}/{}", self.def.kpi, self.window),
            Some((name, value)) => format!("{}/{}/{name}={value}", self.def.kpi, self.window),
        }
    }

    /// The JSON object published on the output topic and served by `GET /kpis`; amounts of
    /// money carry the label `currency`, as in /metrics.
    pub fn to_json(&self, emitted_at_ms: i64, currency: &str) -> Value {
        let mut labels = Map::new();
        if let Some((name, value)) = self.def.label {
            labels.insert(name.to_owned(), Value::from(value));
        }
        if self.def.money {
            labels.insert("currency".to_owned(), Value::from(currency));
        }
        if let Some((name, value)) = &self.dimension {
            labels.insert(name.clone(), Value::from(value.as_str()));
        }
        let components: Map<String, Value> = self
            .def
            .components
            .iter()
            .zip(&self.components)
            .map(|(c, v)| (c.name.to_owned(), v.map_or(Value::Null, number)))
            .collect();
        json!({
            "kpi": self.def.kpi,
            "window": self.window,
            "labels": labels,
            "value": self.value.map_or(Value::Null, number),
            "samples": self.samples,
            "components": components,
            "window_start": rfc3339(self.window_start_ms),
            "window_end": rfc3339(self.window_end_ms),
            "emitted_at": rfc3339(emitted_at_ms),
            "schema_version": SCHEMA_VERSION,
        })
    }
}

/// Whole numbers print without a fraction (`12`, not `12.0`).
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// Unix milliseconds as an RFC 3339 UTC timestamp with millisecond precision.
/// An instant outside the years jiff represents (about ±9999) prints as the epoch.
pub fn rfc3339(ms: i64) -> String {
    let at = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{at:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dimension: Option<(&str, &str)>, value: Option<f64>) -> KpiRecord {
        KpiRecord {
            def: &NPS,
            window: "1h".into(),
            dimension: dimension.map(|(a, b)| (a.into(), b.into())),
            value,
            samples: 4,
            components: vec![Some(2.0), Some(1.0), Some(1.0), Some(4.0)],
            window_start_ms: 0,
            window_end_ms: 3_600_000,
        }
    }

    #[test]
    fn instants_are_written_in_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_793_487_600_000), "2026-10-31T23:00:00.000Z");
        assert_eq!(rfc3339(1_793_487_600_042), "2026-10-31T23:00:00.042Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_207_200_000), "9999-12-30T22:00:00.000Z");
        for outside in [253_402_207_200_001, i64::MAX, i64::MIN] {
            assert_eq!(rfc3339(outside), "1970-01-01T00:00:00.000Z");
        }
    }

    #[test]
    fn keys_name_kpi_window_and_dimension() {
        assert_eq!(record(None, None).key(), "nps/1h");
        assert_eq!(
            record(Some(("segment", "smb")), None).key(),
            "nps/1h/segment=smb"
        );
    }

    #[test]
    fn json_carries_value_components_and_times() {
        let json = record(Some(("segment", "smb")), Some(25.0)).to_json(3_600_500, "USD");
        assert_eq!(
            json,
            json!({
                "kpi": "nps", "window": "1h", "labels": {"segment": "smb"},
                "value": 25, "samples": 4,
                "components": {"promoters": 2, "passives": 1, "detractors": 1, "responses": 4},
                "window_start": "1970-01-01T00:00:00.000Z",
                "window_end": "1970-01-01T01:00:00.000Z",
                "emitted_at": "1970-01-01T01:00:00.500Z",
                "schema_version": 1
            })
        );
        assert_eq!(record(None, None).to_json(0, "USD")["value"], Value::Null);
        assert_eq!(
            record(None, Some(33.5)).to_json(0, "USD")["value"],
            json!(33.5)
        );
        let mut churn = record(None, Some(12.5));
        churn.def = &MRR_CHURN;
        churn.components = vec![];
        assert_eq!(
            churn.to_json(0, "EUR")["labels"],
            json!({"kind": "churn", "currency": "EUR"})
        );
    }
}
