//! Registered hosts (`hosts`): registration under the EK-identity rule, lookups, deletion.

use super::*;

impl Store {
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
        .fetch_all(&self.reader)
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
        let mut changes = Vec::new();
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
                changes.push((change, now));
            }
        }
        let change = self.insert_registered(&mut tx, h, None, now).await?;
        changes.push((change.clone(), now));
        w.end.commit_with_changes(tx, &changes).await?;
        self.publish(change);
        Ok(old.is_some())
    }

    /// Inserts a host just registered (due [`REGISTERED_DUE_AFTER_MS`] from now, its counters
    /// forgotten, with the issuer of the EK certificate it was accepted with); returns its
    /// `registered` change, for the caller to append at the commit and publish after it.
    pub(super) async fn insert_registered(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        h: &HostRow,
        ek_issuer: Option<&str>,
        now: i64,
    ) -> Result<Change> {
        sqlx::query(
            "INSERT INTO hosts (name, hardware_uuid, connection_url, tls_cert_sha256, ek_public, ak_public, host_info, \
             software_tpm, status, created, updated, next_attest, lease_until, ek_issuer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9, $10, 0, $11)",
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
        .bind(if h.connection_url == PUSH_URL {
            // A push host is attested when its agent pushes: never due for the scheduler.
            PUSH_NEVER_DUE
        } else {
            now.saturating_add(REGISTERED_DUE_AFTER_MS)
        })
        .bind(ek_issuer)
        .execute(&mut **tx)
        .await?;
        Ok(Change {
            host_name: h.name.clone(),
            kind: ChangeKind::Registered,
            verdict: None,
        })
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
        self.register_host_checked_issued(h, None, now, check).await
    }

    /// [`Store::register_host_checked`], keeping `ek_issuer`: the issuer (distinguished name)
    /// of the EK certificate the registration was accepted with.
    pub async fn register_host_checked_issued(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        now: i64,
        check: impl FnOnce(&[HostRow]) -> std::result::Result<(), (&'static str, String)>,
    ) -> Result<Registered> {
        self.register_host_inner(h, ek_issuer, None, now, check)
            .await
    }

    /// [`Store::register_host_checked_issued`] for an activation: the registration challenge
    /// `challenge_id` is taken in the same transaction ([`Registered::ChallengeGone`] when it
    /// is no longer open: taken by a concurrent activation, or expired), so a challenge
    /// registers at most one host.
    pub async fn register_host_activated(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: &str,
        now: i64,
        check: impl FnOnce(&[HostRow]) -> std::result::Result<(), (&'static str, String)>,
    ) -> Result<Registered> {
        self.register_host_inner(h, ek_issuer, Some(challenge_id), now, check)
            .await
    }

    async fn register_host_inner(
        &self,
        h: &HostRow,
        ek_issuer: Option<&str>,
        challenge_id: Option<&str>,
        now: i64,
        check: impl FnOnce(&[HostRow]) -> std::result::Result<(), (&'static str, String)>,
    ) -> Result<Registered> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        if let Some(id) = challenge_id {
            let taken = sqlx::query("DELETE FROM challenges WHERE id = $1 AND expires >= $2")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if taken.rows_affected() == 0 {
                w.end.rollback(tx).await?;
                return Ok(Registered::ChallengeGone);
            }
        }
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
            if challenge_id.is_some() {
                // A refused activation still uses its challenge up, as a wrong secret does.
                w.end.commit(tx).await?;
            } else {
                w.end.rollback(tx).await?;
            }
            return Ok(Registered::Refused(reason, message));
        }
        let mut changes = Vec::new();
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
                changes.push((change, now));
            }
        }
        let change = self.insert_registered(&mut tx, h, ek_issuer, now).await?;
        changes.push((change.clone(), now));
        w.end.commit_with_changes(tx, &changes).await?;
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
        sqlx::query("DELETE FROM ima_state WHERE host_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let change = Change {
            host_name: name.to_string(),
            kind: ChangeKind::Deleted,
            verdict: None,
        };
        w.end
            .commit_with_changes(tx, &[(change.clone(), now)])
            .await?;
        self.publish(change);
        Ok(true)
    }
}
