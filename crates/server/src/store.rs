//! The store: every table the server keeps, behind one type, on sqlx's Any driver.
//!
//! SQLite (an embedded file, the default) and PostgreSQL (several replicas) run the same SQL:
//! `$N` placeholders (which SQLite also reads; batch statements use anonymous `?` on SQLite,
//! [`mark`]), `TEXT` and `BIGINT` columns only (booleans as
//! 0/1 integers, times as Unix milliseconds, binary as base64 text), so the Any driver reads
//! every column the same way on both. Migrations run at start ([`Store::connect`]).
//!
//! Concurrency: SQLite has one writer connection (every write and transaction) and, on a file
//! in WAL mode, a few read-only connections for reads outside transactions, so reads never
//! queue behind writes. Reports are written by group commit ([`Store::save_report`]): those
//! saved at the same time share one transaction and a few statements, which on a SQLite file
//! run as one job on a connection and thread of their own ([`direct`]) while the committing
//! task holds the writer connection.
//!
//! Multi-replica work sharing uses leases on host rows: [`Store::claim_due`] is a conditional
//! update that succeeds for the current owner, a free host, an expired lease, or a holder that
//! is not live (no recent row in `replicas`, [`Store::heartbeat`]). A replica renews its leases
//! at every attestation, hands hosts over to their owner ([`Store::hand_over`]) and releases
//! them all when it stops ([`Store::leave`]); when it dies, the others take its hosts over as
//! soon as its heartbeat is stale. A server on a SQLite file is the only one on its database
//! ([`Store::hold_as_only_server`]): its scheduler's claims take hosts from a schedule in
//! memory and write no lease ([`Store::claim_scheduled`], [`local_schedule`]).
//!
//! Retention: [`Store::prune_reports`] and [`Store::prune_changes`] delete rows older than a
//! cutoff in bounded batches (each its own short statement), always sparing each registered
//! host's latest report.
//!
//! The change feed: every verdict or host change appends a row to `changes` (a durable,
//! ordered log a follower can resume from by sequence number, [`Store::changes_since`]) in the
//! same transaction, and is published on an in-process broadcast channel
//! ([`Store::subscribe`]). On PostgreSQL the transaction also sends `NOTIFY nodetrust_changes`
//! with the change as JSON, so a follower in another replica hears it at commit
//! ([`Store::pg_listener`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use nodetrust_proto::trust::{ChangeKind, EffectiveTrust, HostStatus, Trust};
use sqlx::any::{AnyConnectOptions, AnyRow};
use sqlx::{Any, ConnectOptions, Connection as _, Row};

use conns::Conns;
use tokio::sync::{broadcast, oneshot};

mod challenges;
mod changes;
mod conns;
pub use conns::PING_IDLE_AFTER;
mod direct;
mod endorsements;
mod flavors;
mod hosts;
mod keys;
mod leases;
mod listed;
mod local_schedule;
mod reports;
mod users;
pub use listed::{HostFacts, ListedRow, ListedSnapshot, QuotedPcrs};
mod ima;
pub use ima::ImaStateRow;

/// A store failure (the database, or a row that does not decode).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(sqlx::Error),
    /// The SQLite report writer's connection failed ([`direct`]).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be read back.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The URL names no supported database.
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The SQLite file's directory could not be made.
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be opened; the detail names the cause.
    #[error("cannot open the database: {0}")]
    Connect(String),
    /// A file holding secrets is readable by others.
    #[error("{0}")]
    Permissions(String),
    /// A fault injected by a test.
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// Another server holds the SQLite file ([`Store::hold_as_only_server`]).
    #[error(
        "another nodetrust-server serves this SQLite database (it holds {0}); a SQLite file has \
         one server, and replicas need PostgreSQL"
    )]
    HeldByAnother(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // A broken connection is found by the next lending's ping ([`conns`]).
        conns::note_error(&e);
        Self::Db(e)
    }
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

pub use nodetrust_proto::trust::{from_millis, millis};

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// `admin`, `reader` or `agent`.
    pub role: String,
}

/// An accepted EK (`tpm-endorsements`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endorsement {
    /// Identifier.
    pub id: String,
    /// Hardware UUID the EK belongs to, when known.
    pub hardware_uuid: Option<String>,
    /// SHA-256 (hex) of the EK's key as canonical DER SubjectPublicKeyInfo.
    pub ek_sha256: String,
    /// EK `TPM2B_PUBLIC`, base64, when given.
    pub ek_public: Option<String>,
    /// EK certificate DER, base64, when given.
    pub certificate: Option<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Whether revoked.
    pub revoked: bool,
    /// When added (Unix ms).
    pub created: i64,
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    /// Host name (the agent's `--host-name`).
    pub name: String,
    /// Hardware UUID.
    pub hardware_uuid: String,
    /// Agent URL.
    pub connection_url: String,
    /// Pinned SHA-256 (hex) of the agent's TLS certificate.
    pub tls_cert_sha256: String,
    /// EK `TPM2B_PUBLIC`, base64.
    pub ek_public: String,
    /// Pinned AK `TPM2B_PUBLIC`, base64.
    pub ak_public: String,
    /// Host facts JSON.
    pub host_info: String,
    /// Whether the TPM is a software TPM.
    pub software_tpm: bool,
    /// Whether the agent answers.
    pub status: HostStatus,
    /// Detail of the status (the last agent error).
    pub status_detail: Option<String>,
    /// Last seen TPM resetCount.
    pub reset_count: Option<i64>,
    /// Last seen TPM restartCount.
    pub restart_count: Option<i64>,
    /// Latest verdict.
    pub verdict: Option<Trust>,
    /// Latest reasons (JSON array).
    pub reasons: Option<String>,
    /// Latest attestation time (Unix ms).
    pub attested_at: Option<i64>,
    /// Latest verdict expiry (Unix ms).
    pub expires_at: Option<i64>,
    /// Registration time (Unix ms).
    pub created: i64,
}

impl HostRow {
    /// The stored trust, for [`EffectiveTrust::at`].
    pub fn effective(&self) -> EffectiveTrust {
        EffectiveTrust {
            verdict: self.verdict,
            reasons: self
                .reasons
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default(),
            attested_at: self.attested_at,
            expires_at: self.expires_at,
            status: self.status,
            status_detail: self.status_detail.clone(),
        }
    }
}

/// A report (one verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// Identifier.
    pub id: String,
    /// Host.
    pub host_name: String,
    /// The verdict.
    pub verdict: Trust,
    /// JSON array of reasons.
    pub reasons: String,
    /// Unix ms.
    pub created: i64,
    /// Unix ms.
    pub expires: i64,
    /// The hardware UUID the host had when attested (what its signed report names); empty in
    /// reports stored before version 9, which were signed when made.
    pub hardware_uuid: String,
    /// The JWS made when the report was (before version 9); empty: the report is signed when it
    /// is read ([`crate::engine::signed_view`]).
    pub signed_report: String,
}

/// A stored flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorRow {
    /// Identifier.
    pub id: String,
    /// Flavor JSON.
    pub body: String,
    /// Unix ms.
    pub created: i64,
}

/// A pending registration (MakeCredential challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    /// Identifier.
    pub id: String,
    /// SHA-256 (hex) of the secret.
    pub secret_sha256: String,
    /// The registration request JSON.
    pub request: String,
    /// Unix ms.
    pub expires: i64,
    /// The issuer of the EK certificate the registration was accepted under, when a CA of
    /// `--ek-ca-dir` vouched for the certificate the agent sent.
    pub ek_issuer: Option<String>,
    /// The EK's identifier (`ek_sha256` of its endorsements).
    pub ek_sha256: Option<String>,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Host concerned.
    pub host_name: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The new verdict, for `verdict` changes.
    pub verdict: Option<Trust>,
}

impl Change {
    /// A change that carries no verdict: a host registered, deleted, or whose status moved.
    pub fn of(host_name: &str, kind: ChangeKind) -> Self {
        Self {
            host_name: host_name.to_owned(),
            kind,
            verdict: None,
        }
    }

    /// A host's new verdict.
    pub fn verdict(host_name: &str, verdict: Trust) -> Self {
        Self {
            host_name: host_name.to_owned(),
            kind: ChangeKind::Verdict,
            verdict: Some(verdict),
        }
    }
}

/// The store.
#[derive(Clone)]
pub struct Store {
    /// The writer: every write, and every transaction (one connection on SQLite).
    pool: Conns,
    /// Reads outside transactions: a few read-only connections on a SQLite file (WAL lets them
    /// read while the writer writes); the same pool as the writer otherwise.
    reader: Conns,
    /// The scheduler's claims ([`Store::claim_due`]): on PostgreSQL connections of their own
    /// that keep one generic plan of the claim ([`CLAIM_CONNECTIONS`]); the writer otherwise.
    claimer: Conns,
    backend: Backend,
    changes: broadcast::Sender<Change>,
    url: String,
    batch: Arc<Group<PendingReport>>,
    /// On a SQLite file, the connection that commits the reports' group commits
    /// ([`direct`]), with the file's path and the pull schedule in memory
    /// ([`local_schedule`]).
    direct: Option<Arc<direct::Direct>>,
    registrations: Arc<Group<PendingRegistration>>,
    /// Hosts registered through this store (PostgreSQL: when to analyse `hosts`, see
    /// [`Store::count_registered`]).
    registered: Arc<AtomicU64>,
    /// Challenges issued through this store, and whether a vacuum of `challenges` runs
    /// (PostgreSQL, see [`Store::count_challenge`]).
    issued: Arc<(AtomicU64, AtomicBool)>,
    /// How many more challenges may be issued before all open ones are counted again
    /// ([`Store::put_challenge_bounded`]).
    challenge_room: Arc<AtomicI64>,
    health: Arc<WriteHealth>,
    faults: Arc<Faults>,
}

/// Whether writes work: the last failed write transaction, cleared by the next success.
#[derive(Debug, Default)]
struct WriteHealth {
    failed: Mutex<Option<(Instant, String)>>,
}

impl WriteHealth {
    fn failed(&self, what: &str) {
        if let Ok(mut f) = self.failed.lock() {
            if f.is_none() {
                tracing::warn!(error = %what, "database writes failing; /readyz answers 503 until they succeed again");
            }
            *f = Some((Instant::now(), what.to_string()));
        }
    }

    fn ok(&self) {
        if let Ok(mut f) = self.failed.lock() {
            if f.take().is_some() {
                tracing::info!("database writes succeed again");
            }
        }
    }

    fn last_failure(&self) -> Option<(Instant, String)> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

/// Faults a test injects into the store (not for production use).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this-many write commits fail (rolled back) instead of committing.
    pub fail_commits: AtomicU32,
    /// Every write commit fails while set (a full disk, on any backend).
    pub fail_writes: AtomicBool,
    /// SQLite: `PRAGMA max_page_count` of writer connections (0: none), a full disk.
    pub max_pages: AtomicI64,
}

/// A writer connection checked out for one transaction. Unless the transaction commits (or
/// is rolled back on purpose), the connection is closed instead of going back to the pool: a
/// connection whose transaction failed (a full disk, a lost server) is never reused, so one
/// failure cannot leave it inside a half-finished transaction for every later write.
struct Writer<'s> {
    conn: conns::Conn,
    end: TxEnd<'s>,
}

