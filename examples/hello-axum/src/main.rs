//! An ordinary axum app run as a Lambda HTTP function by the official
//! `lambda_http` crate, exactly as on AWS: `lambda_http::run(app)` (or, with
//! `STREAM=1` in its environment, `run_with_streaming_response`, which
//! streams the body through Lambda's streaming response mode). stoke's
//! function URL event (payload 2.0) is what `lambda_http` turns into the
//! request axum routes.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0xf8, 0x0f, 0x00, 0x01, 0x01, 0x01, 0x00, 0x5a, 0x4d, 0x6e, 0x5e, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

async fn hello() -> &'static str {
    "hello from axum"
}

async fn item(Path(id): Path<u32>, Query(q): Query<HashMap<String, String>>) -> axum::Json<Value> {
    axum::Json(json!({"id": id, "q": q.get("q")}))
}

async fn echo(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    axum::Json(json!({"got": body}))
}

async fn cookies(headers: HeaderMap) -> Response {
    let got = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut r = axum::Json(json!({"cookie": got})).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, "b=2".parse().expect("a header value"));
    r.headers_mut()
        .append(header::SET_COOKIE, "c=3".parse().expect("a header value"));
    r
}

async fn reverse(body: Bytes) -> Response {
    let mut v = body.to_vec();
    v.reverse();
    ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()
}

async fn png() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], PNG).into_response()
}

/// Two server-sent events, the second after `?wait=` ms.
async fn events(Query(q): Query<HashMap<String, String>>) -> Response {
    let wait = q.get("wait").and_then(|w| w.parse().ok()).unwrap_or(0);
    let stream = futures::stream::unfold(0, move |i| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(Bytes::from("data: one\n\n")), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                Some((Ok(Bytes::from("data: two\n\n")), 2))
            }
            _ => None,
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `?n=` bytes of `x`, in 64 KiB pieces (the benchmark's streamed answer).
async fn bytes_of(Query(q): Query<HashMap<String, String>>) -> Response {
    let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(1024);
    let stream = futures::stream::unfold(n, |left| async move {
        (left > 0).then(|| {
            let piece = left.min(64 << 10);
            (Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; piece])), left - piece)
        })
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn app() -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/items/{id}", get(item))
        .route("/echo", post(echo))
        .route("/cookies", get(cookies))
        .route("/reverse", post(reverse))
        .route("/pixel.png", get(png))
        .route("/events", get(events))
        .route("/bytes", get(bytes_of))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    if std::env::var_os("STREAM").is_some() {
        lambda_http::run_with_streaming_response(app()).await
    } else {
        lambda_http::run(app()).await
    }
}
