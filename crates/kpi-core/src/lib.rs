//! The pure core of kpi-stream: everything that decides a KPI's value, with no I/O and no
//! clock reads (`now` is always an argument), so that most tests need no broker and Cargo
//! itself keeps the Kafka, HTTP and Prometheus crates out.
//!
//! # Layout
//!
//! - [`event`]: the event contract v1, parsing and validation with reason codes.
//! - [`window`]: rolling windows as rings of mergeable time buckets.
//! - [`calendar`]: calendar periods (day, week, month, quarter, year) in the company's time
//!   zone: their windows, local day and month buckets and DST-correct boundaries.
//! - [`survey`]: NPS, CSAT and CES tallies, the share of answers with a comment, and their
//!   formulas.
//! - [`ticket`]: ticket counts, first-contact resolution, resolution and first reply time,
//!   one-touch and reopen rates.
//! - [`sla`]: SLA targets per priority and the achieved and breached counts.
//! - [`backlog`]: the open tickets now, by priority and age, at risk and breached.
//! - [`billing`]: the MRR ledger, movements and revenue KPIs.
//! - [`trial`]: each billing partition's pending trials, converted or expired by its own
//!   event time.
//! - [`rates`]: conversion rates into the base currency, fixed and over time, and the
//!   messages of the rates topic.
//! - [`open_tickets`]: each partition's open tickets, and the first reply of each.
//! - [`dimension`]: dimension values interned under a cap.
//! - [`health`]: the customer health model: signals mapped to 0-100, weighted, banded.
//! - [`dedup`]: duplicate detection by `event_id` within a horizon of event time.
//! - [`partition`]: the input partition, the unit of state.
//! - [`period_components`]: one partition's components for one calendar period, as the
//!   periods topic keeps them.
//! - [`aggregate`]: per-partition windowed state and the merged KPI snapshot.
//! - [`components`]: per-partition KPI components, their merge and the records computed
//!   from them; the same path for one instance's values and the global ones.
//! - [`history`]: the live core replayed at past instants (`kpi-stream history`).
//! - [`kpi`]: the published record shape shared by /metrics, /kpis and the output topic.
//! - [`policy`]: the consume loop's decisions: replay start, what an outcome reports, the
//!   safe commit offset, the publisher, full snapshots and changed values.

pub mod aggregate;
pub mod backlog;
pub mod billing;
pub mod calendar;
pub mod components;
pub mod dedup;
pub mod dimension;
pub mod event;
pub mod health;
pub mod history;
pub mod kpi;
pub mod open_tickets;
pub mod partition;
pub mod period_components;
pub mod policy;
pub mod rates;
pub mod sla;
pub mod survey;
pub mod ticket;
pub mod trial;
pub mod window;
