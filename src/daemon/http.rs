//! The HTTP side of `partkeeper run`: `/healthz`, `/readyz`, `/metrics`, `/status`. Handlers read
//! shared state and the latest snapshot only; none of them touches the database, so a slow or
//! dead database never makes a scrape or a probe hang. `app` returns the router without a
//! server, so tests call it directly.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;

use super::state::Daemon;

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn app(state: Arc<Daemon>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// 200 while the process is alive and the scheduler of every database ticks.
async fn healthz(State(daemon): State<Arc<Daemon>>) -> Response {
    match daemon.liveness(Utc::now()) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

#[derive(Deserialize)]
struct ReadyQuery {
    database: Option<String>,
}

/// 200 when at least one database's primary answered its last heartbeat (with
/// `?database=NAME`: that database's), 503 otherwise; the body gives each database's state or
/// reason (never a URL). 404 for a database that is not configured.
async fn readyz(State(daemon): State<Arc<Daemon>>, Query(q): Query<ReadyQuery>) -> Response {
    let now = Utc::now();
    if let Some(name) = q.database {
        return match daemon.find(&name) {
            None => (
                StatusCode::NOT_FOUND,
                format!("no database named {name:?} is configured\n"),
            )
                .into_response(),
            Some(db) => match db.readiness(now) {
                Ok(()) => (StatusCode::OK, "ready\n").into_response(),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
            },
        };
    }
    let r = daemon.readiness(now);
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, r.body(&daemon)).into_response()
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        daemon.metrics.render(),
    )
        .into_response()
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Response {
    let now = Utc::now();
    let databases = daemon.database_statuses(now);
    Json(daemon.status(now, &databases)).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::daemon::DbState;

    const PART1: &str = r#"
[database]
url = "postgres://app:hunter2@db.internal:5432/prod"
[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
"#;

    const FLEET: &str = r#"
[[databases]]
name = "billing"
url = "postgres://app:hunter2@db-a:5432/billing"
[[databases.tables]]
name = "public.invoices"
column = "created_at"
interval = "1 month"

[[databases]]
name = "events"
url = "postgres://app:hunter2@db-b:5432/events"
[[databases.tables]]
name = "public.events"
column = "at"
interval = "1 day"
"#;

    fn daemon(toml: &str) -> Arc<Daemon> {
        Daemon::new(crate::config::parse_fleet(toml, &HashMap::new()).unwrap())
    }

    fn only(d: &Daemon) -> &Arc<DbState> {
        &d.databases[0]
    }

    async fn get(state: &Arc<Daemon>, path: &str) -> (StatusCode, String, String) {
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
        let s = daemon(PART1);
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no connection yet"), "{body}");

        only(&s).primary_failed(Utc::now(), "connection failed: connection refused".into());
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("connection refused"), "{body}");

        only(&s).primary_answered(Utc::now());
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, "ready\n"));

        only(&s).primary_answered(Utc::now() - chrono::Duration::minutes(5));
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
        let s = daemon(PART1);
        assert_eq!(get(&s, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        only(&s).scheduler_ticking(true);
        only(&s).scheduler_checked(Utc::now(), Some(Utc::now() + chrono::Duration::hours(1)));
        assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
        only(&s).scheduler_checked(Utc::now(), Some(Utc::now() - chrono::Duration::hours(1)));
        let (code, _, body) = get(&s, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stuck"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_served_without_a_database() {
        let s = daemon(PART1);
        let (code, ctype, body) = get(&s, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, METRICS_CONTENT_TYPE);
        assert!(body.contains("# TYPE partkeeper_up gauge"), "{body}");
        assert!(
            body.contains("partkeeper_up{database=\"prod\"} 0"),
            "{body}"
        );
        assert!(
            body.contains(
                "partkeeper_maintenance_runs_total{database=\"prod\",result=\"failure\",table=\"public.pricing_data\"} 0"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn status_is_json_with_leader_maintenance_and_tables() {
        let s = daemon(PART1);
        only(&s).set_leader(true);
        let (code, ctype, body) = get(&s, "/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The part 1 form keeps its top-level fields, and has them under `databases` too.
        for v in [&v, &v["databases"][0]] {
            assert_eq!(v["leader"], true, "{v}");
            assert_eq!(
                v["maintenance"]["schedule"],
                crate::config::DEFAULT_SCHEDULE
            );
            assert!(v["tables"].is_array() && v["replicas"].is_array(), "{v}");
        }
        assert_eq!(v["databases"][0]["name"], "prod");
        assert_eq!(v["databases"].as_array().unwrap().len(), 1);
    }

    /// Issue 13: ready while one database answers; each named; `?database=` answers for one.
    #[tokio::test]
    async fn readyz_of_a_fleet_needs_one_database_and_names_each() {
        let s = daemon(FLEET);
        let (billing, events) = (&s.databases[0], &s.databases[1]);
        assert_eq!(get(&s, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        events.primary_failed(Utc::now(), "connection failed: connection refused".into());
        billing.primary_answered(Utc::now());
        let (code, _, body) = get(&s, "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.contains("billing: ready\n"), "{body}");
        assert!(
            body.contains("events: the primary database does not answer: connection failed"),
            "{body}"
        );
        assert!(!body.contains("hunter2") && !body.contains("postgres://"));
        assert_eq!(get(&s, "/readyz?database=billing").await.0, StatusCode::OK);
        let (code, _, body) = get(&s, "/readyz?database=events").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("connection refused"), "{body}");
        let (code, _, body) = get(&s, "/readyz?database=nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.contains("nope"), "{body}");
        billing.primary_failed(Utc::now(), "connection failed: timeout".into());
        assert_eq!(get(&s, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Issue 13: `/status` of a fleet is grouped by database and has no single top level;
    /// `/healthz` names the database whose scheduler does not tick.
    #[tokio::test]
    async fn status_of_a_fleet_is_grouped_by_database() {
        let s = daemon(FLEET);
        s.databases[1].set_leader(true);
        let (_, _, body) = get(&s, "/status").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let dbs = v["databases"].as_array().unwrap();
        let names: Vec<_> = dbs.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["billing", "events"]);
        assert_eq!(dbs[0]["leader"], false);
        assert_eq!(dbs[1]["leader"], true);
        assert_eq!(
            dbs[1]["maintenance"]["schedule"],
            crate::config::DEFAULT_SCHEDULE
        );
        assert!(
            v.get("leader").is_none() && v.get("tables").is_none(),
            "{v}"
        );

        s.databases[0].scheduler_ticking(true);
        s.databases[0].scheduler_checked(Utc::now(), None);
        let (code, _, body) = get(&s, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("events: "), "{body}");
        s.databases[1].scheduler_ticking(true);
        s.databases[1].scheduler_checked(Utc::now(), None);
        assert_eq!(get(&s, "/healthz").await.0, StatusCode::OK);
    }
}
