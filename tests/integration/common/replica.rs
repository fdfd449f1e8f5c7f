//! Streaming replicas of harness clusters, made with `pg_basebackup -R`, and waits on replication.

use std::sync::atomic::{AtomicU32, Ordering};

use super::cluster::{append_settings, prepare_dir, Cluster};
use super::database::try_query_scalar;
use super::eventually::{eventually, PATIENCE};
use super::server::pg_command;
use super::{block_on, note};

/// Replicas get distinct `application_name`s, so that a primary with several can tell them apart.
static NEXT_REPLICA: AtomicU32 = AtomicU32::new(1);

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
        // -R writes standby.signal and a primary_conninfo holding these options.
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name={application_name}",
            primary.port
        );
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
