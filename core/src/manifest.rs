//! The `stoke.toml` manifest: what a function is and how it is triggered.
//!
//! ```toml
//! name = "hello"
//! command = ["python3", "main.py"]   # argv inside the sandbox, relative to the package root
//!                                    # (optional with `image`: the image's Entrypoint + Cmd)
//! image = "image.tar"                # optional: run this OCI image (an OCI layout directory, an
//!                                    # oci-archive or a `docker save` tarball; relative to the
//!                                    # function directory, or absolute); `stoke deploy` uploads it
//! handler = "main.handler"           # optional, passed as _HANDLER
//! memory = 128                       # MB, 64..=10240
//! timeout = 30                       # seconds, 1..=900
//! concurrency = 10                   # invocations of this function at once
//! max_attempts = 3                   # for async events (sync callers are not retried)
//! retry_backoff_ms = 1000            # first retry after ~1 s, then doubling (±20 % jitter)...
//! retry_backoff_max_ms = 300000      # ...up to 5 minutes
//! max_event_age = 21600              # seconds an async event may wait before it is dead-lettered
//! concurrency_key = "data.customer"  # optional: a path into the event; one hot key cannot take every slot
//! concurrency_per_key = 1            # invocations of one key at once (default 1)
//! min_warm = 0                       # sandboxes kept started ahead of traffic (provisioned concurrency)
//! mode = "runtime"                   # runtime (Lambda Runtime API, reused) | exec (one process per event, stdin → stdout)
//!
//! [env]
//! GREETING = "Hello"
//!
//! [[triggers]]
//! http = true                        # its function URL: any method on /fn/<name> and /fn/<name>/<path>
//! auth = "token"                     # optional: callers send `Authorization: Bearer <token>`
//!                                    # (role invoker in the function's namespace); default "none"
//! event = "body"                     # optional: the request body as the event; default "url",
//!                                    # Lambda's function URL event (payload 2.0)
//! routes = ["GET /users/{id}", "ANY /static/{proxy+}", "$default"]
//!                                    # optional: routes at the gateway's root (see `routes`)
//! host = "api.example.com"           # optional: the routes answer on this Host only
//! cors = { allow_origins = ["https://app.example.com"], allow_methods = ["GET", "POST"],
//!          allow_headers = ["content-type"], expose_headers = ["x-request-id"],
//!          max_age = 600, allow_credentials = true }
//!                                    # optional: preflights answered by the gateway
//! response = "stream"                # optional: a streamed answer reaches the client as it
//!                                    # comes (Lambda's RESPONSE_STREAM); default "buffered"
//!
//! [[triggers]]
//! cron = "0 */5 * * * *"             # sec min hour day month weekday [year]
//! timezone = "Europe/Berlin"         # IANA; default UTC
//! overlap = "skip"                   # allow (default) | skip | queue
//! catch_up = "latest"                # none (default) | latest | all
//! catch_up_window = 3600             # seconds `all` reaches back
//!
//! [[triggers]]
//! subject = "orders.*"
//! batch_size = 10                    # optional: up to 10 messages per invocation
//! batch_window_ms = 500              # how long the first message waits for the batch to fill
//! ```
//!
//! Unknown keys are refused (a typo must not silently become a default), and
//! every error names the field it is about.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "stoke.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// The process's argv; may be empty (or absent) with `image`, which
    /// then runs the image's Entrypoint + Cmd.
    #[serde(default)]
    pub command: Vec<String>,
    /// An OCI image on the deploying machine (a layout directory, an
    /// oci-archive or a `docker save` tarball), relative to the function
    /// directory or absolute: the function's root filesystem. The CLI reads
    /// and uploads it at deploy; the version records the image it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default = "default_memory")]
    pub memory: u32,
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_max_event_age")]
    pub max_event_age: u32,
    /// Delay before the first retry of a failed async event, in ms; each
    /// further retry waits twice as long, up to `retry_backoff_max_ms`.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u32,
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u32,
    /// A path into the event (see [`crate::key`]); events with the same
    /// value run at most `concurrency_per_key` at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_per_key: Option<u32>,
    /// Sandboxes of the current version kept started, idle or busy, even
    /// with no traffic (Lambda's provisioned concurrency); at most
    /// `concurrency`.
    #[serde(default)]
    pub min_warm: u32,
    /// How the function is run.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_triggers")]
    pub triggers: Vec<TriggerDef>,
}

