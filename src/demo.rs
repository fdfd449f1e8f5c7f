//! `partkeeper demo`: the newcomer's one command. A throwaway PostgreSQL (or a fresh database on
//! `--database-url`), the runbook's `pricing_data` with sample rows, an online migration while a
//! small writer keeps writing, then the daemon with its HTTP server. Ctrl-C or `--duration` stops
//! and removes everything it created. It drives the same binary through its CLI, so what it shows
//! is exactly what a user gets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::throwaway::Throwaway;

/// Sample size: big enough to show batches and partitions, small enough to load in seconds.
const PROPERTIES: i32 = 200;
const DAYS_BACK: i32 = 400;
const DAYS_AHEAD: i32 = 60;
/// How long the daemon gets to answer `/readyz` after it starts.
const READY_WAIT: Duration = Duration::from_secs(30);

pub struct DemoOptions {
    pub database_url: Option<String>,
    pub listen: String,
    pub duration: Option<Duration>,
}

#[derive(Default)]
struct WriterStats {
    ok: AtomicU64,
    failed: AtomicU64,
}

pub async fn run(opts: DemoOptions) -> Result<i32> {
    let work = tempdir()?;
    // Either our own cluster, or a dedicated database on the user's server.
    let (cluster, admin_url, db_url, created_db) = match &opts.database_url {
        None => {
            println!("starting a throwaway PostgreSQL ...");
            let c = tokio::task::spawn_blocking(Throwaway::start)
                .await
                .map_err(|e| Error::Failed(e.to_string()))?
                .map_err(|e| Error::Usage(e.to_string()))?;
            let admin = c.url("postgres");
            let db = c.url("pricing");
            (Some(c), admin, db, "pricing".to_string())
        }
        Some(url) => {
            let name = format!("partkeeper_demo_{}", std::process::id());
            let mut u = url::Url::parse(url)
                .map_err(|e| Error::Usage(format!("--database-url is not a URL: {e}")))?;
            let admin = u.to_string();
            u.set_path(&format!("/{name}"));
            (None, admin, u.to_string(), name)
        }
    };
    let mut admin = PgConnection::connect(&admin_url).await.map_err(|e| {
        Error::Usage(format!(
            "cannot connect to the demo server: {}",
            crate::pg::describe(&e)
        ))
    })?;
    sqlx::raw_sql(&format!(
        "CREATE DATABASE {}",
        crate::ident::quote_ident(&created_db)
    ))
    .execute(&mut admin)
    .await?;

    let outcome = demo_body(&opts, &work, &db_url).await;

    // Clean up whatever happened above.
    let _ = sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        crate::ident::quote_ident(&created_db)
    ))
    .execute(&mut admin)
    .await;
    drop(admin);
    if let Some(mut c) = cluster {
        tokio::task::spawn_blocking(move || c.stop()).await.ok();
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("demo stopped; everything it created is removed");
    outcome
}

async fn demo_body(opts: &DemoOptions, work: &Path, db_url: &str) -> Result<i32> {
    let config = work.join("partkeeper.toml");
    std::fs::write(&config, demo_config(db_url, &opts.listen))
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", config.display())))?;

    let mut conn = PgConnection::connect(db_url).await?;
    println!(
        "creating pricing_data with sample rows ({PROPERTIES} properties, {} days each) ...",
        DAYS_BACK + DAYS_AHEAD + 1
    );
    sqlx::raw_sql(&sample_sql()).execute(&mut conn).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pricing_data")
        .fetch_one(&mut conn)
        .await?;
    println!(
        "  {rows} rows, a few with NULL dates (filled from \"createdAt\" during the migration)"
    );

    // A small application: keeps inserting, updating and deleting while we migrate.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WriterStats::default());
    let writer = tokio::spawn(writer(db_url.to_string(), stop.clone(), stats.clone()));

    let me = std::env::current_exe().map_err(|e| Error::Failed(e.to_string()))?;
    println!("\n$ partkeeper migrate plan --table public.pricing_data");
    cli(
        &me,
        &config,
        &[
            "migrate",
            "plan",
            "--table",
            "public.pricing_data",
            "--fill-null-with",
            "\"createdAt\"::date",
        ],
    )
    .await?;
    println!("\n$ partkeeper migrate run --table public.pricing_data --fill-null-with '\"createdAt\"::date'   (online: the writer keeps writing)");
    let migrated = cli(
        &me,
        &config,
        &[
            "migrate",
            "run",
            "--table",
            "public.pricing_data",
            "--batch-size",
            "5000",
            "--fill-null-with",
            "\"createdAt\"::date",
        ],
    )
    .await?;
    println!("\n$ partkeeper migrate verify --table public.pricing_data");
    cli(
        &me,
        &config,
        &["migrate", "verify", "--table", "public.pricing_data"],
    )
    .await?;
    println!(
        "  the writer made {} successful writes during the migration ({} failed)",
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed)
    );

    println!("\nstarting the daemon: partkeeper run");
    let mut daemon = Command::new(&me)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot start the daemon: {e}")))?;
    let ready = wait_ready(&opts.listen, &mut daemon).await;
    let result = match ready {
        Err(e) => Err(e),
        Ok(()) => {
            let metrics = http_get(&opts.listen, "/metrics").await.unwrap_or_default();
            let sample: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("partkeeper_partitions{")
                        || l.starts_with("partkeeper_future_partitions{")
                        || l.starts_with("partkeeper_leader")
                })
                .collect();
            println!(
                "\n/metrics answered ({} lines), e.g.:\n  {}",
                metrics.lines().count(),
                sample.join("\n  ")
            );
            println!(
                "\npartkeeper is running. Open:\n  http://{0}/metrics\n  http://{0}/status\n  http://{0}/readyz\n\nTry, in another terminal:\n  partkeeper --config {1} status\n  partkeeper --config {1} check\n  partkeeper --config {1} maintain --dry-run --now 2030-01-01\n\n{2}",
                opts.listen,
                config.display(),
                match opts.duration {
                    Some(d) => format!("stopping in {}", humantime::format_duration(d)),
                    None => "Ctrl-C stops the demo and removes everything it created.".into(),
                }
            );
            wait_for_stop(opts.duration).await;
            Ok(if migrated { 0 } else { 1 })
        }
    };
    if let Some(pid) = daemon.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), daemon.wait()).await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    result
}

