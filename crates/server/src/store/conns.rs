//! The store's connections: sqlx's pool on PostgreSQL; on SQLite, connections the store holds
//! itself and lends out ([`Held`]).
//!
//! sqlx's pool, when a connection comes back to it, pings the connection before it lends it
//! again (`PoolConnection::return_to_pool`, not configurable). On SQLite a connection is a
//! thread of its own that runs the statements: the ping is a round trip to that thread, two
//! context switches, after every statement outside a transaction and every transaction. A
//! profile of a registration storm found it in a tenth of the async workers' time
//! (docs/PERFORMANCE.md, "Scale, twenty-third round"). Over a network the ping finds broken
//! connections; a SQLite connection is a file handle that cannot go stale, and what the ping
//! also flushes, the rollback of a transaction dropped unfinished, is already queued in the
//! connection's command channel ahead of its next statement. So on SQLite the store lends its
//! connections without it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::AnyConnection;
use sqlx::{Any, AnyPool, ConnectOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Statements run on each connection when it is opened (before it is lent out).
pub(crate) type Setup =
    Arc<dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, sqlx::Result<()>> + Send + Sync>;

/// How long a caller waits for a connection before it gets `PoolTimedOut`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where connections come from.
#[derive(Clone)]
pub(crate) enum Conns {
    /// sqlx's pool (PostgreSQL).
    Pool(AnyPool),
    /// Connections held by the store (SQLite).
    Held(Arc<Held>),
}

impl Conns {
    /// sqlx's pool of at most `max` connections, each set up by `setup` when opened; `check`:
    /// a round trip checks each connection before it is lent out. `lazy`: opened when first
    /// needed, else one now.
    pub(crate) async fn pool(
        opts: &AnyConnectOptions,
        max: u32,
        check: bool,
        setup: Setup,
        lazy: bool,
    ) -> sqlx::Result<Self> {
        let options = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(check)
            .after_connect(move |conn, _| setup(conn));
        Ok(Self::Pool(if lazy {
            options.connect_lazy_with(opts.clone())
        } else {
            options.connect_with(opts.clone()).await?
        }))
    }

    /// At most `max` connections held by the store, opened when first needed and each set up
    /// by `setup`.
    pub(crate) fn held(opts: &AnyConnectOptions, max: u32, setup: Setup) -> Self {
        Self::Held(Arc::new(Held {
            opts: opts.clone(),
            setup,
            idle: std::sync::Mutex::default(),
            permits: Arc::new(Semaphore::new(usize::try_from(max).unwrap_or(1))),
        }))
    }

    /// A connection, for one statement or one transaction; it goes back when dropped.
    pub(crate) async fn get(&self) -> sqlx::Result<Conn> {
        match self {
            Self::Pool(pool) => Ok(Conn::Pooled(pool.acquire().await?)),
            Self::Held(held) => held.clone().lend().await.map(Conn::Held),
        }
    }
}

/// Connections held by the store: at most as many lent out at once as it has permits; an
/// idle one is lent again as it is, a new one opened when none is idle.
pub(crate) struct Held {
    opts: AnyConnectOptions,
    setup: Setup,
    idle: std::sync::Mutex<Vec<AnyConnection>>,
    permits: Arc<Semaphore>,
}

impl Held {
    async fn lend(self: Arc<Self>) -> sqlx::Result<HeldConn> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let mut conn = self.opts.connect().await?;
                (self.setup)(&mut conn).await?;
                conn
            }
        };
        Ok(HeldConn {
            conn: Some(conn),
            home: self,
            close: false,
            _permit: permit,
        })
    }

    /// Connections idle now (a test's look).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }
}

/// A connection lent by [`Held`]: back among the idle ones when dropped, then its permit
/// freed.
pub(crate) struct HeldConn {
    conn: Option<AnyConnection>,
    home: Arc<Held>,
    /// Closed when dropped instead ([`Conn::close_on_drop`]).
    close: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for HeldConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.close {
            // Its thread ends when its command channel closes; a new one is opened when
            // next needed.
            drop(conn);
        } else if let Ok(mut idle) = self.home.idle.lock() {
            idle.push(conn);
        }
    }
}

/// A lent connection, from either source.
pub(crate) enum Conn {
    Pooled(PoolConnection<Any>),
    Held(HeldConn),
}

impl Conn {
    /// Closes the connection when it is dropped instead of lending it again (after a failed
    /// transaction).
    pub(crate) fn close_on_drop(&mut self) {
        match self {
            Self::Pooled(c) => c.close_on_drop(),
            Self::Held(c) => c.close = true,
        }
    }
}

impl Deref for Conn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Pooled(c) => c,
            // Taken only by the drop.
            Self::Held(c) => c.conn.as_ref().unwrap_or_else(|| unreachable!()),
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Held(c) => c.conn.as_mut().unwrap_or_else(|| unreachable!()),
        }
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
        let conns = Conns::held(&sqlite(&dir), 2, no_setup());
        let Conns::Held(held) = &conns else {
            panic!("held")
        };
        let mut a = get(&conns).await;
        let mut b = get(&conns).await;
        mark(&mut a, 1).await;
        mark(&mut b, 2).await;
        // Both lent: a third waits until one comes back.
        let third = tokio::time::timeout(Duration::from_millis(200), conns.get()).await;
        assert!(third.is_err(), "a third connection was lent beside two");
        drop(a);
        assert_eq!(held.idle(), 1);
        let mut again = tokio::time::timeout(Duration::from_secs(5), conns.get())
            .await
            .unwrap_or_else(|_| panic!("the connection given back was not lent"))
            .unwrap();
        // The same connection, as it was: no new one opened.
        assert_eq!(marks(&mut again).await, [1]);
        assert_eq!(held.idle(), 0);
        drop(again);
        drop(b);
        assert_eq!(held.idle(), 2);
    }

    /// Begins a write transaction on `c` and inserts a row in `t` in it.
    async fn insert_in_tx(c: &mut Conn) -> sqlx::Transaction<'_, Any> {
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
        let conns = Conns::held(&sqlite(&dir), 1, no_setup());
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
        let conns = Conns::held(&sqlite(&dir), 1, setup);
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
