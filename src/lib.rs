//! partkeeper: keeps PostgreSQL range-partitioned tables healthy.
pub mod calendar;