/// Runs `partkeeper --config <cfg> <args>`, its output shown as is. `Ok(false)` when it exited non-zero.
async fn cli(me: &Path, config: &Path, args: &[&str]) -> Result<bool> {
    let status = Command::new(me)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| Error::Failed(format!("cannot run {}: {e}", me.display())))?;
    Ok(status.success())
}

async fn writer(url: String, stop: Arc<AtomicBool>, stats: Arc<WriterStats>) {
    let Ok(mut conn) = PgConnection::connect(&url).await else {
        return;
    };
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sql = match i % 4 {
            0 => "UPDATE pricing_data SET price = price + 1, \"updatedAt\" = now() WHERE id = (SELECT (random() * 1000)::bigint + 1)",
            1 if i % 20 == 1 => "DELETE FROM pricing_data WHERE id = (SELECT max(id) - 5 FROM pricing_data)",
            _ => "INSERT INTO pricing_data (\"propertyId\", date, price) VALUES ('prop-live', current_date, 99.5)",
        };
        match sqlx::query(sql).execute(&mut conn).await {
            Ok(_) => stats.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_ready(listen: &str, daemon: &mut Child) -> Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = daemon.try_wait() {
            return Err(Error::Failed(format!("the daemon exited early ({status})")));
        }
        if http_get(listen, "/readyz")
            .await
            .is_some_and(|b| !b.is_empty())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Failed(format!(
        "the daemon did not answer on http://{listen}/readyz within {READY_WAIT:?}"
    )))
}

/// A minimal HTTP/1.1 GET: the body when the status is 200.
async fn http_get(listen: &str, path: &str) -> Option<String> {
    let addr = listen.replace("0.0.0.0", "127.0.0.1");
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .ok()?
    .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf))
        .await
        .ok()?
        .ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

async fn wait_for_stop(duration: Option<Duration>) {
    let ctrl_c = tokio::signal::ctrl_c();
    match duration {
        Some(d) => {
            tokio::select! { _ = tokio::time::sleep(d) => {}, _ = ctrl_c => {} }
        }
        None => {
            let _ = ctrl_c.await;
        }
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "partkeeper-demo-cfg-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn demo_config(url: &str, listen: &str) -> String {
    format!(
        r#"# written by `partkeeper demo`
[database]
url = "{url}"
lock_timeout = "1s"

[server]
listen = "{listen}"

[schedule]
maintenance = "*/30 * * * * *"
run_on_start = true
metrics_refresh = "5s"

[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
retention = "36 months"
retention_mode = "drop"
default_partition = true
"#
    )
}

/// The runbook's table, loaded in the order the application writes it (per property).
fn sample_sql() -> String {
    format!(
        r#"
CREATE TABLE pricing_data (id bigserial PRIMARY KEY, "propertyId" text NOT NULL, date date,
  price numeric(10,2) NOT NULL, "minPrice" numeric(10,2), "maxPrice" numeric(10,2),
  occupancy real, "demandScore" real, source text,
  "createdAt" timestamptz NOT NULL DEFAULT now(), "updatedAt" timestamptz NOT NULL DEFAULT now());
CREATE INDEX idx_pricing_data_property_date ON pricing_data ("propertyId", date);
CREATE INDEX idx_pricing_data_date ON pricing_data (date);
INSERT INTO pricing_data ("propertyId", date, price, "minPrice", "maxPrice", occupancy, "demandScore", source, "createdAt")
SELECT 'prop-' || p, current_date + d, round((80 + random() * 200)::numeric, 2), 60, 400,
       random(), random(), 'csv', now() + d * interval '1 day'
  FROM generate_series(1, {PROPERTIES}) p, generate_series(-{DAYS_BACK}, {DAYS_AHEAD}) d
 ORDER BY p, d;
UPDATE pricing_data SET date = NULL WHERE id % 9973 = 0;
ANALYZE pricing_data;
"#
    )
}
