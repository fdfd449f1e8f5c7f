//! `server.web_config_file` / `--web.config.file`: the Prometheus exporter-toolkit web
//! configuration (the file postgres_exporter and node_exporter take), so that a scrape
//! configuration written for any exporter works against partkeeper unchanged.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # paths relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, as below
//!   client_ca_file: ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! What is protected: TLS, when configured, covers the whole listener. Basic auth covers
//! `/metrics` and `/status`; `/healthz` and `/readyz` stay open so that Kubernetes probes and
//! service managers, which carry no credentials, keep working (they say "ok" or why the primary
//! does not answer, never a secret). Client certificates are checked during the TLS handshake,
//! so with `RequireAndVerifyClientCert` a probe without a certificate cannot connect at all:
//! see deploy/kubernetes/deployment.yaml.
//!
//! Differences from exporter-toolkit, each refused with a message rather than silently
//! ignored: `RequestClientCert` and `RequireAnyClientCert` (an unverified certificate
//! authenticates nothing), the other `tls_server_config` keys (`cipher_suites`,
//! `curve_preferences`, `client_allowed_sans`, inline `cert`/`key`/`client_ca`, ...),
//! `http_server_config` and `rate_limit`. rustls speaks TLS 1.2 and 1.3 only, so `TLS10` and
//! `TLS11` mean TLS 1.2 here. The file is read once at start: restart to load new certificates.
//! `parse` is pure; `load` reads the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

use super::basic_auth::BasicAuth;

/// The file as written (unknown keys refused).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebConfig {
    #[serde(default)]
    pub tls_server_config: Option<RawTls>,
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    pub min_version: Option<String>,
}

/// Whether and how a client certificate is asked for (exporter-toolkit's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, but checked against the CA if sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// The validated TLS settings, paths resolved against the web config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: MinVersion,
}

/// The validated web configuration (pure: no file other than itself read yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash.
    pub users: BTreeMap<String, String>,
}

/// What the HTTP server needs: the rustls configuration (TLS) and the users (basic auth).
#[derive(Clone, Default)]
pub struct WebSecurity {
    pub tls: Option<Arc<ServerConfig>>,
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// One line for the log: what is on.
    pub summary: String,
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl WebSecurity {
    /// Plain HTTP, no authentication (no web configuration file).
    pub fn none() -> WebSecurity {
        WebSecurity {
            tls: None,
            basic_auth: None,
            summary: "plain HTTP, no authentication".into(),
        }
    }
}

/// Parses and checks the file's text; relative paths are taken from `dir` (pure).
pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
    let raw: RawWebConfig = if text.trim().is_empty() {
        RawWebConfig::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("unknown field") {
                format!(
                    "{msg}. partkeeper reads tls_server_config (cert_file, key_file, \
                     client_auth_type, client_ca_file, min_version) and basic_auth_users of \
                     the exporter-toolkit format; remove the other keys"
                )
            } else {
                msg
            }
        })?
    };
    let mut problems = Vec::new();
    let tls = raw.tls_server_config.and_then(|t| {
        let resolved = |p: &Option<String>| {
            p.as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| dir.join(p))
        };
        let (cert, key, ca) = (
            resolved(&t.cert_file),
            resolved(&t.key_file),
            resolved(&t.client_ca_file),
        );
        let client_auth = match t.client_auth_type.as_deref().map(str::trim) {
            None | Some("") | Some("NoClientCert") => ClientAuth::None,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::Require,
            Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
                problems.push(format!(
                    "tls_server_config.client_auth_type: {other} accepts a certificate without \
                     checking it, which authenticates nothing; use VerifyClientCertIfGiven or \
                     RequireAndVerifyClientCert with client_ca_file"
                ));
                ClientAuth::None
            }
            Some(other) => {
                problems.push(format!(
                    "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, \
                     VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ));
                ClientAuth::None
            }
        };
        let min_version = match t.min_version.as_deref().map(str::trim) {
            None | Some("") | Some("TLS10") | Some("TLS11") | Some("TLS12") => MinVersion::Tls12,
            Some("TLS13") => MinVersion::Tls13,
            Some(other) => {
                problems.push(format!(
                    "tls_server_config.min_version: {other:?} is not one of TLS10, TLS11, TLS12, TLS13"
                ));
                MinVersion::Tls12
            }
        };
        match (&ca, client_auth) {
            (Some(_), ClientAuth::None) => problems.push(
                "tls_server_config: client_ca_file is set but client_auth_type is not; set \
                 client_auth_type to RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
                    .into(),
            ),
            (None, ClientAuth::VerifyIfGiven | ClientAuth::Require) => problems.push(
                "tls_server_config: client_auth_type asks for client certificates; set \
                 client_ca_file to the CA that signs them"
                    .into(),
            ),
            _ => {}
        }
        match (cert, key) {
            (Some(cert_file), Some(key_file)) => Some(TlsSettings {
                cert_file,
                key_file,
                client_auth,
                client_ca_file: ca,
                min_version,
            }),
            (None, None) if t.client_auth_type.is_none() && t.client_ca_file.is_none() => None,
            (Some(_), None) => {
                problems.push("tls_server_config: key_file is missing (cert_file is set)".into());
                None
            }
            _ => {
                problems.push(
                    "tls_server_config: cert_file is missing; TLS needs cert_file and key_file"
                        .into(),
                );
                None
            }
        }
    });
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if user.is_empty() || user.contains(':') {
            problems.push(format!(
                "basic_auth_users: {user:?} cannot be a user name (empty or with a ':')"
            ));
            continue;
        }
        match hash.trim().parse::<bcrypt::HashParts>() {
            Ok(_) => {
                users.insert(user, hash.trim().to_string());
            }
            Err(_) => problems.push(format!(
                "basic_auth_users.{user}: not a bcrypt hash; write one made by e.g. \
                 `htpasswd -nBC 10 \"\" | tr -d ':\\n'` (it starts with $2y$ or $2b$)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(WebConfig { tls, users })
    } else {
        Err(problems.join("; "))
    }
}

/// Reads the web configuration file and the certificate files it names.
pub fn load(path: &Path) -> Result<WebSecurity, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let web = parse(&text, dir)?;
    let tls = web.tls.as_ref().map(server_config).transpose()?;
    let mut on = Vec::new();
    match &web.tls {
        Some(t) => on.push(format!(
            "TLS ({}{})",
            match t.min_version {
                MinVersion::Tls12 => "1.2+",
                MinVersion::Tls13 => "1.3",
            },
            match t.client_auth {
                ClientAuth::None => "",
                ClientAuth::VerifyIfGiven => ", client certificates verified if given",
                ClientAuth::Require => ", client certificates required",
            }
        )),
        None => on.push("plain HTTP".into()),
    }
    if web.users.is_empty() {
        on.push("no authentication".into());
    } else {
        on.push(format!(
            "basic auth for /metrics and /status ({} user(s))",
            web.users.len()
        ));
    }
    Ok(WebSecurity {
        tls: tls.map(Arc::new),
        basic_auth: (!web.users.is_empty()).then(|| Arc::new(BasicAuth::new(web.users))),
        summary: on.join(", "),
    })
}

