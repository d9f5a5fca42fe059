//! Node.js functions as Lambda users write them, on the host's `node`
//! through examples/hello-node's runtime client (`stoke_runtime.mjs`): ES
//! module and CommonJS handlers, async and callback style, errors and init
//! errors, and an unmodified Express app behind serverless-http (both from
//! npm at test time, pinned).

use std::time::Duration;

use stoke_tests::{Nats, Platform, copy_function, workspace_root};

/// A 1x1 PNG.
const PNG_HEX: &str = "89504e470d0a1a0a0000000d4948445200000001000000010806000000\
    1f15c4890000000d49444154789c6360f80f00010101005a4d6e5e0000000049454e44ae426082";

const EXPRESS: &str = "express@5.3.0";
const SERVERLESS_HTTP: &str = "serverless-http@4.0.0";

/// examples/hello-node in a temp dir, renamed `name`, with `files` added
/// and `handler` as its handler.
fn node_function(name: &str, handler: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-node"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml"))
        .unwrap()
        .replace("name = \"hello-node\"", &format!("name = \"{name}\""))
        .replace("handler = \"index.handler\"", &format!("handler = \"{handler}\""));
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    for (file, text) in files {
        let path = f.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    f
}

#[tokio::test]
async fn node_handlers_answer_as_on_lambda() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    // The example: an ES module, async, reading its function URL event.
    p.deploy(&workspace_root().join("examples/hello-node"));
    let r = p.post("hello-node", r#"{"name":"Ada"}"#).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
    let v = r.json();
    assert_eq!(v["message"], "Hello, Ada!");
    assert!(v["runtime"].as_str().unwrap().starts_with("node v"), "{v}");
    assert!(!v["request_id"].as_str().unwrap().is_empty());
    // An error: 502 with the thrown error's name and message.
    let r = p.post("hello-node", r#"{"fail":"boom"}"#).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        (r.json()["errorType"].as_str(), r.json()["errorMessage"].as_str()),
        (Some("Error"), Some("boom"))
    );

    // CommonJS, callback style, with the context's methods.
    let cjs = node_function(
        "callback",
        "lib/cb.handler",
        &[(
            "lib/cb.js",
            "exports.handler = function (event, context, callback) {\n\
             \x20 setTimeout(() => callback(null, { echo: event, left: context.getRemainingTimeInMillis() > 0, \
             fn: context.functionName }), 10);\n};\n",
        )],
    );
    p.deploy(cjs.path());
    let out = p.cli_ok(&["invoke", "callback", "-d", "{\"a\":1}"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"echo": {"a": 1}, "left": true, "fn": "callback"}));
    // A callback error.
    std::fs::write(
        cjs.path().join("lib/cb.js"),
        "exports.handler = (event, context, callback) => callback(new TypeError('nope'));\n",
    )
    .unwrap();
    p.deploy(cjs.path());
    let r = p.post("callback", "{}").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["errorType"], "TypeError");

    // A handler that is not there: an init error, named.
    let missing = node_function("missing", "index.nothing", &[]);
    p.deploy(missing.path());
    let r = p.post("missing", "{}").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Runtime.HandlerNotFound", "{}", r.text());
}

