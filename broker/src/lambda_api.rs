//! Lambda's Invoke API on the gateway, for the clients written for it
//! (boto3's `lambda.invoke`, `aws lambda invoke`, every SDK):
//! `POST /2015-03-31/functions/{name}/invocations`. The body is the event,
//! as it is for Lambda's Invoke; the answer is Lambda's:
//! - `X-Amz-Invocation-Type: RequestResponse` (the default): 200 with the
//!   function's result as the body and `X-Amz-Executed-Version`; a function
//!   error is 200 too, with `X-Amz-Function-Error: Unhandled` and the error
//!   document as the body;
//! - `Event`: 202, queued (retried on failure, as any async event);
//! - `DryRun`: 204 once the function exists and the caller may invoke it.
//!
//! `X-Amz-Log-Type: Tail` with `RequestResponse` adds `X-Amz-Log-Result`:
//! the base64 of the last 4 KB of what the invocation wrote (stdout and
//! stderr, as `stoke logs` shows them).
//!
//! `Qualifier` (a version number or alias) comes as a query parameter or in
//! the name (`name:7`, `name:live`); a full function ARN is accepted as
//! the name. The same function-URL rules apply: the function needs an
//! `http` trigger, and a token-protected one wants a token: `Authorization:
//! Bearer`, or an AWS Signature Version 4 (what the SDKs and the CLI send)
//! by the token's credentials — access key id the token's id, secret access
//! key the one shown with the token — checked, with the token's role and
//! namespace applied as for a bearer token.
//! Refusals are Lambda's error shape: an `x-amzn-ErrorType` header naming
//! the error (`ResourceNotFoundException`, ...) that SDKs raise by name, and
//! a JSON body `{"Type", "message"}`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use stoke_bus::{InvokeError, InvokeRequest, Invoked, Invoker, Via};
use stoke_proto::{InvocationInfo, InvocationStatus};

use crate::eventstream;
use crate::gateway::{BodyError, authorization, header_pairs, read_body, trace_context};

pub fn router() -> Router<Invoker> {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(invoke_streaming),
        )
}

#[derive(serde::Deserialize)]
struct InvokeQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

/// The invocation types Lambda knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Lambda's `LogType: Tail` returns this much of the output.
const LOG_TAIL_BYTES: usize = 4096;

/// `X-Amz-Log-Type`: `Tail` (true), `None` or absent (false).
fn wants_log_tail(headers: &HeaderMap) -> Result<bool, String> {
    match headers.get("x-amz-log-type").map(|v| v.to_str().unwrap_or("")) {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(other) => Err(format!("X-Amz-Log-Type {other:?}: use None or Tail")),
    }
}

impl InvocationType {
    fn of(headers: &HeaderMap) -> Result<InvocationType, String> {
        match headers.get("x-amz-invocation-type").map(|v| v.to_str().unwrap_or("")) {
            None | Some("RequestResponse") => Ok(InvocationType::RequestResponse),
            Some("Event") => Ok(InvocationType::Event),
            Some("DryRun") => Ok(InvocationType::DryRun),
            Some(other) => Err(format!(
                "X-Amz-Invocation-Type {other:?}: use RequestResponse, Event or DryRun"
            )),
        }
    }
}

/// `name`, `name:qualifier` or a function ARN, with `?Qualifier=` applied:
/// what the Invoker resolves.
fn qualified_name(name: &str, qualifier: Option<&str>) -> Result<String, String> {
    // arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
    let name = match name.split_once(":function:") {
        Some((arn, rest)) if arn.starts_with("arn:") => rest,
        _ => name,
    };
    match (name.split_once(':'), qualifier) {
        (Some((_, in_name)), Some(q)) if in_name != q => {
            Err(format!("the name's qualifier {in_name:?} and Qualifier {q:?} differ"))
        }
        (None, Some(q)) if !q.is_empty() && q != "$LATEST" => Ok(format!("{name}:{q}")),
        _ => Ok(name.to_string()),
    }
}

/// An Invoke API call, read and checked: what both endpoints run.
struct Call {
    function: String,
    kind: InvocationType,
    log_tail: bool,
    via: Via,
    headers: HeaderMap,
    /// None for a DryRun, which reads no body.
    payload: Option<bytes::Bytes>,
}

