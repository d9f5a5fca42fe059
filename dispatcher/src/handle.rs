//! The fate of one event. For each message: skip it if its idempotency
//! key already completed (or it was already dead-lettered), number its
//! attempt, drop it to the dead-letter store if too old, wait for a slot of
//! its function and key (or defer it: NAK with delay, not an attempt),
//! dispatch it to a worker while sending
//! in-progress acks, then either record the completion (atomically with the
//! metered attempt), announce it and ack — or record the attempt and NAK
//! with backoff for a retry — or, out of attempts or on a terminal error,
//! copy it to the dead-letter store and TERM it. Nothing is acked before the
//! store has it.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use stoke_proto::{Invocation, InvocationResult, Outcome};
use stoke_store::{
    AttemptRecord, Completion, CompletionWrite, DeadLetter, DeadReason, ErrorRecord, Status, Store, StoreError,
};
use tracing::Instrument as _;

use crate::announce::announce;
use crate::ctx::{Ctx, Origin, Source};
use crate::envelope::{self, Envelope};
use crate::gate;
use crate::lease::{ack, with_progress};
use crate::policy::{self, Decision};
use crate::queue::Later;
use crate::records;
use crate::records::with_store_retries;
use crate::versions::{LoadError, Loaded};
use crate::workers::DispatchError;

/// Redelivery delay when no worker could take the event or one was lost.
pub(crate) const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// Handle one message end to end. Every path ends in exactly one of ack
/// (completion durable), NAK (redeliver) or TERM (dead letter durable).
pub(crate) async fn handle(ctx: &Ctx, source: &Source, msg: jetstream::Message) {
    let env = match source.origin {
        Origin::Invoke => envelope::invocation(&msg),
        Origin::Subscription { .. } => envelope::subscription(&msg, &source.function).0,
    };
    // Every log line about this event carries its id and trace id.
    let span = tracing::info_span!(
        "invocation",
        id = %env.invocation_id,
        function = %source.function,
        trace_id = %env.trace.trace_id(),
        attempt = tracing::field::Empty,
    );
    handle_event(ctx, source, msg, env, &span)
        .instrument(span.clone())
        .await;
}

