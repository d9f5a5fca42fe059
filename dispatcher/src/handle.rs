//! The fate of one event. For each message: skip it if its idempotency
//! key already completed (or it was already dead-lettered), drop it to the
//! dead-letter store if too old, dispatch it to a worker while sending
//! in-progress acks, then either record the completion (atomically with the
//! metered attempt), announce it and ack — or record the attempt and NAK
//! with backoff for a retry — or, out of attempts or on a terminal error,
//! copy it to the dead-letter store and TERM it. Nothing is acked before the
//! store has it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use prost::Message as _;
use stoke_core::{Manifest, Retryable, naming};
use stoke_proto::{FunctionSpec, Invocation, InvocationResult, Outcome};
use stoke_store::{
    AttemptOutcome, AttemptRecord, Completion, CompletionWrite, DeadLetter, DeadReason, ErrorRecord, Status, Store,
    StoreError,
};

use crate::policy::{self, Decision};
use crate::pull::{Ctx, Source};
use crate::workers::DispatchError;

/// Redelivery delay when no worker could take the event or one was lost.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// A function version ready to dispatch.
pub(crate) struct Loaded {
    spec: FunctionSpec,
    manifest: Manifest,
}

/// What the message headers say about an event.
struct Envelope {
    invocation_id: String,
    key: String,
    trigger: String,
    sync: bool,
    version: Option<u32>,
    trace_id: String,
    /// Attempt number across redrives (1-based).
    attempt: u32,
    /// JetStream delivered this message before.
    redelivered: bool,
    created_ms: i64,
    /// The event the function receives.
    payload: Bytes,
}

fn envelope(msg: &jetstream::Message) -> Envelope {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
            .filter(|v| !v.is_empty())
    };
    let (attempt, created_ms) = match msg.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(1).max(1),
            (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
        ),
        Err(_) => (1, stoke_core::now_ms()),
    };
    let invocation_id = header(naming::headers::INVOCATION_ID).unwrap_or_else(stoke_core::new_invocation_id);
    // A redriven dead letter carries on counting from its earlier attempts.
    let base: u32 = header(naming::headers::ATTEMPT_BASE)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let redelivered = attempt > 1;
    let attempt = base.saturating_add(attempt);
    Envelope {
        key: header(naming::headers::IDEMPOTENCY_KEY).unwrap_or_else(|| invocation_id.clone()),
        invocation_id,
        trigger: header(naming::headers::TRIGGER).unwrap_or_else(|| "nats".into()),
        sync: header(naming::headers::INVOCATION_TYPE).as_deref() == Some(naming::REQUEST_RESPONSE),
        version: header(naming::headers::FUNCTION_VERSION).and_then(|v| v.parse().ok()),
        trace_id: header(naming::headers::TRACE_ID).unwrap_or_default(),
        attempt,
        redelivered,
        created_ms,
        payload: msg.payload.clone(),
    }
}

/// A message on a subscribed subject, from any NATS client. Its key is its
/// `Nats-Msg-Id`, else stream:sequence; the function receives it wrapped
/// with where it came from:
/// `{"source":"nats","subject","sequence","publishedAt","headers":{..},"data":..}`
/// (`data` is the payload as JSON when it parses, else a string;
/// non-UTF-8 payloads come as `dataBase64`).
fn subscription_envelope(msg: &jetstream::Message, function: &str) -> Envelope {
    use base64::Engine as _;
    let (seq, delivered, published_ms) = match msg.info() {
        Ok(i) => (
            i.stream_sequence,
            u32::try_from(i.delivered).unwrap_or(1).max(1),
            (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
        ),
        Err(_) => (0, 1, stoke_core::now_ms()),
    };
    let mut headers = serde_json::Map::new();
    for (name, values) in msg.headers.iter().flat_map(|h| h.iter()) {
        let v: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
        let v = if v.len() == 1 {
            serde_json::json!(v[0])
        } else {
            serde_json::json!(v)
        };
        headers.insert(name.to_string(), v);
    }
    let key = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(naming::headers::MSG_ID))
        .map(|v| v.as_str().to_string())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| format!("{}:{seq}", naming::EVENTS_STREAM));
    let mut event = serde_json::json!({
        "source": "nats",
        "subject": msg.subject.as_str(),
        "sequence": seq,
        "publishedAt": chrono_ms(published_ms),
        "headers": headers,
    });
    match std::str::from_utf8(&msg.payload) {
        Ok(text) => {
            event["data"] = serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()));
        }
        Err(_) => event["dataBase64"] = base64::engine::general_purpose::STANDARD.encode(&msg.payload).into(),
    }
    Envelope {
        invocation_id: stoke_broker::invoke::id_for_key(function, &key),
        key,
        trigger: "subject".into(),
        sync: false,
        version: None,
        trace_id: String::new(),
        attempt: delivered,
        redelivered: delivered > 1,
        created_ms: published_ms,
        payload: Bytes::from(serde_json::to_vec(&event).expect("JSON values serialise")),
    }
}

