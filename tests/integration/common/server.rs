//! The PostgreSQL installation the harness uses: where the server binaries are, which version
//! they are, and how to run them (as the `postgres` OS user when the tests run as root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::unistd::{Gid, Uid, User};

/// Directory holding `initdb`, `pg_ctl`, `postgres` and `pg_basebackup`: `PARTKEEPER_PG_BIN`, else
/// `pg_config --bindir` when it holds `initdb`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_pg_bin_dir)
}

/// Major version of the server binaries in [`pg_bin_dir`], e.g. 15.
/// Whether pg_partman is installed for the server the tests run (`postgresql-NN-partman`).
pub fn partman_installed() -> bool {
    std::path::Path::new(&format!(
        "/usr/share/postgresql/{}/extension/pg_partman.control",
        pg_major()
    ))
    .exists()
}

pub fn pg_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let output = Command::new(pg_bin_dir().join("postgres"))
            .arg("--version")
            .output()
            .expect("run postgres --version");
        // "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)", "postgres (PostgreSQL) 13.23",
        // "postgres (PostgreSQL) 18beta1": the major is the leading digits of the third word.
        let text = String::from_utf8_lossy(&output.stdout);
        text.split(')')
            .nth(1)
            .map(|rest| {
                rest.trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|major| major.parse().ok())
            .unwrap_or_else(|| panic!("cannot read a version from `postgres --version`: {text}"))
    })
}

fn find_pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARTKEEPER_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "PARTKEEPER_PG_BIN={} holds no initdb; point it at the PostgreSQL server binaries",
            dir.display()
        );
        return dir;
    }
    // Debian's pg_config comes with libpq-dev and names a bindir even without the server.
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && dir.join("initdb").is_file() {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them with \
             `apt-get install postgresql` (Debian/Ubuntu; scripts/test.sh does it for you), \
             or set PARTKEEPER_PG_BIN to the directory holding initdb."
        ),
    }
}

/// The OS user the server runs as when the tests run as root (PostgreSQL refuses root).
pub(super) fn server_user() -> Option<(Uid, Gid)> {
    static USER: OnceLock<Option<(Uid, Gid)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !Uid::effective().is_root() {
            return None;
        }
        match User::from_name("postgres") {
            Ok(Some(user)) => Some((user.uid, user.gid)),
            _ => panic!(
                "the tests run as root, which PostgreSQL refuses, so the harness runs the server \
                 as the `postgres` OS user, and there is none. Install the `postgresql` package \
                 (it creates the user) or run `useradd --system postgres`."
            ),
        }
    })
}

/// A command for a server binary: run as the server user, in `cwd` (the test's working
/// directory may be unreadable to that user), with no inherited `PG*` variables steering it.
pub(super) fn pg_command(program: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(pg_bin_dir().join(program));
    cmd.current_dir(cwd)
        .env("HOME", cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    cmd
}
