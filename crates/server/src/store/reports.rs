//! Verdicts and signed reports (`reports`, the host row's verdict columns), written in group commits.

use super::*;

impl Store {
    /// Records that a host's agent could not be reached (its verdict is left as it is).
    pub async fn mark_unreachable(&self, name: &str, detail: &str, now: i64) -> Result<()> {
        let r = sqlx::query("UPDATE hosts SET status = 'unreachable', status_detail = $1, updated = $2, version = version + 1 WHERE name = $3 AND status <> 'unreachable'")
            .bind(detail)
            .bind(now)
            .bind(name)
            .execute(&mut *self.pool.get().await?)
            .await?;
        sqlx::query("UPDATE hosts SET status_detail = $1, updated = $3, version = version + 1 WHERE name = $2 AND status_detail IS DISTINCT FROM $1")
            .bind(detail)
            .bind(name)
            .bind(now)
            .execute(&mut *self.pool.get().await?)
            .await?;
        if r.rows_affected() > 0 {
            let mut w = self.writer().await?;
            let tx = begin(&mut w.conn, self.backend).await?;
            let change = Change::of(name, ChangeKind::Status);
            w.end
                .commit_with_changes(tx, &[(change.clone(), now)])
                .await?;
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
        self.save_report_for(report.clone(), None, reached, counters)
            .await
            .map(|_| ())
    }

    /// [`Self::save_report`] for the host registered at `registered` (its row's `created`,
    /// when known): a host registered again (or deleted) since then keeps its verdict and gets
    /// no report. Gives the report back (it travels with its group commit, not copied) with
    /// whether it was stored.
    pub async fn save_report_for(
        &self,
        report: ReportRow,
        registered: Option<i64>,
        reached: bool,
        counters: Option<AttestationUpdate>,
    ) -> Result<(ReportRow, bool)> {
        let (done, result) = oneshot::channel();
        let pending = PendingReport {
            report,
            registered,
            reached,
            counters,
            done,
        };
        if let Err(p) = self.batch.push(pending) {
            let stored = self
                .save_report_one(&p.report, p.registered, p.reached, p.counters)
                .await?;
            return Ok((p.report, stored));
        }
        self.batch
            .wait(result, |items| {
                let store = self.clone();
                async move { store.commit_batch(items).await }
            })
            .await
    }

    /// How long a group commit of fewer than 8 reports waits for more before it starts
    /// (2 ms by default; zero: never).
    pub fn set_commit_gather(&self, gather: Duration) {
        self.batch.gather_us.store(
            u64::try_from(gather.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Group commits of reports so far, and the reports they committed.
    pub fn report_commits(&self) -> (u64, u64) {
        (
            self.batch.commits.load(Ordering::Relaxed),
            self.batch.committed.load(Ordering::Relaxed),
        )
    }

    /// Commits queued reports in one transaction, or one by one when that fails.
    pub(super) async fn commit_batch(&self, items: Vec<PendingReport>) {
        let (items, saved) = match &self.direct {
            Some(direct) => self.save_reports_direct(direct, items).await,
            None => {
                let saved = self.save_reports_tx(&batch_rows(&items)).await;
                (items, saved)
            }
        };
        match saved {
            Ok((changes, stored)) => {
                self.batch.counted(items.len());
                for c in changes {
                    self.publish(c);
                }
                for (p, stored) in items.into_iter().zip(stored) {
                    let _ = p.done.send(Ok((p.report, stored)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, reports = items.len(), "batched report commit failed; one by one");
                for p in items {
                    let r = self
                        .save_report_one(&p.report, p.registered, p.reached, p.counters)
                        .await;
                    let _ = p.done.send(r.map(|stored| (p.report, stored)));
                }
            }
        }
    }

    /// [`Self::save_reports_tx`] on the SQLite report writer ([`direct`]), while this task
    /// holds the sqlx writer connection (so that no other write runs meanwhile); gives the
    /// items back with the outcome. An item is lost only if the writer thread is (the caller
    /// then hears that its group commit was abandoned).
    async fn save_reports_direct(
        &self,
        direct: &direct::Direct,
        items: Vec<PendingReport>,
    ) -> (Vec<PendingReport>, Result<(Vec<Change>, Vec<bool>)>) {
        let w = match self.writer().await {
            Ok(w) => w,
            Err(e) => return (items, Err(e)),
        };
        let faults = self.faults.clone();
        let job = move |session: &mut direct::Session| {
            let saved = session.save_reports(&faults, &batch_rows(&items));
            (items, saved)
        };
        self.on_direct(w, direct, job, |(_, saved)| saved.is_ok())
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(e)))
    }

    /// Reports (in order) in one transaction: the hosts' current verdicts updated, the reports
    /// of hosts that still exist (in the registration a report is for) inserted, a change
    /// recorded for each verdict that changed. Returns the changes to publish after the
    /// commit, and whether each report was stored.
    pub(super) async fn save_reports_tx(
        &self,
        rows: &[BatchRow<'_>],
    ) -> Result<(Vec<Change>, Vec<bool>)> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        let mut saved = Saved::new(rows.len());
        for round in verdict_rounds(rows) {
            for chunk in round.chunks(BATCH_MAX) {
                let batch: Vec<&BatchRow<'_>> = chunk.iter().map(|(_, row)| *row).collect();
                let updated = update_host_verdicts(&mut tx, self.backend, &batch).await?;
                saved.updated(chunk, updated);
            }
        }
        insert_saved(&mut tx, self.backend, &saved).await?;
        w.end.commit_with_changes(tx, &saved.changes).await?;
        Ok(saved.done())
    }

    /// One report in its own transaction; whether it was stored.
    pub(super) async fn save_report_one(
        &self,
        report: &ReportRow,
        registered: Option<i64>,
        reached: bool,
        counters: Option<AttestationUpdate>,
    ) -> Result<bool> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        // The batch's statements for a batch of one.
        let row = (report, registered, reached, counters.as_ref());
        let updated = update_host_verdicts(&mut tx, self.backend, &[&row]).await?;
        let mut saved = Saved::new(1);
        saved.updated(&[(0, &row)], updated);
        if saved.kept.is_empty() {
            // The host was deleted (or registered again) while it was being attested: keep no
            // orphan report.
            w.end.rollback(tx).await?;
            return Ok(false);
        }
        insert_saved(&mut tx, self.backend, &saved).await?;
        w.end.commit_with_changes(tx, &saved.changes).await?;
        for (change, _) in saved.changes {
            self.publish(change);
        }
        Ok(true)
    }

    /// Reports of a host (or of all hosts), newest first. A host's are its chain (migration
    /// 13), followed from its row's latest report, at most `limit` links, and those of its
    /// stored before the chains (`reports_before_chains`).
    pub async fn reports(&self, host_name: Option<&str>, limit: i64) -> Result<Vec<ReportRow>> {
        let rows = match host_name {
            Some(h) => {
                sqlx::query(
                    "WITH RECURSIVE chain (id, n) AS (\
                     SELECT last_report, 1 FROM hosts WHERE name = $1 AND last_report IS NOT NULL \
                     UNION ALL SELECT r.previous, c.n + 1 FROM chain c JOIN reports r ON r.id = c.id \
                     WHERE r.previous <> '' AND c.n < $2) \
                     SELECT r.* FROM chain c JOIN reports r ON r.id = c.id \
                     UNION SELECT * FROM (SELECT * FROM reports WHERE host_name = $1 AND previous = '' \
                     ORDER BY created DESC LIMIT $2) AS before_chains \
                     ORDER BY created DESC, id DESC LIMIT $2",
                )
                .bind(h)
                .bind(limit)
                .fetch_all(&mut *self.reader.get().await?)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM reports ORDER BY created DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&mut *self.reader.get().await?)
                    .await?
            }
        };
        rows.iter().map(report_from_row).collect()
    }

    /// The latest report (the head of its chain) of up to `limit` registered hosts whose names
    /// sort after `after` (`""`: from the first), by host name, in one query; hosts without a
    /// report are absent, so fewer than `limit` rows means no host after them has one.
    /// `GET /mtwilson/v2/reports?latest=true` pages through 100,000 hosts with it.
    pub async fn latest_reports_after(&self, after: &str, limit: i64) -> Result<Vec<ReportRow>> {
        let rows = sqlx::query(
            "SELECT r.* FROM hosts h JOIN reports r ON r.id = h.last_report \
             WHERE h.name > $1 ORDER BY h.name LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(report_from_row).collect()
    }

    /// Every host's latest report id (the head of its chain); hosts without a report are
    /// absent.
    pub async fn latest_report_ids(&self) -> Result<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT name, last_report AS report_id FROM hosts WHERE last_report IS NOT NULL",
        )
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get("name")?;
            if let Some(id) = row.try_get::<Option<String>, _>("report_id")? {
                out.insert(name, id);
            }
        }
        Ok(out)
    }
}

/// Writes what a group commit keeps beside the host rows' verdicts: its reports, and the quoted
/// PCR values that changed.
async fn insert_saved(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    saved: &Saved<'_>,
) -> Result<()> {
    execute_batches(tx, backend, &REPORTS_INSERT, &saved.kept, report_params).await?;
    execute_batches(tx, backend, &HOST_PCRS_UPSERT, &saved.pcrs, pcrs_params).await
}

/// Runs the batch statement `sql` over `rows`, at most [`BATCH_MAX`] a statement in its
/// shapes ([`batch_shape`]), each row's values bound from `params`.
async fn execute_batches<'a, T, const N: usize>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    sql: &'static ShapedSql,
    rows: &'a [T],
    params: impl Fn(&'a T) -> [Param<'a>; N],
) -> Result<()> {
    for chunk in rows.chunks(BATCH_MAX) {
        let shape = batch_shape(chunk.len());
        bind_all(
            sql.query(backend, shape),
            shaped(chunk.iter().map(&params), shape),
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
