//! TLS for daemon tests, made at test time: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate (rcgen), bcrypt hashes, exporter-toolkit web configuration
//! files, and an HTTPS GET with a deadline (tokio-rustls; no client library needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The basic-auth user and password of every secured test daemon.
pub const USER: &str = "prometheus";
pub const PASSWORD: &str = "scrape-Pa55word";

/// Certificates and keys as PEM files in a temporary directory.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    /// A fresh CA, a server certificate (127.0.0.1, localhost) and a client certificate.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("partkeeper-tls-")
            .tempdir()
            .expect("a temp dir for certificates");
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "partkeeper test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            (p.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
        };
        let (server_crt, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "partkeeper",
        );
        let (client_crt, client_key) = leaf(
            vec!["prometheus".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "prometheus",
        );
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.crt", &ca.pem());
        write("server.crt", &server_crt);
        write("server.key", &server_key);
        write("client.crt", &client_crt);
        write("client.key", &client_key);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an exporter-toolkit web configuration next to the certificates and returns its
    /// path: TLS with the server certificate, `client_auth` (e.g. "RequireAndVerifyClientCert")
    /// if given, and basic auth for [`USER`] / [`PASSWORD`].
    pub fn web_config(&self, name: &str, client_auth: Option<&str>) -> PathBuf {
        let mut text =
            String::from("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
        if let Some(auth) = client_auth {
            text.push_str(&format!(
                "  client_auth_type: {auth}\n  client_ca_file: ca.crt\n"
            ));
        }
        text.push_str(&format!(
            "basic_auth_users:\n  {USER}: {}\n",
            bcrypt_hash(PASSWORD)
        ));
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A TLS client that trusts the test CA, with the client certificate if `with_cert`.
    pub fn client(&self, with_cert: bool) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let certs = CertificateDer::pem_file_iter(self.path("client.crt"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// A bcrypt hash at the lowest cost: the format is what matters, not the strength, here.
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// `Authorization: Basic ...` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// An HTTPS GET of `path` on 127.0.0.1:`port` through `tls`, with an optional Authorization
/// header: status and body, or why there was none (handshake refused, timeout...).
pub async fn https_get(
    tls: &TlsConnector,
    port: u16,
    path: &str,
    authorization: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        // A TLS 1.3 server rejects a missing client certificate after the handshake: the
        // refusal shows up here, as a read error.
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not HTTP: {text:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status: {head:?}"))?;
        Ok((code, body.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// The file's directory, for configuration text.
pub fn display(path: &Path) -> String {
    path.display().to_string()
}
