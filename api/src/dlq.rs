//! Dead letters through the admin API: list, show (with every attempt),
//! redrive (by id or filter, to the original or another version, dry run).

use crate::error::ApiError;
use stoke_bus::Invoker;
use stoke_proto::{AttemptInfo, DeadLetterInfo, ErrorInfo, RedriveRequest, RedriveResponse};
use stoke_store::{Admin, AttemptRecord, DeadLetter, DeadLetterFilter};

pub(crate) fn info(d: &DeadLetter, history: &[AttemptRecord]) -> DeadLetterInfo {
    DeadLetterInfo {
        invocation_id: d.invocation_id.clone(),
        function: d.function.clone(),
        version: d.version,
        idempotency_key: d.idempotency_key.clone(),
        trigger: d.trigger.clone(),
        payload: d.payload.clone(),
        reason: d.reason.as_str().into(),
        attempts: d.attempts,
        error: d.error.as_ref().map(|e| ErrorInfo {
            error_type: e.error_type.clone(),
            error_message: e.error_message.clone(),
            raw: Vec::new(),
        }),
        created_unix_ms: d.created_ms,
        dead_unix_ms: d.dead_ms,
        redriven_unix_ms: d.redriven_ms.unwrap_or(0),
        redrive_count: d.redrive_count,
        attempt_history: history.iter().map(attempt_info).collect(),
    }
}

/// The wire view of one metered attempt (dead letters, invocations).
pub(crate) fn attempt_info(a: &AttemptRecord) -> AttemptInfo {
    AttemptInfo {
        attempt: a.attempt,
        outcome: a.outcome.as_str().into(),
        error: a.error_type.as_ref().map(|t| ErrorInfo {
            error_type: t.clone(),
            error_message: a.error_message.clone().unwrap_or_default(),
            raw: Vec::new(),
        }),
        worker: a.worker.clone(),
        started_unix_ms: a.started_ms,
        ended_unix_ms: a.ended_ms,
        duration_us: a.duration_us,
        version: a.version,
    }
}

/// Select the dead letters a redrive names, check the target version, and
/// (unless a dry run) claim and republish each one.
pub(crate) async fn redrive(
    store: &dyn Admin,
    invoker: &Invoker,
    r: RedriveRequest,
) -> Result<RedriveResponse, ApiError> {
    let selected: Vec<DeadLetter> = if r.invocation_ids.is_empty() {
        if r.function.is_empty() && r.since_unix_ms == 0 && r.until_unix_ms == 0 {
            return Err(ApiError::invalid(
                "name dead letters by id, or filter by function and/or time range",
            ));
        }
        let filter = DeadLetterFilter {
            function: (!r.function.is_empty()).then(|| r.function.clone()),
            since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
            include_redriven: false,
            limit: 10_000,
        };
        store.dead_letters(&filter).await?
    } else {
        let mut found = Vec::new();
        for id in &r.invocation_ids {
            let d = store
                .dead_letter(id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no dead letter {id:?}")))?;
            if d.redriven_ms.is_some() {
                return Err(ApiError::precondition(format!(
                    "dead letter {id:?} was already redriven"
                )));
            }
            found.push(d);
        }
        found
    };
    if r.version != 0 {
        for function in selected
            .iter()
            .map(|d| &d.function)
            .collect::<std::collections::BTreeSet<_>>()
        {
            if store.get_version(function, r.version).await?.is_none() {
                return Err(ApiError::not_found(format!(
                    "function {function:?} has no version {}",
                    r.version
                )));
            }
        }
    }
    if r.dry_run {
        return Ok(RedriveResponse {
            invocation_ids: selected.into_iter().map(|d| d.invocation_id).collect(),
            dry_run: true,
        });
    }
    let mut sent = Vec::new();
    for d in selected {
        let now = stoke_core::now_ms();
        // Claim first so two concurrent redrives cannot both send it.
        if !store.claim_redrive(&d.invocation_id, now).await? {
            continue;
        }
        let version = if r.version != 0 { r.version } else { d.version };
        if let Err(e) = invoker.redrive(&d, version).await {
            let _ = store.release_redrive(&d.invocation_id, now).await;
            return Err(ApiError::nats(
                format!("redrove {} before failing on {}", sent.len(), d.invocation_id),
                e,
            ));
        }
        tracing::info!(id = %d.invocation_id, function = %d.function, version, "redriven");
        sent.push(d.invocation_id);
    }
    Ok(RedriveResponse {
        invocation_ids: sent,
        dry_run: false,
    })
}
