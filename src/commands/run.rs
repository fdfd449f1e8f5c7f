//! `partkeeper run`: the daemon (see `daemon`), listening on `server.listen` until SIGTERM or
//! SIGINT, then stopping cleanly with exit code 0. `--web.config.file` (else
//! `server.web_config_file`) adds TLS and basic auth; a bad one exits 2 before listening.

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::RunArgs;
use crate::config::{ConfigError, Fleet, ServerConfig};
use crate::daemon::web_config::{self, WebSecurity};
use crate::error::{Error, Result};

pub async fn run(fleet: Fleet, args: RunArgs) -> Result<i32> {
    let web = load_web_config(&fleet.server, &args)?;
    let addr = fleet.server.listen;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(ConfigError::Invalid(vec![format!(
            "server.listen = \"{addr}\": cannot listen there ({e}); choose a free address \
             (or set PARTKEEPER__SERVER__LISTEN)"
        )]))
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            return Err(Error::Failed(format!(
                "cannot install the signal handlers: {e}"
            )))
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %local,
        databases = %fleet.names().join(","),
        tables = fleet.databases.iter().map(|d| d.tables.len()).sum::<usize>(),
        replicas = fleet.databases.iter().map(|d| d.replicas.len()).sum::<usize>(),
        "partkeeper daemon listening"
    );
    tracing::info!(http = %web.summary, "web configuration");
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    crate::daemon::run_secured(fleet, listener, web, stop).await?;
    Ok(0)
}

/// The web configuration named by `--web.config.file` or `server.web_config_file`, if any.
pub fn load_web_config(server: &ServerConfig, args: &RunArgs) -> Result<WebSecurity> {
    let (key, path) = match (&args.web_config_file, &server.web_config_file) {
        (Some(p), _) => ("--web.config.file", p),
        (None, Some(p)) => ("server.web_config_file", p),
        (None, None) => return Ok(WebSecurity::none()),
    };
    web_config::load(path).map_err(|e| {
        Error::Config(ConfigError::Invalid(vec![format!(
            "{key} {}: {e}",
            path.display()
        )]))
    })
}
