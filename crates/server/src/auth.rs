//! Accounts and HTTP basic authentication.
//!
//! Roles: `admin` (everything), `reader` (hosts and reports: the labeller and pollers), `agent`
//! (registration, agent events, and reading `tpm-endorsements` as the OpenCIT agent did).
//! Passwords are stored as argon2id PHC strings.
//!
//! Verifying argon2 costs tens of milliseconds and ~19 MiB, so:
//! - at most [`AuthLimits::max_concurrent`] checks run at once (off the async executor), at most
//!   [`AuthLimits::max_waiting`] more wait; beyond that the answer is 429 with `Retry-After` at
//!   once, without running argon2;
//! - a success is remembered for [`CACHE_TTL`] under an HMAC of user and password with a
//!   per-process random key (never the password itself), dropped when that user's password
//!   changes or the user is deleted;
//! - requests with the same credentials that miss the cache at the same moment share one check
//!   (one account read, one argon2 run): a fleet of push agents whose cached success expires
//!   together costs one check, not one per request in flight;
//! - failures are counted per source address and per account; past the limit within the window
//!   the address or account is refused (429, `Retry-After`) for a period that doubles at each
//!   new burst, without running argon2, even for a right password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use base64::Engine as _;
use tokio::sync::Semaphore;

use crate::clock::{Clock, SystemClock};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::Store;

/// A role: the accounts API's type.
pub use nodetrust_proto::users::UserRole as Role;

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
    verify_password_in(password, phc, &mut Vec::new())
}

/// Checks a password against a PHC string with `memory` as argon2's working memory (its
/// blocks, grown when the hash's cost asks for more): the answer of [`verify_password`]. A
/// buffer kept from one check to the next is memory the process already holds, where a fresh
/// one is memory the kernel maps and zeroes again at each check (19 MiB at the default cost,
/// most of the check's time on a virtual machine).
pub fn verify_password_in(password: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm),
        hash.version.map(Version::try_from).transpose(),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    // `Output`'s equality is constant-time.
    Output::init_with(expected.len(), |out| {
        Ok(argon2.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *memory)?)
    })
    .is_ok_and(|computed| computed == expected)
}

/// The most blocks of argon2's working memory kept between checks ([`Memory`]): those of the
/// cost [`hash_password`] uses (19 MiB).
const KEPT_BLOCKS: usize = Params::DEFAULT.block_count();

/// argon2's working memory kept from one password check to the next: one buffer, so a server
/// whose cached successes expire one after another runs each check in memory it holds, for
/// 19 MiB of resident memory. Checks that run at the same time as the kept buffer's take a
/// buffer of their own, as does a hash of a higher cost, and those are freed after. What the
/// buffer holds after a check is derived from the password as the stored hash is, and no
/// easier to invert.
#[derive(Default)]
struct Memory(Mutex<Option<Vec<Block>>>);

impl Memory {
    /// The kept buffer, or an empty one that the check grows.
    fn take(&self) -> Vec<Block> {
        self.0
            .lock()
            .ok()
            .and_then(|mut kept| kept.take())
            .unwrap_or_default()
    }

    /// Keeps `blocks` for the next check, unless a buffer is kept already or it is larger
    /// than [`KEPT_BLOCKS`].
    fn give(&self, blocks: Vec<Block>) {
        if blocks.len() <= KEPT_BLOCKS {
            if let Ok(mut kept) = self.0.lock() {
                kept.get_or_insert(blocks);
            }
        }
    }

    /// [`verify_password_in`] the kept buffer, kept again after.
    fn verify(&self, password: &str, phc: &str) -> bool {
        let mut blocks = self.take();
        let valid = verify_password_in(password, phc, &mut blocks);
        self.give(blocks);
        valid
    }

    /// How many blocks are kept.
    fn kept(&self) -> usize {
        self.0
            .lock()
            .ok()
            .and_then(|kept| kept.as_ref().map(Vec::len))
            .unwrap_or(0)
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} blocks kept)", self.kept())
    }
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

