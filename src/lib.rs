//! partkeeper: keeps PostgreSQL range-partitioned tables healthy. The binary is a thin shell
//! over these modules, so tests drive the same code the binary runs.
pub mod bench;
pub mod bounds;
pub mod calendar;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod coverage;
pub mod daemon;
pub mod ddl;
pub mod default_partition;
pub mod demo;
pub mod drain;
pub mod error;
pub mod execute;
pub mod ident;
pub mod logging;
pub mod maintain;
pub mod metrics;
pub mod migrate;
pub mod pg;
pub mod plan;
pub mod replication;
pub mod secret;
pub mod throwaway;