#[tokio::test]
async fn express_behind_serverless_http_answers_through_its_function_url() {
    let modules = stoke_tests::npm_packages("express-5.3.0-serverless-http-4.0.0", &[EXPRESS, SERVERLESS_HTTP]);
    let app = r#"
const PNG = Buffer.from(process.env.PNG_HEX, "hex");
const express = require("express");
const serverless = require("serverless-http");

const app = express();
app.use(express.json());
app.use(express.raw({ type: "application/octet-stream" }));
app.get("/items/:id", (req, res) => res.json({ id: req.params.id, q: req.query.q }));
app.post("/echo", (req, res) => res.json({ got: req.body, method: req.method, path: req.path }));
app.get("/cookies", (req, res) => {
  res.cookie("b", "2");
  res.cookie("c", "3");
  res.json({ a: req.get("cookie") });
});
app.post("/reverse", (req, res) => res.type("application/octet-stream").send(Buffer.from(req.body).reverse()));
app.get("/pixel.png", (req, res) => res.type("image/png").send(PNG));

module.exports.handler = serverless(app, { binary: ["image/*", "application/octet-stream"] });
"#;
    let f = node_function("shop", "app.handler", &[("app.js", app)]);
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        manifest.replace(
            "[[triggers]]",
            &format!("[env]\nPNG_HEX = \"{PNG_HEX}\"\n\n[[triggers]]"),
        ),
    )
    .unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(f.path().join("node_modules"))
        .status()
        .unwrap();
    assert!(status.success());
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |path: &str| p.url(&format!("/fn/shop{path}"));

    let r = http.get(url("/items/42?q=x%20y")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"id": "42", "q": "x y"})
    );
    let r = http
        .post(url("/echo"))
        .json(&serde_json::json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"got": {"name": "Ada"}, "method": "POST", "path": "/echo"})
    );
    // Express's own 404, passed through.
    let r = http.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("Cannot GET /nowhere"));
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
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set[0].starts_with("b=2") && set[1].starts_with("c=3"), "{set:?}");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["a"], "a=1; z=9");
    // A binary body both ways, and a PNG, byte for byte.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x89]).collect();
    let r = http
        .post(url("/reverse"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
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

/// `awslambda.streamifyResponse` handlers, called as buffered functions:
/// the HTTP prelude gives status, headers and cookies; an error after the
/// first byte (the trailers) fails the call with the thrown error; a broken
/// prelude is named.
#[tokio::test]
async fn streaming_handlers_answer_buffered_callers() {
    let handler = r#"
export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const body = event.body ? JSON.parse(event.body) : {};
  if (body.raw) {
    responseStream.setContentType("application/vnd.awslambda.http-integration-response");
    responseStream.write("not json");
    responseStream.write(Buffer.alloc(8));
    responseStream.end("x");
    return;
  }
  const s = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { "content-type": "text/plain" },
    cookies: ["s=1", "t=2"],
  });
  s.write("hello ");
  await new Promise((r) => setTimeout(r, 20));
  if (body.fail) throw new RangeError("late failure");
  s.write("world");
  s.end();
});
"#;
    let f = node_function("streamer", "stream.handler", &[("stream.mjs", handler)]);
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let r = p.post("streamer", "{}").await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), p.log());
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);
    let r = p.post("streamer", r#"{"fail":true}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        (r.json()["errorType"].as_str(), r.json()["errorMessage"].as_str()),
        (Some("RangeError"), Some("late failure"))
    );
    let r = p.post("streamer", r#"{"raw":true}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Runtime.BadStreamingPrelude", "{}", r.text());
    assert!(
        r.json()["errorMessage"].as_str().unwrap().contains("not JSON"),
        "{}",
        r.text()
    );
}

