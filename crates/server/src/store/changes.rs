//! The change feed's table (`changes`) and the retention of reports and changes.

use super::*;

impl Store {
    /// One bounded delete of old reports: at most `limit` reports created in `[from, before)`,
    /// oldest first, sparing the latest report of each registered host (the head of its
    /// chain, the one `GET /reports?latest=true` serves). Returns how many were deleted and the
    /// newest `created` among them (the `from` of the next batch: older reports left are
    /// spared ones).
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
        // A report is spared when its host is registered and names it as its latest.
        let q = format!(
            "DELETE FROM reports WHERE id IN (SELECT r.id FROM reports r \
             WHERE r.created >= $1 AND r.created < $2 \
             AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.name = r.host_name AND h.last_report = r.id) \
             ORDER BY r.created LIMIT $3{lock}) RETURNING created"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(from)
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *self.pool.get().await?)
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
            .fetch_all(&mut *self.pool.get().await?)
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
            .execute(&mut *self.pool.get().await?)
            .await?;
        }
        Ok(u64::try_from(deleted.len()).unwrap_or(u64::MAX))
    }

    /// The newest sequence number retention has deleted from the change feed (0 when none):
    /// a follower whose position is older has missed changes.
    pub async fn changes_pruned_through(&self) -> Result<i64> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
            .bind(PRUNED_THROUGH)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The newest sequence number of the change feed (0 when empty).
    pub async fn changes_head(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes")
            .fetch_one(&mut *self.reader.get().await?)
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
        .fetch_all(&mut *self.reader.get().await?)
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
}