async fn handle_event(ctx: &Ctx, source: &Source, msg: jetstream::Message, mut env: Envelope, span: &tracing::Span) {
    let function = source.function.as_str();
    let store = &ctx.shared.store;
    ctx.board.arrived(function, &env.invocation_id);
    let release = |id: &str, what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(%id, %function, error = %e, "{what}; releasing event");
    };

    match already_ended(store.as_ref(), function, &env).await {
        Ok(None) => {}
        Ok(Some(Ended::Completed(done))) => {
            announce(ctx, &env, &done).await;
            ack(&msg, AckKind::Ack).await;
            return;
        }
        Ok(Some(Ended::DeadLettered)) => {
            ack(&msg, AckKind::Term).await;
            return;
        }
        Err(e) => {
            release(&env.invocation_id, "store unavailable", &e);
            ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            return;
        }
    }
    if let Err(e) = env.number_attempt(store.as_ref()).await {
        release(&env.invocation_id, "store unavailable", &e);
        ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
        return;
    }
    span.record("attempt", env.attempt);

    let loaded = match ctx.load(function, env.version).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            not_deployed(ctx, &msg, &env, function).await;
            return;
        }
        Err(e @ LoadError::Manifest { .. }) => {
            unreadable(ctx, &msg, &env, &e, env.attempt - 1).await;
            return;
        }
        Err(e) => {
            release(&env.invocation_id, "cannot load function", &e);
            ack(&msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            return;
        }
    };
    if let Some(dead) = expired(&env, &loaded) {
        bury(ctx, &msg, None, dead).await;
        return;
    }

    // Wait for a slot of the function (and of the event's key).
    let renew = source.holding.renew_every(ctx.shared.progress_every);
    let key =
        (loaded.manifest.concurrency_key.as_deref()).and_then(|expr| stoke_core::key::evaluate(expr, &env.payload));
    let gate = ctx.gate(function, loaded.spec.version, &loaded.manifest);
    let msgs = [&msg];
    let waiting = ctx.board.waiting(function);
    let follow = may_follow(&loaded, [&env]);
    let pass = tokio::select! {
        pass = with_progress(gate.admit(key, follow), &msgs, renew) => pass,
        _ = ctx.release_now.cancelled() => {
            ack(&msg, AckKind::Nak(None)).await;
            return;
        }
    };
    drop(waiting);
    let Some(pass) = pass else {
        // Its key is busy and others already wait for it: come back later.
        let delay = gate::defer_delay(env.delivered);
        ctx.board.later(function, &env.invocation_id, delay, Later::Deferred);
        ack(&msg, AckKind::Nak(Some(delay))).await;
        return;
    };
    // It may have waited here for its slot (as many wait as run) past its age.
    if let Some(dead) = expired(&env, &loaded) {
        drop(pass);
        bury(ctx, &msg, None, dead).await;
        return;
    }

    let Some(result) = run(ctx, &loaded, &env, env.payload.to_vec(), &msgs, renew, &pass).await else {
        return;
    };
    drop(pass);

    let outcome = Outcome::try_from(result.outcome).unwrap_or(Outcome::PlatformError);
    let record = records::attempt_record(&env, &loaded, &result, outcome);
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
        backoff: policy::Backoff::of(&loaded.manifest),
        error_type: error.as_ref().map(|e| e.error_type.as_str()),
    });
    let status = match decision {
        Decision::Complete(status) => status,
        Decision::DeadLetter(reason) => {
            let dead = records::dead_letter(&env, loaded.names(), reason, error);
            bury(ctx, &msg, Some(&record), dead).await;
            return;
        }
        Decision::Retry(delay) => {
            if let Err(e) = with_store_retries(|| store.record_attempt(&record)).await {
                tracing::warn!(error = %e, "attempt not metered");
            }
            tracing::info!(outcome = ?outcome, ?delay, "attempt failed; retrying");
            ctx.shared.metrics.retry(function);
            ctx.board.later(function, &env.invocation_id, delay, Later::Retry);
            ack(&msg, AckKind::Nak(Some(delay))).await;
            return;
        }
    };
    let result_body = (status == Status::Succeeded).then(|| result.payload.clone());
    let completion = records::completion(&env, function, loaded.spec.version, status, result_body, error);
    finish(ctx, &msg, &env, Some(&record), completion).await;
}

/// Whether the events may take a running one's baton at admission
/// (`policy::may_follow`, judged by the oldest).
pub(crate) fn may_follow<'a>(loaded: &Loaded, envs: impl IntoIterator<Item = &'a Envelope>) -> bool {
    let now = stoke_core::now_ms();
    envs.into_iter().all(|env| {
        let age_ms = now - env.created_ms;
        policy::may_follow(
            env.sync,
            age_ms,
            loaded.manifest.timeout_ms(),
            loaded.manifest.max_event_age,
        )
    })
}

