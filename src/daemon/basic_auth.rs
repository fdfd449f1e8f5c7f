//! HTTP basic authentication against the bcrypt hashes of `basic_auth_users` (see
//! [`super::web_config`]), as exporter-toolkit does it: an unknown user costs the same bcrypt
//! check as a known one (no user enumeration by timing), checks run one at a time on a blocking
//! thread (a flood of wrong passwords costs one core, never the async workers), and a successful
//! check is remembered for [`CACHE_TTL`] so that a scrape every few seconds does not pay bcrypt
//! each time. The cache holds SHA-256 digests of user, hash and password, never a password.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// How long a successful check is remembered: scrapes come every 15-60 s, so most are served
/// from the cache; a removed user or a changed password needs a restart anyway (the file is
/// read at start).
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Bound on remembered successes (distinct user and password pairs seen within the TTL).
pub const CACHE_MAX: usize = 100;

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked for unknown users, so that they take as long as known ones.
    unknown_user_hash: String,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    /// `users`: name to bcrypt hash, already validated.
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let cost = users
            .values()
            .find_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map_or(bcrypt::DEFAULT_COST, |p| p.get_cost());
        let unknown_user_hash = bcrypt::hash("partkeeper: no such user", cost)
            .unwrap_or_else(|_| users.values().next().cloned().unwrap_or_default());
        BasicAuth {
            users,
            unknown_user_hash,
            cache: Mutex::default(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether an `Authorization` header names a configured user with the right password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(decode) else {
            return false;
        };
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.unknown_user_hash).clone();
        let key = digest(&user, &hash, &password);
        if known.is_some() && self.remembered(&key) {
            return true;
        }
        let _one = self.one_at_a_time.lock().await;
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let ok = verified && known.is_some();
        if ok {
            self.remember(key);
        }
        ok
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Instant::now());
    }
}

/// `Basic base64(user:password)`.
fn decode(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn digest(user: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, hash, password] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Middleware: the request goes on with valid credentials, else 401 with a Basic challenge.
pub async fn require(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    if auth
        .check(request.headers().get(header::AUTHORIZATION))
        .await
    {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"partkeeper\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    fn auth() -> BasicAuth {
        let mut users = BTreeMap::new();
        users.insert("prometheus".into(), bcrypt::hash("s3cret", 4).unwrap());
        BasicAuth::new(users)
    }

    #[tokio::test]
    async fn the_right_password_passes_and_everything_else_does_not() {
        let a = auth();
        assert!(a.check(Some(&basic("prometheus", "s3cret"))).await);
        assert!(!a.check(Some(&basic("prometheus", "wrong"))).await);
        assert!(!a.check(Some(&basic("nobody", "s3cret"))).await);
        assert!(!a.check(Some(&basic("prometheus", ""))).await);
        assert!(!a.check(None).await);
        for bad in ["Bearer abc", "Basic !!!", "Basic", "basic cHJvbWV0aGV1cw=="] {
            assert!(
                !a.check(Some(&HeaderValue::from_static(bad))).await,
                "{bad}"
            );
        }
        // The scheme is case-insensitive.
        let lower = basic("prometheus", "s3cret")
            .to_str()
            .unwrap()
            .replace("Basic", "basic");
        assert!(a.check(Some(&HeaderValue::from_str(&lower).unwrap())).await);
    }

    #[tokio::test]
    async fn only_successes_are_cached_and_never_as_plain_text() {
        let a = auth();
        assert!(!a.check(Some(&basic("prometheus", "wrong"))).await);
        assert!(a.cache.lock().unwrap().is_empty());
        assert!(a.check(Some(&basic("prometheus", "s3cret"))).await);
        let key = digest("prometheus", &a.users["prometheus"], "s3cret");
        assert!(a.remembered(&key));
        // A cached success does not let another password through.
        assert!(!a.check(Some(&basic("prometheus", "s3cret2"))).await);
    }

    #[test]
    fn the_digest_separates_its_parts() {
        assert_ne!(digest("ab", "c", "d"), digest("a", "bc", "d"));
    }
}
