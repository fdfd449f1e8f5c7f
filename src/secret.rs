//! Connection URLs that carry passwords. `SecretUrl` prints, logs and serializes only its
//! redacted form, so a password cannot reach logs, metrics or `/status` by accident.

use std::fmt;

use serde::{Serialize, Serializer};

/// Query parameters that may hold a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Accepts `postgres://` and `postgresql://` URLs. Errors never echo the URL.
    pub fn parse(text: &str) -> Result<SecretUrl, String> {
        let text = text.trim();
        let url = url::Url::parse(text).map_err(|e| {
            format!("not a valid URL ({e}); write postgres://user:password@host:5432/dbname")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the scheme is {:?}; write postgres://user:password@host:5432/dbname",
                url.scheme()
            ));
        }
        Ok(SecretUrl(text.to_string()))
    }

    /// The real URL, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// `host:port/db`: what to name in messages about this server.
    pub fn host_label(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(u) => {
                let host = u.host_str().unwrap_or("localhost");
                let port = u.port().unwrap_or(5432);
                format!("{host}:{port}{}", u.path())
            }
            Err(_) => "<unparseable url>".into(),
        }
    }
}

/// Replaces the password in a URL (user-info and query parameters) by `***`.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Never echo something we cannot take apart: it may be a secret.
        return "<unparseable url>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Removes every occurrence of the secrets of `urls` from `text` (for error messages that
/// came from a driver and might quote a connection string).
pub fn scrub(text: &str, urls: &[&SecretUrl]) -> String {
    let mut out = text.to_string();
    for u in urls {
        if let Ok(parsed) = url::Url::parse(u.expose()) {
            if let Some(pw) = parsed.password().filter(|p| p.len() >= 2) {
                out = out.replace(pw, "***");
            }
        }
        out = out.replace(u.expose(), &u.redacted());
    }
    out
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = SecretUrl::parse(
            "postgres://app:hunter2@db.example:6432/prod?sslmode=require&password=x2",
        )
        .unwrap();
        for shown in [
            format!("{u}"),
            format!("{u:?}"),
            serde_json::to_string(&u).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("x2"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        assert_eq!(u.host_label(), "db.example:6432/prod");
    }

    #[test]
    fn other_schemes_are_refused_without_echoing() {
        let err = SecretUrl::parse("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = SecretUrl::parse("hunter2 not a url").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn scrub_removes_passwords_from_driver_messages() {
        let u = SecretUrl::parse("postgres://app:hunter2@db/prod").unwrap();
        let s = scrub("failed: postgres://app:hunter2@db/prod said hunter2", &[&u]);
        assert!(!s.contains("hunter2"), "{s}");
    }
}
