//! The one integration test binary: every module below is a group of tests; they share the
//! harness in `common` and run in parallel in one process.

mod bad_input;
mod bench_command;
mod benchmarks;
mod calendar;
mod check;
mod common;
mod daemon;
mod default_partition;
mod demo;
mod deploy;
mod faults;
mod fleet;
mod fleet_cli;
mod harness;
mod identifiers;
mod keys;
mod lifecycle;
mod live_prometheus;
mod locks;
mod maintain;
mod migrate;
mod migrate_copy;
mod poolers;
mod shipped_config;
mod web_config;
mod writes_during_maintain;
