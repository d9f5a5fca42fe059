//! Batches of subject messages: a subscription with `batch_size` > 1 hands
//! its function up to that many messages in one invocation (waiting at most
//! `batch_window_ms` after the first), as
//! `{"source":"nats","records":[{"messageId":..,"attempt":..,"subject":..,"data":..}, ..]}`.
//!
//! Per-item results follow Lambda's `ReportBatchItemFailures`: the function
//! answers `{"batchItemFailures":[{"itemIdentifier":"<messageId>"}]}` (an
//! entry may add `errorType`/`errorMessage`) and only those items are
//! retried or dead-lettered, each by its own attempt count; the rest
//! complete. A failed invocation (error, crash, timeout) fails every item;
//! so does a `batchItemFailures` that is not a list of such entries.
//!
//! The invocation is metered once (one attempt row, its own id); items get
//! their completions, written with it atomically, or their dead letters.
//! An item's attempt number is its delivery count: batches are not held
//! back by concurrency keys, so a redelivery means an earlier try.

use std::collections::HashMap;

use async_nats::jetstream::{self, AckKind};
use stoke_proto::{InvocationResult, Outcome};
use stoke_store::{AttemptRecord, Completion, DeadLetter, ErrorRecord, Status};
use tracing::Instrument as _;

use crate::ctx::{Ctx, Source};
use crate::envelope::{self, Envelope};
use crate::gate;
use crate::handle::{self, bury};
use crate::lease::{ack, with_progress};
use crate::policy::{self, Decision};
use crate::records;
use crate::records::with_store_retries;
use crate::versions::{self, Loaded};

/// One message of a batch, with what it says.
struct Item {
    msg: jetstream::Message,
    env: Envelope,
    event: serde_json::Value,
}

/// Handle a batch of messages from one subscription end to end. Every
/// message ends in ack, NAK or TERM, as in [`handle::handle`].
pub(crate) async fn handle_batch(ctx: &Ctx, source: &Source, msgs: Vec<jetstream::Message>) {
    let function = source.function.as_str();
    let store = &ctx.shared.store;

    // Each item on its own first: done before, or too old.
    let mut items = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let (mut env, event) = envelope::subscription(&msg, function);
        env.number_by_delivery();
        ctx.board.arrived(function, &env.invocation_id);
        match handle::already_ended(store.as_ref(), function, &env).await {
            Ok(None) => {}
            Ok(Some(handle::Ended::Completed(_))) => {
                ack(&msg, AckKind::Ack).await;
                continue;
            }
            Ok(Some(handle::Ended::DeadLettered)) => {
                ack(&msg, AckKind::Term).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(id = %env.invocation_id, error = %e, "store unavailable; releasing message");
                ack(&msg, AckKind::Nak(Some(handle::RELEASE_DELAY))).await;
                continue;
            }
        }
        items.push(Item { msg, env, event });
    }
    let loaded = match ctx.load(function, None).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            for item in &items {
                handle::not_deployed(ctx, &item.msg, &item.env, function).await;
            }
            return;
        }
        Err(e @ versions::LoadError::Manifest { .. }) => {
            for item in &items {
                // Numbered by delivery, but none of these ran.
                handle::unreadable(ctx, &item.msg, &item.env, &e, item.env.base()).await;
            }
            return;
        }
        Err(e) => {
            tracing::warn!(%function, error = %e, "cannot load function; releasing batch");
            for item in &items {
                ack(&item.msg, AckKind::Nak(Some(handle::RELEASE_DELAY))).await;
            }
            return;
        }
    };
    // Too old already: dead-lettered at once. The rest wait for a slot and
    // are judged again once the batch may run (as many wait as run).
    let items = bury_expired(ctx, &loaded, items).await;
    if items.is_empty() {
        return;
    }
    let Some(pass) = admit(ctx, source, &loaded, &items).await else {
        return;
    };
    let live = bury_expired(ctx, &loaded, items).await;
    if live.is_empty() {
        return;
    }

    // One invocation for the rest.
    let payload = batch_event(&live);
    let run_env = envelope::batch_run(&live[0].env, live.iter().map(|i| i.env.attempt).max().unwrap_or(1));
    let span = tracing::info_span!(
        "invocation",
        id = %run_env.invocation_id,
        %function,
        trace_id = %run_env.trace.trace_id(),
        attempt = run_env.attempt,
        batch = live.len(),
    );
    run_batch(ctx, source, &loaded, run_env, live, payload, pass)
        .instrument(span)
        .await;
}

