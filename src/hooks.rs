//! `[tables.hooks]`: programs run by the executor before a partition expires (`before_expire`)
//! and after one is created (`after_create`). No shell: the configured argv is executed as is,
//! with the partition described in its environment. Its output goes to the log line by line
//! (scrubbed of the connection password); a non-zero exit or `hook_timeout` is a failure, and a
//! failed `before_expire` keeps the partition.
//!
//! The hook runs in its own process group, so a timeout kills what it started too (a shell
//! script's `pg_dump`), and no orphan keeps writing after partkeeper gave up on it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tracing::Instrument;

use crate::bounds::{render_literal, BoundValue, KeyType};
use crate::catalog::ManagedTable;
use crate::lifecycle::Hooks;
use crate::plan::Action;
use crate::secret::SecretUrl;

/// How long the output of a finished hook is still read (a background child may hold its pipes).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Lines of stderr quoted in the error of a failed hook.
const TAIL_LINES: usize = 5;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    BeforeExpire,
    AfterCreate,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::BeforeExpire => "before_expire",
            HookKind::AfterCreate => "after_create",
        }
    }
}

/// One hook to run for one action: what `--dry-run` lists and what the executor runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookCall {
    pub kind: HookKind,
    pub argv: Vec<String>,
    /// `PARTKEEPER_*` variables (DATABASE_URL is added only when it runs, never shown).
    pub env: Vec<(String, String)>,
    #[serde(skip)]
    pub timeout: Duration,
}

impl HookCall {
    /// `before_expire: prog arg (PARTKEEPER_PARTITION=... ...)` for `--dry-run`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} ({})",
            self.kind.as_str(),
            self.argv
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the {kind} hook {program:?} could not be started: {source}; check that the path is right and executable by partkeeper's user")]
    Spawn {
        kind: &'static str,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {kind} hook {program:?} exited with {status}{tail}")]
    Failed {
        kind: &'static str,
        program: String,
        status: String,
        tail: String,
    },
    #[error("the {kind} hook {program:?} was still running after hook_timeout ({}) and was killed", humantime::format_duration(*.timeout))]
    Timeout {
        kind: &'static str,
        program: String,
        timeout: Duration,
    },
}

/// The hook an action calls, if any: `before_expire` for every action that takes a partition
/// out of the table (drop, detach, archive), `after_create` for every partition created.
pub fn for_action(
    action: &Action,
    table: &ManagedTable,
    hooks: &Hooks,
    database: &str,
) -> Option<HookCall> {
    let (kind, argv, what, bounds) = match action {
        Action::Create { from, to, .. } => (
            HookKind::AfterCreate,
            &hooks.after_create,
            "create",
            Some((BoundValue::Value(*from), BoundValue::Value(*to))),
        ),
        Action::CreateDefault { .. } => {
            (HookKind::AfterCreate, &hooks.after_create, "create", None)
        }
        Action::Drop { partition, .. }
        | Action::FinalizeDetach {
            partition,
            then_drop: true,
        } => (
            HookKind::BeforeExpire,
            &hooks.before_expire,
            "drop",
            bounds_of(table, partition),
        ),
        Action::Detach { partition, .. } => (
            HookKind::BeforeExpire,
            &hooks.before_expire,
            "detach",
            bounds_of(table, partition),
        ),
        Action::Archive { partition, .. } => (
            HookKind::BeforeExpire,
            &hooks.before_expire,
            "archive",
            bounds_of(table, partition),
        ),
        Action::FinalizeDetach { .. } | Action::AddIndex { .. } => return None,
    };
    if argv.is_empty() {
        return None;
    }
    let show = |b: &BoundValue| show_bound(b, table.key_type);
    let (from, to) = bounds
        .map(|(f, t)| (show(&f), show(&t)))
        .unwrap_or_default();
    Some(HookCall {
        kind,
        argv: argv.clone(),
        env: vec![
            ("PARTKEEPER_DATABASE".into(), database.to_string()),
            ("PARTKEEPER_TABLE".into(), table.name.to_string()),
            (
                "PARTKEEPER_PARTITION".into(),
                action.partition().to_string(),
            ),
            // The two parts apart too: either may contain a dot.
            (
                "PARTKEEPER_PARTITION_SCHEMA".into(),
                action.partition().schema.clone(),
            ),
            (
                "PARTKEEPER_PARTITION_NAME".into(),
                action.partition().name.clone(),
            ),
            ("PARTKEEPER_FROM".into(), from),
            ("PARTKEEPER_TO".into(), to),
            ("PARTKEEPER_ACTION".into(), what.into()),
        ],
        timeout: hooks.timeout,
    })
}

fn bounds_of(
    table: &ManagedTable,
    partition: &crate::ident::QualifiedName,
) -> Option<(BoundValue, BoundValue)> {
    table
        .partitions
        .iter()
        .find(|p| &p.name == partition)
        .map(|p| (p.from, p.to))
}

/// A bound as the hook sees it: `2026-11-01`, `2026-11-01 00:00:00+00:00`, `MINVALUE`.
fn show_bound(b: &BoundValue, key: KeyType) -> String {
    match b {
        BoundValue::MinValue => "MINVALUE".into(),
        BoundValue::MaxValue => "MAXVALUE".into(),
        BoundValue::Value(t) => render_literal(*t, key)
            .map(|s| s.trim_matches('\'').to_string())
            .unwrap_or_else(|_| t.to_rfc3339()),
    }
}

/// The name of the database a URL points at: its path (or its `dbname` parameter). The part 1
/// form's default `database.name`, which hooks see as `PARTKEEPER_DATABASE`.
pub fn database_name(url: &SecretUrl) -> String {
    url::Url::parse(url.expose())
        .ok()
        .and_then(|u| {
            let path = u.path().trim_start_matches('/').to_string();
            if path.is_empty() {
                u.query_pairs()
                    .find(|(k, _)| k == "dbname")
                    .map(|(_, v)| v.into_owned())
            } else {
                Some(path)
            }
        })
        .unwrap_or_default()
}

/// Runs `call`, logging its output; `Ok` only on exit status 0 within the timeout.
pub async fn run(call: &HookCall, url: &SecretUrl) -> Result<Duration, HookError> {
    let started = Instant::now();
    let kind = call.kind.as_str();
    let program = call.argv[0].clone();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&call.argv[1..])
        .envs(call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DATABASE_URL", url.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        program: program.clone(),
        source,
    })?;
    let partition = call
        .env
        .iter()
        .find(|(k, _)| k == "PARTKEEPER_PARTITION")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    tracing::info!(hook = kind, program = %program, partition = %partition, "hook started");
    let out = child.stdout.take().map(|s| {
        tokio::spawn(log_lines(s, kind, "stdout", partition.clone(), url.clone()).in_current_span())
    });
    let err = child.stderr.take().map(|s| {
        tokio::spawn(log_lines(s, kind, "stderr", partition.clone(), url.clone()).in_current_span())
    });
    let status = match tokio::time::timeout(call.timeout, child.wait()).await {
        Ok(status) => status.map_err(|source| HookError::Spawn {
            kind,
            program: program.clone(),
            source,
        })?,
        Err(_) => {
            if let Some(pid) = child.id() {
                // The whole group: the hook and whatever it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            tracing::warn!(hook = kind, program = %program, partition = %partition, "hook timed out; killed");
            return Err(HookError::Timeout {
                kind,
                program,
                timeout: call.timeout,
            });
        }
    };
    if let Some(h) = out {
        let _ = tokio::time::timeout(OUTPUT_GRACE, h).await;
    }
    let tail = match err {
        Some(h) => match tokio::time::timeout(OUTPUT_GRACE, h).await {
            Ok(Ok(lines)) => lines,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    if status.success() {
        tracing::info!(hook = kind, program = %program, partition = %partition, duration_ms = started.elapsed().as_millis() as u64, "hook succeeded");
        return Ok(started.elapsed());
    }
    Err(HookError::Failed {
        kind,
        program,
        status: status
            .code()
            .map(|c| format!("status {c}"))
            .unwrap_or_else(|| "a signal".into()),
        tail: if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" / "))
        },
    })
}

