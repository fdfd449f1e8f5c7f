//! `partkeeper run`: the daemon (see `daemon`), listening on `server.listen` until SIGTERM or
//! SIGINT, then stopping cleanly with exit code 0.

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};

pub async fn run(cfg: Config) -> Result<i32> {
    let addr = cfg.server.listen;
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
        database = %cfg.database.url.host_label(),
        tables = cfg.tables.len(),
        replicas = cfg.replicas.len(),
        "partkeeper daemon listening"
    );
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    crate::daemon::run(cfg, listener, stop).await?;
    Ok(0)
}
