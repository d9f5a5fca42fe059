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

mod group_commit;
mod postgres;
mod queries;
mod sql_catalog;
mod sql_store;
mod sqlite;
pub use sqlite::CHECKPOINT_EVERY as SQLITE_CHECKPOINT_EVERY;
#[cfg(feature = "testing")]
pub mod test_certs;
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
    Unavailable(Cause),
    /// A constraint or data problem that retrying will not fix.
    #[error("store error: {0}")]
    Invalid(Cause),
    #[error("unsupported store url {0:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// Unavailable because of `cause` (an error, kept whole, or a message).
    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Unavailable(Cause(cause.into()))
    }

    /// Invalid because of `cause` (an error, kept whole, or a message).
    pub fn invalid(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Invalid(Cause(cause.into()))
    }
}

/// What is underneath a [`StoreError`]: the database's, the file system's or
/// the migrator's own error, kept whole (typed, with its own chain: see
/// [`Cause::get`]), or a message where there is none. Its message is part
/// of the store error's, so it is not also that error's `source()` (a chain
/// printer would show it twice).
#[derive(Debug)]
pub struct Cause(Box<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// The error underneath, to downcast (`sqlx::Error`, `std::io::Error`).
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
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
            | sqlx::Error::Tls(_) => StoreError::unavailable(e),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| transient_db_error(&c)) => {
                StoreError::unavailable(e)
            }
            _ => StoreError::invalid(e),
        }
    }
}

/// Database error codes that mean "not now" rather than "never": retrying
/// the same statement later can succeed.
///
/// SQLite (numeric result codes): `SQLITE_BUSY` (5), `SQLITE_LOCKED` (6) and
/// their extended forms `SQLITE_BUSY_SNAPSHOT` (517), `SQLITE_LOCKED_SHAREDCACHE`
/// (262). PostgreSQL (SQLSTATE, five characters, so the two never collide):
/// class `08` (connection exceptions), `57P` (the server is shutting down,
/// starting up or restarting), `40001`/`40P01` (serialization failure,
/// deadlock: PostgreSQL's own advice is to retry), `55P03` (lock not
/// available), `57014` (statement cancelled, e.g. a timeout), `53300` (too
/// many connections) and `25006` (a read-only transaction: a standby that
/// has not been promoted yet, or a connection left on a demoted primary).
fn transient_db_error(code: &str) -> bool {
    matches!(code, "5" | "6" | "517" | "262")
        || code.starts_with("08")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "55P03" | "57014" | "53300" | "25006")
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        match e {
            // The database went away or was busy while migrating: retryable.
            MigrateError::Execute(e) => StoreError::from(e),
            MigrateError::ExecuteMigration(e, version) => match StoreError::from(e) {
                StoreError::Invalid(cause) => StoreError::invalid(Migration { version, cause }),
                other => other,
            },
            other => StoreError::invalid(Migrations(other)),
        }
    }
}

/// A migration that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("migration {version}: {cause}")]
struct Migration {
    version: i64,
    cause: Cause,
}

/// The migrator itself failed (not one migration's statements).
#[derive(Debug, thiserror::Error)]
#[error("migrations: {0}")]
struct Migrations(sqlx::migrate::MigrateError);

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store, split by what each part of the platform may do with it; one
/// implementation (`sql_store.rs`, `sql_catalog.rs`) serves them all, and
/// each role is handed only the view it needs: the edge ([`Edge`]: the
/// broker, the `Invoker`) and the admin API ([`Admin`]) cannot write
/// attempts or completions; only delivery holds the whole [`Store`].
pub trait Store: Admin + Delivery {}
impl<T: Admin + Delivery> Store for T {}

/// What the edge may do: read the catalog and tokens, record an accepted
/// event, read what became of invocations, and keep the cron ledger.
pub trait Edge: Catalog + Tokens + Accepting + Invocations + Schedules {}
impl<T: Catalog + Tokens + Accepting + Invocations + Schedules> Edge for T {}

