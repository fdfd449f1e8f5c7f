//! The HTTP side of `partkeeper run`: `/healthz`, `/readyz`, `/metrics`, `/status`. Handlers read
//! shared state and the latest snapshot only; none of them touches the database, so a slow or
//! dead database never makes a scrape or a probe hang. `app` returns the router without a
//! server, so tests call it directly.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;

use super::Shared;

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn app(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// 200 while the process is alive and its scheduler ticks.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.liveness(Utc::now()) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// 200 when the primary answered the last heartbeat; 503 with a reason (never the URL).
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.readiness(Utc::now()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        shared.metrics.render(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status(Utc::now())).into_response()
}