/// How a [`Writer`]'s transaction ended (a field apart from the connection, which the
/// transaction borrows).
struct TxEnd<'s> {
    store: &'s Store,
    ok: bool,
}

/// Begins a write transaction on `conn` (on SQLite `BEGIN IMMEDIATE`: it takes the write lock
/// at once; a deferred transaction that reads and then writes fails outright when another
/// connection wrote in between).
async fn begin(conn: &mut conns::Conn, backend: Backend) -> Result<sqlx::Transaction<'_, Any>> {
    Ok(match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    })
}

impl Faults {
    /// Whether an injected fault is to fail the next write.
    fn writes_failing(&self) -> bool {
        self.fail_writes.load(Ordering::SeqCst) || self.fail_commits.load(Ordering::SeqCst) > 0
    }

    /// Whether an injected fault fails the commit about to happen (counting it).
    fn commit_fails(&self) -> bool {
        self.fail_writes.load(Ordering::SeqCst)
            || self
                .fail_commits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

/// What an injected commit failure says.
const COMMIT_FAILED: &str = "the commit failed (database or disk is full)";

/// SQLite's `max_page_count` when no full disk is injected (its largest).
const NO_PAGE_LIMIT: i64 = 4_294_967_294;

impl TxEnd<'_> {
    /// Commits `tx` (or fails as an injected fault says), then marks the connection reusable.
    async fn commit(&mut self, tx: sqlx::Transaction<'_, Any>) -> Result<()> {
        if self.store.faults.commit_fails() {
            drop(tx);
            return Err(StoreError::Injected(COMMIT_FAILED));
        }
        tx.commit().await?;
        self.ok = true;
        self.store.health.ok();
        Ok(())
    }

    /// Appends `changes` to the feed as the transaction's last writes, then commits
    /// ([`Store::append_changes`] says why last).
    async fn commit_with_changes(
        &mut self,
        mut tx: sqlx::Transaction<'_, Any>,
        changes: &[(Change, i64)],
    ) -> Result<()> {
        self.store.append_changes(&mut tx, changes).await?;
        self.commit(tx).await?;
        // Hosts registered or deleted: their schedule rows changed.
        if let Some(direct) = &self.store.direct {
            direct.schedule.touch(changes.iter().filter_map(|(c, _)| {
                matches!(c.kind, ChangeKind::Registered | ChangeKind::Deleted)
                    .then_some(c.host_name.as_str())
            }));
        }
        Ok(())
    }

    /// Ends without committing, keeping the connection (a deliberate rollback).
    async fn rollback(&mut self, tx: sqlx::Transaction<'_, Any>) -> Result<()> {
        tx.rollback().await?;
        self.ok = true;
        Ok(())
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if !self.end.ok {
            self.conn.close_on_drop();
            self.end.store.health.failed("a write transaction failed");
        }
    }
}

/// Takes an exclusive `flock(2)` on `file` without waiting: false when another open file
/// holds one.
#[cfg(unix)]
fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// A file or directory that holds secrets must not be readable by group or others.
#[cfg(unix)]
pub fn check_private(path: &std::path::Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let fix = if meta.is_dir() { "700" } else { "600" };
        return Err(StoreError::Permissions(format!(
            "{what} {} is accessible by group or others (mode {mode:04o}) and holds secrets;              restrict it and start again: chmod {fix} {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// A file or directory that holds secrets must not be readable by group or others.
#[cfg(not(unix))]
pub fn check_private(_path: &std::path::Path, _what: &str) -> Result<()> {
    Ok(())
}

/// Creates `dir` (and its parents) owner-only (0700) where missing.
pub fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    Ok(())
}

/// Sets `path` to mode 0600 when it exists.
fn make_private(path: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// One direct connection, so a failure names its cause (a pool only times out).
async fn probe_connect(opts: &AnyConnectOptions, backend: Backend) -> Result<()> {
    let attempt = async {
        let mut c = sqlx::AnyConnection::connect_with(opts).await?;
        let q = match backend {
            Backend::Sqlite => "SELECT count(*) FROM sqlite_master",
            Backend::Postgres => "SELECT 1",
        };
        sqlx::query(q).execute(&mut c).await?;
        c.close().await?;
        Ok::<(), sqlx::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Connect(e.to_string())),
        Err(_) => Err(StoreError::Connect(
            "no answer within 5 s (is the host reachable, the port right?)".into(),
        )),
    }
}

/// Most open registration challenges per hardware UUID (a newer one replaces the oldest).
pub const MAX_CHALLENGES_PER_UUID: i64 = 4;
/// Most open registration challenges in all.
pub const MAX_CHALLENGES: i64 = 10_000;
/// Most challenges a store issues after a count of all open ones before it counts them again
/// ([`Store::put_challenge_bounded`]): with replicas on one database, the bound in all holds
/// to within this many a replica.
pub const CHALLENGE_ROOM: i64 = 256;

/// What [`Store::register_host_activated`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Stored; whether an earlier registration was replaced.
    Stored(bool),
    /// Refused by the check, with its reason and sentence.
    Refused(&'static str, String),
    /// The registration challenge was already taken (another activation with it came first)
    /// or has expired: nothing stored.
    ChallengeGone,
}

/// What a registration's identity check says about the hosts it would replace or conflict
/// with: accepted, or refused with a reason and a sentence.
pub type CheckOutcome = std::result::Result<(), (&'static str, String)>;

/// A registration's identity check ([`Store::register_host_activated`]).
pub type IdentityCheck = dyn Fn(&[HostRow]) -> CheckOutcome + Send + Sync;

/// An activation waiting for the group commit of registrations.
struct PendingRegistration {
    host: HostRow,
    ek_issuer: Option<String>,
    challenge_id: String,
    now: i64,
    check: Box<IdentityCheck>,
    done: oneshot::Sender<Result<Registered>>,
}

/// What one registration's statements did ([`Store::register_host_activated`]).
struct RegisterStep {
    outcome: Registered,
    /// The changes to append at the commit, and to publish after it: the hosts replaced under
    /// another name (`deleted`), then the host stored (`registered`).
    changes: Vec<(Change, i64)>,
    /// The head of the reports' chain of the row it replaced under the same name (a
    /// reimaged node keeps its reports), for the host's new row.
    history: Option<String>,
}

impl RegisterStep {
    /// An activation that stored nothing.
    fn refused(outcome: Registered) -> Self {
        Self {
            outcome,
            changes: Vec::new(),
            history: None,
        }
    }

    /// The changes to publish once the transaction committed.
    fn published(&self) -> Vec<Change> {
        self.changes.iter().map(|(c, _)| c.clone()).collect()
    }
}

/// What [`Store::delete_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDeleted {
    /// Deleted.
    Deleted,
    /// No such user.
    NotFound,
    /// The last admin is kept.
    LastAdmin,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Connections of the scheduler's claims on PostgreSQL, each set to plan statements once
/// (`plan_cache_mode = force_generic_plan`). PostgreSQL otherwise planned the claim anew at
/// every call: with its parameters known it expects to read about as many rows as the limit,
/// without them a tenth of the table, so the plan for any parameters never looked cheaper and
/// was never kept. Planning cost 0.33 ms a claim, as much as running it (16-19 µs for each host
/// claimed); the plan for any parameters runs as fast (the `next_attest` index, in order, up to
/// the limit). Only the claim: for other statements, a plan for any parameters made before
/// the statistics can be far worse ([`Store::count_registered`]). One scheduler claims at a
/// time; two connections cover a claim while the other's connection is being replaced.
const CLAIM_CONNECTIONS: u32 = 2;

/// Read-only connections beside SQLite's single writer.
const SQLITE_READERS: u32 = 4;

/// A connection's setup: `statements`, in order.
fn setup_statements(statements: &'static [&'static str]) -> conns::Setup {
    Arc::new(move |conn| {
        Box::pin(async move {
            for statement in statements {
                sqlx::query(*statement).execute(&mut *conn).await?;
            }
            Ok(())
        })
    })
}

/// The PostgreSQL advisory lock (transaction-scoped) under which change-feed sequence numbers
/// are drawn ([`Store::append_changes`]).
const CHANGES_LOCK: i64 = 0x6e74_6368_616e_6765;

/// The `server_keys` row holding [`Store::changes_pruned_through`].
const PRUNED_THROUGH: &str = "changes-pruned-through";

/// The PostgreSQL notification channel of the change feed.
pub const CHANGES_CHANNEL: &str = "nodetrust_changes";

/// A newly registered host is due this long after its registration (milliseconds), or at once
/// when its agent's start event, which follows registration, comes first: one attestation for
/// the two, not two within milliseconds.
pub const REGISTERED_DUE_AFTER_MS: i64 = 1000;

struct Migration {
    version: i64,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
}

const COMMON_V1: &[&str] = &[
    "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, created BIGINT NOT NULL)",
    "CREATE TABLE endorsements (id TEXT PRIMARY KEY, hardware_uuid TEXT, ek_sha256 TEXT NOT NULL, ek_public TEXT, \
     certificate TEXT, comment TEXT, revoked BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL)",
    "CREATE INDEX endorsements_ek ON endorsements (ek_sha256)",
    "CREATE TABLE hosts (name TEXT PRIMARY KEY, hardware_uuid TEXT NOT NULL UNIQUE, connection_url TEXT NOT NULL, \
     tls_cert_sha256 TEXT NOT NULL, ek_public TEXT NOT NULL, ak_public TEXT NOT NULL, host_info TEXT NOT NULL, \
     software_tpm BIGINT NOT NULL, status TEXT NOT NULL, status_detail TEXT, reset_count BIGINT, restart_count BIGINT, \
     verdict TEXT, reasons TEXT, attested_at BIGINT, expires_at BIGINT, lease_owner TEXT, \
     lease_until BIGINT NOT NULL DEFAULT 0, next_attest BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL, \
     updated BIGINT NOT NULL)",
    "CREATE INDEX hosts_next_attest ON hosts (next_attest)",
    "CREATE TABLE challenges (id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, request TEXT NOT NULL, expires BIGINT NOT NULL)",
    "CREATE TABLE flavors (id TEXT PRIMARY KEY, body TEXT NOT NULL, created BIGINT NOT NULL)",
    "CREATE TABLE reports (id TEXT PRIMARY KEY, host_name TEXT NOT NULL, verdict TEXT NOT NULL, reasons TEXT NOT NULL, \
     created BIGINT NOT NULL, expires BIGINT NOT NULL, signed_report TEXT NOT NULL)",
    "CREATE INDEX reports_host_created ON reports (host_name, created)",
    "CREATE TABLE server_keys (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

const SQLITE_V1: &[&str] = &[
    "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, host_name TEXT NOT NULL, \
     kind TEXT NOT NULL, verdict TEXT, created BIGINT NOT NULL)",
];
const POSTGRES_V1: &[&str] = &[
    "CREATE TABLE changes (seq BIGSERIAL PRIMARY KEY, host_name TEXT NOT NULL, \
     kind TEXT NOT NULL, verdict TEXT, created BIGINT NOT NULL)",
];

/// Version 2: indexes for retention's deletes by age. `IF NOT EXISTS`, so an index made
/// beforehand (e.g. `CREATE INDEX CONCURRENTLY` on a large PostgreSQL table) is kept.
const V2: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS reports_created ON reports (created)",
    "CREATE INDEX IF NOT EXISTS changes_created ON changes (created)",
];

/// Version 3: open challenges are counted per hardware UUID.
const V3: &[&str] = &[
    "ALTER TABLE challenges ADD COLUMN hardware_uuid TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS challenges_uuid ON challenges (hardware_uuid, expires)",
];

/// Version 4: replica membership. Each replica upserts its row every heartbeat period and
/// deletes it when it stops gracefully; the hosts of a replica without a recent heartbeat are
/// taken over by the others when due, whatever their lease ([`Store::claim_due`]).
const V4: &[&str] =
    &["CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, heartbeat BIGINT NOT NULL, started BIGINT NOT NULL)"];

/// Version 5: what the fleet view shows of a host beyond its verdict, and what lets a host list
/// kept in memory follow the table ([`crate::hostlist`]): the issuer of the EK certificate the
/// registration was accepted with; the PCR values of the last verified quote (JSON, written
/// with its report); a row version that every write of a host row increments (with `updated`,
/// indexed, it finds the rows written since a moment and checks that nothing else changed).
const V5: &[&str] = &[
    "ALTER TABLE hosts ADD COLUMN ek_issuer TEXT",
    "ALTER TABLE hosts ADD COLUMN quoted_pcrs TEXT",
    "ALTER TABLE hosts ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS hosts_updated ON hosts (updated, version)",
];

/// Version 6: each host's incremental IMA appraisal ([`ImaStateRow`], [`crate::runtime`]):
/// entries appraised and, per RUNTIME flavor, the running PCR 10 per bank and the failures,
/// for one boot (resetCount, restartCount) and AK.
const V6: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS ima_state (host_name TEXT PRIMARY KEY, ak_sha256 TEXT NOT NULL, \
     reset_count BIGINT NOT NULL, restart_count BIGINT NOT NULL, entries BIGINT NOT NULL, \
     state TEXT NOT NULL, updated BIGINT NOT NULL)",
];

/// Version 7: indexes for the identity check of every registration ([`Store::registration_reads`]:
/// a name, a hardware UUID in any case, or an EK), which scanned the whole hosts table.
const V7_SQLITE: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS hosts_uuid_lower ON hosts (LOWER(hardware_uuid))",
    "CREATE INDEX IF NOT EXISTS hosts_ek_public ON hosts (ek_public)",
];
const V7_POSTGRES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS hosts_uuid_lower ON hosts ((LOWER(hardware_uuid)))",
    "CREATE INDEX IF NOT EXISTS hosts_ek_public ON hosts (ek_public)",
];

/// Version 8: the schedule in a table of its own (`schedule`: due time and lease per host).
/// A claim rewrote the whole host row (about 2.4 kB with its keys and PCR values, one row a
/// page) and, on PostgreSQL, added an entry to each of the row's six indexes; now it rewrites
/// a row of about 100 bytes with two indexes. The `hosts` columns it held stay, unused.
const V8: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS schedule (name TEXT PRIMARY KEY, next_attest BIGINT NOT NULL, \
     lease_owner TEXT, lease_until BIGINT NOT NULL DEFAULT 0)",
    "INSERT INTO schedule (name, next_attest, lease_owner, lease_until) \
     SELECT name, next_attest, lease_owner, lease_until FROM hosts",
    "CREATE INDEX IF NOT EXISTS schedule_next_attest ON schedule (next_attest)",
    "DROP INDEX IF EXISTS hosts_next_attest",
];