/// How long a successful check is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// Bounds of password checking and of the failure limiter.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// argon2 checks running at once.
    pub max_concurrent: usize,
    /// Checks waiting for a slot; more are answered 429 at once.
    pub max_waiting: usize,
    /// Failures from one source address within `window` before it is refused.
    pub per_address: u32,
    /// Failures for one account within `window` before it is refused.
    pub per_account: u32,
    /// The failure-counting window.
    pub window: Duration,
    /// The first refusal period; each further burst doubles it.
    pub first_backoff: Duration,
    /// The longest refusal period.
    pub max_backoff: Duration,
    /// Addresses and accounts remembered by the limiter (the oldest are forgotten first).
    pub max_tracked: usize,
    /// Remembered successes.
    pub max_cached: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            max_concurrent: (2 * cores).max(2),
            max_waiting: 64,
            per_address: 10,
            per_account: 20,
            window: Duration::from_secs(60),
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            max_tracked: 10_000,
            max_cached: 10_000,
        }
    }
}

/// What the limiter counts failures of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    Account(String),
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Self::Address(a) => format!("source address {a}"),
            Self::Account(u) => format!("account {u:?}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    window_start: Instant,
    strikes: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

/// Failure counts per address and per account, bounded.
#[derive(Debug, Default)]
struct Limiter {
    map: HashMap<Subject, Failures>,
}

/// A remembered success: the user, the role, and when.
type CacheEntry = (String, Role, Instant);

/// The outcome of one password check, shared by every request with the same credentials that
/// arrived while it ran.
#[derive(Debug, Clone)]
enum Checked {
    /// The account exists and the password is right; its role.
    Valid(Role),
    /// No such account, or a wrong password.
    Invalid,
    /// Refused before argon2 ran: too many checks waiting.
    Busy,
    /// Refused before argon2 ran: the account or address is backing off.
    Refused((Duration, String)),
    /// The account's row could not be read or decoded.
    Failed(String),
}

/// A check in flight, keyed by the credentials' tag.
type Flight = Arc<tokio::sync::OnceCell<Checked>>;

/// Checks credentials against the store: bounded argon2, a short cache of successes, and
/// back-off after repeated failures.
#[derive(Debug)]
pub struct Authenticator {
    key: hmac::Key,
    cache: Mutex<HashMap<Vec<u8>, CacheEntry>>,
    inflight: Mutex<HashMap<Vec<u8>, Flight>>,
    limits: AuthLimits,
    checks: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    limiter: Mutex<Limiter>,
    /// (window start, lines logged in it): refusals are logged at most 20 times a minute.
    log_budget: Mutex<(Instant, u32)>,
    /// argon2's working memory between checks.
    memory: Arc<Memory>,
    clock: Arc<dyn Clock>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

/// The limiter's verdict for a subject.
fn blocked_for(l: &Limiter, s: &Subject, now: Instant) -> Option<Duration> {
    l.map
        .get(s)
        .and_then(|f| f.blocked_until)
        .and_then(|until| until.checked_duration_since(now))
        .filter(|d| !d.is_zero())
}

impl Authenticator {
    /// A new authenticator with a fresh cache key and the default limits.
    pub fn new() -> Self {
        Self::with_limits(AuthLimits::default())
    }

    /// A new authenticator with `limits`.
    pub fn with_limits(limits: AuthLimits) -> Self {
        Self::with_clock(limits, Arc::new(SystemClock))
    }

    /// A new authenticator with `limits` that reads the time from `clock` (back-off periods
    /// and the success cache's lifetime).
    pub fn with_clock(limits: AuthLimits, clock: Arc<dyn Clock>) -> Self {
        let mut k = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut k);
        let limits = AuthLimits {
            max_concurrent: limits.max_concurrent.max(1),
            ..limits
        };
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &k),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            checks: Arc::new(Semaphore::new(limits.max_concurrent)),
            limits,
            waiting: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            total: Arc::new(AtomicUsize::new(0)),
            limiter: Mutex::new(Limiter::default()),
            log_budget: Mutex::new((clock.instant(), 0)),
            memory: Arc::default(),
            clock,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &AuthLimits {
        &self.limits
    }

    /// Password checks (argon2) running now.
    pub fn checks_running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Password checks (argon2) run so far.
    pub fn checks_total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// The most password checks (argon2) that ever ran at once in this process.
    pub fn peak_concurrent_checks(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn tag(&self, user: &str, password: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// Forgets every cached success.
    pub fn forget(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Forgets the cached successes of `user` (its password changed, or it was deleted).
    pub fn forget_user(&self, user: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, (u, _, _)| u != user);
        }
    }

    /// Runs `f` (argon2) within the concurrency bound: 429 at once when too many wait.
    pub async fn run_bounded<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match self.checks.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.limits.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(busy());
                }
                let p = self.checks.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                p.map_err(|_| ApiError::Internal("password check slots closed".into()))?
            }
        };
        let running = self.running.clone();
        let peak = self.peak.clone();
        let total = self.total.clone();
        // The permit moves into the blocking task: a request that gives up does not free the
        // slot before argon2 is done.
        tokio::task::spawn_blocking(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            total.fetch_add(1, Ordering::SeqCst);
            let out = f();
            running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            out
        })
        .await
        .map_err(|e| ApiError::Internal(format!("password check: {e}")))
    }

    fn subjects(user: &str, peer: Option<IpAddr>) -> Vec<Subject> {
        let mut v = vec![Subject::Account(user.chars().take(128).collect())];
        if let Some(a) = peer {
            v.push(Subject::Address(a));
        }
        v
    }

    /// Whether `subjects` are refused now, and for how long.
    fn refused(&self, subjects: &[Subject]) -> Option<(Duration, String)> {
        let now = self.clock.instant();
        let l = self.limiter.lock().ok()?;
        subjects
            .iter()
            .filter_map(|s| blocked_for(&l, s, now).map(|d| (d, s.describe())))
            .max_by_key(|(d, _)| *d)
    }

    fn may_log(&self) -> bool {
        let Ok(mut b) = self.log_budget.lock() else {
            return false;
        };
        let now = self.clock.instant();
        if now.saturating_duration_since(b.0) > Duration::from_secs(60) {
            *b = (now, 0);
        }
        b.1 += 1;
        b.1 <= 20
    }

    /// Counts a failure for each subject; starts a refusal period where a limit is reached.
    fn failed(&self, subjects: &[Subject]) {
        let now = self.clock.instant();
        let mut started = Vec::new();
        if let Ok(mut l) = self.limiter.lock() {
            for s in subjects {
                if !l.map.contains_key(s) && l.map.len() >= self.limits.max_tracked {
                    // Bounded memory: forget the subject seen longest ago.
                    if let Some(oldest) = l
                        .map
                        .iter()
                        .min_by_key(|(_, f)| f.last_seen)
                        .map(|(k, _)| k.clone())
                    {
                        l.map.remove(&oldest);
                    }
                }
                let limit = match s {
                    Subject::Address(_) => self.limits.per_address,
                    Subject::Account(_) => self.limits.per_account,
                };
                let f = l.map.entry(s.clone()).or_insert(Failures {
                    count: 0,
                    window_start: now,
                    strikes: 0,
                    blocked_until: None,
                    last_seen: now,
                });
                f.last_seen = now;
                if now.duration_since(f.window_start) > self.limits.window {
                    f.count = 0;
                    f.window_start = now;
                }
                f.count = f.count.saturating_add(1);
                if f.count >= limit {
                    let factor = 1u32.checked_shl(f.strikes.min(16)).unwrap_or(u32::MAX);
                    let period = self
                        .limits
                        .first_backoff
                        .saturating_mul(factor)
                        .min(self.limits.max_backoff);
                    f.strikes = f.strikes.saturating_add(1);
                    f.blocked_until = Some(now + period);
                    f.count = 0;
                    f.window_start = now;
                    started.push((s.describe(), period));
                }
            }
        }
        for (who, period) in started {
            if self.may_log() {
                tracing::warn!(
                    subject = %who,
                    refused_for = %humantime::format_duration(period),
                    "too many failed logins: refusing logins from it for a while"
                );
            }
        }
    }

    /// A success ends the account's back-off (the address keeps its count).
    fn succeeded(&self, user: &str) {
        if let Ok(mut l) = self.limiter.lock() {
            l.map
                .remove(&Subject::Account(user.chars().take(128).collect()));
        }
    }

    /// Authenticates a request from `peer` (the client address, when known).
    pub async fn authenticate(
        &self,
        store: &Store,
        metrics: &Metrics,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        let Some((user, password)) = basic_credentials(headers) else {
            metrics.auth_failure("no_credentials");
            return Err(ApiError::Unauthorized);
        };
        if user.len() > 256 || password.len() > nodetrust_proto::users::MAX_PASSWORD_LEN {
            metrics.auth_failure("bad_password");
            return Err(ApiError::Unauthorized);
        }
        let subjects = Self::subjects(&user, peer);
        if let Some(r) = self.refused(&subjects) {
            metrics.auth_failure("rate_limited");
            return Err(rate_limited(r));
        }
        let tag = self.tag(&user, &password);
        if let Ok(mut cache) = self.cache.lock() {
            if let Some((u, role, at)) = cache.get(&tag) {
                if self.clock.instant().saturating_duration_since(*at) < CACHE_TTL && *u == user {
                    return Ok(Caller {
                        name: user,
                        role: *role,
                    });
                }
                cache.remove(&tag);
            }
        }
        let flight = self.inflight.lock().ok().map(|mut m| {
            m.entry(tag.clone())
                .or_insert_with(|| Arc::new(tokio::sync::OnceCell::new()))
                .clone()
        });
        let checked = match &flight {
            Some(f) => f
                .get_or_init(|| self.check(store, &tag, &user, &password, &subjects))
                .await
                .clone(),
            None => self.check(store, &tag, &user, &password, &subjects).await,
        };
        if let (Some(f), Ok(mut m)) = (&flight, self.inflight.lock()) {
            if m.get(&tag).is_some_and(|g| Arc::ptr_eq(f, g)) {
                m.remove(&tag);
            }
        }
        let role = match checked {
            Checked::Valid(role) => role,
            Checked::Invalid => {
                metrics.auth_failure("bad_password");
                self.failed(&subjects);
                return Err(ApiError::Unauthorized);
            }
            Checked::Busy => {
                metrics.auth_failure("busy");
                return Err(busy());
            }
            Checked::Refused(r) => {
                metrics.auth_failure("rate_limited");
                return Err(rate_limited(r));
            }
            Checked::Failed(e) => return Err(ApiError::Internal(e)),
        };
        self.succeeded(&user);
        Ok(Caller { name: user, role })
    }
}

