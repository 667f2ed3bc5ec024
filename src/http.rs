//! HTTP endpoints: `/metrics`, `/kpis`, `/healthz`, `/readyz`.
//!
//! The handlers only read: the Prometheus registry (thread-safe) and the [`Status`] the
//! consume loop publishes, so serving never waits on consumption.
//!
//! Every endpoint is a GET without a body, so the server refuses anything else early: a
//! request body over 1 KiB is answered 413, another method 405, and a request that takes
//! more than 10 s is answered 408. Malformed requests and oversized headers are refused by
//! the HTTP parser (400, 431).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::{self, Metrics};
use crate::pipeline::Status;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    status: Arc<Status>,
}

pub fn router(metrics: Arc<Metrics>, status: Arc<Status>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/kpis", get(serve_kpis))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(serve_readyz))
        .with_state(Shared { metrics, status })
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, status))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
