//! The configuration files shipped in the repository are valid as shipped.

use std::path::Path;

use crate::common::Cli;

fn validate(relative: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let out = Cli::new()
        .env("DATABASE_URL", "postgres://app:hunter2@db.example:5432/app")
        .run([
            "--config".as_ref(),
            path.as_os_str(),
            "config".as_ref(),
            "validate".as_ref(),
        ]);
    out.assert_success();
    assert!(out.stdout.contains("pricing_data"), "{out}");
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "{out}"
    );
}

#[test]
fn the_default_configuration_is_valid() {
    validate("config/partkeeper.toml");
}

#[test]
fn the_kubernetes_configmap_configuration_is_valid() {
    validate("deploy/kubernetes/config/partkeeper.toml");
}

#[test]
fn the_fleet_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fleet.toml");
    let out = Cli::new()
        .env(
            "PRICING_DATABASE_URL",
            "postgres://app:hunter2@pricing-db:5432/pricing",
        )
        .env(
            "PRICING_REPLICA_URL",
            "postgres://app:hunter2@pricing-replica:5432/pricing",
        )
        .env(
            "EVENTS_DATABASE_URL",
            "postgres://app:hunter2@events-db:5432/events",
        )
        .run([
            "--config".as_ref(),
            path.as_os_str(),
            "config".as_ref(),
            "validate".as_ref(),
        ]);
    out.assert_success();
    assert!(
        out.stdout.contains("pricing_data") && out.stdout.contains("public.events"),
        "{out}"
    );
    assert!(
        out.stderr.contains("2 database(s): pricing, events"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
        "{out}"
    );
}
