//! Server keys (`server_keys`): the report signing key and bookkeeping values.

use super::*;

impl Store {
    /// The value stored under `name`, inserting `make()` first when there is none (replicas
    /// racing here all end up with the first value written).
    pub async fn key_or_insert(&self, name: &str, make: impl FnOnce() -> String) -> Result<String> {
        if let Some(v) =
            sqlx::query_scalar::<_, String>("SELECT value FROM server_keys WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *self.pool.get().await?)
                .await?
        {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO server_keys (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .execute(&mut *self.pool.get().await?)
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *self.pool.get().await?)
            .await?;
        Ok(v)
    }
}
