//! The HTTP gateway: function URLs (any method on `/fn/{name}` and
//! `/fn/{name}/{path...}`; `name` may be `name:7` or `name:alias`),
//! `GET /invocations/{id}`, `GET /healthz`, and the routes functions claim
//! at the root (`stoke_core::routes`; a request no route matches is a JSON
//! 404). A function URL's request
//! reaches the function as Lambda's function URL event (payload 2.0,
//! `stoke_bus::http`), with the path under the function's prefix as its
//! `rawPath` — or as its body alone where the trigger says `event = "body"`
//! — and its answer is mapped back as Lambda maps a 2.0 response.
//!
//! Every error is a JSON body in Lambda's error shape,
//! `{"errorType": ..., "errorMessage": ...}`, with a status that says what
//! happened: 404 unknown function, 401/403 a token-protected trigger's
//! token missing or not good for it, 413 payload too large, 431 too many
//! or too large headers, 400 bad key,
//! 502 the function failed, 504 it timed out, 503 stoke cannot accept now.

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use stoke_core::naming;
use stoke_core::trace::TraceContext;
use stoke_proto::{InvocationInfo, InvocationStatus};

use stoke_bus::http::HttpCall;
use stoke_bus::{InvokeError, InvokeRequest, Invoked, Invoker, Via};

pub fn router(invoker: Invoker) -> Router {
    Router::new()
        .route("/fn/{name}", any(invoke_fn))
        .route("/fn/{name}/", any(invoke_fn))
        .route("/fn/{name}/{*path}", any(invoke_fn_path))
        .route("/invocations/{id}", get(get_invocation))
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::lambda_api::router())
        .fallback(routed)
        .layer(axum::middleware::from_fn(header_limits))
        .with_state(invoker)
}

/// Most request headers the gateway takes (API Gateway's limit is 10 KB).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request headers (names and values) the gateway takes.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Refuse a request with too many or too large headers (431), before
/// anything else reads it.
async fn header_limits(req: Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Stoke.HeadersTooLarge",
            format!(
                "{} headers of {bytes} bytes: at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all",
                headers.len()
            ),
        );
    }
    next.run(req).await
}

fn error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"errorType": error_type, "errorMessage": message.into()})),
    )
        .into_response()
}

/// The HTTP form of an invoke refusal: its status, and a JSON body
/// `{"errorType", "errorMessage"}`.
fn refused(e: InvokeError) -> Response {
    {
        let (status, kind) = match &e {
            InvokeError::NotFound(_) | InvokeError::NoHttpTrigger(_) => {
                (StatusCode::NOT_FOUND, "Stoke.FunctionNotFound")
            }
            InvokeError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "Stoke.PayloadTooLarge"),
            InvokeError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "Stoke.InvalidIdempotencyKey"),
            InvokeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Stoke.BadRequest"),
            InvokeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Stoke.Unavailable"),
            InvokeError::BadManifest { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "Stoke.BadManifest"),
            InvokeError::KeyConflict(_) => (StatusCode::CONFLICT, "Stoke.IdempotencyKeyConflict"),
            InvokeError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "Stoke.Unauthenticated"),
            InvokeError::Forbidden(_) => (StatusCode::FORBIDDEN, "Stoke.Forbidden"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "invoke refused");
        }
        let mut resp = error(status, kind, e.to_string());
        if status == StatusCode::UNAUTHORIZED {
            set(resp.headers_mut(), header::WWW_AUTHENTICATE, "Bearer");
        }
        resp
    }
}

/// The `Authorization` header, for token-protected HTTP triggers.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Consume a body without keeping it.
async fn drain(body: axum::body::Body) {
    use futures::StreamExt as _;
    let mut data = body.into_data_stream();
    while let Some(Ok(_)) = data.next().await {}
}

/// The address a request came from over TLS (plain TCP gives axum's own
/// `ConnectInfo<SocketAddr>`): the event's `sourceIp`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// A request body over the payload limit.
pub(crate) enum BodyError {
    TooLarge { size: usize, limit: usize },
}

/// The body of `req`, at most `limit` bytes. One declared larger is
/// refused before it is read — though up to twice the limit is read and
/// dropped, so the client, still sending, sees the 413 instead of a reset
/// connection; anything larger is cut off at once.
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared.filter(|s| *s > limit) {
        if size <= limit.saturating_mul(2) {
            drain(req.into_body()).await;
        }
        return Err(BodyError::TooLarge { size, limit });
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| BodyError::TooLarge { size: limit + 1, limit })
}

/// A function URL with a path under the function's prefix.
async fn invoke_fn_path(
    State(invoker): State<Invoker>,
    Path((name, _path)): Path<(String, String)>,
    req: Request,
) -> Response {
    invoke_fn(State(invoker), Path(name), req).await
}

