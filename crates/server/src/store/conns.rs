//! The store's connections: held by the store and lent out, one statement or one transaction
//! at a time ([`Conns`]), on SQLite and on PostgreSQL.
//!
//! sqlx's pool checks a connection by a round trip (a ping) when it comes back, and, as it was
//! set up for PostgreSQL, again before it is lent: two round trips beside every statement
//! outside a transaction and every transaction. On SQLite a connection is a thread of its own
//! that runs the statements, and each ping is two context switches; a profile of a
//! registration storm found them in a tenth of the async workers' time (docs/PERFORMANCE.md,
//! "Scale, twenty-third round"). On PostgreSQL each is also a wake-up of the database's
//! process: a registration storm spent seven context switches a host and left a quarter of
//! the cores idle ("Scale, twenty-fifth round"). What the ping on return also flushes, the
//! rollback of a transaction dropped unfinished and the answers of a statement dropped
//! midway, each connection already does first at its next statement.
//!
//! What the ping is for, a connection that broke (a database restarted, a network cut), is
//! found here without a round trip per use: a PostgreSQL connection is pinged before it is
//! lent only when a database error of the kind a broken connection gives was seen anywhere
//! in the process since it was last lent ([`note_error`]), or when it sat idle for
//! [`PING_IDLE_AFTER`]; one that fails the ping is closed and another opened. A SQLite
//! connection is a file handle that cannot go stale, and is never pinged.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Statements run on each connection when it is opened (before it is lent out).
pub(crate) type Setup =
    Arc<dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send + Sync>;

