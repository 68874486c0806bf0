//! Open registration challenges (`challenges`).

use super::*;

/// How many challenges a store issues between two vacuums of `challenges` on PostgreSQL
/// ([`Store::count_challenge`]).
const VACUUM_CHALLENGES_EVERY: u64 = 2048;

impl Store {
    /// Stores a pending registration.
    pub async fn put_challenge(&self, c: &ChallengeRow, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM challenges WHERE expires < $1")
            .bind(now)
            .execute(&mut *self.pool.get().await?)
            .await?;
        sqlx::query(
            "INSERT INTO challenges (id, secret_sha256, request, expires, ek_issuer, ek_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.id)
        .bind(&c.secret_sha256)
        .bind(&c.request)
        .bind(c.expires)
        .bind(&c.ek_issuer)
        .bind(&c.ek_sha256)
        .execute(&mut *self.pool.get().await?)
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
        // While the last count left room (nearly always), the insert is one statement that
        // checks the UUID's bound itself. It saves three round trips (BEGIN, the counts,
        // COMMIT) while the write turn is held, and the write turn is what bounds registrations
        // per second. It leaves out the count of all open challenges, a scan of every one (and,
        // on PostgreSQL, of the rows deleted since the last vacuum): that count, in the
        // transaction below, leaves room for at most [`CHALLENGE_ROOM`] more before it is made
        // again, and no more than the bound allowed when it was made. With replicas on one
        // database each may issue within its own room, so the bound holds to within that a
        // replica (it is a bound on memory and disk). On SQLite, one writer at a time: nothing
        // comes between a count and its insert, and on one server the bound is exact. On
        // PostgreSQL (READ COMMITTED, as the transaction below), issuers at once may each see
        // room (for one UUID too): the bounds hold to within the number of issuers at once
        // (the connection pool's size).
        // Otherwise (no room known, a bound reached, a sweep due, an injected fault), the
        // transaction below decides.
        let last_sweep = CHALLENGE_SWEEP.load(Ordering::SeqCst);
        let sweep_due = now.saturating_sub(last_sweep) >= CHALLENGE_SWEEP_MS || now < last_sweep;
        if !sweep_due && !self.faults.writes_failing() && self.take_room() {
            let mut w = self.writer().await?;
            let inserted = sqlx::query(
                "INSERT INTO challenges (id, secret_sha256, request, expires, hardware_uuid, ek_issuer, ek_sha256) \
                 SELECT $1, $2, $3, $4, $5, $8, $9 \
                 WHERE (SELECT COUNT(*) FROM challenges WHERE hardware_uuid = $5 AND expires >= $6) < $7",
            )
            .bind(&c.id)
            .bind(&c.secret_sha256)
            .bind(&c.request)
            .bind(c.expires)
            .bind(hardware_uuid)
            .bind(now)
            .bind(MAX_CHALLENGES_PER_UUID)
            .bind(&c.ek_issuer)
            .bind(&c.ek_sha256)
            .execute(&mut *w.conn)
            .await?;
            w.end.ok = true;
            self.health.ok();
            if inserted.rows_affected() == 1 {
                self.count_challenge();
                return Ok(true);
            }
        }
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        // Expired challenges count for nothing (every count below skips them, and a take
        // refuses them); deleting them is housekeeping, done at most every few seconds.
        if CHALLENGE_SWEEP
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                (now.saturating_sub(last) >= CHALLENGE_SWEEP_MS || now < last).then_some(now)
            })
            .is_ok()
        {
            sqlx::query("DELETE FROM challenges WHERE expires < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        // Both counts in one statement (every statement is a round trip to the database).
        let counts = sqlx::query(
            "SELECT COUNT(*) AS open_all, \
             COALESCE(SUM(CASE WHEN hardware_uuid = $1 THEN 1 ELSE 0 END), 0) AS open_mine \
             FROM challenges WHERE expires >= $2",
        )
        .bind(hardware_uuid)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let all: i64 = counts.try_get("open_all")?;
        let mine: i64 = counts.try_get("open_mine")?;
        // Room for the ones after this one, without counting all of them again.
        let room = MAX_CHALLENGES.saturating_sub(all).saturating_sub(1);
        self.challenge_room
            .store(room.clamp(0, CHALLENGE_ROOM), Ordering::SeqCst);
        if mine >= MAX_CHALLENGES_PER_UUID {
            sqlx::query(
                "DELETE FROM challenges WHERE id IN (SELECT id FROM challenges WHERE hardware_uuid = $1 \
                 AND expires >= $2 ORDER BY expires, id LIMIT $3)",
            )
            .bind(hardware_uuid)
            .bind(now)
            .bind(mine - MAX_CHALLENGES_PER_UUID + 1)
            .execute(&mut *tx)
            .await?;
        } else if all >= MAX_CHALLENGES {
            w.end.rollback(tx).await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO challenges (id, secret_sha256, request, expires, hardware_uuid, ek_issuer, ek_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.id)
        .bind(&c.secret_sha256)
        .bind(&c.request)
        .bind(c.expires)
        .bind(hardware_uuid)
        .bind(&c.ek_issuer)
        .bind(&c.ek_sha256)
        .execute(&mut *tx)
        .await?;
        w.end.commit(tx).await?;
        self.count_challenge();
        Ok(true)
    }

    /// Takes one of the challenges the last count of all open ones left room for; false when
    /// none is left (the next issue counts them again).
    fn take_room(&self) -> bool {
        self.challenge_room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                (r > 0).then(|| r - 1)
            })
            .is_ok()
    }

