//! HTTP endpoints: `/metrics`, `/kpis`, `/customers/{id}`, `/healthz`, `/readyz`.
//!
//! The handlers only read: the Prometheus registry (thread-safe) and the [`ServedState`] the
//! consume loop publishes, so serving never waits on consumption.
//!
//! Every endpoint is a GET without a body. What the server refuses, how many connections
//! it keeps and for how long, TLS and basic authentication are in [`server`]; the
//! certificate files in [`tls`], the password check in [`auth`].

pub mod auth;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use serde_json::json;

use crate::customer_health::{HealthView, Lookup};
use crate::metrics::{self, Metrics};

pub use server::Server;
pub use tls::check_tls_files;

/// What the HTTP endpoints serve from the consume loop: readiness and the current KPI records
/// as JSON. The loop writes it; the handlers only read it, so serving never waits on
/// consumption.
#[derive(Debug)]
pub struct ServedState {
    /// Every assigned partition has reached the end offset seen when it was assigned.
    pub caught_up: AtomicBool,
    /// The consumer reaches at least one broker.
    pub broker_up: AtomicBool,
    /// An input partition has been paused for longer than `kafka.max_pause`: the KPIs no
    /// longer follow its newer events.
    pub paused_too_long: AtomicBool,
    /// Rendered `GET /kpis` body, the global values; empty until they are first complete.
    pub kpis: watch::Sender<Arc<Vec<u8>>>,
    /// The customers this instance owns, for `GET /customers/{id}`.
    pub customers: Arc<HealthView>,
}

impl ServedState {
    pub fn new(customers: Arc<HealthView>) -> Self {
        ServedState {
            customers,
            caught_up: AtomicBool::new(false),
            broker_up: AtomicBool::new(true),
            paused_too_long: AtomicBool::new(false),
            kpis: watch::Sender::new(Arc::new(Vec::new())),
        }
    }

    pub fn ready(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
            && self.broker_up.load(Ordering::Relaxed)
            && !self.paused_too_long.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    status: Arc<ServedState>,
}

/// Every endpoint.
pub fn router(metrics: Arc<Metrics>, status: Arc<ServedState>) -> Router {
    probe_router()
        .route("/metrics", get(serve_metrics))
        .route("/kpis", get(serve_kpis))
        .route("/customers/{id}", get(serve_customer))
        .with_state(Shared { metrics, status })
}

/// The endpoints of the probe listener: liveness and readiness only.
pub fn probes(metrics: Arc<Metrics>, status: Arc<ServedState>) -> Router {
    probe_router().with_state(Shared { metrics, status })
}

fn probe_router() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(serve_readyz))
}

async fn serve_metrics(State(shared): State<Shared>) -> Response {
    match shared.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn serve_kpis(State(shared): State<Shared>) -> Response {
    let body = shared.status.kpis.borrow().clone();
    if body.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"not caught up yet\"}",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.as_ref().clone(),
    )
        .into_response()
}

/// A customer's health, on the instance that owns it; elsewhere, where it is.
async fn serve_customer(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let customers = &shared.status.customers;
    let topic = customers.topic();
    let (status, body) = match customers.lookup(&id) {
        Lookup::Found(body) => (StatusCode::OK, body),
        Lookup::Off => (
            StatusCode::NOT_FOUND,
            error_body(json!({"error": "customer health is off (health.enabled = false)"})),
        ),
        Lookup::NotYetKnown => (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(json!({"error": format!("the partitions of {topic} are not known yet")})),
        ),
        Lookup::Restoring { partition } => (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(json!({
                "error": format!("this instance owns customer {id:?} and is still restoring partition {partition} of {topic}"),
                "topic": topic,
                "partition": partition,
            })),
        ),
        Lookup::NoScore { partition } => (
            StatusCode::NOT_FOUND,
            error_body(json!({
                "error": format!("no score of customer {id:?}: this instance owns partition {partition} of {topic} and holds no signal of it with a weight"),
                "topic": topic,
                "partition": partition,
            })),
        ),
        Lookup::Elsewhere { partition } => (
            StatusCode::NOT_FOUND,
            error_body(json!({
                "error": format!("customer {id:?} is owned by another instance: the owner of partition {partition} of {topic} in group {}", customers.group()),
                "topic": topic,
                "partition": partition,
            })),
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_body(value: serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

async fn serve_readyz(State(shared): State<Shared>) -> Response {
    let status = &shared.status;
    if status.ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let why = if !status.broker_up.load(std::sync::atomic::Ordering::Relaxed) {
        "no broker reachable\n"
    } else if status
        .paused_too_long
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        "input partitions paused longer than kafka.max_pause: dead letters cannot be delivered\n"
    } else {
        "replaying input partitions\n"
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}
