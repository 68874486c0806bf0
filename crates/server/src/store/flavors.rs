//! Flavor rows (`flavors`); written only through `crate::flavors::Flavors`.

use super::*;

impl Store {
    /// Stores a flavor.
    pub async fn put_flavor(&self, f: &FlavorRow) -> Result<()> {
        sqlx::query("INSERT INTO flavors (id, body, created) VALUES ($1, $2, $3)")
            .bind(&f.id)
            .bind(&f.body)
            .bind(f.created)
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(())
    }

    /// Every flavor, oldest first.
    pub async fn flavors(&self) -> Result<Vec<FlavorRow>> {
        let rows = sqlx::query("SELECT id, body, created FROM flavors ORDER BY created, id")
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FlavorRow {
                    id: r.try_get("id")?,
                    body: r.try_get("body")?,
                    created: r.try_get("created")?,
                })
            })
            .collect()
    }

    /// Deletes a flavor; false when there is none.
    pub async fn delete_flavor(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM flavors WHERE id = $1")
            .bind(id)
            .execute(&mut *self.pool.get().await?)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
