//! Connections: the session settings every partkeeper connection runs with, connecting within a
//! deadline, classifying server errors, and the backoff between lock-timeout retries (the retries
//! themselves run in the transaction runner, `tx.rs`) that keep our DDL from ever queueing in front of
//! application queries for longer than `lock_timeout`.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::{DatabaseConfig, Pooler};
use crate::secret::{scrub, SecretUrl};

/// First pause after a lock timeout; doubles each attempt up to [`MAX_BACKOFF`], with jitter so
/// two instances do not retry in lock step.
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Floor of `idle_in_transaction_session_timeout` (see [`idle_in_transaction_timeout`]): below it
/// a scheduling hiccup on a busy host could end a healthy session.
pub const MIN_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(1);

/// SQLSTATEs worth retrying: the lock could not be had in time, or we lost a deadlock.
const RETRYABLE: &[&str] = &["55P03", "40P01", "40001"];

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to PostgreSQL at {target}: {reason}. Check database.url (or DATABASE_URL), that the server is running and reachable, and the credentials")]
    Failed { target: String, reason: String },
    #[error("PostgreSQL at {target} did not answer within {timeout:?}. Check the host, port and firewall, or raise database.connect_timeout")]
    Timeout { target: String, timeout: Duration },
}

/// Session settings shared by every connection: bounds are read and written in UTC and ISO, so
/// the server's TimeZone and DateStyle never change what we parse or create.
///
/// How they reach the server depends on `database.pooler` (see the pooler module): as startup `options`
/// (direct), as `SET` right after connecting (session pooler), or `SET LOCAL` inside every
/// transaction (transaction pooler). Behind a pooler the driver also sends no
/// `extra_float_digits`, which PgBouncer rejects by default.
pub fn connect_options(
    url: &SecretUrl,
    lock_timeout: Duration,
    statement_timeout: Duration,
    pooler: Pooler,
) -> Result<PgConnectOptions, ConnectError> {
    let opts = PgConnectOptions::from_str(url.expose()).map_err(|e| ConnectError::Failed {
        target: url.host_label(),
        reason: scrub(&e.to_string(), &[url]),
    })?;
    let opts = opts
        .application_name("partkeeper")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(5));
    Ok(match pooler {
        Pooler::None => opts.options(session_settings(lock_timeout, statement_timeout)),
        Pooler::Session => opts.extra_float_digits(None),
        // No statement survives its transaction there: nothing to cache.
        Pooler::Transaction => opts.extra_float_digits(None).statement_cache_capacity(0),
    })
}

/// The settings every session runs with, in the order they are applied.
pub fn session_settings(
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Vec<(&'static str, String)> {
    vec![
        ("TimeZone", "UTC".to_string()),
        // No space: sqlx joins options as `-c k=v` separated by spaces, unescaped.
        ("DateStyle", "ISO,YMD".to_string()),
        ("IntervalStyle", "postgres".to_string()),
        // Our queries are catalog reads, DDL and key-range batches: JIT only adds its compile
        // time (the catalog query crossed jit_above_cost and took 90-106 ms instead of 43 ms).
        ("jit", "off".to_string()),
        ("lock_timeout", format!("{}ms", lock_timeout.as_millis())),
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        ),
    ]
}

/// Applies [`session_settings`] on `conn`: for the session (`local = false`, right
/// after connecting through a session pooler) or for the current transaction only. One round
/// trip; names and values are bind parameters.
pub async fn set_session(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    statement_timeout: Duration,
    local: bool,
) -> Result<(), sqlx::Error> {
    let (names, values): (Vec<&str>, Vec<String>) =
        session_settings(lock_timeout, statement_timeout)
            .into_iter()
            .unzip();
    sqlx::query("SELECT count(set_config(n, v, $3)) FROM unnest($1::text[], $2::text[]) AS s(n, v)")
        .bind(names)
        .bind(values)
        .bind(local)
        .persistent(false)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Behind a session pooler the settings cannot travel at startup: they are set once on the
/// fresh session (the pooler's `server_reset_query` clears them when we leave).
async fn after_connect(
    conn: &mut PgConnection,
    pooler: Pooler,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    if pooler == Pooler::Session {
        set_session(conn, lock_timeout, statement_timeout, false).await?;
    }
    Ok(())
}

/// A connection failure's text, with what to do when a pooler refused our startup parameters.
pub fn hint(reason: String, pooler: Pooler) -> String {
    if pooler == Pooler::None && reason.contains("unsupported startup parameter") {
        format!("{reason}. A connection pooler (PgBouncer?) is in between: set database.pooler = \"session\" or \"transaction\" (its pool_mode)")
    } else {
        reason
    }
}

/// A maintenance step sends its statements back to back, so a step idle inside its transaction
/// is cut off from us (a stalled network, a frozen client) while it may hold ACCESS EXCLUSIVE on
/// a partition. The server ends such a session (rolling the step back) after about
/// `lock_timeout`, the longest we ever let an application wait for us. Set per step
/// ([`set_local_step_timeouts`]), not per session: an offline migration sleeps between lock
/// attempts inside its one long transaction.
pub fn idle_in_transaction_timeout(lock_timeout: Duration) -> Duration {
    lock_timeout.max(MIN_IDLE_IN_TRANSACTION)
}

/// How long to wait for any answer on an open connection. The server cancels a statement at
/// `statement_timeout` and says so at once; no answer by then plus `connect_timeout` means the
/// network or the server has stalled, and waiting longer would hang the command.
pub fn reply_deadline(db: &DatabaseConfig) -> Duration {
    db.statement_timeout.saturating_add(db.connect_timeout)
}

/// `op` within `deadline` ([`reply_deadline`]); past it, an I/O error that
/// [`is_connection_lost`] recognises: the connection must not be used again.
pub async fn answered<T>(
    deadline: Duration,
    op: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(deadline, op).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from PostgreSQL within {} (statement_timeout + connect_timeout): the network or the server has stalled",
                humantime::format_duration(deadline)
            ),
        ))),
    }
}

