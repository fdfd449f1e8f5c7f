//! Throwaway PostgreSQL clusters: `initdb` into a temp dir, a random port on 127.0.0.1, fast
//! unsafe settings, and lifecycle verbs (stop, crash, start again) for fault tests.
//!
//! Ordinary tests share one cluster per test process ([`shared`]) and each takes a fresh database
//! on it; fault tests start their own ([`Cluster::start`]). A cluster is removed when dropped, and a
//! watchdog removes it even if `Drop` never runs (statics, aborts, a killed test binary).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use tempfile::TempDir;

use super::note;
use super::replica::Upstream;
use super::server::{pg_command, server_user};

/// Settings of every harness cluster. Durability is off because the data is throwaway and the OS
/// never crashes under a test (only the server does, see [`Cluster::kill`]); replication is on so
/// that any cluster can be a primary.
const FAST_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "16MB"),
    ("max_connections", "100"),
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("wal_keep_size", "64MB"),
    ("hot_standby", "on"),
    ("timezone", "UTC"),
    ("log_timezone", "UTC"),
    ("log_checkpoints", "off"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// Seconds `pg_ctl` may take to start (crash recovery included) or stop a server.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// First starts retry on another port this often: a probed free port can be taken by someone else
/// before the postmaster binds it.
const PORT_ATTEMPTS: usize = 3;

/// Unix socket paths longer than this do not fit `sockaddr_un` once `.s.PGSQL.<port>` is added.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Cluster directories go to `/dev/shm` when it has this much room: tmpfs spares the tests the
/// disk writeback that made `initdb` three times slower while other builds ran on the machine.
const MIN_SHM_FREE_KIB: u64 = 1024 * 1024;

/// Lines of the server log printed when a test panics while it owns a cluster.
const LOG_TAIL_LINES: usize = 40;

/// Kills the postmaster and removes the cluster directory once the test process is gone.
/// `$1` is the test process id, `$2` the cluster directory. It checks `/proc/<pid>/comm` so that a
/// stale `postmaster.pid` whose number was reused never gets an unrelated process killed.
const WATCHDOG: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && grep -q postgres "/proc/$pid/comm" 2>/dev/null; then
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf "$2"
"#;

/// A running (or deliberately stopped) PostgreSQL cluster owned by the test process.
pub struct Cluster {
    /// Holds `data/`, `postgres.log` and the unix socket; removed on drop.
    pub(super) dir: TempDir,
    pub(super) data: PathBuf,
    pub(super) port: u16,
    /// Set for replicas: where they stream from.
    pub(super) upstream: Option<Upstream>,
    /// The process-wide shared cluster refuses lifecycle verbs: other tests are using it.
    shared: bool,
    watchdog: Option<Child>,
}

/// Extra `postgresql.conf` settings for a private cluster: `Cluster::builder().setting(..).start()`.
#[derive(Default)]
pub struct Builder {
    settings: Vec<(String, String)>,
    shared: bool,
}

impl Builder {
    /// Adds a setting; it wins over the harness defaults. Values are quoted for you.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `initdb`, writes the settings, starts the server and waits until it accepts connections.
    pub fn start(self) -> Cluster {
        let started = Instant::now();
        let (dir, watchdog) = prepare_dir();
        let data = dir.path().join("data");
        let initdb = pg_command("initdb", dir.path())
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        if !initdb.status.success() {
            panic!(
                "initdb failed in {}: {}{}\n(as root the server runs as the `postgres` OS user, \
                 which must be able to reach that directory; check TMPDIR)",
                dir.path().display(),
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr),
            )
        }
        let mut settings = base_settings(dir.path());
        settings.extend(self.settings);
        append_settings(&data, &settings);
        let cluster = Cluster::launch(dir, data, watchdog, None, self.shared);
        note(format_args!(
            "cluster on port {} ready in {:?}",
            cluster.port,
            started.elapsed()
        ));
        cluster
    }
}

/// The cluster every ordinary test shares, started on first use and gone when the process exits.
/// Take a fresh database on it with [`Cluster::create_database`]; never stop it.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        Builder {
            // Nobody crashes the shared cluster, so commits need not wait for the WAL write.
            settings: vec![("synchronous_commit".into(), "off".into())],
            shared: true,
        }
        .start()
    })
}

impl Cluster {
    /// A private cluster with the harness defaults, for tests that stop, crash or reconfigure it.
    pub fn start() -> Cluster {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Connection URL for database `db`, as a user would write it in `DATABASE_URL`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.refuse_if_shared("stop");
        self.pg_ctl_checked(&["stop", "-m", "fast"]);
    }

    /// Crashes the server (`pg_ctl stop -m immediate`): no checkpoint, backends die at once, and
    /// the next start runs crash recovery. Committed data survives, as after a real crash.
    pub fn kill(&self) {
        self.refuse_if_shared("kill");
        self.pg_ctl_checked(&["stop", "-m", "immediate"]);
    }

