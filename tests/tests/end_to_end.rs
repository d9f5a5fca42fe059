//! The whole event path with real parts: HTTP → JetStream (real
//! nats-server) → dispatcher → gRPC → worker → a function process speaking
//! the Lambda Runtime API → completion rows in a real SQLite file.

use std::time::Duration;

use sqlx::Row as _;
use stoke_tests::{Nats, Platform, PlatformOptions, alive, copy_function, eventually, workspace_root};

fn example(name: &str) -> std::path::PathBuf {
    workspace_root().join("examples").join(name)
}

async fn up() -> (Nats, Platform) {
    let nats = Nats::start().await.expect("nats-server");
    let platform = Platform::start(&nats).await.expect("stoke up");
    (nats, platform)
}

/// The "body" of a proxy response from hello-python, parsed.
fn hello_body(reply: &stoke_tests::Reply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn deploy_sync_async_poll_and_usage() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));

    // Synchronous: the proxy response becomes the HTTP response.
    let r = p.post("hello", r#"{"name":"Ada"}"#).await;
    let body = hello_body(&r);
    assert_eq!(body["message"], "Hello, Ada!");
    assert_eq!(r.headers["content-type"], "application/json");

    // Asynchronous: 202 + Location, then poll until done.
    let r = p
        .post_with("hello", r#"{"name":"Grace"}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["invocationId"].as_str().expect("invocationId").to_string();
    let location = r.headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("/invocations/{id}"));
    let done = eventually(Duration::from_secs(20), "async invocation to succeed", || async {
        let s = p.get(&location).await.json();
        (s["status"] == "succeeded").then_some(s)
    })
    .await;
    let text = serde_json::to_string(&done["result"]).unwrap();
    assert!(text.contains("Hello, Grace!"), "{done}");
    assert_eq!(done["attempts"], 1);

    // One metered attempt row per invocation, one completion each.
    let db = p.db().await;
    let rows = sqlx::query(
        "SELECT function, version, trigger, billed_ms, memory_mb, cold, worker, outcome, duration_us, started_ms, ended_ms \
         FROM attempts ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.get::<String, _>("function"), "hello");
        assert_eq!(row.get::<i64, _>("version"), 1);
        assert_eq!(row.get::<i64, _>("memory_mb"), 128);
        assert_eq!(row.get::<String, _>("outcome"), "success");
        assert!(!row.get::<String, _>("worker").is_empty());
        let billed = row.get::<i64, _>("billed_ms");
        let duration = row.get::<i64, _>("duration_us");
        assert!(
            billed >= 1 && billed * 1000 >= duration,
            "billed {billed} ms for {duration} us"
        );
        assert!(row.get::<i64, _>("ended_ms") >= row.get::<i64, _>("started_ms"));
    }
    assert_eq!(rows[0].get::<String, _>("trigger"), "http");
    let cold: Vec<bool> = rows.iter().map(|r| r.get::<bool, _>("cold")).collect();
    assert_eq!(cold, [true, false], "first attempt cold, second warm");
    let completions: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE status = 'succeeded'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(completions, 2);

    // Usage sums what the attempt rows say.
    let billed: i64 = sqlx::query_scalar("SELECT sum(billed_ms) FROM attempts")
        .fetch_one(&db)
        .await
        .unwrap();
    let out = p.cli(&["usage"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("hello ")).expect("hello row");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "2", "attempts: {line}");
    assert_eq!(cols[3], "1", "cold starts: {line}");
    assert_eq!(cols[4], billed.to_string(), "billed ms: {line}");
    let gb_s: f64 = cols[5].parse().unwrap();
    assert!((gb_s - billed as f64 * 128.0 / 1024.0 / 1000.0).abs() < 1e-6, "{line}");
}

#[tokio::test]
async fn warm_reuse_then_cold_start_after_the_process_is_killed() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));
    let first = hello_body(&p.post("hello", "{}").await);
    let second = hello_body(&p.post("hello", "{}").await);
    assert_eq!(
        second["instance"], first["instance"],
        "second invoke reuses the warm process"
    );
    let pid = stoke_tests::function_process(p.pid(), "stoke_runtime.py");

    // Kill the function process for real; the next event starts a new one.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(5), "the killed process to be gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let third = hello_body(&p.post("hello", "{}").await);
    assert_ne!(
        third["instance"], first["instance"],
        "a new process after the old one died"
    );

    let db = p.db().await;
    let cold: Vec<bool> = sqlx::query_scalar("SELECT cold FROM attempts ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(cold, [true, false, true]);
}

