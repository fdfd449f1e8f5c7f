//! The application next to a command under test: writer tasks, each on its own connection, that
//! write in a loop until stopped. [`Writer::stop`] says how many statements ran and succeeded,
//! which failed (when, with which SQLSTATE) and how long each one waited.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;

use super::TestDb;

/// One failed statement.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: chrono::DateTime<chrono::Utc>,
    pub sqlstate: Option<String>,
    pub message: String,
}

/// What writer tasks saw, from start to stop.
#[derive(Debug, Default)]
pub struct Report {
    /// Statements run, successful or not.
    pub statements: u64,
    /// Statements that succeeded (for an INSERT of one row: the rows written).
    pub written: u64,
    pub errors: Vec<Failure>,
    /// How long each statement took, task after task, in the order each task ran them.
    pub latencies: Vec<Duration>,
    /// When each successful statement ended: shows which phase of the command under test the
    /// writes reached ([`Report::written_between`]).
    pub written_at: Vec<Instant>,
}

impl Report {
    /// The longest a statement waited.
    pub fn longest(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// Successful statements that ended between `from` and `to`.
    pub fn written_between(&self, from: Instant, to: Instant) -> usize {
        self.written_at
            .iter()
            .filter(|&&t| t >= from && t < to)
            .count()
    }

    /// The first `n` error messages, for an assertion's text.
    pub fn first_errors(&self, n: usize) -> Vec<&str> {
        self.errors
            .iter()
            .take(n)
            .map(|f| f.message.as_str())
            .collect()
    }

    fn merge(mut self, other: Report) -> Report {
        self.statements += other.statements;
        self.written += other.written;
        self.errors.extend(other.errors);
        self.latencies.extend(other.latencies);
        self.written_at.extend(other.written_at);
        self
    }
}

/// What a writer task does each round (`round` counts from 1).
pub trait Write: Send + 'static {
    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        round: u64,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// One statement, its `$1` (if it has one) chosen per round.
#[derive(Debug, Clone)]
pub struct Statement {
    sql: String,
    bind: Bind,
}

#[derive(Debug, Clone)]
enum Bind {
    Nothing,
    /// `first + step * round`.
    Number {
        first: i64,
        step: i64,
    },
    /// The values in turn (text).
    Cycle(Vec<String>),
}

impl Statement {
    /// `sql` as it is, every round.
    pub fn fixed(sql: &str) -> Statement {
        Statement {
            sql: sql.into(),
            bind: Bind::Nothing,
        }
    }

    /// `sql` with `$1` = a number no other task of `tasks` binds: task `task` binds
    /// `task + tasks`, `task + 2 * tasks`, …
    pub fn numbered(sql: &str, task: u32, tasks: u32) -> Statement {
        Statement {
            sql: sql.into(),
            bind: Bind::Number {
                first: i64::from(task),
                step: i64::from(tasks),
            },
        }
    }

    /// `sql` with `$1` = each of `values` in turn (as text).
    pub fn cycling(sql: &str, values: &[&str]) -> Statement {
        Statement {
            sql: sql.into(),
            bind: Bind::Cycle(values.iter().map(|v| v.to_string()).collect()),
        }
    }
}

impl Write for Statement {
    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        round: u64,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        async move {
            let q = sqlx::query(&self.sql);
            let q = match &self.bind {
                Bind::Nothing => q,
                Bind::Number { first, step } => q.bind(first + step * round as i64),
                Bind::Cycle(values) => q.bind(&values[(round as usize - 1) % values.len()]),
            };
            q.execute(conn).await.map(|_| ())
        }
        .boxed()
    }
}

/// How the tasks pace themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    /// Pause after each statement.
    pub pause: Duration,
    /// A statement that waits this long is stuck (queued behind a lock for good, say): the task
    /// panics, and [`Writer::stop`] with it.
    pub stuck: Option<Duration>,
}

impl Pace {
    pub fn pause(pause: Duration) -> Pace {
        Pace { pause, stuck: None }
    }

    pub fn stuck_after(self, stuck: Duration) -> Pace {
        Pace {
            stuck: Some(stuck),
            ..self
        }
    }
}

/// Running writer tasks; [`Writer::stop`] (or [`Writer::stop_each`]) ends them.
pub struct Writer<W: Write = Statement> {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(W, Report)>>,
}

impl Writer<Statement> {
    /// `tasks` tasks on `db`, without pause, each running `sql` with `$1` = a number unique across
    /// the tasks ([`Statement::numbered`]).
    pub async fn start(db: &TestDb, tasks: u32, sql: &str) -> Writer {
        let writes = (0..tasks)
            .map(|t| Statement::numbered(sql, t, tasks))
            .collect();
        Writer::start_each(db.connect_options(), writes, Pace::default()).await
    }
}

impl<W: Write> Writer<W> {
    /// One task per element of `writes`, each on its own connection to `opts`; they are all
    /// connected and running when this returns.
    pub async fn start_each(opts: PgConnectOptions, writes: Vec<W>, pace: Pace) -> Writer<W> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for write in writes {
            let conn = PgConnection::connect_with(&opts)
                .await
                .expect("connect an application writer");
            tasks.push(tokio::spawn(run(conn, write, pace, stop.clone())));
        }
        Writer { stop, tasks }
    }

    /// Stops the tasks (each after its statement in flight) and merges what they saw.
    pub async fn stop(self) -> Report {
        self.stop_each()
            .await
            .into_iter()
            .fold(Report::default(), |all, (_, r)| all.merge(r))
    }

    /// Stops the tasks; each one's write (with whatever it recorded) and what it saw.
    pub async fn stop_each(self) -> Vec<(W, Report)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.tasks {
            match t.await {
                Ok(r) => out.push(r),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        out
    }
}

async fn run<W: Write>(
    mut conn: PgConnection,
    mut write: W,
    pace: Pace,
    stop: Arc<AtomicBool>,
) -> (W, Report) {
    let mut report = Report::default();
    while !stop.load(Ordering::Relaxed) {
        report.statements += 1;
        let started = Instant::now();
        let statement = write.write(&mut conn, report.statements);
        let result = match pace.stuck {
            Some(stuck) => tokio::time::timeout(stuck, statement)
                .await
                .unwrap_or_else(|_| panic!("an application statement was stuck for {stuck:?}")),
            None => statement.await,
        };
        report.latencies.push(started.elapsed());
        match result {
            Ok(()) => {
                report.written += 1;
                report.written_at.push(Instant::now());
            }
            Err(e) => report.errors.push(Failure {
                at: chrono::Utc::now(),
                sqlstate: e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .map(|c| c.into_owned()),
                message: e.to_string(),
            }),
        }
        if !pace.pause.is_zero() {
            tokio::time::sleep(pace.pause).await;
        }
    }
    (write, report)
}
