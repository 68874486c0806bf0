//! Registered hosts (`hosts`): registration under the EK-identity rule, lookups, deletion.

use super::*;

impl Store {
    /// A host by name.
    pub async fn host(&self, name: &str) -> Result<Option<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(name)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// A host by hardware UUID.
    pub async fn host_by_uuid(&self, hardware_uuid: &str) -> Result<Option<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE hardware_uuid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(hardware_uuid)
            .fetch_optional(&mut *self.reader.get().await?)
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
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// How many hosts have each effective verdict at `now_ms` (as [`HostRow::effective`]
    /// gives it: `unknown` when never attested or expired), counted by the database: one
    /// aggregate, no host row read into the server (`/metrics` at 100,000 hosts).
    pub async fn verdict_counts(&self, now_ms: i64) -> Result<BTreeMap<Trust, u64>> {
        let rows = sqlx::query(
            "SELECT CASE WHEN verdict IS NULL OR attested_at IS NULL OR expires_at IS NULL \
             OR expires_at <= $1 THEN 'unknown' ELSE verdict END AS effective, \
             COUNT(*) AS n FROM hosts GROUP BY 1",
        )
        .bind(now_ms)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let text: String = r.try_get("effective")?;
            let verdict = Trust::parse(&text).ok_or_else(|| StoreError::Corrupt {
                table: "hosts",
                detail: format!("unknown verdict {text:?}"),
            })?;
            let n: i64 = r.try_get("n")?;
            *out.entry(verdict).or_default() += u64::try_from(n).unwrap_or(0);
        }
        Ok(out)
    }

    /// Every host, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        let q = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(&mut *self.reader.get().await?)
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
        let names: Vec<&str> = old.as_deref().into_iter().collect();
        let (mut changes, history) = replaced(&mut tx, h, &names, now).await?;
        let change = self
            .insert_registered(&mut tx, h, None, history, now)
            .await?;
        changes.push((change, now));
        w.end.commit_with_changes(tx, &changes).await?;
        for (change, _) in changes {
            self.publish(change);
        }
        Ok(old.is_some())
    }

    /// Inserts a host just registered (due [`REGISTERED_DUE_AFTER_MS`] from now, its counters
    /// forgotten, with the issuer of the EK certificate it was accepted with and the reports
    /// of the row it replaced under its name, `history`); returns its `registered` change, for
    /// the caller to append at the commit and publish after it.
    pub(super) async fn insert_registered(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        h: &HostRow,
        ek_issuer: Option<&str>,
        history: Option<String>,
        now: i64,
    ) -> Result<Change> {
        insert_registered_rows(tx, self.backend, &[(h, ek_issuer, history, now)]).await?;
        Ok(Change::of(&h.name, ChangeKind::Registered))
    }

    /// What a registration reads before its challenge is issued, in one statement (each
    /// statement is a round trip to the database): the active endorsements of its EK (by
    /// `ek_sha256`, as [`Store::active_endorsements_for`]), and the hosts that share a name, a
    /// hardware UUID (any case) or an EK (`ek_public`, as stored) with it, those it would
    /// replace or conflict with (by name).
    pub async fn registration_reads(
        &self,
        ek_sha256: &str,
        name: &str,
        hardware_uuid: &str,
        ek_public: &str,
    ) -> Result<(Vec<Endorsement>, Vec<HostRow>)> {
        // Every endorsement with every holder (a left join each, so that one row comes back
        // when there is neither): an EK has few endorsements, a registration few holders.
        let q = format!(
            "SELECT {ENDORSEMENT_AS_E}, h.* FROM (SELECT 1 AS one) o \
             LEFT JOIN endorsements e ON e.ek_sha256 = $1 AND e.revoked = 0 \
             LEFT JOIN (SELECT {HOST_COLUMNS} FROM hosts WHERE name = $2 \
             OR LOWER(hardware_uuid) = LOWER($3) OR ek_public = $4) h ON 1 = 1 \
             ORDER BY h.name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(ek_sha256)
            .bind(name)
            .bind(hardware_uuid)
            .bind(ek_public)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        let mut holders: Vec<HostRow> = Vec::new();
        for r in &rows {
            let Some(holder) = r.try_get::<Option<String>, _>("name")? else {
                continue;
            };
            if holders.last().is_none_or(|h| h.name != holder) {
                holders.push(host_from_row(r)?);
            }
        }
        Ok((endorsements_as_e(&rows)?, holders))
    }

    /// Registers a host whose AK was just proven by an activation, after `check` accepted the
    /// hosts it would replace or conflict with ([`Store::registration_reads`]), read in the same
    /// transaction (locked on PostgreSQL), so two registrations cannot race past the check.
    /// Every host `check` accepted is replaced. `ek_issuer` is kept: the issuer (distinguished
    /// name) of the EK certificate the registration was accepted with.
    ///
    /// The registration challenge `challenge_id` is taken in the same transaction
    /// ([`Registered::ChallengeGone`] when it is no longer open: taken by a concurrent
    /// activation, or expired), so a challenge registers at most one host; a refused
    /// activation uses it up too.
    ///
    /// Activations at the same time share one transaction (a group commit, as reports do:
    /// [`Store::save_report`]); each is decided in turn, so each sees the hosts the ones
    /// before it stored, as one by one. A shared transaction that fails is retried one by
    /// one. `check` may therefore run twice. (On PostgreSQL too: every transaction that
    /// registers a host appends to the change feed, and the feed's order lock is held from
    /// the append to the commit ([`Store::append_changes`]), so transactions of one activation
    /// each queued on that lock.)
    pub async fn register_host_activated(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: &str,
        now: i64,
        check: impl Fn(&[HostRow]) -> CheckOutcome + Send + Sync + 'static,
    ) -> Result<Registered> {
        let (done, result) = oneshot::channel();
        let pending = PendingRegistration {
            host: h.clone(),
            ek_issuer: ek_issuer.map(str::to_string),
            challenge_id: challenge_id.to_string(),
            now,
            check: Box::new(check),
            done,
        };
        if let Err(p) = self.registrations.push(pending) {
            return self.register_pending_one(&p).await;
        }
        self.registrations
            .wait(result, |items| {
                let store = self.clone();
                async move { store.commit_registrations(items).await }
            })
            .await
    }

    /// Shared transactions of activations so far, and the registrations they took.
    pub fn registration_commits(&self) -> (u64, u64) {
        (
            self.registrations.commits.load(Ordering::Relaxed),
            self.registrations.committed.load(Ordering::Relaxed),
        )
    }

    /// Counts hosts just registered. On PostgreSQL, each time the count reaches 1,024, 2,048,
    /// 4,096, ... the tables registration fills are analysed (`ANALYZE hosts, schedule`, on a
    /// task of its own). A new server's tables fill faster than the autovacuum looks at them
    /// (once a minute): until then the planner has no statistics and guesses that an
    /// identity's look-up matches a large part of `hosts`, so it scans the table, every
    /// registration (2 ms at 20,000 hosts), and the statements a connection prepared while
    /// the table was small keep that plan until the statistics change. PostgreSQL's own advice
    /// after a bulk load is the same: analyse.
    fn count_registered(&self, n: usize) {
        if self.backend != Backend::Postgres || n == 0 {
            return;
        }
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let before = self.registered.fetch_add(n, Ordering::Relaxed);
        let after = before.saturating_add(n);
        if after < ANALYZE_FIRST_AT
            || (before >= ANALYZE_FIRST_AT && before.ilog2() == after.ilog2())
        {
            return;
        }
        self.maintain("ANALYZE hosts, schedule", || {});
    }

    async fn register_pending_one(&self, p: &PendingRegistration) -> Result<Registered> {
        self.register_host_inner(
            &p.host,
            p.ek_issuer.as_deref(),
            &p.challenge_id,
            p.now,
            &*p.check,
        )
        .await
    }

    /// Commits queued activations in shared transactions (of at most
    /// [`SHARED_REGISTRATIONS_MAX`] on PostgreSQL), or one by one when one fails.
    async fn commit_registrations(&self, mut items: Vec<PendingRegistration>) {
        let max = match self.backend {
            Backend::Sqlite => usize::MAX,
            Backend::Postgres => SHARED_REGISTRATIONS_MAX,
        };
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(max));
            self.commit_shared(items).await;
            items = rest;
        }
    }

    /// Commits activations in one transaction, or one by one when that fails.
    async fn commit_shared(&self, items: Vec<PendingRegistration>) {
        match self.register_shared_tx(&items).await {
            Ok(outcomes) => {
                self.registrations.counted(items.len());
                let stored = outcomes
                    .iter()
                    .filter(|(o, _)| matches!(o, Registered::Stored(_)))
                    .count();
                self.count_registered(stored);
                for (p, (outcome, changes)) in items.into_iter().zip(outcomes) {
                    for change in changes {
                        self.publish(change);
                    }
                    let _ = p.done.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, registrations = items.len(), "shared registration commit failed; one by one");
                for p in items {
                    let r = self.register_pending_one(&p).await;
                    let _ = p.done.send(r);
                }
            }
        }
    }

    /// Activations (in order) in one transaction; each one's outcome, and the changes to
    /// publish for it (the host stored, and the hosts it replaced under other names).
    ///
    /// The statements are shared too: every challenge is taken by one statement and every
    /// identity's holders are read by one, each activation is checked against its own, and the
    /// hosts accepted are inserted together. (Each statement is a round trip to the writer's
    /// thread, and the write turn that bounds registrations per second is held across them.)
    /// That equals one activation after another when no two of them share a name, a hardware
    /// UUID, an EK or a holder: none then reads a row another writes. When two do (the same
    /// host activating twice at once, or two hosts that replace the same row), the
    /// activations after the challenges' take run one by one, as [`Store::register_in`].
    async fn register_shared_tx(
        &self,
        items: &[PendingRegistration],
    ) -> Result<Vec<(Registered, Vec<Change>)>> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let taken = take_challenges(&mut tx, self.backend, items).await?;
        let active: Vec<&PendingRegistration> = items
            .iter()
            .zip(&taken)
            .filter_map(|(p, t)| t.then_some(p))
            .collect();
        if self.backend == Backend::Postgres {
            lock_identities(&mut tx, &active).await?;
        }
        let holders = holders_of(&mut tx, self.backend, &active).await?;
        // Each active one's holders, in order; none when they must run one by one.
        let mut own = holders.iter().flatten();
        let mut changes = Vec::new();
        let mut outcomes = Vec::with_capacity(items.len());
        // The hosts left for the shared insert.
        let mut rows: Vec<NewHost<'_>> = Vec::new();
        for (p, taken) in items.iter().zip(taken) {
            let step = if !taken {
                RegisterStep::refused(Registered::ChallengeGone)
            } else if let Some(held) = own.next() {
                let mut step = decide_in(&mut tx, &p.host, held, p.now, &*p.check).await?;
                if matches!(step.outcome, Registered::Stored(_)) {
                    let history = step.history.take();
                    rows.push((&p.host, p.ek_issuer.as_deref(), history, p.now));
                }
                step
            } else {
                self.register_taken_in(&mut tx, &p.host, p.ek_issuer.as_deref(), p.now, &*p.check)
                    .await?
            };
            let published = step.published();
            outcomes.push((step.outcome, published));
            changes.extend(step.changes);
        }
        insert_registered_rows(&mut tx, self.backend, &rows).await?;
        // A challenge gone wrote nothing, and a refusal only took its challenge: the
        // transaction commits whatever its registrations' outcomes.
        w.end.commit_with_changes(tx, &changes).await?;
        Ok(outcomes)
    }

    /// One registration in a transaction of its own. On PostgreSQL two registrations of a
    /// new name or hardware UUID at the same moment find no row to lock, and the second's
    /// insert then breaks a unique index: it runs once more, and now finds (and locks) the
    /// host the first stored, as it would have one after the other.
    async fn register_host_inner(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: &str,
        now: i64,
        check: &IdentityCheck,
    ) -> Result<Registered> {
        match self
            .register_host_tx(h, ek_issuer, challenge_id, now, check)
            .await
        {
            Err(StoreError::Db(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                tracing::debug!(host = %h.name, "registration raced another of the same identity; once more");
                self.register_host_tx(h, ek_issuer, challenge_id, now, check)
                    .await
            }
            r => r,
        }
    }

    async fn register_host_tx(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: &str,
        now: i64,
        check: &IdentityCheck,
    ) -> Result<Registered> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let step = self
            .register_in(&mut tx, h, ek_issuer, challenge_id, now, check)
            .await?;
        match &step.outcome {
            Registered::ChallengeGone => w.end.rollback(tx).await?,
            // A refused activation still uses its challenge up, as a wrong secret does.
            Registered::Refused(..) => w.end.commit(tx).await?,
            Registered::Stored(_) => {
                w.end.commit_with_changes(tx, &step.changes).await?;
                self.count_registered(1);
            }
        }
        for change in step.published() {
            self.publish(change);
        }
        Ok(step.outcome)
    }

    /// One registration's statements in `tx`: its challenge taken, the hosts it would replace
    /// or conflict with read and checked, those accepted replaced, the host inserted. Writes
    /// nothing when the challenge is gone, only the challenge's deletion when refused.
    async fn register_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: &str,
        now: i64,
        check: &IdentityCheck,
    ) -> Result<RegisterStep> {
        let taken = sqlx::query("DELETE FROM challenges WHERE id = $1 AND expires >= $2")
            .bind(challenge_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if taken.rows_affected() == 0 {
            return Ok(RegisterStep::refused(Registered::ChallengeGone));
        }
        self.register_taken_in(tx, h, ek_issuer, now, check).await
    }

    /// [`Store::register_in`] once the challenge is taken.
    async fn register_taken_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        h: &HostRow,
        ek_issuer: Option<&str>,
        now: i64,
        check: &IdentityCheck,
    ) -> Result<RegisterStep> {
        if self.backend == Backend::Postgres {
            // Two registrations at once of an identity nobody holds yet find no row to lock
            // below. The table's unique indexes stop the second only for the same name or the
            // same hardware UUID in the same case; the identity rule also holds the UUID in any
            // case and the EK. So the registration first takes a lock (until its commit) on
            // each of the three, in the order of their keys (class, then hash), as a shared
            // transaction takes all of its activations' ([`lock_identities`]): no two can
            // wait for each other. The second then reads the first's host and is checked
            // against it. (In a shared transaction these locks are already held.)
            sqlx::query(
                "SELECT pg_advisory_xact_lock(1, hashtext($1)), \
                 pg_advisory_xact_lock(2, hashtext(LOWER($2))), pg_advisory_xact_lock(3, hashtext($3))",
            )
            .bind(&h.name)
            .bind(&h.hardware_uuid)
            .bind(&h.ek_public)
            .execute(&mut **tx)
            .await?;
        }
        let q = identity_holders_query(match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        });
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(&h.name)
            .bind(&h.hardware_uuid)
            .bind(&h.ek_public)
            .fetch_all(&mut **tx)
            .await?;
        let holders = rows.iter().map(host_from_row).collect::<Result<Vec<_>>>()?;
        if let Err((reason, message)) = check(&holders) {
            return Ok(RegisterStep::refused(Registered::Refused(reason, message)));
        }
        let names: Vec<&str> = holders.iter().map(|o| o.name.as_str()).collect();
        let (mut changes, history) = replaced(tx, h, &names, now).await?;
        let change = self
            .insert_registered(tx, h, ek_issuer, history, now)
            .await?;
        changes.push((change, now));
        Ok(RegisterStep {
            outcome: Registered::Stored(!holders.is_empty()),
            changes,
            history: None,
        })
    }

    /// Deletes a host and its reports; false when there is none.
    pub async fn delete_host(&self, name: &str, now: i64) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let Some(head) = delete_host_row(&mut tx, name).await? else {
            w.end.rollback(tx).await?;
            return Ok(false);
        };
        // Its reports: the chain from its latest (migration 13), and those stored before the
        // chains.
        sqlx::query(
            "WITH RECURSIVE chain (id) AS (SELECT CAST($1 AS TEXT) \
             UNION SELECT r.previous FROM chain c JOIN reports r ON r.id = c.id \
             WHERE r.previous <> '') \
             DELETE FROM reports WHERE id IN (SELECT id FROM chain)",
        )
        .bind(head)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM reports WHERE host_name = $1 AND previous = ''")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ima_state WHERE host_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let change = Change::of(name, ChangeKind::Deleted);
        w.end
            .commit_with_changes(tx, &[(change.clone(), now)])
            .await?;
        self.publish(change);
        Ok(true)
    }
}