/// A function URL in stream mode (`response = "stream"`): the answer
/// reaches the client as the function writes it — the first event is read
/// while the invocation is still running (asserted on order, not speed) —
/// server-sent events work, an answer may pass the 6 MiB buffered cap, and
/// an error after the first byte ends the body abruptly.
/// Wait (at most `within`) until invocation `id` has succeeded.
async fn succeeded(p: &Platform, id: &str, within: Duration) {
    let http = reqwest::Client::new();
    let url = p.url(&format!("/invocations/{id}"));
    stoke_tests::eventually(within, &format!("invocation {id} to succeed"), || async {
        let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (v["status"] == "succeeded").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_streamed_answer_reaches_the_client_as_it_comes() {
    let handler = r#"
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const q = event.queryStringParameters ?? {};
  const s = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 200,
    headers: { "content-type": q.big ? "application/octet-stream" : "text/event-stream" },
  });
  if (q.big) {
    const chunk = Buffer.alloc(1 << 20, 120);
    for (let i = 0; i < 8; i++) s.write(chunk);
    s.end();
    return;
  }
  s.write("data: one\n\n");
  await new Promise((r) => setTimeout(r, Number(q.wait ?? 1500)));
  if (q.fail) throw new Error("mid-stream");
  s.write("data: two\n\n");
  s.end();
});
"#;
    let f = node_function("live", "live.handler", &[("live.mjs", handler)]);
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        format!("{manifest}response = \"stream\"\n"),
    )
    .unwrap();
    // The same with a 2 s timeout, and one whose prelude is broken
    // (deployed now, before the streams load the store).
    let short = node_function("shortlive", "live.handler", &[("live.mjs", handler)]);
    let manifest = std::fs::read_to_string(short.path().join("stoke.toml")).unwrap();
    std::fs::write(
        short.path().join("stoke.toml"),
        format!("{manifest}response = \"stream\"\n").replace("timeout = 10", "timeout = 2"),
    )
    .unwrap();
    let broken = node_function(
        "badlive",
        "bad.handler",
        &[(
            "bad.mjs",
            "export const handler = awslambda.streamifyResponse(async (event, s) => {\n\
             \x20 s.setContentType(\"application/vnd.awslambda.http-integration-response\");\n\
             \x20 s.write(\"not json\");\n  s.write(Buffer.alloc(8));\n  s.end(\"body\");\n});\n",
        )],
    );
    let manifest = std::fs::read_to_string(broken.path().join("stoke.toml")).unwrap();
    std::fs::write(
        broken.path().join("stoke.toml"),
        format!("{manifest}response = \"stream\"\n"),
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    p.deploy(short.path());
    p.deploy(broken.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Keyed, so it is on record from acceptance and its status can be read.
    let mut r = http
        .get(p.url("/fn/live?wait=3000"))
        .header("idempotency-key", "live-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", p.log());
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let id = r.headers()["x-stoke-invocation-id"].to_str().unwrap().to_string();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    // The function has not finished: its invocation is not complete yet.
    let status: serde_json::Value = http
        .get(p.url(&format!("/invocations/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(
        status["status"], "succeeded",
        "the first event came before the end: {status}"
    );
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"data: two\n\n");
    succeeded(&p, &id, Duration::from_secs(10)).await;

    // Billed until the stream ended (the function waited 3 s mid-stream).
    let db = p.db().await;
    let billed: i64 = sqlx::query_scalar("SELECT billed_ms FROM attempts WHERE invocation_id = ?")
        .bind(&id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(billed >= 3000, "billed {billed} ms");

    // A client that goes away stops only its own reading: the function
    // runs on to its end, and its result is recorded.
    let mut r = http
        .get(p.url("/fn/live?wait=1500"))
        .header("idempotency-key", "gone-1")
        .send()
        .await
        .unwrap();
    let gone = r.headers()["x-stoke-invocation-id"].to_str().unwrap().to_string();
    assert_eq!(&r.chunk().await.unwrap().unwrap()[..], b"data: one\n\n");
    drop(r);
    succeeded(&p, &gone, Duration::from_secs(15)).await;

    // Past the 6 MiB a buffered answer may have.
    let r = http.get(p.url("/fn/live?big=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 8 << 20);
    assert!(body.iter().all(|b| *b == b'x'));

    // An error after the first byte: the body ends abruptly.
    let mut r = http.get(p.url("/fn/live?fail=1&wait=10")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let ended = loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "an incomplete body, not a complete-looking one: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(got, b"data: one\n\n");

    // A broken prelude, before anything went out: a 502 naming it.
    let r = http.get(p.url("/fn/badlive")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    // Named by the gateway as the stream came, or — when the function
    // finished before its first part arrived — by the recorded result.
    assert!(
        v["errorType"] == "Stoke.BadResponse" || v["errorType"] == "Runtime.BadStreamingPrelude",
        "{v}"
    );
    assert!(v["errorMessage"].as_str().unwrap().contains("not JSON"), "{v}");

    // The timeout still applies: a stream still going at it ends abruptly.
    let mut r = http.get(p.url("/fn/shortlive?wait=8000")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.chunk().await.unwrap().unwrap()[..], b"data: one\n\n");
    let started = std::time::Instant::now();
    let ended = loop {
        match r.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(ended.is_err(), "cut at the timeout, not completed");
    assert!(started.elapsed() < Duration::from_secs(7), "{:?}", started.elapsed());
}

/// Lambda's `InvokeWithResponseStream` from unmodified boto3 (PyPI): a
/// streaming Node function's pieces arrive as `PayloadChunk` events, the
/// first while the invocation still runs, then `InvokeComplete`; a
/// buffered function's answer is one chunk; an error after the first byte
/// is `InvokeComplete` with its `ErrorCode`.
#[tokio::test]
async fn boto3_reads_a_streamed_answer_through_invoke_with_response_stream() {
    let site = stoke_tests::pip_packages("boto3-1.44.18", &["boto3==1.44.18"]);
    let handler = r#"
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write("first ");
  await new Promise((r) => setTimeout(r, event.wait ?? 0));
  if (event.fail) throw new TypeError("after the first byte");
  responseStream.write("second");
  responseStream.end();
});
"#;
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(node_function("pipe", "pipe.handler", &[("pipe.mjs", handler)]).path());
    p.deploy(&workspace_root().join("examples/hello-node"));
    let script = r#"
import json, sys, urllib.error, urllib.request
import boto3
from botocore.config import Config

base = sys.argv[1]
c = boto3.client("lambda", endpoint_url=base, region_name="us-east-1",
                 aws_access_key_id="stoke", aws_secret_access_key="stoke",
                 config=Config(retries={"max_attempts": 0}, read_timeout=60))

def read(name, payload):
    r = c.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(payload))
    rid = r["ResponseMetadata"]["RequestId"]
    events = []
    for ev in r["EventStream"]:
        if "PayloadChunk" in ev:
            e = {"chunk": ev["PayloadChunk"]["Payload"].decode()}
            if not events:
                # A keyless call is found once it has ended: 404 until then.
                try:
                    e["status_then"] = json.load(urllib.request.urlopen(f"{base}/invocations/{rid}"))["status"]
                except urllib.error.HTTPError as err:
                    e["status_then"] = str(err.code)
            events.append(e)
        elif "InvokeComplete" in ev:
            events.append({"complete": ev["InvokeComplete"]})
    return {"version": r.get("ExecutedVersion"), "events": events}

print(json.dumps({
    "streamed": read("pipe", {"wait": 1500}),
    "buffered": read("hello-node", {"name": "Ada"}),
    "failed": read("pipe", {"fail": True}),
}))
"#;
    let run = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &p.url("")])
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        p.log()
    );
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let streamed = &out["streamed"];
    assert_eq!(streamed["version"], "1", "{out}");
    let events = streamed["events"].as_array().unwrap();
    assert_eq!(events[0]["chunk"], "first ", "{out}");
    assert_eq!(
        events[0]["status_then"], "404",
        "the first chunk came before the end: {out}"
    );
    assert_eq!(events[1]["chunk"], "second", "{out}");
    assert!(events[2]["complete"].get("ErrorCode").is_none(), "{out}");
    assert_eq!(events.len(), 3, "{out}");
    // A buffered function: its whole answer in one chunk.
    let buffered = out["buffered"]["events"].as_array().unwrap();
    let answer: serde_json::Value = serde_json::from_str(buffered[0]["chunk"].as_str().unwrap()).unwrap();
    assert_eq!(answer["statusCode"], 200, "{out}");
    assert!(buffered[1].get("complete").is_some(), "{out}");
    // An error after the first byte.
    let failed = out["failed"]["events"].as_array().unwrap();
    assert_eq!(failed[0]["chunk"], "first ", "{out}");
    let complete = &failed.last().unwrap()["complete"];
    assert_eq!(complete["ErrorCode"], "TypeError", "{out}");
    assert!(
        complete["ErrorDetails"]
            .as_str()
            .unwrap()
            .contains("after the first byte"),
        "{out}"
    );
}