/// How a function's process serves events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A long-lived process speaking the Lambda Runtime API, reused while healthy.
    #[default]
    Runtime,
    /// One process per event (the CGI model): the event on stdin, the
    /// response on stdout, exit status 0 for success.
    Exec,
}

fn default_memory() -> u32 {
    128
}
fn default_timeout() -> u32 {
    30
}
fn default_concurrency() -> u32 {
    10
}
fn default_max_event_age() -> u32 {
    6 * 3600
}
fn default_retry_backoff_ms() -> u32 {
    1000
}
fn default_retry_backoff_max_ms() -> u32 {
    300_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_triggers() -> Vec<TriggerDef> {
    vec![TriggerDef {
        http: Some(true),
        ..TriggerDef::default()
    }]
}

/// One `[[triggers]]` table as written; exactly one of `http`, `cron`,
/// `subject` must be set. [`Manifest::triggers`] gives the validated form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<bool>,
    /// http: who may call it (default: anyone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// http: what the function receives (default `url`: Lambda's function
    /// URL event; `body`: the request body itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<HttpEvent>,
    /// http: routes at the gateway's root this function answers
    /// (`GET /users/{id}`, `ANY /static/{proxy+}`, `$default`; see
    /// [`crate::routes`]), besides its function URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// http: the one host (the request's `Host`) the routes are for; any
    /// host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// http: CORS for browsers calling the function from other origins
    /// (preflights answered by the gateway, headers added to answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::cors::Cors>,
    /// http: `stream` sends a streamed response to the client as it comes
    /// (Lambda's `RESPONSE_STREAM` invoke mode); default `buffered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// cron: what a tick does while the previous tick's run is unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// cron: what happens to ticks missed while no broker ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// cron: how far back `catch_up = "all"` reaches, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_window: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// subject: most messages handed to one invocation (default 1: no batching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// subject: how long the first message of a batch waits for more (ms, default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window_ms: Option<u32>,
}

/// How an http trigger's answer reaches the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpResponse {
    /// Whole, once the function has answered (Lambda's `BUFFERED`).
    #[default]
    Buffered,
    /// As the function streams it (Lambda's `RESPONSE_STREAM`).
    Stream,
}

/// Batching of a subject trigger: several messages per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Batching {
    pub max_size: u32,
    pub window_ms: u32,
}

/// Who may call an HTTP trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuth {
    /// Anyone who can reach the gateway (Lambda function URLs' `NONE`).
    #[default]
    None,
    /// A bearer token with the invoker role in the function's namespace,
    /// checked whatever the admin API's auth mode is.
    Token,
}

/// What an HTTP trigger's function receives for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpEvent {
    /// Lambda's function URL event (payload format 2.0): method, path,
    /// query, headers, cookies, the body (base64 when binary).
    #[default]
    Url,
    /// The request body itself, as the Invoke API passes it (an opt-in for
    /// callers who post events rather than HTTP requests).
    Body,
}

/// A cron tick while the previous tick's invocation is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Fire anyway (runs may overlap up to the function's concurrency).
    #[default]
    Allow,
    /// Do not fire; the ledger says `skipped_overlap`.
    Skip,
    /// Fire once the previous run has finished.
    Queue,
}

/// Ticks that passed while no broker was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire none of them (ledger: `missed_by_policy`).
    #[default]
    None,
    /// Fire only the most recent one.
    Latest,
    /// Fire every one within `catch_up_window`.
    All,
}

/// A cron trigger's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSpec {
    pub schedule: String,
    pub timezone: chrono_tz::Tz,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub catch_up_window_secs: u32,
}

impl CronSpec {
    /// The id of `function`'s schedule of this spec: the function and a
    /// hash of what defines the schedule, so a redeploy that changes the
    /// expression or its time zone starts a new schedule.
    pub fn schedule_id(&self, function: &str) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("{}\0{}", self.schedule, self.timezone).as_bytes());
        format!("{function}:{}", hex::encode(&h[..4]))
    }
}

