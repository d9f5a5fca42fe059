//! Retries, terminal errors, dead letters and redrive, event age — with the
//! real platform (`stoke up`, nats-server, SQLite).

use std::time::Duration;

use stoke_tests::{Nats, Platform, eventually, hello_with, workspace_root};

async fn send_async(p: &Platform, body: &str, key: Option<&str>) -> String {
    let mut headers = vec![("Prefer", "respond-async")];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    let r = p.post_with("hello", body.to_string(), &headers).await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["invocationId"].as_str().unwrap().to_string()
}

async fn wait_status(p: &Platform, id: &str, status: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), &format!("{id} to be {status}"), || async {
        let s = p.get(&format!("/invocations/{id}")).await.json();
        (s["status"] == status).then_some(s)
    })
    .await
}

/// The invocation stream drains to empty (the TERM or ack follows the
/// store write, so allow it a moment): nothing is stuck.
async fn wait_stream_empty(nats: &Nats) {
    eventually(Duration::from_secs(10), "the invocation stream to be empty", || async {
        (stream_messages(nats).await == 0).then_some(())
    })
    .await;
}

/// Messages left in the invocation stream: 0 means nothing is stuck.
async fn stream_messages(nats: &Nats) -> u64 {
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("STOKE_INVOKE").await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn poison_event_is_dead_lettered_others_flow_and_redrive_to_a_fix_completes_it() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = hello_with("max_attempts = 3\nconcurrency = 4");
    p.deploy(f.path());

    let poison = send_async(&p, r#"{"fail":"poison"}"#, Some("poison-1")).await;
    let good: Vec<String> = futures::future::join_all((0..20).map(|i| {
        let p = &p;
        async move { send_async(p, &format!(r#"{{"name":"g{i}"}}"#), None).await }
    }))
    .await;
    for id in &good {
        wait_status(&p, id, "succeeded").await;
    }
    let dead = wait_status(&p, &poison, "dead_lettered").await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["error"]["errorType"], "ValueError", "{dead}");

    let list = p.cli_ok(&["dlq", "list"]);
    assert!(
        list.contains(&poison) && list.contains("max_attempts") && list.contains("ValueError: poison"),
        "{list}"
    );
    let show = p.cli_ok(&["dlq", "show", &poison]);
    // The payload kept is the event the function got: its function URL
    // event, whose body is the request's.
    assert!(
        show.contains("poison-1") && show.contains(r#""body":"{\"fail\":\"poison\"}""#),
        "{show}"
    );
    assert_eq!(
        show.matches("function_error ").count(),
        3,
        "every attempt listed:\n{show}"
    );
    assert_eq!(show.matches("logs: worker w-").count(), 3, "{show}");

    // Deploy a fixed version: "fail" no longer fails.
    let handler = std::fs::read_to_string(f.path().join("handler.py")).unwrap();
    std::fs::write(
        f.path().join("handler.py"),
        handler.replace(r#"if "fail" in event:"#, "if False:"),
    )
    .unwrap();
    p.deploy(f.path());

    let dry = p.cli_ok(&["dlq", "redrive", &poison, "--version", "2", "--dry-run"]);
    assert_eq!(dry.trim(), poison);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.get(&format!("/invocations/{poison}")).await.json()["status"],
        "dead_lettered",
        "dry run sends nothing"
    );

    let out = p.cli(&["dlq", "redrive", &poison, "--version", "9"]);
    assert!(!out.status.success(), "unknown target version refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version 9"));

    assert_eq!(p.cli_ok(&["dlq", "redrive", &poison, "--version", "2"]).trim(), poison);
    let done = wait_status(&p, &poison, "succeeded").await;
    assert_eq!(done["version"], 2);
    assert_eq!(done["idempotencyKey"], "poison-1", "completed with its original key");
    let body: serde_json::Value = serde_json::from_str(done["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["attempt"], 4,
        "the function sees the attempt number across the redrive"
    );
    assert_eq!(body["idempotency_key"], "poison-1");
    // The same request with its key, after the redrive completed it, is
    // the same event (the redrive carried the request's digest, not the
    // event's): the stored result, not a conflict and not a second run.
    let repeat = p
        .post_with("hello", r#"{"fail":"poison"}"#, &[("Idempotency-Key", "poison-1")])
        .await;
    assert_eq!(repeat.status, 200, "{}", repeat.text());
    assert_eq!(
        repeat.json()["attempt"],
        4,
        "the redriven run's result: {}",
        repeat.text()
    );

    let again = p.cli(&["dlq", "redrive", &poison]);
    assert!(
        !again.status.success(),
        "a redriven dead letter cannot be redriven twice"
    );
    assert!(p.cli_ok(&["dlq", "list"]).contains("no dead letters"));
    let all = p.cli_ok(&["dlq", "list", "--all"]);
    assert!(all.contains("(redriven)"), "{all}");
    wait_stream_empty(&nats).await;
}

#[tokio::test]
async fn terminal_error_is_dead_lettered_without_retries() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("max_attempts = 5").path());
    let id = send_async(&p, r#"{"terminal":"bad input"}"#, None).await;
    let dead = wait_status(&p, &id, "dead_lettered").await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(dead["error"]["errorType"], "TerminalError");
    assert!(p.cli_ok(&["dlq", "list"]).contains("terminal_error"));
    wait_stream_empty(&nats).await;
}

#[tokio::test]
async fn retries_back_off_and_the_function_sees_its_attempt_and_key() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("max_attempts = 3").path());
    let started = std::time::Instant::now();
    let id = send_async(&p, r#"{"fail_until":3,"name":"third"}"#, Some("k-third")).await;
    let done = wait_status(&p, &id, "succeeded").await;
    let elapsed = started.elapsed();
    let body: serde_json::Value = serde_json::from_str(done["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["attempt"], 3);
    assert_eq!(body["idempotency_key"], "k-third");
    assert_eq!(done["attempts"], 3);
    // Backoff 1 s then 2 s (±20 %) before the third attempt.
    assert!(elapsed >= Duration::from_millis(2400), "retried after {elapsed:?}");
    println!("3 attempts with backoff took {elapsed:?}");
}

#[tokio::test]
async fn an_event_older_than_max_event_age_is_dead_lettered_unrun() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    // One at a time, so the second event waits behind the first.
    p.deploy(hello_with("max_event_age = 1\nconcurrency = 1").path());
    let slow = send_async(&p, r#"{"sleep":2.5}"#, None).await;
    // Sent together, either could take the slot first.
    p.wait_running("hello", 1).await;
    let stale = send_async(&p, r#"{"name":"stale"}"#, None).await;
    // The one under way says so; the one waiting for the slot is queued.
    wait_status(&p, &slow, "running").await;
    let waiting = p.get(&format!("/invocations/{stale}")).await.json();
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&"queued".into(), &0.into()),
        "{waiting}"
    );
    wait_status(&p, &slow, "succeeded").await;
    let dead = wait_status(&p, &stale, "dead_lettered").await;
    assert_eq!(dead["error"]["errorType"], "Stoke.EventExpired", "{dead}");
    assert_eq!(dead["attempts"], 0, "it never ran: {dead}");
    wait_stream_empty(&nats).await;
}

/// `queued` until a worker runs it, then `running`: an event handed over
/// to wait on the worker behind a running one is still queued there, and a
/// short attempt is never marked at all.
#[tokio::test]
async fn an_invocation_says_running_only_while_a_worker_runs_it() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("concurrency = 1").path());
    // Warm first: a cold start's time counts as running.
    assert_eq!(p.post("hello", r#"{"name":"warm"}"#).await.status, 200);
    let quick = send_async(&p, r#"{"name":"quick"}"#, None).await;
    wait_status(&p, &quick, "succeeded").await;
    let first = send_async(&p, r#"{"sleep":2}"#, None).await;
    p.wait_running("hello", 1).await;
    let second = send_async(&p, r#"{"sleep":2}"#, None).await;
    wait_status(&p, &first, "running").await;
    // The second follows the first on its worker (the slot's hand-over):
    // queued until the first ends.
    loop {
        let second_now = p.get(&format!("/invocations/{second}")).await.json()["status"].clone();
        let first_now = p.get(&format!("/invocations/{first}")).await.json()["status"].clone();
        if first_now == "succeeded" {
            break;
        }
        assert_eq!(second_now, "queued", "while the first is {first_now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_status(&p, &second, "running").await;
    wait_status(&p, &second, "succeeded").await;

    let db = p.db().await;
    let started = |id: &str| {
        let (db, id) = (db.clone(), id.to_string());
        async move {
            sqlx::query_scalar::<_, Option<i64>>("SELECT started_ms FROM invocations WHERE invocation_id = ?")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let ended: i64 = sqlx::query_scalar("SELECT completed_ms FROM completions WHERE invocation_id = ?")
        .bind(&first)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(started(&quick).await, None, "a short attempt is never marked");
    assert!(started(&first).await.is_some());
    let second_started = started(&second).await.expect("marked");
    assert!(
        second_started >= ended,
        "marked {} ms before the one it followed ended",
        ended - second_started
    );
    let metrics = p.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "stoke_handovers_total{function=\"hello\"} 1"),
        "the second was handed the first's slot: {metrics}"
    );
}

#[tokio::test]
async fn same_key_with_another_payload_is_a_conflict_and_a_repeat_is_answered_from_the_store() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));
    let key = [("Idempotency-Key", "k-c")];
    let first = p.post_with("hello", r#"{"name":"A"}"#, &key).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let repeat = p.post_with("hello", r#"{"name":"A"}"#, &key).await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.body, first.body, "the stored result, not a second run");
    let other = p.post_with("hello", r#"{"name":"B"}"#, &key).await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert_eq!(other.json()["errorType"], "Stoke.IdempotencyKeyConflict");

    // While the first event with a key is still in flight, too.
    let slow = [("Idempotency-Key", "k-d"), ("Prefer", "respond-async")];
    let a = p.post_with("hello", r#"{"sleep":1}"#, &slow).await;
    assert_eq!(a.status, 202);
    let b = p.post_with("hello", r#"{"sleep":2}"#, &slow).await;
    assert_eq!(b.status, 409, "{}", b.text());
    let c = p.post_with("hello", r#"{"sleep":1}"#, &slow).await;
    assert_eq!(c.status, 202);
    assert_eq!(
        c.json()["invocationId"],
        a.json()["invocationId"],
        "the same invocation"
    );
    let id = a.json()["invocationId"].as_str().unwrap().to_string();
    wait_status(&p, &id, "succeeded").await;
    let db = p.db().await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE idempotency_key = 'k-d'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(runs, 1, "a repeat never runs again");

    // gRPC says ALREADY_EXISTS.
    let out = p.cli(&[
        "invoke",
        "hello",
        "--idempotency-key",
        "k-c",
        "--data",
        r#"{"name":"C"}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("different payload") && err.contains("AlreadyExists"),
        "{err}"
    );
}

#[tokio::test]
async fn the_retry_backoff_is_per_function() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("max_attempts = 4\nretry_backoff_ms = 300\nretry_backoff_max_ms = 400").path());
    let id = send_async(&p, r#"{"fail_until":4,"name":"quick"}"#, Some("k-quick")).await;
    wait_status(&p, &id, "succeeded").await;
    let db = p.db().await;
    let runs: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT attempt, started_ms, ended_ms FROM attempts WHERE invocation_id = ? ORDER BY attempt")
            .bind(&id)
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // Waits of 300, 600 → capped 400, 400 ms, each ±20 %, plus delivery time.
    let waits: Vec<i64> = runs.windows(2).map(|w| w[1].1 - w[0].2).collect();
    println!("waits between attempts (ms): {waits:?}");
    assert!((240..900).contains(&waits[0]), "{waits:?}");
    for w in &waits[1..] {
        assert!((320..1000).contains(w), "capped at 400 ms ±20 %: {waits:?}");
    }
}

/// The dead letters `stoke dlq list -o json` shows.
fn dead_letters(p: &Platform) -> Vec<serde_json::Value> {
    let out = p.cli_ok(&["dlq", "list", "-o", "json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A version whose stored manifest no longer parses (a corrupt row, or one
/// a newer release wrote) is its own error, never "function not found", and
/// loses nothing. Here the store is corrupted while `stoke up` is stopped,
/// with an async event on the invocation stream and a message on a
/// subscribed subject waiting. After the restart (its dispatcher has never
/// read the manifest) an HTTP caller gets 500 `Stoke.BadManifest`; both
/// waiting events are consumed through the consumers the function had,
/// released a few times, then dead-lettered with reason `bad_manifest`
/// (nothing ran: 0 attempts). Redriven to a good version 2, both complete.
#[tokio::test]
async fn a_corrupt_stored_manifest_is_retried_then_dead_lettered_and_loses_nothing() {
    let nats = Nats::start().await.unwrap();
    let mut p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("").path());
    p.interrupt_and_wait(Duration::from_secs(30));

    // Published while it is down, as any NATS client would.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish("stoke.invoke.hello", r#"{"name":"waiting"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("greetings.en", r#"{"name":"subscribed"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", p.db_path().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE function_versions SET manifest = 'name = [' WHERE function = 'hello'")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    p.restart(&nats).await.unwrap();

    let r = p.post("hello", r#"{"name":"Ada"}"#).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Stoke.BadManifest", "{}", r.text());

    let dead = eventually(Duration::from_secs(30), "both waiting events dead-lettered", || async {
        let dead = dead_letters(&p);
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let mut triggers: Vec<&str> = dead.iter().map(|d| d["trigger"].as_str().unwrap()).collect();
    triggers.sort();
    assert_eq!(triggers, ["nats", "subject"], "{dead:?}");
    for d in &dead {
        assert_eq!(d["reason"], "bad_manifest", "{d}");
        assert_eq!(d["error"]["error_type"], "Stoke.BadManifest", "{d}");
        assert_eq!(d["attempts"], 0, "nothing ran: {d}");
        let id = d["invocation_id"].as_str().unwrap();
        assert_eq!(
            p.get(&format!("/invocations/{id}")).await.json()["status"],
            "dead_lettered"
        );
    }
    let db = p.db().await;
    assert_eq!(stoke_tests::count(&db, "SELECT count(*) FROM completions").await, 0);

    // A good version 2; both, redriven to it, complete.
    p.deploy(hello_with("max_attempts = 2").path());
    let redriven = p.cli_ok(&["dlq", "redrive", "--function", "hello", "--version", "2"]);
    assert_eq!(redriven.lines().count(), 2, "{redriven}");
    for d in &dead {
        let done = wait_status(&p, d["invocation_id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(done["version"], 2, "{done}");
    }
    assert_eq!(dead_letters(&p).len(), 0);
    wait_stream_empty(&nats).await;
}