/// Version 9: reports are signed when read, not when made (an ES256 signature cost a tenth of
/// an attestation's CPU, for reports that are mostly never read); a report keeps the hardware
/// UUID its signed form names. Reports made before keep their signature (`signed_report`),
/// newer ones store it empty.
const V9: &[&str] = &["ALTER TABLE reports ADD COLUMN hardware_uuid TEXT"];

/// Version 10: an attestation writes no indexed column of its host's row. `updated` now moves
/// only with the writes of a host row other than its verdict's (registration, status), and is
/// indexed alone: `version` moved at every attestation, so each one rewrote an entry of
/// `hosts (updated, version)` (on SQLite a delete and an insert in that index; on PostgreSQL a
/// new entry in all five indexes of `hosts`, since an update that changes an indexed column
/// cannot be a heap-only one). The host list finds renewals by their reports instead
/// ([`Store::listed_hosts_since`]). On PostgreSQL the table's pages are left 40 % free
/// (`fillfactor = 60`), so the next version of a row fits beside it (a heap-only update).
const V10_SQLITE: &[&str] = &[
    "DROP INDEX IF EXISTS hosts_updated",
    "CREATE INDEX IF NOT EXISTS hosts_written ON hosts (updated)",
];
const V10_POSTGRES: &[&str] = &[
    "DROP INDEX IF EXISTS hosts_updated",
    "CREATE INDEX IF NOT EXISTS hosts_written ON hosts (updated)",
    "ALTER TABLE hosts SET (fillfactor = 60)",
];

/// Version 11: a registration challenge keeps the issuer of the EK certificate that a CA of
/// `--ek-ca-dir` vouched for when it was issued, so the activation does not verify the
/// certificate's chain a second time to name its issuer (a signature verification a host),
/// and the EK's identifier, so the activation reads the challenge and the EK's endorsements in
/// one statement ([`Store::challenge_endorsed`]).
const V11: &[&str] = &[
    "ALTER TABLE challenges ADD COLUMN ek_issuer TEXT",
    "ALTER TABLE challenges ADD COLUMN ek_sha256 TEXT",
];

/// Version 12: the PCR values of a host's last verified quote are written only when they
/// differ from the stored ones, and when they were last quoted has a column of its own
/// (`pcrs_quoted_at`). Every attestation rewrote them with their time inside, about 1 kB of
/// JSON that PostgreSQL compressed again each time (the host row is over the 2 kB at which it
/// compresses long values); an unchanged value is now carried over as it is stored. Values
/// written before keep their time inside (`{"quoted_at": ms, "pcrs": ...}`) until rewritten.
///
/// And the row's `version` at which a group commit last changed its verdict
/// (`verdict_version`), so that the update of a group commit says which verdicts it changed
/// (the change feed's entries) without a read of the verdicts before it.
const V12: &[&str] = &[
    "ALTER TABLE hosts ADD COLUMN pcrs_quoted_at BIGINT",
    "ALTER TABLE hosts ADD COLUMN verdict_version BIGINT NOT NULL DEFAULT 0",
];

/// Version 13: a host's reports are a chain, newest first, instead of an index
/// (`reports (host_name, created)`, dropped): the host row names its latest report
/// (`last_report`) and each report the one before it (`previous`, NULL for a host's first).
/// Every attestation wrote an entry of that index on a page of its own (a host's entries sit
/// together, hosts are attested in no order), besides its host's row; now it writes only the
/// row, and its report lands at the end of the table with the others of its group commit.
/// `previous_report` holds, after each write of a verdict, the report the host's row named
/// before it: the update's returned rows carry it (neither SQLite nor PostgreSQL before 18
/// returns a column's old value), and the report inserted next links to it.
///
/// The reports stored before are not rewritten (linking them took 22 s a million reports on
/// PostgreSQL, which writes a new version of every row): their `previous` reads `''` (the
/// column's default, which neither database writes into the rows), and a partial index over
/// them alone (`reports_before_chains`) finds a host's, until retention has deleted them all.
/// New reports never enter it.
const V13: &[&str] = &[
    "ALTER TABLE hosts ADD COLUMN last_report TEXT",
    "ALTER TABLE hosts ADD COLUMN previous_report TEXT",
    "ALTER TABLE reports ADD COLUMN previous TEXT DEFAULT ''",
    "UPDATE hosts SET last_report = (SELECT r.id FROM reports r WHERE r.host_name = hosts.name \
     ORDER BY r.created DESC, r.id DESC LIMIT 1)",
    "CREATE INDEX IF NOT EXISTS reports_before_chains ON reports (host_name, created) WHERE previous = ''",
    "DROP INDEX IF EXISTS reports_host_created",
];

/// Version 14: the PCR values of a host's last verified quote (about 1 kB of JSON) move out
/// of its row into a table of their own (`host_pcrs`), written only when they change; the row
/// keeps their digest (`pcrs_sha`, hex SHA-256 of the stored text), which each attestation
/// compares, and the row's `version` at which they last changed (`pcrs_version`, as
/// `verdict_version` says it of the verdict). Every attestation rewrites its host's row: at
/// about 2.2 kB it filled a 4 kB page of its own, and SQLite wrote, and read back, a page a
/// host; at about 1.3 kB three rows share one, the cache holds three times as many, and each
/// update copies half as many bytes. The values stored before are moved; a host's digest is
/// written by its next attestation. (On SQLite, the rows already stored keep their pages
/// until `VACUUM`; new hosts' rows share theirs.)
const V14: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS host_pcrs (name TEXT PRIMARY KEY, quoted_pcrs TEXT NOT NULL)",
    "INSERT INTO host_pcrs (name, quoted_pcrs) SELECT name, quoted_pcrs FROM hosts WHERE quoted_pcrs IS NOT NULL",
    "UPDATE hosts SET quoted_pcrs = NULL WHERE quoted_pcrs IS NOT NULL",
    "ALTER TABLE hosts ADD COLUMN pcrs_sha TEXT",
    "ALTER TABLE hosts ADD COLUMN pcrs_version BIGINT NOT NULL DEFAULT 0",
];

/// Version 15, PostgreSQL: the index that finds a host by its EK (`hosts_ek_public`, version
/// 7) a hash index. The EK is about 500 characters of base64: a B-tree entry held all of them
/// (about 14 a page), and every registration wrote one; a hash index holds a 4-byte hash a
/// row, and the look-up it serves is by equality. (SQLite has no hash index: its B-tree stays.)
const V15_POSTGRES: &[&str] = &[
    "DROP INDEX IF EXISTS hosts_ek_public",
    "CREATE INDEX IF NOT EXISTS hosts_ek_public ON hosts USING hash (ek_public)",
];

fn migrations() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            sqlite: SQLITE_V1,
            postgres: POSTGRES_V1,
        },
        Migration {
            version: 2,
            sqlite: V2,
            postgres: V2,
        },
        Migration {
            version: 3,
            sqlite: V3,
            postgres: V3,
        },
        Migration {
            version: 4,
            sqlite: V4,
            postgres: V4,
        },
        Migration {
            version: 5,
            sqlite: V5,
            postgres: V5,
        },
        Migration {
            version: 6,
            sqlite: V6,
            postgres: V6,
        },
        Migration {
            version: 7,
            sqlite: V7_SQLITE,
            postgres: V7_POSTGRES,
        },
        Migration {
            version: 8,
            sqlite: V8,
            postgres: V8,
        },
        Migration {
            version: 9,
            sqlite: V9,
            postgres: V9,
        },
        Migration {
            version: 10,
            sqlite: V10_SQLITE,
            postgres: V10_POSTGRES,
        },
        Migration {
            version: 11,
            sqlite: V11,
            postgres: V11,
        },
        Migration {
            version: 12,
            sqlite: V12,
            postgres: V12,
        },
        Migration {
            version: 13,
            sqlite: V13,
            postgres: V13,
        },
        Migration {
            version: 14,
            sqlite: V14,
            postgres: V14,
        },
        Migration {
            version: 15,
            sqlite: &[],
            postgres: V15_POSTGRES,
        },
    ]
}

