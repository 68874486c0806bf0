//! Accounts and HTTP basic authentication.
//!
//! Roles: `admin` (everything), `reader` (hosts and reports: the labeller and pollers), `agent`
//! (registration, agent events, and reading `tpm-endorsements` as the OpenCIT agent did).
//! Passwords are stored as argon2id PHC strings. Verifying argon2 costs tens of milliseconds,
//! so a successful check is remembered for a minute as an HMAC of the password under a
//! per-process random key (never the password itself); verification runs off the async
//! executor.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use base64::Engine as _;
use nodetrust_tpm_wire::credential::constant_time_eq;

use crate::error::ApiError;
use crate::store::Store;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read hosts and reports.
    Reader,
    /// Register and report (re)starts.
    Agent,
}

impl Role {
    /// `admin`, `reader`, `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
            Self::Agent => "agent",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "reader" => Some(Self::Reader),
            "agent" => Some(Self::Agent),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// Succeeds when the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Hashes a password (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "system random generator failed".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Parses `Authorization: Basic ...` into (user, password).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

const CACHE_TTL: Duration = Duration::from_secs(60);

/// A remembered success: HMAC of the credentials, the role, and when.
type CacheEntry = (Vec<u8>, Role, Instant);

/// Checks credentials against the store, with a short cache of successes.
#[derive(Debug)]
pub struct Authenticator {
    key: hmac::Key,
    cache: Mutex<HashMap<String, CacheEntry>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A new authenticator with a fresh cache key.
    pub fn new() -> Self {
        let mut k = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut k);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &k),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, user: &str, password: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// Forgets cached successes (after a password change).
    pub fn forget(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Authenticates a request.
    pub async fn authenticate(
        &self,
        store: &Store,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let (user, password) = basic_credentials(headers).ok_or(ApiError::Unauthorized)?;
        let tag = self.tag(&user, &password);
        if let Ok(cache) = self.cache.lock() {
            if let Some((t, role, at)) = cache.get(&user) {
                if at.elapsed() < CACHE_TTL && constant_time_eq(t, &tag) {
                    return Ok(Caller {
                        name: user,
                        role: *role,
                    });
                }
            }
        }
        let row = store.user(&user).await?;
        let Some(row) = row else {
            // Spend the same time as a real check, so user names cannot be probed by timing.
            let _ =
                tokio::task::spawn_blocking(move || verify_password(&password, DUMMY_HASH)).await;
            return Err(ApiError::Unauthorized);
        };
        let phc = row.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
            .await
            .map_err(|e| ApiError::Internal(format!("password check: {e}")))?;
        if !ok {
            return Err(ApiError::Unauthorized);
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| ApiError::Internal(format!("user {user} has unknown role")))?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(user.clone(), (tag, role, Instant::now()));
        }
        Ok(Caller { name: user, role })
    }
}

/// An argon2 hash of a random password, to verify against when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3aJqCqCVlOSXeN3zHEt4xI0mwt8xdaK6gVS0xUjAmT0";

/// Creates or updates a configured account: the password is re-hashed only when it changed.
pub async fn ensure_account(
    store: &Store,
    name: &str,
    password: &str,
    role: Role,
    now: i64,
) -> Result<(), String> {
    if let Some(existing) = store.user(name).await.map_err(|e| e.to_string())? {
        let phc = existing.password_hash.clone();
        let pw = password.to_string();
        let same = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
            .await
            .unwrap_or(false);
        if same && existing.role == role.as_str() {
            return Ok(());
        }
    }
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| e.to_string())??;
    store
        .put_user(name, &hash, role.as_str(), now)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert_ne!(a, b);
        assert!(verify_password("pw", &a));
        assert!(!verify_password("other", &a));
        assert!(!verify_password("pw", "not a hash"));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn basic_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Basic YWdlbnQ6cDpx".parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), Some(("agent".into(), "p:q".into())));
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer x".parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), None);
    }
}