    /// Counts a challenge just issued. On PostgreSQL, every [`VACUUM_CHALLENGES_EVERY`]
    /// challenges `challenges` is vacuumed (on a task of its own; one at a time). Its rows
    /// live seconds: each is deleted by its activation, and a deleted row stays in the table
    /// until a vacuum. The autovacuum looks once a minute, and the count of open challenges
    /// every issue makes scans the dead rows too: during a registration of 20,000 hosts,
    /// 15,000 of them and 0.2 ms a challenge.
    fn count_challenge(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let (issued, running) = &*self.issued;
        let n = issued.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n % VACUUM_CHALLENGES_EVERY != 0 || running.swap(true, Ordering::AcqRel) {
            return;
        }
        let issued = self.issued.clone();
        self.maintain("VACUUM challenges", move || {
            issued.1.store(false, Ordering::Release)
        });
    }

    /// Open (not expired) challenges of a hardware UUID, and in all.
    pub async fn open_challenges(&self, hardware_uuid: &str, now: i64) -> Result<(i64, i64)> {
        let mine: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM challenges WHERE hardware_uuid = $1 AND expires >= $2",
        )
        .bind(hardware_uuid)
        .bind(now)
        .fetch_one(&mut *self.pool.get().await?)
        .await?;
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM challenges WHERE expires >= $1")
            .bind(now)
            .fetch_one(&mut *self.pool.get().await?)
            .await?;
        Ok((mine, all))
    }

    /// An open (not expired) challenge, read without taking it: the activation checks the
    /// returned secret first, and the registration's own transaction takes it
    /// ([`Store::register_host_activated`]), one write turn instead of two.
    pub async fn challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRow>> {
        let row = sqlx::query(
            "SELECT id, secret_sha256, request, expires, ek_issuer, ek_sha256 FROM challenges WHERE id = $1 AND expires >= $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        row.as_ref().map(challenge_from_row).transpose()
    }

    /// An open challenge, as [`Store::challenge`], with the active endorsements of its EK in the
    /// same statement (the activation needs both; each statement is a round trip to a database
    /// thread). The endorsements are `None` for a challenge that does not name its EK (one
    /// issued before migration 11): read them by [`Store::active_endorsements_for`].
    pub async fn challenge_endorsed(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<(ChallengeRow, Option<Vec<Endorsement>>)>> {
        let q = format!(
            "SELECT c.id, c.secret_sha256, c.request, c.expires, c.ek_issuer, c.ek_sha256, \
             {ENDORSEMENT_AS_E} \
             FROM challenges c LEFT JOIN endorsements e ON e.ek_sha256 = c.ek_sha256 AND e.revoked = 0 \
             WHERE c.id = $1 AND c.expires >= $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id)
            .bind(now)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let challenge = challenge_from_row(first)?;
        if challenge.ek_sha256.is_none() {
            return Ok(Some((challenge, None)));
        }
        Ok(Some((challenge, Some(endorsements_as_e(&rows)?))))
    }

    /// Takes (reads and deletes) a pending registration that has not expired: one try each.
    pub async fn take_challenge(&self, id: &str, now: i64) -> Result<Option<ChallengeRow>> {
        // One statement: read and delete at once (no other writer can take it in between).
        let mut w = self.writer().await?;
        let row = sqlx::query(
            "DELETE FROM challenges WHERE id = $1 RETURNING id, secret_sha256, request, expires, ek_issuer, ek_sha256",
        )
        .bind(id)
        .fetch_optional(&mut *w.conn)
        .await?;
        w.end.ok = true;
        let Some(c) = row.as_ref().map(challenge_from_row).transpose()? else {
            return Ok(None);
        };
        Ok((c.expires >= now).then_some(c))
    }
}

fn challenge_from_row(r: &AnyRow) -> Result<ChallengeRow> {
    Ok(ChallengeRow {
        id: r.try_get("id")?,
        secret_sha256: r.try_get("secret_sha256")?,
        request: r.try_get("request")?,
        expires: r.try_get("expires")?,
        ek_issuer: r.try_get("ek_issuer")?,
        ek_sha256: r.try_get("ek_sha256")?,
    })
}
