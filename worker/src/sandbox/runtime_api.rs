//! The AWS Lambda Runtime API, served to one sandbox on its own listener.
//!
//! `GET  /2018-06-01/runtime/invocation/next`            → the next event (long poll)
//! `POST /2018-06-01/runtime/invocation/{id}/response`   → 202
//!   (also with `Lambda-Runtime-Function-Response-Mode: streaming`: a
//!   chunked body, an HTTP answer's prelude, error trailers —
//!   `stoke_core::streaming`; kept here as the buffered answer it stands for)
//! `POST /2018-06-01/runtime/invocation/{id}/error`      → 202
//! `POST /2018-06-01/runtime/init/error`                 → 202
//!
//! The listener belongs to exactly one sandbox, so the endpoint itself
//! identifies the caller; a request id that is not the one in flight is
//! refused with 400.
//!
//! The function holds the other end of every connection, so [`serve`]
//! bounds what it can make the worker hold: at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed as soon as they are accepted), a
//! request head must arrive within the sandbox's idle limit (which also
//! closes an idle keep-alive connection), and an error report is read up to
//! [`MAX_ERROR_BODY`] only. `/response` keeps Lambda's limit (6 MiB by
//! default, the worker's `max_response_bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use futures::StreamExt;
use http_body_util::BodyExt as _;
use serde_json::json;
use stoke_core::streaming;
use stoke_proto::{ResponsePart, StreamEnd, WorkerMessage, response_part, worker_message};
use tokio::sync::{Mutex, mpsc, oneshot};

/// A Runtime API connection that acknowledges what it reads at once. A
/// runtime whose client leaves Nagle's algorithm on (`lambda_runtime`'s
/// does) sends a streamed response's second small piece only once the
/// first is acknowledged; with the kernel's delayed ACK that is ~40 ms a
/// piece, which a streamed answer's first byte would wait for.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if buf.filled().len() > before {
            use std::os::fd::AsFd as _;
            super::sys::quick_ack(self.0.as_fd());
        }
        read
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One event handed to the runtime.
pub struct Delivery {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub function_arn: String,
    /// X-Ray form, for `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
    /// W3C form, for `traceparent`.
    pub traceparent: String,
    pub idempotency_key: String,
    pub attempt: u32,
    pub reply: oneshot::Sender<Reply>,
    /// Where a streamed response goes as it comes, when a caller waits on it.
    pub stream: Option<PartSink>,
}

/// Where a streamed response's parts go as they come: up the worker's
/// stream to the dispatcher, which publishes them for the caller. Sending
/// waits while that stream is full, which slows the function's writes.
#[derive(Debug, Clone)]
pub struct PartSink {
    tx: mpsc::Sender<WorkerMessage>,
    invocation_id: String,
    seq: u64,
}

impl PartSink {
    pub fn new(tx: mpsc::Sender<WorkerMessage>, invocation_id: String) -> PartSink {
        PartSink {
            tx,
            invocation_id,
            seq: 0,
        }
    }

    /// Send the next part; false once the stream to the dispatcher is gone.
    async fn send(&mut self, part: response_part::Part) -> bool {
        let msg = WorkerMessage {
            msg: Some(worker_message::Msg::ResponsePart(ResponsePart {
                invocation_id: self.invocation_id.clone(),
                seq: self.seq,
                part: Some(part),
            })),
        };
        self.seq += 1;
        self.tx.send(msg).await.is_ok()
    }

    async fn end(&mut self, error: Option<&(String, Bytes)>) {
        let end = match error {
            None => StreamEnd::default(),
            Some((error_type, doc)) => StreamEnd {
                error_type: error_type.clone(),
                error: doc.to_vec(),
            },
        };
        self.send(response_part::Part::End(end)).await;
    }
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
    stream: Option<PartSink>,
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
    max_stream: usize,
}

/// Largest error report (`/init/error`, `/invocation/{id}/error`) kept;
/// a longer one is cut there and the rest is not read.
pub const MAX_ERROR_BODY: usize = 16 << 10;
/// Connections one sandbox may hold to its Runtime API at once. A runtime
/// needs one (two while it replaces a closed one); the rest of the
/// headroom is for runtimes that pool a few.
pub const MAX_CONNECTIONS: usize = 16;
/// Added to the function's timeout to make the sandbox's idle limit.
pub const IDLE_GRACE: Duration = Duration::from_secs(10);