/// How long a caller waits for a connection (a free one, and opening or checking it) before
/// it gets `PoolTimedOut`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A network connection idle this long is pinged before it is lent again: a firewall or the
/// database may have dropped it meanwhile.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// Errors seen by the process that may mean a broken connection ([`note_error`]).
static CONNECTION_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts `e` when it may mean a broken connection: any error but a statement's own (a
/// constraint, a decode, no row), and a database error of the classes a connection dropped
/// by the server gives (08: connection exception, 57: operator intervention, as at a
/// shutdown). Network connections lent after it are pinged first ([`Conns`]).
pub(crate) fn note_error(e: &sqlx::Error) {
    let statement_only = match e {
        sqlx::Error::Database(d) => !d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    };
    if !statement_only {
        CONNECTION_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a connection is looked after between uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upkeep {
    /// Never pinged (SQLite).
    Local,
    /// Pinged after a possible breakage or a long idle time (PostgreSQL).
    Network,
}

/// At most `max` connections lent out at once; an idle one lent again (checked first when
/// its [`Upkeep`] says so), a new one opened when none is idle. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Conns(Arc<Held>);

struct Held {
    opts: AnyConnectOptions,
    setup: Setup,
    upkeep: Upkeep,
    idle: std::sync::Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
}

/// An idle connection, and what its next lending checks.
struct Idle {
    conn: AnyConnection,
    /// [`CONNECTION_ERRORS`] when it was last lent.
    errors: u64,
    returned: Instant,
}

impl Conns {
    /// At most `max` connections, opened when first needed and each set up by `setup`.
    pub(crate) fn new(opts: &AnyConnectOptions, max: u32, upkeep: Upkeep, setup: Setup) -> Self {
        Self(Arc::new(Held {
            opts: opts.clone(),
            setup,
            upkeep,
            idle: std::sync::Mutex::default(),
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(1))),
        }))
    }

    /// A connection, for one statement or one transaction; it goes back when dropped.
    pub(crate) async fn get(&self) -> sqlx::Result<Conn> {
        let held = self.0.clone();
        tokio::time::timeout(ACQUIRE_TIMEOUT, held.lend())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Connections idle now (a test's look).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.0.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

impl Held {
    async fn lend(self: Arc<Self>) -> sqlx::Result<Conn> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let errors = CONNECTION_ERRORS.load(Ordering::Relaxed);
        loop {
            let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut idle) = idle else { break };
            if self.upkeep == Upkeep::Network
                && (idle.errors != errors || idle.returned.elapsed() >= PING_IDLE_AFTER)
                && idle.conn.ping().await.is_err()
            {
                // Broken: dropped (its socket closed), and the next one tried.
                continue;
            }
            return Ok(self.lent(idle.conn, errors, permit));
        }
        let mut conn = self.opts.connect().await.inspect_err(note_error)?;
        (self.setup)(&mut conn).await.inspect_err(note_error)?;
        Ok(self.lent(conn, errors, permit))
    }

    fn lent(
        self: Arc<Self>,
        conn: AnyConnection,
        errors: u64,
        permit: OwnedSemaphorePermit,
    ) -> Conn {
        Conn {
            conn: Some(conn),
            errors,
            home: self,
            close: false,
            _permit: permit,
        }
    }
}

/// A lent connection: back among the idle ones when dropped, then its permit freed.
pub(crate) struct Conn {
    conn: Option<AnyConnection>,
    /// [`CONNECTION_ERRORS`] when it was lent.
    errors: u64,
    home: Arc<Held>,
    /// Closed when dropped instead ([`Conn::close_on_drop`]).
    close: bool,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Closes the connection when it is dropped instead of lending it again (after a failed
    /// transaction).
    pub(crate) fn close_on_drop(&mut self) {
        self.close = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.close {
            // Closed by dropping it (a SQLite connection's thread ends when its command
            // channel closes); a new one is opened when next needed.
            drop(conn);
        } else if let Ok(mut idle) = self.home.idle.lock() {
            idle.push(Idle {
                conn,
                errors: self.errors,
                returned: Instant::now(),
            });
        }
    }
}

impl Deref for Conn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        // Taken only by the drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use sqlx::Connection as _;

    use super::*;

    fn sqlite(dir: &tempfile::TempDir) -> AnyConnectOptions {
        sqlx::any::install_default_drivers();
        let file = dir.path().join("conns.db");
        AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", file.display())).unwrap()
    }

    fn no_setup() -> Setup {
        Arc::new(|_| Box::pin(async { Ok(()) }))
    }

    /// What a connection was given by a statement of its own (a temporary table lives and
    /// dies with its connection): which connection this is.
    async fn mark(conn: &mut AnyConnection, n: i64) {
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS mark (n BIGINT)")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO mark (n) VALUES ($1)")
            .bind(n)
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    async fn marks(conn: &mut AnyConnection) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM mark ORDER BY n")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default()
    }

    async fn get(conns: &Conns) -> Conn {
        conns.get().await.unwrap()
    }

    #[tokio::test]
    async fn held_connections_are_lent_again_as_they_are_and_at_most_max_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let conns = Conns::new(&sqlite(&dir), 2, Upkeep::Local, no_setup());
        let mut a = get(&conns).await;
        let mut b = get(&conns).await;
        mark(&mut a, 1).await;
        mark(&mut b, 2).await;
        // Both lent: a third waits until one comes back.
        let third = tokio::time::timeout(Duration::from_millis(200), conns.get()).await;
        assert!(third.is_err(), "a third connection was lent beside two");
        drop(a);
        assert_eq!(conns.idle(), 1);
        let mut again = tokio::time::timeout(Duration::from_secs(5), conns.get())
            .await
            .unwrap_or_else(|_| panic!("the connection given back was not lent"))
            .unwrap();
        // The same connection, as it was: no new one opened.
        assert_eq!(marks(&mut again).await, [1]);
        assert_eq!(conns.idle(), 0);
        drop(again);
        drop(b);
        assert_eq!(conns.idle(), 2);
    }

    /// Begins a write transaction on `c` and inserts a row in `t` in it.
    async fn insert_in_tx(c: &mut Conn) -> sqlx::Transaction<'_, sqlx::Any> {
        let mut tx = c.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    async fn rows_in_t(c: &mut Conn) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut **c)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_transaction_dropped_unfinished_is_rolled_back_before_the_next_statement() {
        let dir = tempfile::tempdir().unwrap();
        let conns = Conns::new(&sqlite(&dir), 1, Upkeep::Local, no_setup());
        sqlx::query("CREATE TABLE t (n BIGINT)")
            .execute(&mut *get(&conns).await)
            .await
            .unwrap();
        for round in 0..3 {
            let mut c = get(&conns).await;
            // Dropped as a cancelled request drops it: neither committed nor rolled back.
            drop(insert_in_tx(&mut c).await);
            drop(c);
            // The same connection, lent at once without a round trip: its rollback ran
            // first, so it begins anew (a transaction within one would fail) and nothing
            // was stored.
            let mut c = get(&conns).await;
            assert_eq!(rows_in_t(&mut c).await, 0, "round {round}");
        }
        // And a committed one is kept.
        let mut c = get(&conns).await;
        insert_in_tx(&mut c).await.commit().await.unwrap();
        assert_eq!(rows_in_t(&mut c).await, 1);
    }

    #[tokio::test]
    async fn a_connection_closed_on_drop_is_replaced_by_a_new_one_set_up_anew() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened.clone();
        let setup: Setup = Arc::new(move |_| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
        let conns = Conns::new(&sqlite(&dir), 1, Upkeep::Local, setup);
        let mut c = get(&conns).await;
        mark(&mut c, 7).await;
        drop(c);
        let mut c = get(&conns).await;
        assert_eq!(marks(&mut c).await, [7]);
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 1);
        c.close_on_drop();
        drop(c);
        let mut c = get(&conns).await;
        assert!(
            marks(&mut c).await.is_empty(),
            "the closed connection was lent again"
        );
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
