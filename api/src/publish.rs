//! Publishing a message on a subject through the admin API, as any NATS
//! client could: only where a subscription captures it.

use stoke_proto::{PublishRequest, PublishResponse};

use crate::error::ApiError;

/// Publish `r` and wait for the events stream to store it.
pub(crate) async fn publish(
    js: &async_nats::jetstream::Context,
    r: PublishRequest,
) -> Result<PublishResponse, ApiError> {
    stoke_core::manifest::validate_subject(&r.subject).map_err(|e| ApiError::invalid(format!("subject: {e}")))?;
    if r.subject.contains('*') || r.subject.contains('>') {
        return Err(ApiError::invalid("publish to a concrete subject, not a wildcard"));
    }
    let mut headers = async_nats::HeaderMap::new();
    if !r.msg_id.is_empty() {
        headers.insert(stoke_core::naming::headers::MSG_ID, r.msg_id.as_str());
    }
    let ack = js
        .publish_with_headers(r.subject.clone(), headers, r.payload.into())
        .await
        .map_err(|e| ApiError::nats("nats publish", e))?
        .await
        .map_err(|e| match e.kind() {
            async_nats::jetstream::context::PublishErrorKind::StreamNotFound => ApiError::precondition(format!(
                "no function subscribes to {:?}: nothing would capture it",
                r.subject
            )),
            _ => ApiError::nats("nats publish ack", e),
        })?;
    Ok(PublishResponse {
        stream: ack.stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}