pub fn new_state(max_response: usize, max_stream: usize) -> (Arc<ApiState>, mpsc::Sender<Delivery>) {
    let (tx, rx) = mpsc::channel(1);
    let state = Arc::new(ApiState {
        deliveries: Mutex::new(rx),
        current: std::sync::Mutex::new(None),
        ready_at: std::sync::OnceLock::new(),
        called_next: AtomicBool::new(false),
        init_error: std::sync::Mutex::new(None),
        max_response,
        max_stream,
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

/// Limits of one sandbox's Runtime API server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections held at once; more are closed when accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request head. hyper's
    /// timer runs whenever it waits for one, so this is also how long a
    /// keep-alive connection may sit idle between requests. A runtime's
    /// connection is idle while its handler runs (between the `/next`
    /// answer and `/response`), which the function's timeout bounds: so
    /// this is the function's timeout plus [`IDLE_GRACE`], and a
    /// well-behaved runtime never meets it.
    pub idle: Duration,
}

/// Serve `app` on `listener` until the returned future is dropped (the
/// sandbox's end): that drops every connection too.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, limits: ServeLimits) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "runtime API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() >= limits.max_connections {
            // Closed at once: the function only hurts itself.
            drop(stream);
            continue;
        }
        // TCP_NODELAY: the runtime's long-poll `/next` answer must not
        // wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.idle)
            .serve_connection(
                hyper_util::rt::TokioIo::new(QuickAck(stream)),
                hyper_util::service::TowerToHyperService::new(app.clone()),
            );
        conns.spawn(async move {
            let _ = conn.await;
        });
    }
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
    // The event's trace: X-Ray form (runtime clients set _X_AMZN_TRACE_ID
    // from it) and the same trace as W3C trace context.
    put("lambda-runtime-trace-id", &d.trace_id);
    put("traceparent", &d.traceparent);
    put("content-type", "application/json");
    *st.current.lock().expect("not poisoned") = Some(Current {
        request_id: d.request_id,
        reply: d.reply,
        stream: d.stream,
    });
    (StatusCode::OK, headers, d.payload).into_response()
}

/// Take the in-flight invocation if `id` names it.
fn take_current(st: &ApiState, id: &str) -> Option<Current> {
    let mut cur = st.current.lock().expect("not poisoned");
    match cur.as_ref() {
        Some(c) if c.request_id == id => cur.take(),
        _ => None,
    }
}

async fn response(State(st): State<Arc<ApiState>>, Path(id): Path<String>, req: Request) -> Response {
    let Some(Current { reply, stream, .. }) = take_current(&st, &id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation in flight with this id",
        );
    };
    if req
        .headers()
        .get(streaming::RESPONSE_MODE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"streaming"))
    {
        return streamed(&st, reply, stream, req).await;
    }
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

