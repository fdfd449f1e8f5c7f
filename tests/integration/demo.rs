//! `partkeeper demo`, the newcomer's first command: it must work on a fresh machine with only the
//! PostgreSQL server binaries installed, answer `/metrics` while it runs, and clean up after itself.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::{eventually, Cli};

async fn get(port: u16, path: &str) -> Option<String> {
    crate::common::http::http_ok_body(port, path, Duration::from_secs(5)).await
}

#[tokio::test]
async fn demo_runs_for_its_duration_answers_metrics_and_removes_what_it_created() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let demo = Cli::new().spawn(["demo", "--duration", "20s", "--listen", &listen]);

    // The migrated table is maintained by the daemon the demo started.
    eventually(
        Duration::from_secs(90),
        "the demo daemon's /metrics to show a leader and pricing_data's partitions",
        || async {
            get(port, "/metrics").await.is_some_and(|m| {
                // The demo's own cluster holds the database `pricing`.
                m.contains("\npartkeeper_leader{database=\"pricing\"} 1\n")
                    && m.contains(
                        "partkeeper_partitions{database=\"pricing\",table=\"public.pricing_data\"}",
                    )
            })
        },
    )
    .await;
    let out = demo.wait(Duration::from_secs(90)).await;
    out.assert_success();
    assert!(out.stdout.contains("counts and checksums match"), "{out}");
    assert!(
        out.stdout.contains("everything it created is removed"),
        "{out}"
    );
    // The HTTP server is gone with it.
    assert!(get(port, "/healthz").await.is_none());
}
