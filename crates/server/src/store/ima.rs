//! Each host's incremental IMA appraisal state (table `ima_state`, schema version 6): how many
//! entries of its IMA log are appraised, and for each RUNTIME flavor the appraisal state
//! (running PCR 10 per bank, failures so far), for the boot (TPM resetCount / restartCount)
//! and the AK they were made with. [`crate::runtime`] reads it before asking the agent for the
//! log from that entry on and writes it after appraising the new entries.

use sqlx::Row;

use super::{Result, Store};

/// One host's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaStateRow {
    /// Host.
    pub host_name: String,
    /// SHA-256 (hex) of the AK the state was verified with: a host registered again starts
    /// over.
    pub ak_sha256: String,
    /// The TPM resetCount of the boot the log belongs to.
    pub reset_count: i64,
    /// The TPM restartCount of that boot.
    pub restart_count: i64,
    /// Entries appraised (where the next request starts).
    pub entries: i64,
    /// JSON: flavor id → `RuntimeAppraisal`.
    pub state: String,
    /// When written (Unix ms).
    pub updated: i64,
}

impl Store {
    /// The IMA appraisal state of `host`, if any.
    pub async fn ima_state(&self, host: &str) -> Result<Option<ImaStateRow>> {
        let row = sqlx::query(
            "SELECT host_name, ak_sha256, reset_count, restart_count, entries, state, updated \
             FROM ima_state WHERE host_name = $1",
        )
        .bind(host)
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        row.map(|r| {
            Ok(ImaStateRow {
                host_name: r.try_get("host_name")?,
                ak_sha256: r.try_get("ak_sha256")?,
                reset_count: r.try_get("reset_count")?,
                restart_count: r.try_get("restart_count")?,
                entries: r.try_get("entries")?,
                state: r.try_get("state")?,
                updated: r.try_get("updated")?,
            })
        })
        .transpose()
    }

    /// Writes the IMA appraisal state of a host, if the stored one is still the one read
    /// before (`previous`: its `updated`, or `None` when there was none): two attestations of
    /// one host (two replicas) never overwrite each other's newer state. Returns whether it
    /// was written.
    pub async fn put_ima_state(&self, s: &ImaStateRow, previous: Option<i64>) -> Result<bool> {
        let q = match previous {
            None => {
                "INSERT INTO ima_state (host_name, ak_sha256, reset_count, restart_count, entries, \
                 state, updated) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (host_name) DO NOTHING"
            }
            Some(_) => {
                "UPDATE ima_state SET ak_sha256 = $2, reset_count = $3, restart_count = $4, \
                 entries = $5, state = $6, updated = $7 WHERE host_name = $1 AND updated = $8"
            }
        };
        let mut query = sqlx::query(q)
            .bind(&s.host_name)
            .bind(&s.ak_sha256)
            .bind(s.reset_count)
            .bind(s.restart_count)
            .bind(s.entries)
            .bind(&s.state)
            .bind(s.updated);
        if let Some(p) = previous {
            query = query.bind(p);
        }
        let r = query.execute(&mut *self.pool.get().await?).await?;
        Ok(r.rows_affected() == 1)
    }

    /// Forgets the IMA appraisal state of a host; false when it had none.
    pub async fn delete_ima_state(&self, host: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM ima_state WHERE host_name = $1")
            .bind(host)
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
