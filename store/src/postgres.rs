//! The store for several machines: PostgreSQL. Same schema meaning as
//! SQLite (`../migrations/postgres`), same queries and the same Rust around
//! them (`sql_store.rs`); only connecting and migrating are its own.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

use crate::*;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host/db`) and run the
    /// migrations. Several processes may start at once: sqlx holds a
    /// Postgres advisory lock while migrating, so they run once.
    pub async fn open(url: &str) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
                other => StoreError::Invalid(format!("migrations: {other}")),
            })?;
        Ok(PgStore { pool })
    }
}

crate::sql_store::sql_store!(PgStore, sqlx::Postgres, PgRow, sqlx::postgres::PgArguments);