/// What the admin API may do: the edge's, and usage.
pub trait Admin: Edge + Usage {}
impl<T: Edge + Usage> Admin for T {}

/// Functions and their versions: packages by digest, versions and their
/// configuration, the current version, aliases, ownership by namespace, and
/// cluster-wide settings. The admin API writes it; every role reads it.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Store a package (no-op when the digest is already stored).
    async fn put_package(&self, digest: &str, data: &[u8]) -> Result<()>;
    async fn get_package(&self, digest: &str) -> Result<Option<Vec<u8>>>;
    /// The size of a stored package (or blob), without reading it.
    async fn package_size(&self, digest: &str) -> Result<Option<u64>>;
    /// Record a deploy. If the function's current version has the same
    /// digest and manifest, nothing changes and `Unchanged` is returned.
    async fn deploy_version(&self, new: NewVersion<'_>) -> Result<DeployOutcome>;
    /// Change the current version's environment or secrets: records a new
    /// version with the same package and manifest (`Unchanged` if the edit
    /// changes nothing, `NotDeployed`, or `InvalidConfig` with nothing
    /// recorded).
    async fn edit_config(&self, function: &str, edit: &stoke_core::ConfigEdit, now_ms: i64) -> Result<DeployOutcome>;
    async fn current_version(&self, function: &str) -> Result<Option<FunctionVersion>>;
    async fn get_version(&self, function: &str, version: u32) -> Result<Option<FunctionVersion>>;
    async fn list_functions(&self) -> Result<Vec<FunctionVersion>>;
    /// The namespace that owns `function` (also once it is deleted).
    async fn function_namespace(&self, function: &str) -> Result<Option<String>>;
    /// Every version ever deployed, oldest first.
    async fn list_versions(&self, function: &str) -> Result<Vec<FunctionVersion>>;
    /// Make an existing version current (rollback, roll forward); false if
    /// the function has no such version.
    async fn set_current_version(&self, function: &str, version: u32, now_ms: i64) -> Result<bool>;
    /// Stop serving `function`: it has no current version until the next
    /// deploy. Its versions, invocations and usage are kept, and its name
    /// stays with its namespace. False if it was not deployed.
    async fn delete_function(&self, function: &str, now_ms: i64) -> Result<bool>;
    /// Point `alias` at `version` (creating or moving it); false if the
    /// function has no such version.
    async fn set_alias(&self, function: &str, alias: &str, version: u32, now_ms: i64) -> Result<bool>;
    /// A function's aliases by name.
    async fn aliases(&self, function: &str) -> Result<Vec<Alias>>;
    /// False if there was no such alias.
    async fn delete_alias(&self, function: &str, alias: &str) -> Result<bool>;
    /// The cluster-wide setting `name`, if one is recorded.
    async fn setting(&self, name: &str) -> Result<Option<String>>;
    /// A cluster-wide setting: record `value` under `name` unless one is
    /// there already; the value stored (this one, or the earlier one).
    async fn claim_setting(&self, name: &str, value: &str, now_ms: i64) -> Result<String>;
    /// Record `value` under `name`, replacing any earlier one.
    async fn replace_setting(&self, name: &str, value: &str, now_ms: i64) -> Result<()>;
    /// Record the credentials for the OCI registry `c.host` (replacing
    /// any earlier ones). The password is stored as given: the caller
    /// seals it.
    async fn put_registry_credential(&self, c: &RegistryCredential) -> Result<()>;
    /// The credentials recorded for registry `host`, if any.
    async fn registry_credential(&self, host: &str) -> Result<Option<RegistryCredential>>;
    /// Every registry's credentials, by host.
    async fn registry_credentials(&self) -> Result<Vec<RegistryCredential>>;
    /// False if there were none for `host`.
    async fn delete_registry_credential(&self, host: &str) -> Result<bool>;
}

