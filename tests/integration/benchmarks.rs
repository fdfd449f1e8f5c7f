//! Benchmarks: `#[ignore]`d tests that measure and print figures (they assert only that the
//! work was done, never a speed). Each module's header has its command; all of them at once:
//!
//! ```text
//! cargo test --release --test integration benchmarks:: -- --ignored --nocapture --test-threads 1
//! ```
//!
//! The tests of the `partkeeper bench` command itself are in `bench_command`.

mod daemon;
mod keys;
mod maintain;
mod migrate;
mod soak;
