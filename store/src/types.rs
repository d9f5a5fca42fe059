//! Records the store reads and writes.

/// A deployed function version.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionVersion {
    pub function: String,
    pub version: u32,
    pub digest: String,
    /// The stoke.toml text as deployed.
    pub manifest: String,
    pub package_size: u64,
    pub created_ms: i64,
    /// The namespace that owns the function.
    pub namespace: String,
    /// Environment and secrets set through the admin API (not the manifest's).
    pub config: stoke_core::FunctionConfig,
    /// The sha256 hex of the version's `ImageSpec` blob (a package blob)
    /// when it runs an OCI image; empty for a plain package.
    pub image: String,
}

pub struct NewVersion<'a> {
    pub function: &'a str,
    /// Who deploys it: the owner on a first deploy, checked on later ones.
    pub namespace: &'a str,
    pub digest: &'a str,
    pub manifest: &'a str,
    pub package_size: u64,
    /// The sha256 hex of its `ImageSpec` blob; empty for a plain package.
    pub image: &'a str,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeployOutcome {
    Created(FunctionVersion),
    Unchanged(FunctionVersion),
    /// Nothing recorded: the name belongs to this other namespace.
    OtherNamespace(String),
    /// Nothing recorded: a configuration change for a function that has no
    /// current version.
    NotDeployed,
    /// Nothing recorded: the configuration change is not allowed (why).
    InvalidConfig(stoke_core::fnconfig::EnvError),
}

/// A named pointer to one version of a function (`live` → 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub function: String,
    pub name: String,
    pub version: u32,
    pub updated_ms: i64,
}

/// Credentials for one OCI registry (by host, `name[:port]`), as stored:
/// the password as the caller gave it to the store (sealed by the admin
/// API when it has a secrets key).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryCredential {
    pub host: String,
    pub username: String,
    pub password: String,
    pub set_ms: i64,
}

/// An API token as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// A namespace, or `*` for all of them.
    pub namespace: String,
    pub role: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub role: &'a str,
    /// sha256 hex of the secret.
    pub hash: &'a str,
    /// The AWS secret access key that goes with it (SigV4's check needs it
    /// as it is).
    pub sigv4_secret: &'a str,
    pub now_ms: i64,
}

/// An event accepted at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub invocation_id: String,
    pub function: String,
    pub idempotency_key: String,
    pub trigger: String,
    pub created_ms: i64,
    /// sha256 hex of the payload (set when the caller chose the key).
    pub payload_digest: Option<String>,
}

/// How one attempt ended (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    FunctionError,
    Crashed,
    Timeout,
    InitError,
    PlatformError,
    /// The attempt's result came back after it was superseded (its worker
    /// was cut off past its lease); it was not used.
    Fenced,
}

impl AttemptOutcome {
    pub fn parse(s: &str) -> Option<AttemptOutcome> {
        use AttemptOutcome::*;
        [
            Success,
            FunctionError,
            Crashed,
            Timeout,
            InitError,
            PlatformError,
            Fenced,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::FunctionError => "function_error",
            AttemptOutcome::Crashed => "crashed",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::InitError => "init_error",
            AttemptOutcome::PlatformError => "platform_error",
            AttemptOutcome::Fenced => "fenced",
        }
    }
}

/// One metered attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub invocation_id: String,
    pub function: String,
    pub version: u32,
    pub idempotency_key: String,
    pub attempt: u32,
    pub epoch: u64,
    pub trigger: String,
    pub worker: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub duration_us: u64,
    pub memory_mb: u32,
    pub max_memory_used_kb: u64,
    pub cold: bool,
    pub init_duration_us: u64,
    pub outcome: AttemptOutcome,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

/// Final status of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    DeadLettered,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::Running,
            Status::Succeeded,
            Status::Failed,
            Status::TimedOut,
            Status::DeadLettered,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// An error as the function (or the platform) reported it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorRecord {
    pub error_type: String,
    pub error_message: String,
    /// The function's own error JSON, if it sent one.
    pub raw: Option<Vec<u8>>,
}

/// The one final record of an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub function: String,
    pub idempotency_key: String,
    pub invocation_id: String,
    pub version: u32,
    pub status: Status,
    pub result: Option<Vec<u8>>,
    pub error: Option<ErrorRecord>,
    pub attempts: u32,
    pub trigger: String,
    pub created_ms: i64,
    pub completed_ms: i64,
    /// sha256 hex of the payload that ran.
    pub payload_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompletionWrite {
    Recorded,
    /// The key already had a completion; here it is. Nothing was written.
    Duplicate(Box<Completion>),
}

/// What GET /invocations/{id} shows.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationView {
    pub invocation_id: String,
    pub function: String,
    pub idempotency_key: String,
    pub trigger: String,
    pub created_ms: i64,
    /// Not ended: `Running` once an attempt was seen under way
    /// ([`crate::Store::mark_running`]) or metered, else `Queued`.
    pub status: Status,
    pub attempts: u32,
    pub completion: Option<Completion>,
    /// Set when the invocation ended in the dead-letter store instead.
    pub dead_letter: Option<DeadLetter>,
}

#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub function: Option<String>,
    /// Only functions of this namespace.
    pub namespace: Option<String>,
    /// Window on the attempts' start time, `[since, until)`.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub group_by: UsageGroup,
    pub bucket: UsageBucket,
}

/// What one usage row sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageGroup {
    /// One row per function (and bucket).
    #[default]
    Function,
    /// One row per namespace (and bucket); `function` is empty.
    Namespace,
}

