//! Accounts of the API (`users`).

use super::*;

impl Store {
    /// Creates or replaces a user.
    pub async fn put_user(
        &self,
        name: &str,
        password_hash: &str,
        role: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (name, password_hash, role, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role)
        .bind(now)
        .execute(&mut *self.pool.get().await?)
        .await?;
        Ok(())
    }

    /// Every user with when it was created or last changed, by name.
    pub async fn users(&self) -> Result<Vec<(UserRow, i64)>> {
        let rows =
            sqlx::query("SELECT name, password_hash, role, created FROM users ORDER BY name")
                .fetch_all(&mut *self.reader.get().await?)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserRow {
                        name: r.try_get("name")?,
                        password_hash: r.try_get("password_hash")?,
                        role: r.try_get("role")?,
                    },
                    r.try_get("created")?,
                ))
            })
            .collect()
    }

    /// Creates a user; false when the name is taken.
    pub async fn create_user(&self, u: &UserRow, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO users (name, password_hash, role, created) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(&u.role)
        .bind(now)
        .execute(&mut *self.pool.get().await?)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Replaces a user's password hash; the user, or `None` when there is none.
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<UserRow>> {
        let r = sqlx::query("UPDATE users SET password_hash = $1, created = $2 WHERE name = $3")
            .bind(password_hash)
            .bind(now)
            .bind(name)
            .execute(&mut *self.pool.get().await?)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.pool.get().await?)
            .await?;
        row.map(|r| {
            Ok(UserRow {
                name: r.try_get("name")?,
                password_hash: r.try_get("password_hash")?,
                role: r.try_get("role")?,
            })
        })
        .transpose()
    }

    /// Deletes a user, never the last admin (checked in the same transaction).
    pub async fn delete_user(&self, name: &str) -> Result<UserDeleted> {
        let mut w = self.writer().await?;
        let mut tx = begin(&mut w.conn, self.backend).await?;
        if self.backend == Backend::Postgres {
            // Two admins deleting each other at once: one waits for the other.
            sqlx::query("SELECT pg_advisory_xact_lock(7365243)")
                .execute(&mut *tx)
                .await?;
        }
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match role.as_deref() {
            None => UserDeleted::NotFound,
            Some("admin") => {
                let admins: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
                        .fetch_one(&mut *tx)
                        .await?;
                if admins <= 1 {
                    UserDeleted::LastAdmin
                } else {
                    UserDeleted::Deleted
                }
            }
            Some(_) => UserDeleted::Deleted,
        };
        if outcome != UserDeleted::Deleted {
            w.end.rollback(tx).await?;
            return Ok(outcome);
        }
        sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        w.end.commit(tx).await?;
        Ok(UserDeleted::Deleted)
    }

    /// A user by name.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.reader.get().await?)
            .await?;
        row.map(|r| {
            Ok(UserRow {
                name: r.try_get("name")?,
                password_hash: r.try_get("password_hash")?,
                role: r.try_get("role")?,
            })
        })
        .transpose()
    }
}