/// Dead-letter the items older than the function's `max_event_age`; the
/// others are returned.
async fn bury_expired(ctx: &Ctx, loaded: &Loaded, items: Vec<Item>) -> Vec<Item> {
    let mut live = Vec::with_capacity(items.len());
    for item in items {
        match handle::expired(&item.env, loaded) {
            Some(dead) => bury(ctx, &item.msg, None, dead).await,
            None => live.push(item),
        }
    }
    live
}

/// Wait for a slot of the function, keeping the items' leases alive;
/// `None` (shutdown): the items were released.
async fn admit(ctx: &Ctx, source: &Source, loaded: &Loaded, items: &[Item]) -> Option<gate::Pass> {
    let msgs: Vec<&jetstream::Message> = items.iter().map(|i| &i.msg).collect();
    let renew = source.holding.renew_every(ctx.shared.progress_every);
    let gate = ctx.gate(&source.function, loaded.spec.version, &loaded.manifest);
    let follow = handle::may_follow(loaded, items.iter().map(|i| &i.env));
    let pass = tokio::select! {
        pass = with_progress(gate.admit(None, follow), &msgs, renew) => pass,
        _ = ctx.release_now.cancelled() => None,
    };
    if pass.is_none() {
        for msg in &msgs {
            ack(msg, AckKind::Nak(None)).await;
        }
    }
    pass
}

/// Run the batch's one invocation (its slot already held) and settle its
/// items.
async fn run_batch(
    ctx: &Ctx,
    source: &Source,
    loaded: &Loaded,
    run_env: Envelope,
    live: Vec<Item>,
    payload: Vec<u8>,
    pass: gate::Pass,
) {
    let msgs: Vec<&jetstream::Message> = live.iter().map(|i| &i.msg).collect();
    let renew = source.holding.renew_every(ctx.shared.progress_every);
    let Some(result) = handle::run(ctx, loaded, &run_env, payload, &msgs, renew, &pass).await else {
        return;
    };
    drop(pass);
    settle(ctx, loaded, &run_env, live, &result).await;
}

/// Record the batch's attempt and each item's fate, then ack, NAK or TERM
/// each message accordingly.
async fn settle(ctx: &Ctx, loaded: &Loaded, run_env: &Envelope, items: Vec<Item>, result: &InvocationResult) {
    let outcome = Outcome::try_from(result.outcome).unwrap_or(Outcome::PlatformError);
    let record: AttemptRecord = records::attempt_record(run_env, loaded, result, outcome);
    let failures = item_failures(result, outcome, &items);

    let mut done: Vec<(jetstream::Message, Completion)> = Vec::new();
    let mut failed: Vec<(Item, ErrorRecord, Decision)> = Vec::new();
    for item in items {
        match failures.get(&item.env.key) {
            None => {
                let c = records::completion(
                    &item.env,
                    &loaded.spec.name,
                    loaded.spec.version,
                    Status::Succeeded,
                    None,
                    None,
                );
                done.push((item.msg, c));
            }
            Some((item_outcome, error)) => {
                let decision = policy::decide(&policy::Attempted {
                    outcome: *item_outcome,
                    sync: false,
                    attempt: item.env.attempt,
                    max_attempts: loaded.manifest.max_attempts,
                    backoff: policy::Backoff::of(&loaded.manifest),
                    error_type: Some(error.error_type.as_str()),
                });
                failed.push((item, error.clone(), decision));
            }
        }
    }

    let completions: Vec<Completion> = done.iter().map(|(_, c)| c.clone()).collect();
    let store = &ctx.shared.store;
    if let Err(e) = with_store_retries(|| store.record_batch(&record, &completions)).await {
        tracing::error!(id = %run_env.invocation_id, error = %e, "cannot record batch; releasing it");
        for (msg, _) in &done {
            ack(msg, AckKind::Nak(Some(handle::RELEASE_DELAY * 5))).await;
        }
        for (item, _, _) in &failed {
            ack(&item.msg, AckKind::Nak(Some(handle::RELEASE_DELAY * 5))).await;
        }
        return;
    }
    tracing::info!(
        id = %run_env.invocation_id,
        function = %loaded.spec.name,
        completed = done.len(),
        failed = failed.len(),
        "batch settled"
    );
    for (msg, _) in &done {
        ack(msg, AckKind::Ack).await;
    }
    for (item, error, decision) in failed {
        match decision {
            Decision::Retry(delay) => {
                ctx.shared.metrics.retry(&loaded.spec.name);
                ctx.board.later(
                    &loaded.spec.name,
                    &item.env.invocation_id,
                    delay,
                    crate::queue::Later::Retry,
                );
                ack(&item.msg, AckKind::Nak(Some(delay))).await;
            }
            Decision::DeadLetter(reason) => {
                let dead: DeadLetter = records::dead_letter(&item.env, loaded.names(), reason, Some(error));
                bury(ctx, &item.msg, None, dead).await;
            }
            // Async items never complete as failed (see policy::decide).
            Decision::Complete(_) => ack(&item.msg, AckKind::Nak(Some(handle::RELEASE_DELAY))).await,
        }
    }
}

