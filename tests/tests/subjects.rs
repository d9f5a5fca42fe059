//! Subject triggers: messages published on NATS subjects by any client are
//! captured in JetStream and run every subscribed function once each.

use std::time::Duration;

use sqlx::Row as _;
use stoke_tests::{Nats, Platform, copy_function, eventually, workspace_root};

/// hello-python deployed under another name, subscribed to `subject`.
fn subscriber(name: &str, subject: &str, extra: &str) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml"))
        .unwrap()
        .replace("name = \"hello\"", &format!("name = \"{name}\"\n{extra}"))
        .replace("greetings.*", subject);
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    f
}

/// [`subscriber`] with its subject trigger batching up to `size` messages,
/// waiting at most `window_ms` after the first.
fn batched_subscriber(name: &str, subject: &str, extra: &str, size: u32, window_ms: u32) -> tempfile::TempDir {
    let f = subscriber(name, subject, extra);
    let path = f.path().join("stoke.toml");
    let trigger = format!("subject = \"{subject}\"");
    let manifest = std::fs::read_to_string(&path).unwrap().replace(
        &trigger,
        &format!("{trigger}\nbatch_size = {size}\nbatch_window_ms = {window_ms}"),
    );
    std::fs::write(&path, manifest).unwrap();
    f
}

