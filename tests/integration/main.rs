//! The one integration test binary: every module below is a group of tests; they share the
//! harness in `common` and run in parallel in one process.

mod bench;
mod common;
mod deploy;
mod harness;
mod shipped_config;
