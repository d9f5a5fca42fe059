//! A non-Rust client of the admin API: Python's grpcio (Debian's
//! python3-grpcio and python3-grpc-tools, installed by scripts/deps.sh)
//! compiles the shipped .proto files at test time and talks to a real
//! `stoke up` with tokens required: ListFunctions, Invoke, GetInvocation,
//! and refused calls arriving as the proper gRPC status codes.

use std::process::Command;

use stoke_tests::*;

const PYTHON: &str = "/usr/bin/python3";

#[tokio::test]
async fn python_grpcio_lists_invokes_and_sees_status_codes() {
    let nats = Nats::start().await.unwrap();
    let (p, token) = Platform::start_with_tokens(&nats).await.unwrap();
    let token = token.as_str();
    let example = workspace_root().join("examples/hello-python");
    p.cli_ok(&["deploy", example.to_str().unwrap(), "--token", token]);

    let script = workspace_root().join("tests/fixtures/python_client/client.py");
    let generated = tempfile::tempdir().unwrap();
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(&p.admin)
        .arg(workspace_root().join("proto/proto"))
        .arg(generated.path())
        .arg("hello")
        .env("STOKE_TOKEN", token)
        .output()
        .expect("run /usr/bin/python3 (scripts/deps.sh installs python3-grpcio and python3-grpc-tools)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python client failed:\n{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    println!("{seen:#}");

    let f = &seen["functions"][0];
    assert_eq!(
        (f["name"].as_str(), f["version"].as_u64()),
        (Some("hello"), Some(1)),
        "{seen}"
    );
    assert!(f["triggers"].as_array().unwrap().iter().any(|t| t == "http"), "{seen}");

    let inv = &seen["invoke"];
    assert_eq!(inv["status"], "INVOCATION_STATUS_SUCCEEDED", "{seen}");
    assert_eq!(inv["trigger"], "admin");
    assert_eq!(inv["attempts"], 1);
    let proxy: serde_json::Value = serde_json::from_str(inv["result"].as_str().unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(proxy["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, Py!", "{proxy}");
    assert_eq!(
        body["request_id"], inv["invocation_id"],
        "the id the client got is the one that ran"
    );

    assert_eq!(seen["get"]["status"], "INVOCATION_STATUS_SUCCEEDED");
    assert_eq!(seen["get"]["same_result"], true);

    // Refusals, as Python sees them: status code and a message saying what to fix.
    assert_eq!(seen["unknown_function"][0], "NOT_FOUND", "{seen}");
    assert!(
        seen["unknown_function"][1]
            .as_str()
            .unwrap()
            .contains("no-such-function"),
        "{seen}"
    );
    assert_eq!(seen["unknown_invocation"][0], "NOT_FOUND", "{seen}");
    assert_eq!(seen["bad_cron"][0], "INVALID_ARGUMENT", "{seen}");
    assert_eq!(seen["no_token"][0], "UNAUTHENTICATED", "{seen}");

    // The call ran once, as the store says.
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE invocation_id = ?")
        .bind(inv["invocation_id"].as_str().unwrap())
        .fetch_one(&p.db().await)
        .await
        .unwrap();
    assert_eq!(runs, 1);
}
