//! Tests of the deployment artefacts under deploy/ and the Dockerfile: the Prometheus rules and
//! their promtool unit tests, the Kubernetes manifests, the systemd units and the Grafana
//! dashboard. They need no database. promtool is required (`apt-get install prometheus`);
//! systemd-analyze and kubectl are used when present and skipped with a note otherwise.
//!
//! `referenced_metric_names()` and `SPEC_METRICS` are public so that other tests (e.g. against a
//! live daemon's /metrics) can check the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml_ng::Value;

/// The metrics of SPEC.md ("Metrics"), with their Prometheus types, exactly as exported.
pub const SPEC_METRICS: &[(&str, &str)] = &[
    ("partkeeper_build_info", "gauge"),
    ("partkeeper_up", "gauge"),
    ("partkeeper_leader", "gauge"),
    ("partkeeper_partitions", "gauge"),
    ("partkeeper_partition_size_bytes", "gauge"),
    ("partkeeper_partition_rows_estimate", "gauge"),
    ("partkeeper_table_size_bytes", "gauge"),
    ("partkeeper_future_partitions", "gauge"),
    ("partkeeper_coverage_end_timestamp_seconds", "gauge"),
    // SPEC part 2: the coverage gauge of integer-keyed tables (README, "Keys and intervals").
    ("partkeeper_coverage_end_value", "gauge"),
    ("partkeeper_next_partition_missing", "gauge"),
    ("partkeeper_default_partition_rows", "gauge"),
    // SPEC part 2, "The default partition at any size".
    ("partkeeper_default_rows_waiting", "gauge"),
    ("partkeeper_maintenance_runs_total", "counter"),
    (
        "partkeeper_maintenance_last_success_timestamp_seconds",
        "gauge",
    ),
    ("partkeeper_maintenance_duration_seconds", "histogram"),
    ("partkeeper_partitions_created_total", "counter"),
    ("partkeeper_partitions_dropped_total", "counter"),
    ("partkeeper_partitions_detached_total", "counter"),
    ("partkeeper_replication_lag_seconds", "gauge"),
    ("partkeeper_replication_lag_bytes", "gauge"),
    ("partkeeper_replica_up", "gauge"),
];

const RUNBOOK_BASE: &str = "https://github.com/partkeeper/partkeeper/blob/main/README.md";

/// Every `partkeeper_*` metric name used by deploy/prometheus/alerts.yml and
/// deploy/grafana/partkeeper.json, with the `_bucket`, `_sum` and `_count` suffixes of
/// histogram series taken off (so `partkeeper_maintenance_duration_seconds_bucket` counts as
/// `partkeeper_maintenance_duration_seconds`).
pub fn referenced_metric_names() -> BTreeSet<String> {
    let mut strings = Vec::new();
    yaml_strings(
        &parse_yaml(&deploy_path("prometheus/alerts.yml")),
        &mut strings,
    );
    json_strings(&dashboard(), &mut strings);
    strings
        .iter()
        .flat_map(|s| metric_names_in(s))
        .map(|name| strip_histogram_suffix(&name))
        .collect()
}

/// `x_bucket`, `x_sum` and `x_count` are series of the histogram `x`.
fn strip_histogram_suffix(name: &str) -> String {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
        .to_string()
}

// ---- helpers --------------------------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn deploy_path(rel: &str) -> PathBuf {
    repo_path("deploy").join(rel)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// All documents of a (possibly multi-document) YAML file.
fn parse_yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn dashboard() -> serde_json::Value {
    let path = deploy_path("grafana/partkeeper.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn yaml_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| yaml_strings(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| yaml_strings(v, out)),
        Value::Tagged(tagged) => yaml_strings(&tagged.value, out),
        _ => {}
    }
}

fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Words starting with `partkeeper_` (alert names are CamelCase and anchors have no `_`).
fn metric_names_in(text: &str) -> Vec<String> {
    // No ':' (allowed in recording rules' names, not in partkeeper's): prose says "name: ...".
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("partkeeper_") {
        let before = rest[..pos].chars().next_back();
        let tail = &rest[pos..];
        let end = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_name_char) && end > "partkeeper_".len() {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

fn get<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, k| v.get(*k))?.as_str()
}

