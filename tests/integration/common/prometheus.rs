//! A real Prometheus server (Debian's `prometheus` package; scripts/test.sh installs it) started
//! by a test on a free port of 127.0.0.1 with a temporary data directory, scraping and
//! evaluating every second, and read through its HTTP API (`/api/v1/alerts`, `/api/v1/targets`).
//! Dropping it kills the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::http_get_within;
use super::{eventually, note};

/// Scrape and rule evaluation interval: the test waits on alerts, so as often as Prometheus
/// allows in practice.
pub const INTERVAL: &str = "1s";
/// The `for:` every shipped rule gets in the test copy (the only change made to it).
pub const SHORT_FOR: &str = "1s";
/// How long Prometheus may take to be ready.
const START_PATIENCE: Duration = Duration::from_secs(30);
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// One alert as `/api/v1/alerts` shows it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: BTreeMap<String, String>,
}

/// One scrape target as `/api/v1/targets` shows it.
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub health: String,
    pub last_error: String,
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

/// The `prometheus` binary: `PROMETHEUS` in the environment, else the PATH.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "the prometheus server is needed by the live-Prometheus tests: \
                 apt-get install prometheus (scripts/test.sh does it), or set PROMETHEUS"
            )
        })
}

/// The shipped rules with every `for:` set to [`SHORT_FOR`] and nothing else changed; panics if
/// a rule has no `for:` (then the test would wait for nothing).
pub fn rules_with_short_for(shipped: &str) -> String {
    let mut rules = 0;
    let mut fors = 0;
    let text: Vec<String> = shipped
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("- alert:") {
                rules += 1;
            }
            match trimmed.strip_prefix("for: ") {
                Some(_) if !trimmed.contains('#') => {
                    fors += 1;
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}for: {SHORT_FOR}")
                }
                _ => line.to_string(),
            }
        })
        .collect();
    assert_eq!(
        rules, fors,
        "every alert rule has one `for:` line to shorten"
    );
    text.join("\n") + "\n"
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs` (YAML list items, indented by two spaces) and,
    /// if given, `rules` as its only rule file; returns once it is ready. `files` are written
    /// next to its configuration (certificates, say) first.
    pub async fn start(
        scrape_configs: &str,
        rules: Option<&str>,
        files: &[(&str, &Path)],
    ) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("partkeeper-prometheus-")
            .tempdir()
            .expect("a temp dir for Prometheus");
        for (name, from) in files {
            std::fs::copy(from, dir.path().join(name)).expect("copy a file for Prometheus");
        }
        let mut config = format!(
            "global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  evaluation_interval: {INTERVAL}\n"
        );
        if let Some(rules) = rules {
            std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
            config.push_str("rule_files: [rules.yml]\n");
        }
        config.push_str("scrape_configs:\n");
        config.push_str(scrape_configs);
        std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
        let bin = binary();
        // A free port can be taken between finding it and Prometheus binding it: try again.
        for attempt in 1..=3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join(format!("prometheus-{attempt}.log")))
                .unwrap();
            let mut child = Command::new(&bin)
                .current_dir(dir.path())
                .arg("--config.file=prometheus.yml")
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let started = Instant::now();
            while started.elapsed() < START_PATIENCE {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if matches!(
                    http_get_within(port, "/-/ready", API_TIMEOUT).await,
                    Some((200, _))
                ) {
                    note(format_args!("prometheus ready on port {port}"));
                    return Prometheus { child, port, dir };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = read_logs(dir.path());
            if attempt == 3 || !log.contains("address already in use") {
                panic!("prometheus did not start on port {port}:\n{log}\nconfiguration:\n{config}");
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Everything Prometheus logged (warnings and errors).
    pub fn log(&self) -> String {
        read_logs(self.dir.path())
    }

    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get_within(self.port, path, API_TIMEOUT).await?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// Pending and firing alerts.
    pub async fn alerts(&self) -> Vec<Alert> {
        let Some(data) = self.api("/api/v1/alerts").await else {
            return Vec::new();
        };
        data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                Alert {
                    name: labels.get("alertname").cloned().unwrap_or_default(),
                    state: a["state"].as_str().unwrap_or_default().to_string(),
                    labels,
                }
            })
            .collect()
    }

    /// Active scrape targets.
    pub async fn targets(&self) -> Vec<Target> {
        let Some(data) = self.api("/api/v1/targets").await else {
            return Vec::new();
        };
        data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| Target {
                job: t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Whether `name` fires with every label in `labels`.
    pub async fn firing(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.alerts()
            .await
            .iter()
            .any(|a| matches(a, name, labels) && a.state == "firing")
    }

    /// Waits until `name` fires with `labels`; returns how long that took.
    pub async fn until_firing(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let what = format!("{name} {labels:?} to fire");
        eventually(within, &what, || self.firing(name, labels)).await;
        started.elapsed()
    }

    /// Waits until `name` with `labels` is neither pending nor firing.
    pub async fn until_resolved(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let what = format!("{name} {labels:?} to resolve");
        eventually(within, &what, || async move {
            let alerts = self.alerts().await;
            // An empty answer may be a failed request: the API must have answered.
            self.api("/api/v1/alerts").await.is_some()
                && !alerts.iter().any(|a| matches(a, name, labels))
        })
        .await;
        started.elapsed()
    }

    /// Polls until every alert of `wanted` has been seen firing at least once (they need not
    /// fire at the same time); returns the time each first fired.
    pub async fn until_all_fired(
        &self,
        wanted: &[(&str, &[(&str, &str)])],
        within: Duration,
    ) -> BTreeMap<String, Duration> {
        let started = Instant::now();
        let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
        loop {
            let alerts = self.alerts().await;
            for (name, labels) in wanted {
                if !seen.contains_key(*name)
                    && alerts
                        .iter()
                        .any(|a| matches(a, name, labels) && a.state == "firing")
                {
                    seen.insert(name.to_string(), started.elapsed());
                }
            }
            if seen.len() == wanted.len() {
                return seen;
            }
            if started.elapsed() > within {
                let missing: BTreeSet<&str> = wanted
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| !seen.contains_key(*n))
                    .collect();
                panic!(
                    "within {within:?} these never fired: {missing:?}; fired: {seen:?}; now active: {alerts:#?}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn matches(a: &Alert, name: &str, labels: &[(&str, &str)]) -> bool {
    a.name == name
        && labels
            .iter()
            .all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_logs(dir: &Path) -> String {
    (1..=3)
        .filter_map(|a| std::fs::read_to_string(dir.join(format!("prometheus-{a}.log"))).ok())
        .collect()
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}
