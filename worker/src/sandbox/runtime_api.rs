//! The AWS Lambda Runtime API, served to one sandbox on its own listener.
//!
//! `GET  /2018-06-01/runtime/invocation/next`            → the next event (long poll)
//! `POST /2018-06-01/runtime/invocation/{id}/response`   → 202
//! `POST /2018-06-01/runtime/invocation/{id}/error`      → 202
//! `POST /2018-06-01/runtime/init/error`                 → 202
//!
//! The listener belongs to exactly one sandbox, so the endpoint itself
//! identifies the caller; a request id that is not the one in flight is
//! refused with 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{Mutex, mpsc, oneshot};

/// One event handed to the runtime.
pub struct Delivery {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub function_arn: String,
    pub trace_id: String,
    pub idempotency_key: String,
    pub attempt: u32,
    pub reply: oneshot::Sender<Reply>,
}

/// What the runtime said about an event.
#[derive(Debug)]
pub enum Reply {
    Response(Bytes),
    Error {
        error_type: String,
        body: Bytes,
    },
    /// The response exceeded the cap; the runtime was told 413.
    TooLarge {
        size: usize,
    },
}

struct Current {
    request_id: String,
    reply: oneshot::Sender<Reply>,
}

pub struct ApiState {
    deliveries: Mutex<mpsc::Receiver<Delivery>>,
    current: std::sync::Mutex<Option<Current>>,
    /// When the first `/next` came: the runtime finished initialising.
    pub ready_at: std::sync::OnceLock<std::time::Instant>,
    pub called_next: AtomicBool,
    /// The body of `/init/error`, if the runtime reported one.
    pub init_error: std::sync::Mutex<Option<(String, Bytes)>>,
    max_response: usize,
}

const MAX_ERROR_BODY: usize = 1 << 20;

pub fn new_state(max_response: usize) -> (Arc<ApiState>, mpsc::Sender<Delivery>) {
    let (tx, rx) = mpsc::channel(1);
    let state = Arc::new(ApiState {
        deliveries: Mutex::new(rx),
        current: std::sync::Mutex::new(None),
        ready_at: std::sync::OnceLock::new(),
        called_next: AtomicBool::new(false),
        init_error: std::sync::Mutex::new(None),
        max_response,
    });
    (state, tx)
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(state)
}

fn refuse(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorType": error_type, "errorMessage": message})),
    )
        .into_response()
}

async fn next(State(st): State<Arc<ApiState>>) -> Response {
    if !st.called_next.swap(true, Ordering::SeqCst) {
        let _ = st.ready_at.set(std::time::Instant::now());
    }
    let delivery = st.deliveries.lock().await.recv().await;
    let Some(d) = delivery else {
        return refuse(StatusCode::GONE, "Runtime.Shutdown", "the sandbox is shutting down");
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &d.request_id);
    put("lambda-runtime-deadline-ms", &d.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &d.function_arn);
    // stoke's own: the event's idempotency key and which attempt this is.
    put("stoke-idempotency-key", &d.idempotency_key);
    put("stoke-attempt", &d.attempt.to_string());
    put("lambda-runtime-trace-id", &d.trace_id);
    put("content-type", "application/json");
    *st.current.lock().expect("not poisoned") = Some(Current {
        request_id: d.request_id,
        reply: d.reply,
    });
    (StatusCode::OK, headers, d.payload).into_response()
}

/// Take the in-flight invocation if `id` names it.
fn take_current(st: &ApiState, id: &str) -> Option<oneshot::Sender<Reply>> {
    let mut cur = st.current.lock().expect("not poisoned");
    match cur.as_ref() {
        Some(c) if c.request_id == id => cur.take().map(|c| c.reply),
        _ => None,
    }
}

async fn response(State(st): State<Arc<ApiState>>, Path(id): Path<String>, req: Request) -> Response {
    let Some(reply) = take_current(&st, &id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation in flight with this id",
        );
    };
    match axum::body::to_bytes(req.into_body(), st.max_response).await {
        Ok(body) => {
            let _ = reply.send(Reply::Response(body));
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
        }
        Err(_) => {
            let _ = reply.send(Reply::TooLarge {
                size: st.max_response + 1,
            });
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Function.ResponseSizeTooLarge",
                "response exceeds the maximum allowed payload size",
            )
        }
    }
}

async fn error(State(st): State<Arc<ApiState>>, Path(id): Path<String>, headers: HeaderMap, req: Request) -> Response {
    let Some(reply) = take_current(&st, &id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation in flight with this id",
        );
    };
    let body = axum::body::to_bytes(req.into_body(), MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let _ = reply.send(Reply::Error {
        error_type: error_type(&headers, &body),
        body,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn init_error(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let kind = error_type(&headers, &body);
    *st.init_error.lock().expect("not poisoned") = Some((kind, body));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

/// errorType from the body if it has one, else the header, else a default.
fn error_type(headers: &HeaderMap, body: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errorType").and_then(|t| t.as_str()).map(str::to_string))
        .filter(|s| !s.is_empty())
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "Function.Error".to_string())
}