/// RFC 3339 UTC with milliseconds.
fn chrono_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Handle one message end to end. Every path ends in exactly one of ack
/// (completion durable) or NAK (redeliver).
pub(crate) async fn handle(ctx: &Ctx, source: &Source, msg: jetstream::Message) {
    let function = source.function();
    let env = match source {
        Source::Invoke { .. } => envelope(&msg),
        Source::Subscription { .. } => subscription_envelope(&msg, function),
    };
    let span = tracing::info_span!("invocation", id = %env.invocation_id, %function, attempt = env.attempt);
    let store = &ctx.shared.store;

    match already_ended(store.as_ref(), function, &env).await {
        Ok(None) => {}
        Ok(Some(Ended::Completed(done))) => {
            announce(ctx, &env.invocation_id, &done).await;
            ack(&msg, AckKind::Ack).await;
            return;
        }
        Ok(Some(Ended::DeadLettered)) => {
            ack(&msg, AckKind::Term).await;
            return;
        }
        Err(e) => {
            tracing::warn!(parent: &span, error = %e, "store unavailable; releasing event");
            ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            return;
        }
    }

    let loaded = match load(ctx, function, env.version).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            let err = ErrorRecord {
                error_type: "Stoke.FunctionNotFound".into(),
                error_message: format!("function {function:?} (version {:?}) is not deployed", env.version),
                raw: None,
            };
            let completion = completion(
                &env,
                function,
                env.version.unwrap_or(0),
                Status::Failed,
                None,
                Some(err),
            );
            finish(ctx, &msg, &env, None, completion).await;
            return;
        }
        Err(e) => {
            tracing::warn!(parent: &span, error = %e, "cannot load function; releasing event");
            ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            return;
        }
    };
    // Too old to be worth running (an async backlog after an outage).
    let age_ms = stoke_core::now_ms() - env.created_ms;
    if policy::expired(env.sync, age_ms, loaded.manifest.max_event_age) {
        let error = ErrorRecord {
            error_type: "Stoke.EventExpired".into(),
            error_message: format!(
                "event is {} s old, over the function's max_event_age of {} s",
                age_ms / 1000,
                loaded.manifest.max_event_age
            ),
            raw: None,
        };
        let dead = dead_letter(&env, &loaded, DeadReason::Expired, Some(error));
        bury(ctx, &msg, None, dead).await;
        return;
    }

    let timeout = Duration::from_millis(u64::from(loaded.spec.timeout_ms));
    let inv = Invocation {
        invocation_id: env.invocation_id.clone(),
        epoch: 0,
        attempt: env.attempt,
        idempotency_key: env.key.clone(),
        function: Some(loaded.spec.clone()),
        payload: env.payload.to_vec(),
        deadline_unix_ms: stoke_core::now_ms() + timeout.as_millis() as i64,
        trace_id: env.trace_id.clone(),
    };

    let dispatched_at = (stoke_core::now_ms(), std::time::Instant::now());
    let dispatched = ctx
        .shared
        .registry
        .dispatch(inv, ctx.shared.worker_wait, timeout + ctx.shared.answer_slack);
    let result = tokio::select! {
        r = with_progress(dispatched, &msg, ctx.shared.progress_every) => r,
        _ = ctx.release_now.cancelled() => {
            ack(&msg, AckKind::Nak(None)).await;
            return;
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            // A worker that vanished mid-attempt may have run part of it:
            // meter that attempt (as a platform error) before redelivery.
            if let DispatchError::WorkerLost(worker) | DispatchError::NoAnswer(worker) = &e {
                let record = lost_attempt(&env, &loaded, worker, dispatched_at, &e);
                if let Err(e) = with_store_retries(|| store.record_attempt(&record)).await {
                    tracing::warn!(parent: &span, error = %e, "lost attempt not metered");
                }
            }
            tracing::warn!(parent: &span, error = %e, "not completed; releasing event for redelivery");
            ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            return;
        }
    };

    let outcome = Outcome::try_from(result.outcome).unwrap_or(Outcome::PlatformError);
    let record = attempt_record(&env, &loaded, &result, outcome);
    let error = result.error.as_ref().map(|e| ErrorRecord {
        error_type: e.error_type.clone(),
        error_message: e.error_message.clone(),
        raw: (!e.raw.is_empty()).then(|| e.raw.clone()),
    });
    let decision = policy::decide(&policy::Attempted {
        outcome,
        sync: env.sync,
        attempt: env.attempt,
        max_attempts: loaded.manifest.max_attempts,
        error_type: error.as_ref().map(|e| e.error_type.as_str()),
    });
    let status = match decision {
        Decision::Complete(status) => status,
        Decision::DeadLetter(reason) => {
            let dead = dead_letter(&env, &loaded, reason, error);
            bury(ctx, &msg, Some(&record), dead).await;
            return;
        }
        Decision::Retry(delay) => {
            if let Err(e) = with_store_retries(|| store.record_attempt(&record)).await {
                tracing::warn!(parent: &span, error = %e, "attempt not metered");
            }
            tracing::info!(parent: &span, outcome = ?outcome, ?delay, "attempt failed; retrying");
            ack(&msg, AckKind::Nak(Some(delay))).await;
            return;
        }
    };
    let result_body = (status == Status::Succeeded).then(|| result.payload.clone());
    let completion = completion(&env, function, loaded.spec.version, status, result_body, error);
    finish(ctx, &msg, &env, Some(&record), completion).await;
}

