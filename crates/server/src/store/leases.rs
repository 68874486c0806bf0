//! The durable schedule: due times, leases and replica heartbeats (`schedule`, `replicas`).

use super::*;

impl Store {
    /// Makes a host due for attestation at `at`.
    pub async fn schedule(&self, name: &str, at: i64) -> Result<bool> {
        // Never a push host: the server does not connect to its agent.
        let mut writer = self.pool.get().await?;
        let r = sqlx::query(
            "UPDATE schedule SET next_attest = $1 WHERE name = $2 \
             AND name IN (SELECT name FROM hosts WHERE name = $2 AND connection_url <> $3)",
        )
        .bind(at)
        .bind(name)
        .bind(PUSH_URL)
        .execute(&mut *writer)
        .await?;
        let scheduled = r.rows_affected() > 0;
        if let (true, Some(direct)) = (scheduled, &self.direct) {
            // Marked while the writer is held, as a commit marks what it wrote.
            direct.schedule.touch([name]);
        }
        Ok(scheduled)
    }

    /// Hosts due at `now` that this replica may take (free, its own, or with an expired lease).
    pub async fn due_hosts(&self, replica: &str, now: i64, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM schedule WHERE next_attest <= $1 \
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $1) ORDER BY next_attest, name LIMIT $3",
        )
        .bind(now)
        .bind(replica)
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
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
            "UPDATE schedule SET lease_owner = $1, lease_until = $2, next_attest = $3 WHERE name = $4 \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $5)",
        )
        .bind(replica)
        .bind(until)
        .bind(next)
        .bind(name)
        .bind(now)
        .execute(&mut *self.pool.get().await?)
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
    /// Returns the claimed hosts' rows (as they are after the claim, without the EK and the
    /// host facts: [`ATTEST_COLUMNS`]), so the scheduler reads no host row of its own before
    /// attesting each.
    #[allow(
        clippy::too_many_arguments,
        reason = "the claim's parameters, named at each call"
    )]
    pub async fn claim_due(
        &self,
        replica: &str,
        now: i64,
        until: i64,
        period: i64,
        dead_after: i64,
        limit: i64,
    ) -> Result<Vec<HostRow>> {
        let db_now = self.db_now_ms();
        let lease = format!(
            "(lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4 \
             OR lease_owner NOT IN (SELECT id FROM replicas WHERE heartbeat >= {db_now} - $5))"
        );
        // The candidates: the due hosts and those scheduled by a clock that jumped back, each
        // read as a range of the `next_attest` index (one `OR` of both made the database scan
        // every host at each tick when fewer than `limit` were due). Push hosts, never due
        // (`PUSH_NEVER_DUE`), are never claimed: the server does not connect to their agents.
        let never = PUSH_NEVER_DUE;
        // The limit as an expression, not a bare parameter: SQLite plans with a bare `LIMIT ?`'s
        // bound value and prepares the statement again whenever it changes (every tick claims
        // as many hosts as there are free permits), which cost more than the claim itself.
        let lim = "($6 + 0)";
        // On PostgreSQL the candidates are locked as they are read, in index order, skipping
        // rows another claim holds: two replicas claiming at once would otherwise lock the
        // same rows in different orders in the update and deadlock. (SQLite has one writer.)
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        // The claimed rows are found by name: on PostgreSQL as an array (`= ANY(ARRAY(...))`,
        // an index scan of the primary key for those names), since with `IN (subquery)` the
        // planner joined the candidates to a scan of every due row, dead versions included
        // (each claim moves `next_attest` and leaves its old index entry behind until vacuum):
        // 4.4 ms against 2.0 ms for 25 hosts of 10,000. The checks again on each row use
        // `next_attest + 0`, which no index serves, for the same reason.
        let (names_in, names_end) = match self.backend {
            Backend::Sqlite => ("IN (", ")"),
            Backend::Postgres => ("= ANY(ARRAY(", "))"),
        };
        let claim = format!(
            "UPDATE schedule SET lease_owner = $1, lease_until = $2, \
               next_attest = CASE WHEN next_attest <= $4 AND next_attest + $3 > $4 THEN next_attest + $3 ELSE $4 + $3 END \
             WHERE name {names_in}SELECT name FROM ( \
                 SELECT name, next_attest FROM (SELECT name, next_attest FROM schedule \
                   WHERE next_attest <= $4 AND {lease} ORDER BY next_attest, name LIMIT {lim}{lock}) AS due \
                 UNION ALL \
                 SELECT name, next_attest FROM (SELECT name, next_attest FROM schedule \
                   WHERE next_attest > $4 + 2 * $3 AND next_attest < {never} AND {lease} \
                   ORDER BY next_attest, name LIMIT {lim}{lock}) AS ahead \
               ) AS candidates ORDER BY next_attest, name LIMIT {lim}{names_end} \
             AND (next_attest + 0 <= $4 OR (next_attest + 0 > $4 + 2 * $3 AND next_attest + 0 < {never})) \
             AND {lease} RETURNING name"
        );
        // The claimed hosts' rows: on PostgreSQL in the same statement; SQLite has no
        // `UPDATE` in a `WITH`, so there a read follows the claim's commit.
        let q = match self.backend {
            Backend::Postgres => format!(
                "WITH claimed AS ({claim}) SELECT {ATTEST_COLUMNS} FROM hosts \
                 WHERE name IN (SELECT name FROM claimed)"
            ),
            Backend::Sqlite => claim,
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(replica)
            .bind(until)
            .bind(period)
            .bind(now)
            .bind(dead_after)
            .bind(limit)
            .fetch_all(&mut *self.claimer.get().await?)
            .await?;
        if self.backend == Backend::Postgres {
            return rows.iter().map(host_from_row).collect();
        }
        let names = rows
            .iter()
            .map(|r| Ok(r.try_get("name")?))
            .collect::<Result<Vec<String>>>()?;
        self.hosts_named(&names).await
    }

    /// The scheduler's claim: [`Store::claim_due`]'s, except on a SQLite file, where the
    /// server is the only one on its database and keeps the pull schedule in memory
    /// ([`local_schedule`]): the due hosts are taken there, no lease is written, and only
    /// their rows are read, on the report writer's connection.
    #[allow(
        clippy::too_many_arguments,
        reason = "the claim's parameters, named at each call"
    )]
    pub async fn claim_scheduled(
        &self,
        replica: &str,
        now: i64,
        until: i64,
        period: i64,
        dead_after: i64,
        limit: i64,
    ) -> Result<Vec<HostRow>> {
        let Some(direct) = &self.direct else {
            return self
                .claim_due(replica, now, until, period, dead_after, limit)
                .await;
        };
        // The writer held, so no commit comes between the schedule's update and the claim.
        let w = self.writer().await?;
        let local = direct.schedule.clone();
        let limit = usize::try_from(limit).unwrap_or(0);
        let job = move |session: &mut direct::Session| {
            local.sync(session, period)?;
            let names = local.take_due(now, period, limit);
            session.hosts_named(&names)
        };
        self.on_direct(w, direct, job, Result::is_ok).await?
    }

    /// Test hook: how the claims on one of this store's claim connections were planned, as
    /// PostgreSQL's `pg_prepared_statements` counts them: (with the plan for any parameters,
    /// with a plan for the parameters given). `None` on SQLite.
    #[doc(hidden)]
    pub async fn claim_plans(&self) -> Result<Option<(i64, i64)>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(generic_plans), 0) AS BIGINT) AS generic, \
             CAST(COALESCE(SUM(custom_plans), 0) AS BIGINT) AS custom FROM pg_prepared_statements \
             WHERE statement LIKE '%UPDATE schedule SET lease_owner%' \
             AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .fetch_one(&mut *self.claimer.get().await?)
        .await?;
        Ok(Some((row.try_get("generic")?, row.try_get("custom")?)))
    }

    /// The rows of the hosts named (those that exist) as an attestation reads them
    /// ([`ATTEST_COLUMNS`]), read in statements of at most [`BATCH_MAX`] names.
    async fn hosts_named(&self, names: &[String]) -> Result<Vec<HostRow>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(BATCH_MAX) {
            let query = names_query(self.backend, &HOSTS_NAMED, chunk);
            for r in query.fetch_all(&mut *self.reader.get().await?).await? {
                out.push(host_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// The database's clock in Unix milliseconds, as SQL: heartbeats are written and read by
    /// the one clock every replica shares, so replicas' own clocks (skewed, or stepped) never
    /// make a live replica look dead.
    pub(super) fn db_now_ms(&self) -> &'static str {
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
            .execute(&mut *self.pool.get().await?)
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
            .fetch_all(&mut *self.pool.get().await?)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Forgets replicas silent for more than `age` milliseconds that hold no host.
    pub async fn forget_replicas(&self, age: i64) -> Result<u64> {
        let q = format!(
            "DELETE FROM replicas WHERE heartbeat < {} - $1 \
             AND NOT EXISTS (SELECT 1 FROM schedule WHERE schedule.lease_owner = replicas.id)",
            self.db_now_ms()
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(age)
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(r.rows_affected())
    }

    /// Hands a host `from` this replica over `to` another, keeping its next attestation; the
    /// lease runs until `until`. False when `from` does not hold it (any more).
    pub async fn hand_over(&self, name: &str, from: &str, to: &str, until: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE schedule SET lease_owner = $1, lease_until = $2 WHERE name = $3 AND lease_owner = $4",
        )
        .bind(to)
        .bind(until)
        .bind(name)
        .bind(from)
        .execute(&mut *self.pool.get().await?)
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
            "UPDATE schedule SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
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
            "SELECT lease_owner, COUNT(*) AS n FROM schedule GROUP BY lease_owner ORDER BY lease_owner",
        )
        .fetch_all(&mut *self.pool.get().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lease_owner")?, r.try_get("n")?)))
            .collect()
    }

    /// The replica holding a host's lease and until when.
    pub async fn lease(&self, name: &str) -> Result<Option<(Option<String>, i64)>> {
        let row = sqlx::query("SELECT lease_owner, lease_until FROM schedule WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.map(|r| Ok((r.try_get("lease_owner")?, r.try_get("lease_until")?)))
            .transpose()
    }
}