/// The event a batch invocation receives.
fn batch_event(items: &[Item]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = items
        .iter()
        .map(|i| {
            let mut r = serde_json::json!({ "messageId": i.env.key, "attempt": i.env.attempt });
            if let (Some(r), Some(event)) = (r.as_object_mut(), i.event.as_object()) {
                r.extend(
                    event
                        .iter()
                        .filter(|(k, _)| *k != "source")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            r
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "source": "nats", "records": records })).expect("JSON values serialise")
}

/// The items that failed, by message id, with the outcome and error each
/// is judged by.
fn item_failures(
    result: &InvocationResult,
    outcome: Outcome,
    items: &[Item],
) -> HashMap<String, (Outcome, ErrorRecord)> {
    let all = |outcome: Outcome, error: ErrorRecord| {
        items
            .iter()
            .map(|i| (i.env.key.clone(), (outcome, error.clone())))
            .collect::<HashMap<_, _>>()
    };
    if outcome != Outcome::Success {
        let error = result.error.as_ref().map_or_else(
            || ErrorRecord {
                error_type: "Stoke.PlatformError".into(),
                error_message: "the batch invocation failed".into(),
                raw: None,
            },
            |e| ErrorRecord {
                error_type: e.error_type.clone(),
                error_message: e.error_message.clone(),
                raw: None,
            },
        );
        return all(outcome, error);
    }
    match parse_item_failures(&result.payload) {
        Ok(failures) => failures
            .into_iter()
            .filter(|(id, _)| {
                let known = items.iter().any(|i| &i.env.key == id);
                if !known {
                    tracing::warn!(item = %id, "batchItemFailures names an item not in the batch; ignored");
                }
                known
            })
            .map(|(id, error)| (id, (Outcome::FunctionError, error)))
            .collect(),
        Err(reason) => all(
            Outcome::FunctionError,
            ErrorRecord {
                error_type: "Stoke.InvalidBatchResponse".into(),
                error_message: reason,
                raw: None,
            },
        ),
    }
}

/// `batchItemFailures` of a batch response: none when the response is not
/// a JSON object or does not have the field; an error when the field is
/// not a list of `{"itemIdentifier": "..."}` entries.
fn parse_item_failures(body: &[u8]) -> Result<Vec<(String, ErrorRecord)>, String> {
    let Ok(serde_json::Value::Object(response)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(Vec::new());
    };
    let Some(list) = response.get("batchItemFailures") else {
        return Ok(Vec::new());
    };
    let bad = || "batchItemFailures must be a list of {\"itemIdentifier\": \"<messageId>\"}".to_string();
    let list = list.as_array().ok_or_else(bad)?;
    list.iter()
        .map(|entry| {
            let id = entry.get("itemIdentifier").and_then(|v| v.as_str()).ok_or_else(bad)?;
            let text = |field: &str| entry.get(field).and_then(|v| v.as_str()).map(str::to_string);
            let error = ErrorRecord {
                error_type: text("errorType").unwrap_or_else(|| "Stoke.BatchItemFailure".into()),
                error_message: text("errorMessage").unwrap_or_else(|| "reported in batchItemFailures".into()),
                raw: None,
            };
            Ok((id.to_string(), error))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lambda_style_item_failures() {
        let body = br#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"b","errorType":"X.TerminalError","errorMessage":"bad"}]}"#;
        let f = parse_item_failures(body).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].0.as_str(), f[0].1.error_type.as_str()),
            ("a", "Stoke.BatchItemFailure")
        );
        assert_eq!((f[1].0.as_str(), f[1].1.error_type.as_str()), ("b", "X.TerminalError"));
    }

    #[test]
    fn no_field_or_no_object_means_no_failures() {
        for body in [
            &b"null"[..],
            b"\"ok\"",
            b"{}",
            b"{\"batchItemFailures\":[]}",
            b"not json",
        ] {
            assert!(parse_item_failures(body).unwrap().is_empty(), "{body:?}");
        }
    }

    #[test]
    fn malformed_failures_are_an_error() {
        for body in [
            &br#"{"batchItemFailures":"a"}"#[..],
            br#"{"batchItemFailures":[{"id":"a"}]}"#,
            br#"{"batchItemFailures":[{"itemIdentifier":7}]}"#,
        ] {
            assert!(parse_item_failures(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
