//! Serving the router: plain HTTP with axum's own server, or HTTPS through axum-server's rustls
//! acceptor (handshakes bounded by its timeout), both stopping gracefully on the shutdown
//! signal; and the basic-auth layer of the web configuration.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::basic_auth::{self, BasicAuth};
use super::web_config::WebSecurity;

/// Paths that answer without credentials: probes carry none (see [`super::web_config`]).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// How long open HTTPS connections get to finish after the shutdown signal.
const TLS_GRACE: Duration = Duration::from_millis(400);

/// `router` behind basic auth for every path but [`OPEN_PATHS`] when `web` has users.
pub fn secured(router: Router, web: &WebSecurity) -> Router {
    match &web.basic_auth {
        None => router,
        Some(auth) => {
            let auth = Arc::clone(auth);
            router.layer(axum::middleware::from_fn(
                move |request: Request, next: Next| {
                    let auth = Arc::clone(&auth);
                    async move { guard(auth, request, next).await }
                },
            ))
        }
    }
}

async fn guard(auth: Arc<BasicAuth>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    basic_auth::require(axum::extract::State(auth), request, next).await
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    };
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        on_stop.graceful_shutdown(Some(TLS_GRACE));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(router.into_make_service())
        .await
}