/// The columns of [`HostRow`], in one list with the EK's and the host facts' expressions given.
macro_rules! host_columns {
    ($ek:literal, $host_info:literal) => {
        concat!(
            "name, hardware_uuid, connection_url, tls_cert_sha256, ",
            $ek,
            ", ak_public, ",
            $host_info,
            ", software_tpm, status, status_detail, reset_count, restart_count, verdict, reasons, \
             attested_at, expires_at, created"
        )
    };
}

const HOST_COLUMNS: &str = host_columns!("ek_public", "host_info");

/// [`HOST_COLUMNS`] as an attestation reads them ([`Store::claim_due`]): the EK and the host
/// facts read as empty. An attestation uses neither (the AK it checks is pinned), and they are
/// most of a row's bytes (an EK of an RSA TPM about 550, the facts often more), read, sent and
/// decoded for every claimed host. A push host's row kept for its next attestation leaves them
/// out the same way.
const ATTEST_COLUMNS: &str = host_columns!("'' AS ek_public", "'' AS host_info");

/// The rows of the hosts named in a list ([`ATTEST_COLUMNS`]): the hosts a claim took
/// ([`Store::claim_due`], [`Store::claim_scheduled`]).
static HOSTS_NAMED: ShapedSql = ShapedSql::new(|backend, shape| {
    let select = format!("SELECT {ATTEST_COLUMNS} FROM hosts WHERE name");
    in_list(backend, &select, shape, "")
});

/// The hosts sharing a name ($1), a hardware UUID in any case ($2) or an EK ($3) with a
/// registration, with `lock` appended (`FOR UPDATE` inside a PostgreSQL transaction).
fn identity_holders_query(lock: &str) -> String {
    format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1 OR LOWER(hardware_uuid) = LOWER($2) \
         OR ek_public = $3 ORDER BY name{lock}"
    )
}

/// An endorsement's columns from `e`, each named with the prefix `e_` ([`endorsements_as_e`]).
const ENDORSEMENT_AS_E: &str = "e.id AS e_id, e.hardware_uuid AS e_hardware_uuid, \
     e.ek_sha256 AS e_ek_sha256, e.ek_public AS e_ek_public, e.certificate AS e_certificate, \
     e.comment AS e_comment, e.revoked AS e_revoked, e.created AS e_created";

/// The endorsements of rows that carry [`ENDORSEMENT_AS_E`] from a left join: each once (a
/// join may repeat one on several rows), in the order first met; none from rows without one.
fn endorsements_as_e(rows: &[AnyRow]) -> Result<Vec<Endorsement>> {
    let mut listed: Vec<Endorsement> = Vec::new();
    for r in rows {
        let Some(id) = r.try_get::<Option<String>, _>("e_id")? else {
            continue;
        };
        if !listed.iter().any(|e| e.id == id) {
            listed.push(endorsement_named(r, "e_")?);
        }
    }
    Ok(listed)
}

/// A row as either driver gives it, read by column name: sqlx's, or a row of the SQLite
/// writer's own connection ([`direct`]), so that a row is decoded by one function for both.
trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn text_or_null(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn int_or_null(&self, column: &str) -> Result<Option<i64>>;
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn text_or_null(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn int_or_null(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
}

fn host_from_row(r: &impl Columns) -> Result<HostRow> {
    Ok(HostRow {
        name: r.text("name")?,
        hardware_uuid: r.text("hardware_uuid")?,
        connection_url: r.text("connection_url")?,
        tls_cert_sha256: r.text("tls_cert_sha256")?,
        ek_public: r.text("ek_public")?,
        ak_public: r.text("ak_public")?,
        host_info: r.text("host_info")?,
        software_tpm: r.int("software_tpm")? != 0,
        status: decode("hosts", "status", r.text("status")?, HostStatus::parse)?,
        status_detail: r.text_or_null("status_detail")?,
        reset_count: r.int_or_null("reset_count")?,
        restart_count: r.int_or_null("restart_count")?,
        verdict: r
            .text_or_null("verdict")?
            .map(|v| decode("hosts", "verdict", v, Trust::parse))
            .transpose()?,
        reasons: r.text_or_null("reasons")?,
        attested_at: r.int_or_null("attested_at")?,
        expires_at: r.int_or_null("expires_at")?,
        created: r.int("created")?,
    })
}

/// Reads a closed set of values stored as text; anything else is a corrupt row.
fn decode<T>(
    table: &'static str,
    column: &str,
    text: String,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T> {
    parse(&text).ok_or_else(|| StoreError::Corrupt {
        table,
        detail: format!("{column} = {text:?} is not a known value"),
    })
}

fn report_from_row(r: &AnyRow) -> Result<ReportRow> {
    Ok(ReportRow {
        id: r.try_get("id")?,
        host_name: r.try_get("host_name")?,
        verdict: decode("reports", "verdict", r.try_get("verdict")?, Trust::parse)?,
        reasons: r.try_get("reasons")?,
        created: r.try_get("created")?,
        expires: r.try_get("expires")?,
        hardware_uuid: r
            .try_get::<Option<String>, _>("hardware_uuid")?
            .unwrap_or_default(),
        signed_report: r.try_get("signed_report")?,
    })
}

fn endorsement_from_row(r: &AnyRow) -> Result<Endorsement> {
    endorsement_named(r, "")
}

/// An endorsement from columns named with `prefix` (a joined read names them apart from the
/// other table's).
fn endorsement_named(r: &AnyRow, prefix: &str) -> Result<Endorsement> {
    let column = |name: &str| format!("{prefix}{name}");
    Ok(Endorsement {
        id: r.try_get(column("id").as_str())?,
        hardware_uuid: r.try_get(column("hardware_uuid").as_str())?,
        ek_sha256: r.try_get(column("ek_sha256").as_str())?,
        ek_public: r.try_get(column("ek_public").as_str())?,
        certificate: r.try_get(column("certificate").as_str())?,
        comment: r.try_get(column("comment").as_str())?,
        revoked: r.try_get::<i64, _>(column("revoked").as_str())? != 0,
        created: r.try_get(column("created").as_str())?,
    })
}

/// Page cache of the SQLite writer connection: 4 MiB (SQLite's default is 2 MiB). The pages
/// an attestation changes stay cached until they are written, and the pages it only reads
/// come from the file's memory map ([`SQLITE_MMAP`]) without a copy. No larger: at
/// commits that follow a B-tree split SQLite scans the cache's whole hash table (the split
/// moves a page through a temporary number past the database's end), a cost in proportion
/// to the cache (16 MiB cost the writer about 5 µs an attestation more). The readers keep
/// the default: a reader empties its whole cache at its first read after any commit (WAL
/// mode), which under a steady stream of attestations is nearly every read.
const SQLITE_CACHE_SIZE: &str = "PRAGMA cache_size=-4096";

/// Frames the WAL of a SQLite database grows by before a commit copies them into the database
/// file (a checkpoint): 10,000 pages, 40 MiB (SQLite's default is 1,000). A checkpoint writes
/// each page once however often it changed since the last one and ends with two `fsync`s: the
/// pages an attestation changes (its host's row, an index page of the reports) are copied,
/// and synced, less often.
const SQLITE_AUTOCHECKPOINT: &str = "PRAGMA wal_autocheckpoint=10000";

/// Bytes of a SQLite database file its writer connections (sqlx's and the report writer's,
/// [`direct`]) read through a memory map (256 MiB, 2^28; SQLite's default is none): a page
/// neither in the page cache nor in the WAL is then read in place instead of copied by a
/// `pread`. Only the writers map it (each mapping counts in the server's RSS), and only so
/// far, so that the memory a fleet's database costs stays bounded. A read error of the disk
/// under a map ends the process (SIGBUS) where a `pread` would have failed the statement: the
/// server is then restarted, as after any crash.
const SQLITE_MMAP: &str = "PRAGMA mmap_size=268435456";

/// The settings of a SQLite writer connection, in order (WAL mode, a wait for the file's lock,
/// commits synced at checkpoints only, then the three above). A batch statement that may fail
/// half-way (a multi-row update) keeps the pages it changes in a statement journal, a
/// temporary file by default: kept in memory instead (`temp_store`, a few pages per
/// statement).
const SQLITE_WRITER_SETUP: &[&str] = &[
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA temp_store=MEMORY",
    SQLITE_CACHE_SIZE,
    SQLITE_AUTOCHECKPOINT,
    SQLITE_MMAP,
];

/// The writer settings a test reads back from SQLite ([`Store::sqlite_writer_settings`]).
const CHECKED_SETTINGS: [&str; 3] = ["cache_size", "wal_autocheckpoint", "mmap_size"];

/// The agent address stored for a push host (it has none; [`crate::push`]).
pub const PUSH_URL: &str = "push:";

/// The `next_attest` of a push host: never due ([`crate::push`]).
pub const PUSH_NEVER_DUE: i64 = i64::MAX / 4;

/// When expired registration challenges were last deleted (Unix ms), and how often at most.
static CHALLENGE_SWEEP: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
const CHALLENGE_SWEEP_MS: i64 = 10_000;

/// A new random identifier (128 bits, hex).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // A failing system RNG leaves zeros; ids then collide and inserts fail loudly.
    let _ = crate::clock::fill_random(&mut b);
    hex::encode(b)
}

/// A report's identifier: its creation time (Unix ms, 48 bits) then 80 random bits, in hex
/// (32 characters, like [`new_id`]). Reports are written at about the time they are created,
/// so each insert lands at the end of the primary-key index instead of on a random page of
/// it: one page written per group commit instead of one per report.
pub fn report_id(created_ms: i64) -> String {
    let mut b = [0u8; 16];
    let ms = u64::try_from(created_ms).unwrap_or(0) & 0xffff_ffff_ffff;
    if let Some(head) = b.get_mut(..6) {
        head.copy_from_slice(&ms.to_be_bytes()[2..]);
    }
    if let Some(tail) = b.get_mut(6..) {
        // A failing system RNG leaves zeros; ids then collide and inserts fail loudly.
        let _ = crate::clock::fill_random(tail);
    }
    hex::encode(b)
}

/// Where a host sits among the others: the first 63 bits of the SHA-256 of its name. On
/// SQLite a host's row is stored under it (its `rowid`, taken by a new row unless another
/// row holds it), and a push host is due at the same point of every attestation interval
/// ([`crate::push`]): the hosts whose evidence arrives together are then neighbours in the
/// table, and a group commit rewrites a few of its pages instead of one page a host.
pub fn host_key(name: &str) -> i64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let mut head = [0u8; 8];
    if let Some(d) = digest.as_ref().get(..8) {
        head.copy_from_slice(d);
    }
    i64::from_be_bytes(head) & i64::MAX
}

/// What an attestation wrote about a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestationUpdate {
    /// TPM resetCount seen (when a quote was verified).
    pub reset_count: Option<i64>,
    /// TPM restartCount seen.
    pub restart_count: Option<i64>,
    /// The verified quote's PCR values (their stored JSON, [`crate::store::QuotedPcrs::read`]),
    /// quoted at the report's time; `None` keeps the stored ones and their time. The same text
    /// as the stored one is not written again (only the time moves).
    pub quoted_pcrs: Option<Arc<StoredPcrs>>,
}

