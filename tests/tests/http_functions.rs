//! HTTP functions as Lambda users write them: a request to a function URL
//! (`/fn/<name>/<path>`, any method) reaches the function as Lambda's
//! function URL event (payload 2.0), so the handler every Lambda tutorial
//! shows and unmodified web frameworks behind their Lambda adapters answer
//! as they would on AWS. The frameworks come from PyPI at test time
//! (pinned), never imitated.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use stoke_tests::{Nats, Platform, copy_function, echo_function, hello_with, workspace_root};

const FASTAPI: &str = "fastapi==0.165.0";
const MANGUM: &str = "mangum==0.22.0";

/// FastAPI and Mangum with their dependencies, installed once from PyPI
/// under target/test-cache (a clean clone fetches them once).
fn fastapi_libraries() -> PathBuf {
    stoke_tests::pip_packages("fastapi-0.165.0-mangum-0.22.0", &[FASTAPI, MANGUM])
}

/// A FastAPI app behind Mangum, as a function `shop`: hello-python's
/// runtime client, the app, and the libraries under vendor/.
fn fastapi_function() -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::write(
        f.path().join("app.py"),
        r#"
from fastapi import FastAPI, Request, Response
from mangum import Mangum

app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/echo")
async def echo(request: Request):
    return {"got": await request.json(), "method": request.method, "path": request.url.path}


@app.get("/cookies")
def cookies(request: Request, response: Response):
    response.set_cookie("b", "2")
    response.set_cookie("c", "3")
    return {"a": request.cookies.get("a")}


@app.post("/reverse")
async def reverse(request: Request):
    data = await request.body()
    return Response(content=data[::-1], media_type="application/octet-stream")


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f80f00010101005a4d6e5e0000000049454e44ae426082"
)


@app.get("/pixel.png")
def pixel():
    return Response(content=PNG, media_type="image/png")


handler = Mangum(app, lifespan="off")
"#,
    )
    .unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        "name = \"shop\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\nhandler = \"app.handler\"\n\
         memory = 256\ntimeout = 20\n[env]\nPYTHONPATH = \"/var/task/vendor\"\n[[triggers]]\nhttp = true\n",
    )
    .unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(fastapi_libraries())
        .arg(f.path().join("vendor"))
        .status()
        .unwrap();
    assert!(status.success());
    f
}

#[tokio::test]
async fn fastapi_behind_mangum_answers_through_its_function_url() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(fastapi_function().path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |path: &str| p.url(&format!("/fn/shop{path}"));

    // Path parameters and the query string, routed by FastAPI itself.
    let r = http.get(url("/items/42?q=x%20y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"item_id": 42, "q": "x y"})
    );
    // A JSON body, and the path as the app sees it.
    let r = http
        .post(url("/echo"))
        .json(&serde_json::json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"got": {"name": "Ada"}, "method": "POST", "path": "/echo"})
    );
    // The framework's own 404, passed through.
    let r = http.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["detail"], "Not Found");
    // Cookies both ways: each set cookie its own Set-Cookie header.
    let r = http
        .get(url("/cookies"))
        .header("cookie", "a=1; z=9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set[0].starts_with("b=2") && set[1].starts_with("c=3"), "{set:?}");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["a"], "1");
    // A binary body in and out, byte for byte.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x89]).collect();
    let r = http.post(url("/reverse")).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let back = r.bytes().await.unwrap().to_vec();
    assert_eq!(back, bytes.iter().rev().copied().collect::<Vec<u8>>());
    // A PNG response, byte for byte.
    let r = http.get(url("/pixel.png")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    assert_eq!(png.len(), 68);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[png.len() - 8..], b"IEND\xaeB`\x82");
}

