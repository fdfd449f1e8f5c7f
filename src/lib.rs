//! partkeeper: keeps PostgreSQL range-partitioned tables healthy.
