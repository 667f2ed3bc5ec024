//! kpi-stream turns customer-success events on Kafka (survey answers, support tickets,
//! subscription billing) into live KPIs, served to Prometheus and published on a topic.
//!
//! # Layout
//!
//! The pure core (no I/O, no clock reads; `now` is an argument):
//! - [`event`]: the event contract v1, parsing and validation with reason codes.
//! - [`window`]: rolling windows as rings of mergeable time buckets.
//! - [`survey`]: NPS, CSAT and CES tallies and their formulas.
//! - [`ticket`]: ticket counts, first-contact resolution and resolution time.
//! - [`billing`]: the MRR ledger, movements and revenue KPIs.
//! - [`dimension`]: dimension values interned under a cap.
//! - [`dedup`]: duplicate detection by `event_id` within a horizon of event time.
//! - [`aggregate`]: per-partition windowed state and the merged KPI snapshot.
//! - [`components`]: per-partition KPI components, their merge and the records computed
//!   from them; the same path for one instance's values and the global ones.
//! - [`kpi`]: the published record shape shared by /metrics, /kpis and the output topic.
//!
//! The adapters around it:
//! - [`config`]: the TOML file and environment overrides.
//! - [`metrics`]: the Prometheus registry.
//! - [`pipeline`]: the Kafka consume-process-publish loop and replay on assignment.
//! - [`deadletter`]: dead-letter delivery, retried until acknowledged.
//! - [`exchange`]: components shared between instances over a compacted topic.
//! - [`http`]: the HTTP endpoints and their server: connection limits, timeouts, TLS and
//!   basic authentication.
//! - [`app`]: wiring and shutdown; [`generate`]: synthetic events.

pub mod aggregate;
pub mod app;
pub mod billing;
pub mod components;
pub mod config;
pub mod deadletter;
pub mod dedup;
pub mod dimension;
pub mod event;
pub mod exchange;
pub mod generate;
pub mod http;
pub mod kpi;
pub mod metrics;
pub mod pipeline;
pub mod survey;
pub mod ticket;
pub mod window;
