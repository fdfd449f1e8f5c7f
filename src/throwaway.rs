//! A throwaway PostgreSQL cluster started from the installed server binaries (for `demo`):
//! initdb into a temp dir, a free port on 127.0.0.1, the socket in the same dir; stopped and
//! removed on drop. As root, the server runs as the `postgres` OS user (PostgreSQL refuses root).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian and Ubuntu put the server binaries.
const DEBIAN_BIN_GLOB: &str = "/usr/lib/postgresql";

#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    #[error("no PostgreSQL server binaries (initdb, pg_ctl) found: install them (Debian/Ubuntu: `apt-get install postgresql`), set PARTKEEPER_PG_BIN to their directory, or pass --database-url to use a server you already run")]
    NoBinaries,
    #[error("running as root, but there is no `postgres` OS user to run the server as (PostgreSQL refuses to run as root): create one or run as another user")]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
}

pub struct Throwaway {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    stopped: bool,
}

/// Server binary directory: `PARTKEEPER_PG_BIN`, else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_initdb = |p: &Path| p.join("initdb").is_file() && p.join("pg_ctl").is_file();
    if let Some(p) = std::env::var_os("PARTKEEPER_PG_BIN").map(PathBuf::from) {
        return has_initdb(&p).then_some(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&p) {
            return Some(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BIN_GLOB)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

impl Throwaway {
    pub fn start() -> Result<Throwaway, ThrowawayError> {
        let bin = find_bin_dir().ok_or(ThrowawayError::NoBinaries)?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(ThrowawayError::NoPostgresUser)?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "partkeeper-demo-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| step("create the data directory", e))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| step("hand the data directory to postgres", e))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| step("find a free port", e))?;
        let mut me = Throwaway {
            dir,
            bin,
            port,
            run_as,
            stopped: true,
        };
        let data = me.data_dir();
        me.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=replica",
            me.port,
            path_str(&me.dir)
        );
        let log = me.dir.join("server.log");
        me.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        me.stopped = false;
        Ok(me)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), ThrowawayError> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(|e| step(program, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ThrowawayError::Step {
                step: program.to_string(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            })
        }
    }

    /// Stops the server (fast mode) and removes its directory.
    pub fn stop(&mut self) {
        if !self.stopped {
            let data = self.data_dir();
            let _ = self.run(
                "pg_ctl",
                &["-D", path_str(&data), "-m", "fast", "-w", "stop"],
            );
            self.stopped = true;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn step(what: &str, e: std::io::Error) -> ThrowawayError {
    ThrowawayError::Step {
        step: what.to_string(),
        detail: e.to_string(),
    }
}
