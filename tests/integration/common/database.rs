//! One fresh database per test, and SQL helpers for test setup (sqlx, no `psql`).
//!
//! Every helper opens its own connection: connections and pools belong to the tokio runtime that
//! made them, and each `#[tokio::test]` has its own runtime, so nothing here is cached across tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Decode, PgConnection, Postgres, Type};

use super::cluster::Cluster;
use super::server::pg_major;
use super::{block_on, note};

/// A connection attempt fails after this long instead of hanging the test.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest database name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME_LEN: usize = 63;

/// Pool size for [`TestDb::pool`]: enough for concurrent writers in a test, small enough that
/// parallel tests stay well under the cluster's `max_connections`.
const POOL_SIZE: u32 = 5;

/// Database names are unique within the process: a counter plus the test's name, for reading logs.
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// A database created for one test. Dropping it drops the database (unless the test panicked).
pub struct TestDb {
    name: String,
    port: u16,
}

impl Cluster {
    /// Creates a fresh, empty database with a unique name.
    pub async fn create_database(&self) -> TestDb {
        let name = unique_name();
        // FILE_COPY copies the template's files instead of writing them all to the WAL (the PG 15
        // default), which is several times faster with fsync off.
        let strategy = if pg_major() >= 15 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        self.exec("postgres", &format!("CREATE DATABASE \"{name}\"{strategy}"))
            .await;
        note(format_args!("database {name} on port {}", self.port));
        TestDb {
            name,
            port: self.port,
        }
    }

    /// Options for connecting to `db` as the superuser `postgres`, ignoring `PG*` variables.
    pub fn connect_options(&self, db: &str) -> PgConnectOptions {
        connect_options(self.port, db)
    }

    pub async fn connect(&self, db: &str) -> PgConnection {
        connect(self.port, db).await
    }

    /// Runs one or more `;`-separated statements; panics with the SQL on error.
    pub async fn exec(&self, db: &str, sql: &str) {
        exec(self.port, db, sql).await
    }

    /// The single value of a one-row, one-column query; panics with the SQL on error.
    pub async fn query_scalar<T>(&self, db: &str, sql: &str) -> T
    where
        T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    {
        query_scalar(self.port, db, sql).await
    }

    /// Like [`Cluster::query_scalar`] but returns the error: for polling a server that may be
    /// down or still starting.
    pub async fn try_query_scalar<T>(&self, db: &str, sql: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    {
        try_query_scalar(self.port, db, sql).await
    }
}

impl TestDb {
    /// A session that has run `sql` inside a transaction it keeps open (holding the locks `sql`
    /// took) until it is committed, rolled back or dropped.
    pub async fn hold(&self, sql: &str) -> PgConnection {
        let mut conn = self.connect().await;
        sqlx::raw_sql(&format!("BEGIN; {sql}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn
    }

    /// partkeeper's sessions in this database that wait for a lock (the harness's own excluded).
    pub async fn partkeeper_lock_waits(&self) -> i64 {
        self.try_query_scalar::<i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'partkeeper'
                AND wait_event_type = 'Lock'",
        )
        .await
        .unwrap_or(0)
    }

    /// Waits (up to [`super::PATIENCE`]) until a partkeeper session of this database waits for
    /// a lock: a pass or a command has reached the lock a test holds.
    pub async fn until_partkeeper_waits_for_a_lock(&self) {
        super::eventually(
            super::PATIENCE,
            "a partkeeper session to wait for the lock",
            || async { self.partkeeper_lock_waits().await > 0 },
        )
        .await;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME`, for `DATABASE_URL` or a config file.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        connect_options(self.port, &self.name)
    }

    pub async fn connect(&self) -> PgConnection {
        connect(self.port, &self.name).await
    }

    /// A small pool, for tests that write from several tasks at once.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(self.connect_options())
            .await
            .unwrap_or_else(|e| panic!("connect a pool to {}: {e}", self.url()))
    }

    pub async fn exec(&self, sql: &str) {
        exec(self.port, &self.name, sql).await
    }

    pub async fn query_scalar<T>(&self, sql: &str) -> T
    where
        T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    {
        query_scalar(self.port, &self.name, sql).await
    }

    pub async fn try_query_scalar<T>(&self, sql: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
    {
        try_query_scalar(self.port, &self.name, sql).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A failed test's database is left for the post-mortem; the cluster goes away anyway.
        if std::thread::panicking() {
            return;
        }
        // Dropping keeps the shared cluster's disk use flat however many tests run. It fails
        // harmlessly when the test stopped or crashed a private cluster.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let port = self.port;
        let _ = block_on(|| async move { try_exec(port, "postgres", &sql).await });
    }
}

pub(super) fn connect_options(port: u16, db: &str) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database(db)
        .ssl_mode(PgSslMode::Disable)
        .application_name("partkeeper-harness")
        .disable_statement_logging()
}

async fn try_connect(port: u16, db: &str) -> Result<PgConnection, sqlx::Error> {
    let options = connect_options(port, db);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection to port {port} within {CONNECT_TIMEOUT:?}"),
        ))),
    }
}

async fn connect(port: u16, db: &str) -> PgConnection {
    try_connect(port, db)
        .await
        .unwrap_or_else(|e| panic!("connect to database {db} on port {port}: {e}"))
}

pub(super) async fn try_exec(port: u16, db: &str, sql: &str) -> Result<(), sqlx::Error> {
    let mut conn = try_connect(port, db).await?;
    sqlx::raw_sql(sql).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

async fn exec(port: u16, db: &str, sql: &str) {
    if let Err(e) = try_exec(port, db, sql).await {
        panic!("SQL failed in database {db} on port {port}: {e}\n{sql}");
    }
}

pub(super) async fn try_query_scalar<T>(port: u16, db: &str, sql: &str) -> Result<T, sqlx::Error>
where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
{
    let mut conn = try_connect(port, db).await?;
    let value = sqlx::query_scalar(sql).fetch_one(&mut conn).await?;
    let _ = conn.close().await;
    Ok(value)
}

async fn query_scalar<T>(port: u16, db: &str, sql: &str) -> T
where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + Send + Unpin,
{
    try_query_scalar(port, db, sql)
        .await
        .unwrap_or_else(|e| panic!("SQL failed in database {db} on port {port}: {e}\n{sql}"))
}

/// `t<counter>_<test name>`: unique in the process, and readable in server logs.
fn unique_name() -> String {
    let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread
        .name()
        .and_then(|name| name.rsplit("::").next())
        .unwrap_or("db");
    let mut name = format!("t{n}_");
    name.extend(test.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
    name.truncate(MAX_NAME_LEN);
    name
}
