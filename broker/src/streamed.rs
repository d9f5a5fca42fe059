//! A streamed answer, sent to the client as it comes (a function URL or
//! route whose http trigger says `response = "stream"`, and a runtime that
//! streams). An HTTP answer's prelude (status, headers, cookies) is read
//! first and becomes the response's head; a prelude that does not parse,
//! or a function that fails before its prelude is complete, is a 502 as a
//! buffered answer would be. After the head has gone out nothing can
//! change the status: an error in the trailers, a lost part, a worker that
//! vanished or the function's timeout (by the stream's deadline) end the
//! body abruptly, so the client sees an incomplete response, never a
//! complete-looking one. A client that goes away stops the reading; the
//! function runs on to its end (its result is recorded, buffered, as any).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use stoke_bus::Streamed;
use stoke_bus::stream::{Part, Parts};
use stoke_core::streaming;

/// Why a stream stopped short, for the log.
fn broken(invocation_id: &str, why: impl std::fmt::Display) -> std::io::Error {
    tracing::warn!(invocation = %invocation_id, %why, "streamed response ended abruptly");
    std::io::Error::other(why.to_string())
}

/// The response for `s`, a stream `function` has begun.
pub(crate) async fn respond(function: &str, s: Streamed) -> Response {
    let Streamed {
        invocation_id,
        content_type,
        mut parts,
        deadline,
        ..
    } = s;
    let failed = |why: String| {
        let mut r = (
            StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({
                "errorType": "Stoke.BadResponse",
                "errorMessage": format!("function {function:?} streamed an invalid answer: {why}"),
                "invocationId": invocation_id,
            })),
        )
            .into_response();
        set_id(r.headers_mut(), &invocation_id);
        r
    };
    let (status, mut headers, first) = if content_type.starts_with(streaming::HTTP_INTEGRATION) {
        let mut pending = BytesMut::new();
        loop {
            let part = match tokio::time::timeout_at(deadline, parts.next()).await {
                Err(_) => return failed("the prelude did not come within the function's timeout".into()),
                Ok(Err(e)) => return failed(e.to_string()),
                Ok(Ok(p)) => p,
            };
            match part {
                Some(Part::Data(d)) => {
                    pending.extend_from_slice(&d);
                    match streaming::split_prelude(&pending) {
                        Err(why) => return failed(why),
                        Ok(None) => continue,
                        Ok(Some((prelude, body_start))) => match crate::proxy::prelude_head(prelude) {
                            Err(why) => return failed(why),
                            Ok((status, headers)) => break (status, headers, pending.split_off(body_start).freeze()),
                        },
                    }
                }
                Some(Part::ContentType(_)) => continue,
                Some(Part::End(Err((error_type, doc)))) => return function_error(&invocation_id, &error_type, &doc),
                Some(Part::End(Ok(()))) | None => {
                    return failed("it ended before the prelude's delimiter (8 NUL bytes)".into());
                }
            }
        }
    } else {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        (StatusCode::OK, h, Bytes::new())
    };
    set_id(&mut headers, &invocation_id);
    let body = futures::stream::unfold(
        (Some(first).filter(|b| !b.is_empty()), parts, invocation_id, false),
        move |(first, mut parts, id, done): (Option<Bytes>, Parts, String, bool)| async move {
            if let Some(b) = first {
                return Some((Ok(b), (None, parts, id, done)));
            }
            if done {
                return None;
            }
            let next = match tokio::time::timeout_at(deadline, parts.next()).await {
                Err(_) => Err(broken(&id, "the function's timeout passed before the stream ended")),
                Ok(Err(e)) => Err(broken(&id, e)),
                Ok(Ok(None) | Ok(Some(Part::End(Ok(()))))) => return None,
                Ok(Ok(Some(Part::End(Err((error_type, _)))))) => {
                    Err(broken(&id, format!("the function failed mid-stream: {error_type}")))
                }
                Ok(Ok(Some(Part::Data(d)))) => Ok(d),
                Ok(Ok(Some(Part::ContentType(_)))) => Ok(Bytes::new()),
            };
            let done = next.is_err();
            Some((next, (None, parts, id, done)))
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A function that failed before its answer began: 502 with its error.
fn function_error(invocation_id: &str, error_type: &str, doc: &[u8]) -> Response {
    let mut body = serde_json::from_slice::<serde_json::Value>(doc)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({"errorType": error_type}));
    body["invocationId"] = invocation_id.into();
    let mut r = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
    set_id(r.headers_mut(), invocation_id);
    r
}

fn set_id(h: &mut HeaderMap, invocation_id: &str) {
    if let Ok(v) = HeaderValue::from_str(invocation_id) {
        h.insert("x-stoke-invocation-id", v);
    }
}
