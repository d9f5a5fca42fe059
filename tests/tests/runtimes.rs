//! Unmodified Lambda runtime clients against the worker's Runtime API:
//! `awslambdaric` from PyPI and a Rust function built with `lambda_runtime`;
//! and exec mode, where a plain script gets the event on stdin.

use std::path::PathBuf;
use std::process::Command;

use stoke_tests::{Nats, Platform, built_binary, workspace_root};

/// awslambdaric installed (once per target dir) with the system python3,
/// the interpreter the sandbox's PATH finds.
fn awslambdaric_site() -> PathBuf {
    stoke_tests::pip_packages("awslambdaric-4.2.2", &["awslambdaric==4.2.2"])
}

#[tokio::test]
async fn awslambdaric_from_pypi_runs_unmodified() {
    let site = awslambdaric_site();
    let f = tempfile::tempdir().unwrap();
    // Ship the client inside the package, as Lambda users do.
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", site.display()))
        .arg(f.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        f.path().join("app.py"),
        r#"import os

INSTANCE = os.urandom(8).hex()

def handler(event, context):
    if event.get("fail"):
        raise KeyError(event["fail"])
    return {
        "greeting": "hi " + event.get("name", "?"),
        "request_id": context.aws_request_id,
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "instance": INSTANCE,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }
"#,
    )
    .unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        "name = \"ric\"\ncommand = [\"python3\", \"-m\", \"awslambdaric\", \"app.handler\"]\nmemory = 256\n\
         [[triggers]]\nhttp = true\nevent = \"body\"\n",
    )
    .unwrap();

    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let r = p.post("ric", r#"{"name":"ric"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["greeting"], "hi ric");
    assert_eq!(v["function"], "ric");
    assert_eq!(v["memory"], "256");
    assert!(v["remaining_ms"].as_i64().unwrap() > 0, "{v}");
    assert!(!v["request_id"].as_str().unwrap().is_empty());

    // Warm: the same interpreter answers again. The caller's trace reaches
    // the handler as awslambdaric sets it, from Lambda-Runtime-Trace-Id.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let again = p
        .post_with("ric", r#"{"name":"again"}"#, &[("traceparent", tp)])
        .await
        .json();
    assert_eq!(again["instance"], v["instance"]);
    assert_eq!(
        again["trace"],
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    );

    // Its error report comes back as the function error.
    let r = p.post("ric", r#"{"fail":"missing"}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "KeyError");
}

#[tokio::test]
async fn lambda_runtime_rust_function_runs_unmodified() {
    let bin = built_binary("hello-rust");
    let f = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, f.path().join("bootstrap")).unwrap();
    std::fs::copy(
        workspace_root().join("examples/hello-rust/dist/stoke.toml"),
        f.path().join("stoke.toml"),
    )
    .unwrap();

    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let r = p.post("hello-rust", r#"{"name":"Ferris"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["message"], "Hello, Ferris!");
    assert_eq!(v["runtime"], "lambda_runtime");
    let again = p.post("hello-rust", r#"{"name":"Ferris"}"#).await.json();
    assert_eq!(again["instance"], v["instance"], "warm reuse");
}

/// `mode = "exec"`: one sandboxed process per event (a POSIX sh script),
/// event on stdin, answer on stdout; a non-zero exit, the timeout and an
/// oversized answer are errors; nothing stays running between events.
#[tokio::test]
async fn exec_mode_runs_one_sandboxed_process_per_event() {
    let f = stoke_tests::copy_function(&workspace_root().join("examples/wordcount"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        manifest.replace("timeout = 10", "timeout = 1"),
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());

    let r = p.post("wordcount", "three little words").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    assert_eq!(
        (first["words"].as_u64(), first["bytes"].as_u64()),
        (Some(3), Some(18)),
        "{first}"
    );
    assert_eq!(first["uid"], 65534, "sandboxed as nobody");
    assert_eq!(first["attempt"], 1);
    let again = p.post("wordcount", "one").await.json();
    assert_ne!(again["instance"], first["instance"], "a new process per event");
    assert_ne!(again["request_id"], first["request_id"]);
    let left = stoke_tests::processes_running(p.pid(), "count.sh");
    assert!(
        left.is_empty(),
        "nothing kept running between events: {}",
        described(&left)
    );

    let failed = p.post("wordcount", "fail").await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    let err = failed.json();
    assert_eq!(err["errorType"], "Function.ExitStatus", "{err}");
    let message = err["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("exit status: 3") && message.contains("asked to fail"),
        "{message}"
    );

    let slow = p.post("wordcount", "sleep").await;
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert_eq!(slow.json()["errorType"], "Sandbox.Timedout");

    let big = p.post("wordcount", "big").await;
    assert_eq!(big.status, 502, "{}", big.text());
    assert_eq!(big.json()["errorType"], "Function.ResponseSizeTooLarge");

    let db = p.db().await;
    let cold: Vec<bool> = sqlx::query_scalar("SELECT cold FROM attempts WHERE function = 'wordcount'")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(cold, [true; 5], "every event is its own process");
    // The timed-out and the oversized event were killed: gone by now.
    let left = stoke_tests::processes_running(p.pid(), "count.sh");
    assert!(left.is_empty(), "killed processes still there: {}", described(&left));
}

/// Each process's /proc/<pid>/stat (state, parent), for a failure message.
fn described(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_else(|e| format!("{p}: {e}")))
        .collect::<Vec<_>>()
        .join("; ")
}