/// A validated trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Http(HttpAuth),
    Cron(CronSpec),
    Subject { subject: String, batch: Option<Batching> },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Http(HttpAuth::None) => write!(f, "http"),
            Trigger::Http(HttpAuth::Token) => write!(f, "http (token)"),
            Trigger::Cron(c) => write!(f, "cron {} ({})", c.schedule, c.timezone),
            Trigger::Subject { subject, batch: None } => write!(f, "subject {subject}"),
            Trigger::Subject {
                subject,
                batch: Some(b),
            } => write!(f, "subject {subject} (batches of {} / {} ms)", b.max_size, b.window_ms),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("stoke.toml: {0}")]
    Syntax(toml::de::Error),
    #[error("stoke.toml: field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("stoke.toml: field `command`: `{path}` is not in the package")]
    MissingFile { path: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Names whose meaning the platform sets; a manifest may not override them.
pub(crate) const RESERVED_ENV: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
];

impl Manifest {
    /// Parse and validate manifest text (does not look at package files).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(ManifestError::Syntax)?;
        m.validate()?;
        Ok(m)
    }

    /// Read `stoke.toml` from a function directory, validate it, and check
    /// that the files it names exist.
    pub fn load_dir(dir: &Path) -> Result<Manifest, ManifestError> {
        let file = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Unreadable {
            file: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let m = Manifest::parse(&text)?;
        m.check_files(dir)?;
        Ok(m)
    }

    /// A command that names a path inside the package (`./run`, `bin/x`) must
    /// point at a file there; a bare program name (`python3`) is looked up on
    /// the sandbox's PATH at run time. With an `image`, the command runs in
    /// the image's root, so nothing is checked here.
    pub fn check_files(&self, root: &Path) -> Result<(), ManifestError> {
        if self.image.is_some() {
            return Ok(());
        }
        let Some(prog) = self.command.first() else {
            return Ok(());
        };
        if prog.contains('/') && !prog.starts_with('/') {
            let path = root.join(prog);
            if !path.is_file() {
                return Err(ManifestError::MissingFile { path: prog.clone() });
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_name(&self.name)?;
        if let Some(image) = &self.image {
            if image.trim().is_empty() {
                return Err(invalid(
                    "image",
                    "must name an OCI image: a layout directory, an oci-archive or a `docker save` tarball",
                ));
            }
            if image.contains('\0') {
                return Err(invalid("image", "must not contain NUL bytes"));
            }
        }
        // With an image, an empty command runs the image's Entrypoint + Cmd.
        let command_needed = self.image.is_none() || !self.command.is_empty();
        if command_needed && self.command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(invalid(
                "command",
                if self.image.is_some() {
                    "must be a non-empty array when set (or left out: the image's Entrypoint + Cmd run)"
                } else {
                    "must be a non-empty array, e.g. [\"python3\", \"main.py\"] (or set `image`)"
                },
            ));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(invalid("command", "arguments must not contain NUL bytes"));
        }
        if !(64..=10240).contains(&self.memory) {
            return Err(invalid("memory", format!("{} MB is outside 64..=10240", self.memory)));
        }
        if !(1..=900).contains(&self.timeout) {
            return Err(invalid(
                "timeout",
                format!("{} s is outside 1..=900 seconds", self.timeout),
            ));
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(invalid("concurrency", "must be within 1..=10000"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid("max_attempts", "must be within 1..=100"));
        }
        if !(1..=7 * 24 * 3600).contains(&self.max_event_age) {
            return Err(invalid("max_event_age", "must be within 1..=604800 seconds"));
        }
        for key in self.env.keys() {
            crate::fnconfig::check_env_name(key).map_err(|problem| invalid(format!("env.{key}"), problem))?;
        }
        for (i, value) in self.env.values().enumerate() {
            if value.contains('\0') {
                return Err(invalid(format!("env[{i}]"), "values must not contain NUL bytes"));
            }
        }
        if self.retry_backoff_ms > 3_600_000 {
            return Err(invalid("retry_backoff_ms", "must be at most 3600000 (one hour)"));
        }
        if !(self.retry_backoff_ms..=43_200_000).contains(&self.retry_backoff_max_ms) {
            return Err(invalid(
                "retry_backoff_max_ms",
                format!(
                    "must be within retry_backoff_ms ({}) and 43200000 (12 hours)",
                    self.retry_backoff_ms
                ),
            ));
        }
        if let Some(expr) = &self.concurrency_key {
            crate::key::validate(expr).map_err(|reason| invalid("concurrency_key", reason))?;
        }
        if let Some(n) = self.concurrency_per_key {
            if self.concurrency_key.is_none() {
                return Err(invalid("concurrency_per_key", "needs a `concurrency_key`"));
            }
            if !(1..=self.concurrency).contains(&n) {
                return Err(invalid(
                    "concurrency_per_key",
                    format!("must be within 1..={} (the function's concurrency)", self.concurrency),
                ));
            }
        }
        if self.min_warm > self.concurrency {
            return Err(invalid(
                "min_warm",
                format!("must be at most the function's concurrency ({})", self.concurrency),
            ));
        }
        if self.min_warm > 0 && self.mode == Mode::Exec {
            return Err(invalid(
                "min_warm",
                "has no effect with mode = \"exec\" (a process per event): remove it",
            ));
        }
        if self.triggers.is_empty() {
            return Err(invalid(
                "triggers",
                "list at least one trigger, e.g. [[triggers]] http = true",
            ));
        }
        let triggers = self.triggers()?;
        let batched = triggers
            .iter()
            .any(|t| matches!(t, Trigger::Subject { batch: Some(_), .. }));
        if batched && self.concurrency_key.is_some() {
            return Err(invalid(
                "concurrency_key",
                "cannot be combined with a batched subject trigger (`batch_size` above 1)",
            ));
        }
        Ok(())
    }

    /// The validated triggers.
    pub fn triggers(&self) -> Result<Vec<Trigger>, ManifestError> {
        self.triggers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| parse_trigger(i, t).transpose())
            .collect()
    }

    /// What the function receives for an HTTP request; None without an
    /// http trigger.
    /// (On the invoke path: the triggers were validated when the manifest
    /// was parsed, so this only reads them.)
    pub fn http_event(&self) -> Option<HttpEvent> {
        self.triggers
            .iter()
            .find(|t| t.http == Some(true))
            .map(|t| t.event.unwrap_or_default())
    }

    /// The routes the http trigger claims at the gateway's root, each with
    /// the host it is for (None: any).
    pub fn http_routes(&self) -> Vec<(Option<String>, crate::routes::Route)> {
        self.triggers
            .iter()
            .filter(|t| t.http == Some(true))
            .flat_map(|t| {
                t.routes
                    .iter()
                    .flatten()
                    .filter_map(|r| crate::routes::Route::parse(r).ok())
                    .map(|r| (t.host.clone(), r))
            })
            .collect()
    }

    /// Whether the http trigger streams its answers to the client.
    pub fn http_streams(&self) -> bool {
        self.triggers
            .iter()
            .find(|t| t.http == Some(true))
            .is_some_and(|t| t.response == Some(HttpResponse::Stream))
    }

    /// The http trigger's CORS, if it has any.
    pub fn http_cors(&self) -> Option<&crate::cors::Cors> {
        self.triggers
            .iter()
            .find(|t| t.http == Some(true))
            .and_then(|t| t.cors.as_ref())
    }

    /// Who may call the function over HTTP; None without an http trigger.
    pub fn http_auth(&self) -> Option<HttpAuth> {
        let triggers = self.triggers().ok()?;
        triggers.iter().find_map(|t| match t {
            Trigger::Http(auth) => Some(*auth),
            _ => None,
        })
    }

    pub fn has_http_trigger(&self) -> bool {
        self.http_auth().is_some()
    }

    /// Invocations of one concurrency key at once, when a key is set.
    pub fn per_key_limit(&self) -> Option<u32> {
        self.concurrency_key
            .as_ref()
            .map(|_| self.concurrency_per_key.unwrap_or(1))
    }

    /// Function timeout in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout) * 1000
    }
}