/// A streamed response, read to its end: its bytes, or the error its
/// trailers carry; an HTTP answer (prelude, then body) becomes the proxy
/// response it stands for, a broken prelude an error saying what is wrong.
/// With a `sink` (a caller waits on it) every piece is also forwarded as it
/// comes, up to `max_stream` bytes, and the result keeps the first
/// `max_response` of them (an HTTP answer cut there says so in its
/// `x-stoke-stream-truncated` header); without one, the response is held to
/// `max_response`, as a buffered one is.
async fn streamed(st: &ApiState, reply: oneshot::Sender<Reply>, mut sink: Option<PartSink>, req: Request) -> Response {
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let http = content_type.starts_with(streaming::HTTP_INTEGRATION);
    if let Some(s) = sink.as_mut()
        && !s.send(response_part::Part::ContentType(content_type)).await
    {
        sink = None;
    }
    let cap = if sink.is_some() { st.max_stream } else { st.max_response };
    let mut body = req.into_body();
    let mut kept = BytesMut::new();
    let mut total = 0usize;
    let mut failed: Option<(String, Bytes)> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            failed = Some(stream_error("Runtime.StreamBroken", "the response stream broke off"));
            break;
        };
        match frame.into_data() {
            Ok(data) => {
                total += data.len();
                if total > cap {
                    let too_large = stream_error(
                        "Function.ResponseSizeTooLarge",
                        &format!("the streamed response passed {cap} bytes"),
                    );
                    if let Some(s) = sink.as_mut() {
                        s.end(Some(&too_large)).await;
                    }
                    let _ = reply.send(Reply::TooLarge { size: total });
                    return refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Function.ResponseSizeTooLarge",
                        "response exceeds the maximum allowed payload size",
                    );
                }
                let room = st.max_response.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
                if let Some(s) = sink.as_mut()
                    && !s.send(response_part::Part::Data(data.to_vec())).await
                {
                    sink = None;
                }
            }
            Err(frame) => {
                if let Some(t) = frame.trailers_ref()
                    && let Some(kind) = t.get(streaming::ERROR_TYPE_TRAILER).and_then(|v| v.to_str().ok())
                {
                    let doc = t.get(streaming::ERROR_BODY_TRAILER).and_then(|v| v.to_str().ok());
                    failed = Some((kind.to_string(), streaming::trailer_error(kind, doc).into()));
                }
            }
        }
    }
    if let Some(s) = sink.as_mut() {
        s.end(failed.as_ref()).await;
    }
    let answer = match failed {
        Some((error_type, body)) => Reply::Error { error_type, body },
        None if http => match streaming::as_proxy_response(&kept) {
            Ok(mut proxy) => {
                if total > kept.len() {
                    proxy["headers"]["x-stoke-stream-truncated"] = total.to_string().into();
                }
                Reply::Response(proxy.to_string().into())
            }
            Err(why) => {
                let (error_type, body) = stream_error("Runtime.BadStreamingPrelude", &why);
                Reply::Error { error_type, body }
            }
        },
        None => Reply::Response(kept.freeze()),
    };
    let _ = reply.send(answer);
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

/// An error document stoke makes for a streamed response.
fn stream_error(error_type: &str, message: &str) -> (String, Bytes) {
    let doc = json!({"errorType": error_type, "errorMessage": message});
    (error_type.to_string(), Bytes::from(doc.to_string()))
}