/// The path under `/fn/<name>` as sent (percent-encoded), `/` for none.
fn path_under_function(path: &str) -> String {
    match path.strip_prefix("/fn/").and_then(|p| p.split_once('/')) {
        Some((_, rest)) => format!("/{rest}"),
        None => "/".into(),
    }
}

async fn invoke_fn(State(invoker): State<Invoker>, Path(name): Path<String>, req: Request) -> Response {
    let raw_path = path_under_function(req.uri().path());
    call_function(invoker, name, raw_path, None, req).await
}

/// A request to no path of the gateway's own: the function whose route
/// (`stoke_core::routes`) it matches gets it, with its whole path. A CORS
/// preflight no route takes as `OPTIONS` goes to the route of the method it
/// asks for, whose function's CORS answers it.
async fn routed(State(invoker): State<Invoker>, req: Request) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    let (method, path) = (req.method().as_str(), req.uri().path());
    let mut found = invoker.route(host, method, path).await;
    let preflight_for = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .filter(|_| crate::cors::is_preflight(req.method(), req.headers()));
    if let (Ok(None), Some(asked)) = (&found, preflight_for) {
        found = match invoker.route(host, asked, path).await {
            Ok(Some(r)) if invoker.cors(&r.function).await.is_some() => Ok(Some(r)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
    }
    match found {
        Err(e) => refused(e),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "Stoke.RouteNotFound",
            format!(
                "no route matches {method} {path} (function URLs are under /fn/NAME; `stoke routes` lists the routes)"
            ),
        ),
        Ok(Some(route)) => {
            let raw_path = path.to_string();
            call_function(invoker, route.function.clone(), raw_path, Some(route), req).await
        }
    }
}

/// Run `name` for an HTTP request whose path, as the function sees it, is
/// `raw_path` — with the function's CORS, when a browser asks from another
/// origin (only then is it looked up).
async fn call_function(
    invoker: Invoker,
    name: String,
    raw_path: String,
    route: Option<stoke_core::routes::RouteMatch>,
    req: Request,
) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return run_function(invoker, name, raw_path, route, req).await;
    };
    let Some(cors) = invoker.cors(&name).await else {
        return run_function(invoker, name, raw_path, route, req).await;
    };
    if crate::cors::is_preflight(req.method(), req.headers()) {
        return crate::cors::preflight(&cors, &origin, req.headers());
    }
    let mut resp = run_function(invoker, name, raw_path, route, req).await;
    crate::cors::decorate(&cors, &origin, resp.headers_mut());
    resp
}

async fn run_function(
    invoker: Invoker,
    name: String,
    raw_path: String,
    route: Option<stoke_core::routes::RouteMatch>,
    req: Request,
) -> Response {
    let limit = invoker.max_payload();
    let method = req.method().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let protocol = format!("{:?}", req.version());
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.0))
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let payload = match read_body(req, limit).await {
        Ok(p) => p,
        Err(BodyError::TooLarge { size, limit }) => return refused(InvokeError::PayloadTooLarge { size, limit }),
    };
    let wait = !headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(k)) => Some(k.to_string()),
        Some(Err(_)) => return refused(stoke_bus::ids::InvalidKey("must be printable ASCII").into()),
        None => None,
    };
    let http = HttpCall {
        method,
        raw_path,
        raw_query,
        headers: header_pairs(&headers),
        body: payload.clone(),
        protocol,
        source_ip,
        route,
    };
    let function = name.clone();
    let outcome = invoker
        .invoke(InvokeRequest {
            function: name,
            payload,
            idempotency_key,
            trigger: "http",
            wait,
            http: Some(http),
            // Streamed when the function's trigger says so.
            stream: true,
            via: Via::Http {
                authorization: authorization(&headers),
                signed: None,
            },
            trace: trace_context(&headers),
        })
        .await;
    match outcome {
        Err(e) => refused(e),
        Ok(Invoked::Queued { invocation_id }) => {
            let location = format!("/invocations/{invocation_id}");
            let mut resp = (
                StatusCode::ACCEPTED,
                axum::Json(json!({"invocationId": invocation_id, "status": "queued", "location": location})),
            )
                .into_response();
            set(resp.headers_mut(), header::LOCATION, &location);
            set(
                resp.headers_mut(),
                HeaderName::from_static("x-stoke-invocation-id"),
                &invocation_id,
            );
            resp
        }
        Ok(Invoked::StillRunning { invocation_id }) => {
            let location = format!("/invocations/{invocation_id}");
            let mut resp = (
                StatusCode::GATEWAY_TIMEOUT,
                axum::Json(json!({
                    "errorType": "Stoke.StillRunning",
                    "errorMessage": "the result did not arrive in time; the invocation goes on, poll its location",
                    "invocationId": invocation_id,
                    "location": location,
                })),
            )
                .into_response();
            set(resp.headers_mut(), header::LOCATION, &location);
            resp
        }
        Ok(Invoked::Completed(info)) => completed_response(&info),
        Ok(Invoked::Streaming(s)) => crate::streamed::respond(&function, s).await,
    }
}