async fn completions(p: &Platform, function: &str) -> i64 {
    let db = p.db().await;
    sqlx::query_scalar("SELECT count(*) FROM completions WHERE function = ? AND status = 'succeeded'")
        .bind(function)
        .fetch_one(&db)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_subscriber_runs_once_per_message_from_any_nats_client() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let (a, b) = (
        subscriber("audit", "orders.*", ""),
        subscriber("billing", "orders.*", ""),
    );
    p.deploy(a.path());
    p.deploy(b.path());

    // A plain NATS client, core publish (no JetStream ack), some with Nats-Msg-Id.
    let client = async_nats::connect(&nats.url).await.unwrap();
    for i in 0..10 {
        client
            .publish("orders.new", format!(r#"{{"name":"o{i}"}}"#).into())
            .await
            .unwrap();
    }
    for i in 0..5 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("order-{i}").as_str());
        client
            .publish_with_headers("orders.paid", h, "{}".into())
            .await
            .unwrap();
    }
    // A repeat of order-0 inside the duplicate window is dropped.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "order-0");
    client
        .publish_with_headers("orders.paid", h, "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    // And the CLI.
    let out = p.cli(&["publish", "orders.shipped", r#"{"name":"cli"}"#, "--msg-id", "ship-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stored in STOKE_EVENTS"));

    for function in ["audit", "billing"] {
        eventually(
            Duration::from_secs(30),
            &format!("{function} to handle 16 messages"),
            || async { (completions(&p, function).await == 16).then_some(()) },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for function in ["audit", "billing"] {
        assert_eq!(
            completions(&p, function).await,
            16,
            "{function}: no duplicates, nothing extra"
        );
    }

    let db = p.db().await;
    let row = sqlx::query("SELECT idempotency_key, trigger, result FROM completions WHERE function = 'audit' AND idempotency_key = 'ship-1'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("trigger"), "subject");
    let result: serde_json::Value = serde_json::from_slice(&row.get::<Vec<u8>, _>("result")).unwrap();
    let body: serde_json::Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, cli!");
    assert_eq!(body["nats"]["subject"], "orders.shipped");
    assert_eq!(body["nats"]["headers"]["Nats-Msg-Id"], "ship-1");
    assert!(body["nats"]["sequence"].as_u64().unwrap() > 0);
    assert!(body["nats"]["publishedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["idempotency_key"], "ship-1",
        "the function sees the message id as its key"
    );
    // Messages without an id are keyed by stream and sequence.
    let keyed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM completions WHERE function = 'billing' AND idempotency_key LIKE 'STOKE_EVENTS:%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(keyed, 10);
}

#[tokio::test]
async fn one_subscribers_backlog_does_not_hold_up_another() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(subscriber("slow", "jobs.*", "concurrency = 1").path());
    p.deploy(subscriber("fast", "jobs.*", "concurrency = 4").path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    for _ in 0..4 {
        client.publish("jobs.run", r#"{"sleep":1}"#.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    eventually(Duration::from_secs(20), "fast to finish its 4", || async {
        (completions(&p, "fast").await == 4).then_some(())
    })
    .await;
    let slow_done = completions(&p, "slow").await;
    println!("when fast had finished 4, slow had finished {slow_done}");
    assert!(slow_done <= 2, "slow runs one at a time: {slow_done}");
    eventually(Duration::from_secs(20), "slow to finish too", || async {
        (completions(&p, "slow").await == 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn publishing_where_nothing_subscribes_is_a_clear_error() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(subscriber("sub", "orders.*", "").path());
    let out = p.cli(&["publish", "nobody.listens", "{}"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no function subscribes"),
        "{out:?}"
    );
    let out = p.cli(&["publish", "stoke.invoke.sub", "{}"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"), "{out:?}");
    let out = p.cli(&["publish", "orders.*", "{}"]);
    assert!(!out.status.success());
}

/// A batched subscriber: one invocation per up to 5 messages; items the
/// function reports in batchItemFailures are retried or dead-lettered on
/// their own, the rest complete once.
#[tokio::test]
async fn batches_settle_each_item_on_its_own() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = batched_subscriber("batcher", "batch.*", "max_attempts = 2", 5, 300);
    p.deploy(f.path());

    // 12 messages: item-3 always fails (retried once, then dead-lettered),
    // item-7 fails terminally (dead-lettered at once), the rest succeed.
    let client = async_nats::connect(&nats.url).await.unwrap();
    for i in 0..12 {
        let data = match i {
            3 => r#"{"fail":"flaky"}"#.to_string(),
            7 => r#"{"terminal":"bad item"}"#.to_string(),
            _ => format!(r#"{{"name":"n{i}"}}"#),
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("item-{i}").as_str());
        client.publish_with_headers("batch.in", h, data.into()).await.unwrap();
    }
    client.flush().await.unwrap();

    let db = p.db().await;
    eventually(
        Duration::from_secs(30),
        "10 items completed and 2 dead-lettered",
        || async {
            let done = completions(&p, "batcher").await;
            let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE function = 'batcher'")
                .fetch_one(&db)
                .await
                .unwrap();
            (done == 10 && dead == 2).then_some(())
        },
    )
    .await;
    let dead: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT idempotency_key, reason, attempts FROM dead_letters WHERE function = 'batcher' ORDER BY idempotency_key",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        dead,
        vec![
            ("item-3".to_string(), "max_attempts".to_string(), 2),
            ("item-7".to_string(), "terminal_error".to_string(), 1)
        ]
    );
    // Metered per invocation: 12 first tries in batches of at most 5 (at
    // least 3 runs) plus item-3's retry, far fewer than one per item.
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger, outcome FROM attempts WHERE function = 'batcher'")
            .fetch_all(&db)
            .await
            .unwrap();
    println!("batch runs: {runs:?}");
    assert!((4..=8).contains(&runs.len()), "{runs:?}");
    assert!(
        runs.iter().all(|(t, o)| t == "subject-batch" && o == "success"),
        "{runs:?}"
    );
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM completions WHERE function = 'batcher' ORDER BY CAST(substr(idempotency_key, 6) AS INTEGER)",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let expected: Vec<String> = (0..12)
        .filter(|i| *i != 3 && *i != 7)
        .map(|i| format!("item-{i}"))
        .collect();
    assert_eq!(keys, expected, "each other item completed once, under its own key");

    // Nothing left unacknowledged on the subscription.
    let js = async_nats::jetstream::new(client);
    eventually(Duration::from_secs(10), "the consumer to be settled", || async {
        let mut stream = js.get_stream("STOKE_EVENTS").await.unwrap();
        let mut pending = 0;
        let names: Vec<String> = {
            use futures::StreamExt as _;
            stream.consumer_names().map(|n| n.unwrap()).collect().await
        };
        for name in names {
            let mut c: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.unwrap();
            let info = c.info().await.unwrap();
            pending += info.num_pending + info.num_ack_pending as u64;
        }
        let _ = stream.info().await;
        (pending == 0).then_some(())
    })
    .await;
}

/// A batch waits for its function's slot (shared with HTTP calls) before
/// its items' ages are judged: items that grew older than `max_event_age`
/// while waiting are dead-lettered unrun, not handed to the function.
#[tokio::test]
async fn batch_items_that_aged_waiting_for_a_slot_are_dead_lettered_unrun() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = batched_subscriber("aging", "aging.*", "concurrency = 1\nmax_event_age = 1", 2, 50);
    p.deploy(f.path());

    // The one slot is busy for 2.5 s with an HTTP call ...
    let slow = p
        .post_with("aging", r#"{"sleep":2.5}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(slow.status, 202, "{}", slow.text());
    p.wait_running("aging", 1).await;
    // ... while two messages arrive and wait for it past their age.
    let client = async_nats::connect(&nats.url).await.unwrap();
    for i in 0..2 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("old-{i}").as_str());
        client
            .publish_with_headers("aging.in", h, format!(r#"{{"name":"n{i}"}}"#).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let db = p.db().await;
    let dead: Vec<(String, String, i64)> = eventually(Duration::from_secs(30), "2 items dead-lettered", || async {
        let dead: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT idempotency_key, reason, attempts FROM dead_letters WHERE function = 'aging' \
             ORDER BY idempotency_key",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        (dead.len() == 2).then_some(dead)
    })
    .await;
    assert_eq!(
        dead,
        vec![
            ("old-0".to_string(), "expired".to_string(), 0),
            ("old-1".to_string(), "expired".to_string(), 0)
        ]
    );
    // Only the HTTP call ran (its attempt is written just after its slot
    // frees, so it may land after the dead letters).
    let runs: Vec<String> = eventually(Duration::from_secs(10), "the HTTP call's attempt", || async {
        let runs: Vec<String> = sqlx::query_scalar("SELECT trigger FROM attempts WHERE function = 'aging'")
            .fetch_all(&db)
            .await
            .unwrap();
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs, vec!["http".to_string()], "no batch ran");
}

#[tokio::test]
async fn a_deleted_function_stops_subscribing() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let audit = subscriber("audit", "orders.*", "");
    p.deploy(audit.path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let durable = stoke_core::naming::subscription_consumer("audit", "orders.*");
    let stream = js.get_stream(stoke_core::naming::EVENTS_STREAM).await.unwrap();
    assert!(stream.consumer_info(&durable).await.is_ok(), "subscribed at deploy");
    client.publish("orders.new", "{}".into()).await.unwrap();
    eventually(Duration::from_secs(10), "the subscriber ran", || async {
        (completions(&p, "audit").await == 1).then_some(())
    })
    .await;

    p.cli_ok(&["delete", "audit"]);
    eventually(Duration::from_secs(10), "the subscription's consumer deleted", || {
        let stream = stream.clone();
        let durable = durable.clone();
        async move { stream.consumer_info(&durable).await.is_err().then_some(()) }
    })
    .await;
    for _ in 0..3 {
        client.publish("orders.new", "{}".into()).await.unwrap();
    }
    client.flush().await.unwrap();

    // Back again: it gets what is published from now on, not what came
    // while it was deleted.
    p.deploy(audit.path());
    assert!(stream.consumer_info(&durable).await.is_ok(), "subscribed again");
    client.publish("orders.new", "{}".into()).await.unwrap();
    eventually(Duration::from_secs(10), "the redeployed subscriber ran", || async {
        (completions(&p, "audit").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        completions(&p, "audit").await,
        2,
        "messages of the deleted time did not run"
    );
}

/// The version that ran `function` for the message whose `Nats-Msg-Id` is `key`.
async fn version_run_for(p: &Platform, function: &str, key: &str) -> i64 {
    let db = p.db().await;
    eventually(Duration::from_secs(10), "the message ran", || {
        let (db, key) = (db.clone(), key.to_string());
        async move {
            sqlx::query("SELECT version FROM completions WHERE function = ? AND idempotency_key = ?")
                .bind(function)
                .bind(key)
                .fetch_optional(&db)
                .await
                .unwrap()
                .map(|r| r.get::<i64, _>(0))
        }
    })
    .await
}

#[tokio::test]
async fn a_subject_event_after_a_change_runs_the_new_current_version() {
    // The dispatcher remembers a subject event's current version for up to
    // a second: a deploy or env change through it must end that at once.
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = subscriber("tracker", "track.*", "");
    p.deploy(f.path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let publish = |id: &'static str| {
        let js = js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            js.publish_with_headers("track.x", headers, "{}".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish("first").await;
    assert_eq!(version_run_for(&p, "tracker", "first").await, 1);

    // A new package: version 2, then at once the next message.
    let handler = f.path().join("handler.py");
    let code = std::fs::read_to_string(&handler).unwrap();
    std::fs::write(&handler, format!("{code}\n# v2\n")).unwrap();
    p.deploy(f.path());
    publish("second").await;
    assert_eq!(version_run_for(&p, "tracker", "second").await, 2);

    // An env change records version 3; the next message runs it.
    p.cli_ok(&["env", "tracker", "MARK=three"]);
    publish("third").await;
    assert_eq!(version_run_for(&p, "tracker", "third").await, 3);
}

#[tokio::test]
async fn a_retried_subject_message_keeps_one_time_ordered_invocation_id() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = subscriber(
        "retried",
        "retry.*",
        "max_attempts = 3\nretry_backoff_ms = 100\nretry_backoff_max_ms = 200",
    );
    p.deploy(f.path());
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let ack = js
        .publish("retry.now", r#"{"fail_until":3,"name":"third"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let key = format!("STOKE_EVENTS:{}@%", ack.sequence);

    let db = p.db().await;
    let (id, attempts, result): (String, i64, Vec<u8>) = eventually(Duration::from_secs(30), "the third try", || async {
        sqlx::query_as("SELECT invocation_id, attempts, result FROM completions WHERE function = 'retried' AND idempotency_key LIKE ?")
            .bind(&key)
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await;
    // Each delivery was numbered after the ones before: it has one id.
    assert_eq!(attempts, 3);
    let result: serde_json::Value = serde_json::from_slice(&result).unwrap();
    let body: serde_json::Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["attempt"], 3);
    let tries: Vec<(String, i64)> =
        sqlx::query_as("SELECT invocation_id, attempt FROM attempts WHERE function = 'retried' ORDER BY attempt")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(tries, (1..=3).map(|n| (id.clone(), n)).collect::<Vec<_>>());
    // A UUIDv7 of the message's publish time.
    let published: String = body["nats"]["publishedAt"].as_str().unwrap().into();
    let published_ms = chrono::DateTime::parse_from_rfc3339(&published)
        .unwrap()
        .timestamp_millis();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7, "{id}");
    let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
    assert_eq!(
        secs as i64 * 1000 + i64::from(nanos / 1_000_000),
        published_ms,
        "{id} vs {published}"
    );
}

/// The events stream deleted and made again (an operator's reset, or a
/// NATS server that lost its data) numbers its messages from 1 again. A
/// message that reuses an earlier one's sequence is a new event: it runs
/// and gets its own completion, not the earlier one's.
#[tokio::test]
async fn a_recreated_events_stream_that_reuses_sequences_loses_nothing() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = subscriber("reset", "reset.*", "");
    p.deploy(f.path());
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let publish = |name: &'static str| {
        let js = js.clone();
        async move {
            let body = format!(r#"{{"name":"{name}"}}"#);
            js.publish("reset.now", body.into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let db = p.db().await;
    let results = || async {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT idempotency_key, result FROM completions WHERE function = 'reset' ORDER BY created_ms",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(key, r)| (key, String::from_utf8_lossy(&r).into_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(publish("before").await, 1);
    eventually(Duration::from_secs(20), "the first message's completion", || async {
        (results().await.len() == 1).then_some(())
    })
    .await;

    js.delete_stream("STOKE_EVENTS").await.unwrap();
    // A new version subscribes again, which makes the stream again.
    std::fs::write(
        f.path().join("stoke.toml"),
        std::fs::read_to_string(f.path().join("stoke.toml")).unwrap() + "\n[env]\nRESET = \"1\"\n",
    )
    .unwrap();
    p.deploy(f.path());
    assert_eq!(publish("after").await, 1, "the new stream starts again at 1");
    let done = eventually(
        Duration::from_secs(20),
        "the second message's own completion",
        || async {
            let done = results().await;
            (done.len() == 2).then_some(done)
        },
    )
    .await;
    assert!(done[0].1.contains("Hello, before!"), "{done:?}");
    assert!(done[1].1.contains("Hello, after!"), "{done:?}");
    assert_ne!(done[0].0, done[1].0, "two messages, two keys: {done:?}");
}
