//! The embedded default store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::*;

pub struct SqliteStore {
    pool: SqlitePool,
    commits: crate::group_commit::GroupCommit,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and run migrations.
    ///
    /// WAL with `synchronous = NORMAL`: a committed transaction survives any
    /// process being killed; only an OS crash or power loss can drop the
    /// last commits. Use PostgreSQL where that matters.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        // Several processes (broker, dispatcher) may open one file at once:
        // creating it, switching it to WAL and migrating are not safe to race
        // (sqlx does not lock SQLite migrations), so hold an exclusive flock
        // on a sidecar file for all three.
        let lock_path = path.with_file_name(format!(
            "{}.migrate-lock",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", lock_path.display())))?;
        let lock = tokio::task::spawn_blocking(move || {
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("migration lock: {e}")))?
        .map_err(|e| StoreError::Unavailable(format!("migration lock {}: {e}", lock_path.display())))?;
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        let migrated = sqlx::migrate!("../migrations/sqlite").run(&pool).await;
        drop(lock);
        migrated?;
        tracing::info!(backend = "sqlite", path = %path.display(), "store open");
        Ok(SqliteStore {
            commits: group_commit(&pool),
            pool,
        })
    }
}

// No deploy lock: SQLite has one writer at a time, and a deploy that read
// before another one committed fails with SQLITE_BUSY_SNAPSHOT (retryable).
crate::sql_store::sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    SqliteRow,
    sqlx::sqlite::SqliteArguments,
    deploy_lock = None
);
crate::sql_catalog::sql_catalog!(SqliteStore, SqliteRow);
