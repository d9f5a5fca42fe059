//! Cron triggers with real brokers: each tick fires once however many
//! brokers run, missed ticks follow the catch-up policy, overlapping runs
//! follow the overlap policy, and every tick lands in the ledger.

use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::Row as _;
use stoke_tests::{Cluster, Nats, Platform, built_binary, eventually, free_port, open_db, workspace_root};

/// A function that returns its event, on a cron schedule.
fn cron_function(name: &str, cron: &str, extra: &str, sleep_secs: f64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        workspace_root().join("examples/hello-python/stoke_runtime.py"),
        d.path().join("stoke_runtime.py"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("app.py"),
        format!("import time\n\ndef handler(event, context):\n    time.sleep({sleep_secs})\n    return event\n"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("stoke.toml"),
        format!(
            "name = \"{name}\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\nhandler = \"app.handler\"\n\n\
             [[triggers]]\ncron = \"{cron}\"\n{extra}\n"
        ),
    )
    .unwrap();
    d
}

async fn ledger(db: &sqlx::SqlitePool, function: &str) -> Vec<(i64, String)> {
    sqlx::query("SELECT scheduled_ms, outcome FROM cron_ticks WHERE function = ? ORDER BY scheduled_ms")
        .bind(function)
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect()
}

/// Every second between the first and last tick is in the ledger once.
fn assert_contiguous(ticks: &[(i64, String)]) {
    for w in ticks.windows(2) {
        assert_eq!(w[1].0 - w[0].0, 1000, "a gap or a repeat in the ledger: {ticks:?}");
    }
}

#[tokio::test]
async fn two_brokers_fire_each_tick_once() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    // A second broker (with its scheduler) on the same NATS and store.
    let data = tempfile::tempdir().unwrap();
    let mut second = Command::new(built_binary("stoke"))
        .args([
            "broker",
            "--http",
            &format!("127.0.0.1:{}", free_port()),
            "--nats-url",
            &nats.url,
            "--store",
        ])
        .arg(format!("sqlite://{}", p.db_path().display()))
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("broker.log")).unwrap())
        .spawn()
        .unwrap();
    let f = cron_function("every-second", "* * * * * *", "", 0.0);
    p.deploy(f.path());
    let db = open_db(&p.db_path()).await;
    eventually(Duration::from_secs(30), "5 fired ticks", || async {
        (ledger(&db, "every-second")
            .await
            .iter()
            .filter(|t| t.1 == "fired")
            .count()
            >= 5)
            .then_some(())
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();
    let log = std::fs::read_to_string(data.path().join("broker.log")).unwrap();
    assert!(
        log.contains("cron schedule active"),
        "the second broker scheduled too:\n{log}"
    );

    let ticks = ledger(&db, "every-second").await;
    assert_contiguous(&ticks);
    // No tick ran twice: one attempt per cron invocation, each one a ledger tick.
    let fired: Vec<String> = sqlx::query_scalar("SELECT invocation_id FROM cron_ticks WHERE function = 'every-second'")
        .fetch_all(&db)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "fired ticks to complete", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE function = 'every-second'")
            .fetch_one(&db)
            .await
            .unwrap();
        (done as usize >= fired.len()).then_some(())
    })
    .await;
    let runs =
        sqlx::query("SELECT invocation_id, count(*) FROM attempts WHERE trigger = 'cron' GROUP BY invocation_id")
            .fetch_all(&db)
            .await
            .unwrap();
    for r in &runs {
        assert_eq!(
            r.get::<i64, _>(1),
            1,
            "tick {} ran more than once",
            r.get::<String, _>(0)
        );
    }
    let event: Vec<u8> = sqlx::query_scalar("SELECT result FROM completions WHERE function = 'every-second' LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(event["source"], "cron");
    assert!(event["scheduledTime"].as_str().unwrap().ends_with(".000Z"), "{event}");
    let out = p.cli(&["cron", "ledger", "--function", "every-second"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fired"));
    println!("{} ticks in the ledger, {} runs, 2 brokers", ticks.len(), runs.len());
}

#[tokio::test]
async fn ticks_missed_while_no_broker_ran_follow_the_catch_up_policy() {
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 1).await;
    let all = cron_function("catch-all", "* * * * * *", "catch_up = \"all\"", 0.0);
    let none = cron_function("catch-none", "* * * * * *", "", 0.0);
    c.deploy(all.path());
    c.deploy(none.path());
    let db = open_db(&c.db_path()).await;
    for f in ["catch-all", "catch-none"] {
        eventually(Duration::from_secs(30), "2 fired ticks", || async {
            (ledger(&db, f).await.iter().filter(|t| t.1 == "fired").count() >= 2).then_some(())
        })
        .await;
    }
    // Everything so far was on time.
    for f in ["catch-all", "catch-none"] {
        assert!(
            ledger(&db, f).await.iter().all(|t| t.1 == "fired"),
            "{f}: {:?}",
            ledger(&db, f).await
        );
    }
    // No broker for 6 s.
    let mut b = c.broker.take().unwrap();
    let _ = b.kill();
    let _ = b.wait();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarted_ms = chrono_now_ms();
    c.broker = Some(c.spawn(&["broker", "--http", &c.http.clone()], "broker"));
    for f in ["catch-all", "catch-none"] {
        eventually(
            Duration::from_secs(30),
            "ticks fired on time after the restart",
            || async {
                let t = ledger(&db, f).await;
                (t.iter().filter(|x| x.0 > restarted_ms && x.1 == "fired").count() >= 2).then_some(())
            },
        )
        .await;
    }
    let all = ledger(&db, "catch-all").await;
    let none = ledger(&db, "catch-none").await;
    assert_contiguous(&all);
    assert_contiguous(&none);
    let count = |t: &[(i64, String)], o: &str| t.iter().filter(|x| x.1 == o).count();
    println!(
        "catch_up=all: {} caught up; catch_up=none: {} missed by policy",
        count(&all, "caught_up"),
        count(&none, "missed_by_policy")
    );
    assert!(count(&all, "caught_up") >= 3, "{all:?}");
    assert_eq!(count(&all, "missed_by_policy"), 0);
    assert!(count(&none, "missed_by_policy") >= 3, "{none:?}");
    assert_eq!(count(&none, "caught_up"), 0);
}

#[tokio::test]
async fn overlap_skip_never_runs_two_ticks_at_once() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(cron_function("slow-tick", "* * * * * *", "overlap = \"skip\"", 2.5).path());
    let db = open_db(&p.db_path()).await;
    eventually(Duration::from_secs(40), "2 fired and some skipped ticks", || async {
        let t = ledger(&db, "slow-tick").await;
        let fired = t.iter().filter(|x| x.1 == "fired").count();
        let skipped = t.iter().filter(|x| x.1 == "skipped_overlap").count();
        (fired >= 2 && skipped >= 3).then_some(())
    })
    .await;
    let runs =
        sqlx::query("SELECT started_ms, ended_ms FROM attempts WHERE function = 'slow-tick' ORDER BY started_ms")
            .fetch_all(&db)
            .await
            .unwrap();
    for w in runs.windows(2) {
        let (prev_end, next_start) = (w[0].get::<i64, _>(1), w[1].get::<i64, _>(0));
        assert!(next_start >= prev_end, "runs overlapped: {prev_end} > {next_start}");
    }
    assert_contiguous(&ledger(&db, "slow-tick").await);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn schedules_created_paused_resumed_and_deleted_through_the_admin_api() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));
    let (ok, err) = (|a: &[&str]| p.cli_ok(a), |a: &[&str]| p.cli_err(a));
    // Refusals name what is wrong.
    assert!(err(&["cron", "create", "s1", "--function", "nope", "--cron", "* * * * * *"]).contains("not found"));
    assert!(err(&["cron", "create", "s1", "--function", "hello", "--cron", "61 * * * * *"]).contains("`cron`"));
    assert!(
        err(&[
            "cron",
            "create",
            "s1",
            "--function",
            "hello",
            "--cron",
            "* * * * * *",
            "--timezone",
            "Mars/Base"
        ])
        .contains("`timezone`")
    );
    assert!(
        err(&[
            "cron",
            "create",
            "s1",
            "--function",
            "hello",
            "--cron",
            "* * * * * *",
            "--overlap",
            "sometimes"
        ])
        .contains("`overlap`")
    );

    let created = ok(&[
        "cron",
        "create",
        "every-sec",
        "--function",
        "hello",
        "--cron",
        "* * * * * *",
        "--data",
        r#"{"k":1}"#,
    ]);
    assert!(
        created.contains("hello@every-sec") && created.contains("admin"),
        "{created}"
    );
    assert!(
        err(&[
            "cron",
            "create",
            "every-sec",
            "--function",
            "hello",
            "--cron",
            "* * * * * *"
        ])
        .contains("exists")
    );
    assert!(ok(&["cron", "list"]).contains("hello@every-sec"));

    let db = open_db(&p.db_path()).await;
    let count = |db: sqlx::SqlitePool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cron_ticks WHERE schedule_id = 'hello@every-sec'")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(20), "2 ticks", || async {
        (count(db.clone()).await >= 2).then_some(())
    })
    .await;
    let result: Vec<u8> = eventually(Duration::from_secs(20), "a completed tick", || async {
        sqlx::query_scalar("SELECT result FROM completions WHERE trigger = 'cron' LIMIT 1")
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await;
    let proxy: serde_json::Value = serde_json::from_slice(&result).unwrap();
    assert!(proxy["body"].as_str().unwrap().contains("Hello, every-sec!"), "{proxy}");

    // Paused: nothing fires, nothing is recorded as missed.
    assert!(ok(&["cron", "pause", "every-sec"]).contains("true"));
    tokio::time::sleep(Duration::from_millis(2500)).await; // the scheduler notices within a second
    let at_pause = count(db.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(db.clone()).await, at_pause, "a paused schedule does not tick");

    ok(&["cron", "resume", "every-sec"]);
    eventually(Duration::from_secs(20), "ticks after resuming", || async {
        (count(db.clone()).await >= at_pause + 2).then_some(())
    })
    .await;
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT outcome FROM cron_ticks WHERE schedule_id = 'hello@every-sec'")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        ["fired"],
        "a pause is not an outage: nothing missed or caught up"
    );

    ok(&["cron", "delete", "every-sec"]);
    assert!(err(&["cron", "delete", "every-sec"]).contains("no schedule"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let at_delete = count(db.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(db.clone()).await, at_delete, "a deleted schedule does not tick");
}

/// overlap = "queue": a tick held behind a slow run fires when it ends,
/// however late — waiting ticks are neither skipped nor counted as missed.
#[tokio::test]
async fn overlap_queue_fires_every_tick_in_turn_never_concurrently() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(cron_function("queued-tick", "* * * * * *", "overlap = \"queue\"", 2.0).path());
    let db = open_db(&p.db_path()).await;
    // Each run takes 2 s for a 1 s period, so by the 6th tick the queue is
    // more than the 3 s lateness tolerance behind.
    eventually(Duration::from_secs(60), "6 queued ticks fired", || async {
        (ledger(&db, "queued-tick").await.len() >= 6).then_some(())
    })
    .await;
    let ticks = ledger(&db, "queued-tick").await;
    assert!(
        ticks.iter().all(|t| t.1 == "fired"),
        "queued ticks are fired, not skipped or missed: {ticks:?}"
    );
    assert_contiguous(&ticks);
    let lag: i64 =
        sqlx::query_scalar("SELECT max(recorded_ms - scheduled_ms) FROM cron_ticks WHERE function = 'queued-tick'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(
        lag > 3000,
        "the queue fell behind past the tolerance ({lag} ms), so the test means something"
    );
    let runs =
        sqlx::query("SELECT started_ms, ended_ms FROM attempts WHERE function = 'queued-tick' ORDER BY started_ms")
            .fetch_all(&db)
            .await
            .unwrap();
    for w in runs.windows(2) {
        assert!(w[1].get::<i64, _>(0) >= w[0].get::<i64, _>(1), "runs overlapped");
    }
    println!("queued ticks: {}, max lateness {lag} ms", ticks.len());
}