/// The caller's trace context: a valid `traceparent`, else a valid
/// `X-Amzn-Trace-Id`, else none (the invoker starts a trace). A malformed
/// header is ignored, never refused.
/// A request's headers as (name, value) pairs, those whose value is not
/// text left out (what the 2.0 event and SigV4 both take).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

pub(crate) fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    TraceContext::from_headers(text(naming::headers::TRACEPARENT), text(naming::headers::XRAY_TRACE_ID))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Map a finished invocation to HTTP the way API Gateway maps a Lambda
/// proxy response; anything else is returned as JSON.
fn completed_response(info: &InvocationInfo) -> Response {
    let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
    let mut resp = match status {
        InvocationStatus::Succeeded => crate::proxy::response(&info.result).unwrap_or_else(|why| {
            error(
                StatusCode::BAD_GATEWAY,
                "Stoke.BadResponse",
                format!("function {:?} answered an invalid proxy response: {why}", info.function),
            )
        }),
        InvocationStatus::TimedOut => error_body(StatusCode::GATEWAY_TIMEOUT, info),
        _ => error_body(StatusCode::BAD_GATEWAY, info),
    };
    set(
        resp.headers_mut(),
        HeaderName::from_static("x-stoke-invocation-id"),
        &info.invocation_id,
    );
    set(
        resp.headers_mut(),
        HeaderName::from_static("x-stoke-attempts"),
        &info.attempts.to_string(),
    );
    resp
}

fn error_body(status: StatusCode, info: &InvocationInfo) -> Response {
    let err = info.error.clone().unwrap_or_default();
    // Prefer the function's own error document; fill in what it lacks.
    let mut body = serde_json::from_slice::<Value>(&err.raw)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let obj = body.as_object_mut().expect("checked object");
    obj.entry("errorType")
        .or_insert_with(|| Value::from(err.error_type.clone()));
    obj.entry("errorMessage")
        .or_insert_with(|| Value::from(err.error_message.clone()));
    obj.insert("invocationId".into(), Value::from(info.invocation_id.clone()));
    (status, axum::Json(body)).into_response()
}

async fn get_invocation(State(invoker): State<Invoker>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match invoker.http_status(&id, authorization(&headers).as_deref()).await {
        Err(e) => refused(e),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "Stoke.InvocationNotFound",
            format!("invocation {id:?} not found"),
        ),
        Ok(Some(info)) => axum::Json(invocation_json(&info)).into_response(),
    }
}

/// The JSON view of an invocation (`GET /invocations/{id}`).
pub fn invocation_json(info: &InvocationInfo) -> Value {
    let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
    let status = status
        .as_str_name()
        .trim_start_matches("INVOCATION_STATUS_")
        .to_ascii_lowercase();
    let result = if status == "succeeded" {
        serde_json::from_slice::<Value>(&info.result)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&info.result).into_owned()))
    } else {
        Value::Null
    };
    let error = info.error.as_ref().map(|e| {
        json!({"errorType": e.error_type, "errorMessage": e.error_message,
               "raw": serde_json::from_slice::<Value>(&e.raw).unwrap_or(Value::Null)})
    });
    json!({
        "invocationId": info.invocation_id,
        "function": info.function,
        "version": info.version,
        "status": status,
        "attempts": info.attempts,
        "idempotencyKey": info.idempotency_key,
        "trigger": info.trigger,
        "createdAt": info.created_unix_ms,
        "completedAt": (info.completed_unix_ms != 0).then_some(info.completed_unix_ms),
        "result": result,
        "error": error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(r: Response) -> (StatusCode, HeaderMap, Vec<u8>) {
        let (parts, body) = r.into_parts();
        (
            parts.status,
            parts.headers,
            axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec(),
        )
    }

    #[tokio::test]
    async fn failures_carry_the_function_error() {
        let info = InvocationInfo {
            invocation_id: "i".into(),
            status: InvocationStatus::Failed as i32,
            error: Some(stoke_proto::ErrorInfo {
                error_type: "ValueError".into(),
                error_message: "bad".into(),
                raw: br#"{"errorType":"ValueError","errorMessage":"bad","stackTrace":["x"]}"#.to_vec(),
            }),
            ..Default::default()
        };
        let (status, _, body) = body_of(completed_response(&info)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorType"], "ValueError");
        assert_eq!(v["stackTrace"][0], "x");
        assert_eq!(v["invocationId"], "i");
        let timed_out = InvocationInfo {
            status: InvocationStatus::TimedOut as i32,
            ..info
        };
        assert_eq!(
            body_of(completed_response(&timed_out)).await.0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
