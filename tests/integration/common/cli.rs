//! Runs the built `partkeeper` binary as a user would: arguments, environment variables, a
//! config file and a working directory of its own; to completion ([`Cli::run`]) or in the
//! background ([`Cli::spawn`], for the daemon).
//!
//! The child does not inherit `DATABASE_URL`, `PARTKEEPER_*`, `PG*` or (unless `TEST_LOG` is set)
//! `RUST_LOG` from the developer's shell: a test sees only what it sets.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::test_log;

/// A one-shot command that runs longer than this fails the test instead of hanging it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a wait looks whether the process has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Each invocation writes its output to its own pair of files in the command's directory.
static NEXT_RUN: AtomicU32 = AtomicU32::new(1);

/// How to run `partkeeper`: the parts shared by every invocation in a test (config, environment,
/// global flags). The arguments are given per invocation: `cli.run(["maintain", "--dry-run"])`.
pub struct Cli {
    program: PathBuf,
    /// Working directory; holds the config file and the captured output. Shared with running
    /// daemons so it outlives the builder.
    dir: Arc<TempDir>,
    global_args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    config: bool,
    timeout: Duration,
}

/// How a finished run ended, with everything it printed.
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A `partkeeper` process running in the background. Dropping it kills the process.
pub struct Daemon {
    child: Child,
    command: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    _dir: Arc<TempDir>,
}

impl Cli {
    /// The `partkeeper` binary built by cargo for this test run.
    pub fn new() -> Cli {
        Cli::program(env!("CARGO_BIN_EXE_partkeeper"))
    }

    /// Any other program, run the same way (the harness uses `sh` to test itself).
    pub fn program(program: impl AsRef<Path>) -> Cli {
        let dir = tempfile::Builder::new()
            .prefix("partkeeper-cli-")
            .tempdir()
            .expect("create a temp dir for a partkeeper run");
        Cli {
            program: program.as_ref().to_owned(),
            dir: Arc::new(dir),
            global_args: Vec::new(),
            envs: Vec::new(),
            config: false,
            timeout: RUN_TIMEOUT,
        }
    }

    /// Writes `toml` to `partkeeper.toml` in the working directory and passes `--config <it>`.
    pub fn config(mut self, toml: &str) -> Self {
        std::fs::write(self.config_path(), toml).expect("write the config file");
        if !self.config {
            self.config = true;
            let flag = [OsString::from("--config"), self.config_path().into()];
            self.global_args.splice(0..0, flag);
        }
        self
    }

    /// An argument passed before the per-invocation ones (e.g. `-v`, `--log-format json`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.global_args.push(arg.as_ref().to_owned());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let key = key.as_ref().to_owned();
        self.envs.push((key, value.as_ref().to_owned()));
        self
    }

    /// How long [`Cli::run`] and [`Cli::run_async`] wait before failing the test.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The working directory (empty but for the config file and captured output), so that
    /// the default `config/partkeeper.toml` is never picked up from the repository.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("partkeeper.toml")
    }

    /// Runs to completion, blocking the thread. In async tests prefer [`Cli::run_async`], which
    /// lets other tasks of the test (say, concurrent writers) go on meanwhile.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut daemon = self.spawn(args);
        let started = Instant::now();
        while started.elapsed() < self.timeout {
            if let Some(output) = daemon.finished() {
                return output;
            }
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
        daemon.give_up(self.timeout)
    }

    /// Runs to completion without blocking the runtime.
    pub async fn run_async<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn(args).wait(self.timeout).await
    }

    /// Starts in the background; stdout and stderr go to files readable while it runs.
    pub fn spawn<I, S>(&self, args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let n = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let stdout = self.dir().join(format!("run-{n}.stdout"));
        let stderr = self.dir().join(format!("run-{n}.stderr"));
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(self.dir())
            .args(&self.global_args)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the stdout file"))
            .stderr(File::create(&stderr).expect("create the stderr file"));
        for (key, _) in std::env::vars_os() {
            if is_scrubbed(&key.to_string_lossy()) {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let command = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command}`: {e}"));
        Daemon {
            child,
            command,
            stdout,
            stderr,
            status: None,
            _dir: Arc::clone(&self.dir),
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        signal::kill(self.pid(), signal)
            .unwrap_or_else(|e| panic!("send {signal} to `{}`: {e}", self.command));
    }

    /// SIGTERM: the polite stop a service manager sends.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM)
    }

    /// SIGKILL: the process dies mid-step, as in a crash or an OOM kill.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL)
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// What it has printed on stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// What it has printed on stderr (its log) so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Waits for it to exit; panics with its output so far if it is still running at `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Output {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(output) = self.finished() {
                return output;
            }
            tokio::time::sleep(EXIT_POLL_INTERVAL).await;
        }
        self.give_up(timeout)
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("poll a child process");
        }
        self.status
    }

    fn finished(&mut self) -> Option<Output> {
        let status = self.try_status()?;
        let output = Output {
            command: self.command.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        };
        if test_log() {
            eprintln!("{output}");
        }
        Some(output)
    }

    fn give_up(&mut self, timeout: Duration) -> ! {
        panic!(
            "`{}` still running after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Output {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing everything printed, unless the exit code is `expected`.
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert!(
            self.code() == Some(expected),
            "expected exit code {expected}, got {self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Inherited variables that would point the binary somewhere the test did not choose.
fn is_scrubbed(key: &str) -> bool {
    key == "DATABASE_URL"
        || key.starts_with("PARTKEEPER_")
        || key.starts_with("PG")
        || (key == "RUST_LOG" && !test_log())
}

fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str());
    let mut words = vec![name.to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
