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