/// Function names become NATS subject tokens and consumer names: lower-case
/// letters, digits and dashes, starting with a letter, at most 63 characters.
pub fn validate_name(name: &str) -> Result<(), ManifestError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter"),
        ))
    }
}

/// Validate a cron trigger given on its own (an admin-API schedule); errors
/// name the field without the `triggers[i].` prefix.
pub fn parse_cron(def: &TriggerDef) -> Result<CronSpec, ManifestError> {
    let unprefixed = |e: ManifestError| match e {
        ManifestError::Invalid { field, reason } => ManifestError::Invalid {
            field: field.trim_start_matches("triggers[0].").to_string(),
            reason,
        },
        other => other,
    };
    match parse_trigger(0, def).map_err(unprefixed)? {
        Some(Trigger::Cron(spec)) => Ok(spec),
        _ => Err(invalid("cron", "is required")),
    }
}

fn parse_trigger(i: usize, t: &TriggerDef) -> Result<Option<Trigger>, ManifestError> {
    let field = |f: &str| format!("triggers[{i}].{f}");
    let kinds = [t.http.is_some(), t.cron.is_some(), t.subject.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(invalid(
            format!("triggers[{i}]"),
            "set exactly one of `http`, `cron`, `subject`",
        ));
    }
    if t.cron.is_none() {
        for (name, set) in [
            ("timezone", t.timezone.is_some()),
            ("overlap", t.overlap.is_some()),
            ("catch_up", t.catch_up.is_some()),
            ("catch_up_window", t.catch_up_window.is_some()),
        ] {
            if set {
                return Err(invalid(field(name), "only applies to a `cron` trigger"));
            }
        }
    }
    if t.http.is_none() && t.auth.is_some() {
        return Err(invalid(field("auth"), "only applies to an `http` trigger"));
    }
    for (name, set) in [
        ("event", t.event.is_some()),
        ("routes", t.routes.is_some()),
        ("host", t.host.is_some()),
        ("cors", t.cors.is_some()),
        ("response", t.response.is_some()),
    ] {
        if set && t.http.is_none() {
            return Err(invalid(field(name), "only applies to an `http` trigger"));
        }
    }
    if let Some(host) = &t.host {
        if t.routes.is_none() {
            return Err(invalid(field("host"), "applies to `routes`: list some"));
        }
        crate::routes::validate_host(host).map_err(|reason| invalid(field("host"), reason))?;
    }
    if let Some(cors) = &t.cors {
        cors.validate()
            .map_err(|(f, reason)| invalid(field(&format!("cors.{f}")), reason))?;
    }
    let mut shapes = crate::routes::RouteTable::default();
    for (j, text) in t.routes.iter().flatten().enumerate() {
        let route =
            crate::routes::Route::parse(text).map_err(|e| invalid(field(&format!("routes[{j}]")), e.to_string()))?;
        shapes.claim(None, route, &j.to_string()).map_err(|e| {
            invalid(
                field(&format!("routes[{j}]")),
                format!("{text:?} is listed twice (as routes[{}])", e.owner),
            )
        })?;
    }
    if t.subject.is_none() {
        for (name, set) in [
            ("batch_size", t.batch_size.is_some()),
            ("batch_window_ms", t.batch_window_ms.is_some()),
        ] {
            if set {
                return Err(invalid(field(name), "only applies to a `subject` trigger"));
            }
        }
    }
    if let Some(http) = t.http {
        return Ok(http.then_some(Trigger::Http(t.auth.unwrap_or_default())));
    }
    if let Some(schedule) = &t.cron {
        use std::str::FromStr;
        cron::Schedule::from_str(schedule).map_err(|e| {
            invalid(
                field("cron"),
                format!("{schedule:?}: {e} (6 or 7 fields: sec min hour day month weekday [year])"),
            )
        })?;
        let tz_name = t.timezone.as_deref().unwrap_or("UTC");
        let timezone: chrono_tz::Tz = tz_name
            .parse()
            .map_err(|_| invalid(field("timezone"), format!("{tz_name:?} is not an IANA time zone")))?;
        let window = t.catch_up_window.unwrap_or(3600);
        if !(1..=7 * 24 * 3600).contains(&window) {
            return Err(invalid(field("catch_up_window"), "must be within 1..=604800 seconds"));
        }
        return Ok(Some(Trigger::Cron(CronSpec {
            schedule: schedule.clone(),
            timezone,
            overlap: t.overlap.unwrap_or_default(),
            catch_up: t.catch_up.unwrap_or_default(),
            catch_up_window_secs: window,
        })));
    }
    let subject = t.subject.clone().unwrap_or_default();
    validate_subject(&subject).map_err(|reason| invalid(field("subject"), reason))?;
    let max_size = t.batch_size.unwrap_or(1);
    if !(1..=MAX_BATCH).contains(&max_size) {
        return Err(invalid(field("batch_size"), format!("must be within 1..={MAX_BATCH}")));
    }
    if t.batch_window_ms.is_some() && max_size == 1 {
        return Err(invalid(field("batch_window_ms"), "needs a `batch_size` above 1"));
    }
    let window_ms = t.batch_window_ms.unwrap_or(500);
    if window_ms > MAX_BATCH_WINDOW_MS {
        return Err(invalid(
            field("batch_window_ms"),
            format!("must be at most {MAX_BATCH_WINDOW_MS} ms"),
        ));
    }
    let batch = (max_size > 1).then_some(Batching { max_size, window_ms });
    Ok(Some(Trigger::Subject { subject, batch }))
}

