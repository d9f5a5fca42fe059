//! stoke-store owns durable state: packages by digest, function versions,
//! accepted invocations, one metered row per attempt and exactly one
//! completion per idempotency key (a UNIQUE constraint, never
//! read-then-write), plus the usage sums billing reads.
//!
//! Everything sits behind the [`Store`] trait, implemented once over SQL
//! (`sql_store.rs`) for SQLite, the embedded default, and PostgreSQL, for
//! several machines; both pass the contract in `tests/contract.rs`. SQL
//! lives in `sql/*.sql`, schema in `../migrations`.
//! This crate must not know about NATS, gRPC or HTTP.

mod postgres;
mod sql_store;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

use async_trait::async_trait;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy; try again later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A constraint or data problem that retrying will not fix.
    #[error("store error: {0}")]
    Invalid(String),
    #[error("unsupported store url {0:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    UnsupportedUrl(String),
}

impl stoke_core::Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            // SQLITE_BUSY / SQLITE_LOCKED, and Postgres connection classes.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("5" | "6" | "517" | "262"))
                    || db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Invalid(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the platform needs from durable storage. Implementations must make
/// [`Store::record_completion`] atomic: the attempt row and the completion
/// land together, and a second completion for the same key is refused by the
/// database, returning the first.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Store a package (no-op when the digest is already stored).
    async fn put_package(&self, digest: &str, data: &[u8]) -> Result<()>;
    async fn get_package(&self, digest: &str) -> Result<Option<Vec<u8>>>;

    /// Record a deploy. If the function's current version has the same
    /// digest and manifest, nothing changes and `Unchanged` is returned.
    async fn deploy_version(&self, new: NewVersion<'_>) -> Result<DeployOutcome>;
    async fn current_version(&self, function: &str) -> Result<Option<FunctionVersion>>;
    async fn get_version(&self, function: &str, version: u32) -> Result<Option<FunctionVersion>>;
    async fn list_functions(&self) -> Result<Vec<FunctionVersion>>;

    /// Note an accepted event. The first record of an invocation stays:
    /// returns false (writing nothing) if there already was one.
    async fn record_accepted(&self, accepted: &Accepted) -> Result<bool>;
    async fn accepted(&self, invocation_id: &str) -> Result<Option<Accepted>>;
    /// Meter an attempt that did not end the invocation (idempotent per
    /// invocation, attempt number and epoch).
    async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()>;
    /// Meter the final attempt and write the completion, atomically.
    async fn record_completion(&self, attempt: &AttemptRecord, completion: &Completion) -> Result<CompletionWrite>;
    /// Meter one batch invocation and write the completions of the items it
    /// settled, atomically; an item whose key already completed keeps its
    /// first record. Returns how many completions were new.
    async fn record_batch(&self, attempt: &AttemptRecord, completions: &[Completion]) -> Result<usize>;
    async fn completion_by_key(&self, function: &str, idempotency_key: &str) -> Result<Option<Completion>>;
    /// Everything known about one invocation id, or None if never seen.
    async fn invocation(&self, invocation_id: &str) -> Result<Option<InvocationView>>;
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>>;

    /// Every metered attempt of an invocation, in order.
    async fn attempts(&self, invocation_id: &str) -> Result<Vec<AttemptRecord>>;
    /// The highest attempt number metered for an invocation (0 if none);
    /// the next attempt is numbered one above it.
    async fn last_attempt(&self, invocation_id: &str) -> Result<u32>;
    /// Record the result of a superseded attempt that came back late (its
    /// outcome `fenced`): it takes the place of the `Stoke.WorkerLost` row
    /// written for that epoch, or is added when there is none. A row with
    /// that epoch's real outcome is left as it is.
    async fn record_fenced(&self, attempt: &AttemptRecord) -> Result<()>;

    /// Meter the final attempt (if any) and dead-letter the event,
    /// atomically. Dead-lettering an invocation again replaces its row.
    async fn record_dead_letter(&self, attempt: Option<&AttemptRecord>, dead: &DeadLetter) -> Result<()>;
    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    async fn dead_letter(&self, invocation_id: &str) -> Result<Option<DeadLetter>>;
    /// Claim a dead letter for redrive at `now_ms`; false if it was already
    /// redriven (by a concurrent caller too).
    async fn claim_redrive(&self, invocation_id: &str, now_ms: i64) -> Result<bool>;
    /// Undo a claim made at `claimed_ms` (the redrive could not be published).
    async fn release_redrive(&self, invocation_id: &str, claimed_ms: i64) -> Result<()>;

    /// Decide a cron tick's fate: None if this call recorded it, else the
    /// row already in the ledger (another broker's decision, or an earlier run's).
    async fn claim_tick(&self, tick: &CronTick) -> Result<Option<CronTick>>;
    /// The newest ledger row of a schedule (only ones that started an
    /// invocation when `fired_only`).
    async fn last_tick(&self, schedule_id: &str, fired_only: bool) -> Result<Option<CronTick>>;
    /// Newest first, at most `limit` (0 = 100).
    async fn cron_ticks(&self, function: Option<&str>, limit: u32) -> Result<Vec<CronTick>>;

    /// Add an admin schedule; false if the name is taken.
    async fn create_schedule(&self, s: &ScheduleDef) -> Result<bool>;
    async fn schedules(&self) -> Result<Vec<ScheduleDef>>;
    /// Pause or resume; false if there is no such schedule.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now_ms: i64) -> Result<bool>;
    /// False if there is no such schedule.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
}

/// Open a store from a URL: `sqlite://PATH` (created if missing) or
/// `postgres://...` (`postgresql://` too). Runs migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(PgStore::open(url).await?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    Err(StoreError::UnsupportedUrl(url.to_string()))
}

/// Billed milliseconds for a duration: rounded up to 1 ms, at least 1.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(super::billed_ms(0), 1);
        assert_eq!(super::billed_ms(1), 1);
        assert_eq!(super::billed_ms(1000), 1);
        assert_eq!(super::billed_ms(1001), 2);
        assert_eq!(super::billed_ms(2_500_000), 2500);
    }
}
