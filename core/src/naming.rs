//! Names on the wire: JetStream stream, subjects, consumers and headers.
//! Every role derives them from here so they cannot drift apart.

/// The work-queue stream holding invocation events addressed to one function
/// (HTTP, admin invoke; cron later). One subject per function, so one consumer
/// per subject, as work-queue retention requires.
pub const INVOKE_STREAM: &str = "STOKE_INVOKE";
/// Subjects captured by [`INVOKE_STREAM`].
pub const INVOKE_SUBJECTS: &str = "stoke.invoke.>";

/// Subject an invocation event for `function` is published on.
pub fn invoke_subject(function: &str) -> String {
    format!("stoke.invoke.{function}")
}

/// Durable pull consumer the dispatchers share for `function`.
pub fn invoke_consumer(function: &str) -> String {
    format!("fn-{function}")
}

/// Core-NATS subject a completed invocation's result is announced on, so a
/// waiting synchronous caller wakes without polling the store.
pub fn result_subject(invocation_id: &str) -> String {
    format!("stoke.result.{invocation_id}")
}

/// Message headers carried by an invocation event.
pub mod headers {
    /// JetStream de-duplication id; stoke sets it to the idempotency key.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const INVOCATION_ID: &str = "Stoke-Invocation-Id";
    pub const IDEMPOTENCY_KEY: &str = "Stoke-Idempotency-Key";
    /// `http`, `admin`, `cron`, `subject`.
    pub const TRIGGER: &str = "Stoke-Trigger";
    /// `RequestResponse` (a caller waits: not retried) or `Event` (async: retried).
    pub const INVOCATION_TYPE: &str = "Stoke-Invocation-Type";
    pub const TRACE_ID: &str = "Stoke-Trace-Id";
    /// The function version current when the event was accepted.
    pub const FUNCTION_VERSION: &str = "Stoke-Function-Version";
    /// Attempts already made before this message (a redriven dead letter).
    pub const ATTEMPT_BASE: &str = "Stoke-Attempt-Base";
}

/// Lambda's invocation types.
pub const REQUEST_RESPONSE: &str = "RequestResponse";
pub const EVENT: &str = "Event";
