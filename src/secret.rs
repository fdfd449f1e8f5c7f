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

/// Masks what looks like a password in connection strings quoted inside `text` (a TOML error
/// echoes the line it failed on, URL and all, when that URL could not even be read):
/// `scheme://user:secret@host` and `password=secret` (or `sslpassword=`) become `***`.
pub fn mask_passwords(text: &str) -> String {
    let ends_value = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '&');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_len = tail
            .find(|c: char| ends_value(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(tail.len());
        let authority = &tail[..authority_len];
        // The password runs from the first `:` of the user info to the `@`; in a string cut
        // short before its `@`, whatever follows a `:` and is not a port number.
        let secret = match authority.rfind('@') {
            Some(at) => authority[..at].find(':').map(|colon| (colon + 1, at)),
            None if authority.starts_with('[') => None,
            None => authority
                .find(':')
                .filter(|colon| !authority[colon + 1..].chars().all(|c| c.is_ascii_digit()))
                .map(|colon| (colon + 1, authority.len())),
        };
        match secret {
            Some((from, to)) => {
                out.push_str(&authority[..from]);
                out.push_str("***");
                out.push_str(&authority[to..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_len..];
    }
    out.push_str(rest);
    for param in SECRET_PARAMS {
        let key = format!("{param}=");
        let mut masked = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.to_ascii_lowercase().find(&key) {
            let (head, tail) = rest.split_at(i + key.len());
            masked.push_str(head);
            let end = tail.find(ends_value).unwrap_or(tail.len());
            if end > 0 {
                masked.push_str("***");
            }
            rest = &tail[end..];
        }
        masked.push_str(rest);
        out = masked;
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
    fn passwords_in_quoted_connection_strings_are_masked() {
        let line =
            "2 | url = \"postgres://app:hunter2@db:5432/x?sslpassword=x2&sslmode=require\" x";
        let masked = mask_passwords(line);
        assert_eq!(
            masked,
            "2 | url = \"postgres://app:***@db:5432/x?sslpassword=***&sslmode=require\" x"
        );
        // Unterminated, no password, several URLs, password= in a key/value connection string.
        assert_eq!(mask_passwords("\"postgres://a:b@c"), "\"postgres://a:***@c");
        assert_eq!(mask_passwords("postgres://a@c/d ok"), "postgres://a@c/d ok");
        assert_eq!(mask_passwords("\"postgres://a:hunt"), "\"postgres://a:***");
        assert_eq!(mask_passwords("postgres://h:5432/d"), "postgres://h:5432/d");
        assert_eq!(
            mask_passwords("x://u:p@h y://v:q@i"),
            "x://u:***@h y://v:***@i"
        );
        assert_eq!(
            mask_passwords("host=h Password=hunter2 dbname=d"),
            "host=h Password=*** dbname=d"
        );
    }

    proptest::proptest! {
        #[test]
        fn masking_never_panics_and_removes_the_password(
            before in ".{0,20}",
            password in "[a-zA-Z0-9!$%^*()_+-]{2,20}",
            after in "[ \"/?#].{0,20}",
        ) {
            let _ = mask_passwords(&before);
            let text = format!("{before}postgres://user:{password}@host:5432/db{after}");
            let masked = mask_passwords(&text);
            proptest::prop_assert!(masked.contains("postgres://user:***@host:5432/db"), "{}", masked);
        }
    }

    #[test]
    fn scrub_removes_passwords_from_driver_messages() {
        let u = SecretUrl::parse("postgres://app:hunter2@db/prod").unwrap();
        let s = scrub("failed: postgres://app:hunter2@db/prod said hunter2", &[&u]);
        assert!(!s.contains("hunter2"), "{s}");
    }
}
