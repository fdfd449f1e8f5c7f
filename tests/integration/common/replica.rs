//! Streaming replicas of harness clusters, made with `pg_basebackup -R` (or, where the installation
//! has only the server, a file copy under the SQL backup API), and waits on replication.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use super::cluster::{append_settings, prepare_dir, Cluster};
use super::database::try_query_scalar;
use super::eventually::{eventually, PATIENCE};
use super::server::{pg_bin_dir, pg_command, pg_major, server_user};
use super::{block_on, note};

/// Replicas get distinct `application_name`s, so that a primary with several can tell them apart.
static NEXT_REPLICA: AtomicU32 = AtomicU32::new(1);

/// Entries of a data directory that a base backup leaves out (as pg_basebackup does): the running
/// server's own files and what a starting server recreates. Directories named here are made empty.
const NOT_COPIED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_manifest",
    "tablespace_map",
    "standby.signal",
    "recovery.signal",
    "pg_internal.init",
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Where a replica streams from.
pub(super) struct Upstream {
    port: u16,
    /// How the primary's `pg_stat_replication` names this replica.
    application_name: String,
}

impl Cluster {
    /// A hot standby of `primary` on its own port, returned once it is streaming.
    pub fn start_replica(primary: &Cluster) -> Cluster {
        let (dir, watchdog) = prepare_dir();
        let data = dir.path().join("data");
        let application_name = format!("replica_{}", NEXT_REPLICA.fetch_add(1, Ordering::Relaxed));
        // -R writes standby.signal and a primary_conninfo holding these options; the copy backup
        // writes the same.
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name={application_name}",
            primary.port
        );
        if pg_bin_dir().join("pg_basebackup").is_file() {
            let backup = pg_command("pg_basebackup", dir.path())
                .arg("-D")
                .arg(&data)
                .args([
                    "-d",
                    &conninfo,
                    "-X",
                    "stream",
                    "-R",
                    "-c",
                    "fast",
                    "--no-sync",
                ])
                .output()
                .expect("run pg_basebackup");
            if !backup.status.success() {
                panic!(
                    "pg_basebackup from port {} failed: {}{}",
                    primary.port,
                    String::from_utf8_lossy(&backup.stdout),
                    String::from_utf8_lossy(&backup.stderr),
                )
            }
        } else {
            // Server-only installations (the npm builds scripts/pg-versions.sh uses) have no
            // pg_basebackup: copy the files under the SQL backup API instead.
            block_on(|| copy_backup(primary, &data));
            append_settings(&data, &[("primary_conninfo".into(), conninfo.clone())]);
            std::fs::write(data.join("standby.signal"), "").expect("write standby.signal");
            chown_to_server_user(&data);
        }
        // The copied postgresql.conf points the socket at the primary's directory.
        let socket_dir = dir.path().to_string_lossy().into_owned();
        append_settings(&data, &[("unix_socket_directories".into(), socket_dir)]);
        let upstream = Upstream {
            port: primary.port,
            application_name,
        };
        let replica = Cluster::launch(dir, data, watchdog, Some(upstream), false);
        block_on(|| replica.wait_until_streaming());
        note(format_args!(
            "replica on port {} streams from port {}",
            replica.port, primary.port
        ));
        replica
    }

    /// Waits until the primary reports this replica as streaming (`pg_stat_replication`).
    pub async fn wait_until_streaming(&self) {
        let upstream = self.upstream();
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE application_name = '{}' AND state = 'streaming'",
            upstream.application_name
        );
        let sql = &sql;
        let what = format!(
            "replica on port {} to stream from port {}",
            self.port, upstream.port
        );
        eventually(PATIENCE, &what, || async move {
            try_query_scalar::<i64>(upstream.port, "postgres", sql)
                .await
                .is_ok_and(|n| n > 0)
        })
        .await;
    }

    /// Waits until this replica has replayed everything the primary had written when called.
    pub async fn wait_for_replay(&self) {
        let upstream = self.upstream();
        let target: String = try_query_scalar(
            upstream.port,
            "postgres",
            "SELECT pg_current_wal_lsn()::text",
        )
        .await
        .unwrap_or_else(|e| panic!("read the primary's WAL position: {e}"));
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let sql = &sql;
        let what = format!("replica on port {} to replay up to {target}", self.port);
        eventually(PATIENCE, &what, || async move {
            try_query_scalar::<bool>(self.port, "postgres", sql)
                .await
                .unwrap_or(false)
        })
        .await;
    }

    fn upstream(&self) -> &Upstream {
        self.upstream
            .as_ref()
            .expect("only replicas made by Cluster::start_replica have a primary to wait on")
    }
}

/// A base backup of the running `primary` into `data` without `pg_basebackup`: a non-exclusive
/// backup through SQL, a plain copy of the data directory meanwhile (the server forces full page
/// writes until the backup stops, so torn pages are repaired by replay), then the `backup_label`
/// the server hands back. The copy holds no WAL: the replica streams it from the primary, which
/// keeps `wal_keep_size` of it.
async fn copy_backup(primary: &Cluster, data: &Path) {
    let (start, stop) = if pg_major() >= 15 {
        (
            "SELECT pg_backup_start('partkeeper harness replica', true)",
            "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)",
        )
    } else {
        // The non-exclusive form (third argument false) of the pre-15 names.
        (
            "SELECT pg_start_backup('partkeeper harness replica', true, false)",
            "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)",
        )
    };
    // A non-exclusive backup belongs to the session that started it: one connection throughout.
    let mut conn = primary.connect("postgres").await;
    sqlx::query(start)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("start a backup on port {}: {e}", primary.port));
    copy_data_dir(&primary.data, data);
    let (label, tablespace_map): (String, Option<String>) = sqlx::query_as(stop)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("stop the backup on port {}: {e}", primary.port));
    std::fs::write(data.join("backup_label"), label).expect("write backup_label");
    if let Some(map) = tablespace_map.filter(|map| !map.is_empty()) {
        std::fs::write(data.join("tablespace_map"), map).expect("write tablespace_map");
    }
}

/// Copies a live data directory; files the server removes meanwhile are skipped.
fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => panic!("read {}: {e}", from.display()),
    };
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if NOT_COPIED.contains(&name.as_ref()) {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&target)
                    .unwrap_or_else(|e| panic!("create {}: {e}", target.display()));
                if name == "pg_wal" {
                    copy_data_dir(
                        &source.join("archive_status"),
                        &target.join("archive_status"),
                    );
                }
            } else {
                copy_data_dir(&source, &target);
            }
        } else if kind.is_file()
            && !NOT_COPIED.contains(&name.as_ref())
            && !name.starts_with("pgsql_tmp")
        {
            match std::fs::copy(&source, &target) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => panic!("copy {}: {e}", source.display()),
            }
        } else if kind.is_symlink() {
            // pg_tblspc links; the harness makes no tablespaces, so nothing to relocate.
            panic!(
                "{} is a symlink (a tablespace?); the copy backup does not handle those",
                source.display()
            );
        }
    }
}

/// Hands a tree made by the test process over to the server user (when running as root).
fn chown_to_server_user(path: &Path) {
    let Some((uid, gid)) = server_user() else {
        return;
    };
    std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read a copied directory") {
            chown_to_server_user(&entry.expect("read a copied directory").path());
        }
    }
}