/// Logs each line of a hook's stream; returns the last few (for the error message).
async fn log_lines(
    stream: impl AsyncRead + Unpin,
    kind: &'static str,
    which: &'static str,
    partition: String,
    url: SecretUrl,
) -> Vec<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut tail = std::collections::VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = crate::secret::scrub(&line, &[&url]);
        tracing::info!(hook = kind, stream = which, partition = %partition, "{line}");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> SecretUrl {
        SecretUrl::parse("postgres://u:s3cret@localhost:5432/app").unwrap()
    }

    fn call(argv: &[&str], timeout: Duration) -> HookCall {
        HookCall {
            kind: HookKind::BeforeExpire,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PARTKEEPER_PARTITION".into(), "public.t_2020_01".into())],
            timeout,
        }
    }

    #[test]
    fn the_database_is_the_url_path() {
        assert_eq!(database_name(&url()), "app");
    }

    #[tokio::test]
    async fn exit_zero_is_success_and_the_environment_is_set() {
        let c = call(
            &["/bin/sh", "-c", "test \"$PARTKEEPER_PARTITION\" = public.t_2020_01 && test \"$DATABASE_URL\" = postgres://u:s3cret@localhost:5432/app"],
            Duration::from_secs(10),
        );
        run(&c, &url()).await.unwrap();
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_tail_of_stderr() {
        let c = call(
            &["/bin/sh", "-c", "echo disk full >&2; exit 3"],
            Duration::from_secs(10),
        );
        let e = run(&c, &url()).await.unwrap_err().to_string();
        assert!(e.contains("status 3") && e.contains("disk full"), "{e}");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let c = call(
            &["/bin/sh", "-c", "sleep 30 & sleep 30"],
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let e = run(&c, &url()).await.unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_missing_program_says_so() {
        let c = call(&["/nonexistent/hook"], Duration::from_secs(1));
        let e = run(&c, &url()).await.unwrap_err().to_string();
        assert!(e.contains("could not be started"), "{e}");
    }

    #[test]
    fn the_password_in_output_is_scrubbed() {
        let line = crate::secret::scrub(
            "connecting to postgres://u:s3cret@localhost:5432/app",
            &[&url()],
        );
        assert!(!line.contains("s3cret"), "{line}");
    }
}