/// How an event already ended, when it is delivered again.
enum Ended {
    Completed(Box<Completion>),
    DeadLettered,
}

/// A key that already completed (a redelivery after a lost ack, or a
/// duplicate past the dedupe window) is answered from the store; a
/// redelivery of an event already dead-lettered (its TERM was lost) is
/// TERMed again. Neither runs twice.
async fn already_ended(store: &dyn Store, function: &str, env: &Envelope) -> Result<Option<Ended>, StoreError> {
    if let Some(done) = store.completion_by_key(function, &env.key).await? {
        return Ok(Some(Ended::Completed(Box::new(done))));
    }
    if env.redelivered
        && let Some(dead) = store.dead_letter(&env.invocation_id).await?
        && dead.redriven_ms.is_none()
    {
        return Ok(Some(Ended::DeadLettered));
    }
    Ok(None)
}

/// Write the completion (with its attempt), announce it, ack. If the store
/// stays down, release the event instead: it will run again, never be lost.
async fn finish(
    ctx: &Ctx,
    msg: &jetstream::Message,
    env: &Envelope,
    record: Option<&AttemptRecord>,
    completion: Completion,
) {
    let store = &ctx.shared.store;
    let written = match record {
        Some(r) => with_store_retries(|| store.record_completion(r, &completion)).await,
        None => {
            let placeholder = placeholder_attempt(env, &completion);
            with_store_retries(|| store.record_completion(&placeholder, &completion)).await
        }
    };
    let final_record = match written {
        Ok(CompletionWrite::Recorded) => completion,
        Ok(CompletionWrite::Duplicate(existing)) => *existing,
        Err(e) => {
            tracing::error!(id = %env.invocation_id, error = %e, "cannot record completion; releasing event");
            ack(msg, AckKind::Nak(Some(RELEASE_DELAY * 5))).await;
            return;
        }
    };
    tracing::info!(id = %env.invocation_id, status = final_record.status.as_str(), attempt = env.attempt, "completed");
    announce(ctx, &env.invocation_id, &final_record).await;
    ack(msg, AckKind::Ack).await;
}

/// Dead-letter an event: copy it (with its last attempt) to the store, then
/// TERM the message so JetStream stops redelivering. Store down → NAK.
async fn bury(ctx: &Ctx, msg: &jetstream::Message, record: Option<&AttemptRecord>, dead: DeadLetter) {
    let store = &ctx.shared.store;
    match with_store_retries(|| store.record_dead_letter(record, &dead)).await {
        Ok(()) => {
            tracing::warn!(
                id = %dead.invocation_id,
                function = %dead.function,
                reason = dead.reason.as_str(),
                attempts = dead.attempts,
                "dead-lettered"
            );
            ack(msg, AckKind::Term).await;
        }
        Err(e) => {
            tracing::error!(id = %dead.invocation_id, error = %e, "cannot dead-letter; releasing event");
            ack(msg, AckKind::Nak(Some(RELEASE_DELAY * 5))).await;
        }
    }
}

