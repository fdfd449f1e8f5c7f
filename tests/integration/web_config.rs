//! `--web.config.file` / `server.web_config_file` on a live daemon: TLS, basic auth on
//! `/metrics` and `/status` (probes stay open), client certificates, and bad files refused with
//! exit 2. The real Prometheus scraping over TLS is in `live_prometheus`.

use std::time::Duration;

use crate::common::fixtures::{self, pricing_db, MONTHLY};
use crate::common::http::{http_get_within, RunningDaemon};
use crate::common::tls::{basic_auth, https_get, Pki, PASSWORD, USER};
use crate::common::{eventually, Cli, PATIENCE};

const PROMPT: Duration = Duration::from_secs(5);

/// A daemon configuration for `url` on a free port; `server_extra` goes under `[server]`.
fn config(url: &str, server_extra: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nconnect_timeout = \"5s\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\
         {server_extra}\n\n[schedule]\nmaintenance = \"0 0 1 1 *\"\nmetrics_refresh = \"1s\"\n{MONTHLY}"
    )
}

#[tokio::test]
async fn over_tls_metrics_and_status_need_the_password_and_the_probes_do_not() {
    let db = pricing_db().await;
    let pki = Pki::new();
    let web = pki.web_config("web.yml", None);
    let toml = config(&fixtures::url_with_password(&db), "");
    let daemon =
        RunningDaemon::start_with(&toml, &["--web.config.file", web.to_str().unwrap()]).await;
    let (port, tls) = (daemon.port, pki.client(false));
    let right = basic_auth(USER, PASSWORD);
    let wrong = basic_auth(USER, "not-the-password");
    let nobody = basic_auth("nobody", PASSWORD);

    let tls_ref = &tls;
    eventually(
        PATIENCE,
        "/readyz 200 over TLS without credentials",
        || async move {
            https_get(tls_ref, port, "/readyz", None, PROMPT)
                .await
                .is_ok_and(|(c, _)| c == 200)
        },
    )
    .await;
    let (code, body) = https_get(&tls, port, "/healthz", None, PROMPT)
        .await
        .unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    for path in ["/metrics", "/status", "/nowhere"] {
        for (who, auth) in [
            ("no", None),
            ("a wrong", Some(&wrong)),
            ("an unknown user's", Some(&nobody)),
        ] {
            let (code, body) = https_get(&tls, port, path, auth.map(String::as_str), PROMPT)
                .await
                .unwrap();
            assert_eq!(code, 401, "{path} with {who} password: {body}");
            assert!(!body.contains("partkeeper_"), "{body}");
        }
    }
    let (code, metrics) = https_get(&tls, port, "/metrics", Some(&right), PROMPT)
        .await
        .unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("# TYPE partkeeper_up gauge"), "{metrics}");
    let (code, status) = https_get(&tls, port, "/status", Some(&right), PROMPT)
        .await
        .unwrap();
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"leader\""), "{status}");

    // Plain HTTP gets no answer from a TLS port.
    let plain = http_get_within(port, "/healthz", PROMPT).await;
    assert!(
        !matches!(plain, Some((200, _))),
        "plain HTTP must not be served: {plain:?}"
    );
    let log = daemon.daemon.stderr();
    assert!(
        log.contains("basic auth for /metrics and /status (1 user(s))"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");

    // SIGTERM stops the HTTPS server as cleanly as the plain one.
    let RunningDaemon { daemon, .. } = daemon;
    daemon.terminate();
    let out = daemon.wait(Duration::from_secs(10)).await;
    out.assert_success();
}

#[tokio::test]
async fn client_certificates_are_required_when_the_file_in_the_toml_says_so() {
    let db = pricing_db().await;
    let pki = Pki::new();
    let web = pki.web_config("web.yml", Some("RequireAndVerifyClientCert"));
    let toml = config(
        &fixtures::url_with_password(&db),
        &format!("web_config_file = \"{}\"", web.display()),
    );
    let daemon = RunningDaemon::start(&toml).await;
    let port = daemon.port;
    let (with_cert, without) = (pki.client(true), pki.client(false));
    let right = basic_auth(USER, PASSWORD);

    let with_cert_ref = &with_cert;
    let right_ref = &right;
    eventually(
        PATIENCE,
        "/metrics 200 with a client certificate",
        || async move {
            https_get(with_cert_ref, port, "/metrics", Some(right_ref), PROMPT)
                .await
                .is_ok_and(|(c, _)| c == 200)
        },
    )
    .await;
    let refused = https_get(&without, port, "/metrics", Some(&right), PROMPT).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    // The certificate is not a password: basic auth is still asked for.
    let (code, _) = https_get(&with_cert, port, "/metrics", None, PROMPT)
        .await
        .unwrap();
    assert_eq!(code, 401);
}

#[tokio::test]
async fn a_bad_web_config_exits_2_naming_the_file_and_what_to_fix() {
    let db = pricing_db().await;
    let pki = Pki::new();
    let write = |name: &str, text: &str| {
        let p = pki.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        (pki.path("missing.yml"), "cannot read it"),
        (write("hash.yml", "basic_auth_users:\n  prometheus: hunter2\n"), "not a bcrypt hash"),
        (write("key.yml", "tls_server_config:\n  cert_file: server.crt\n"), "key_file is missing"),
        (
            write("extra.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            "remove the other keys",
        ),
        (
            write("pair.yml", "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n"),
            "does not go with the certificate",
        ),
        (
            write("nocert.yml", "tls_server_config:\n  cert_file: absent.crt\n  key_file: server.key\n"),
            "absent.crt",
        ),
        (
            write("notpem.yml", "tls_server_config:\n  cert_file: hash.yml\n  key_file: server.key\n"),
            "no certificate in it",
        ),
    ];
    let toml = config(&fixtures::url_with_password(&db), "");
    let cli = Cli::new().config(&toml);
    for (path, says) in &cases {
        let p = path.to_str().unwrap();
        let out = cli.run_async(["run", "--web.config.file", p]).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("--web.config.file")
                && out.stderr.contains(p)
                && out.stderr.contains(says),
            "{says}: {out}"
        );
        assert!(!out.stderr.contains("hunter2"), "{out}");
        assert!(!out.stderr.contains("listening"), "nothing listens: {out}");

        let via_toml = Cli::new().config(&format!("{toml}\n").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:0\"\nweb_config_file = \"{p}\""),
        ));
        let out = via_toml.run_async(["config", "validate"]).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("server.web_config_file") && out.stderr.contains(says),
            "{says}: {out}"
        );
    }
    // And a good one is accepted by `config validate`, which says what it turns on.
    let good = pki.web_config("good.yml", Some("VerifyClientCertIfGiven"));
    let out = Cli::new()
        .config(&toml.replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:0\"\nweb_config_file = \"{}\"",
                good.display()
            ),
        ))
        .run_async(["config", "validate"])
        .await;
    out.assert_success();
    assert!(
        out.stderr
            .contains("TLS (1.2+, client certificates verified if given), basic auth"),
        "{out}"
    );
}

/// The Kubernetes probes hit paths the web configuration leaves open, and the secure overlay
/// (deploy/kubernetes-secure) switches them to HTTPS and the ServiceMonitor to https with
/// credentials; otherwise the kubelet would restart every secured pod.
#[test]
fn the_kubernetes_probes_use_open_paths_and_the_secure_overlay_probes_over_https() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let deployment: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/kubernetes/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(
            partkeeper::daemon::serve::OPEN_PATHS.contains(&path),
            "{probe} {path} needs credentials the kubelet does not have"
        );
    }
    let overlay =
        std::fs::read_to_string(root.join("deploy/kubernetes-secure/kustomization.yaml")).unwrap();
    for line in [
        "path: /spec/template/spec/containers/0/livenessProbe/httpGet/scheme",
        "path: /spec/template/spec/containers/0/readinessProbe/httpGet/scheme",
        "value: HTTPS",
        "value: --web.config.file=/etc/partkeeper-web/web.yml",
        "path: /spec/endpoints/0/basicAuth",
        "path: /spec/endpoints/0/tlsConfig",
        "value: https",
    ] {
        assert!(overlay.contains(line), "the secure overlay lacks {line:?}");
    }
}
