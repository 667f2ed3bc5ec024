//! kpi-stream turns customer-success events on Kafka (survey answers, support tickets,
//! subscription billing) into live KPIs, served to Prometheus and published on a topic.
//!
//! # Layout
//!
//! The pure core is its own crate, [`kpi_core`]: the event contract, windows, tallies and
//! formulas, the MRR ledger, per-partition state and its components. This crate holds the
//! adapters around it:
//! - [`config`]: the TOML file and environment overrides.
//! - [`metrics`]: the Prometheus registry.
//! - [`pipeline`]: the Kafka consume-process-publish loop and replay on assignment.
//! - [`deadletter`]: dead-letter delivery, retried until acknowledged.
//! - [`kafka`]: the settings and context of every Kafka client, errors logged once per kind
//!   a minute.
//! - [`exchange`]: components shared between instances over a compacted topic.
//! - [`rates`]: the rates topic, read whole before any billing event and then followed.
//! - [`http`]: the HTTP endpoints and their server: connection limits, timeouts, TLS and
//!   basic authentication.
//! - [`app`]: wiring and shutdown; [`clock`]: the wall clock; [`generate`]: synthetic
//!   events.

pub mod app;
pub mod clock;
pub mod config;
pub mod customer_health;
pub mod customer_signals;
pub mod deadletter;
pub mod exchange;
pub mod generate;
pub mod history;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod periods;
pub mod pipeline;
pub mod rates;
