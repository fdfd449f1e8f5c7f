//! The one integration test binary: every module below is a group of tests; they share the
//! harness in `common` and run in parallel in one process.

mod common;
mod harness;
mod migrate;
mod migrate_bench;