/// (alert name, rule) for every alerting rule of alerts.yml.
fn alert_rules() -> Vec<(String, Value)> {
    let alerts = parse_yaml(&deploy_path("prometheus/alerts.yml"));
    let groups = get(&alerts, "groups")
        .as_sequence()
        .expect("alerts.yml: groups");
    groups
        .iter()
        .flat_map(|g| {
            get(g, "rules")
                .as_sequence()
                .expect("group without rules")
                .clone()
        })
        .filter_map(|rule| Some((get(&rule, "alert").as_str()?.to_string(), rule.clone())))
        .collect()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn promtool() -> PathBuf {
    find_on_path("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not on PATH: install it with `apt-get update && apt-get install -y \
             prometheus` (the CI script installs it)"
        )
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every *.yaml / *.yml file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()) == Some("kustomization.yaml")
}

/// The PrometheusRule text generated from alerts.yml: a header, then alerts.yml without its
/// leading comment, indented under `spec:`.
fn prometheus_rule_from_alerts(alerts: &str) -> String {
    let mut out = String::from(
        "# GENERATED from deploy/prometheus/alerts.yml: do not edit here. Edit alerts.yml, then run\n\
         #   PARTKEEPER_BLESS=1 cargo test --test integration deploy\n\
         # (the deploy tests fail while the two differ).\n\
         #\n\
         # PrometheusRule (Prometheus Operator) carrying partkeeper's alerting rules. If your Prometheus\n\
         # selects rules by a label (kube-prometheus-stack: `release: <name>`), add it in an overlay.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: partkeeper\n  labels:\n    app.kubernetes.io/name: partkeeper\n\
         spec:\n",
    );
    let body = alerts
        .lines()
        .skip_while(|l| l.starts_with('#') || l.trim().is_empty());
    for line in body {
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The systemd unit files, copied to a temporary directory with ExecStart pointing at an
/// executable that exists, so that `systemd-analyze verify` does not fail only because
/// /usr/local/bin/partkeeper is not installed on this machine.
fn systemd_units_in_tempdir() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("partkeeper");
    fs::copy("/bin/true", &fake).expect("copy /bin/true");
    let mut units = Vec::new();
    for name in [
        "partkeeper.service",
        "partkeeper-maintain.service",
        "partkeeper-maintain.timer",
    ] {
        let text = read(&deploy_path("systemd").join(name)).replace(
            "/usr/local/bin/partkeeper",
            fake.to_str().expect("utf-8 path"),
        );
        let path = dir.path().join(name);
        fs::write(&path, text).expect("write unit");
        units.push(path);
    }
    (dir, units)
}

/// `key=value` settings of a unit file (comments dropped; repeated keys keep every value).
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            settings
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
    }
    settings
}

// ---- Prometheus rules -----------------------------------------------------------------------

#[test]
fn promtool_check_rules_passes_on_the_alerting_rules() {
    let out = run(Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(deploy_path("prometheus/alerts.yml")));
    assert_success("promtool check rules deploy/prometheus/alerts.yml", &out);
}

#[test]
fn promtool_test_rules_passes_on_the_alert_unit_tests() {
    let out = run(Command::new(promtool())
        .arg("test")
        .arg("rules")
        .arg(deploy_path("prometheus/alerts_test.yml")));
    assert_success(
        "promtool test rules deploy/prometheus/alerts_test.yml",
        &out,
    );
}

