//! The group commit of reports on a SQLite file, on a connection and a thread of its own (and
//! the read of the hosts the scheduler claims, [`Store::claim_scheduled`]).
//!
//! Through sqlx every statement is a round trip to the thread of its connection: a group
//! commit's `BEGIN`, verdict update, report insert, change insert and `COMMIT` each wake that
//! thread, and the task waiting for it, and the update's returned rows come back one message
//! each. Here the whole transaction is one job for one thread: the batch goes over once, its
//! outcome comes back once. The statements are the sqlx path's own, bound from the same lists
//! ([`verdict_params`], [`report_params`]), so the two paths write the same rows: the
//! verdicts' update and the reports' insert one report a statement ([`HOST_VERDICT_SQLITE`],
//! [`REPORT_INSERT_SQLITE`]: in the server's own process a statement costs no round trip, and
//! one that writes a single row by its key needs no statement journal; the update without
//! `RETURNING`, which SQLite runs as a trigger, and the row it wrote read after it,
//! [`HOST_UPDATED_SQLITE`]), the rarer PCR values and changes a batch a statement
//! ([`HOST_PCRS_UPSERT`], [`CHANGES_INSERT`]). The sqlx path remains for PostgreSQL, for a
//! database in memory (private to the connection that made it), and for a batch that failed,
//! retried report by report.
//!
//! SQLite lets one connection write at a time. The caller holds the sqlx writer connection
//! (the only other writer) while a job runs ([`Store::on_direct`]), so the two never wait for
//! each other's lock.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::*;

/// A job for the writer thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The SQLite report writer: a thread owning one connection, which runs jobs in turn; and
/// what else belongs to the one server on that file.
pub(super) struct Direct {
    jobs: mpsc::Sender<Job>,
    /// The database file.
    pub(super) file: PathBuf,
    /// The scheduler's pull schedule in memory, which the claims' jobs update
    /// ([`local_schedule`]).
    pub(super) schedule: Arc<local_schedule::LocalSchedule>,
}

/// The writer thread's connection, and the size limit a test applied to it.
pub(super) struct Session {
    conn: Connection,
    /// `Faults::max_pages` as last applied to this connection.
    max_pages: i64,
}

impl Direct {
    /// Opens a connection to the database file at `path` (which exists and is migrated) with
    /// the writer's settings ([`SQLITE_WRITER_SETUP`]), on a thread of its own. The thread
    /// ends, closing the connection, when the last [`Store`] holding it is dropped.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Connect(format!("{}: {e}", path.display())))?;
        for statement in SQLITE_WRITER_SETUP {
            run_pragma(&conn, statement)?;
        }
        // The group commit's four statements in up to nine shapes each ([`batch_shape`]),
        // and the reads of the hosts claimed and of their schedule rows in up to nine shapes
        // each.
        conn.set_prepared_statement_cache_capacity(60);
        let mut session = Session { conn, max_pages: 0 };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-reports".into())
            .spawn(move || {
                for job in queue {
                    // A job that panicked dropped its reply, and its caller has the error; the
                    // thread and its connection (its transaction rolled back) go on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut session)
                    }));
                }
            })?;
        Ok(Self {
            jobs,
            file: path.to_path_buf(),
            schedule: Arc::default(),
        })
    }

    /// Runs `f` on the writer thread and gives back what it returned.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply, result) = oneshot::channel();
        self.jobs
            .send(Box::new(move |session| {
                let _ = reply.send(f(session));
            }))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())
    }
}

fn gone() -> StoreError {
    StoreError::Corrupt {
        table: "reports",
        detail: "the SQLite report writer stopped".into(),
    }
}