impl Authenticator {
    /// One password check: the account's row, then argon2 within the concurrency bound (a
    /// missing account is checked against a dummy hash, so it takes as long as a wrong
    /// password).
    async fn check(
        &self,
        store: &Store,
        tag: &[u8],
        user: &str,
        password: &str,
        subjects: &[Subject],
    ) -> Checked {
        let row = match store.user(user).await {
            Ok(row) => row,
            Err(e) => return Checked::Failed(ApiError::from(e).to_string()),
        };
        // Reading the account may have taken a while: the limiter is asked again.
        if let Some(r) = self.refused(subjects) {
            return Checked::Refused(r);
        }
        let phc = row
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_string(), |r| r.password_hash.clone());
        let password = password.to_string();
        let memory = self.memory.clone();
        match self
            .run_bounded(move || memory.verify(&password, &phc))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Checked::Invalid,
            Err(_) => return Checked::Busy,
        }
        match row.map(|r| Role::parse(&r.role).ok_or(r.role)) {
            None => Checked::Invalid,
            Some(Ok(role)) => {
                // Cached before the shared outcome is published and the check leaves the
                // in-flight map, so a request arriving after it finds the cache.
                self.remember(tag, user, role);
                Checked::Valid(role)
            }
            Some(Err(_)) => Checked::Failed(format!("user {user} has unknown role")),
        }
    }

    fn remember(&self, tag: &[u8], user: &str, role: Role) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.limits.max_cached {
                let now = self.clock.instant();
                cache.retain(|_, (_, _, at)| now.saturating_duration_since(*at) < CACHE_TTL);
                if cache.len() >= self.limits.max_cached {
                    cache.clear();
                }
            }
            cache.insert(tag.to_vec(), (user.to_string(), role, self.clock.instant()));
        }
    }
}