#[test]
fn every_alert_has_a_firing_and_a_non_firing_test_case() {
    let tests = parse_yaml(&deploy_path("prometheus/alerts_test.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for group in get(&tests, "tests")
        .as_sequence()
        .expect("alerts_test.yml: tests")
    {
        for case in get(group, "alert_rule_test")
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let name = get(case, "alertname")
                .as_str()
                .expect("alertname")
                .to_string();
            match get(case, "exp_alerts").as_sequence() {
                Some(alerts) if !alerts.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let names: Vec<String> = alert_rules().into_iter().map(|(name, _)| name).collect();
    assert!(!names.is_empty(), "alerts.yml has no alerts");
    let missing: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let mut m = Vec::new();
            if !firing.contains(n) {
                m.push(format!("{n}: no firing case"));
            }
            if !quiet.contains(n) {
                m.push(format!("{n}: no non-firing case"));
            }
            m
        })
        .collect();
    assert!(missing.is_empty(), "alerts_test.yml lacks: {missing:#?}");
    let unknown: Vec<&String> = firing
        .union(&quiet)
        .filter(|n| !names.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "alerts_test.yml tests unknown alerts: {unknown:?}"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_its_readme_runbook() {
    let mut seen = BTreeSet::new();
    for (name, rule) in alert_rules() {
        assert!(seen.insert(name.clone()), "alert {name} is defined twice");
        assert!(
            name.starts_with("Partkeeper"),
            "alert {name} should start with Partkeeper"
        );
        let severity = str_at(&rule, &["labels", "severity"]);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity is {severity:?}, want critical or warning"
        );
        for key in ["summary", "description"] {
            let text = str_at(&rule, &["annotations", key]).unwrap_or_default();
            assert!(
                text.len() > 20,
                "{name}: annotation {key} missing or too short"
            );
        }
        let description = str_at(&rule, &["annotations", "description"]).unwrap_or_default();
        assert!(
            description.contains("partkeeper ") || description.contains("`partkeeper"),
            "{name}: the description should say which partkeeper command to run"
        );
        let want = format!("{RUNBOOK_BASE}#alert-{}", name.to_lowercase());
        assert_eq!(
            str_at(&rule, &["annotations", "runbook_url"]),
            Some(want.as_str()),
            "{name}: runbook_url"
        );
    }
}

#[test]
fn every_alert_is_per_database_and_its_commands_name_the_database() {
    // The rules keep `database` (one daemon maintains many databases): they aggregate only
    // `without` labels other than it, and group or match `by`/`on` lists only with it.
    for (name, rule) in alert_rules() {
        let expr = str_at(&rule, &["expr"]).expect("expr");
        for (keyword, must_hold) in [("without (", false), ("by (", true), ("on (", true)] {
            for list in expr
                .split(keyword)
                .skip(1)
                .filter_map(|s| s.split(')').next())
            {
                let holds = list.split(',').any(|l| l.trim() == "database");
                assert_eq!(
                    holds, must_hold,
                    "{name}: `{keyword}{list})` would add up or match several databases"
                );
            }
        }
        let summary = str_at(&rule, &["annotations", "summary"]).unwrap_or_default();
        assert!(
            summary.contains("$labels.database"),
            "{name}: the summary should name the database"
        );
        // Every command to run about a database carries its --database (`{{ $db }}`, set at
        // the start of the description, empty without the label).
        let description = str_at(&rule, &["annotations", "description"]).unwrap_or_default();
        assert!(
            description.starts_with(
                "{{ $db := \"\" }}{{ with $labels.database }}{{ $db = printf \" --database %s\" . }}{{ end -}}"
            ),
            "{name}: the description should start by setting $db"
        );
        let commands: Vec<&str> = description
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| c.starts_with("partkeeper "))
            .filter(|c| !c.starts_with("partkeeper config") && !c.starts_with("partkeeper migrate"))
            .collect();
        assert!(!commands.is_empty(), "{name}: no command in {description}");
        for command in commands {
            assert!(
                command.contains("{{ $db }}"),
                "{name}: `{command}` does not pass --database"
            );
        }
    }
}

#[test]
fn the_alerts_cover_what_the_runbook_asks_to_alert_on() {
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    for (name, severity) in [
        ("PartkeeperPartitionCreationFailed", "critical"),
        ("PartkeeperMaintenanceStale", "critical"),
        ("PartkeeperReplicationLagCritical", "critical"),
        ("PartkeeperDown", "critical"),
        ("PartkeeperNextPartitionMissing", "warning"),
        ("PartkeeperCoverageEndingSoon", "warning"),
        ("PartkeeperPartitionTooLarge", "warning"),
        ("PartkeeperReplicationLagWarning", "warning"),
        ("PartkeeperRowsInDefaultPartition", "warning"),
        ("PartkeeperReplicaDown", "warning"),
        ("PartkeeperNoLeader", "warning"),
    ] {
        assert!(names.contains(name), "alerts.yml lacks {name}");
        let rule = alert_rules()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1;
        assert_eq!(
            str_at(&rule, &["labels", "severity"]),
            Some(severity),
            "{name}"
        );
    }
}

// ---- metric names ---------------------------------------------------------------------------

#[test]
fn every_metric_in_the_alerts_and_the_dashboard_is_in_the_spec() {
    let spec: BTreeSet<&str> = SPEC_METRICS.iter().map(|(name, _)| *name).collect();
    let referenced = referenced_metric_names();
    assert!(
        referenced.len() >= 10,
        "too few metric names found: {referenced:?}"
    );
    let unknown: Vec<&String> = referenced
        .iter()
        .filter(|n| !spec.contains(n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "metric names not in SPEC.md's table: {unknown:?}"
    );
}

#[test]
fn the_spec_metric_list_is_well_formed() {
    let names: BTreeSet<&str> = SPEC_METRICS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), SPEC_METRICS.len(), "duplicate names");
    for (name, kind) in SPEC_METRICS {
        assert!(name.starts_with("partkeeper_"), "{name}");
        assert!(
            matches!(*kind, "gauge" | "counter" | "histogram"),
            "{name}: {kind}"
        );
        assert_eq!(
            *kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
}

#[test]
fn the_metric_name_extraction_finds_names_and_strips_histogram_suffixes() {
    assert_eq!(
        metric_names_in(
            "sum(rate(partkeeper_maintenance_duration_seconds_bucket[1d])) / \
             x_partkeeper_other + partkeeper_up{job=~\".*partkeeper.*\"} #alert-partkeeperdown"
        ),
        vec![
            "partkeeper_maintenance_duration_seconds_bucket",
            "partkeeper_up"
        ]
    );
    let names = referenced_metric_names();
    assert!(
        names.contains("partkeeper_maintenance_duration_seconds"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with("_bucket")), "{names:?}");
}

// ---- Grafana dashboard ----------------------------------------------------------------------

#[test]
fn the_dashboard_shows_every_metric_in_the_spec() {
    let mut strings = Vec::new();
    json_strings(&dashboard(), &mut strings);
    let shown: BTreeSet<String> = strings
        .iter()
        .flat_map(|s| metric_names_in(s))
        .map(|n| strip_histogram_suffix(&n))
        .collect();
    let missing: Vec<&str> = SPEC_METRICS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !shown.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows no panel for {missing:?}"
    );
}

#[test]
fn the_dashboard_has_the_datasource_database_and_table_variables_and_unique_panels() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    assert_eq!(dash["uid"], "partkeeper");
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    // One daemon maintains many databases: pick one or more, then tables of those.
    let database = var("database");
    assert_eq!(
        database["definition"],
        "label_values(partkeeper_up, database)"
    );
    let table = var("table");
    assert_eq!(
        table["definition"],
        "label_values(partkeeper_partitions{database=~\"$database\"}, table)"
    );
    for v in [database, table] {
        assert_eq!(v["multi"], true, "{}", v["name"]);
        assert_eq!(v["includeAll"], true, "{}", v["name"]);
        // ".*" also matches series without the label (a daemon of the previous release).
        assert_eq!(v["allValue"], ".*", "{}", v["name"]);
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{}", v["name"]);
        assert_eq!(v["query"]["query"], v["definition"], "{}", v["name"]);
    }
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(
        names,
        ["datasource", "database", "table"],
        "a variable comes after those it depends on"
    );

    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
            assert_database_filtered_and_named(id, t);
        }
    }
}

