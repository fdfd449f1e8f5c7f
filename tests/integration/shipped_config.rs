//! The configuration files shipped in the repository are valid as shipped.

use std::path::Path;

use crate::common::{Cli, Output};

/// `config validate` of the shipped file `relative` with `env`: exit 0, `pricing_data` in the
/// output, and the password of every URL nowhere.
fn validate(relative: &str, env: &[(&str, &str)]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let mut cli = Cli::new();
    for (k, v) in env {
        cli = cli.env(k, v);
    }
    let out = cli.run([
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
    out
}

const DATABASE_URL: (&str, &str) = ("DATABASE_URL", "postgres://app:hunter2@db.example:5432/app");

#[test]
fn the_default_configuration_is_valid() {
    validate("config/partkeeper.toml", &[DATABASE_URL]);
}

#[test]
fn the_kubernetes_configmap_configuration_is_valid() {
    validate("deploy/kubernetes/config/partkeeper.toml", &[DATABASE_URL]);
}

#[test]
fn the_fleet_example_is_valid() {
    let out = validate(
        "config/fleet.toml",
        &[
            (
                "PRICING_DATABASE_URL",
                "postgres://app:hunter2@pricing-db:5432/pricing",
            ),
            (
                "PRICING_REPLICA_URL",
                "postgres://app:hunter2@pricing-replica:5432/pricing",
            ),
            (
                "EVENTS_DATABASE_URL",
                "postgres://app:hunter2@events-db:5432/events",
            ),
        ],
    );
    assert!(out.stdout.contains("public.events"), "{out}");
    assert!(
        out.stderr.contains("2 database(s): pricing, events"),
        "{out}"
    );
}
