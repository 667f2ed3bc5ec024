//! The published shape of a KPI value: one [`KpiRecord`] per KPI, window and series.
//!
//! The same records feed the Prometheus gauges, `GET /kpis` and the output topic, so the
//! three can never disagree. [`KPIS`] names every KPI with its gauge and its components.

use serde_json::{Map, Value, json};

/// Version of the output-topic message schema (docs/output.md).
pub const SCHEMA_VERSION: u32 = 1;

/// A KPI and the gauges it is exported as.
#[derive(Debug)]
pub struct KpiDef {
    /// The `kpi` field of a record and the first part of its key.
    pub kpi: &'static str,
    /// Gauge holding the value; absent while the value is undefined.
    pub metric: &'static str,
    pub help: &'static str,
    /// Components, in the order of [`KpiRecord::components`], each exported as a gauge.
    pub components: &'static [ComponentDef],
}

#[derive(Debug)]
pub struct ComponentDef {
    pub name: &'static str,
    pub metric: &'static str,
    pub help: &'static str,
}

const NPS_RESPONSES: ComponentDef = ComponentDef {
    name: "responses",
    metric: "kpi_nps_responses",
    help: "NPS responses in the window",
};
const CES_RESPONSES: ComponentDef = ComponentDef {
    name: "responses",
    metric: "kpi_ces_responses",
    help: "CES responses in the window",
};

pub const NPS: KpiDef = KpiDef {
    kpi: "nps",
    metric: "kpi_nps",
    help: "Net Promoter Score in the window: 100 x (promoters - detractors) / responses",
    components: &[
        ComponentDef {
            name: "promoters",
            metric: "kpi_nps_promoters",
            help: "NPS responses scoring 9-10 in the window",
        },
        ComponentDef {
            name: "passives",
            metric: "kpi_nps_passives",
            help: "NPS responses scoring 7-8 in the window",
        },
        ComponentDef {
            name: "detractors",
            metric: "kpi_nps_detractors",
            help: "NPS responses scoring 0-6 in the window",
        },
        NPS_RESPONSES,
    ],
};

pub const CSAT: KpiDef = KpiDef {
    kpi: "csat",
    metric: "kpi_csat_ratio",
    help: "Customer satisfaction in the window: responses scoring 4-5 / responses",
    components: &[
        ComponentDef {
            name: "satisfied",
            metric: "kpi_csat_satisfied",
            help: "CSAT responses scoring 4-5 in the window",
        },
        ComponentDef {
            name: "responses",
            metric: "kpi_csat_responses",
            help: "CSAT responses in the window",
        },
    ],
};

pub const CES: KpiDef = KpiDef {
    kpi: "ces",
    metric: "kpi_ces_mean",
    help: "Customer effort score in the window: mean score on the 1-7 scale (7 = easy)",
    components: &[
        ComponentDef {
            name: "score_sum",
            metric: "kpi_ces_score_sum",
            help: "Sum of CES scores in the window",
        },
        CES_RESPONSES,
    ],
};

pub const CES_EASY: KpiDef = KpiDef {
    kpi: "ces_easy",
    metric: "kpi_ces_easy_ratio",
    help: "Share of CES responses scoring 5 or more in the window",
    components: &[
        ComponentDef {
            name: "easy",
            metric: "kpi_ces_easy",
            help: "CES responses scoring 5-7 in the window",
        },
        CES_RESPONSES,
    ],
};

pub const TICKETS_OPENED: KpiDef = KpiDef {
    kpi: "tickets_opened",
    metric: "kpi_tickets_opened",
    help: "ticket.opened events in the window",
    components: &[],
};

pub const TICKETS_REOPENED: KpiDef = KpiDef {
    kpi: "tickets_reopened",
    metric: "kpi_tickets_reopened",
    help: "ticket.reopened events in the window",
    components: &[],
};

pub const TICKETS_RESOLVED: KpiDef = KpiDef {
    kpi: "tickets_resolved",
    metric: "kpi_tickets_resolved",
    help: "ticket.resolved events in the window",
    components: &[],
};

pub const FCR: KpiDef = KpiDef {
    kpi: "fcr",
    metric: "kpi_fcr_ratio",
    help: "First-contact resolution in the window: resolutions with at most one agent reply and no reopen / resolutions",
    components: &[
        ComponentDef {
            name: "first_contact",
            metric: "kpi_fcr_first_contact_resolutions",
            help: "Resolutions with at most one agent reply and no reopen in the window",
        },
        ComponentDef {
            name: "resolutions",
            metric: "kpi_fcr_resolutions",
            help: "Resolutions in the window",
        },
    ],
};

/// Every KPI the service computes.
pub const KPIS: [&KpiDef; 8] = [
    &NPS,
    &CSAT,
    &CES,
    &CES_EASY,
    &TICKETS_OPENED,
    &TICKETS_REOPENED,
    &TICKETS_RESOLVED,
    &FCR,
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
    /// Values of `def.components`, in order.
    pub components: Vec<f64>,
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

    /// The JSON object published on the output topic and served by `GET /kpis`.
    pub fn to_json(&self, emitted_at_ms: i64) -> Value {
        let mut labels = Map::new();
        if let Some((name, value)) = &self.dimension {
            labels.insert(name.clone(), Value::from(value.as_str()));
        }
        let components: Map<String, Value> = self
            .def
            .components
            .iter()
            .zip(&self.components)
            .map(|(c, v)| (c.name.to_owned(), number(*v)))
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
pub fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
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
            components: vec![2.0, 1.0, 1.0, 4.0],
            window_start_ms: 0,
            window_end_ms: 3_600_000,
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
        let json = record(Some(("segment", "smb")), Some(25.0)).to_json(3_600_500);
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
        assert_eq!(record(None, None).to_json(0)["value"], Value::Null);
        assert_eq!(record(None, Some(33.5)).to_json(0)["value"], json!(33.5));
    }
}