    /// Starts the stopped or crashed server again on the same port and data directory.
    pub fn start_again(&self) {
        self.refuse_if_shared("start_again");
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    /// `stop` then `start_again`.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Everything the server has logged so far (all starts of this cluster).
    pub fn log_contents(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Picks a port and starts a freshly created data directory, retrying on a port race.
    pub(super) fn launch(
        dir: TempDir,
        data: PathBuf,
        watchdog: Child,
        upstream: Option<Upstream>,
        shared: bool,
    ) -> Cluster {
        let mut cluster = Cluster {
            dir,
            data,
            port: 0,
            upstream,
            shared,
            watchdog: Some(watchdog),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(_) if attempt < PORT_ATTEMPTS && port_was_taken(&cluster.log_contents()) => {
                    note(format_args!("port {} was taken, retrying", cluster.port));
                    // A fresh log, so the next attempt is judged by its own lines only.
                    let _ = std::fs::remove_file(cluster.log_path());
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(&self) -> Result<(), String> {
        let log = self.log_path();
        let output = self
            .pg_ctl(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS])
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .output()
            .expect("run pg_ctl start");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl start failed on port {}: {}{}\n--- server log ---\n{}",
            self.port,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail(),
        ))
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = pg_command("pg_ctl", self.dir.path());
        cmd.arg("-D").arg(&self.data).args(args);
        cmd
    }

    fn pg_ctl_checked(&self, args: &[&str]) {
        let output = self
            .pg_ctl(args)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
            .output()
            .expect("run pg_ctl");
        if !output.status.success() {
            panic!(
                "pg_ctl {} failed on port {}: {}{}\n--- server log ---\n{}",
                args.join(" "),
                self.port,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tail(),
            )
        }
    }

    fn refuse_if_shared(&self, verb: &str) {
        assert!(
            !self.shared,
            "`{verb}` on the shared cluster would break every other test; \
             start a private one with Cluster::start()"
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn log_tail(&self) -> String {
        let log = self.log_contents();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- server log of the cluster on port {} (last {LOG_TAIL_LINES} lines) ---\n{}",
                self.port,
                self.log_tail()
            );
        }
        // Immediate: the data is thrown away, so a clean shutdown would only cost time.
        // Fails harmlessly when the server is already stopped.
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).output();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // The TempDir field removes the directory.
    }
}

/// A fresh cluster directory the server user owns, already guarded by a watchdog.
pub(super) fn prepare_dir() -> (TempDir, Child) {
    let dir = tempfile::Builder::new()
        .prefix("partkeeper-pg-")
        .tempdir_in(cluster_base_dir())
        .expect("create a temp dir for a cluster");
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(dir.path(), Some(uid.as_raw()), Some(gid.as_raw()))
            .expect("chown the cluster dir");
    }
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("partkeeper-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C on the test run must not kill the watchdog before it
        // has cleaned up (pg_ctl already puts the postmaster in its own session).
        .process_group(0)
        .spawn()
        .expect("spawn the cluster watchdog");
    (dir, watchdog)
}

/// Where cluster directories are made: `PARTKEEPER_TEST_TMPDIR`, else `/dev/shm` when it is
/// roomy (see [`MIN_SHM_FREE_KIB`]; Docker's default 64 MiB is not), else the temp dir.
fn cluster_base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PARTKEEPER_TEST_TMPDIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if free_kib(shm).is_some_and(|free| free >= MIN_SHM_FREE_KIB) {
            return shm.to_owned();
        }
        std::env::temp_dir()
    })
}

/// Free space of the filesystem holding `dir`, from `df` (std has no statvfs).
fn free_kib(dir: &Path) -> Option<u64> {
    let output = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "Filesystem 1024-blocks Used Available Capacity Mounted on", then one line of numbers.
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// Settings that depend on the cluster directory, followed by [`FAST_SETTINGS`].
fn base_settings(dir: &Path) -> Vec<(String, String)> {
    let socket_dir = dir.to_string_lossy().into_owned();
    // The tests connect over TCP; the socket only keeps the server off /var/run/postgresql.
    let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR_LEN {
        socket_dir
    } else {
        String::new()
    };
    let mut settings = vec![("unix_socket_directories".to_owned(), socket_dir)];
    settings.extend(
        FAST_SETTINGS
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string())),
    );
    settings
}

/// Appends settings to `postgresql.conf`; later lines win, so builder settings override defaults.
pub(super) fn append_settings(data: &Path, settings: &[(String, String)]) {
    use std::io::Write;
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("open postgresql.conf");
    let mut text = String::from("\n# partkeeper test harness\n");
    for (key, value) in settings {
        text.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
    }
    conf.write_all(text.as_bytes())
        .expect("append to postgresql.conf");
}

/// A port that was free a moment ago; [`Cluster::launch`] retries if it is gone by start.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("probe a free port on 127.0.0.1")
        .port()
}

fn port_was_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}
