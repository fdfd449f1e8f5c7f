//! Test harness shared by every integration test: throwaway PostgreSQL clusters, one fresh
//! database per test, a runner for the `partkeeper` binary, and deadline-bound polling.
//!
//! Logs stay quiet unless `TEST_LOG` is set in the environment.

// Each test module uses a different subset of the harness; unused helpers are not dead.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod cluster;
pub mod database;
pub mod eventually;
pub mod fixtures;
pub mod http;
pub mod pgbouncer;
pub mod prometheus;
pub mod proxy;
pub mod replica;
pub mod server;
pub mod tls;
pub mod writer;

pub use cli::{Cli, Daemon, Output};
pub use cluster::{shared, Builder, Cluster};
pub use database::TestDb;
pub use eventually::{eventually, PATIENCE};
pub use proxy::Proxy;
pub use server::{partman_installed, pg_bin_dir, pg_major};
pub use writer::Writer;

use std::future::Future;

/// Whether the developer asked for harness and server chatter (`TEST_LOG=1 cargo test`).
pub fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some()
}

/// Prints a harness progress line, only when `TEST_LOG` is set.
pub(crate) fn note(message: impl std::fmt::Display) {
    if test_log() {
        eprintln!("[harness] {message}");
    }
}

/// Runs the future made by `make` to completion on a fresh thread with its own runtime.
///
/// Synchronous verbs (and `Drop`) sometimes need SQL; running it on a separate thread works
/// whether or not the caller is itself inside a tokio runtime, where `block_on` would panic.
/// The future is made on that thread, so it need not be `Send`.
pub(crate) fn block_on<M, F>(make: M) -> F::Output
where
    M: FnOnce() -> F + Send,
    F: Future,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a tokio runtime for the harness")
                .block_on(make())
        });
        match handle.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
