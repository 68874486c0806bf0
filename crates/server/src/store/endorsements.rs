//! Admin endorsements of EKs (`endorsements`).

use super::*;

impl Store {
    /// Adds an endorsement.
    pub async fn add_endorsement(&self, e: &Endorsement) -> Result<()> {
        sqlx::query(
            "INSERT INTO endorsements (id, hardware_uuid, ek_sha256, ek_public, certificate, comment, revoked, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&e.id)
        .bind(&e.hardware_uuid)
        .bind(&e.ek_sha256)
        .bind(&e.ek_public)
        .bind(&e.certificate)
        .bind(&e.comment)
        .bind(i64::from(e.revoked))
        .bind(e.created)
        .execute(&mut *self.pool.get().await?)
        .await?;
        Ok(())
    }

    /// Endorsements, optionally only those of one hardware UUID.
    pub async fn endorsements(&self, hardware_uuid: Option<&str>) -> Result<Vec<Endorsement>> {
        let rows = match hardware_uuid {
            Some(u) => {
                sqlx::query("SELECT * FROM endorsements WHERE hardware_uuid = $1 ORDER BY created")
                    .bind(u)
                    .fetch_all(&mut *self.reader.get().await?)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM endorsements ORDER BY created")
                    .fetch_all(&mut *self.reader.get().await?)
                    .await?
            }
        };
        rows.iter().map(endorsement_from_row).collect()
    }

    /// Active (not revoked) endorsements of an EK.
    pub async fn active_endorsements_for(&self, ek_sha256: &str) -> Result<Vec<Endorsement>> {
        let rows = sqlx::query("SELECT * FROM endorsements WHERE ek_sha256 = $1 AND revoked = 0")
            .bind(ek_sha256)
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(endorsement_from_row).collect()
    }

    /// Revokes an endorsement; false when there is none with that id.
    pub async fn revoke_endorsement(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE endorsements SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