/// API tokens, stored as hashes of their secrets.
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    async fn create_token(&self, t: &NewToken<'_>) -> Result<()>;
    /// The live (not revoked) token with this secret hash.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// The live token with this id and its SigV4 secret access key (None
    /// for a token made before those were stored).
    async fn sigv4_secret(&self, id: &str) -> Result<Option<(TokenRecord, Option<String>)>>;
    /// Every token, revoked ones too, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// False if there is no such live token.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool>;
}

/// What the edge writes when it accepts an event: its record, with the
/// payload's digest, before the event is published.
#[async_trait]
pub trait Accepting: Send + Sync + 'static {
    /// Note an accepted event. The first record of an invocation stays:
    /// returns false (writing nothing) if there already was one.
    async fn record_accepted(&self, accepted: &Accepted) -> Result<bool>;
    async fn accepted(&self, invocation_id: &str) -> Result<Option<Accepted>>;
}

/// What became of invocations, for callers and the admin API: completions
/// by key, one invocation's view, its metered attempts, listings, dead
/// letters, and claiming a dead letter for redrive.
#[async_trait]
pub trait Invocations: Send + Sync + 'static {
    async fn completion_by_key(&self, function: &str, idempotency_key: &str) -> Result<Option<Completion>>;
    /// Everything known about one invocation id, or None if never seen.
    async fn invocation(&self, invocation_id: &str) -> Result<Option<InvocationView>>;
    /// Every metered attempt of an invocation, in order.
    async fn attempts(&self, invocation_id: &str) -> Result<Vec<AttemptRecord>>;
    /// The highest attempt number metered for an invocation (0 if none);
    /// the next attempt is numbered one above it.
    async fn last_attempt(&self, invocation_id: &str) -> Result<u32>;
    /// One page of invocations, newest first (created time, then id), each
    /// listed once with its current status: a completion wins over a dead
    /// letter of the same id (a redrive that completed), a live dead letter
    /// over the accepted record, and a redriven one not completed yet is
    /// queued. Only keyed and async events are recorded before they finish,
    /// so other queued ones do not show until they end.
    async fn list_invocations(&self, filter: &InvocationFilter) -> Result<InvocationPage>;
    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    async fn dead_letter(&self, invocation_id: &str) -> Result<Option<DeadLetter>>;
    /// Claim a dead letter for redrive at `now_ms`; false if it was already
    /// redriven (by a concurrent caller too).
    async fn claim_redrive(&self, invocation_id: &str, now_ms: i64) -> Result<bool>;
    /// Undo a claim made at `claimed_ms` (the redrive could not be published).
    async fn release_redrive(&self, invocation_id: &str, claimed_ms: i64) -> Result<()>;
}

/// What only delivery (the dispatcher) writes: metered attempts, the one
/// completion per key, batches, fenced late results and dead letters.
/// Implementations must make [`Delivery::record_completion`] atomic: the
/// attempt row and the completion land together, and a second completion
/// for the same key is refused by the database, returning the first.
#[async_trait]
pub trait Delivery: Send + Sync + 'static {
    /// An attempt of this accepted event has been under way since `at_ms`
    /// (the first mark stays): until it ends, its view says `running`, not
    /// `queued`. A no-op for an event never recorded by
    /// [`Accepting::record_accepted`].
    async fn mark_running(&self, invocation_id: &str, at_ms: i64) -> Result<()>;
    /// Meter an attempt that did not end the invocation, marking it running
    /// as [`Delivery::mark_running`] does (idempotent per
    /// invocation, attempt number and epoch).
    async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<()>;
    /// Meter the final attempt and write the completion, atomically.
    async fn record_completion(&self, attempt: &AttemptRecord, completion: &Completion) -> Result<CompletionWrite>;
    /// Meter one batch invocation and write the completions of the items it
    /// settled, atomically; an item whose key already completed keeps its
    /// first record. Returns how many completions were new.
    async fn record_batch(&self, attempt: &AttemptRecord, completions: &[Completion]) -> Result<usize>;
    /// Record the result of a superseded attempt that came back late (its
    /// outcome `fenced`): it takes the place of the `Stoke.WorkerLost` row
    /// written for that epoch, or is added when there is none. A row with
    /// that epoch's real outcome is left as it is.
    async fn record_fenced(&self, attempt: &AttemptRecord) -> Result<()>;
    /// Meter the final attempt (if any) and dead-letter the event,
    /// atomically. Dead-lettering an invocation again replaces its row.
    async fn record_dead_letter(&self, attempt: Option<&AttemptRecord>, dead: &DeadLetter) -> Result<()>;
}