pub fn db_options(db: &DatabaseConfig) -> Result<PgConnectOptions, ConnectError> {
    connect_options(&db.url, db.lock_timeout, db.statement_timeout, db.pooler)
}

/// One connection, within `connect_timeout`.
pub async fn connect(db: &DatabaseConfig) -> Result<PgConnection, ConnectError> {
    connect_url(
        &db.url,
        db.lock_timeout,
        db.statement_timeout,
        db.connect_timeout,
        db.pooler,
    )
    .await
}

pub async fn connect_url(
    url: &SecretUrl,
    lock_timeout: Duration,
    statement_timeout: Duration,
    connect_timeout: Duration,
    pooler: Pooler,
) -> Result<PgConnection, ConnectError> {
    let opts = connect_options(url, lock_timeout, statement_timeout, pooler)?;
    let connect = async {
        let mut c = PgConnection::connect_with(&opts).await?;
        after_connect(&mut c, pooler, lock_timeout, statement_timeout).await?;
        Ok::<_, sqlx::Error>(c)
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ConnectError::Failed {
            target: url.host_label(),
            reason: hint(scrub(&describe(&e), &[url]), pooler),
        }),
        Err(_) => Err(ConnectError::Timeout {
            target: url.host_label(),
            timeout: connect_timeout,
        }),
    }
}

/// A failure told to two audiences (as dropshot does): `external` is short and safe to show on
/// `/readyz` and `/status` (no URL, user or password); `internal` is the whole story, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub external: String,
    pub internal: String,
}

impl Failure {
    pub fn from_sqlx(e: &sqlx::Error, urls: &[&SecretUrl]) -> Failure {
        Failure {
            external: external_reason(e),
            internal: scrub(&describe(e), urls),
        }
    }

    pub fn timeout(what: &str, after: Duration) -> Failure {
        let text = format!("{what}: no answer within {after:?}");
        Failure {
            external: text.clone(),
            internal: text,
        }
    }
}

/// Like [`connect_url`], for callers that retry on their own and need both audiences' reasons.
/// `application_name` tells the daemon's sessions apart in `pg_stat_activity`.
pub async fn try_connect(
    url: &SecretUrl,
    application_name: &str,
    lock_timeout: Duration,
    statement_timeout: Duration,
    connect_timeout: Duration,
    pooler: Pooler,
) -> Result<PgConnection, Failure> {
    let opts = connect_options(url, lock_timeout, statement_timeout, pooler)
        .map_err(|e| Failure {
            external: "the database URL cannot be used".into(),
            internal: e.to_string(),
        })?
        .application_name(application_name);
    let connect = async {
        let mut c = PgConnection::connect_with(&opts).await?;
        after_connect(&mut c, pooler, lock_timeout, statement_timeout).await?;
        Ok::<_, sqlx::Error>(c)
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => {
            let mut f = Failure::from_sqlx(&e, &[url]);
            f.internal = hint(f.internal, pooler);
            Err(f)
        }
        Err(_) => Err(Failure::timeout("connect", connect_timeout)),
    }
}

/// What kind of failure, in a few words that never quote a URL, user name or password.
pub fn external_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("connection failed: {}", io.kind()),
        sqlx::Error::Tls(_) => "TLS negotiation failed".into(),
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => "connection closed".into(),
        sqlx::Error::Protocol(_) => "protocol error (is this a PostgreSQL server?)".into(),
        sqlx::Error::Database(_) => {
            let code = sqlstate(e).unwrap_or_default();
            let what = match code.as_str() {
                "28P01" | "28000" => "authentication failed",
                "3D000" => "the database does not exist",
                "57P01" | "57P02" => "the server is shutting down",
                "57P03" => "the server is starting up or shutting down",
                "53300" => "too many connections",
                "57014" => "the statement was canceled (or timed out)",
                "55P03" => "a lock was not granted in time",
                "42501" => "permission denied",
                c if c.starts_with("08") => "connection failure",
                _ => "server error",
            };
            format!("{what} [SQLSTATE {code}]")
        }
        _ => "database error".into(),
    }
}