/// A dashboard query shows the selected databases only, never adds up several databases, and
/// its legend names the database (except the two instance-level series, which have none).
fn assert_database_filtered_and_named(panel: u64, target: &serde_json::Value) {
    let expr = target["expr"].as_str().expect("expr");
    let legend = target["legendFormat"].as_str().unwrap_or_default();
    assert!(
        expr.contains("database=~\"$database\""),
        "panel {panel}: {expr} is not filtered by the database variable"
    );
    // Every `by (...)` that keeps a per-database label keeps `database` as well.
    for list in expr
        .split("by (")
        .skip(1)
        .filter_map(|s| s.split(')').next())
    {
        let labels: Vec<&str> = list.split(',').map(str::trim).collect();
        let per_database = ["table", "partition", "replica", "result", "le"];
        if labels.iter().any(|l| per_database.contains(l)) {
            assert!(
                labels.contains(&"database"),
                "panel {panel}: `by ({list})` adds up several databases in {expr}"
            );
        }
    }
    let instance_level = expr.starts_with("up{") || expr.starts_with("partkeeper_build_info");
    assert!(
        instance_level || legend.contains("{{database}}"),
        "panel {panel}: legend {legend:?} of {expr} does not name the database"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool has no expression checker, so the queries become recording rules of a
    // temporary file (Grafana's variables replaced by plausible values) for `check rules`.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut add = |expr: &str| {
        let expr = expr
            .replace("$__rate_interval", "2m")
            .replace("$__interval", "1h")
            .replace("$database", ".*")
            .replace("$table", ".*");
        let n = rules.matches("record:").count();
        rules.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    };
    let dash = dashboard();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            add(t["expr"].as_str().expect("target without expr"));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard_rules.yml");
    fs::write(&file, rules).expect("write rules");
    let out = run(Command::new(promtool()).args(["check", "rules"]).arg(&file));
    assert_success("promtool check rules on the dashboard's queries", &out);
}

