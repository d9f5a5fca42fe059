//! What ran, through the admin API: invocation listings (filtered, paged
//! by an opaque cursor) and usage per function or namespace and period.
//! Both are confined to the namespaces the caller's token covers in the
//! query itself, so a page is never thinned out after the fact.

use crate::access::Grant;
use crate::error::ApiError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use stoke_proto::{
    ErrorInfo, GetUsageRequest, GetUsageResponse, InvocationStatus, ListInvocationsRequest, ListInvocationsResponse,
    UsageBucket, UsageGroupBy,
};
use stoke_store::{Admin, InvocationCursor, InvocationFilter, InvocationSummary, Status as Run, UsageFilter};

/// A page holds this many unless asked otherwise, and never more than `MAX_LIMIT`.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// The namespace a listing is confined to: the one asked for (which the
/// caller must cover), else the caller's own unless it covers them all.
fn scope(grant: &Grant, asked: &str) -> Result<Option<String>, ApiError> {
    let caller = &grant.caller;
    if asked.is_empty() {
        // The role itself was checked before the call reached its handler.
        return Ok((!caller.sees_all_namespaces()).then(|| caller.namespace.clone()));
    }
    caller.require(grant.need, asked).map_err(|e| match e {
        stoke_auth::AuthError::PermissionDenied(_) if !caller.covers(asked) => ApiError::denied(format!(
            "namespace {asked:?} is not the token's ({:?})",
            caller.namespace
        )),
        e => e.into(),
    })?;
    Ok(Some(asked.to_string()))
}

fn status_filter(s: i32) -> Result<Option<Run>, ApiError> {
    match InvocationStatus::try_from(s) {
        Ok(InvocationStatus::Unspecified) => Ok(None),
        Ok(InvocationStatus::Queued) => Ok(Some(Run::Queued)),
        Ok(InvocationStatus::Running) => Ok(Some(Run::Running)),
        Ok(InvocationStatus::Succeeded) => Ok(Some(Run::Succeeded)),
        Ok(InvocationStatus::Failed) => Ok(Some(Run::Failed)),
        Ok(InvocationStatus::TimedOut) => Ok(Some(Run::TimedOut)),
        Ok(InvocationStatus::DeadLettered) => Ok(Some(Run::DeadLettered)),
        Err(_) => Err(ApiError::invalid(format!("unknown invocation status {s}"))),
    }
}

/// The page token of a cursor: `created_ms:invocation_id`, base64url.
pub(crate) fn encode_token(c: &InvocationCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", c.created_ms, c.invocation_id))
}

pub(crate) fn decode_token(token: &str) -> Result<InvocationCursor, ApiError> {
    let bad = || ApiError::invalid("page_token is not one this API returned: pass next_page_token as it came");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    let created_ms = ms.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok(InvocationCursor {
        created_ms,
        invocation_id: id.to_string(),
    })
}

fn summary(i: InvocationSummary) -> stoke_proto::InvocationSummary {
    stoke_proto::InvocationSummary {
        invocation_id: i.invocation_id,
        function: i.function,
        namespace: i.namespace,
        version: i.version,
        status: stoke_bus::results::proto_status(i.status) as i32,
        attempts: i.attempts,
        idempotency_key: i.idempotency_key,
        trigger: i.trigger,
        created_unix_ms: i.created_ms,
        completed_unix_ms: i.completed_ms,
        error: i.error.map(|e| ErrorInfo {
            error_type: e.error_type,
            error_message: e.error_message,
            raw: Vec::new(),
        }),
    }
}

/// `ListInvocations` for the caller of `grant`.
pub(crate) async fn list(
    store: &dyn Admin,
    grant: &Grant,
    r: ListInvocationsRequest,
) -> Result<ListInvocationsResponse, ApiError> {
    let namespace = scope(grant, &r.namespace)?;
    if !r.function.is_empty() {
        grant.on_function(store, &r.function).await?;
    }
    if r.since_unix_ms != 0 && r.until_unix_ms != 0 && r.until_unix_ms <= r.since_unix_ms {
        return Err(ApiError::invalid(format!(
            "until ({}) must be after since ({})",
            r.until_unix_ms, r.since_unix_ms
        )));
    }
    let filter = InvocationFilter {
        function: (!r.function.is_empty()).then_some(r.function),
        namespace,
        status: status_filter(r.status)?,
        since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
        until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
        idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
        after: if r.page_token.is_empty() {
            None
        } else {
            Some(decode_token(&r.page_token)?)
        },
        limit: match r.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        },
    };
    let page = store.list_invocations(&filter).await?;
    Ok(ListInvocationsResponse {
        next_page_token: page.next.as_ref().map(encode_token).unwrap_or_default(),
        invocations: page.invocations.into_iter().map(summary).collect(),
    })
}

/// `GetUsage` for the caller of `grant`.
pub(crate) async fn usage(store: &dyn Admin, grant: &Grant, r: GetUsageRequest) -> Result<GetUsageResponse, ApiError> {
    let caller = &grant.caller;
    let namespace = scope(grant, &r.namespace)?;
    if !r.function.is_empty() {
        grant.on_function(store, &r.function).await?;
    }
    let group_by = match UsageGroupBy::try_from(r.group_by) {
        Ok(UsageGroupBy::Function) => stoke_store::UsageGroup::Function,
        Ok(UsageGroupBy::Namespace) => stoke_store::UsageGroup::Namespace,
        Err(_) => return Err(ApiError::invalid(format!("unknown group_by {}", r.group_by))),
    };
    let bucket = match UsageBucket::try_from(r.bucket) {
        Ok(UsageBucket::None) => stoke_store::UsageBucket::None,
        Ok(UsageBucket::Hour) => stoke_store::UsageBucket::Hour,
        Ok(UsageBucket::Day) => stoke_store::UsageBucket::Day,
        Err(_) => return Err(ApiError::invalid(format!("unknown bucket {}", r.bucket))),
    };
    let filter = UsageFilter {
        function: (!r.function.is_empty()).then_some(r.function),
        namespace,
        since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
        until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
        group_by,
        bucket,
    };
    let rows = store.usage(&filter).await?;
    Ok(GetUsageResponse {
        rows: rows
            .into_iter()
            .filter(|u| caller.covers(&u.namespace))
            .map(|u| stoke_proto::UsageRow {
                gb_seconds: u.gb_seconds(),
                function: u.function,
                attempts: u.attempts,
                errors: u.errors,
                cold_starts: u.cold_starts,
                billed_ms: u.billed_ms,
                namespace: u.namespace,
                bucket_start_unix_ms: u.bucket_ms,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_junk() {
        let c = InvocationCursor {
            created_ms: 1_764_000_000_123,
            invocation_id: "0190-abc:def".into(),
        };
        let token = encode_token(&c);
        assert!(
            token
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        );
        assert_eq!(decode_token(&token).unwrap(), c);
        for junk in ["", "!!", "bm9jb2xvbg", "MTIzOg", "eDp5"] {
            let err = tonic::Status::from(decode_token(junk).unwrap_err());
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{junk:?}");
        }
    }

    #[test]
    fn every_status_is_a_listing_filter() {
        assert_eq!(status_filter(0).unwrap(), None);
        assert_eq!(
            status_filter(InvocationStatus::Queued as i32).unwrap(),
            Some(Run::Queued)
        );
        assert_eq!(
            status_filter(InvocationStatus::Running as i32).unwrap(),
            Some(Run::Running)
        );
        assert!(status_filter(99).is_err());
    }
}