/// Quoted PCR values as stored (`host_pcrs.quoted_pcrs`), with the digest the host's row keeps
/// of them (`hosts.pcrs_sha`): an attestation compares the digest, and writes the text only
/// when it differs (migration 14).
#[derive(Debug, PartialEq, Eq)]
pub struct StoredPcrs {
    json: Box<str>,
    digest: String,
}

impl StoredPcrs {
    /// The values stored as `json`, and their digest (hex SHA-256 of the text).
    pub fn new(json: impl Into<Box<str>>) -> Self {
        let json = json.into();
        let digest = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            json.as_bytes(),
        ));
        Self { json, digest }
    }

    /// The stored text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The digest of the stored text.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// The statement that makes each report of a batch its host's current verdict (each host at
/// most once), for [`batch_shape`] rows of [`verdict_params`]: the rows beyond the batch have
/// no name and match no host. It returns the hosts that exist (and were updated): a report for
/// a registration (its row's `created`) updates only that registration's row.
///
/// Whether the verdict changed comes back from the update itself: `verdict_version` takes the
/// row's new `version` when the verdict written differs from the one the row held (migration
/// 12), so the two are equal in the returned row exactly when this write changed it. The
/// report becomes the head of the host's chain (`last_report`), and the report it replaces
/// there comes back (`previous_report`, migration 13), for the report's insert to link to.
/// Quoted PCR values are compared by their digest (`pcrs_sha`), and `pcrs_version` says as
/// `verdict_version` does whether they changed: then [`HOST_PCRS_UPSERT`] writes their text
/// (migration 14).
static HOST_VERDICTS: ShapedSql = ShapedSql::new(|backend, shape| {
    // VALUES columns are column1..column12 on both SQLite and PostgreSQL.
    const COLUMNS: [&str; 12] = [
        "{}",
        "{}",
        "{}",
        "CAST({} AS BIGINT)",
        "CAST({} AS BIGINT)",
        "CAST({} AS BIGINT)",
        "CAST({} AS BIGINT)",
        "CAST({} AS BIGINT)",
        "CAST({} AS BIGINT)",
        "CAST({} AS TEXT)",
        "CAST({} AS BIGINT)",
        "{}",
    ];
    let values = value_rows(backend, shape, &COLUMNS);
    let from = format!("FROM (VALUES {values}) AS v");
    let update = host_verdicts_sql(backend, &from, |c| format!("v.column{c}"));
    format!("{update} RETURNING {UPDATED_COLUMNS}")
});

/// What [`HOST_VERDICTS`] returns of each row it updated, and [`HOST_UPDATED_SQLITE`] reads
/// ([`Updated::new`]).
const UPDATED_COLUMNS: &str = "name, version, verdict_version, pcrs_version, previous_report";

/// [`HOST_VERDICTS`] for one report, on SQLite, without `RETURNING`: its values bound as `?1`
/// to `?12` (in the order of [`verdict_params`]). The report writer ([`direct`]) runs it once
/// a report: a statement that writes one row by its key needs no statement journal, nor the
/// join that an update from a list of values makes first. SQLite makes `RETURNING` a trigger:
/// the update then first gathers the rows it will change in a temporary table, copies each
/// row's old and new columns for the trigger, and keeps the returned rows in a second
/// temporary table (two B-trees created and destroyed a statement). The writer reads instead
/// what the update wrote, by the host's name ([`HOST_UPDATED_SQLITE`]), when it updated a row.
static HOST_VERDICT_SQLITE: LazyLock<String> =
    LazyLock::new(|| host_verdicts_sql(Backend::Sqlite, "", |c| format!("?{c}")));

/// What [`HOST_VERDICTS`] returns of a host, read after [`HOST_VERDICT_SQLITE`] updated it
/// (in the same transaction, on the one connection that writes: the row as the update left it).
static HOST_UPDATED_SQLITE: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {UPDATED_COLUMNS} FROM hosts WHERE name = ?1"));

/// The update of [`HOST_VERDICTS`], without what it returns: `from` names the values (empty:
/// none), `value(c)` is a report's value `c` (from 1, in the order of [`verdict_params`]).
fn host_verdicts_sql(backend: Backend, from: &str, value: impl Fn(usize) -> String) -> String {
    let same = match backend {
        Backend::Sqlite => "IS",
        Backend::Postgres => "IS NOT DISTINCT FROM",
    };
    let [name, verdict, reasons, attested, expires, reached, counted, reset, restart, pcrs_sha, registered, report] =
        std::array::from_fn(|i| value(i + 1));
    format!(
        "UPDATE hosts SET verdict = {verdict}, reasons = {reasons}, attested_at = {attested}, \
         verdict_version = CASE WHEN verdict {same} {verdict} THEN verdict_version \
         ELSE version + 1 END, \
         expires_at = {expires}, \
         status = CASE WHEN {reached} = 1 THEN 'connected' ELSE status END, \
         status_detail = CASE WHEN {reached} = 1 THEN NULL ELSE status_detail END, \
         reset_count = CASE WHEN {counted} = 1 THEN {reset} ELSE reset_count END, \
         restart_count = CASE WHEN {counted} = 1 THEN {restart} ELSE restart_count END, \
         pcrs_version = CASE WHEN {pcrs_sha} IS NULL OR pcrs_sha {same} {pcrs_sha} \
         THEN pcrs_version ELSE version + 1 END, \
         pcrs_sha = CASE WHEN {pcrs_sha} IS NULL THEN pcrs_sha ELSE {pcrs_sha} END, \
         pcrs_quoted_at = CASE WHEN {pcrs_sha} IS NULL THEN pcrs_quoted_at ELSE {attested} END, \
         previous_report = last_report, last_report = {report}, \
         version = version + 1 {from} WHERE hosts.name = {name} \
         AND ({registered} IS NULL OR hosts.created = {registered})"
    )
}

/// What [`HOST_VERDICTS`] binds for one report, in order.
fn verdict_params<'a>(&(report, registered, reached, counters): &BatchRow<'a>) -> [Param<'a>; 12] {
    let (reset, restart) = counters.map_or((None, None), |c| (c.reset_count, c.restart_count));
    [
        Param::Text(Some(&report.host_name)),
        Param::Text(Some(report.verdict.as_str())),
        Param::Text(Some(&report.reasons)),
        Param::Int(Some(report.created)),
        Param::Int(Some(report.expires)),
        Param::Int(Some(i64::from(reached))),
        Param::Int(Some(i64::from(counters.is_some()))),
        Param::Int(reset),
        Param::Int(restart),
        Param::Text(
            counters
                .and_then(|c| c.quoted_pcrs.as_deref())
                .map(StoredPcrs::digest),
        ),
        Param::Int(registered),
        Param::Text(Some(&report.id)),
    ]
}

/// The statement that inserts a batch's reports, for [`batch_shape`] rows of
/// [`report_params`]: the rows beyond the batch have no id and are not inserted.
static REPORTS_INSERT: ShapedSql = ShapedSql::new(|backend, shape| {
    let values = value_rows(backend, shape, &["{}"; 9]);
    format!(
        "INSERT INTO reports ({REPORT_COLUMNS}) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9 \
         FROM (VALUES {values}) AS v WHERE v.column1 IS NOT NULL"
    )
});

/// The columns [`report_params`] binds, in order.
const REPORT_COLUMNS: &str =
    "id, host_name, verdict, reasons, created, expires, signed_report, hardware_uuid, previous";

/// [`REPORTS_INSERT`] for one report, on SQLite (as [`HOST_VERDICT_SQLITE`]).
static REPORT_INSERT_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!("INSERT INTO reports ({REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
});

/// What [`REPORTS_INSERT`] binds for one report, linked to `previous` (the host's report
/// before it), in order.
fn report_params<'a>((r, previous): &'a (&'a ReportRow, Option<String>)) -> [Param<'a>; 9] {
    [
        Param::Text(Some(&r.id)),
        Param::Text(Some(&r.host_name)),
        Param::Text(Some(r.verdict.as_str())),
        Param::Text(Some(&r.reasons)),
        Param::Int(Some(r.created)),
        Param::Int(Some(r.expires)),
        Param::Text(Some(&r.signed_report)),
        Param::Text(Some(&r.hardware_uuid)),
        Param::Text(previous.as_deref()),
    ]
}

/// The statement that appends changes to the feed, for [`batch_shape`] rows (at most a
/// quarter of [`BATCH_MAX`]) of [`change_params`]: the rows beyond them have no host and are
/// not inserted.
static CHANGES_INSERT: ShapedSql = ShapedSql::new(|backend, shape| {
    let values = value_rows(backend, shape, &["{}"; 4]);
    format!(
        "INSERT INTO changes (host_name, kind, verdict, created) \
         SELECT v.column1, v.column2, v.column3, v.column4 FROM (VALUES {values}) AS v \
         WHERE v.column1 IS NOT NULL"
    )
});

/// Most changes one [`CHANGES_INSERT`] carries.
const CHANGES_MAX: usize = BATCH_MAX / 4;

/// What [`CHANGES_INSERT`] binds for one change made at `now` (Unix ms), in order.
fn change_params((change, now): &(Change, i64)) -> [Param<'_>; 4] {
    [
        Param::Text(Some(&change.host_name)),
        Param::Text(Some(change.kind.as_str())),
        Param::Text(change.verdict.map(Trust::as_str)),
        Param::Int(Some(*now)),
    ]
}

/// A value a batch statement binds: the one list of a statement's values that both the sqlx
/// statements and the SQLite report writer's ([`direct`]) bind, in the same order.
#[derive(Debug, Clone, Copy)]
enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

impl<'a> Param<'a> {
    /// A NULL of this value's kind.
    fn null(self) -> Self {
        match self {
            Param::Text(_) => Param::Text(None),
            Param::Int(_) => Param::Int(None),
        }
    }

    fn bind<'q>(self, query: AnyQuery<'q>) -> AnyQuery<'q>
    where
        'a: 'q,
    {
        match self {
            Param::Text(t) => query.bind(t),
            Param::Int(i) => query.bind(i),
        }
    }
}

/// The values of a batch statement written for `shape` rows ([`batch_shape`]): each row's,
/// then, for the rows beyond the batch (which match or insert nothing), NULLs of the kinds of
/// the first row's values (PostgreSQL types each parameter).
fn shaped<'a, const N: usize>(
    rows: impl IntoIterator<Item = [Param<'a>; N]>,
    shape: usize,
) -> Vec<Param<'a>> {
    let mut values = Vec::with_capacity(shape * N);
    let mut padding = None;
    for row in rows {
        padding.get_or_insert(row.map(Param::null));
        values.extend(row);
    }
    if let Some(padding) = padding {
        while values.len() < shape * N {
            values.extend(padding);
        }
    }
    values
}

