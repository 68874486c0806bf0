//! The store: every table the server keeps, behind one type, on sqlx's Any driver.
//!
//! SQLite (an embedded file, the default) and PostgreSQL (several replicas) run the same SQL:
//! `$N` placeholders (which SQLite also reads), `TEXT` and `BIGINT` columns only (booleans as
//! 0/1 integers, times as Unix milliseconds, binary as base64 text), so the Any driver reads
//! every column the same way on both. Migrations run at start ([`Store::connect`]).
//!
//! Concurrency: SQLite has one writer connection (every write and transaction) and, on a file
//! in WAL mode, a few read-only connections for reads outside transactions, so reads never
//! queue behind writes. Reports are written by group commit ([`Store::save_report`]): those
//! saved at the same time share one transaction and a few statements.
//!
//! Multi-replica work sharing uses leases on host rows: [`Store::claim_due`] is a conditional
//! update that succeeds for the current owner, a free host, an expired lease, or a holder that
//! is not live (no recent row in `replicas`, [`Store::heartbeat`]). A replica renews its leases
//! at every attestation, hands hosts over to their owner ([`Store::hand_over`]) and releases
//! them all when it stops ([`Store::leave`]); when it dies, the others take its hosts over as
//! soon as its heartbeat is stale.
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

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nodetrust_proto::trust::{ChangeKind, EffectiveTrust, HostStatus, Trust};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, ConnectOptions, Connection as _, Row};
use tokio::sync::{broadcast, oneshot};

/// A store failure (the database, or a row that does not decode).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
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
    /// JWS.
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

/// The store.
#[derive(Clone)]
pub struct Store {
    /// The writer: every write, and every transaction (one connection on SQLite).
    pool: AnyPool,
    /// Reads outside transactions: a few read-only connections on a SQLite file (WAL lets them
    /// read while the writer writes); the same pool as the writer otherwise.
    reader: AnyPool,
    backend: Backend,
    changes: broadcast::Sender<Change>,
    url: String,
    batch: Arc<Batch>,
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
    conn: PoolConnection<Any>,
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
async fn begin(
    conn: &mut PoolConnection<Any>,
    backend: Backend,
) -> Result<sqlx::Transaction<'_, Any>> {
    Ok(match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => conn.begin().await?,
    })
}

impl TxEnd<'_> {
    /// Commits `tx` (or fails as an injected fault says), then marks the connection reusable.
    async fn commit(&mut self, tx: sqlx::Transaction<'_, Any>) -> Result<()> {
        let f = &self.store.faults;
        if f.fail_writes.load(Ordering::SeqCst)
            || f.fail_commits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            drop(tx);
            return Err(StoreError::Injected(
                "the commit failed (database or disk is full)",
            ));
        }
        tx.commit().await?;
        self.ok = true;
        self.store.health.ok();
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

/// What [`Store::register_host_checked`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Stored; whether an earlier registration was replaced.
    Stored(bool),
    /// Refused by the check, with its reason and sentence.
    Refused(&'static str, String),
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

/// Read-only connections beside SQLite's single writer.
const SQLITE_READERS: u32 = 4;

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
    ]
}

const HOST_COLUMNS: &str = "name, hardware_uuid, connection_url, tls_cert_sha256, ek_public, ak_public, host_info, \
     software_tpm, status, status_detail, reset_count, restart_count, verdict, reasons, attested_at, expires_at, created";

/// The hosts sharing a name ($1), a hardware UUID in any case ($2) or an EK ($3) with a
/// registration, with `lock` appended (`FOR UPDATE` inside a PostgreSQL transaction).
fn identity_holders_query(lock: &str) -> String {
    format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1 OR LOWER(hardware_uuid) = LOWER($2) \
         OR ek_public = $3 ORDER BY name{lock}"
    )
}

fn host_from_row(r: &AnyRow) -> Result<HostRow> {
    Ok(HostRow {
        name: r.try_get("name")?,
        hardware_uuid: r.try_get("hardware_uuid")?,
        connection_url: r.try_get("connection_url")?,
        tls_cert_sha256: r.try_get("tls_cert_sha256")?,
        ek_public: r.try_get("ek_public")?,
        ak_public: r.try_get("ak_public")?,
        host_info: r.try_get("host_info")?,
        software_tpm: r.try_get::<i64, _>("software_tpm")? != 0,
        status: decode("hosts", "status", r.try_get("status")?, HostStatus::parse)?,
        status_detail: r.try_get("status_detail")?,
        reset_count: r.try_get("reset_count")?,
        restart_count: r.try_get("restart_count")?,
        verdict: r
            .try_get::<Option<String>, _>("verdict")?
            .map(|v| decode("hosts", "verdict", v, Trust::parse))
            .transpose()?,
        reasons: r.try_get("reasons")?,
        attested_at: r.try_get("attested_at")?,
        expires_at: r.try_get("expires_at")?,
        created: r.try_get("created")?,
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
        signed_report: r.try_get("signed_report")?,
    })
}

fn endorsement_from_row(r: &AnyRow) -> Result<Endorsement> {
    Ok(Endorsement {
        id: r.try_get("id")?,
        hardware_uuid: r.try_get("hardware_uuid")?,
        ek_sha256: r.try_get("ek_sha256")?,
        ek_public: r.try_get("ek_public")?,
        certificate: r.try_get("certificate")?,
        comment: r.try_get("comment")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
        created: r.try_get("created")?,
    })
}

