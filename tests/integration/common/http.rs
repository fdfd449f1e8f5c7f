//! Talking to a daemon under test: start `partkeeper run`, learn its port from its log, and make
//! plain HTTP/1.0 GETs with a deadline (no client library needed).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{eventually, Cli, Daemon, PATIENCE};

/// How long one request may take before it counts as no answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A `partkeeper run` and the HTTP port it listens on (`listen = "127.0.0.1:0"` in its config).
pub struct RunningDaemon {
    pub daemon: Daemon,
    pub port: u16,
}

impl RunningDaemon {
    pub async fn start(config: &str) -> RunningDaemon {
        RunningDaemon::start_with(config, &[]).await
    }

    /// `partkeeper run <args>` (e.g. `--web.config.file PATH`).
    pub async fn start_with(config: &str, args: &[&str]) -> RunningDaemon {
        let daemon = Cli::new()
            .config(config)
            .spawn(std::iter::once("run").chain(args.iter().copied()));
        let port = std::cell::Cell::new(None);
        {
            let (d, port) = (&daemon, &port);
            eventually(PATIENCE, "the daemon to log its listening address", || {
                port.set(listen_port(&d.stderr()));
                async move { port.get().is_some() }
            })
            .await;
        }
        let port = port.get().expect("checked above");
        RunningDaemon { daemon, port }
    }

    pub fn pid(&self) -> i32 {
        self.daemon.pid().as_raw()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).await
    }
}

/// The port in the daemon's "listening" log line.
pub fn listen_port(log: &str) -> Option<u16> {
    let at = log.find("listen=127.0.0.1:")? + "listen=127.0.0.1:".len();
    log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Status and body, `None` when there is no answer within [`HTTP_TIMEOUT`].
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_within(port, path, HTTP_TIMEOUT).await
}

pub async fn http_get_within(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// The body of a 200 answer.
pub async fn http_ok_body(port: u16, path: &str, timeout: Duration) -> Option<String> {
    match http_get_within(port, path, timeout).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// The value of the series `name` in the scrape of a one-database daemon, whatever its labels
/// (`database` since issue 13): `name{database="app"} 1` and `name 1` both give 1.
pub fn single_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = match rest.strip_prefix('{') {
            Some(labels) => labels.split_once("} ")?.1,
            None => rest.strip_prefix(' ')?,
        };
        value.trim().parse().ok()
    })
}
