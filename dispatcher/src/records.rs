//! The rows an event leaves in the store: metered attempts (run, lost,
//! or never dispatched), its one completion, or its dead letter.

use std::time::Duration;

use stoke_core::Retryable as _;
use stoke_proto::{InvocationResult, Outcome};
use stoke_store::{AttemptOutcome, AttemptRecord, Completion, DeadLetter, DeadReason, ErrorRecord, Status, StoreError};

use crate::envelope::Envelope;
use crate::versions::Loaded;
use crate::workers::DispatchError;

/// The attempt a worker ran and reported.
pub(crate) fn attempt_record(env: &Envelope, loaded: &Loaded, r: &InvocationResult, outcome: Outcome) -> AttemptRecord {
    let m = r.metering.clone().unwrap_or_default();
    let outcome = match outcome {
        Outcome::Success => AttemptOutcome::Success,
        Outcome::FunctionError => AttemptOutcome::FunctionError,
        Outcome::Crashed => AttemptOutcome::Crashed,
        Outcome::Timeout => AttemptOutcome::Timeout,
        Outcome::InitError => AttemptOutcome::InitError,
        Outcome::PlatformError | Outcome::Unspecified => AttemptOutcome::PlatformError,
    };
    AttemptRecord {
        epoch: r.epoch,
        worker: m.worker_id,
        started_ms: m.started_unix_ms,
        ended_ms: m.ended_unix_ms,
        duration_us: m.duration_us,
        max_memory_used_kb: m.max_memory_used_kb,
        cold: m.cold,
        init_duration_us: m.init_duration_us,
        error_type: r.error.as_ref().map(|e| e.error_type.clone()),
        error_message: r.error.as_ref().map(|e| e.error_message.clone()),
        ..env.attempt(&loaded.spec.name, loaded.spec.version, loaded.spec.memory_mb, outcome)
    }
}

/// The attempt a lost worker took with it, as far as the dispatcher saw it.
pub(crate) fn lost_attempt(
    env: &Envelope,
    loaded: &Loaded,
    (worker, epoch): (&str, u64),
    (started_ms, started): (i64, std::time::Instant),
    error: &DispatchError,
) -> AttemptRecord {
    let spec = &loaded.spec;
    AttemptRecord {
        worker: worker.to_string(),
        epoch,
        started_ms,
        duration_us: started.elapsed().as_micros() as u64,
        error_type: Some("Stoke.WorkerLost".into()),
        error_message: Some(error.to_string()),
        ..env.attempt(&spec.name, spec.version, spec.memory_mb, AttemptOutcome::PlatformError)
    }
}

/// An event that never reached a worker still gets its one final record;
/// its attempt row is a zero-duration platform error (billed at the minimum).
pub(crate) fn placeholder_attempt(env: &Envelope, c: &Completion) -> AttemptRecord {
    AttemptRecord {
        error_type: c.error.as_ref().map(|e| e.error_type.clone()),
        error_message: c.error.as_ref().map(|e| e.error_message.clone()),
        ..env.attempt(&c.function, c.version, 0, AttemptOutcome::PlatformError)
    }
}

pub(crate) fn completion(
    env: &Envelope,
    function: &str,
    version: u32,
    status: Status,
    result: Option<Vec<u8>>,
    error: Option<ErrorRecord>,
) -> Completion {
    Completion {
        function: function.to_string(),
        idempotency_key: env.key.clone(),
        invocation_id: env.invocation_id.clone(),
        version,
        status,
        result,
        error,
        attempts: env.attempt,
        trigger: env.trigger.clone(),
        created_ms: env.created_ms,
        completed_ms: stoke_core::now_ms(),
        payload_digest: Some(
            env.digest
                .clone()
                .unwrap_or_else(|| stoke_core::package::digest(&env.payload)),
        ),
    }
}

pub(crate) fn dead_letter(
    env: &Envelope,
    (function, version): (&str, u32),
    reason: DeadReason,
    error: Option<ErrorRecord>,
) -> DeadLetter {
    DeadLetter {
        invocation_id: env.invocation_id.clone(),
        function: function.to_string(),
        version,
        idempotency_key: env.key.clone(),
        trigger: env.trigger.clone(),
        payload: env.payload.to_vec(),
        reason,
        attempts: if reason == DeadReason::Expired {
            env.attempt - 1
        } else {
            env.attempt
        },
        error: error.map(|e| ErrorRecord { raw: None, ..e }),
        created_ms: env.created_ms,
        dead_ms: stoke_core::now_ms(),
        redriven_ms: None,
        redrive_count: 0,
    }
}

/// Retry a store write while the store says it is unavailable (~15 s).
pub(crate) async fn with_store_retries<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..8 {
        match op().await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, ?delay, "store unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
            other => return other,
        }
    }
    op().await
}
