//! partkeeper: keeps PostgreSQL range-partitioned tables healthy.
pub mod bounds;
pub mod calendar;