impl Call {
    /// The call `req` makes of `name`; a Lambda-shaped refusal otherwise.
    async fn read(invoker: &Invoker, name: &str, query: InvokeQuery, req: Request) -> Result<Call, Response> {
        let headers = req.headers().clone();
        let invalid = |m: String| refusal(StatusCode::BAD_REQUEST, "InvalidParameterValueException", &m);
        let kind = InvocationType::of(&headers).map_err(invalid)?;
        let function = qualified_name(name, query.qualifier.as_deref()).map_err(invalid)?;
        let log_tail = wants_log_tail(&headers).map_err(invalid)? && kind == InvocationType::RequestResponse;
        let (method, raw_path) = (req.method().to_string(), req.uri().path().to_string());
        let raw_query = req.uri().query().unwrap_or("").to_string();
        let body = read_body(req, invoker.max_payload()).await.map_err(|e| match e {
            BodyError::TooLarge { size, limit } => refused(InvokeError::PayloadTooLarge { size, limit }),
        })?;
        // What a SigV4 signature covers — copied and hashed only for a
        // signed call, not on every invoke.
        let authorization = authorization(&headers);
        let sigv4 = authorization
            .as_deref()
            .is_some_and(|a| a.starts_with(stoke_auth::sigv4::ALGORITHM));
        let signed = sigv4.then(|| {
            std::sync::Arc::new(stoke_auth::sigv4::Request {
                method,
                raw_path,
                raw_query,
                headers: header_pairs(&headers),
                body_sha256: hex::encode(sha2::Sha256::digest(&body)),
            })
        });
        let via = Via::Http { authorization, signed };
        let payload = (kind != InvocationType::DryRun).then_some(body);
        Ok(Call {
            function,
            kind,
            log_tail,
            via,
            headers,
            payload,
        })
    }

    /// Run it: DryRun's answer, or the Invoker's outcome.
    async fn run(self, invoker: &Invoker, stream: bool) -> Result<Invoked, Response> {
        let Some(payload) = self.payload else {
            return Err(match invoker.dry_run(&self.function, &self.via).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => refused(e),
            });
        };
        invoker
            .invoke(InvokeRequest {
                function: self.function,
                payload,
                idempotency_key: None,
                trigger: "invoke-api",
                wait: self.kind == InvocationType::RequestResponse,
                via: self.via,
                trace: trace_context(&self.headers),
                http: None,
                stream,
            })
            .await
            .map_err(refused)
    }
}

/// A result that did not come in time.
fn still_running(invocation_id: &str) -> Response {
    let mut resp = refusal(
        StatusCode::GATEWAY_TIMEOUT,
        "ServiceException",
        &format!("the result of {invocation_id} did not arrive in time; the invocation goes on"),
    );
    set(&mut resp, "x-amzn-requestid", invocation_id);
    resp
}

async fn invoke(
    State(invoker): State<Invoker>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    req: Request,
) -> Response {
    let call = match Call::read(&invoker, &name, query, req).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let log_tail = call.log_tail;
    match call.run(&invoker, false).await {
        Err(answer) => answer,
        Ok(Invoked::Queued { invocation_id }) => {
            let mut resp = StatusCode::ACCEPTED.into_response();
            set(&mut resp, "x-amzn-requestid", &invocation_id);
            resp
        }
        Ok(
            Invoked::StillRunning { invocation_id }
            // (Not asked for.)
            | Invoked::Streaming(stoke_bus::Streamed { invocation_id, .. }),
        ) => still_running(&invocation_id),
        Ok(Invoked::Completed(info)) => {
            let mut resp = answered(&info);
            if log_tail {
                match invoker.output_tail(&info.invocation_id, LOG_TAIL_BYTES).await {
                    Ok(text) => set(
                        &mut resp,
                        "x-amz-log-result",
                        &base64::engine::general_purpose::STANDARD.encode(text),
                    ),
                    Err(e) => tracing::warn!(error = %e, "no log tail for the Invoke API"),
                }
            }
            resp
        }
    }
}

/// `InvokeWithResponseStream`: the answer as AWS event stream messages,
/// `PayloadChunk`s as the function writes them (one, for a function that
/// does not stream), then `InvokeComplete` (with `ErrorCode` and
/// `ErrorDetails` when it failed). `RequestResponse` or `DryRun` only.
async fn invoke_streaming(
    State(invoker): State<Invoker>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    req: Request,
) -> Response {
    let call = match Call::read(&invoker, &name, query, req).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    if call.kind == InvocationType::Event {
        return refusal(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "InvokeWithResponseStream takes RequestResponse or DryRun",
        );
    }
    let (invocation_id, version, frames): (
        String,
        u32,
        futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
    ) = match call.run(&invoker, true).await {
        Err(answer) => return answer,
        Ok(Invoked::Queued { invocation_id } | Invoked::StillRunning { invocation_id }) => {
            return still_running(&invocation_id);
        }
        Ok(Invoked::Completed(info)) => {
            let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
            let mut frames = Vec::new();
            if status == InvocationStatus::Succeeded {
                frames.push(eventstream::payload_chunk(&info.result));
                frames.push(eventstream::invoke_complete(None));
            } else {
                let err = info.error.clone().unwrap_or_default();
                let details = String::from_utf8_lossy(&err.raw).into_owned();
                frames.push(eventstream::invoke_complete(Some((&err.error_type, &details))));
            }
            let frames = futures::stream::iter(frames.into_iter().map(Ok));
            (info.invocation_id.clone(), info.version, Box::pin(frames))
        }
        Ok(Invoked::Streaming(s)) => (s.invocation_id.clone(), s.version, Box::pin(stream_frames(s))),
    };
    let mut resp = Response::new(Body::from_stream(frames));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    set(&mut resp, "x-amz-executed-version", &version.to_string());
    set(&mut resp, "x-amzn-requestid", &invocation_id);
    resp
}

