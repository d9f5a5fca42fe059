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
    writer: crate::sql_store::Writer<sqlx::Sqlite>,
    checkpointer: tokio::task::JoinHandle<()>,
}

/// How often the WAL is copied back into the database file.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// Checkpoint the WAL in the background, off every writer's path. SQLite's
/// own automatic checkpoint runs inside the commit that crosses 1000 WAL
/// pages: that commit copies the pages back and syncs the file, and every
/// completion waiting on it took ~5 ms instead of ~0.3 ms (the p99 of a
/// sync invoke). A PASSIVE checkpoint takes no writer's lock; a failed one
/// is tried again at the next tick. An idle store is not checkpointed: a
/// look at the WAL file's size and mtime (one `statx`) says nothing was
/// written since the last checkpoint (which does not write the WAL).
fn checkpointer(pool: SqlitePool, wal: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpointed = None;
        loop {
            tick.tick().await;
            let seen = std::fs::metadata(&wal).and_then(|m| Ok((m.len(), m.modified()?))).ok();
            if seen.is_some() && seen == checkpointed {
                continue;
            }
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                Ok(_) => checkpointed = seen,
                Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; trying again"),
            }
        }
    })
}

impl SqliteStore {
    /// Open (creating if needed) the database file and run migrations.
    ///
    /// WAL with `synchronous = NORMAL`: a committed transaction survives any
    /// process being killed; only an OS crash or power loss can drop the
    /// last commits. Use PostgreSQL where that matters.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::unavailable(AtPath::new(dir, e)))?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Checkpoints run in the background instead (`checkpointer`).
            .pragma("wal_autocheckpoint", "0");
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
            .map_err(|e| StoreError::unavailable(AtPath::new(&lock_path, e)))?;
        let lock = tokio::task::spawn_blocking(move || {
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e)
        })
        .await
        .map_err(|e| StoreError::unavailable(format!("migration lock: {e}")))?
        .map_err(|e| StoreError::unavailable(format!("migration lock {}", AtPath::new(&lock_path, e.into()))))?;
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        let migrated = sqlx::migrate!("../migrations/sqlite").run(&pool).await;
        drop(lock);
        migrated?;
        tracing::info!(backend = "sqlite", path = %path.display(), "store open");
        let writer = crate::sql_store::Writer::default();
        Ok(SqliteStore {
            commits: group_commit(&pool, &writer),
            writer,
            checkpointer: checkpointer(pool.clone(), wal_path(path)),
            pool,
        })
    }
}

/// SQLite's write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

// No deploy lock: SQLite has one writer at a time, and a deploy that read
// before another one committed fails with SQLITE_BUSY_SNAPSHOT (retryable).
crate::sql_store::sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    SqliteRow,
    sqlx::sqlite::SqliteArguments,
    deploy_lock = None,
    placeholders = crate::queries::Placeholders::Anonymous
);
crate::sql_catalog::sql_catalog!(SqliteStore, SqliteRow);

/// A file-system error and the path it happened at.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
struct AtPath {
    path: std::path::PathBuf,
    cause: std::io::Error,
}

impl AtPath {
    fn new(path: &Path, cause: std::io::Error) -> AtPath {
        AtPath {
            path: path.to_path_buf(),
            cause,
        }
    }
}