/// A small pool (commands and the daemon need only a few connections).
pub async fn pool(db: &DatabaseConfig, max: u32) -> Result<PgPool, ConnectError> {
    let opts = db_options(db)?;
    pool_options(db)
        .max_connections(max)
        .acquire_timeout(db.connect_timeout)
        .connect_with(opts)
        .await
        .map_err(|e| ConnectError::Failed {
            target: db.url.host_label(),
            reason: scrub(&describe(&e), &[&db.url]),
        })
}

/// Pool options that apply the session settings after connecting behind a session pooler.
fn pool_options(db: &DatabaseConfig) -> PgPoolOptions {
    let (pooler, lock, statement) = (db.pooler, db.lock_timeout, db.statement_timeout);
    PgPoolOptions::new().after_connect(move |conn, _| {
        Box::pin(async move { after_connect(conn, pooler, lock, statement).await })
    })
}

/// A lazily connecting pool: the daemon starts even when the database is down.
pub fn lazy_pool(db: &DatabaseConfig, max: u32) -> Result<PgPool, ConnectError> {
    let opts = db_options(db)?;
    Ok(pool_options(db)
        .max_connections(max)
        .acquire_timeout(db.connect_timeout)
        .connect_lazy_with(opts))
}

/// The server's SQLSTATE, if the error came from the server.
pub fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether the statement failed only because a lock was not granted in time (or a deadlock).
pub fn is_retryable(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| RETRYABLE.contains(&c.as_str()))
}

/// Whether the connection itself is gone (server stopped, network cut).
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    ) || sqlstate(e).is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

/// The server's message with its SQLSTATE and detail/hint, or the driver's text.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => {
            let mut s = d.message().to_string();
            if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    s.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    s.push_str(&format!(" hint: {hint}"));
                }
            }
            match d.code() {
                Some(code) => format!("{s} [SQLSTATE {code}]"),
                None => s,
            }
        }
        other => other.to_string(),
    }
}

/// Delay before attempt `attempt` (1-based) after a retryable failure: exponential, capped,
/// with ±50 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    capped.mul_f64(0.5 + fastrand::f64())
}

/// `SET LOCAL` for both timeouts inside the current transaction, as bind parameters.
pub async fn set_local_timeouts(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
    )
    .bind(format!("{}ms", lock_timeout.as_millis()))
    .bind(format!("{}ms", statement_timeout.as_millis()))
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

/// [`set_local_timeouts`] plus `idle_in_transaction_session_timeout`
/// ([`idle_in_transaction_timeout`]), for a maintenance step's transaction: one round trip.
pub async fn set_local_step_timeouts(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true),
                set_config('idle_in_transaction_session_timeout', $3, true)",
    )
    .bind(format!("{}ms", lock_timeout.as_millis()))
    .bind(format!("{}ms", statement_timeout.as_millis()))
    .bind(format!(
        "{}ms",
        idle_in_transaction_timeout(lock_timeout).as_millis()
    ))
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

/// `server_version_num`, e.g. 150004.
pub async fn server_version(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    let v: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .persistent(false)
        .fetch_one(conn)
        .await?;
    Ok(v.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooler_refusing_startup_parameters_gets_a_hint_only_without_pooler_set() {
        let r = "unsupported startup parameter: extra_float_digits".to_string();
        assert!(hint(r.clone(), Pooler::None).contains("database.pooler"));
        assert_eq!(hint(r.clone(), Pooler::Session), r);
        assert_eq!(hint("refused".into(), Pooler::None), "refused");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..30 {
            let d = backoff(attempt);
            assert!(d <= MAX_BACKOFF.mul_f64(1.5), "{attempt}: {d:?}");
            assert!(d >= BASE_BACKOFF.mul_f64(0.5), "{attempt}: {d:?}");
        }
        // Attempt 4's floor (0.8 s) is above attempt 1's ceiling (0.3 s).
        assert!(backoff(4) > backoff(1));
    }

    #[tokio::test]
    async fn a_round_trip_past_its_deadline_counts_as_a_lost_connection() {
        let silent = std::future::pending::<Result<(), sqlx::Error>>();
        let e = answered(Duration::from_millis(10), silent)
            .await
            .unwrap_err();
        assert!(is_connection_lost(&e), "{e}");
        assert!(
            describe(&e).contains("no answer from PostgreSQL within 10ms"),
            "{e}"
        );
    }

    #[test]
    fn an_idle_transaction_of_ours_ends_after_lock_timeout_but_never_under_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(
            idle_in_transaction_timeout(ms(200)),
            MIN_IDLE_IN_TRANSACTION
        );
        assert_eq!(idle_in_transaction_timeout(ms(3000)), ms(3000));
    }
}