async fn error(State(st): State<Arc<ApiState>>, Path(id): Path<String>, headers: HeaderMap, req: Request) -> Response {
    let Some(Current { reply, .. }) = take_current(&st, &id) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no invocation in flight with this id",
        );
    };
    let (error_type, body) = error_report(&headers, req).await;
    let _ = reply.send(Reply::Error { error_type, body });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn init_error(State(st): State<Arc<ApiState>>, headers: HeaderMap, req: Request) -> Response {
    let report = error_report(&headers, req).await;
    *st.init_error.lock().expect("not poisoned") = Some(report);
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

/// An error report's type and body, read up to [`MAX_ERROR_BODY`]. One cut
/// there is replaced by a short one that says so (its type from the
/// header, since the cut JSON cannot be parsed).
async fn error_report(headers: &HeaderMap, req: Request) -> (String, Bytes) {
    let mut stream = req.into_body().into_data_stream();
    let mut body = BytesMut::new();
    let mut cut = false;
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            cut = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    if !cut {
        return (error_type(headers, &body), body);
    }
    let kind = error_type(headers, &Bytes::new());
    let start = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    let message = format!("the function's error report is over {MAX_ERROR_BODY} bytes; it began: {start}");
    let short = json!({"errorType": kind, "errorMessage": message});
    (kind, Bytes::from(short.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Serve a fresh state on a loopback port; returns its address and the
    /// sender of deliveries.
    async fn server(limits: ServeLimits) -> (std::net::SocketAddr, mpsc::Sender<Delivery>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, tx) = new_state(6 << 20, 16 << 20);
        tokio::spawn(serve(listener, router(state), limits));
        (addr, tx)
    }

    /// Whether the server closed `s` within `within` (EOF or reset).
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_silent_ones_time_out() {
        let idle = Duration::from_millis(500);
        let (addr, _tx) = server(ServeLimits {
            max_connections: 4,
            idle,
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // One with a head that never ends.
        held[0].write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        for _ in 0..3 {
            let mut extra = TcpStream::connect(addr).await.unwrap();
            assert!(
                closed_within(&mut extra, Duration::from_millis(300)).await,
                "over the cap"
            );
        }
        let started = std::time::Instant::now();
        for s in &mut held {
            assert!(closed_within(s, idle * 4).await, "a silent connection is closed");
        }
        assert!(started.elapsed() >= idle / 2, "{:?}", started.elapsed());
        // The permits came back.
        let mut again = TcpStream::connect(addr).await.unwrap();
        assert!(!closed_within(&mut again, idle / 4).await);
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let idle = Duration::from_millis(500);
        let (addr, _tx) = server(ServeLimits {
            max_connections: 4,
            idle,
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Kept alive for a while, then closed.
        assert!(!closed_within(&mut s, idle / 4).await);
        assert!(closed_within(&mut s, idle * 4).await);
    }

    #[tokio::test]
    async fn an_error_report_is_read_up_to_its_cap() {
        let (addr, tx) = server(ServeLimits {
            max_connections: 4,
            idle: Duration::from_secs(10),
        })
        .await;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(Delivery {
            request_id: "r1".into(),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: 0,
            function_arn: String::new(),
            trace_id: String::new(),
            traceparent: String::new(),
            idempotency_key: String::new(),
            attempt: 1,
            reply: reply_tx,
            stream: None,
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // A megabyte of error report (more than the cap; the server may
        // close before it has all of it, so write errors are fine).
        let big = format!("{{\"errorType\":\"Big\",\"errorMessage\":\"{}\"}}", "x".repeat(1 << 20));
        let head = format!(
            "POST /2018-06-01/runtime/invocation/r1/error HTTP/1.1\r\nHost: x\r\n\
             Lambda-Runtime-Function-Error-Type: Runtime.Huge\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let _ = s.write_all(big.as_bytes()).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), reply_rx)
            .await
            .unwrap()
            .unwrap();
        let Reply::Error { error_type, body } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(error_type, "Runtime.Huge");
        assert!(body.len() < 2 * 1024, "{} bytes", body.len());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errorType"], "Runtime.Huge");
        assert!(v["errorMessage"].as_str().unwrap().contains("over 16384 bytes"), "{v}");
    }

    /// A streamed HTTP answer with a caller waiting: every piece goes up as
    /// it comes (content type, data, end with the trailers' error), in
    /// order, and the result is the error.
    #[tokio::test]
    async fn a_streamed_response_is_forwarded_as_it_comes() {
        let (addr, tx) = server(ServeLimits {
            max_connections: 4,
            idle: Duration::from_secs(10),
        })
        .await;
        let (reply_tx, reply_rx) = oneshot::channel();
        let (up, mut parts) = mpsc::channel(16);
        tx.send(Delivery {
            request_id: "r1".into(),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: 0,
            function_arn: String::new(),
            trace_id: String::new(),
            traceparent: String::new(),
            idempotency_key: String::new(),
            attempt: 1,
            reply: reply_tx,
            stream: Some(PartSink::new(up, "r1".into())),
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let prelude = b"{\"statusCode\":200}\0\0\0\0\0\0\0\0";
        let head = format!(
            "POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\nHost: x\r\n\
             Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\
             Content-Type: {}\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n{:x}\r\n",
            streaming::HTTP_INTEGRATION,
            prelude.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(prelude).await.unwrap();
        s.write_all(b"\r\n5\r\nfirst\r\n").await.unwrap();
        // The first piece is up before the function has finished.
        let mut got = Vec::new();
        while got.len() < 3 {
            let m = tokio::time::timeout(Duration::from_secs(5), parts.recv())
                .await
                .unwrap()
                .unwrap();
            let Some(worker_message::Msg::ResponsePart(p)) = m.msg else {
                panic!("{m:?}")
            };
            assert_eq!((p.invocation_id.as_str(), p.seq), ("r1", got.len() as u64));
            got.push(p.part.unwrap());
        }
        assert_eq!(
            got[0],
            response_part::Part::ContentType(streaming::HTTP_INTEGRATION.into())
        );
        assert_eq!(got[2], response_part::Part::Data(b"first".to_vec()));
        s.write_all(b"0\r\nLambda-Runtime-Function-Error-Type: Late\r\n\r\n")
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), parts.recv())
            .await
            .unwrap()
            .unwrap();
        let Some(worker_message::Msg::ResponsePart(p)) = m.msg else {
            panic!("{m:?}")
        };
        let Some(response_part::Part::End(end)) = p.part else {
            panic!("{p:?}")
        };
        assert_eq!(end.error_type, "Late");
        let reply = tokio::time::timeout(Duration::from_secs(5), reply_rx)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(reply, Reply::Error { ref error_type, .. } if error_type == "Late"),
            "{reply:?}"
        );
    }
}