/// `query` with every value of `params` bound, in order.
fn bind_all<'q, 'a: 'q>(mut query: AnyQuery<'q>, params: Vec<Param<'a>>) -> AnyQuery<'q> {
    for p in params {
        query = p.bind(query);
    }
    query
}

/// Makes each report its host's current verdict ([`HOST_VERDICTS`]); returns the hosts that
/// exist (and were updated).
async fn update_host_verdicts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    rows: &[&BatchRow<'_>],
) -> Result<HashMap<String, Updated>> {
    let shape = batch_shape(rows.len());
    let query = bind_all(
        HOST_VERDICTS.query(backend, shape),
        shaped(rows.iter().map(|row| verdict_params(row)), shape),
    );
    let updated = query.fetch_all(&mut **tx).await?;
    updated
        .iter()
        .map(|r| {
            let updated = Updated::new(
                r.try_get("version")?,
                r.try_get("verdict_version")?,
                r.try_get("pcrs_version")?,
                r.try_get("previous_report")?,
            );
            Ok((r.try_get("name")?, updated))
        })
        .collect()
}

/// What [`HOST_VERDICTS`] returned for a host it updated.
struct Updated {
    /// Whether its verdict changed.
    changed: bool,
    /// Whether its quoted PCR values changed (their text is to be written).
    pcrs_changed: bool,
    /// The report its row named before this one (the new report links to it).
    previous: Option<String>,
}

impl Updated {
    /// From the row's [`UPDATED_COLUMNS`] after the update: its verdict and its PCR values
    /// changed when their version is the row's.
    fn new(
        version: i64,
        verdict_version: i64,
        pcrs_version: i64,
        previous: Option<String>,
    ) -> Self {
        Self {
            changed: version == verdict_version,
            pcrs_changed: version == pcrs_version,
            previous,
        }
    }
}

/// The statement that writes the quoted PCR values of the hosts whose values changed
/// ([`Updated::pcrs_changed`]), for [`batch_shape`] rows of [`pcrs_params`]: the rows beyond
/// them have no name and are not written.
static HOST_PCRS_UPSERT: ShapedSql = ShapedSql::new(|backend, shape| {
    let values = value_rows(backend, shape, &["{}"; 2]);
    format!(
        "INSERT INTO host_pcrs (name, quoted_pcrs) SELECT v.column1, v.column2 \
         FROM (VALUES {values}) AS v WHERE v.column1 IS NOT NULL \
         ON CONFLICT (name) DO UPDATE SET quoted_pcrs = excluded.quoted_pcrs"
    )
});

/// What [`HOST_PCRS_UPSERT`] binds for one host, in order.
fn pcrs_params<'a>(&(host, pcrs): &(&'a str, &'a StoredPcrs)) -> [Param<'a>; 2] {
    [Param::Text(Some(host)), Param::Text(Some(pcrs.json()))]
}

/// How many rows (or names) a batch statement of `n` is written for: `n` rounded up to a
/// power of two, at most [`BATCH_MAX`]. A connection then prepares at most nine shapes of
/// each batch statement and finds them again in its statement cache (sqlx keeps 100 a
/// connection); with one shape per count, group commits of every size between 1 and 40
/// pushed each other out of it and each commit prepared its statements again.
fn batch_shape(n: usize) -> usize {
    n.max(1).next_power_of_two().min(BATCH_MAX)
}

/// The `i`-th placeholder (from 1) of a statement: anonymous `?` on SQLite, `$i` on
/// PostgreSQL. (SQLite looks a numbered parameter's name up in a list of every name of the
/// statement, and sqlx asks for the name of each one it binds: quadratic in the parameters
/// of a batch statement. An anonymous one has no name to look up.) A statement takes them
/// all in order, from 1: on SQLite an anonymous one is numbered after the one before it.
fn mark(backend: Backend, i: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${i}"),
    }
}