/// Runs a statement that may answer a row (most `PRAGMA`s do) and drops what it answers.
fn run_pragma(conn: &Connection, statement: &str) -> Result<()> {
    let mut stmt = conn.prepare(statement)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

impl Session {
    /// The connection's [`CHECKED_SETTINGS`].
    pub(super) fn settings(&self) -> Result<[i64; 3]> {
        let mut values = [0i64; 3];
        for (value, pragma) in values.iter_mut().zip(CHECKED_SETTINGS) {
            *value = self
                .conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))?;
        }
        Ok(values)
    }

    /// [`Store::save_reports_tx`] on this connection: the same statements in one
    /// transaction, committed unless `faults` fail it.
    pub(super) fn save_reports(
        &mut self,
        faults: &Faults,
        rows: &[BatchRow<'_>],
    ) -> Result<(Vec<Change>, Vec<bool>)> {
        self.follow_disk_full(faults)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut saved = Saved::new(rows.len());
        {
            // One update a report, in order (a host twice in a batch is updated twice), and
            // when it wrote the host's row, the row as it left it.
            let mut update = tx.prepare_cached(&HOST_VERDICT_SQLITE)?;
            let mut updated = tx.prepare_cached(&HOST_UPDATED_SQLITE)?;
            for (i, row) in rows.iter().enumerate() {
                let host = match update.execute(rusqlite::params_from_iter(verdict_params(row)))? {
                    0 => None,
                    _ => Some(updated.query_row([&row.0.host_name], |r| {
                        Ok(Updated::new(r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?),
                };
                saved.updated_one(i, row, host);
            }
            let mut insert = tx.prepare_cached(&REPORT_INSERT_SQLITE)?;
            for kept in &saved.kept {
                insert.execute(rusqlite::params_from_iter(report_params(kept)))?;
            }
        }
        execute_batches(&tx, &HOST_PCRS_UPSERT, &saved.pcrs, BATCH_MAX, pcrs_params)?;
        // Last, as the sqlx path appends them ([`Store::append_changes`]).
        execute_batches(
            &tx,
            &CHANGES_INSERT,
            &saved.changes,
            CHANGES_MAX,
            change_params,
        )?;
        if faults.commit_fails() {
            // Dropping the transaction rolls it back.
            return Err(StoreError::Injected(COMMIT_FAILED));
        }
        tx.commit()?;
        Ok(saved.done())
    }

    /// The rows of the hosts named (those that exist) as an attestation reads them
    /// ([`HOSTS_NAMED`]), for a claim ([`Store::claim_scheduled`]). Read through sqlx, a row
    /// cost that connection's thread, its messages and the task waiting on them about as much
    /// again as SQLite's own work.
    pub(super) fn hosts_named(&self, names: &[String]) -> Result<Vec<HostRow>> {
        let mut hosts = Vec::with_capacity(names.len());
        for chunk in names.chunks(BATCH_MAX) {
            let shape = batch_shape(chunk.len());
            let mut read = self
                .conn
                .prepare_cached(&HOSTS_NAMED.text(Backend::Sqlite, shape))?;
            let columns: Vec<String> = read.column_names().into_iter().map(String::from).collect();
            let listed = shaped(chunk.iter().map(|n| [Param::Text(Some(n.as_str()))]), shape);
            let mut rows = read.query(rusqlite::params_from_iter(listed))?;
            while let Some(row) = rows.next()? {
                hosts.push(host_from_row(&Named {
                    row,
                    columns: &columns,
                })?);
            }
        }
        Ok(hosts)
    }

    /// Applies a full disk that a test injected or ended ([`Store::inject_disk_full`]), as the
    /// sqlx writer connections do.
    fn follow_disk_full(&mut self, faults: &Faults) -> Result<()> {
        let pages = faults.max_pages.load(Ordering::SeqCst);
        if pages != self.max_pages {
            let limit = if pages > 0 { pages } else { NO_PAGE_LIMIT };
            run_pragma(&self.conn, &format!("PRAGMA max_page_count = {limit}"))?;
            self.max_pages = pages;
        }
        Ok(())
    }
}

impl local_schedule::ScheduleSource for Session {
    fn load(&mut self) -> Result<Vec<(String, i64, Option<i64>)>> {
        let mut stmt = self.conn.prepare(&local_schedule::LOAD_SQL)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn named(&mut self, names: &[String]) -> Result<Vec<(String, i64)>> {
        let shape = batch_shape(names.len());
        let mut stmt = self
            .conn
            .prepare_cached(&local_schedule::SCHEDULE_NAMED.text(Backend::Sqlite, shape))?;
        let listed = shaped(names.iter().map(|n| [Param::Text(Some(n.as_str()))]), shape);
        let rows = stmt.query_map(rusqlite::params_from_iter(listed), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Runs the batch statement `sql` over `rows`, at most `max` a statement in its shapes
/// ([`batch_shape`]), each row's values bound from `params`.
fn execute_batches<'a, T, const N: usize>(
    tx: &rusqlite::Transaction<'_>,
    sql: &'static ShapedSql,
    rows: &'a [T],
    max: usize,
    params: impl Fn(&'a T) -> [Param<'a>; N],
) -> Result<()> {
    for chunk in rows.chunks(max) {
        let shape = batch_shape(chunk.len()).min(max);
        let mut stmt = tx.prepare_cached(&sql.text(Backend::Sqlite, shape))?;
        stmt.execute(rusqlite::params_from_iter(shaped(
            chunk.iter().map(&params),
            shape,
        )))?;
    }
    Ok(())
}

/// A row of this connection read by column name, the name looked up in its statement's
/// columns taken once (rusqlite, given a name, asks SQLite for every column's name until it
/// finds it: about 150 calls a host row).
struct Named<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    columns: &'r [String],
}

impl Named<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<T> {
        let i = self
            .columns
            .iter()
            .position(|c| c == column)
            .ok_or_else(|| rusqlite::Error::InvalidColumnName(column.to_string()))?;
        Ok(self.row.get(i)?)
    }
}

impl Columns for Named<'_, '_> {
    fn text(&self, column: &str) -> Result<String> {
        self.get(column)
    }
    fn text_or_null(&self, column: &str) -> Result<Option<String>> {
        self.get(column)
    }
    fn int(&self, column: &str) -> Result<i64> {
        self.get(column)
    }
    fn int_or_null(&self, column: &str) -> Result<Option<i64>> {
        self.get(column)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Text(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::Int(Some(i)) => ToSqlOutput::Owned(Value::Integer(i)),
            Param::Text(None) | Param::Int(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}