// ---- Kubernetes -----------------------------------------------------------------------------

#[test]
fn every_kubernetes_yaml_document_has_api_version_kind_and_name() {
    let files = yaml_files(&deploy_path("kubernetes"));
    assert!(files.len() >= 10, "too few manifests: {files:?}");
    for file in files {
        for doc in parse_yaml_documents(&file) {
            let where_ = file.display();
            assert!(
                get(&doc, "apiVersion")
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{where_}: no apiVersion"
            );
            let kind = get(&doc, "kind").as_str().unwrap_or_default();
            assert!(!kind.is_empty(), "{where_}: no kind");
            if is_kustomization(&file) {
                assert_eq!(kind, "Kustomization", "{where_}");
            } else {
                assert!(
                    str_at(&doc, &["metadata", "name"]).is_some_and(|s| !s.is_empty()),
                    "{where_}: no metadata.name"
                );
            }
        }
    }
}

#[test]
fn every_kustomization_lists_existing_files_and_never_the_example_secret() {
    let kustomizations: Vec<PathBuf> = yaml_files(&deploy_path("kubernetes"))
        .into_iter()
        .filter(|p| is_kustomization(p))
        .collect();
    assert!(kustomizations.len() >= 3, "{kustomizations:?}");
    for file in kustomizations {
        let dir = file.parent().unwrap();
        let k = parse_yaml(&file);
        let mut listed: Vec<String> = Vec::new();
        for r in get(&k, "resources").as_sequence().into_iter().flatten() {
            listed.push(r.as_str().expect("resource").to_string());
        }
        for generator in get(&k, "configMapGenerator")
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for f in get(generator, "files").as_sequence().into_iter().flatten() {
                listed.push(f.as_str().expect("file").to_string());
            }
        }
        for entry in listed {
            assert!(
                !entry.contains("secret.example"),
                "{}: lists {entry}, which must never be applied",
                file.display()
            );
            assert!(
                dir.join(&entry).exists(),
                "{}: {entry} does not exist",
                file.display()
            );
        }
    }
}