#[tokio::test]
async fn idle_process_is_stopped_after_the_ttl_and_the_next_event_is_cold() {
    let nats = Nats::start().await.unwrap();
    let opts = PlatformOptions {
        idle_ttl_secs: Some(1.0),
        ..Default::default()
    };
    let p = Platform::start_with(&nats, opts).await.unwrap();
    p.deploy(&example("hello-python"));
    let first = hello_body(&p.post("hello", "{}").await);
    let pid = stoke_tests::function_process(p.pid(), "stoke_runtime.py");
    eventually(
        Duration::from_secs(15),
        "idle sandbox to be stopped (scale to zero)",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    let second = hello_body(&p.post("hello", "{}").await);
    assert_ne!(second["instance"], first["instance"]);
}

/// `min_warm`: sandboxes started ahead of traffic, kept through the idle
/// TTL, replaced when they die, not counted as cold starts; on-demand ones
/// beyond them still scale to zero, and so does everything once `min_warm`
/// is gone from the current version.
#[tokio::test]
async fn min_warm_keeps_sandboxes_started_ahead_of_traffic() {
    let nats = Nats::start().await.unwrap();
    let opts = PlatformOptions {
        idle_ttl_secs: Some(0.5),
        ..Default::default()
    };
    let p = Platform::start_with(&nats, opts).await.unwrap();
    let running = || stoke_tests::processes_running(p.pid(), "stoke_runtime.py");
    p.deploy(stoke_tests::hello_with("min_warm = 2").path());
    let provisioned = eventually(Duration::from_secs(15), "two sandboxes before any event", || async {
        let found = running();
        (found.len() == 2).then_some(found)
    })
    .await;
    // Several idle TTLs later they are the same two processes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut still = running();
    still.sort();
    let mut was = provisioned.clone();
    was.sort();
    assert_eq!(still, was, "provisioned sandboxes outlive the idle TTL");

    let seen = hello_body(&p.post("hello", r#"{"env":"AWS_LAMBDA_INITIALIZATION_TYPE"}"#).await);
    assert_eq!(seen["env"], "provisioned-concurrency");
    // Three at once: two provisioned, one started on demand.
    p.post_at_once("hello", r#"{"sleep":1}"#, 3).await;
    let db = p.db().await;
    let cold: Vec<bool> = sqlx::query_scalar("SELECT cold FROM attempts ORDER BY cold, id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(
        cold,
        [false, false, false, true],
        "only the on-demand sandbox is a cold start"
    );
    // The on-demand one goes after the TTL; the provisioned two stay.
    eventually(Duration::from_secs(15), "back to the two provisioned", || async {
        (running().len() == 2).then_some(())
    })
    .await;

    // One dies: it is replaced.
    let victim = running()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(Duration::from_secs(15), "the dead one to be replaced", || async {
        let found = running();
        (found.len() == 2 && !found.contains(&victim)).then_some(())
    })
    .await;

    // A version without min_warm: everything scales to zero.
    p.deploy(&example("hello-python"));
    eventually(
        Duration::from_secs(20),
        "scale to zero once min_warm is gone",
        || async { running().is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn unknown_function_is_404_at_once_never_202() {
    let (_nats, p) = up().await;
    for headers in [&[][..], &[("Prefer", "respond-async")][..]] {
        let r = p.post_with("nope", "{}", headers).await;
        assert_eq!(r.status, 404, "{}", r.text());
        let body = r.json();
        assert!(body["errorMessage"].as_str().unwrap().contains("nope"), "{body}");
    }
    let r = p.get("/invocations/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(r.status, 404);
    let out = p.cli(&["invoke", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test]
async fn oversized_payload_is_413_and_nothing_runs() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));
    let big = vec![b'x'; (6 << 20) + 1];
    let r = p.post("hello", big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["errorMessage"].as_str().unwrap().contains("limit"));
    let db = p.db().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn crash_is_502_with_its_error_and_the_worker_keeps_serving() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));
    let r = p.post("hello", r#"{"crash":true}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let err = r.json();
    assert_eq!(err["errorType"], "Runtime.ExitError", "{err}");
    assert!(err["invocationId"].is_string());

    let ok = hello_body(&p.post("hello", r#"{"name":"again"}"#).await);
    assert_eq!(ok["message"], "Hello, again!");
}

#[tokio::test]
async fn function_error_is_502_with_the_function_error_json() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));
    let r = p.post("hello", r#"{"fail":"boom"}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let err = r.json();
    assert_eq!(err["errorType"], "ValueError");
    assert_eq!(err["errorMessage"], "boom");
    // Sync callers are not retried: exactly one attempt.
    let db = p.db().await;
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM attempts")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(outcomes, ["function_error"]);
}

#[tokio::test]
async fn timeout_is_504() {
    let (_nats, p) = up().await;
    let f = copy_function(&example("hello-python"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap();
    let manifest = manifest
        .lines()
        .map(|l| if l.starts_with("timeout") { "timeout = 1" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    p.deploy(f.path());
    let r = p.post("hello", r#"{"sleep":5}"#).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout");
    // The timed-out runtime is gone by the time its 504 is answered, not
    // a moment later (`Sandbox::kill_and_wait`): it cannot overlap a retry.
    let left = stoke_tests::processes_running(p.pid(), "stoke_runtime.py");
    assert!(left.is_empty(), "the timed-out runtime still there: {left:?}");
    // And the next event gets a fresh process that answers.
    let ok = hello_body(&p.post("hello", r#"{"name":"after"}"#).await);
    assert_eq!(ok["message"], "Hello, after!");
}

#[tokio::test]
async fn async_function_error_is_retried_up_to_max_attempts_then_dead_lettered() {
    let (_nats, p) = up().await;
    p.deploy(stoke_tests::hello_with("max_attempts = 2").path());
    let r = p
        .post_with("hello", r#"{"fail":"again"}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(r.status, 202);
    let location = r.headers["location"].to_str().unwrap().to_string();
    let done = eventually(Duration::from_secs(30), "retries to finish", || async {
        let s = p.get(&location).await.json();
        (s["status"] == "dead_lettered").then_some(s)
    })
    .await;
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["error"]["errorType"], "ValueError", "{done}");
}

#[tokio::test]
async fn shell_example_runs() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-shell"));
    let r = p.post("hello-shell", r#"{"k":[1,2]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["message"], "Hello from bash");
    assert_eq!(body["input"]["k"][1], 2);
    // The cron example deploys and lists its schedule.
    p.deploy(&example("tick"));
    let out = p.cli(&["functions"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("cron */10 * * * * * (Europe/Berlin)"), "{listing}");
}

#[tokio::test]
async fn cli_invoke_async_status_and_functions() {
    let (_nats, p) = up().await;
    p.deploy(&example("hello-python"));
    let out = p.cli(&["functions"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().any(|l| l.starts_with("hello ") && l.contains("http")),
        "{listing}"
    );

    let out = p.cli(&["invoke", "hello", "--data", r#"{"name":"Bo"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, Bo!"));

    let out = p.cli(&["invoke", "hello", "--async", "--data", r#"{"name":"Cy"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = eventually(Duration::from_secs(20), "stoke status to say succeeded", || async {
        let out = p.cli(&["status", &id, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(status["trigger"], "admin");

    // A repeated idempotency key returns the first result without running.
    let a = p.cli(&[
        "invoke",
        "hello",
        "--idempotency-key",
        "k-1",
        "--data",
        r#"{"name":"One"}"#,
    ]);
    let b = p.cli(&[
        "invoke",
        "hello",
        "--idempotency-key",
        "k-1",
        "--data",
        r#"{"name":"One"}"#,
    ]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        a.stdout, b.stdout,
        "same key, same stored result (pid and request id included)"
    );

    let out = p.cli(&["invoke", "hello", "--data", r#"{"fail":"cli"}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ValueError: cli"));
}

#[tokio::test]
async fn ctrl_c_lets_in_flight_invocations_finish() {
    let (_nats, mut p) = up().await;
    p.deploy(&example("hello-python"));
    let r = p
        .post_with("hello", r#"{"sleep":2,"name":"late"}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["invocationId"].as_str().unwrap().to_string();
    // Wait until the event is running in a sandbox, then interrupt.
    eventually(Duration::from_secs(20), "the invocation to be dispatched", || async {
        p.log().contains("cold start").then_some(())
    })
    .await;
    let status = p.interrupt_and_wait(Duration::from_secs(30));
    assert!(status.success(), "stoke up exit status {status}:\n{}", p.log());
    let db = p.db().await;
    let row: (String, Option<Vec<u8>>) =
        sqlx::query_as("SELECT status, result FROM completions WHERE invocation_id = ?")
            .bind(&id)
            .fetch_one(&db)
            .await
            .expect("the in-flight invocation completed before exit");
    assert_eq!(row.0, "succeeded");
    assert!(String::from_utf8_lossy(&row.1.unwrap()).contains("Hello, late!"));
}

/// `stoke up`'s gateway remembers a function's current version for up to
/// a second: a deploy, an env change, a rollback or a delete through its
/// admin API must end that at once — the very next call runs (or refuses)
/// what the change made current.
#[tokio::test]
async fn an_http_call_right_after_a_change_runs_what_it_made_current() {
    let (_nats, p) = up().await;
    let f = copy_function(&example("hello-python"));
    p.deploy(f.path());
    let db = p.db().await;
    let ran = |r: stoke_tests::Reply| {
        let db = db.clone();
        async move {
            assert_eq!(r.status, 200, "{}", r.text());
            let id = r.headers["x-stoke-invocation-id"].to_str().unwrap().to_string();
            sqlx::query("SELECT version FROM completions WHERE invocation_id = ?")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };
    assert_eq!(ran(p.post("hello", "{}").await).await, 1);
    assert_eq!(ran(p.post("hello", "{}").await).await, 1, "remembered");

    let handler = f.path().join("handler.py");
    let code = std::fs::read_to_string(&handler).unwrap();
    std::fs::write(&handler, format!("{code}\n# v2\n")).unwrap();
    p.deploy(f.path());
    assert_eq!(ran(p.post("hello", "{}").await).await, 2, "after a deploy");

    p.cli_ok(&["env", "hello", "MARK=three"]);
    assert_eq!(ran(p.post("hello", "{}").await).await, 3, "after an env change");

    p.cli_ok(&["rollback", "hello", "--to", "1"]);
    assert_eq!(ran(p.post("hello", "{}").await).await, 1, "after a rollback");

    p.cli_ok(&["delete", "hello"]);
    assert_eq!(p.post("hello", "{}").await.status, 404, "after a delete");
}
