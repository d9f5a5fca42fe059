//! Concurrency and leases: a function's concurrency key keeps one hot key
//! from taking every slot, its consumers' lease follows its timeout, and a
//! busy function hands a running event's slot over to the next.

use std::time::Duration;

use stoke_tests::{Nats, Platform, eventually, hello_with};

async fn send_async(p: &Platform, body: String) {
    let r = p.post_with("hello", body, &[("Prefer", "respond-async")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
}

#[tokio::test]
async fn a_hot_key_runs_one_at_a_time_without_starving_other_keys() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("concurrency = 4\nconcurrency_key = \"body.customer\"").path());

    // A backlog of one customer, then one event each for six others.
    for i in 0..10 {
        send_async(&p, format!(r#"{{"customer":"hot","sleep":0.3,"name":"hot{i}"}}"#)).await;
    }
    for i in 0..6 {
        send_async(&p, format!(r#"{{"customer":"c{i}","sleep":0.3,"name":"cold{i}"}}"#)).await;
    }
    let db = p.db().await;
    eventually(Duration::from_secs(60), "all 16 events to complete", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE function = 'hello'")
            .fetch_one(&db)
            .await
            .unwrap();
        (n == 16).then_some(())
    })
    .await;

    // Each event ran once: (greeting, started, ended, attempt, completed).
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT json_extract(json_extract(CAST(c.result AS TEXT), '$.body'), '$.message'),
                a.started_ms, a.ended_ms, a.attempt, c.completed_ms
         FROM attempts a JOIN completions c ON c.invocation_id = a.invocation_id
         WHERE a.function = 'hello' ORDER BY a.started_ms",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 16, "{rows:?}");
    // Deferring an event is not an attempt.
    assert!(
        rows.iter().all(|r| r.3 == 1),
        "every event ran once, as attempt 1: {rows:?}"
    );
    let (hot, other): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.0.starts_with("Hello, hot"));
    assert_eq!(hot.len(), 10, "{rows:?}");
    // Runs of the hot key never overlapped (worker-measured times).
    for w in hot.windows(2) {
        assert!(w[1].1 >= w[0].2, "hot runs overlap: {:?} and {:?}", w[0], w[1]);
    }
    // The other customers did not wait for the hot backlog.
    let last_hot = hot.iter().map(|r| r.4).max().unwrap();
    let last_other = other.iter().map(|r| r.4).max().unwrap();
    println!(
        "last other key done {} ms before the last hot one",
        last_hot - last_other
    );
    assert!(
        last_other + 1000 < last_hot,
        "other keys finished at {last_other}, the hot backlog at {last_hot}"
    );
}

/// hello with another timeout (the example sets 10 s).
fn hello_timeout(secs: u32, extra: &str) -> tempfile::TempDir {
    let f = hello_with(extra);
    let path = f.path().join("stoke.toml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, manifest.replace("timeout = 10", &format!("timeout = {secs}"))).unwrap();
    f
}

#[tokio::test]
async fn the_lease_follows_the_function_timeout_and_a_redeploy_updates_it() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let consumer_config = || async {
        let stream = js.get_stream("STOKE_INVOKE").await.unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("fn-hello").await.unwrap();
        let info = c.info().await.unwrap();
        (info.config.ack_wait, info.config.max_ack_pending)
    };

    p.deploy(hello_timeout(120, "concurrency = 3").path());
    let r = p.post("hello", "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Twice the concurrency: as many wait in the dispatcher as run.
    assert_eq!(consumer_config().await, (Duration::from_secs(130), 6));

    // Shorter timeout (the lease has a 30 s floor), more concurrency, a key.
    p.deploy(hello_timeout(5, "concurrency = 8\nconcurrency_key = \"body.customer\"").path());
    eventually(Duration::from_secs(15), "the consumer to be updated", || async {
        (consumer_config().await == (Duration::from_secs(30), 16)).then_some(())
    })
    .await;
    let r = p.post("hello", r#"{"customer":"a"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `concurrency` holds although twice as many events are handed to the
/// dispatcher (`max_ack_pending` = 2 × concurrency): the ones beyond it wait
/// at the dispatcher's gate, never on a worker with free slots.
#[tokio::test]
async fn no_more_than_concurrency_run_at_once_while_as_many_wait() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_with("concurrency = 2").path());
    for i in 0..8 {
        send_async(&p, format!(r#"{{"sleep":0.3,"name":"c{i}"}}"#)).await;
    }
    let db = p.db().await;
    eventually(Duration::from_secs(60), "all 8 events to complete", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE function = 'hello'")
            .fetch_one(&db)
            .await
            .unwrap();
        (n == 8).then_some(())
    })
    .await;
    // Worker-measured run times: at no start were 2 others still running.
    let runs = hello_runs(&db).await;
    assert_eq!(runs.len(), 8, "each ran once: {runs:?}");
    assert_at_most_at_once(2, &runs);
    // The waiting ones were handed the running ones' slots (sent to their
    // worker ahead, to run next on the same sandbox): no new sandbox.
    assert!(handovers(&p).await >= 1.0, "no event was handed a running one's slot");
    let cold: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE function = 'hello' AND cold")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(cold <= 2, "{cold} cold starts: a follower started a sandbox of its own");
}

/// Worker-measured runs `(started_ms, ended_ms)`, by start: at no start
/// were `limit` others still running.
/// Worker-measured (start, end) of every attempt of `hello`, by start.
async fn hello_runs(db: &sqlx::SqlitePool) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT started_ms, ended_ms FROM attempts WHERE function = 'hello' ORDER BY started_ms")
        .fetch_all(db)
        .await
        .unwrap()
}

fn assert_at_most_at_once(limit: usize, runs: &[(i64, i64)]) {
    for (i, run) in runs.iter().enumerate() {
        let running = runs[..i].iter().filter(|r| r.1 > run.0).count();
        assert!(
            running < limit,
            "{running} others still ran when run {i} started: {runs:?}"
        );
    }
}

/// The dispatcher's `stoke_handovers_total` for hello.
async fn handovers(p: &Platform) -> f64 {
    let text = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("stoke_handovers_total{function=\"hello\"} "))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A call handed the slot of one that crashes its sandbox still runs (on a
/// new one), after it; and one handed the slot of a call that times out
/// runs after the kill.
#[tokio::test]
async fn a_handed_over_call_runs_after_the_one_ahead_crashes_or_times_out() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(hello_timeout(1, "concurrency = 1").path());
    let warm = p.post("hello", r#"{"name":"warm"}"#).await;
    assert_eq!(warm.status, 200, "{}", warm.text());

    for ahead in [r#"{"sleep":0.3,"crash":true}"#, r#"{"sleep":5}"#] {
        let before = handovers(&p).await;
        let first = p.post("hello", ahead);
        let second = async {
            // Sent once the first runs: it waits for its slot.
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.post("hello", r#"{"name":"next"}"#).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_ne!(first.status, 200, "{ahead}: {}", first.text());
        assert_eq!(second.status, 200, "{ahead}: {}", second.text());
        assert!(second.text().contains("Hello, next!"), "{}", second.text());
        assert_eq!(
            handovers(&p).await,
            before + 1.0,
            "{ahead}: the second was handed the first's slot"
        );
    }
    let db = p.db().await;
    let runs = hello_runs(&db).await;
    assert_eq!(runs.len(), 5, "{runs:?}");
    assert_at_most_at_once(1, &runs);
}