/// The `n` placeholders of an `IN` list ([`mark`]).
fn placeholders(backend: Backend, n: usize) -> String {
    (1..=n)
        .map(|i| mark(backend, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` rows of `VALUES`, each column's placeholder ([`mark`]) put into its template's
/// `{}` (a cast, or `{}` alone).
fn value_rows(backend: Backend, rows: usize, columns: &[&str]) -> String {
    (0..rows)
        .map(|r| {
            let row = columns
                .iter()
                .enumerate()
                .map(|(c, template)| {
                    template.replacen("{}", &mark(backend, r * columns.len() + c + 1), 1)
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("({row})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The query type of every statement here.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds the padding rows of a batch statement written for [`batch_shape`] rows: `rows` rows
/// of NULLs, one a column of `kinds` (`i` an integer, anything else text; PostgreSQL types a
/// NULL parameter by what it is bound as). A statement skips its rows whose first column is
/// NULL.
fn bind_padding<'q>(mut query: AnyQuery<'q>, rows: usize, kinds: &str) -> AnyQuery<'q> {
    for _ in 0..rows {
        for kind in kinds.bytes() {
            query = match kind {
                b'i' => query.bind(None::<i64>),
                _ => query.bind(None::<String>),
            };
        }
    }
    query
}

/// The text of a batch statement for each shape ([`batch_shape`]) on each backend, written
/// the first time it is used and kept. A statement's text depends on nothing else, and
/// writing it at every group commit (a placeholder for each bound value, joined) cost about
/// 2 % of an attestation's instructions.
pub(super) struct ShapedSql {
    write: fn(Backend, usize) -> String,
    texts: [[OnceLock<String>; SHAPES]; 2],
}

/// How many shapes a batch statement has: 1, 2, 4, ... [`BATCH_MAX`] rows.
const SHAPES: usize = BATCH_MAX.trailing_zeros() as usize + 1;

impl ShapedSql {
    /// A statement whose text for `shape` rows on a backend is `write(backend, shape)`.
    pub(super) const fn new(write: fn(Backend, usize) -> String) -> Self {
        Self {
            write,
            texts: [const { [const { OnceLock::new() }; SHAPES] }; 2],
        }
    }

    /// The statement for `shape` rows, as a query ([`Self::text`]).
    pub(super) fn query<'q>(&'static self, backend: Backend, shape: usize) -> AnyQuery<'q> {
        match self.text(backend, shape) {
            Cow::Borrowed(kept) => sqlx::query(kept),
            Cow::Owned(text) => sqlx::query(sqlx::AssertSqlSafe(text)),
        }
    }

    /// The text for `shape` rows on `backend`: kept for a shape that [`batch_shape`] gives,
    /// written anew for any other.
    fn text(&'static self, backend: Backend, shape: usize) -> Cow<'static, str> {
        let kept = match backend {
            Backend::Sqlite => self.texts.first(),
            Backend::Postgres => self.texts.get(1),
        }
        .filter(|_| shape.is_power_of_two())
        .and_then(|t| t.get(shape.trailing_zeros() as usize));
        match kept {
            Some(cell) => Cow::Borrowed(cell.get_or_init(|| (self.write)(backend, shape))),
            None => Cow::Owned((self.write)(backend, shape)),
        }
    }
}

/// `select` (a statement ending in a column to match) followed by `IN (...)` of `shape`
/// placeholders and then `tail`: the text of a [`names_query`].
fn in_list(backend: Backend, select: &str, shape: usize, tail: &str) -> String {
    format!("{select} IN ({}){tail}", placeholders(backend, shape))
}

/// `sql` (a [`ShapedSql`] of [`in_list`]) for [`batch_shape`] names, with the names bound,
/// its first name listed again for the rest (a name listed twice matches as once). At most
/// [`BATCH_MAX`] names. The list takes placeholders 1 to the shape; any after it are bound by
/// the caller.
fn names_query<'q, N>(backend: Backend, sql: &'static ShapedSql, names: &'q [N]) -> AnyQuery<'q>
where
    N: AsRef<str>,
{
    let shape = batch_shape(names.len());
    let mut query = sql.query(backend, shape);
    for n in names {
        query = query.bind(n.as_ref());
    }
    if let Some(first) = names.first() {
        for _ in names.len()..shape {
            query = query.bind(first.as_ref());
        }
    }
    query
}

/// Most rows one statement of a batch carries (at most 12 parameters a row: far below
/// SQLite's and PostgreSQL's parameter limits).
const BATCH_MAX: usize = 256;

/// A group commit of fewer queued reports than this waits [`GATHER`] for more first.
const GATHER_BELOW: usize = 8;

/// How long a small group commit waits for more reports by default (a report's save takes
/// this much longer at most; each commit it saves costs several round trips to the database).
const GATHER: Duration = Duration::from_millis(2);

/// A report waiting for the group commit.
struct PendingReport {
    report: ReportRow,
    /// Only for the host registered at this time (Unix ms, its row's `created`).
    registered: Option<i64>,
    reached: bool,
    counters: Option<AttestationUpdate>,
    /// The report back, and whether it was stored.
    done: oneshot::Sender<Result<(ReportRow, bool)>>,
}

/// One report of a group commit: the report, the registration it is for (when known), whether
/// the agent answered, and the TPM counters its quote showed.
pub(super) type BatchRow<'a> = (
    &'a ReportRow,
    Option<i64>,
    bool,
    Option<&'a AttestationUpdate>,
);

/// A batch of reports in rounds, each naming a host at most once (each round is one
/// [`HOST_VERDICTS`] statement per [`BATCH_MAX`] rows): a host attested twice in one batch (a
/// scheduled and an on-demand attestation) gets its second report in a later round. Each row
/// comes with its place in the batch.
fn verdict_rounds<'b, 'r>(rows: &'b [BatchRow<'r>]) -> Vec<Vec<(usize, &'b BatchRow<'r>)>> {
    let mut rounds = Vec::new();
    let mut rest: Vec<(usize, &BatchRow<'r>)> = rows.iter().enumerate().collect();
    while !rest.is_empty() {
        let mut seen = BTreeSet::new();
        let (round, later): (Vec<_>, Vec<_>) = rest
            .into_iter()
            .partition(|(_, (r, _, _, _))| seen.insert(r.host_name.as_str()));
        rounds.push(round);
        rest = later;
    }
    rounds
}

/// What a group commit of reports wrote, gathered statement by statement.
struct Saved<'r> {
    /// The reports to insert: those whose host still exists (in their registration), each
    /// with the host's report before it.
    kept: Vec<(&'r ReportRow, Option<String>)>,
    /// Whether each report of the batch was stored.
    stored: Vec<bool>,
    /// A change for each verdict that changed, with its time.
    changes: Vec<(Change, i64)>,
    /// The quoted PCR values that changed, by host ([`HOST_PCRS_UPSERT`]).
    pcrs: Vec<(&'r str, &'r StoredPcrs)>,
}

impl<'r> Saved<'r> {
    fn new(reports: usize) -> Self {
        Self {
            kept: Vec::with_capacity(reports),
            stored: vec![false; reports],
            changes: Vec::new(),
            pcrs: Vec::new(),
        }
    }

    /// Takes what a [`HOST_VERDICTS`] statement for `chunk` returned: the hosts updated.
    fn updated(&mut self, chunk: &[(usize, &BatchRow<'r>)], mut updated: HashMap<String, Updated>) {
        for &(i, row) in chunk {
            self.updated_one(i, row, updated.remove(&row.0.host_name));
        }
    }

    /// Takes what the update of report `i`'s host returned: `None` when it updated no row.
    fn updated_one(
        &mut self,
        i: usize,
        &(report, _, _, counters): &BatchRow<'r>,
        host: Option<Updated>,
    ) {
        let Some(Updated {
            changed,
            pcrs_changed,
            previous,
        }) = host
        else {
            // The host was deleted (or registered again) while it was being attested: keep
            // no orphan report.
            return;
        };
        if let Some(s) = self.stored.get_mut(i) {
            *s = true;
        }
        self.kept.push((report, previous));
        if let Some(pcrs) = counters.and_then(|c| c.quoted_pcrs.as_deref()) {
            if pcrs_changed {
                self.pcrs.push((&report.host_name, pcrs));
            }
        }
        if changed {
            let change = Change::verdict(&report.host_name, report.verdict);
            self.changes.push((change, report.created));
        }
    }

    /// The changes to publish after the commit, and whether each report was stored.
    fn done(self) -> (Vec<Change>, Vec<bool>) {
        (
            self.changes.into_iter().map(|(c, _)| c).collect(),
            self.stored,
        )
    }
}

/// The rows of a group commit of reports.
fn batch_rows(items: &[PendingReport]) -> Vec<BatchRow<'_>> {
    items
        .iter()
        .map(|p| (&p.report, p.registered, p.reached, p.counters.as_ref()))
        .collect()
}

/// A group commit: items queued by concurrent callers, committed together by whichever of
/// them gets the turn first (on a task of its own, so a caller that gives up strands no one);
/// every caller gets its own result.
struct Group<T> {
    queue: std::sync::Mutex<Vec<T>>,
    turn: Arc<tokio::sync::Mutex<()>>,
    commits: AtomicU64,
    committed: AtomicU64,
    /// How long a commit of fewer than [`GATHER_BELOW`] items waits for more, in
    /// microseconds (0: never).
    gather_us: AtomicU64,
    /// What the items are, for the error of an abandoned commit.
    what: &'static str,
}

impl<T: Send + 'static> Group<T> {
    fn new(what: &'static str, gather: Duration) -> Self {
        Self {
            queue: std::sync::Mutex::default(),
            turn: Arc::default(),
            commits: AtomicU64::default(),
            committed: AtomicU64::default(),
            gather_us: AtomicU64::new(u64::try_from(gather.as_micros()).unwrap_or(u64::MAX)),
            what,
        }
    }

    /// Queues `item`; gives it back when the queue is unusable (a panic poisoned it).
    fn push(&self, item: T) -> std::result::Result<(), T> {
        match self.queue.lock() {
            Ok(mut q) => {
                q.push(item);
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// Waits for the result of an item queued by [`Group::push`]; whoever gets the turn while
    /// its own item is still queued commits everything queued with `commit`.
    async fn wait<R, F, Fut>(
        &self,
        mut result: oneshot::Receiver<Result<R>>,
        commit: F,
    ) -> Result<R>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            tokio::select! {
                biased;
                r = &mut result => return r.unwrap_or_else(|_| Err(self.lost())),
                turn = self.turn.clone().lock_owned() => {
                    // A commit that would carry few items waits a moment for more, as
                    // PostgreSQL's `commit_delay` does: items that arrive one by one (pushed
                    // evidence) would otherwise each pay a transaction of their own.
                    let queued = self.queue.lock().map(|q| q.len()).unwrap_or(0);
                    let gather = self.gather_us.load(Ordering::Relaxed);
                    if gather > 0 && (1..GATHER_BELOW).contains(&queued) {
                        tokio::time::sleep(Duration::from_micros(gather)).await;
                    }
                    let items: Vec<T> = self
                        .queue
                        .lock()
                        .map(|mut q| std::mem::take(&mut *q))
                        .unwrap_or_default();
                    if items.is_empty() {
                        // Ours was committed by the turn before this one.
                        drop(turn);
                        return result.await.unwrap_or_else(|_| Err(self.lost()));
                    }
                    let work = commit(items);
                    let _ = tokio::spawn(async move {
                        work.await;
                        drop(turn);
                    })
                    .await;
                }
            }
        }
    }

    /// Counts a commit of `n` items.
    fn counted(&self, n: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed
            .fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }

    fn lost(&self) -> StoreError {
        StoreError::Corrupt {
            table: self.what,
            detail: "the group commit holding this write was abandoned".into(),
        }
    }
}

impl Store {
    /// Connects, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let mut db_file = None;
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let (file, query) = path.split_once('?').unwrap_or((path, ""));
            if file != ":memory:" && !file.is_empty() && !query.contains("mode=memory") {
                let f = std::path::Path::new(file);
                if let Some(dir) = f.parent() {
                    create_private_dir(dir)?;
                }
                // The file holds the report-signing key: owner-only, whatever the umask.
                check_private(f, "the database file")?;
                if !f.exists() {
                    let mut o = std::fs::OpenOptions::new();
                    o.write(true).create_new(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                    match o.open(f) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                db_file = Some(f.to_path_buf());
            }
            let query = if query.is_empty() {
                "mode=rwc".to_string()
            } else {
                query.to_string()
            };
            (Backend::Sqlite, format!("sqlite://{file}?{query}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let url = url.clone();
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 16,
        };
        // One direct connection first: a pool only says "timed out" after its acquire timeout,
        // while this names the cause (connection refused, not a database, bad password).
        if !in_memory {
            probe_connect(&opts, backend).await?;
        }
        let faults = Arc::new(Faults::default());
        let writer_faults = faults.clone();
        let writer_setup: conns::Setup = Arc::new(move |conn| {
            let faults = writer_faults.clone();
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    let pages = faults.max_pages.load(Ordering::SeqCst);
                    if pages > 0 {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "PRAGMA max_page_count = {pages}"
                        )))
                        .execute(&mut *conn)
                        .await?;
                    }
                    for statement in SQLITE_WRITER_SETUP {
                        sqlx::query(*statement).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        });
        // The store holds its connections ([`conns`]), which says why not sqlx's pool.
        let upkeep = match backend {
            Backend::Sqlite => conns::Upkeep::Local,
            Backend::Postgres => conns::Upkeep::Network,
        };
        let pool = Conns::new(&opts, max, upkeep, writer_setup);
        // One opened now: a database that cannot be opened fails here.
        drop(pool.get().await?);
        // SQLite allows one writer at a time but, in WAL mode, any number of readers beside
        // it: reads get connections of their own so they never queue behind writes. (An
        // in-memory database is private to its connection: there the writer reads too.)
        let reader = if backend == Backend::Sqlite && !in_memory {
            Conns::new(
                &opts,
                SQLITE_READERS,
                upkeep,
                setup_statements(&["PRAGMA busy_timeout=10000", "PRAGMA query_only=1"]),
            )
        } else {
            pool.clone()
        };
        let claimer = match backend {
            Backend::Sqlite => pool.clone(),
            Backend::Postgres => Conns::new(
                &opts,
                CLAIM_CONNECTIONS,
                upkeep,
                setup_statements(&["SET plan_cache_mode = force_generic_plan"]),
            ),
        };
        let (changes, _) = broadcast::channel(1024);
        let mut store = Self {
            pool,
            reader,
            claimer,
            backend,
            changes,
            url,
            batch: Arc::new(Group::new("reports", GATHER)),
            direct: None,
            registrations: Arc::new(Group::new("hosts", Duration::ZERO)),
            registered: Arc::default(),
            issued: Arc::default(),
            challenge_room: Arc::default(),
            health: Arc::new(WriteHealth::default()),
            faults,
        };
        store.migrate().await?;
        if let Some(f) = &db_file {
            // SQLite gives the -wal and -shm files the database file's mode; made sure here.
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut p = f.clone().into_os_string();
                p.push(suffix);
                make_private(std::path::Path::new(&p))?;
            }
            store.direct = Some(Arc::new(direct::Direct::open(f)?));
        }
        Ok(store)
    }

    /// For a server on a SQLite file: holds the file as its only server until the returned
    /// file is dropped (an exclusive lock on `<file>.lock`, created owner-only; the kernel lets
    /// go when the process ends, however it ends). The scheduler keeps such a server's pull
    /// schedule in memory ([`local_schedule`]), so a second server on the file would attest
    /// every host again; it is refused, with [`StoreError::HeldByAnother`]. `None` on
    /// PostgreSQL.
    pub fn hold_as_only_server(&self) -> Result<Option<std::fs::File>> {
        let Some(direct) = &self.direct else {
            return Ok(None);
        };
        let mut path = direct.file.as_os_str().to_owned();
        path.push(".lock");
        let path = std::path::PathBuf::from(path);
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let lock = o.open(&path)?;
        make_private(&path)?;
        if try_lock_exclusive(&lock)? {
            Ok(Some(lock))
        } else {
            Err(StoreError::HeldByAnother(path.display().to_string()))
        }
    }

    /// Runs `job` on the SQLite report writer ([`direct`]) while this task holds `writer`, the
    /// sqlx writer connection (the only other writer: neither then waits for the other's
    /// lock). When `succeeded` says what `job` returned is a success, that connection, which ran
    /// nothing, goes back to the pool and a write failure is cleared.
    async fn on_direct<T: Send + 'static>(
        &self,
        mut writer: Writer<'_>,
        direct: &direct::Direct,
        job: impl FnOnce(&mut direct::Session) -> T + Send + 'static,
        succeeded: fn(&T) -> bool,
    ) -> Result<T> {
        let out = direct.run(job).await?;
        if succeeded(&out) {
            writer.end.ok = true;
            self.health.ok();
        }
        Ok(out)
    }

    /// Runs a maintenance statement (`ANALYZE`, `VACUUM`) on a task of its own: nothing waits
    /// for it, and a failure is only logged. `done` runs after it either way.
    fn maintain(&self, statement: &'static str, done: impl FnOnce() + Send + 'static) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let outcome = match pool.get().await {
                Ok(mut conn) => sqlx::query(statement).execute(&mut *conn).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(_) => tracing::debug!(statement, "maintenance done"),
                Err(e) => tracing::warn!(statement, error = %e, "maintenance failed"),
            }
            done();
        });
    }

    /// A writer connection for one transaction (see [`Writer`]).
    async fn writer(&self) -> Result<Writer<'_>> {
        let conn = self.pool.get().await.inspect_err(|e| {
            self.health.failed(&e.to_string());
        })?;
        Ok(Writer {
            conn,
            end: TxEnd {
                store: self,
                ok: false,
            },
        })
    }

    /// The faults a test may inject.
    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Test hook: a full disk. On SQLite the database may not grow past its current pages
    /// (`max_page_count`, on the writer connection now and on every one opened later); on
    /// PostgreSQL every write commit fails. `false` ends it.
    #[doc(hidden)]
    pub async fn inject_disk_full(&self, full: bool) -> Result<()> {
        if self.backend == Backend::Postgres {
            self.faults.fail_writes.store(full, Ordering::SeqCst);
            return Ok(());
        }
        self.faults
            .max_pages
            .store(i64::from(full), Ordering::SeqCst);
        let mut conn = self.pool.get().await?;
        let n: i64 = if full { 1 } else { NO_PAGE_LIMIT };
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Readiness: writes work. A small write transaction must commit within 5 s (a locked or
    /// unreachable database fails it); while the last write transaction failed (a full disk), a
    /// write that needs new pages (a 64 KiB row, committed and deleted) must succeed too.
    pub async fn ready(&self) -> std::result::Result<(), String> {
        let failing = self.health.last_failure();
        let size = if failing.is_some() { 64 * 1024 } else { 16 };
        match tokio::time::timeout(Duration::from_secs(5), self.write_probe(size)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(match failing {
                Some((at, _)) => format!(
                    "database writes failing for {} s: {e}",
                    at.elapsed().as_secs()
                ),
                None => format!("database write failed: {e}"),
            }),
            Err(_) => {
                Err("a database write did not finish within 5 s (locked, or unreachable)".into())
            }
        }
    }

    async fn write_probe(&self, size: usize) -> Result<()> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        sqlx::query("DELETE FROM server_keys WHERE name = $1")
            .bind("readiness-probe")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO server_keys (name, value) VALUES ($1, $2)")
            .bind("readiness-probe")
            .bind("x".repeat(size))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM server_keys WHERE name = $1")
            .bind("readiness-probe")
            .execute(&mut *tx)
            .await?;
        w.end.commit(tx).await
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)")
            .execute(&mut *self.pool.get().await?)
            .await?;
        for m in migrations() {
            let mut w = self.writer().await?;
            let mut tx = begin(&mut w.conn, self.backend).await?;
            if self.backend == Backend::Postgres {
                // Replicas starting together: one migrates, the others wait here.
                sqlx::query("SELECT pg_advisory_xact_lock(7365242)")
                    .execute(&mut *tx)
                    .await?;
            }
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                let specific = match self.backend {
                    Backend::Sqlite => m.sqlite,
                    Backend::Postgres => m.postgres,
                };
                for stmt in COMMON_V1.iter().filter(|_| m.version == 1).chain(specific) {
                    sqlx::query(*stmt).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)")
                    .bind(m.version)
                    .bind(millis(SystemTime::now()))
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(version = m.version, "database migrated");
            }
            w.end.commit(tx).await?;
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(())
    }

    /// Test hook: the SQLite writer connection's [`CHECKED_SETTINGS`], as it reports them;
    /// `None` on PostgreSQL.
    #[doc(hidden)]
    pub async fn sqlite_writer_settings(&self) -> Result<Option<[i64; 3]>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let mut conn = self.pool.get().await?;
        let mut values = [0i64; 3];
        for (value, pragma) in values.iter_mut().zip(CHECKED_SETTINGS) {
            *value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut *conn)
                .await?;
        }
        Ok(Some(values))
    }

    /// Test hook: [`Self::sqlite_writer_settings`] of the connection that commits reports on a
    /// SQLite file; `None` on PostgreSQL and in memory.
    #[doc(hidden)]
    pub async fn sqlite_report_writer_settings(&self) -> Result<Option<[i64; 3]>> {
        match &self.direct {
            Some(direct) => direct.run(|s| s.settings()).await?.map(Some),
            None => Ok(None),
        }
    }

    /// Follows changes as they happen in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Changes after sequence number `after`, oldest first (for a follower that resumes).
    pub async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<(i64, Change)>> {
        Ok(self
            .change_events_since(after, limit)
            .await?
            .into_iter()
            .map(|e| {
                (
                    e.seq,
                    Change {
                        host_name: e.host,
                        kind: e.kind,
                        verdict: e.trust,
                    },
                )
            })
            .collect())
    }

    /// Appends `changes` (each with its time) to the feed inside `tx`.
    ///
    /// On PostgreSQL a sequence number is drawn when the row is inserted, not when it commits,
    /// so two transactions could commit out of sequence order and a follower that had read past
    /// the later number would never see the earlier one. The numbers are therefore drawn under
    /// a transaction-scoped advisory lock, held until the commit: transactions that append
    /// changes commit in sequence order. [`TxEnd::commit_with_changes`] calls this last in a
    /// transaction, so the lock is held only for these inserts and the commit, and its holder
    /// never waits on a row lock another transaction holds while waiting for it.
    async fn append_changes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        changes: &[(Change, i64)],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHANGES_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        static NOTIFY: ShapedSql = ShapedSql::new(|_, shape| {
            let payloads = (2..shape + 2)
                .map(|i| format!("(${i})"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT pg_notify($1, v.column1) FROM (VALUES {payloads}) AS v \
                 WHERE v.column1 IS NOT NULL"
            )
        });
        // In order, as many to a statement as a batch carries (each statement is a round
        // trip): a row's sequence number follows the row before it.
        for chunk in changes.chunks(CHANGES_MAX) {
            let shape = batch_shape(chunk.len()).min(CHANGES_MAX);
            bind_all(
                CHANGES_INSERT.query(self.backend, shape),
                shaped(chunk.iter().map(change_params), shape),
            )
            .execute(&mut **tx)
            .await?;
            if self.backend == Backend::Postgres {
                let mut query = NOTIFY.query(self.backend, shape).bind(CHANGES_CHANNEL);
                for (change, _) in chunk {
                    query = query.bind(serde_json::to_string(change).unwrap_or_default());
                }
                query = bind_padding(query, shape - chunk.len(), "t");
                query.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// On PostgreSQL, a listener on the change feed's notification channel (every replica's
    /// changes, as JSON [`Change`]s); `None` on SQLite, where one process owns the database.
    pub async fn pg_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(CHANGES_CHANNEL).await?;
        Ok(Some(l))
    }

    fn publish(&self, change: Change) {
        // No subscriber is fine: the durable feed has it.
        let _ = self.changes.send(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statements_come_in_few_shapes_within_the_batch_limit() {
        let shapes: BTreeSet<usize> = (0..=1000).map(batch_shape).collect();
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256]
        );
        for n in 1..=BATCH_MAX {
            assert!(batch_shape(n) >= n && batch_shape(n) < 2 * n, "{n}");
        }
    }

    #[test]
    fn a_batch_statement_is_written_once_for_each_shape_and_backend() {
        static WRITTEN: AtomicU32 = AtomicU32::new(0);
        static NAMES: ShapedSql = ShapedSql::new(|backend, shape| {
            WRITTEN.fetch_add(1, Ordering::Relaxed);
            in_list(backend, "SELECT name FROM hosts WHERE name", shape, "")
        });
        let text = |backend, shape| NAMES.text(backend, shape);
        assert_eq!(
            text(Backend::Sqlite, 4),
            "SELECT name FROM hosts WHERE name IN (?, ?, ?, ?)"
        );
        assert_eq!(
            text(Backend::Postgres, 2),
            "SELECT name FROM hosts WHERE name IN ($1, $2)"
        );
        assert_eq!(WRITTEN.load(Ordering::Relaxed), 2);
        // Every shape of both backends, twice: each written once, and kept.
        for _ in 0..2 {
            for backend in [Backend::Sqlite, Backend::Postgres] {
                for shape in (0..SHAPES).map(|i| 1 << i) {
                    let t = text(backend, shape);
                    assert!(matches!(t, Cow::Borrowed(_)), "{shape}");
                    assert_eq!(t.matches(['?', '$']).count(), shape);
                    assert_eq!(batch_shape(shape), shape);
                }
            }
        }
        assert_eq!(WRITTEN.load(Ordering::Relaxed), 2 * SHAPES as u32);
        // A count that is no shape is written each time, never kept in another's place.
        for _ in 0..2 {
            let t = text(Backend::Sqlite, 3);
            assert!(matches!(t, Cow::Owned(_)));
            assert_eq!(t, "SELECT name FROM hosts WHERE name IN (?, ?, ?)");
            assert!(matches!(
                text(Backend::Sqlite, 2 * BATCH_MAX),
                Cow::Owned(_)
            ));
        }
        assert_eq!(WRITTEN.load(Ordering::Relaxed), 2 * SHAPES as u32 + 4);
    }

    /// The one-by-one path of a report (a group commit's fallback) writes the quoted PCR
    /// values as the group commit does: rewritten only when they change, their time always.
    /// On SQLite, and on PostgreSQL when `NODETRUST_TEST_PG_URL` is set (its database, a host
    /// of a name of its own).
    #[tokio::test]
    async fn a_report_saved_alone_writes_quoted_pcrs_as_a_group_commit_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!("sqlite://{}/t.db", dir.path().display())];
        urls.extend(std::env::var("NODETRUST_TEST_PG_URL"));
        for url in urls {
            saved_alone(&url).await;
        }
    }

    async fn saved_alone(url: &str) {
        let store = Store::connect(url).await.unwrap();
        let name = format!("h-{}", new_id());
        sqlx::query(
            "INSERT INTO hosts (name, hardware_uuid, connection_url, tls_cert_sha256, ek_public, \
             ak_public, host_info, software_tpm, status, created, updated) \
             VALUES ($1, $1, '', '', $1, '', '{}', 1, 'connected', 0, 0)",
        )
        .bind(&name)
        .execute(&mut *store.pool.get().await.unwrap())
        .await
        .unwrap();
        let values = |hex: &str| format!(r#"{{"pcrs":{{"sha256":{{"0":"{hex}"}}}}}}"#);
        let facts = || async {
            let q = store.host_facts(&name).await.unwrap().unwrap().quoted_pcrs;
            q.map(|q| {
                (
                    q.pcrs["sha256"]["0"].as_str().unwrap().to_string(),
                    q.quoted_at,
                )
            })
        };
        for (created, pcrs, want) in [
            (10, Some("aa"), ("aa", 10)),
            (20, Some("aa"), ("aa", 20)),
            (30, Some("bb"), ("bb", 30)),
            (40, None, ("bb", 30)),
        ] {
            let report = ReportRow {
                id: report_id(created),
                host_name: name.clone(),
                verdict: Trust::Trusted,
                reasons: "[]".into(),
                created,
                expires: created + 1_000,
                hardware_uuid: String::new(),
                signed_report: String::new(),
            };
            let counters = AttestationUpdate {
                reset_count: Some(1),
                restart_count: Some(0),
                quoted_pcrs: pcrs.map(|p| Arc::new(StoredPcrs::new(values(p)))),
            };
            assert!(store
                .save_report_one(&report, None, true, Some(counters))
                .await
                .unwrap());
            let want = Some((want.0.to_string(), want.1));
            assert_eq!(facts().await, want, "{url}: {created}");
        }
    }

    #[test]
    fn placeholders_are_anonymous_on_sqlite_and_numbered_on_postgresql() {
        assert_eq!(placeholders(Backend::Sqlite, 3), "?, ?, ?");
        assert_eq!(placeholders(Backend::Postgres, 3), "$1, $2, $3");
        let columns = ["{}", "CAST({} AS BIGINT)"];
        assert_eq!(
            value_rows(Backend::Postgres, 2, &columns),
            "($1, CAST($2 AS BIGINT)), ($3, CAST($4 AS BIGINT))"
        );
        assert_eq!(
            value_rows(Backend::Sqlite, 2, &columns),
            "(?, CAST(? AS BIGINT)), (?, CAST(? AS BIGINT))"
        );
    }
}
