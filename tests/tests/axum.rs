//! Rust HTTP functions as Lambda users write them: an axum app behind the
//! official `lambda_http` crate (from the Rust crate registry, unmodified:
//! examples/hello-axum), buffered through `lambda_http::run` and streamed
//! through `run_with_streaming_response`.

use std::time::Duration;

use stoke_tests::{Cluster, Nats, Platform, built_binary, workspace_root};

/// examples/hello-axum/dist with the built binary as its bootstrap, and
/// `extra` appended to its manifest.
fn axum_function(extra: &str) -> tempfile::TempDir {
    let f = tempfile::tempdir().unwrap();
    std::fs::copy(built_binary("hello-axum"), f.path().join("bootstrap")).unwrap();
    let manifest = std::fs::read_to_string(workspace_root().join("examples/hello-axum/dist/stoke.toml")).unwrap();
    std::fs::write(f.path().join("stoke.toml"), format!("{manifest}{extra}")).unwrap();
    f
}

/// The 1x1 PNG the app sends.
const PNG_HEX: &str = "89504e470d0a1a0a0000000d4948445200000001000000010806000000\
    1f15c4890000000d49444154789c6360f80f00010101005a4d6e5e0000000049454e44ae426082";

#[tokio::test]
async fn axum_behind_lambda_http_answers_through_its_function_url() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(axum_function("").path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |path: &str| p.url(&format!("/fn/hello-axum{path}"));

    let r = http.get(url("")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
    assert_eq!(r.text().await.unwrap(), "hello from axum");
    let r = http.get(url("/items/42?q=x%20y")).send().await.unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"id": 42, "q": "x y"})
    );
    let r = http
        .post(url("/echo"))
        .json(&serde_json::json!({"name": "Ferris"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"got": {"name": "Ferris"}})
    );
    // axum's own 404 (and its rejection of a bad path parameter).
    assert_eq!(http.get(url("/nowhere")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(url("/items/x")).send().await.unwrap().status(), 400);
    // Cookies both ways.
    let r = http
        .get(url("/cookies"))
        .header("cookie", "a=1; z=9")
        .send()
        .await
        .unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set, ["b=2", "c=3"]);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["cookie"], "a=1; z=9");
    // A binary body both ways, and a PNG, byte for byte.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x89]).collect();
    let r = http.post(url("/reverse")).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        bytes.iter().rev().copied().collect::<Vec<u8>>()
    );
    let r = http.get(url("/pixel.png")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let png: Vec<u8> = (0..PNG_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PNG_HEX[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(r.bytes().await.unwrap().to_vec(), png, "byte for byte");
}

/// hello-axum in stream mode (`run_with_streaming_response`).
fn streaming_axum() -> tempfile::TempDir {
    let f = axum_function("response = \"stream\"\n");
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        manifest.replace("[[triggers]]", "[env]\nSTREAM = \"1\"\n\n[[triggers]]"),
    )
    .unwrap();
    f
}

/// Its server-sent events through the gateway at `url(path)`: the first
/// reaches the client while the invocation is still running, then the
/// rest; `key` the call's idempotency key, if any. `log` for failures.
async fn events_stream_as_they_come(url: impl Fn(&str) -> String, key: Option<&str>, log: impl Fn() -> String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut req = http.get(url("/fn/hello-axum/events?wait=3000"));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let mut r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", log());
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = r.headers()["x-stoke-invocation-id"].to_str().unwrap().to_string();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    let status: serde_json::Value = http
        .get(url(&format!("/invocations/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Not ended: running, or (a call without a key, recorded only at its
    // end) not in the store yet.
    assert!(
        status["status"] == "running"
            || status["status"] == "queued"
            || (key.is_none() && status["errorType"] == "Stoke.InvocationNotFound"),
        "the first event came before the end: {status}"
    );
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"data: two\n\n", "{}", log());
}

/// `run_with_streaming_response` in stream mode under `stoke up`, whose
/// dispatcher hands the parts to the gateway in-process: the first event
/// reaches the client while the invocation is still running, with a
/// caller's key (the parts also go out on NATS for callers elsewhere) and
/// without.
#[tokio::test]
async fn axum_streams_through_run_with_streaming_response() {
    let f = streaming_axum();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    events_stream_as_they_come(|path| p.url(path), Some("events-1"), || p.log()).await;
    events_stream_as_they_come(|path| p.url(path), None, || p.log()).await;
    let http = reqwest::Client::new();
    // The other routes answer through the stream too.
    let r = http.get(p.url("/fn/hello-axum/items/7?q=s")).send().await.unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"id": 7, "q": "s"})
    );
}

/// The same with the gateway and the dispatcher in processes of their own
/// (`stoke broker`, `stoke dispatcher`, `stoke worker`): the parts come to
/// the gateway over NATS.
#[tokio::test]
async fn axum_streams_across_processes_over_nats() {
    let f = streaming_axum();
    let nats = Nats::start().await.unwrap();
    let c = Cluster::start(&nats, 1).await;
    c.deploy(f.path());
    let url = |path: &str| format!("http://{}{path}", c.http);
    events_stream_as_they_come(url, None, || c.logs()).await;
    events_stream_as_they_come(url, Some("events-2"), || c.logs()).await;
}
