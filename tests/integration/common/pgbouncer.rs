//! A real PgBouncer (Debian's `pgbouncer` package; scripts/test.sh installs it) in front of a
//! harness cluster: generated ini, random port on 127.0.0.1, trust authentication through a
//! userlist, PgBouncer's defaults for everything a test does not set. Stopped when dropped, and
//! by a watchdog if the test process dies first.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::note;
use super::server::server_user;

/// How long PgBouncer may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills PgBouncer (`$2`) once the test process (`$1`) is gone.
const WATCHDOG: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
grep -q pgbouncer "/proc/$2/comm" 2>/dev/null && kill -KILL "$2" 2>/dev/null
"#;

pub struct PgBouncer {
    dir: TempDir,
    port: u16,
    child: Child,
    watchdog: Child,
}

/// `pool_mode` plus any other `[pgbouncer]` settings (the rest stay at PgBouncer's defaults).
pub struct Builder {
    upstream: u16,
    settings: Vec<(String, String)>,
}

impl Builder {
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    pub fn start(self) -> PgBouncer {
        for attempt in 1..=3 {
            match self.try_start() {
                Ok(b) => return b,
                Err(why) if attempt < 3 => note(format_args!("pgbouncer: {why}; retrying")),
                Err(why) => panic!("cannot start pgbouncer: {why}"),
            }
        }
        unreachable!()
    }

    fn try_start(&self) -> Result<PgBouncer, String> {
        let dir = tempfile::Builder::new()
            .prefix("partkeeper-pgbouncer-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port();
        let mut ini = format!(
            "[databases]\n* = host=127.0.0.1 port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\nlogfile = {log}\nadmin_users = postgres\n",
            self.upstream,
            users = dir.path().join("users.txt").display(),
            log = dir.path().join("pgbouncer.log").display(),
        );
        for (k, v) in &self.settings {
            ini.push_str(&format!("{k} = {v}\n"));
        }
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n")
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(pgbouncer_bin());
        cmd.arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root.
        if let Some((uid, gid)) = server_user() {
            for f in ["", "pgbouncer.ini", "users.txt"] {
                std::os::unix::fs::chown(
                    dir.path().join(f),
                    Some(uid.as_raw()),
                    Some(gid.as_raw()),
                )
                .map_err(|e| e.to_string())?;
            }
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{e} (apt-get install pgbouncer; scripts/test.sh installs it)"))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("partkeeper-pgbouncer-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut bouncer = PgBouncer {
            dir,
            port,
            child,
            watchdog,
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                note(format_args!(
                    "pgbouncer on port {port} -> {}",
                    self.upstream
                ));
                return Ok(bouncer);
            }
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                return Err(format!("exited with {status}: {}", bouncer.log()));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "not listening after {START_TIMEOUT:?}: {}",
                    bouncer.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl PgBouncer {
    /// A PgBouncer in front of the cluster listening on `upstream`, with `pool_mode = mode`.
    pub fn builder(upstream: u16, mode: &str) -> Builder {
        Builder {
            upstream,
            settings: vec![("pool_mode".into(), mode.into())],
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<pgbouncer port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Client connections PgBouncer holds for database `db`, from its admin console
    /// (`SHOW CLIENTS`, read with psql: the console takes no extended-protocol query). What a
    /// client opens is counted here exactly; the server side also holds connections the pooler
    /// is still resetting.
    pub fn clients(&self, db: &str) -> usize {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-X",
                "-A",
                "-t",
                "-F",
                "|",
                "-c",
                "SHOW CLIENTS",
                "pgbouncer",
            ])
            .output()
            .expect("run psql against the PgBouncer admin console");
        assert!(
            out.status.success(),
            "SHOW CLIENTS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split('|').nth(2) == Some(db))
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.log")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- pgbouncer log (port {}, last 30 lines) ---\n{}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

fn pgbouncer_bin() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pgbouncer"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