/// Cron: the tick ledger (each tick's fate decided once) and the schedules
/// made through the admin API.
#[async_trait]
pub trait Schedules: Send + Sync + 'static {
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

/// Metered usage, summed for billing.
#[async_trait]
pub trait Usage: Send + Sync + 'static {
    async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>>;
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
    Err(StoreError::UnsupportedUrl(redact_url(url)))
}

/// A URL fit for logs and banners: a password in the authority
/// (`user:secret@host`) or in a `password=` query parameter becomes `***`.
/// A comma-separated list (a NATS cluster) is redacted URL by URL.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The version a qualified name runs: `name` the current one, `name:7`
/// version 7, `name:live` the one alias `live` points at. None when the
/// function is not deployed (a deleted one too) or has no such version or
/// alias.
pub async fn resolve_version(store: &dyn Catalog, qualified: &str) -> Result<Option<FunctionVersion>> {
    use stoke_core::naming::{Qualifier, split_qualified};
    let (name, qualifier) = split_qualified(qualified);
    let Some(current) = store.current_version(name).await? else {
        return Ok(None);
    };
    let version = match qualifier {
        Qualifier::Current => return Ok(Some(current)),
        Qualifier::Version(v) => v,
        Qualifier::Alias(alias) => match store.aliases(name).await?.into_iter().find(|a| a.name == alias) {
            Some(a) => a.version,
            None => return Ok(None),
        },
    };
    store.get_version(name, version).await
}

/// Billed milliseconds for a duration: rounded up to 1 ms, at least 1.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn transient_database_errors_are_told_apart_from_permanent_ones() {
        use super::transient_db_error as transient;
        // SQLite: busy and locked, plain and extended.
        for code in ["5", "6", "517", "262"] {
            assert!(transient(code), "{code}");
        }
        // PostgreSQL: connection lost, shutdown, serialization, deadlock.
        for code in ["08006", "08001", "57P01", "57P03", "40001", "40P01", "55P03", "53300"] {
            assert!(transient(code), "{code}");
        }
        // Constraint and data errors, SQLite and PostgreSQL: retrying cannot help.
        for code in [
            "19", "1555", "2067", "787", "23505", "23503", "22021", "42P01", "28P01", "3D000",
        ] {
            assert!(!transient(code), "{code}");
        }
    }

    #[test]
    fn passwords_never_reach_a_log_line() {
        use super::redact_url as r;
        assert_eq!(
            r("postgres://stoke:s3cr%40t@db:5432/stoke"),
            "postgres://stoke:***@db:5432/stoke"
        );
        assert_eq!(r("postgres://stoke@db/stoke"), "postgres://stoke@db/stoke");
        assert_eq!(
            r("postgresql://db/stoke?user=u&password=p&sslmode=disable"),
            "postgresql://db/stoke?user=u&password=***&sslmode=disable"
        );
        assert_eq!(
            r("sqlite:///var/lib/stoke/a@b:c.db"),
            "sqlite:///var/lib/stoke/a@b:c.db"
        );
    }

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        assert_eq!(super::billed_ms(0), 1);
        assert_eq!(super::billed_ms(1), 1);
        assert_eq!(super::billed_ms(1000), 1);
        assert_eq!(super::billed_ms(1001), 2);
        assert_eq!(super::billed_ms(2_500_000), 2500);
    }
}