#[test]
fn the_kustomizations_build_with_kubectl_when_it_is_installed() {
    let Some(kubectl) = find_on_path("kubectl") else {
        eprintln!("note: kubectl is not installed; `kubectl kustomize` was not tried");
        return;
    };
    for (dir, kinds) in [
        (
            "kubernetes",
            &[
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "PrometheusRule",
                "Service",
                "ServiceMonitor",
            ][..],
        ),
        ("kubernetes/cronjob", &["ConfigMap", "CronJob"][..]),
        (
            "kubernetes-secure",
            &[
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "PrometheusRule",
                "Service",
                "ServiceMonitor",
            ][..],
        ),
    ] {
        let out = run(Command::new(&kubectl)
            .arg("kustomize")
            .arg(deploy_path(dir)));
        assert_success(&format!("kubectl kustomize deploy/{dir}"), &out);
        let built = String::from_utf8(out.stdout).expect("utf-8");
        let mut got: Vec<String> = serde_yaml_ng::Deserializer::from_str(&built)
            .map(|d| {
                let v: Value = serde::Deserialize::deserialize(d).expect("kustomize output");
                get(&v, "kind").as_str().unwrap_or_default().to_string()
            })
            .collect();
        got.sort();
        assert_eq!(got, kinds, "deploy/{dir}");
        assert!(
            !built.contains("CHANGE_ME"),
            "deploy/{dir} applies the example secret"
        );
    }
}

#[test]
fn the_prometheus_rule_carries_the_same_rules_as_alerts_yml() {
    let alerts_path = deploy_path("prometheus/alerts.yml");
    let rule_path = deploy_path("kubernetes/prometheusrule.yaml");
    let generated = prometheus_rule_from_alerts(&read(&alerts_path));
    if env::var_os("PARTKEEPER_BLESS").is_some() {
        fs::write(&rule_path, &generated).expect("write prometheusrule.yaml");
    }
    let rule = parse_yaml(&rule_path);
    let alerts = parse_yaml(&alerts_path);
    assert_eq!(get(&rule, "kind").as_str(), Some("PrometheusRule"));
    assert_eq!(
        str_at(&rule, &["metadata", "name"]),
        Some("partkeeper"),
        "PrometheusRule name"
    );
    assert!(
        get(get(&rule, "spec"), "groups") == get(&alerts, "groups"),
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: \
         regenerate it with `PARTKEEPER_BLESS=1 cargo test --test integration deploy`"
    );
    assert_eq!(
        read(&rule_path),
        generated,
        "prometheusrule.yaml has the same rules but is not the generated text: regenerate it \
         with `PARTKEEPER_BLESS=1 cargo test --test integration deploy`"
    );
}

fn daemon_container() -> (Value, Value) {
    let deployment = parse_yaml(&deploy_path("kubernetes/deployment.yaml"));
    let pod = get(get(get(&deployment, "spec"), "template"), "spec").clone();
    let container = get(&pod, "containers")[0].clone();
    (deployment, container)
}

#[test]
fn the_deployment_runs_two_locked_down_replicas_probed_on_port_9790() {
    let (deployment, c) = daemon_container();
    assert_eq!(get(get(&deployment, "spec"), "replicas").as_u64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(30));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(c["ports"][0]["name"].as_str(), Some("metrics"));
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(9790));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["port"].as_str(),
        Some("metrics")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("metrics")
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "DATABASE_URL")
            .map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone()),
        Some(Value::from("partkeeper-database"))
    );
    assert_eq!(
        c["volumeMounts"][0]["mountPath"].as_str(),
        Some("/etc/partkeeper")
    );
}

#[test]
fn the_cronjob_runs_maintain_daily_at_two_without_overlap_with_the_daemons_image() {
    let cronjob = parse_yaml(&deploy_path("kubernetes/cronjob/cronjob.yaml"));
    let spec = &cronjob["spec"];
    assert_eq!(spec["schedule"].as_str(), Some("0 2 * * *"));
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
    let c = &spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.last(), Some(&"maintain"), "{args:?}");
    let (_, daemon) = daemon_container();
    assert_eq!(
        c["image"], daemon["image"],
        "CronJob and Deployment images differ"
    );
    assert_eq!(c["securityContext"], daemon["securityContext"]);
}