/// The period each usage row covers: everything in the window, or one UTC
/// hour or day. An attempt counts whole in the bucket it started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageBucket {
    #[default]
    None,
    Hour,
    Day,
}

impl UsageBucket {
    /// The bucket length in ms (0 = no buckets).
    pub fn len_ms(self) -> i64 {
        match self {
            UsageBucket::None => 0,
            UsageBucket::Hour => 3_600_000,
            UsageBucket::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// The function's namespace ('' for a function the catalog does not know).
    pub namespace: String,
    /// Empty when grouped by namespace.
    pub function: String,
    /// Start of the bucket (Unix ms, UTC); 0 without buckets.
    pub bucket_ms: i64,
    pub attempts: u64,
    pub errors: u64,
    pub cold_starts: u64,
    pub billed_ms: u64,
    /// Sum of billed_ms × memory_mb.
    pub mb_ms: u64,
}

impl UsageRow {
    /// GB-seconds as Lambda bills them (memory in GB = MB / 1024).
    pub fn gb_seconds(&self) -> f64 {
        self.mb_ms as f64 / 1024.0 / 1000.0
    }
}

/// Why an event was dead-lettered (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Every allowed attempt failed.
    MaxAttempts,
    /// The function reported an error it marked terminal.
    TerminalError,
    /// The event was older than the function's max event age.
    Expired,
    /// The version's stored manifest did not parse, delivery after delivery.
    BadManifest,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::TerminalError => "terminal_error",
            DeadReason::Expired => "expired",
            DeadReason::BadManifest => "bad_manifest",
        }
    }

    pub fn parse(s: &str) -> Option<DeadReason> {
        [
            DeadReason::MaxAttempts,
            DeadReason::TerminalError,
            DeadReason::Expired,
            DeadReason::BadManifest,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// An event that ended without a completion. Every attempt's error is in
/// the attempt rows of its invocation id (with the worker that ran it).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub invocation_id: String,
    pub function: String,
    pub version: u32,
    pub idempotency_key: String,
    pub trigger: String,
    pub payload: Vec<u8>,
    pub reason: DeadReason,
    pub attempts: u32,
    pub error: Option<ErrorRecord>,
    pub created_ms: i64,
    pub dead_ms: i64,
    /// When it was last sent back for another try (None: still dead).
    pub redriven_ms: Option<i64>,
    pub redrive_count: u32,
}

#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub function: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub include_redriven: bool,
    pub limit: u32,
}

/// What became of one cron tick (stored as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// On time; an invocation was published.
    Fired,
    /// Missed while no broker ran, fired later by the catch-up policy.
    CaughtUp,
    /// Not fired: the previous run was unfinished and overlap = "skip".
    SkippedOverlap,
    /// Missed while no broker ran, and the catch-up policy said not to fire it.
    MissedByPolicy,
}

impl TickOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TickOutcome::Fired => "fired",
            TickOutcome::CaughtUp => "caught_up",
            TickOutcome::SkippedOverlap => "skipped_overlap",
            TickOutcome::MissedByPolicy => "missed_by_policy",
        }
    }

    pub fn parse(s: &str) -> Option<TickOutcome> {
        use TickOutcome::*;
        [Fired, CaughtUp, SkippedOverlap, MissedByPolicy]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One row of the cron ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct CronTick {
    pub schedule_id: String,
    pub function: String,
    pub scheduled_ms: i64,
    pub outcome: TickOutcome,
    pub invocation_id: Option<String>,
    pub recorded_ms: i64,
}

/// A cron schedule created through the admin API. `overlap` and
/// `catch_up` are stored as their manifest spellings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    pub name: String,
    pub function: String,
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    pub catch_up: String,
    pub catch_up_window_secs: u32,
    /// Delivered to the function as the event's `data`.
    pub payload: Option<Vec<u8>>,
    pub paused: bool,
    pub created_ms: i64,
    /// Last create/pause/resume.
    pub updated_ms: i64,
}

/// Which invocations to list (newest first) and where a page starts.
#[derive(Debug, Clone, Default)]
pub struct InvocationFilter {
    pub function: Option<String>,
    /// Only functions of this namespace.
    pub namespace: Option<String>,
    /// Any status, as [`InvocationView`] tells it: `Queued` and `Running`
    /// together are the invocations not ended yet.
    pub status: Option<Status>,
    /// Window on the created time, `[since, until)`.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub idempotency_key: Option<String>,
    /// Continue after this row (the `next` of the previous page).
    pub after: Option<InvocationCursor>,
    /// At most this many (0 = 50).
    pub limit: u32,
}

/// A position in the listing order (created time, then invocation id, both
/// descending): the page after it holds strictly older rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationCursor {
    pub created_ms: i64,
    pub invocation_id: String,
}

/// One invocation as listed: what happened, not its result payload.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationSummary {
    pub invocation_id: String,
    pub function: String,
    pub namespace: String,
    /// The version that ran (for a queued one: the last attempt's, 0 if none).
    pub version: u32,
    pub status: Status,
    pub attempts: u32,
    pub idempotency_key: String,
    pub trigger: String,
    pub created_ms: i64,
    /// When it completed or was dead-lettered; 0 while queued.
    pub completed_ms: i64,
    /// The final error (failed, timed out, dead-lettered).
    pub error: Option<ErrorRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvocationPage {
    pub invocations: Vec<InvocationSummary>,
    /// Where the next page starts; None when this one is the last.
    pub next: Option<InvocationCursor>,
}
