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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn shared() -> Arc<Shared> {
        let toml = r#"
[database]
url = "postgres://app:hunter2@db.internal:5432/prod"
[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
"#;
        Shared::new(crate::config::parse_str(toml, &HashMap::new()).unwrap())
    }

    async fn get(state: &Arc<Shared>, path: &str) -> (StatusCode, String, String) {
        let res = app(Arc::clone(state))
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_primary_probe_and_never_shows_the_url() {
        let s = shared();
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no connection yet"), "{body}");

        s.primary_failed(Utc::now(), "connection failed: connection refused".into());
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("connection refused"), "{body}");

        s.primary_answered(Utc::now());
        assert_eq!(get(&s, "/readyz").await.0, StatusCode::OK);

        s.primary_answered(Utc::now() - chrono::Duration::minutes(5));
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "a stale answer: {body}"
        );

        let (_, _, status) = get(&s, "/status").await;
        for shown in [body, status] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("postgres://"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn healthz_needs_a_ticking_scheduler() {
        let s = shared();
        assert_eq!(get(&s, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        s.scheduler_ticking(true);
        s.scheduler_checked(Utc::now(), Some(Utc::now() + chrono::Duration::hours(1)));
        assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
        s.scheduler_checked(Utc::now(), Some(Utc::now() - chrono::Duration::hours(1)));
        let (code, _, body) = get(&s, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stuck"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_served_without_a_database() {
        let s = shared();
        let (code, ctype, body) = get(&s, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, METRICS_CONTENT_TYPE);
        assert!(body.contains("# TYPE partkeeper_up gauge"), "{body}");
        assert!(body.contains("partkeeper_up 0"), "{body}");
        assert!(
            body.contains(
                "partkeeper_maintenance_runs_total{result=\"failure\",table=\"public.pricing_data\"} 0"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn status_is_json_with_leader_maintenance_and_tables() {
        let s = shared();
        s.set_leader(true);
        let (code, ctype, body) = get(&s, "/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["leader"], true);
        assert_eq!(
            v["maintenance"]["schedule"],
            crate::config::DEFAULT_SCHEDULE
        );
        assert!(v["tables"].is_array() && v["replicas"].is_array(), "{v}");
    }
}