#[test]
fn the_configuration_manages_pricing_data_monthly_as_the_spec_example() {
    let path = deploy_path("kubernetes/config/partkeeper.toml");
    let config: toml::Value = toml::from_str(&read(&path)).expect("partkeeper.toml");
    assert_eq!(config["server"]["listen"].as_str(), Some("0.0.0.0:9790"));
    assert_eq!(
        config["schedule"]["maintenance"].as_str(),
        Some("0 2 * * *")
    );
    let table = &config["tables"][0];
    assert_eq!(table["name"].as_str(), Some("public.pricing_data"));
    assert_eq!(table["column"].as_str(), Some("date"));
    assert_eq!(table["interval"].as_str(), Some("1 month"));
    assert_eq!(table["premake"].as_integer(), Some(3));
    assert_eq!(table["retention"].as_str(), Some("36 months"));
    let known: &[(&str, &[&str])] = &[
        ("database", &["url", "lock_timeout", "statement_timeout"]),
        ("server", &["listen"]),
        (
            "schedule",
            &["maintenance", "timezone", "run_on_start", "metrics_refresh"],
        ),
    ];
    for (section, keys) in known {
        for key in config[section].as_table().expect(section).keys() {
            assert!(keys.contains(&key.as_str()), "unknown key {section}.{key}");
        }
    }
}

// ---- systemd --------------------------------------------------------------------------------

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Some(analyze) = find_on_path("systemd-analyze") else {
        eprintln!("note: systemd-analyze is not installed; the systemd units were not verified");
        return;
    };
    let (_dir, units) = systemd_units_in_tempdir();
    let out = run(Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&units));
    assert_success("systemd-analyze verify", &out);
    // verify exits 0 on unknown keys and unparsable values, and only warns: treat any output
    // as a failure.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );

    // The exposure score of `systemd-analyze security` (0 = locked down, 10 = exposed, shown
    // here x10) must stay in the "OK" band. --offline needs systemd 250.
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&units[0]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unrecognized option") || stderr.contains("Unknown option") {
        eprintln!("note: this systemd-analyze has no offline security check");
    } else {
        assert_success(
            "systemd-analyze security --threshold=20 partkeeper.service",
            &out,
        );
    }
}

#[test]
fn the_systemd_units_run_partkeeper_hardened() {
    let daemon = unit_settings(&read(&deploy_path("systemd/partkeeper.service")));
    let one = |k: &str| daemon.get(k).and_then(|v| v.last()).map(String::as_str);
    assert_eq!(
        one("ExecStart"),
        Some("/usr/local/bin/partkeeper --config /etc/partkeeper/partkeeper.toml --log-format json run")
    );
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("Restart", "on-failure"),
        ("EnvironmentFile", "/etc/partkeeper/partkeeper.env"),
        ("TimeoutStopSec", "15"),
    ] {
        assert_eq!(one(key), Some(want), "partkeeper.service {key}");
    }
    assert!(daemon["SystemCallFilter"].contains(&"@system-service".to_string()));
    assert!(one("DynamicUser") == Some("yes") || one("User") == Some("partkeeper"));

    let oneshot = unit_settings(&read(&deploy_path("systemd/partkeeper-maintain.service")));
    assert_eq!(oneshot["Type"], ["oneshot"]);
    assert!(oneshot["ExecStart"][0].ends_with(" maintain"));
    let timer = unit_settings(&read(&deploy_path("systemd/partkeeper-maintain.timer")));
    assert_eq!(timer["OnCalendar"], ["*-*-* 02:00:00 UTC"]);
}

// ---- Docker ---------------------------------------------------------------------------------

#[test]
fn the_dockerfile_builds_locked_and_runs_the_daemon_as_a_non_root_user() {
    // The image cannot be built here (no Docker engine); these are its contract lines.
    let dockerfile = read(&repo_path("Dockerfile"));
    for line in [
        "FROM rust:1-bookworm AS builder",
        "FROM debian:bookworm-slim",
        "USER 65532:65532",
        "EXPOSE 9790",
        "ENV PARTKEEPER_CONFIG=/etc/partkeeper/partkeeper.toml",
        "ENTRYPOINT [\"partkeeper\"]",
        "CMD [\"run\"]",
    ] {
        assert!(
            dockerfile.lines().any(|l| l.trim() == line),
            "Dockerfile lacks `{line}`"
        );
    }
    assert_eq!(
        dockerfile.matches("cargo build --release --locked").count(),
        2,
        "the dependency layer and the real build both use cargo build --release --locked"
    );
    let ignore = read(&repo_path(".dockerignore"));
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}