/// The event stream messages of a streamed answer, as its parts come.
fn stream_frames(s: stoke_bus::Streamed) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    use stoke_bus::stream::Part;
    futures::stream::unfold((s, false), |(mut s, done)| async move {
        if done {
            return None;
        }
        let complete = |error: Option<(&str, &str)>| (eventstream::invoke_complete(error), true);
        let (frame, last) = match tokio::time::timeout_at(s.deadline, s.parts.next()).await {
            Err(_) => complete(Some(("Stoke.StreamTimeout", "the function's timeout passed"))),
            Ok(Err(e)) => complete(Some(("Stoke.StreamBroken", &e.to_string()))),
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(Part::ContentType(_)))) => (bytes::Bytes::new(), false),
            Ok(Ok(Some(Part::Data(d)))) => (eventstream::payload_chunk(&d), false),
            Ok(Ok(Some(Part::End(Ok(()))))) => complete(None),
            Ok(Ok(Some(Part::End(Err((error_type, doc)))))) => {
                complete(Some((&error_type, &String::from_utf8_lossy(&doc))))
            }
        };
        Some((Ok(frame), (s, last)))
    })
}

/// A finished invocation as Lambda answers it: 200 either way.
fn answered(info: &InvocationInfo) -> Response {
    let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
    let mut resp = if status == InvocationStatus::Succeeded {
        Response::new(Body::from(info.result.clone()))
    } else {
        let err = info.error.clone().unwrap_or_default();
        // The function's own error document, or one made like Lambda's.
        let doc = serde_json::from_slice::<Value>(&err.raw)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({"errorMessage": err.error_message, "errorType": err.error_type}));
        let mut r = Response::new(Body::from(doc.to_string()));
        set(&mut r, "x-amz-function-error", "Unhandled");
        r
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set(&mut resp, "x-amz-executed-version", &info.version.to_string());
    set(&mut resp, "x-amzn-requestid", &info.invocation_id);
    resp
}

/// An invoke the Invoker refused, in Lambda's error shape.
fn refused(e: InvokeError) -> Response {
    let (status, code) = match &e {
        InvokeError::NotFound(_) | InvokeError::NoHttpTrigger(_) => {
            (StatusCode::NOT_FOUND, "ResourceNotFoundException")
        }
        InvokeError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException"),
        InvokeError::InvalidKey(_) | InvokeError::BadRequest(_) => {
            (StatusCode::BAD_REQUEST, "InvalidRequestContentException")
        }
        InvokeError::KeyConflict(_) => (StatusCode::CONFLICT, "ResourceConflictException"),
        InvokeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceException"),
        InvokeError::BadManifest { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException"),
        InvokeError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UnrecognizedClientException"),
        InvokeError::Forbidden(_) => (StatusCode::FORBIDDEN, "AccessDeniedException"),
    };
    if status.is_server_error() {
        tracing::warn!(error = %e, "invoke refused");
    }
    refusal(status, code, &e.to_string())
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({"Type": "User", "message": message}))).into_response();
    set(&mut resp, "x-amzn-errortype", code);
    resp
}

fn set(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_qualifiers_resolve_to_what_the_invoker_takes() {
        let ok = |n: &str, q: Option<&str>| qualified_name(n, q).ok();
        assert_eq!(ok("hello", None).as_deref(), Some("hello"));
        assert_eq!(ok("hello", Some("7")).as_deref(), Some("hello:7"));
        assert_eq!(ok("hello", Some("$LATEST")).as_deref(), Some("hello"));
        assert_eq!(ok("hello:live", None).as_deref(), Some("hello:live"));
        assert_eq!(ok("hello:live", Some("live")).as_deref(), Some("hello:live"));
        assert!(ok("hello:live", Some("7")).is_none(), "two different qualifiers");
        assert_eq!(
            ok("arn:aws:lambda:us-east-1:123456789012:function:hello:3", None).as_deref(),
            Some("hello:3")
        );
    }
}
