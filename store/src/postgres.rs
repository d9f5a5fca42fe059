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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

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
        if opts.get_application_name().is_none() {
            opts = opts.application_name("stoke");
        }
        let (host, port) = (opts.get_host().to_string(), opts.get_port());
        let database = opts.get_database().unwrap_or_default().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| opening_error(e, &host, port))?;
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

/// A failure to open: at start, a TLS failure is the configuration's, and
/// says which part (later, the same errors stay retryable, as for a server
/// mid-restart). A rejected certificate comes as an I/O error of the
/// handshake; a server without TLS under `sslmode=require` as a TLS error.
fn opening_error(e: sqlx::Error, host: &str, port: u16) -> StoreError {
    if e.to_string().contains("invalid peer certificate") {
        StoreError::invalid(format!(
            "TLS to PostgreSQL at {host}:{port}: {e} (sslmode=verify-ca / verify-full check the server's \
             certificate against sslrootcert=PATH, a PEM file of the CA that signed it, and the system's roots)"
        ))
    } else if let sqlx::Error::Tls(_) = e {
        StoreError::invalid(format!(
            "TLS to PostgreSQL at {host}:{port}: {e} (does the server have ssl = on? sslmode=disable turns TLS off)"
        ))
    } else {
        e.into()
    }
}