/// Largest `batch_size` of a subject trigger.
pub const MAX_BATCH: u32 = 1000;
/// Longest `batch_window_ms` of a subject trigger.
pub const MAX_BATCH_WINDOW_MS: u32 = 60_000;

/// A NATS subject filter: dot-separated non-empty tokens, `*` for one token,
/// `>` only as the last token, no whitespace, and not in stoke's own space.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(format!("{subject:?} must not contain whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, tok) in tokens.iter().enumerate() {
        if tok.is_empty() {
            return Err(format!("{subject:?} has an empty token"));
        }
        if *tok == ">" && i + 1 != tokens.len() {
            return Err(format!("{subject:?}: `>` may only be the last token"));
        }
        if tok.len() > 1 && (tok.contains('*') || tok.contains('>')) {
            return Err(format!("{subject:?}: wildcards must be whole tokens"));
        }
    }
    if tokens[0] == "stoke" || tokens[0].starts_with('$') {
        return Err(format!("{subject:?}: subjects under `stoke.` and `$` are reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "hello"
command = ["python3", "main.py"]
memory = 256
timeout = 10
[env]
GREETING = "hi"
[[triggers]]
http = true
[[triggers]]
cron = "0 */5 * * * *"
timezone = "Europe/Berlin"
[[triggers]]
subject = "orders.*"
"#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.name, "hello");
        assert_eq!(m.memory, 256);
        let t = m.triggers().unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], Trigger::Http(HttpAuth::None));
        assert!(
            matches!(&t[1], Trigger::Cron(c) if c.timezone.name() == "Europe/Berlin" && c.overlap == Overlap::Allow)
        );
        assert_eq!(
            t[2],
            Trigger::Subject {
                subject: "orders.*".into(),
                batch: None
            }
        );
        assert!(m.has_http_trigger());
    }

    #[test]
    fn defaults_apply() {
        let m = Manifest::parse("name = \"a\"\ncommand = [\"./run\"]\n").unwrap();
        assert_eq!((m.memory, m.timeout, m.max_attempts), (128, 30, 3));
        assert!(m.has_http_trigger());
    }

    fn field_of(text: &str) -> String {
        match Manifest::parse(text).unwrap_err() {
            ManifestError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n";
        assert_eq!(field_of("name = \"Hello World\"\ncommand = [\"x\"]"), "name");
        assert_eq!(field_of("name = \"a\"\ncommand = []"), "command");
        assert_eq!(field_of(&format!("{base}memory = 1")), "memory");
        assert_eq!(field_of(&format!("{base}timeout = 0")), "timeout");
        assert_eq!(
            field_of(&format!("{base}retry_backoff_ms = 5000000")),
            "retry_backoff_ms"
        );
        assert_eq!(
            field_of(&format!("{base}retry_backoff_ms = 2000\nretry_backoff_max_ms = 1000")),
            "retry_backoff_max_ms"
        );
        assert_eq!(
            field_of(&format!("{base}[env]\nAWS_LAMBDA_RUNTIME_API = \"x\"")),
            "env.AWS_LAMBDA_RUNTIME_API"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\ncron = \"nope\"")),
            "triggers[0].cron"
        );
        assert_eq!(
            field_of(&format!(
                "{base}[[triggers]]\ncron = \"0 * * * * *\"\ntimezone = \"Mars/Base\""
            )),
            "triggers[0].timezone"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nsubject = \"a..b\"")),
            "triggers[0].subject"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nsubject = \"stoke.x\"")),
            "triggers[0].subject"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nhttp = true\nsubject = \"a\"")),
            "triggers[0]"
        );
    }

    #[test]
    fn min_warm_and_mode() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n";
        let m = Manifest::parse(base).unwrap();
        assert_eq!((m.min_warm, m.mode), (0, Mode::Runtime));
        let m = Manifest::parse(&format!("{base}concurrency = 4\nmin_warm = 4")).unwrap();
        assert_eq!(m.min_warm, 4);
        assert_eq!(
            Manifest::parse(&format!("{base}mode = \"exec\"")).unwrap().mode,
            Mode::Exec
        );
        assert_eq!(field_of(&format!("{base}concurrency = 4\nmin_warm = 5")), "min_warm");
        assert_eq!(field_of(&format!("{base}mode = \"exec\"\nmin_warm = 1")), "min_warm");
        let e = Manifest::parse(&format!("{base}mode = \"cgi\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode") && e.contains("exec"), "{e}");
    }

    #[test]
    fn batching_and_key_concurrency() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n";
        let m = Manifest::parse(&format!("{base}concurrency = 4\nconcurrency_key = \"data.customer\"")).unwrap();
        assert_eq!(m.per_key_limit(), Some(1));
        let m = Manifest::parse(&format!("{base}[[triggers]]\nsubject = \"o.*\"\nbatch_size = 10")).unwrap();
        assert_eq!(
            m.triggers().unwrap()[0],
            Trigger::Subject {
                subject: "o.*".into(),
                batch: Some(Batching {
                    max_size: 10,
                    window_ms: 500
                })
            }
        );
        assert_eq!(Manifest::parse(base).unwrap().per_key_limit(), None);
        assert_eq!(
            field_of(&format!(
                "{base}concurrency_key = \"k\"\n[[triggers]]\nsubject = \"a\"\nbatch_size = 5"
            )),
            "concurrency_key"
        );
        assert_eq!(
            field_of(&format!("{base}concurrency_key = \"a..b\"")),
            "concurrency_key"
        );
        assert_eq!(
            field_of(&format!("{base}concurrency_per_key = 2")),
            "concurrency_per_key"
        );
        assert_eq!(
            field_of(&format!(
                "{base}concurrency = 2\nconcurrency_key = \"k\"\nconcurrency_per_key = 3"
            )),
            "concurrency_per_key"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nhttp = true\nbatch_size = 2")),
            "triggers[0].batch_size"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nsubject = \"a\"\nauth = \"token\"")),
            "triggers[0].auth"
        );
        let err = Manifest::parse(&format!("{base}[[triggers]]\nhttp = true\nauth = \"iam\"")).unwrap_err();
        assert!(err.to_string().contains("expected `none` or `token`"), "{err}");
        let m = Manifest::parse(&format!("{base}[[triggers]]\nhttp = true\nauth = \"token\"")).unwrap();
        assert_eq!(m.http_auth(), Some(HttpAuth::Token));
        assert_eq!(m.triggers().unwrap()[0].to_string(), "http (token)");
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nsubject = \"a\"\nbatch_size = 0")),
            "triggers[0].batch_size"
        );
        assert_eq!(
            field_of(&format!("{base}[[triggers]]\nsubject = \"a\"\nbatch_window_ms = 10")),
            "triggers[0].batch_window_ms"
        );
        assert_eq!(
            field_of(&format!(
                "{base}[[triggers]]\nsubject = \"a\"\nbatch_size = 5\nbatch_window_ms = 600000"
            )),
            "triggers[0].batch_window_ms"
        );
    }

    #[test]
    fn routes_are_validated_where_they_are_written() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n[[triggers]]\n";
        let m = Manifest::parse(&format!(
            "{base}http = true\nroutes = [\"GET /u/{{id}}\", \"$default\"]\nhost = \"api.example.com\""
        ))
        .unwrap();
        let routes = m.http_routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].0.as_deref(), Some("api.example.com"));
        assert_eq!(routes[0].1.key(), "GET /u/{id}");
        let err = Manifest::parse(&format!("{base}http = true\nroutes = [\"GET /ok\", \"GET /a//b\"]")).unwrap_err();
        assert!(
            err.to_string().contains("triggers[0].routes[1]") && err.to_string().contains("\"GET /a//b\""),
            "{err}"
        );
        let err = Manifest::parse(&format!(
            "{base}http = true\nroutes = [\"GET /u/{{a}}\", \"GET /u/{{b}}\"]"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("listed twice (as routes[0])"), "{err}");
        assert_eq!(
            field_of(&format!("{base}subject = \"s\"\nroutes = [\"GET /\"]")),
            "triggers[0].routes"
        );
        assert_eq!(
            field_of(&format!("{base}http = true\nhost = \"a.example\"")),
            "triggers[0].host"
        );
        assert_eq!(
            field_of(&format!("{base}http = true\nroutes = [\"GET /\"]\nhost = \"A:80\"")),
            "triggers[0].host"
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_syntax_errors_naming_the_key() {
        let e = Manifest::parse("name = \"a\"\ncommand = [\"x\"]\nmemroy = 5").unwrap_err();
        assert!(
            matches!(&e, ManifestError::Syntax(s) if s.to_string().contains("memroy")),
            "{e}"
        );
        let e = Manifest::parse("name = \"a\"\ncommand = \"x\"").unwrap_err();
        assert!(
            matches!(&e, ManifestError::Syntax(s) if s.to_string().contains("command")),
            "{e}"
        );
    }

    #[test]
    fn an_image_makes_the_command_optional() {
        let m = Manifest::parse("name = \"bb\"\nimage = \"image-oci.tar\"\nmode = \"exec\"").unwrap();
        assert_eq!(m.image.as_deref(), Some("image-oci.tar"));
        assert!(m.command.is_empty());
        let m = Manifest::parse("name = \"bb\"\nimage = \"/srv/img\"\ncommand = [\"./run\"]").unwrap();
        assert_eq!(m.command, ["./run"]);
        // Without an image, everything is as before.
        assert_eq!(
            Manifest::parse("name = \"a\"")
                .map(|m| m.image)
                .unwrap_err()
                .to_string(),
            field_err("command")
        );
        assert_eq!(field_of("name = \"a\""), "command");
        assert_eq!(Manifest::parse("name = \"a\"\ncommand = [\"x\"]").unwrap().image, None);
        // A bad image or command is refused naming the field.
        assert_eq!(field_of("name = \"a\"\nimage = \"\""), "image");
        assert_eq!(field_of("name = \"a\"\nimage = \"  \""), "image");
        assert!(
            Manifest::parse("name = \"a\"\nimage = \"x\"\ncommand = []").is_ok(),
            "empty is absent"
        );
        assert_eq!(field_of("name = \"a\"\nimage = \"x\"\ncommand = [\"\"]"), "command");
        // The text round-trips without an image key when there is none.
        let text = toml::to_string(&Manifest::parse("name = \"a\"\ncommand = [\"x\"]").unwrap()).unwrap();
        assert!(!text.contains("image"), "{text}");
    }

    fn field_err(field: &str) -> String {
        format!(
            "stoke.toml: field `{field}`: must be a non-empty array, e.g. [\"python3\", \"main.py\"] (or set `image`)"
        )
    }

    #[test]
    fn an_image_skips_the_command_path_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "name = \"a\"\nimage = \"img\"\ncommand = [\"./in-the-image\"]",
        )
        .unwrap();
        assert!(
            Manifest::load_dir(dir.path()).is_ok(),
            "the command runs in the image's root"
        );
        std::fs::write(dir.path().join(MANIFEST_FILE), "name = \"a\"\nimage = \"img\"").unwrap();
        assert!(Manifest::load_dir(dir.path()).is_ok());
    }

    #[test]
    fn command_path_must_exist_in_package() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "name = \"a\"\ncommand = [\"./run.sh\"]").unwrap();
        assert_eq!(
            Manifest::load_dir(dir.path()).unwrap_err(),
            ManifestError::MissingFile {
                path: "./run.sh".into()
            }
        );
        std::fs::write(dir.path().join("run.sh"), "#!/bin/sh").unwrap();
        assert!(Manifest::load_dir(dir.path()).is_ok());
    }
}