/// The rustls server configuration for `t` (reads the PEM files).
pub fn server_config(t: &TlsSettings) -> Result<ServerConfig, String> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("tls_server_config.{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("cert_file", &t.cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "tls_server_config.cert_file {}: not a PEM certificate ({e})",
                    t.cert_file.display()
                )
            })?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no certificate in it (expected PEM, \
             -----BEGIN CERTIFICATE-----)",
            t.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", &t.key_file)?).map_err(|e| {
        format!(
            "tls_server_config.key_file {}: not a PEM private key ({e})",
            t.key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (&t.client_ca_file, t.client_auth) {
        (Some(ca), ClientAuth::VerifyIfGiven | ClientAuth::Require) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read("client_ca_file", ca)?) {
                let c = c.map_err(|e| {
                    format!(
                        "tls_server_config.client_ca_file {}: not a PEM certificate ({e})",
                        ca.display()
                    )
                })?;
                roots.add(c).map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls_server_config.client_ca_file {}: no certificate in it",
                    ca.display()
                ));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if t.client_auth == ClientAuth::VerifyIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config: the key in {} does not go with the certificate in {} ({e})",
            t.key_file.display(),
            t.cert_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> WebConfig {
        parse(text, Path::new("/etc/partkeeper")).unwrap()
    }

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/partkeeper")).unwrap_err()
    }

    fn hash() -> String {
        bcrypt::hash("s3cret", 4).unwrap()
    }

    #[test]
    fn the_exporter_toolkit_example_parses_with_paths_next_to_the_file() {
        let hash = hash();
        let w = ok(&format!(
            "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\nbasic_auth_users:\n  prometheus: {hash}\n"
        ));
        let t = w.tls.unwrap();
        assert_eq!(t.cert_file, Path::new("/etc/partkeeper/tls/server.crt"));
        assert_eq!(t.key_file, Path::new("/abs/server.key"));
        assert_eq!(t.client_auth, ClientAuth::Require);
        assert_eq!(t.min_version, MinVersion::Tls13);
        assert_eq!(w.users["prometheus"], hash);
    }

    #[test]
    fn an_empty_file_or_basic_auth_alone_means_no_tls() {
        assert_eq!(ok(""), WebConfig::default());
        let w = ok(&format!("basic_auth_users:\n  p: {}\n", hash()));
        assert!(w.tls.is_none() && w.users.len() == 1);
    }

    #[test]
    fn mistakes_are_refused_with_what_to_do() {
        for (text, says) in [
            ("tls_server_config:\n  cert_file: a\n", "key_file is missing"),
            ("tls_server_config:\n  key_file: a\n", "cert_file is missing"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "client_ca_file is set but client_auth_type is not",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "set client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
                "authenticates nothing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "not one of NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS14\n",
                "min_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n",
                "remove the other keys",
            ),
            ("http_server_config:\n  http2: false\n", "remove the other keys"),
            ("basic_auth_users:\n  p: hunter2\n", "not a bcrypt hash"),
            ("basic_auth_users: [", "expected a map"),
            ("tls_server_config: {cert_file: a", "line 1"),
        ] {
            let e = err(text);
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("hunter2"), "a password is never echoed: {e}");
        }
    }
}