/// The handler every Lambda tutorial shows reads the request from
/// event["body"]: it must greet Ada, not the world.
#[tokio::test]
async fn the_tutorial_handler_reads_the_body_of_the_request() {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::write(
        f.path().join("tutorial.py"),
        r#"
import json


def handler(event, context):
    name = json.loads(event.get("body") or "{}").get("name", "world")
    return {"statusCode": 200, "body": f"hello, {name}"}
"#,
    )
    .unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        "name = \"tutorial\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\nhandler = \"tutorial.handler\"\n",
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let r = p.post("tutorial", r#"{"name":"Ada"}"#).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello, Ada"));

    // The example function reads its request the same way, on any method
    // and path under its URL.
    p.deploy(hello_with("").path());
    let r = p.post("hello", r#"{"name":"Ada"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["message"], "Hello, Ada!");
    assert_eq!(v["http"]["method"], "POST");
    assert_eq!(v["http"]["path"], "/");
    let r = p.get("/fn/hello/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["http"]["path"],
        "/",
        "a trailing slash is the root under the function"
    );
    let r = p.get("/fn/hello/a/b?x=1&x=2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["http"]["path"], "/a/b");
    assert_eq!(v["http"]["query"]["x"], "1,2");
    assert_eq!(v["message"], "Hello, world!");
}

/// What the event cannot describe is refused, naming the problem; a
/// trigger with `event = "body"` gets the body alone.
#[tokio::test]
async fn malformed_requests_are_refused_and_body_events_are_an_opt_in() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("").path());
    let r = p.get("/fn/hello/x?name=%zz").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Stoke.BadRequest", "{}", r.text());
    assert!(r.text().contains("%zz"), "{}", r.text());
    // Oversized or too many headers: 431, before any function runs.
    let http = reqwest::Client::new();
    let r = http
        .get(p.url("/fn/hello"))
        .header("x-big", "a".repeat(128 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let mut many = http.get(p.url("/fn/hello"));
    for i in 0..200 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let r = many.send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(p.get("/fn/hello").await.status, 200, "nothing else disturbed");
    // An invalid proxy response: 502 naming the function and the fault.
    let bad = echo_function("badproxy", "");
    std::fs::write(
        bad.path().join("echo.py"),
        "def handler(event, context):\n    return {\"statusCode\": 200, \"headers\": {\"bad name\": \"x\"}}\n",
    )
    .unwrap();
    p.deploy(bad.path());
    let r = p.get("/fn/badproxy").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Stoke.BadResponse");
    let message = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(
        message.contains("\"badproxy\"") && message.contains("\"bad name\" is not a header name"),
        "{message}"
    );

    let f = copy_function(&workspace_root().join("examples/hello-python"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml"))
        .unwrap()
        .replace("name = \"hello\"", "name = \"raw\"")
        .replace("http = true", "http = true\nevent = \"body\"");
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    p.deploy(f.path());
    let r = p.post("raw", r#"{"name":"Ada"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["message"], "Hello, Ada!");
    assert!(v.get("http").is_none(), "the body alone, not a request: {v}");
}

/// boto3 (from PyPI, unmodified) calling the Lambda Invoke API on the
/// gateway: every invocation type, a qualifier, a function error, an
/// unknown function; its answers, as boto3 reads them, printed as JSON.
#[tokio::test]
async fn boto3_invokes_through_the_lambda_invoke_api() {
    let site = stoke_tests::pip_packages("boto3-1.44.18", &["boto3==1.44.18"]);
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("").path());
    p.deploy(hello_with("max_attempts = 2").path());
    let talker = echo_function("talker", "");
    std::fs::write(
        talker.path().join("echo.py"),
        "import sys, time\n\ndef handler(event, context):\n    for i in range(500):\n        print(f'line {i:04}')\n    \
         sys.stdout.flush()\n    time.sleep(0.2)  # the two pipes are read apart: stderr's line comes last\n    \
         print('to stderr', file=sys.stderr)\n    return 'done'\n",
    )
    .unwrap();
    p.deploy(talker.path());
    let script = r#"
import base64, json, sys
import boto3
from botocore.config import Config

c = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="stoke", aws_secret_access_key="stoke",
                 config=Config(retries={"max_attempts": 0}))
out = {}
r = c.invoke(FunctionName="hello", Payload=json.dumps({"name": "Ada"}))
out["sync"] = {"status": r["StatusCode"], "version": r.get("ExecutedVersion"),
               "error": r.get("FunctionError"), "payload": json.loads(r["Payload"].read())}
r = c.invoke(FunctionName="hello", Qualifier="1", Payload=b"{}")
out["qualified"] = {"status": r["StatusCode"], "version": r.get("ExecutedVersion")}
r = c.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:hello:1", Payload=b"{}")
out["arn"] = {"version": r.get("ExecutedVersion")}
r = c.invoke(FunctionName="hello", InvocationType="Event", Payload=b'{"name": "later"}')
out["event"] = {"status": r["StatusCode"]}
r = c.invoke(FunctionName="hello", InvocationType="DryRun")
out["dry_run"] = {"status": r["StatusCode"]}
r = c.invoke(FunctionName="hello", Payload=json.dumps({"fail": "boom"}))
out["function_error"] = {"status": r["StatusCode"], "error": r.get("FunctionError"),
                         "payload": json.loads(r["Payload"].read())}
try:
    c.invoke(FunctionName="nope", Payload=b"{}")
    out["unknown"] = "invoked"
except c.exceptions.ResourceNotFoundException as e:
    out["unknown"] = e.response["Error"]["Code"]
r = c.invoke(FunctionName="talker", LogType="Tail", Payload=b"{}")
out["tail"] = {"payload": json.loads(r["Payload"].read()),
               "log": base64.b64decode(r.get("LogResult", "")).decode()}
print(json.dumps(out))
"#;
    let run = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &p.url("")])
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let sync = &out["sync"];
    assert_eq!(
        (sync["status"].as_u64(), sync["version"].as_str()),
        (Some(200), Some("2")),
        "{out}"
    );
    assert!(sync["error"].is_null(), "{out}");
    // The event is the body itself, and the answer the function's result.
    let body: serde_json::Value = serde_json::from_str(sync["payload"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, Ada!", "{out}");
    assert!(body.get("http").is_none(), "not a function URL event: {out}");
    assert_eq!(out["qualified"]["version"], "1", "{out}");
    assert_eq!(out["arn"]["version"], "1", "{out}");
    assert_eq!(out["event"]["status"], 202, "{out}");
    assert_eq!(out["dry_run"]["status"], 204, "{out}");
    let fe = &out["function_error"];
    assert_eq!(
        (fe["status"].as_u64(), fe["error"].as_str()),
        (Some(200), Some("Unhandled")),
        "{out}"
    );
    assert_eq!(fe["payload"]["errorMessage"], "boom", "{out}");
    assert_eq!(fe["payload"]["errorType"], "ValueError", "{out}");
    assert_eq!(out["unknown"], "ResourceNotFoundException", "{out}");
    // LogType Tail: the last 4 KB of what it wrote, stdout and stderr.
    assert_eq!(out["tail"]["payload"], "done", "{out}");
    let log = out["tail"]["log"].as_str().unwrap();
    assert!(log.len() <= 4096 && log.len() > 4000, "{} bytes: {log}", log.len());
    assert!(log.contains("line 0499\n") && log.contains("to stderr\n"), "{log}");
    assert!(!log.contains("line 0000"), "only the end: {log}");
    let r = reqwest::Client::new()
        .post(p.url("/2015-03-31/functions/talker/invocations"))
        .header("x-amz-log-type", "Everything")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "InvalidParameterValueException");
    // The Event call ran, as an async event (4 sync calls succeeded).
    let db = p.db().await;
    stoke_tests::eventually(Duration::from_secs(30), "the Event invocation to complete", || async {
        (stoke_tests::count(
            &db,
            "SELECT count(*) FROM completions WHERE trigger = 'invoke-api' AND status = 'succeeded'",
        )
        .await
            >= 5)
            .then_some(())
    })
    .await;
}

/// The AWS CLI (v1 from PyPI, unmodified): `aws lambda invoke
/// --endpoint-url` against the gateway, sync and Event, and an unknown
/// function refused by name.
#[tokio::test]
async fn the_aws_cli_invokes_through_the_lambda_invoke_api() {
    let site = stoke_tests::pip_packages("awscli-1.46.3", &["awscli==1.46.3"]);
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("").path());
    let printer = echo_function("printer", "");
    std::fs::write(
        printer.path().join("echo.py"),
        "def handler(event, context):\n    print('hello from the log', flush=True)\n    return 'printed'\n",
    )
    .unwrap();
    p.deploy(printer.path());
    let guarded = echo_function("guarded", "auth = \"token\"");
    p.deploy(guarded.path());
    let dir = tempfile::tempdir().unwrap();
    let aws_as = |(key, secret): (&str, &str), args: &[&str]| {
        std::process::Command::new("/usr/bin/python3")
            .args([
                "-m",
                "awscli",
                "lambda",
                "invoke",
                "--endpoint-url",
                &p.url(""),
                "--output",
                "json",
            ])
            .args(args)
            .env("PYTHONPATH", &site)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", dir.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
            .output()
            .unwrap()
    };
    let aws = |args: &[&str]| aws_as(("stoke", "stoke"), args);
    let result = dir.path().join("result.json");
    let result = result.to_str().unwrap();
    let answered = |run: &std::process::Output| -> (serde_json::Value, serde_json::Value) {
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        (
            serde_json::from_slice(&run.stdout).unwrap(),
            serde_json::from_slice(&std::fs::read(result).unwrap()).unwrap(),
        )
    };
    let (said, answer) = answered(&aws(&[
        "--function-name",
        "hello",
        "--payload",
        r#"{"name":"Ada"}"#,
        result,
    ]));
    assert_eq!(
        (said["StatusCode"].as_u64(), said["ExecutedVersion"].as_str()),
        (Some(200), Some("1")),
        "{said}"
    );
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, Ada!", "{answer}");

    // A qualifier; a function error; the log tail.
    let (said, _) = answered(&aws(&[
        "--function-name",
        "hello",
        "--qualifier",
        "1",
        "--payload",
        "{}",
        result,
    ]));
    assert_eq!(said["ExecutedVersion"], "1", "{said}");
    let (said, answer) = answered(&aws(&[
        "--function-name",
        "hello",
        "--payload",
        r#"{"fail":"boom"}"#,
        result,
    ]));
    assert_eq!(
        (said["StatusCode"].as_u64(), said["FunctionError"].as_str()),
        (Some(200), Some("Unhandled")),
        "{said}"
    );
    assert_eq!(answer["errorMessage"], "boom", "{answer}");
    let (said, answer) = answered(&aws(&[
        "--function-name",
        "printer",
        "--log-type",
        "Tail",
        "--payload",
        "{}",
        result,
    ]));
    assert_eq!(answer, "printed");
    let log = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        said["LogResult"]
            .as_str()
            .unwrap_or_else(|| panic!("no LogResult: {said}")),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("hello from the log"), "{said}");

    let run = aws(&[
        "--function-name",
        "hello",
        "--invocation-type",
        "Event",
        "--payload",
        "{}",
        result,
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(said["StatusCode"], 202, "{said}");

    let run = aws(&["--function-name", "nope", "--payload", "{}", result]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");

    // SigV4 with a token's AWS credentials, right and wrong.
    let out = p.cli_ok(&["tokens", "create", "cli", "--role", "invoker", "-o", "json"]);
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (key, secret) = (
        t["aws_access_key_id"].as_str().unwrap(),
        t["aws_secret_access_key"].as_str().unwrap(),
    );
    let (said, answer) = answered(&aws_as(
        (key, secret),
        &["--function-name", "guarded", "--payload", "{}", result],
    ));
    assert_eq!(said["StatusCode"], 200, "{said}");
    assert_eq!(answer["function"], "guarded", "{answer}");
    let run = aws(&["--function-name", "guarded", "--payload", "{}", result]);
    assert!(!run.status.success(), "unknown credentials");
    let run = aws_as(
        (key, &"0".repeat(64)),
        &["--function-name", "guarded", "--payload", "{}", result],
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("UnrecognizedClientException") && stderr.contains("signature does not match"),
        "{stderr}"
    );
}

/// A token-protected function through the Invoke API, signed with AWS
/// Signature Version 4 by unmodified boto3 with a stoke token's AWS
/// credentials (as `stoke tokens create` prints them): the signature is
/// checked (a wrong secret, an unknown key id and a tampered body are
/// refused), and the token's role and namespace apply as for a bearer one.
#[tokio::test]
async fn boto3_signs_with_sigv4_and_the_signature_is_checked() {
    let site = stoke_tests::pip_packages("boto3-1.44.18", &["boto3==1.44.18"]);
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = hello_with("");
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml"))
        .unwrap()
        .replace("name = \"hello\"", "name = \"guarded\"")
        .replace("http = true", "http = true\nauth = \"token\"");
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    p.deploy(f.path());
    let creds = |namespace: &str, role: &str| {
        let out = p.cli_ok(&[
            "tokens",
            "create",
            &format!("{role}-{namespace}"),
            "--role",
            role,
            "--namespace",
            namespace,
            "-o",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (id, secret) = (
            v["aws_access_key_id"].as_str().unwrap(),
            v["aws_secret_access_key"].as_str().unwrap(),
        );
        assert_eq!(id, v["token"]["id"].as_str().unwrap(), "the key id is the token's id");
        assert_eq!(secret.len(), 64);
        format!("{id}:{secret}")
    };
    let (invoker, reader, elsewhere) = (
        creds("default", "invoker"),
        creds("default", "reader"),
        creds("team-x", "invoker"),
    );
    let wrong = format!("{}:{}", invoker.split(':').next().unwrap(), "0".repeat(64));
    let unknown = format!("tok_nothere:{}", "0".repeat(64));
    let script = r#"
import json, sys
import boto3, botocore
from botocore.config import Config

base = sys.argv[1]
def client(creds):
    key, secret = creds.split(":")
    return boto3.client("lambda", endpoint_url=base, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 0}))

def call(creds, tamper=False):
    c = client(creds)
    if tamper:
        # Change the body (same length) after it was signed.
        c.meta.events.register("before-send.lambda.Invoke",
                               lambda request, **kw: setattr(request, "body", b'{"name": "Eve"}'))
    try:
        r = c.invoke(FunctionName="guarded", Payload=json.dumps({"name": "Ada"}))
        return {"status": r["StatusCode"], "payload": json.loads(r["Payload"].read())}
    except botocore.exceptions.ClientError as e:
        return {"error": e.response["Error"]["Code"], "message": e.response["Error"].get("Message", "")}

names = ["invoker", "wrong", "unknown", "reader", "elsewhere"]
out = {n: call(c) for n, c in zip(names, sys.argv[2:7])}
out["tampered"] = call(sys.argv[2], tamper=True)
print(json.dumps(out))
"#;
    let run = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &p.url(""),
            &invoker,
            &wrong,
            &unknown,
            &reader,
            &elsewhere,
        ])
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(out["invoker"]["status"], 200, "{out}");
    let body: serde_json::Value = serde_json::from_str(out["invoker"]["payload"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, Ada!", "{out}");
    for (case, code, why) in [
        ("wrong", "UnrecognizedClientException", "signature does not match"),
        ("tampered", "UnrecognizedClientException", "signature does not match"),
        (
            "unknown",
            "UnrecognizedClientException",
            "unknown or revoked access key id",
        ),
        ("reader", "AccessDeniedException", "invoker role"),
        ("elsewhere", "AccessDeniedException", "namespace"),
    ] {
        assert_eq!(out[case]["error"], code, "{case}: {out}");
        assert!(out[case]["message"].as_str().unwrap().contains(why), "{case}: {out}");
    }
}