/// Send one attempt (`payload`, as `env`'s invocation) to a worker under
/// `pass`, keeping the leases of `msgs` alive until its result is back.
/// `None`: no result, and the messages were released for redelivery (no
/// worker, a lost one, or shutdown); a lost attempt is metered.
pub(crate) async fn run(
    ctx: &Ctx,
    loaded: &Loaded,
    env: &Envelope,
    payload: Vec<u8>,
    msgs: &[&jetstream::Message],
    renew: Duration,
    pass: &gate::Pass,
) -> Option<InvocationResult> {
    let _running = ctx.board.running(&loaded.spec.name);
    let timeout = Duration::from_millis(u64::from(loaded.spec.timeout_ms));
    let inv = Invocation {
        invocation_id: env.invocation_id.clone(),
        epoch: 0,
        attempt: env.attempt,
        idempotency_key: env.key.clone(),
        function: Some(loaded.spec.clone()),
        payload,
        deadline_unix_ms: stoke_core::now_ms() + timeout.as_millis() as i64,
        trace_id: env.trace.xray(),
        traceparent: env.trace.traceparent(),
        stream: env.stream,
        // Set by the registry when it follows another.
        ..Default::default()
    };
    let dispatched_at = (stoke_core::now_ms(), std::time::Instant::now());
    let dispatched = ctx
        .shared
        .registry
        .dispatch(inv, ctx.shared.worker_wait, timeout + ctx.shared.answer_slack, pass);
    let dispatched = marking_running(ctx, env, pass, dispatched);
    let result = tokio::select! {
        r = with_progress(dispatched, msgs, renew) => r,
        _ = ctx.release_now.cancelled() => {
            for msg in msgs {
                ack(msg, AckKind::Nak(None)).await;
            }
            return None;
        }
    };
    if pass.followed() {
        ctx.shared.metrics.handover(&loaded.spec.name);
    }
    match result {
        Ok(r) => {
            ctx.shared.metrics.attempt(&loaded.spec.name, &r);
            Some(r)
        }
        Err(e) => {
            // A worker that vanished mid-attempt may have run part of it:
            // meter that attempt (as a platform error) before redelivery.
            // Its late result, if it comes, replaces this row as `fenced`.
            if let DispatchError::WorkerLost { worker, epoch } | DispatchError::NoAnswer { worker, epoch } = &e {
                ctx.shared.metrics.lost_attempt(&loaded.spec.name);
                let record = records::lost_attempt(env, loaded, (worker, *epoch), dispatched_at, &e);
                if let Err(e) = with_store_retries(|| ctx.shared.store.record_attempt(&record)).await {
                    tracing::warn!(id = %env.invocation_id, error = %e, "lost attempt not metered");
                }
            }
            tracing::warn!(id = %env.invocation_id, error = %e, "not completed; releasing for redelivery");
            for msg in msgs {
                ack(msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
            }
            None
        }
    }
}

/// How long an attempt runs on its worker before its invocation is marked
/// `running` in the store: a shorter one never is, so the hot path writes
/// nothing more, while a caller polling a longer one sees it start.
const MARK_RUNNING_AFTER: Duration = Duration::from_millis(250);

/// `attempt`, marking `env`'s invocation running once it has run on its
/// worker for [`MARK_RUNNING_AFTER`] — not while it waits for a worker or,
/// handed over, behind the event ahead of it. Only a first attempt: a later
/// one's invocation already says `running` (an attempt is metered). The
/// mark is a task of its own, so it completes even if the attempt ends
/// first (the store's view then prefers the ending); a failure is logged.
async fn marking_running<F: std::future::Future>(
    ctx: &Ctx,
    env: &Envelope,
    pass: &gate::Pass,
    attempt: F,
) -> F::Output {
    if !env.recorded_when_accepted() || env.attempt > 1 {
        return attempt.await;
    }
    tokio::pin!(attempt);
    let under_way = async {
        pass.running().await;
        tokio::time::sleep(MARK_RUNNING_AFTER).await;
    };
    tokio::select! {
        biased;
        out = &mut attempt => return out,
        _ = under_way => {}
    }
    let (store, id) = (ctx.shared.store.clone(), env.invocation_id.clone());
    ctx.tracker.spawn(
        async move {
            if let Err(e) = store.mark_running(&id, stoke_core::now_ms()).await {
                tracing::debug!(error = %e, "not marked running");
            }
        }
        .instrument(tracing::Span::current()),
    );
    attempt.await
}

/// An event for a function (version) that is not deployed ends failed,
/// `Stoke.FunctionNotFound`.
pub(crate) async fn not_deployed(ctx: &Ctx, msg: &jetstream::Message, env: &Envelope, function: &str) {
    let err = ErrorRecord {
        error_type: "Stoke.FunctionNotFound".into(),
        error_message: format!("function {function:?} (version {:?}) is not deployed", env.version),
        raw: None,
    };
    let version = env.version.unwrap_or(0);
    let completion = records::completion(env, function, version, Status::Failed, None, Some(err));
    finish(ctx, msg, env, None, completion).await;
}

/// Deliveries of an event whose version's manifest does not parse before it
/// is dead-lettered (`bad_manifest`).
pub(crate) const BAD_MANIFEST_DELIVERIES: u32 = 3;

/// An event whose version's stored manifest does not parse (`e` is
/// [`LoadError::Manifest`]). It is not "not deployed": the version exists.
/// A synchronous call, whose caller waits, fails at once
/// (`Stoke.BadManifest`); an async one is released a few times — a
/// dispatcher of a newer release, or a mended row, may read it — then
/// dead-lettered with reason `bad_manifest`, so it can be redriven to a good
/// version.
/// (`attempts`: the attempts made before, which the dead letter counts.)
pub(crate) async fn unreadable(ctx: &Ctx, msg: &jetstream::Message, env: &Envelope, e: &LoadError, attempts: u32) {
    let LoadError::Manifest { function, version, .. } = e else {
        // Only an unreadable manifest comes here; anything else is released.
        ack(msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
        return;
    };
    let version = *version;
    let error = ErrorRecord {
        error_type: "Stoke.BadManifest".into(),
        error_message: e.to_string(),
        raw: None,
    };
    if env.sync {
        let completion = records::completion(env, function, version, Status::Failed, None, Some(error));
        finish(ctx, msg, env, None, completion).await;
    } else if env.delivered < BAD_MANIFEST_DELIVERIES {
        tracing::error!(id = %env.invocation_id, error = %e, delivered = env.delivered, "releasing event");
        ack(msg, AckKind::Nak(Some(RELEASE_DELAY))).await;
    } else {
        // Nothing ran: no attempt is counted.
        let mut dead = records::dead_letter(env, (function, version), DeadReason::BadManifest, Some(error));
        dead.attempts = attempts;
        bury(ctx, msg, None, dead).await;
    }
}

/// The dead letter of an event too old to be worth running (an async
/// backlog after an outage), if it is.
pub(crate) fn expired(env: &Envelope, loaded: &Loaded) -> Option<DeadLetter> {
    let age_ms = stoke_core::now_ms() - env.created_ms;
    if !policy::expired(env.sync, age_ms, loaded.manifest.max_event_age) {
        return None;
    }
    let error = ErrorRecord {
        error_type: "Stoke.EventExpired".into(),
        error_message: format!(
            "event is {} s old, over the function's max_event_age of {} s",
            age_ms / 1000,
            loaded.manifest.max_event_age
        ),
        raw: None,
    };
    Some(records::dead_letter(
        env,
        loaded.names(),
        DeadReason::Expired,
        Some(error),
    ))
}

/// How an event already ended, when it is delivered again.
pub(crate) enum Ended {
    Completed(Box<Completion>),
    DeadLettered,
}

/// A key that already completed (a redelivery after a lost ack, or a
/// duplicate past the dedupe window) is answered from the store; a
/// redelivery of an event already dead-lettered (its TERM was lost) is
/// TERMed again. Neither runs twice. The first delivery of a message keyed
/// by its own sequence, or of a call the broker keyed with its fresh
/// invocation id, needs no look: nothing else has that key.
pub(crate) async fn already_ended(
    store: &dyn Store,
    function: &str,
    env: &Envelope,
) -> Result<Option<Ended>, StoreError> {
    if env.own_key && !env.redelivered() {
        return Ok(None);
    }
    if let Some(done) = store.completion_by_key(function, &env.key).await? {
        return Ok(Some(Ended::Completed(Box::new(done))));
    }
    // Delivered before the upgrade that added the publish time to its key,
    // and completed under its sequence alone: that completion is this
    // message's if it has this message's id (made the same way since), or
    // the id the sequence-only key gave before ids were time-ordered — which
    // every message with that sequence shares, so then only with this
    // message's publish time too. Otherwise it is an earlier message that had
    // the same sequence in a stream since made again, and does not count.
    if let Some(old_key) = env.sequence_only_key()
        && let Some(done) = store.completion_by_key(function, old_key).await?
        && (done.invocation_id == env.invocation_id
            || (done.invocation_id == stoke_bus::ids::id_for_key(function, old_key)
                && done.created_ms == env.created_ms))
    {
        return Ok(Some(Ended::Completed(Box::new(done))));
    }
    if env.redelivered()
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
            let placeholder = records::placeholder_attempt(env, &completion);
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
    announce(ctx, env, &final_record).await;
    ack(msg, AckKind::Ack).await;
}

/// Dead-letter an event: copy it (with its last attempt) to the store, then
/// TERM the message so JetStream stops redelivering. Store down → NAK.
pub(crate) async fn bury(ctx: &Ctx, msg: &jetstream::Message, record: Option<&AttemptRecord>, dead: DeadLetter) {
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
            ctx.shared.metrics.dead_letter(&dead.function, dead.reason);
            ack(msg, AckKind::Term).await;
        }
        Err(e) => {
            tracing::error!(id = %dead.invocation_id, error = %e, "cannot dead-letter; releasing event");
            ack(msg, AckKind::Nak(Some(RELEASE_DELAY * 5))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use stoke_store::{AttemptOutcome, Status};

    use super::*;

    /// Record `env`'s event as succeeded, at once.
    async fn complete(store: &dyn Store, env: &Envelope) {
        let mut attempt = env.attempt("f", 1, 128, AttemptOutcome::Success);
        attempt.ended_ms = attempt.started_ms;
        let done = records::completion(env, "f", 1, Status::Succeeded, Some(b"{}".to_vec()), None);
        store.record_completion(&attempt, &done).await.unwrap();
    }

    /// Only the first delivery of a sequence-keyed message skips the
    /// store: a redelivery (its ack was lost after the completion was
    /// written) and a publisher's key are answered from it (real SQLite).
    #[tokio::test]
    async fn a_completed_key_is_found_unless_it_cannot_have_completed() {
        let dir = tempfile::tempdir().unwrap();
        let store = stoke_store::SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        for key in ["STOKE_EVENTS:7", "order-7"] {
            complete(&store, &Envelope::for_test("f", key, false, 1)).await;
        }
        let ended = |key: &str, own_key: bool, delivered: u32| {
            let env = Envelope::for_test("f", key, own_key, delivered);
            let store = &store;
            async move { already_ended(store, "f", &env).await.unwrap().is_some() }
        };
        assert!(
            !ended("STOKE_EVENTS:7", true, 1).await,
            "a first delivery of its own key is not looked up"
        );
        assert!(
            ended("STOKE_EVENTS:7", true, 2).await,
            "a redelivery is answered from the store"
        );
        assert!(
            ended("order-7", false, 1).await,
            "a publisher's key may repeat: looked up"
        );
    }

    /// Completions recorded under a sequence alone (before keys had the
    /// publish time): a redelivery of that very message finds it, by its
    /// time-ordered id or by the id such a key gave before; another message
    /// that reuses the sequence in a stream made again does not.
    #[tokio::test]
    async fn a_sequence_only_completion_counts_for_its_own_message_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = stoke_store::SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        const T1: i64 = 1_700_000_000_000;
        const T2: i64 = 1_800_000_000_000;
        // Seq 7 completed with its time-ordered id; seq 8 with the hash id.
        for (key, id) in [
            (
                "STOKE_EVENTS:7",
                Envelope::for_test_message("f", 7, T1, 1).invocation_id,
            ),
            ("STOKE_EVENTS:8", stoke_bus::ids::id_for_key("f", "STOKE_EVENTS:8")),
        ] {
            let mut env = Envelope::for_test("f", key, true, 1);
            env.invocation_id = id;
            env.created_ms = T1;
            complete(&store, &env).await;
        }
        let ended = |seq: u64, published_ms: i64| {
            let env = Envelope::for_test_message("f", seq, published_ms, 2);
            let store = &store;
            async move { already_ended(store, "f", &env).await.unwrap().is_some() }
        };
        assert!(ended(7, T1).await, "the same message, delivered again");
        assert!(ended(8, T1).await, "completed before ids were time-ordered");
        assert!(
            !ended(8, T2).await,
            "another message with sequence 8: the same hash id, not the same publish time"
        );
        assert!(!ended(7, T2).await, "another message with sequence 7 runs");
        assert!(!ended(9, T1).await, "nothing recorded for sequence 9");
        let env = Envelope::for_test_message("f", 7, T2, 2);
        assert_eq!(env.key, format!("STOKE_EVENTS:7@{T2}"));
        assert_eq!(env.sequence_only_key(), Some("STOKE_EVENTS:7"));
        assert_eq!(
            Envelope::for_test("f", "STOKE_EVENTS:7@1", false, 2).sequence_only_key(),
            None
        );
    }
}