/// Deletes a host's row, its schedule row (migration 8 keeps them in two tables; neither is
/// left without the other) and its quoted PCR values (migration 14); returns the head of its
/// reports' chain (`Some(None)`: it has no report), `None` when there was no such host.
async fn delete_host_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
) -> Result<Option<Option<String>>> {
    let head: Option<Option<String>> =
        sqlx::query_scalar("DELETE FROM hosts WHERE name = $1 RETURNING last_report")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
    sqlx::query("DELETE FROM schedule WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM host_pcrs WHERE name = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(head)
}

/// Deletes the hosts (by name) a registration replaces; returns the `deleted` changes of
/// those under another name, and the head of the reports' chain of the one under the same
/// name (the new row carries it on).
async fn replaced(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    h: &HostRow,
    holders: &[&str],
    now: i64,
) -> Result<(Vec<(Change, i64)>, Option<String>)> {
    let mut changes = Vec::new();
    let mut history = None;
    for &old in holders {
        let head = delete_host_row(tx, old).await?.flatten();
        if old != h.name {
            changes.push((Change::of(old, ChangeKind::Deleted), now));
        } else {
            history = head;
        }
    }
    Ok((changes, history))
}

/// A host to insert just registered: its row, the issuer of the EK certificate it was
/// accepted with, the head of the reports' chain it carries on, when it was registered.
type NewHost<'a> = (&'a HostRow, Option<&'a str>, Option<String>, i64);

/// Takes the challenges of a shared transaction's activations in one statement: whether each
/// activation (in order) took its own. A challenge is taken when it has not expired at its
/// activation's moment, and by the first of two activations that name the same one (the
/// second finds it gone, as it would after the first). One that expired between the earliest
/// activation's moment and its own is deleted and refused: it was of no use.
async fn take_challenges(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    items: &[PendingRegistration],
) -> Result<Vec<bool>> {
    let earliest = items.iter().map(|p| p.now).min().unwrap_or(0);
    let mut open: HashMap<String, i64> = HashMap::new();
    static TAKE: ShapedSql = ShapedSql::new(|backend, shape| {
        let tail = format!(
            " AND expires >= {} RETURNING id, expires",
            mark(backend, shape + 1)
        );
        in_list(backend, "DELETE FROM challenges WHERE id", shape, &tail)
    });
    for chunk in items.chunks(BATCH_MAX) {
        let ids: Vec<&str> = chunk.iter().map(|p| p.challenge_id.as_str()).collect();
        let query = names_query(backend, &TAKE, &ids).bind(earliest);
        for r in query.fetch_all(&mut **tx).await? {
            open.insert(r.try_get("id")?, r.try_get("expires")?);
        }
    }
    Ok(items
        .iter()
        .map(|p| {
            open.remove(&p.challenge_id)
                .is_some_and(|expires| expires >= p.now)
        })
        .collect())
}

/// How many hosts a store registers before it first analyses `hosts` on PostgreSQL
/// ([`Store::count_registered`]).
const ANALYZE_FIRST_AT: u64 = 1024;

/// Most activations one shared transaction decides on PostgreSQL: their identities' locks
/// are taken by one statement ([`lock_identities`]), three parameters each.
const SHARED_REGISTRATIONS_MAX: usize = BATCH_MAX / 2;

/// Takes the identity locks of a shared transaction's activations on PostgreSQL (each one's
/// name, lower-cased hardware UUID and EK, as [`Store::register_taken_in`] takes one
/// activation's), in one statement and in the order of their keys: class (name 1, UUID 2,
/// EK 3), then hash. One activation's three are in that order too, so no two transactions
/// that take them can wait for each other. At most [`SHARED_REGISTRATIONS_MAX`] activations.
async fn lock_identities(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    active: &[&PendingRegistration],
) -> Result<()> {
    static LOCK: ShapedSql = ShapedSql::new(|backend, shape| {
        let values = value_rows(backend, shape, &["{}"; 3]);
        // A subquery with an ORDER BY is not merged into the query around it: the locks are
        // taken in the order it gives.
        format!(
            "WITH v (n, u, e) AS (VALUES {values}) \
             SELECT pg_advisory_xact_lock(k.c, k.h) FROM (SELECT c, h FROM \
             (SELECT 1 AS c, hashtext(n) AS h FROM v UNION SELECT 2, hashtext(LOWER(u)) FROM v \
             UNION SELECT 3, hashtext(e) FROM v) AS keys ORDER BY c, h) AS k"
        )
    });
    let Some(first) = active.first() else {
        return Ok(());
    };
    let shape = batch_shape(active.len());
    let mut query = LOCK.query(Backend::Postgres, shape);
    // The rows after the activations repeat the first: its locks, taken once.
    for i in 0..shape {
        let h = &active.get(i).unwrap_or(first).host;
        query = query
            .bind(h.name.as_str())
            .bind(h.hardware_uuid.as_str())
            .bind(h.ek_public.as_str());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// The hosts each activation would replace or conflict with, read for all of them at once:
/// each one's holders (in order; by name, as [`identity_holders_query`] lists them), or
/// `None` when two activations share a name, a hardware UUID, an EK or a holder (then each
/// must read after the one before it wrote: [`Store::register_taken_in`]).
async fn holders_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    active: &[&PendingRegistration],
) -> Result<Option<Vec<Vec<HostRow>>>> {
    let keys: Vec<(&str, String, &str)> = active
        .iter()
        .map(|p| {
            let h = &p.host;
            (
                h.name.as_str(),
                h.hardware_uuid.to_ascii_lowercase(),
                h.ek_public.as_str(),
            )
        })
        .collect();
    let mut seen = BTreeSet::new();
    for (name, uuid, ek) in &keys {
        let fresh = [
            seen.insert((0, *name)),
            seen.insert((1, uuid.as_str())),
            seen.insert((2, *ek)),
        ];
        if fresh.contains(&false) {
            return Ok(None);
        }
    }
    let mut rows = Vec::new();
    for chunk in keys.chunks(BATCH_MAX / 2) {
        let shape = batch_shape(chunk.len());
        let list = |from: usize| {
            (from..from + shape)
                .map(|i| mark(backend, i))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Locked on PostgreSQL, as one activation's are ([`Store::register_taken_in`]).
        let lock = match backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let q = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE name IN ({}) OR LOWER(hardware_uuid) IN ({}) \
             OR ek_public IN ({}) ORDER BY name{lock}",
            list(1),
            list(shape + 1),
            list(2 * shape + 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        let padded = |i: usize| chunk.get(i).or_else(|| chunk.first());
        for i in 0..shape {
            query = query.bind(padded(i).map(|k| k.0).unwrap_or_default());
        }
        for i in 0..shape {
            query = query.bind(padded(i).map(|k| k.1.as_str()).unwrap_or_default());
        }
        for i in 0..shape {
            query = query.bind(padded(i).map(|k| k.2).unwrap_or_default());
        }
        for r in query.fetch_all(&mut **tx).await? {
            rows.push(host_from_row(&r)?);
        }
    }
    if keys.len() > BATCH_MAX / 2 {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows.dedup_by(|a, b| a.name == b.name);
    }
    let mut held: Vec<Vec<HostRow>> = keys.iter().map(|_| Vec::new()).collect();
    for row in rows {
        let uuid = row.hardware_uuid.to_ascii_lowercase();
        let mut of = keys
            .iter()
            .enumerate()
            .filter(|(_, (name, u, ek))| *name == row.name || *u == uuid || *ek == row.ek_public);
        let (Some((i, _)), None) = (of.next(), of.next()) else {
            // A holder of two activations (or of none, which cannot be): one by one.
            return Ok(None);
        };
        if let Some(h) = held.get_mut(i) {
            h.push(row);
        }
    }
    Ok(Some(held))
}

/// Inserts hosts just registered (each due [`REGISTERED_DUE_AFTER_MS`] after its
/// registration, or never for the scheduler when its agent pushes, each with the head of the
/// reports' chain it carries on, if any), with their schedule rows:
/// two statements for up to [`BATCH_MAX`] / 16 hosts (the activations of a shared
/// transaction, or one host: [`Store::insert_registered`]).
async fn insert_registered_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    rows: &[NewHost<'_>],
) -> Result<()> {
    // On SQLite each row under its name's key (`host_key`), or where SQLite puts it when
    // another row holds that key.
    static HOSTS: ShapedSql = ShapedSql::new(|backend, shape| {
        let (values, key_column, key) = match backend {
            Backend::Sqlite => (
                value_rows(backend, shape, &["{}"; 13]),
                "rowid, ",
                "CASE WHEN EXISTS (SELECT 1 FROM hosts h WHERE h.rowid = v.column13) \
                 THEN NULL ELSE v.column13 END, ",
            ),
            Backend::Postgres => (value_rows(backend, shape, &["{}"; 12]), "", ""),
        };
        format!(
            "INSERT INTO hosts ({key_column}name, hardware_uuid, connection_url, tls_cert_sha256, ek_public, \
             ak_public, host_info, software_tpm, status, created, updated, ek_issuer, last_report) \
             SELECT {key}v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
             v.column8, 'pending', v.column9, v.column10, v.column11, v.column12 FROM (VALUES {values}) AS v \
             WHERE v.column1 IS NOT NULL"
        )
    });
    static SCHEDULE: ShapedSql = ShapedSql::new(|backend, shape| {
        let values = value_rows(backend, shape, &["{}"; 2]);
        format!(
            "INSERT INTO schedule (name, next_attest, lease_owner, lease_until) \
             SELECT v.column1, v.column2, NULL, 0 FROM (VALUES {values}) AS v WHERE v.column1 IS NOT NULL \
             ON CONFLICT (name) DO UPDATE SET next_attest = excluded.next_attest, lease_owner = NULL, lease_until = 0"
        )
    });
    for chunk in rows.chunks(BATCH_MAX / 16) {
        let shape = batch_shape(chunk.len()).min(BATCH_MAX / 16);
        let mut query = HOSTS.query(backend, shape);
        for (h, ek_issuer, history, now) in chunk {
            query = query
                .bind(&h.name)
                .bind(&h.hardware_uuid)
                .bind(&h.connection_url)
                .bind(&h.tls_cert_sha256)
                .bind(&h.ek_public)
                .bind(&h.ak_public)
                .bind(&h.host_info)
                .bind(i64::from(h.software_tpm))
                .bind(*now)
                .bind(*now)
                .bind(*ek_issuer)
                .bind(history.as_deref());
            if backend == Backend::Sqlite {
                query = query.bind(host_key(&h.name));
            }
        }
        let padding = match backend {
            Backend::Sqlite => "tttttttiiitti",
            Backend::Postgres => "tttttttiiitt",
        };
        query = bind_padding(query, shape - chunk.len(), padding);
        query.execute(&mut **tx).await?;
        let mut query = SCHEDULE.query(backend, shape);
        for (h, _, _, now) in chunk {
            query = query.bind(&h.name).bind(first_due(h, *now));
        }
        query = bind_padding(query, shape - chunk.len(), "ti");
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// When a host just registered is first due: [`REGISTERED_DUE_AFTER_MS`] after `now`, or
/// never for the scheduler when its agent pushes.
fn first_due(h: &HostRow, now: i64) -> i64 {
    if h.connection_url == PUSH_URL {
        PUSH_NEVER_DUE
    } else {
        now.saturating_add(REGISTERED_DUE_AFTER_MS)
    }
}

/// One activation of a shared transaction whose holders were read with the others'
/// ([`holders_of`]): checked, and when accepted its holders deleted and its host left for
/// the shared insert (the caller's, when the outcome is [`Registered::Stored`]).
async fn decide_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    h: &HostRow,
    held: &[HostRow],
    now: i64,
    check: &IdentityCheck,
) -> Result<RegisterStep> {
    if let Err((reason, message)) = check(held) {
        return Ok(RegisterStep::refused(Registered::Refused(reason, message)));
    }
    let names: Vec<&str> = held.iter().map(|o| o.name.as_str()).collect();
    let (mut changes, history) = replaced(tx, h, &names, now).await?;
    changes.push((Change::of(&h.name, ChangeKind::Registered), now));
    Ok(RegisterStep {
        outcome: Registered::Stored(!held.is_empty()),
        changes,
        history,
    })
}