fn dead_letter(env: &Envelope, loaded: &Loaded, reason: DeadReason, error: Option<ErrorRecord>) -> DeadLetter {
    DeadLetter {
        invocation_id: env.invocation_id.clone(),
        function: loaded.spec.name.clone(),
        version: loaded.spec.version,
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

/// Tell a waiting synchronous caller (best effort: the store is the truth).
async fn announce(ctx: &Ctx, invocation_id: &str, c: &Completion) {
    let info = stoke_broker::invoke::completion_info(c, None);
    let subject = naming::result_subject(invocation_id);
    if let Err(e) = ctx.shared.nats.publish(subject, info.encode_to_vec().into()).await {
        tracing::warn!(%invocation_id, error = %e, "cannot announce result");
    }
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        // The server will redeliver after ack_wait; dedupe catches a repeat.
        tracing::warn!(error = %e, "ack failed");
    }
}

/// Run `fut` while keeping the message's lease alive.
async fn with_progress<F: std::future::Future>(fut: F, msg: &jetstream::Message, every: Duration) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => ack(msg, AckKind::Progress).await,
        }
    }
}

/// Retry a store write while the store says it is unavailable (~15 s).
async fn with_store_retries<T, F, Fut>(mut op: F) -> Result<T, StoreError>
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

/// The function version an event names (or the current one), cached.
async fn load(ctx: &Ctx, function: &str, version: Option<u32>) -> Result<Option<Arc<Loaded>>, StoreError> {
    if let Some(v) = version
        && let Some(l) = ctx.specs.lock().expect("not poisoned").get(&(function.to_string(), v))
    {
        return Ok(Some(l.clone()));
    }
    let store = &ctx.shared.store;
    let fv = match version {
        Some(v) => store.get_version(function, v).await?,
        None => store.current_version(function).await?,
    };
    let Some(fv) = fv else { return Ok(None) };
    // The current version (subject events name none) is usually cached too.
    if let Some(l) = ctx
        .specs
        .lock()
        .expect("not poisoned")
        .get(&(fv.function.clone(), fv.version))
    {
        return Ok(Some(l.clone()));
    }
    let manifest = match Manifest::parse(&fv.manifest) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(%function, version = fv.version, error = %e, "deployed manifest unreadable");
            return Ok(None);
        }
    };
    let spec = FunctionSpec {
        name: fv.function.clone(),
        version: fv.version,
        digest: fv.digest.clone(),
        command: manifest.command.clone(),
        env: manifest.env.clone().into_iter().collect(),
        memory_mb: manifest.memory,
        timeout_ms: manifest.timeout_ms() as u32,
        handler: manifest.handler.clone().unwrap_or_default(),
    };
    let loaded = Arc::new(Loaded { spec, manifest });
    ctx.specs
        .lock()
        .expect("not poisoned")
        .insert((fv.function, fv.version), loaded.clone());
    Ok(Some(loaded))
}

impl Envelope {
    /// An attempt row of this event, not yet metered.
    fn attempt(&self, function: &str, version: u32, memory_mb: u32, outcome: AttemptOutcome) -> AttemptRecord {
        let now = stoke_core::now_ms();
        AttemptRecord {
            invocation_id: self.invocation_id.clone(),
            function: function.to_string(),
            version,
            idempotency_key: self.key.clone(),
            attempt: self.attempt,
            epoch: 0,
            trigger: self.trigger.clone(),
            worker: String::new(),
            started_ms: now,
            ended_ms: now,
            duration_us: 0,
            memory_mb,
            max_memory_used_kb: 0,
            cold: false,
            init_duration_us: 0,
            outcome,
            error_type: None,
            error_message: None,
        }
    }
}

/// The attempt a worker ran and reported.
fn attempt_record(env: &Envelope, loaded: &Loaded, r: &InvocationResult, outcome: Outcome) -> AttemptRecord {
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
fn lost_attempt(
    env: &Envelope,
    loaded: &Loaded,
    worker: &str,
    (started_ms, started): (i64, std::time::Instant),
    error: &DispatchError,
) -> AttemptRecord {
    let spec = &loaded.spec;
    AttemptRecord {
        worker: worker.to_string(),
        started_ms,
        duration_us: started.elapsed().as_micros() as u64,
        error_type: Some("Stoke.WorkerLost".into()),
        error_message: Some(error.to_string()),
        ..env.attempt(&spec.name, spec.version, spec.memory_mb, AttemptOutcome::PlatformError)
    }
}

/// An event that never reached a worker still gets its one final record;
/// its attempt row is a zero-duration platform error (billed at the minimum).
fn placeholder_attempt(env: &Envelope, c: &Completion) -> AttemptRecord {
    AttemptRecord {
        error_type: c.error.as_ref().map(|e| e.error_type.clone()),
        error_message: c.error.as_ref().map(|e| e.error_message.clone()),
        ..env.attempt(&c.function, c.version, 0, AttemptOutcome::PlatformError)
    }
}

fn completion(
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
        payload_digest: Some(stoke_core::package::digest(&env.payload)),
    }
}