/// A new random identifier (128 bits, hex).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // A failing system RNG leaves zeros; ids then collide and inserts fail loudly.
    let _ = aws_lc_rs::rand::fill(&mut b);
    hex::encode(b)
}

/// What an attestation wrote about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationUpdate {
    /// TPM resetCount seen (when a quote was verified).
    pub reset_count: Option<i64>,
    /// TPM restartCount seen.
    pub restart_count: Option<i64>,
}

/// Makes each report its host's current verdict, in one statement (each host at most once);
/// returns the hosts that exist (and were updated).
async fn update_host_verdicts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[&(&ReportRow, bool, Option<&AttestationUpdate>)],
) -> Result<BTreeSet<String>> {
    // VALUES columns are column1..column9 on both SQLite and PostgreSQL.
    let values = (0..rows.len())
        .map(|i| {
            let b = i * 9;
            format!(
                "(${}, ${}, ${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), \
                 CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let q = format!(
        "UPDATE hosts SET verdict = v.column2, reasons = v.column3, attested_at = v.column4, \
         expires_at = v.column5, updated = v.column4, \
         status = CASE WHEN v.column6 = 1 THEN 'connected' ELSE status END, \
         status_detail = CASE WHEN v.column6 = 1 THEN NULL ELSE status_detail END, \
         reset_count = CASE WHEN v.column7 = 1 THEN v.column8 ELSE reset_count END, \
         restart_count = CASE WHEN v.column7 = 1 THEN v.column9 ELSE restart_count END \
         FROM (VALUES {values}) AS v WHERE hosts.name = v.column1 RETURNING name"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
    for (report, reached, counters) in rows {
        let (reset, restart) = counters.map_or((None, None), |c| (c.reset_count, c.restart_count));
        query = query
            .bind(&report.host_name)
            .bind(report.verdict.as_str())
            .bind(&report.reasons)
            .bind(report.created)
            .bind(report.expires)
            .bind(i64::from(*reached))
            .bind(i64::from(counters.is_some()))
            .bind(reset)
            .bind(restart);
    }
    let names = query.fetch_all(&mut **tx).await?;
    names.iter().map(|r| Ok(r.try_get("name")?)).collect()
}

/// Makes `report` the host's current verdict; false when there is no such host.
async fn update_host_verdict(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    report: &ReportRow,
    reached: bool,
    counters: Option<&AttestationUpdate>,
) -> Result<bool> {
    let has_counters = counters.is_some();
    let (reset, restart) = counters.map_or((None, None), |c| (c.reset_count, c.restart_count));
    let updated = sqlx::query(
        "UPDATE hosts SET verdict = $1, reasons = $2, attested_at = $3, expires_at = $4, updated = $3, \
         status = CASE WHEN $5 = 1 THEN 'connected' ELSE status END, \
         status_detail = CASE WHEN $5 = 1 THEN NULL ELSE status_detail END, \
         reset_count = CASE WHEN $6 = 1 THEN $7 ELSE reset_count END, \
         restart_count = CASE WHEN $6 = 1 THEN $8 ELSE restart_count END WHERE name = $9",
    )
    .bind(report.verdict.as_str())
    .bind(&report.reasons)
    .bind(report.created)
    .bind(report.expires)
    .bind(i64::from(reached))
    .bind(i64::from(has_counters))
    .bind(reset)
    .bind(restart)
    .bind(&report.host_name)
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Most rows one statement of a batch carries (7 parameters a report: far below SQLite's and
/// PostgreSQL's parameter limits).
const BATCH_MAX: usize = 256;

/// A report waiting for the group commit.
struct PendingReport {
    report: ReportRow,
    reached: bool,
    counters: Option<AttestationUpdate>,
    done: oneshot::Sender<Result<()>>,
}

/// The group commit of reports: the queue, and the turn to commit it.
#[derive(Default)]
struct Batch {
    queue: std::sync::Mutex<Vec<PendingReport>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

fn batch_lost() -> StoreError {
    StoreError::Corrupt {
        table: "reports",
        detail: "the batch holding this report was abandoned".into(),
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
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
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
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await?;
        // SQLite allows one writer at a time but, in WAL mode, any number of readers beside
        // it: reads get their own small pool so they never queue behind writes. (An in-memory
        // database is private to its connection: there the writer reads too.)
        let reader = if backend == Backend::Sqlite && !in_memory {
            AnyPoolOptions::new()
                .max_connections(SQLITE_READERS)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA busy_timeout=10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA query_only=1")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(opts)
        } else {
            pool.clone()
        };
        let (changes, _) = broadcast::channel(1024);
        let store = Self {
            pool,
            reader,
            backend,
            changes,
            url,
            batch: Arc::new(Batch::default()),
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
        }
        Ok(store)
    }

    /// A writer connection for one transaction (see [`Writer`]).
    async fn writer(&self) -> Result<Writer<'_>> {
        let conn = self.pool.acquire().await.inspect_err(|e| {
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
        let mut conn = self.pool.acquire().await?;
        let n: i64 = if full { 1 } else { 4_294_967_294 };
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
            .execute(&self.pool)
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
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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

    async fn record_change(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        change: &Change,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO changes (host_name, kind, verdict, created) VALUES ($1, $2, $3, $4)",
        )
        .bind(&change.host_name)
        .bind(change.kind.as_str())
        .bind(change.verdict.map(Trust::as_str))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if self.backend == Backend::Postgres {
            let payload = serde_json::to_string(change).unwrap_or_default();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
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

    // ---- users ----

    /// Creates or replaces a user.
    pub async fn put_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (name, password_hash, role, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every user with when it was created or last changed, by name.
    pub async fn users(&self) -> Result<Vec<(UserRow, i64)>> {
        let rows =
            sqlx::query("SELECT name, password_hash, role, created FROM users ORDER BY name")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserRow {
                        name: r.try_get("name")?,
                        password_hash: r.try_get("password_hash")?,
                        role: r.try_get("role")?,
                    },
                    r.try_get("created")?,
                ))
            })
            .collect()
    }

    /// Creates a user; false when the name is taken.
    pub async fn create_user(&self, u: &UserRow, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO users (name, password_hash, role, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(&u.role)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Replaces a user's password hash; the user, or `None` when there is none.
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>> {
        let r = sqlx::query("UPDATE users SET password_hash = $1, created = $2 WHERE name = $3")
            .bind(password_hash)
            .bind(now)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(UserRow {
                name: r.try_get("name")?,
                password_hash: r.try_get("password_hash")?,
                role: r.try_get("role")?,
            })
        })
        .transpose()
    }

    /// Deletes a user, never the last admin (checked in the same transaction).
    pub async fn delete_user(&self, name: &str) -> Result<UserDeleted> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        if self.backend == Backend::Postgres {
            // Two admins deleting each other at once: one waits for the other.
            sqlx::query("SELECT pg_advisory_xact_lock(7365243)")
                .execute(&mut *tx)
                .await?;
        }
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match role.as_deref() {
            None => UserDeleted::NotFound,
            Some("admin") => {
                let admins: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
                        .fetch_one(&mut *tx)
                        .await?;
                if admins <= 1 {
                    UserDeleted::LastAdmin
                } else {
                    UserDeleted::Deleted
                }
            }
            Some(_) => UserDeleted::Deleted,
        };
        if outcome != UserDeleted::Deleted {
            w.end.rollback(tx).await?;
            return Ok(outcome);
        }
        sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        w.end.commit(tx).await?;
        Ok(UserDeleted::Deleted)
    }

    /// A user by name.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| {
            Ok(UserRow {
                name: r.try_get("name")?,
                password_hash: r.try_get("password_hash")?,
                role: r.try_get("role")?,
            })
        })
        .transpose()
    }

    // ---- endorsements ----

    /// Adds an endorsement.
    pub async fn add_endorsement(&self, e: &Endorsement) -> Result<()> {
        sqlx::query(
            "INSERT INTO endorsements (id, hardware_uuid, ek_sha256, ek_public, certificate, comment, revoked, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&e.id)
        .bind(&e.hardware_uuid)
        .bind(&e.ek_sha256)
        .bind(&e.ek_public)
        .bind(&e.certificate)
        .bind(&e.comment)
        .bind(i64::from(e.revoked))
        .bind(e.created)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Endorsements, optionally only those of one hardware UUID.
    pub async fn endorsements(&self, hardware_uuid: Option<&str>) -> Result<Vec<Endorsement>> {
        let rows = match hardware_uuid {
            Some(u) => {
                sqlx::query("SELECT * FROM endorsements WHERE hardware_uuid = $1 ORDER BY created")
                    .bind(u)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM endorsements ORDER BY created")
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        rows.iter().map(endorsement_from_row).collect()
    }

    /// Active (not revoked) endorsements of an EK.
    pub async fn active_endorsements_for(&self, ek_sha256: &str) -> Result<Vec<Endorsement>> {
        let rows = sqlx::query("SELECT * FROM endorsements WHERE ek_sha256 = $1 AND revoked = 0")
            .bind(ek_sha256)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(endorsement_from_row).collect()
    }

    /// Revokes an endorsement; false when there is none with that id.
    pub async fn revoke_endorsement(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE endorsements SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- registration challenges ----

    /// Stores a pending registration.
    pub async fn put_challenge(&self, c: &ChallengeRow, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM challenges WHERE expires < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO challenges (id, secret_sha256, request, expires) VALUES ($1, $2, $3, $4)",
        )
        .bind(&c.id)
        .bind(&c.secret_sha256)
        .bind(&c.request)
        .bind(c.expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a pending registration for `hardware_uuid`, bounded: a UUID keeps at most
    /// [`MAX_CHALLENGES_PER_UUID`] open (a newer one replaces the oldest), and at most
    /// [`MAX_CHALLENGES`] are open in all (then false: nothing stored).
    pub async fn put_challenge_bounded(
        &self,
        c: &ChallengeRow,
        hardware_uuid: &str,
        now: i64,
    ) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        sqlx::query("DELETE FROM challenges WHERE expires < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let mine: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM challenges WHERE hardware_uuid = $1")
                .bind(hardware_uuid)
                .fetch_one(&mut *tx)
                .await?;
        if mine >= MAX_CHALLENGES_PER_UUID {
            sqlx::query(
                "DELETE FROM challenges WHERE id IN (SELECT id FROM challenges WHERE hardware_uuid = $1 \
                 ORDER BY expires, id LIMIT $2)",
            )
            .bind(hardware_uuid)
            .bind(mine - MAX_CHALLENGES_PER_UUID + 1)
            .execute(&mut *tx)
            .await?;
        }
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM challenges")
            .fetch_one(&mut *tx)
            .await?;
        if all >= MAX_CHALLENGES {
            w.end.rollback(tx).await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO challenges (id, secret_sha256, request, expires, hardware_uuid) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.id)
        .bind(&c.secret_sha256)
        .bind(&c.request)
        .bind(c.expires)
        .bind(hardware_uuid)
        .execute(&mut *tx)
        .await?;
        w.end.commit(tx).await?;
        Ok(true)
    }

    /// Open (not expired) challenges of a hardware UUID, and in all.
    pub async fn open_challenges(&self, hardware_uuid: &str, now: i64) -> Result<(i64, i64)> {
        let mine: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM challenges WHERE hardware_uuid = $1 AND expires >= $2",
        )
        .bind(hardware_uuid)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM challenges WHERE expires >= $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok((mine, all))
    }

    /// Takes (reads and deletes) a pending registration that has not expired: one try each.
    pub async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRow>> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let row =
            sqlx::query("SELECT id, secret_sha256, request, expires FROM challenges WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM challenges WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        w.end.commit(tx).await?;
        let Some(r) = row else { return Ok(None) };
        let c = ChallengeRow {
            id: r.try_get("id")?,
            secret_sha256: r.try_get("secret_sha256")?,
            request: r.try_get("request")?,
            expires: r.try_get("expires")?,
        };
        Ok((c.expires >= now).then_some(c))
    }

    // ---- hosts ----

    /// A host by name.
    pub async fn host(&self, name: &str) -> Result<Option<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// A host by hardware UUID.
    pub async fn host_by_uuid(&self, hardware_uuid: &str) -> Result<Option<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE hardware_uuid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(hardware_uuid)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// Every host, by name, without its keys, facts and agent address (those columns are
    /// empty): what lists and counts need, at a fraction of the cost of [`Store::hosts`].
    pub async fn host_summaries(&self) -> Result<Vec<HostRow>> {
        let rows = sqlx::query(
            "SELECT name, hardware_uuid, '' AS connection_url, '' AS tls_cert_sha256, '' AS ek_public, \
             '' AS ak_public, '' AS host_info, software_tpm, status, status_detail, reset_count, restart_count, \
             verdict, reasons, attested_at, expires_at, created FROM hosts ORDER BY name",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// Every host, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// Registers a host whose AK was just proven, replacing an earlier registration of the same
    /// hardware UUID (a reimaged node). Returns whether one was replaced. The host is due for
    /// attestation at once; its last-seen TPM counters are forgotten (a new AK, a new history).
    pub async fn register_host(&self, h: &HostRow, now: i64) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT name FROM hosts WHERE hardware_uuid = $1")
                .bind(&h.hardware_uuid)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(old_name) = &old {
            sqlx::query("DELETE FROM hosts WHERE hardware_uuid = $1")
                .bind(&h.hardware_uuid)
                .execute(&mut *tx)
                .await?;
            if old_name != &h.name {
                let change = Change {
                    host_name: old_name.clone(),
                    kind: ChangeKind::Deleted,
                    verdict: None,
                };
                self.record_change(&mut tx, &change, now).await?;
            }
        }
        let change = self.insert_registered(&mut tx, h, now).await?;
        w.end.commit(tx).await?;
        self.publish(change);
        Ok(old.is_some())
    }

    /// Inserts a host just registered (due [`REGISTERED_DUE_AFTER_MS`] from now, its counters
    /// forgotten) and records the `registered` change; returns the change to publish after the
    /// commit.
    async fn insert_registered(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        h: &HostRow,
        now: i64,
    ) -> Result<Change> {
        sqlx::query(
            "INSERT INTO hosts (name, hardware_uuid, connection_url, tls_cert_sha256, ek_public, ak_public, host_info, \
             software_tpm, status, created, updated, next_attest, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9, $10, 0)",
        )
        .bind(&h.name)
        .bind(&h.hardware_uuid)
        .bind(&h.connection_url)
        .bind(&h.tls_cert_sha256)
        .bind(&h.ek_public)
        .bind(&h.ak_public)
        .bind(&h.host_info)
        .bind(i64::from(h.software_tpm))
        .bind(now)
        .bind(now.saturating_add(REGISTERED_DUE_AFTER_MS))
        .execute(&mut **tx)
        .await?;
        let change = Change {
            host_name: h.name.clone(),
            kind: ChangeKind::Registered,
            verdict: None,
        };
        self.record_change(tx, &change, now).await?;
        Ok(change)
    }

    /// Hosts that share a name, a hardware UUID (any case) or an EK (`ek_public`, as stored)
    /// with a registration: those it would replace or conflict with.
    pub async fn identity_holders(
        &self,
        name: &str,
        hardware_uuid: &str,
        ek_public: &str,
    ) -> Result<Vec<HostRow>> {
        let q = identity_holders_query("");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(name)
            .bind(hardware_uuid)
            .bind(ek_public)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// Registers a host whose AK was just proven, after `check` accepted the hosts it would
    /// replace or conflict with ([`Store::identity_holders`]), read in the same transaction
    /// (locked on PostgreSQL), so two registrations cannot race past the check. Every host
    /// `check` accepted is replaced.
    pub async fn register_host_checked(
        &self,
        h: &HostRow,
        now: i64,
        check: impl FnOnce(&[HostRow]) -> std::result::Result<(), (&'static str, String)>,
    ) -> Result<Registered> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let q = identity_holders_query(match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(&h.name)
            .bind(&h.hardware_uuid)
            .bind(&h.ek_public)
            .fetch_all(&mut *tx)
            .await?;
        let holders = rows.iter().map(host_from_row).collect::<Result<Vec<_>>>()?;
        if let Err((reason, message)) = check(&holders) {
            w.end.rollback(tx).await?;
            return Ok(Registered::Refused(reason, message));
        }
        for old in &holders {
            sqlx::query("DELETE FROM hosts WHERE name = $1")
                .bind(&old.name)
                .execute(&mut *tx)
                .await?;
            if old.name != h.name {
                let change = Change {
                    host_name: old.name.clone(),
                    kind: ChangeKind::Deleted,
                    verdict: None,
                };
                self.record_change(&mut tx, &change, now).await?;
            }
        }
        let change = self.insert_registered(&mut tx, h, now).await?;
        w.end.commit(tx).await?;
        self.publish(change);
        Ok(Registered::Stored(!holders.is_empty()))
    }

    /// Deletes a host and its reports; false when there is none.
    pub async fn delete_host(&self, name: &str, now: i64) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let r = sqlx::query("DELETE FROM hosts WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            w.end.rollback(tx).await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM reports WHERE host_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let change = Change {
            host_name: name.to_string(),
            kind: ChangeKind::Deleted,
            verdict: None,
        };
        self.record_change(&mut tx, &change, now).await?;
        w.end.commit(tx).await?;
        self.publish(change);
        Ok(true)
    }

    /// Makes a host due for attestation at `at`.
    pub async fn schedule(&self, name: &str, at: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE hosts SET next_attest = $1 WHERE name = $2")
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Hosts due at `now` that this replica may take (free, its own, or with an expired lease).
    pub async fn due_hosts(&self, replica: &str, now: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM hosts WHERE next_attest <= $1 \
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $1) ORDER BY next_attest, name LIMIT $3",
        )
        .bind(now)
        .bind(replica)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Claims (or renews) the lease on a host until `until`, and moves its next attestation to
    /// `next`; false when another replica holds a live lease.
    pub async fn claim(
        &self,
        name: &str,
        replica: &str,
        now: i64,
        until: i64,
        next: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE hosts SET lease_owner = $1, lease_until = $2, next_attest = $3 WHERE name = $4 \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $5)",
        )
        .bind(replica)
        .bind(until)
        .bind(next)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Claims up to `limit` due hosts in one statement: those free, this replica's, with an
    /// expired lease, or held by a replica that is not live (no heartbeat row younger than
    /// `dead_after` milliseconds by the database's clock: it died, or stopped); their lease
    /// runs until `until`. Each claimed host's next attestation is its due
    /// time plus `period` (the schedule keeps its phase, so a late start does not push every
    /// later one back), or now plus `period` when that is already past (a host made due at
    /// once, or taken over late).
    /// A host whose next attestation is more than twice `period` ahead was scheduled by a
    /// clock that has since jumped back: it is due now, not when the clock catches up.
    /// The due and lease conditions are checked again on the locked row, so two replicas
    /// claiming at once never both take a host for the same due time.
    /// Returns the names claimed.
    pub async fn claim_due(
        &self,
        replica: &str,
        now: i64,
        until: i64,
        period: i64,
        dead_after: i64,
        limit: i64,
    ) -> Result<Vec<String>> {
        let db_now = self.db_now_ms();
        let q = format!(
            "UPDATE hosts SET lease_owner = $1, lease_until = $2, \
               next_attest = CASE WHEN next_attest <= $4 AND next_attest + $3 > $4 THEN next_attest + $3 ELSE $4 + $3 END \
             WHERE name IN (SELECT name FROM hosts WHERE (next_attest <= $4 OR next_attest > $4 + 2 * $3) \
               AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4 \
                    OR lease_owner NOT IN (SELECT id FROM replicas WHERE heartbeat >= {db_now} - $5)) \
               ORDER BY next_attest, name LIMIT $6) \
             AND (next_attest <= $4 OR next_attest > $4 + 2 * $3) \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4 \
                  OR lease_owner NOT IN (SELECT id FROM replicas WHERE heartbeat >= {db_now} - $5)) RETURNING name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(replica)
            .bind(until)
            .bind(period)
            .bind(now)
            .bind(dead_after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// The database's clock in Unix milliseconds, as SQL: heartbeats are written and read by
    /// the one clock every replica shares, so replicas' own clocks (skewed, or stepped) never
    /// make a live replica look dead.
    fn db_now_ms(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Records that `replica` is alive now, by the database's clock (its first call records
    /// when it started).
    pub async fn heartbeat(&self, replica: &str) -> Result<()> {
        let db_now = self.db_now_ms();
        let q = format!(
            "INSERT INTO replicas (id, heartbeat, started) VALUES ($1, {db_now}, {db_now}) \
             ON CONFLICT (id) DO UPDATE SET heartbeat = {db_now}"
        );
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(replica)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The replicas whose last heartbeat is at most `dead_after` milliseconds old (by the
    /// database's clock), by id.
    pub async fn live_replicas(&self, dead_after: i64) -> Result<Vec<String>> {
        let q = format!(
            "SELECT id FROM replicas WHERE heartbeat >= {} - $1 ORDER BY id",
            self.db_now_ms()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(dead_after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Forgets replicas silent for more than `age` milliseconds that hold no host.
    pub async fn forget_replicas(&self, age: i64) -> Result<u64> {
        let q = format!(
            "DELETE FROM replicas WHERE heartbeat < {} - $1 \
             AND NOT EXISTS (SELECT 1 FROM hosts WHERE hosts.lease_owner = replicas.id)",
            self.db_now_ms()
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(age)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Hands a host `from` this replica over `to` another, keeping its next attestation; the
    /// lease runs until `until`. False when `from` does not hold it (any more).
    pub async fn hand_over(&self, name: &str, from: &str, to: &str, until: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE hosts SET lease_owner = $1, lease_until = $2 WHERE name = $3 AND lease_owner = $4",
        )
        .bind(to)
        .bind(until)
        .bind(name)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// A graceful stop: releases every lease of `replica` (each host keeps its next
    /// attestation, so another replica takes it when due, without waiting for the lease) and
    /// deletes its heartbeat row. Returns how many hosts were released.
    pub async fn leave(&self, replica: &str) -> Result<u64> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let r = sqlx::query(
            "UPDATE hosts SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
        )
        .bind(replica)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        w.end.commit(tx).await?;
        Ok(r.rows_affected())
    }

    /// How many hosts each replica holds a lease on (`None`: no replica).
    pub async fn lease_counts(&self) -> Result<Vec<(Option<String>, i64)>> {
        let rows = sqlx::query(
            "SELECT lease_owner, COUNT(*) AS n FROM hosts GROUP BY lease_owner ORDER BY lease_owner",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lease_owner")?, r.try_get("n")?)))
            .collect()
    }

    /// The replica holding a host's lease and until when.
    pub async fn lease(&self, name: &str) -> Result<Option<(Option<String>, i64)>> {
        let row = sqlx::query("SELECT lease_owner, lease_until FROM hosts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| Ok((r.try_get("lease_owner")?, r.try_get("lease_until")?)))
            .transpose()
    }

    /// Records that a host's agent could not be reached (its verdict is left as it is).
    pub async fn mark_unreachable(&self, name: &str, detail: &str, now: i64) -> Result<()> {
        let r = sqlx::query("UPDATE hosts SET status = 'unreachable', status_detail = $1, updated = $2 WHERE name = $3 AND status <> 'unreachable'")
            .bind(detail)
            .bind(now)
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE hosts SET status_detail = $1 WHERE name = $2")
            .bind(detail)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() > 0 {
            let mut w = self.writer().await?;
            let mut tx = begin(&mut w.conn, self.backend).await?;
            let change = Change {
                host_name: name.to_string(),
                kind: ChangeKind::Status,
                verdict: None,
            };
            self.record_change(&mut tx, &change, now).await?;
            w.end.commit(tx).await?;
            self.publish(change);
        }
        Ok(())
    }

    /// Stores a report and makes it the host's current verdict; `reached` says whether the
    /// agent answered (status `connected`) and `counters` the TPM counters its quote showed.
    ///
    /// Group commit: reports saved at the same time share one transaction. The caller queues
    /// its report; whoever holds the write turn commits everything queued so far (on a task of
    /// its own, so a caller that gives up strands no one) and every caller gets its own
    /// result. A batch that fails is retried report by report, so one bad report fails alone.
    pub async fn save_report(
        &self,
        report: &ReportRow,
        reached: bool,
        counters: Option<AttestationUpdate>,
    ) -> Result<()> {
        let (done, mut result) = oneshot::channel();
        let pending = PendingReport {
            report: report.clone(),
            reached,
            counters,
            done,
        };
        let refused = match self.batch.queue.lock() {
            Ok(mut q) => {
                q.push(pending);
                None
            }
            Err(_) => Some(pending),
        };
        if let Some(p) = refused {
            return self.save_report_one(&p.report, p.reached, p.counters).await;
        }
        loop {
            tokio::select! {
                biased;
                r = &mut result => return r.unwrap_or_else(|_| Err(batch_lost())),
                turn = self.batch.turn.clone().lock_owned() => {
                    let items: Vec<PendingReport> = self
                        .batch
                        .queue
                        .lock()
                        .map(|mut q| std::mem::take(&mut *q))
                        .unwrap_or_default();
                    if items.is_empty() {
                        // Ours was committed by the turn before this one.
                        drop(turn);
                        return result.await.unwrap_or_else(|_| Err(batch_lost()));
                    }
                    let store = self.clone();
                    let _ = tokio::spawn(async move {
                        store.commit_batch(items).await;
                        drop(turn);
                    })
                    .await;
                }
            }
        }
    }

    /// Commits queued reports in one transaction, or one by one when that fails.
    async fn commit_batch(&self, items: Vec<PendingReport>) {
        let rows: Vec<(&ReportRow, bool, Option<&AttestationUpdate>)> = items
            .iter()
            .map(|p| (&p.report, p.reached, p.counters.as_ref()))
            .collect();
        match self.save_reports_tx(&rows).await {
            Ok(changes) => {
                for c in changes {
                    self.publish(c);
                }
                for p in items {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, reports = items.len(), "batched report commit failed; one by one");
                for p in items {
                    let r = self.save_report_one(&p.report, p.reached, p.counters).await;
                    let _ = p.done.send(r);
                }
            }
        }
    }

    /// Reports (in order) in one transaction: the hosts' current verdicts updated, the reports
    /// of hosts that still exist inserted, a change recorded for each verdict that changed.
    /// Returns the changes to publish after the commit.
    async fn save_reports_tx(
        &self,
        rows: &[(&ReportRow, bool, Option<&AttestationUpdate>)],
    ) -> Result<Vec<Change>> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let mut previous: HashMap<String, Option<String>> = HashMap::new();
        let names: BTreeSet<&str> = rows.iter().map(|(r, _, _)| r.host_name.as_str()).collect();
        for chunk in names.iter().collect::<Vec<_>>().chunks(BATCH_MAX) {
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let q = format!("SELECT name, verdict FROM hosts WHERE name IN ({marks})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for n in chunk {
                query = query.bind(**n);
            }
            for r in query.fetch_all(&mut *tx).await? {
                previous.insert(r.try_get("name")?, r.try_get("verdict")?);
            }
        }
        // The hosts' verdicts, one statement per round; a host attested twice in one batch
        // (a scheduled and an on-demand attestation) gets its second report in a later round.
        let mut kept: Vec<&ReportRow> = Vec::with_capacity(rows.len());
        let mut changes = Vec::new();
        let mut rest: Vec<&(&ReportRow, bool, Option<&AttestationUpdate>)> = rows.iter().collect();
        while !rest.is_empty() {
            let mut seen = BTreeSet::new();
            let (round, later): (Vec<_>, Vec<_>) = rest
                .into_iter()
                .partition(|(r, _, _)| seen.insert(r.host_name.as_str()));
            rest = later;
            for chunk in round.chunks(BATCH_MAX) {
                let updated = update_host_verdicts(&mut tx, chunk).await?;
                for (report, _, _) in chunk {
                    if !updated.contains(&report.host_name) {
                        // The host was deleted while it was being attested: keep no orphan
                        // report.
                        continue;
                    }
                    kept.push(report);
                    let before = previous.insert(
                        report.host_name.clone(),
                        Some(report.verdict.as_str().into()),
                    );
                    if before.flatten().as_deref() != Some(report.verdict.as_str()) {
                        let change = Change {
                            host_name: report.host_name.clone(),
                            kind: ChangeKind::Verdict,
                            verdict: Some(report.verdict),
                        };
                        self.record_change(&mut tx, &change, report.created).await?;
                        changes.push(change);
                    }
                }
            }
        }
        for chunk in kept.chunks(BATCH_MAX) {
            let values = (0..chunk.len())
                .map(|i| {
                    let b = i * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let q = format!(
                "INSERT INTO reports (id, host_name, verdict, reasons, created, expires, signed_report) VALUES {values}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
            for r in chunk {
                query = query
                    .bind(&r.id)
                    .bind(&r.host_name)
                    .bind(r.verdict.as_str())
                    .bind(&r.reasons)
                    .bind(r.created)
                    .bind(r.expires)
                    .bind(&r.signed_report);
            }
            query.execute(&mut *tx).await?;
        }
        w.end.commit(tx).await?;
        Ok(changes)
    }

    /// One report in its own transaction.
    async fn save_report_one(
        &self,
        report: &ReportRow,
        reached: bool,
        counters: Option<AttestationUpdate>,
    ) -> Result<()> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        sqlx::query(
            "INSERT INTO reports (id, host_name, verdict, reasons, created, expires, signed_report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&report.id)
        .bind(&report.host_name)
        .bind(report.verdict.as_str())
        .bind(&report.reasons)
        .bind(report.created)
        .bind(report.expires)
        .bind(&report.signed_report)
        .execute(&mut *tx)
        .await?;
        let previous: Option<Option<String>> =
            sqlx::query_scalar("SELECT verdict FROM hosts WHERE name = $1")
                .bind(&report.host_name)
                .fetch_optional(&mut *tx)
                .await?;
        let updated = update_host_verdict(&mut tx, report, reached, counters.as_ref()).await?;
        if !updated {
            // The host was deleted while it was being attested: keep no orphan report.
            w.end.rollback(tx).await?;
            return Ok(());
        }
        let changed = previous.flatten().as_deref() != Some(report.verdict.as_str());
        let change = Change {
            host_name: report.host_name.clone(),
            kind: ChangeKind::Verdict,
            verdict: Some(report.verdict),
        };
        if changed {
            self.record_change(&mut tx, &change, report.created).await?;
        }
        w.end.commit(tx).await?;
        if changed {
            self.publish(change);
        }
        Ok(())
    }

    /// Reports of a host (or of all hosts), newest first.
    pub async fn reports(&self, host_name: Option<&str>, limit: i64) -> Result<Vec<ReportRow>> {
        let rows = match host_name {
            Some(h) => {
                sqlx::query("SELECT * FROM reports WHERE host_name = $1 ORDER BY created DESC, id DESC LIMIT $2")
                    .bind(h)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM reports ORDER BY created DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        rows.iter().map(report_from_row).collect()
    }

    // ---- retention ----

    /// One bounded delete of old reports: at most `limit` reports created in `[from, before)`,
    /// oldest first, sparing the latest report of each registered host (the one
    /// `GET /reports?latest=true` serves). Returns how many were deleted and the newest
    /// `created` among them (the `from` of the next batch: older reports left are spared ones).
    ///
    /// Safe to run from several replicas at once: on PostgreSQL each picks rows no other
    /// replica has locked (`SKIP LOCKED`); a row already deleted is simply not deleted again.
    pub async fn prune_reports_batch(
        &self,
        from: i64,
        before: i64,
        limit: i64,
    ) -> Result<(u64, Option<i64>)> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF r SKIP LOCKED",
        };
        // A report is spared when it is its host's newest by (created, id), the order the API
        // reads, and the host is registered.
        let q = format!(
            "DELETE FROM reports WHERE id IN (SELECT r.id FROM reports r \
             WHERE r.created >= $1 AND r.created < $2 \
             AND (EXISTS (SELECT 1 FROM reports n WHERE n.host_name = r.host_name \
                   AND n.created >= r.created AND (n.created > r.created OR n.id > r.id)) \
                  OR NOT EXISTS (SELECT 1 FROM hosts h WHERE h.name = r.host_name)) \
             ORDER BY r.created LIMIT $3{lock}) RETURNING created"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(from)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut newest = None;
        for r in &rows {
            let created: i64 = r.try_get("created")?;
            newest = newest.max(Some(created));
        }
        Ok((u64::try_from(rows.len()).unwrap_or(u64::MAX), newest))
    }

    /// Deletes reports created before `before` (sparing each registered host's latest) in
    /// batches of at most `batch`, until a batch deletes fewer. Returns how many were deleted.
    pub async fn prune_reports(&self, before: i64, batch: i64) -> Result<u64> {
        let batch = batch.max(1);
        let (mut total, mut from) = (0u64, i64::MIN);
        loop {
            let (n, newest) = self.prune_reports_batch(from, before, batch).await?;
            total = total.saturating_add(n);
            if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                return Ok(total);
            }
            from = newest.unwrap_or(from);
            // Lets queued writes (the group commit) in between batches.
            tokio::task::yield_now().await;
        }
    }

    /// One bounded delete of the change feed: at most `limit` changes created before `before`,
    /// oldest first. Returns how many were deleted. Safe from several replicas at once, as
    /// [`Store::prune_reports_batch`].
    pub async fn prune_changes_batch(&self, before: i64, limit: i64) -> Result<u64> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let q = format!(
            "DELETE FROM changes WHERE seq IN (SELECT seq FROM changes WHERE created < $1 \
             ORDER BY created LIMIT $2{lock})"
        );
        let deleted: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(q + " RETURNING seq"))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        if let Some(newest) = deleted.iter().max() {
            // Followers behind this point have lost changes: they must resync.
            sqlx::query(
                "INSERT INTO server_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE \
                 SET value = excluded.value \
                 WHERE CAST(server_keys.value AS BIGINT) < CAST(excluded.value AS BIGINT)",
            )
            .bind(PRUNED_THROUGH)
            .bind(newest.to_string())
            .execute(&self.pool)
            .await?;
        }
        Ok(u64::try_from(deleted.len()).unwrap_or(u64::MAX))
    }

    /// The newest sequence number retention has deleted from the change feed (0 when none):
    /// a follower whose position is older has missed changes.
    pub async fn changes_pruned_through(&self) -> Result<i64> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
            .bind(PRUNED_THROUGH)
            .fetch_optional(&self.reader)
            .await?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The newest sequence number of the change feed (0 when empty).
    pub async fn changes_head(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes")
            .fetch_one(&self.reader)
            .await?;
        Ok(v.unwrap_or(0).max(self.changes_pruned_through().await?))
    }

    /// Typed changes after sequence number `after`, oldest first.
    pub async fn change_events_since(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<nodetrust_proto::trust::ChangeEvent>> {
        let rows = sqlx::query(
            "SELECT seq, host_name, kind, verdict, created FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(nodetrust_proto::trust::ChangeEvent {
                    seq: r.try_get("seq")?,
                    host: r.try_get("host_name")?,
                    kind: decode("changes", "kind", r.try_get("kind")?, ChangeKind::parse)?,
                    trust: r
                        .try_get::<Option<String>, _>("verdict")?
                        .map(|v| decode("changes", "verdict", v, Trust::parse))
                        .transpose()?,
                    at: r.try_get("created")?,
                })
            })
            .collect()
    }

    /// Deletes changes created before `before` in batches of at most `batch`, until a batch
    /// deletes fewer. Returns how many were deleted.
    pub async fn prune_changes(&self, before: i64, batch: i64) -> Result<u64> {
        let batch = batch.max(1);
        let mut total = 0u64;
        loop {
            let n = self.prune_changes_batch(before, batch).await?;
            total = total.saturating_add(n);
            if i64::try_from(n).unwrap_or(i64::MAX) < batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    // ---- flavors ----

    /// Stores a flavor.
    pub async fn put_flavor(&self, f: &FlavorRow) -> Result<()> {
        sqlx::query("INSERT INTO flavors (id, body, created) VALUES ($1, $2, $3)")
            .bind(&f.id)
            .bind(&f.body)
            .bind(f.created)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every flavor, oldest first.
    pub async fn flavors(&self) -> Result<Vec<FlavorRow>> {
        let rows = sqlx::query("SELECT id, body, created FROM flavors ORDER BY created, id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FlavorRow {
                    id: r.try_get("id")?,
                    body: r.try_get("body")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    /// Deletes a flavor; false when there is none.
    pub async fn delete_flavor(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM flavors WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- server keys ----

    /// The value stored under `name`, inserting `make()` first when there is none (replicas
    /// racing here all end up with the first value written).
    pub async fn key_or_insert(&self, name: &str, make: impl FnOnce() -> String) -> Result<String> {
        if let Some(v) =
            sqlx::query_scalar::<_, String>("SELECT value FROM server_keys WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
        {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO server_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .execute(&self.pool)
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }
}
