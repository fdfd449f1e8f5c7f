//! A TCP proxy between `partkeeper` and a cluster, for network fault tests: it forwards bytes both
//! ways until told to [`stall`](Proxy::stall) (sockets stay open, nothing moves: a frozen network
//! path or a hung server), or to [`cut`](Proxy::cut) (every connection closed, new ones closed as
//! soon as they arrive: a dead server or a firewall reset), and [`resume`](Proxy::resume)s.
//!
//! It runs on a thread of its own with its own runtime, so that it keeps forwarding whatever the
//! test's runtime is doing (a current-thread `#[tokio::test]` blocked in a synchronous wait would
//! otherwise freeze the proxy too).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::note;

/// Bytes read from one side before they are written to the other.
const BUFFER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
    Cut,
}

/// A running proxy on `127.0.0.1:<port>`; stops (closing every connection) when dropped.
pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("build the proxy's runtime");
        // Bound with std and handed over: `block_on` would panic inside the test's runtime.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy to a free port");
        let port = listener.local_addr().expect("the proxy's address").port();
        listener
            .set_nonblocking(true)
            .expect("make the proxy's listener non-blocking");
        let listener = {
            let _in_runtime = runtime.enter();
            TcpListener::from_std(listener).expect("register the proxy's listener")
        };
        let (mode, watcher) = watch::channel(Mode::Forward);
        let accepted = Arc::new(AtomicUsize::new(0));
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        runtime.spawn(accept_loop(
            listener,
            upstream,
            watcher,
            Arc::clone(&accepted),
        ));
        note(format_args!("proxy 127.0.0.1:{port} -> {upstream}"));
        Proxy {
            port,
            mode,
            accepted,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (any `postgres://...@127.0.0.1:<port>/...`) with its port replaced by the proxy's.
    pub fn route(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("a URL to route through the proxy");
        parsed
            .set_port(Some(self.port))
            .expect("the URL takes a port");
        parsed.to_string()
    }

    /// Stops moving bytes in both directions; connections stay open and new ones are accepted
    /// but get no answer.
    pub fn stall(&self) {
        note(format_args!("proxy {}: stall", self.port));
        self.mode.send_replace(Mode::Stall);
    }

    /// Closes every connection, and every new one as soon as it is accepted, until [`resume`].
    ///
    /// [`resume`]: Proxy::resume
    pub fn cut(&self) {
        note(format_args!("proxy {}: cut", self.port));
        self.mode.send_replace(Mode::Cut);
    }

    /// Forwards again: stalled bytes flow on; after a cut, new connections work.
    pub fn resume(&self) {
        note(format_args!("proxy {}: resume", self.port));
        self.mode.send_replace(Mode::Forward);
    }

    /// Connections accepted so far (including ones closed by a cut).
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Drops every task, and with them the sockets.
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        if *mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

/// One client connection: its upstream connection and the two pumps, until either side closes or
/// a cut comes.
async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let mut pumps = mode.clone();
    let forward = async move {
        // A stalled proxy does not even reach the server: connecting is part of the silence.
        if !flowing(&mut pumps).await {
            return;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::select! {
            _ = pump(client_read, server_write, pumps.clone()) => {}
            _ = pump(server_read, client_write, pumps) => {}
        }
    };
    tokio::select! {
        _ = forward => {}
        _ = mode.wait_for(|m| *m == Mode::Cut) => {}
    }
    // Returning drops both sockets: the peers see the connection closed.
}

/// Copies bytes from `from` to `to`, holding them while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a stall are held until resume, like everything after them.
        if !flowing(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while the proxy is stalled; `false` once it is cut.
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Stall).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}
