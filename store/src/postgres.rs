//! The store for several machines: PostgreSQL. Same schema meaning as
//! SQLite (`../migrations/postgres`), same queries and the same Rust around
//! them (`sql_store.rs`); only connecting, migrating and the deploy lock are
//! its own.
//!
//! What makes the shared queries mean the same here as on SQLite, which has
//! one writer at a time:
//! - every transaction runs at READ COMMITTED (set per connection, whatever
//!   the server's default): an `INSERT ... ON CONFLICT DO NOTHING` that
//!   meets a concurrent insert waits for it, and the next statement of the
//!   same transaction sees the winner's row (`record_completion` returns it);
//! - single-statement claims (`claim_redrive`, `claim_tick`, the
//!   `ON CONFLICT` inserts) are atomic on their own; PostgreSQL re-checks a
//!   row's `WHERE` after waiting for a concurrent update;
//! - the one read-then-write (`deploy_version` numbers the next version)
//!   takes a transaction-scoped advisory lock on the function's name first;
//! - text columns are `COLLATE "C"`, so `ORDER BY` is byte order as SQLite's.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};

use crate::*;

pub struct PgStore {
    pool: PgPool,
    commits: crate::group_commit::GroupCommit,
    writer: crate::sql_store::Writer<sqlx::Postgres>,
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db`, with
    /// libpq-style parameters sqlx understands, e.g. `?application_name=x`)
    /// and run the migrations. Several processes may start at once: sqlx holds
    /// a Postgres advisory lock (`pg_advisory_lock`, keyed by the database
    /// name) while migrating, so they run once.
    pub async fn open(url: &str) -> Result<PgStore> {
        let mut opts = PgConnectOptions::from_str(url)?.options([("default_transaction_isolation", "read committed")]);
        if matches!(
            opts.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) {
            // sqlx would fail each connection with a TLS error, which reads
            // as retryable; it is a configuration that can never work.
            return Err(StoreError::Invalid(
                "this build of stoke has no TLS for PostgreSQL, so sslmode=require/verify-* cannot work: \
                 use a private network or a TLS tunnel"
                    .into(),
            ));
        }
        if opts.get_application_name().is_none() {
            opts = opts.application_name("stoke");
        }
        let (host, port) = (opts.get_host().to_string(), opts.get_port());
        let database = opts.get_database().unwrap_or_default().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        tracing::info!(backend = "postgres", %host, port, %database, "store open");
        let writer = crate::sql_store::Writer::default();
        Ok(PgStore {
            commits: group_commit(&pool, &writer),
            writer,
            pool,
        })
    }
}

crate::sql_store::sql_store!(
    PgStore,
    sqlx::Postgres,
    PgRow,
    sqlx::postgres::PgArguments,
    deploy_lock = Some(crate::queries::PG_DEPLOY_LOCK),
    placeholders = crate::queries::Placeholders::Numbered
);
crate::sql_catalog::sql_catalog!(PgStore, PgRow);
