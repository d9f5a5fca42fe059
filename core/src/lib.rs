//! stoke-core owns the vocabulary every role shares: the `stoke.toml` function
//! manifest (parsing and validation), function packages (deterministic packing,
//! digest, safe extraction), OCI images (`oci`: read from disk and checked,
//! their layers unpacked and flattened, the `ImageSpec` a worker runs), the
//! routes HTTP triggers claim at the gateway's root (`routes`: parsing,
//! claims, matching; `percent`-decoding), and the
//! names of NATS streams, subjects, consumers and headers that make up the
//! event path; Lambda's response streaming format (`streaming`: the HTTP
//! prelude, the error trailers); an http trigger's CORS settings (`cors`);
//! and the trace context an event
//! carries (`trace`: W3C `traceparent` and its AWS X-Ray form); and the count
//! of catalog changes that in-process caches of current versions check
//! (`catalog`).
//!
//! It must not do I/O beyond the file system paths it is handed, and it knows
//! nothing of NATS connections, databases or gRPC.

pub mod catalog;
pub mod cors;
pub mod fnconfig;
pub mod key;
pub mod manifest;
pub mod naming;
pub mod oci;
pub mod package;
pub mod percent;
pub mod routes;
pub mod streaming;
pub mod trace;

pub use cors::Cors;
pub use fnconfig::{ConfigEdit, FunctionConfig};
pub use manifest::{Batching, CatchUp, CronSpec, HttpAuth, HttpEvent, Manifest, ManifestError, Mode, Overlap, Trigger};

/// Errors say whether trying again could help; retry and dead-letter logic
/// match on this, never on message text.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// Whether a function's error type means "do not retry": any errorType
/// ending in `TerminalError` (a Python `class TerminalError(Exception)`, a
/// Node `TerminalError`, `MyApp.TerminalError`, ...).
pub fn is_terminal_error(error_type: &str) -> bool {
    error_type.ends_with("TerminalError")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh, time-ordered invocation id.
pub fn new_invocation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