fn busy() -> ApiError {
    ApiError::TooMany {
        reason: "busy",
        message: "too many logins are being checked at once; try again shortly".into(),
        retry_after: 1,
    }
}

fn rate_limited((wait, who): (Duration, String)) -> ApiError {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    ApiError::TooMany {
        reason: "too_many_failures",
        message: format!(
            "too many failed logins for this {who}; try again in {secs} s with the right credentials"
        ),
        retry_after: secs.max(1),
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

    /// The library's own check, the oracle of [`verify_password_in`].
    fn library_verifies(password: &str, phc: &str) -> bool {
        use argon2::password_hash::PasswordVerifier;
        PasswordHash::new(phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    }

    #[test]
    fn checks_in_kept_memory_answer_as_the_library_does() {
        let salt = SaltString::encode_b64(b"a salt of sixteen").unwrap();
        let cheap = |algorithm, version, m_cost| {
            Argon2::new(algorithm, version, Params::new(m_cost, 1, 1, None).unwrap())
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string()
        };
        let hashes = [
            hash_password("pw").unwrap(),
            cheap(Algorithm::Argon2id, Version::V0x13, 64),
            cheap(Algorithm::Argon2i, Version::V0x10, 32),
            cheap(Algorithm::Argon2d, Version::V0x13, 256),
            DUMMY_HASH.to_string(),
        ];
        // One buffer for all, in an order where it is first larger, then smaller than a hash
        // needs, then in an order where it grows.
        for memory in [&mut Vec::new(), &mut vec![Block::default(); 8]] {
            for phc in hashes.iter().chain(hashes.iter().rev()) {
                for password in ["pw", "other", ""] {
                    assert_eq!(
                        verify_password_in(password, phc, memory),
                        library_verifies(password, phc),
                        "{password:?} against {phc}"
                    );
                }
            }
            assert_eq!(memory.len(), KEPT_BLOCKS);
        }
        let right = hashes[1].clone();
        let mut tampered = right.clone();
        tampered.replace_range(right.len() - 2.., "AA");
        for phc in [
            "not a hash",
            "$argon2id$v=19$m=64,t=1,p=1$YQ",
            &tampered,
            &right,
        ] {
            assert_eq!(
                verify_password_in("pw", phc, &mut Vec::new()),
                library_verifies("pw", phc),
                "{phc}"
            );
        }
        assert!(verify_password("pw", &right));
    }

    #[test]
    fn one_buffer_of_argon2_memory_is_kept_between_checks() {
        let memory = Memory::default();
        let phc = hash_password("pw").unwrap();
        assert!(memory.verify("pw", &phc));
        assert_eq!(memory.kept(), KEPT_BLOCKS);
        assert!(!memory.verify("other", &phc));
        assert_eq!(memory.kept(), KEPT_BLOCKS);
        // A check while the buffer is out takes one of its own; one buffer is kept after.
        let out = memory.take();
        assert_eq!(memory.kept(), 0);
        assert!(memory.verify("pw", &phc));
        memory.give(out);
        assert_eq!(memory.kept(), KEPT_BLOCKS);
        // A hash of a higher cost runs in a buffer that is not kept.
        let costly = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(2 * Params::DEFAULT_M_COST, 1, 1, None).unwrap(),
        )
        .hash_password(
            b"pw",
            &SaltString::encode_b64(b"a salt of sixteen").unwrap(),
        )
        .unwrap()
        .to_string();
        let _ = memory.take();
        assert!(memory.verify("pw", &costly));
        assert_eq!(memory.kept(), 0);
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
