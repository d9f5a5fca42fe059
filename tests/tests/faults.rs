//! Fault injection with real processes and real signals: `stoke broker`,
//! `stoke dispatcher` and two `stoke worker`s over one nats-server and one
//! SQLite file, with workers killed by SIGKILL while events are in flight.
//! Each test prints its figures.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use stoke_tests::{Cluster, Nats, count, eventually, hello_with, workspace_root};

#[tokio::test]
async fn killing_workers_loses_nothing_and_completes_each_key_once() {
    const EVENTS: usize = 3000;
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 2).await;
    // Enough attempts that repeated kills never exhaust an event.
    let f = hello_with("concurrency = 16\nmax_attempts = 50");
    c.deploy(f.path());

    // Accept events (each accepted = durable in JetStream) while workers are
    // killed: the backlog drains as fast as it is accepted, so the kills must
    // start with the load, not after it.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let http = c.http.clone();
    let accept = tokio::spawn(
        futures::stream::iter(0..EVENTS)
            .map(move |i| {
                let (client, http) = (client.clone(), http.clone());
                async move {
                    let r = client
                        .post(format!("http://{http}/fn/hello"))
                        .header("Prefer", "respond-async")
                        .header("Idempotency-Key", format!("key-{i}"))
                        .body(format!(r#"{{"name":"n{i}","sleep":0.02}}"#))
                        .send()
                        .await;
                    r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>(),
    );

    // Kill a worker every 500 ms until the backlog has drained.
    let db = stoke_tests::open_db(&c.db_path()).await;
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = count(&db, "SELECT count(*) FROM completions").await;
        if done as usize >= EVENTS {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {EVENTS} completed in time");
        if kills < 20 {
            c.kill_and_restart_worker(kills % 2);
            kills += 1;
        }
    }
    let statuses = accept.await.unwrap();
    let refused: Vec<_> = statuses.iter().filter(|s| !matches!(s, Ok(202))).collect();
    assert!(
        refused.is_empty(),
        "every event accepted; refused: {:?}",
        &refused[..refused.len().min(5)]
    );
    let drained = started.elapsed();

    let completions = count(&db, "SELECT count(*) FROM completions").await;
    let keys = count(&db, "SELECT count(DISTINCT idempotency_key) FROM completions").await;
    let succeeded = count(&db, "SELECT count(*) FROM completions WHERE status = 'succeeded'").await;
    let attempts = count(&db, "SELECT count(*) FROM attempts").await;
    let lost_attempts = count(&db, "SELECT count(*) FROM attempts WHERE outcome = 'platform_error'").await;
    // Every completion has its successful, metered attempt.
    let unmetered = count(
        &db,
        "SELECT count(*) FROM completions c WHERE NOT EXISTS \
         (SELECT 1 FROM attempts a WHERE a.invocation_id = c.invocation_id AND a.outcome = 'success')",
    )
    .await;
    println!(
        "events {EVENTS}, worker kills {kills}, completions {completions}, distinct keys {keys}, \
         lost {}, duplicates {}, attempts {attempts} (of which lost with a worker {lost_attempts}), \
         drained in {drained:?}",
        EVENTS as i64 - keys,
        completions - keys
    );
    assert_eq!(keys, EVENTS as i64, "no event lost");
    assert_eq!(completions, keys, "exactly one completion per key");
    assert_eq!(succeeded, completions);
    assert_eq!(unmetered, 0);
    assert!(kills >= 2, "the test must actually kill workers");
    assert!(lost_attempts >= 1, "the kills must catch attempts in flight");
}

/// The store stops taking writes (another process holds SQLite's write lock
/// past the busy timeout): the gateway answers 503 for what it cannot
/// record, nothing is acked that is not stored, and everything in flight
/// completes once the store is back.
#[tokio::test]
async fn a_locked_store_means_503_then_full_recovery() {
    let nats = Nats::start().await.unwrap();
    let p = stoke_tests::Platform::start(&nats).await.unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));
    // Warm the function so the sync call below is quick to run.
    assert_eq!(p.post("hello", "{}").await.status, 200);

    // Hold the write lock for 8 s from another process.
    let db = p.db_path();
    let mut locker = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(8)\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(locker.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let locked_at = Instant::now();

    // A sync call runs, but its completion cannot be written yet: it waits.
    let sync = {
        let url = p.url("/fn/hello");
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .body(r#"{"name":"patient"}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // An async event cannot be recorded: 503, nothing accepted.
    let r = p
        .post_with("hello", r#"{"name":"refused"}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Stoke.Unavailable");

    let (status, body) = sync.await.unwrap();
    let waited = locked_at.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello, patient!"));
    assert!(
        waited >= Duration::from_secs(7),
        "the answer came only after the store was back ({waited:?})"
    );
    let _ = locker.wait();

    // Fully recovered: async accepted and completed again.
    let r = p
        .post_with("hello", r#"{"name":"later"}"#, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(r.status, 202);
    let location = r.headers["location"].to_str().unwrap().to_string();
    eventually(Duration::from_secs(20), "async after recovery", || async {
        (p.get(&location).await.json()["status"] == "succeeded").then_some(())
    })
    .await;
    let pool = p.db().await;
    let patient = count(&pool, "SELECT count(*) FROM completions WHERE result LIKE '%patient%'").await;
    let refused = count(&pool, "SELECT count(*) FROM completions WHERE result LIKE '%refused%'").await;
    println!("store locked 8 s: sync answer after {waited:?}; completions patient={patient} refused={refused}");
    assert_eq!((patient, refused), (1, 0));
}

/// SIGKILL the dispatcher, then nats-server, then the broker while a
/// backlog drains (restarting each): still nothing lost, one completion per
/// key, and events accepted after the restarts complete too.
#[tokio::test]
async fn killing_dispatcher_nats_and_broker_loses_nothing() {
    const EVENTS: usize = 1000;
    let mut nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 2).await;
    let f = hello_with("concurrency = 16\nmax_attempts = 50");
    c.deploy(f.path());
    let started = Instant::now();
    let accepting = {
        let http = c.http.clone();
        tokio::spawn(async move { accept(&http, 0..EVENTS).await })
    };

    let db = stoke_tests::open_db(&c.db_path()).await;
    let done = |db: sqlx::SqlitePool| async move { count(&db, "SELECT count(*) FROM completions").await };
    // Dispatcher: SIGKILL mid-drain (once the first events are done, while
    // the rest are still being accepted: a fixed sleep after accepting them
    // all once found 899 done), restart on the same address.
    eventually(Duration::from_secs(30), "the first completions", || async {
        (done(db.clone()).await >= 20).then_some(())
    })
    .await;
    let before = done(db.clone()).await;
    let mut d = c.dispatcher.take().unwrap();
    let _ = d.kill();
    let _ = d.wait();
    c.dispatcher = Some(c.spawn(&["dispatcher", "--admin", &c.admin.clone()], "dispatcher"));
    assert_eq!(accepting.await.unwrap(), EVENTS);
    // nats-server: SIGKILL, restart on the same port and store.
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.kill_and_restart().await;
    // Broker: SIGKILL, restart; then accept more.
    let mut b = c.broker.take().unwrap();
    let _ = b.kill();
    let _ = b.wait();
    c.broker = Some(c.spawn(&["broker", "--http", &c.http.clone()], "broker"));
    let http = c.http.clone();
    stoke_tests::wait_gateway(&http).await;
    let more = eventually(Duration::from_secs(30), "the restarted broker to accept", || async {
        let n = accept(&http, EVENTS..EVENTS + 100).await;
        (n == 100).then_some(n)
    })
    .await;
    let total = EVENTS + more;

    eventually(Duration::from_secs(150), "every accepted event to complete", || async {
        (done(db.clone()).await as usize >= total).then_some(())
    })
    .await;
    let drained = started.elapsed();
    let keys = count(&db, "SELECT count(DISTINCT idempotency_key) FROM completions").await;
    let completions = done(db.clone()).await;
    let attempts = count(&db, "SELECT count(*) FROM attempts").await;
    println!(
        "events {total}, completed before the dispatcher kill {before}, completions {completions}, \
         distinct keys {keys}, lost {}, duplicates {}, attempts {attempts}, drained in {drained:?}",
        total as i64 - keys,
        completions - keys
    );
    assert_eq!(keys, total as i64, "no event lost");
    assert_eq!(completions, keys, "exactly one completion per key");
    assert!(
        before < EVENTS as i64 / 2,
        "the dispatcher was killed early in the drain ({before} done)"
    );
}

/// POST async keyed events `key-<i>`; returns how many were accepted (202).
async fn accept(http: &str, range: std::ops::Range<usize>) -> usize {
    let client = reqwest::Client::new();
    futures::stream::iter(range)
        .map(|i| {
            let (client, http) = (client.clone(), http.to_string());
            async move {
                client
                    .post(format!("http://{http}/fn/hello"))
                    .header("Prefer", "respond-async")
                    .header("Idempotency-Key", format!("key-{i}"))
                    .body(format!(r#"{{"name":"n{i}","sleep":0.05}}"#))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 202)
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// SIGSTOP the worker running an event past its lease: the dispatcher
/// detaches it and the event runs again elsewhere and completes once; after
/// SIGCONT the paused worker's run is discarded (it lost its dispatcher and
/// kills its sandboxes), never recorded as a second completion.
#[tokio::test]
async fn a_paused_worker_is_superseded_and_its_run_discarded() {
    let nats = Nats::start().await.unwrap();
    let c = Cluster::start(&nats, 2).await;
    c.deploy(&workspace_root().join("examples/hello-python"));
    let client = reqwest::Client::new();
    let id = post_async(&c.http, r#"{"sleep":3,"name":"paused"}"#, Some("paused-1")).await;

    // Find the worker that took it, and pause it.
    let dir = c.dir.path().to_path_buf();
    let first = eventually(Duration::from_secs(20), "a worker to start the event", || async {
        (0..2).find(|i| {
            std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.starts_with(&format!("worker{i}-"))
                    && std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains(&format!("invocation={id}"))
            })
        })
    })
    .await;
    let paused = c.workers[first].as_ref().unwrap().id();
    let pid = nix::unistd::Pid::from_raw(paused as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped_at = Instant::now();

    let db = stoke_tests::open_db(&c.db_path()).await;
    let done = eventually(
        Duration::from_secs(60),
        "the event to complete on the other worker",
        || async {
            sqlx::query_as::<_, (String, Vec<u8>)>(
                "SELECT status, result FROM completions WHERE idempotency_key = 'paused-1'",
            )
            .fetch_optional(&db)
            .await
            .unwrap()
        },
    )
    .await;
    let superseded_after = stopped_at.elapsed();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(done.0, "succeeded");
    let body: serde_json::Value = serde_json::from_slice(&done.1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    assert!(body["attempt"].as_u64().unwrap() >= 2, "ran again: {body}");

    // The resumed worker reports its late result on its next stream: it is
    // fenced (not used), and recorded in place of the lost attempt.
    eventually(
        Duration::from_secs(30),
        "the late result to be recorded as fenced",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM attempts WHERE invocation_id = ? AND outcome = 'fenced'")
                    .bind(&id)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
    let completions: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE invocation_id = ?")
        .bind(&id)
        .fetch_one(&db)
        .await
        .unwrap();
    let attempts: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT attempt, outcome, worker FROM attempts WHERE invocation_id = ? ORDER BY attempt")
            .bind(&id)
            .fetch_all(&db)
            .await
            .unwrap();
    println!("paused worker superseded after {superseded_after:?}; attempts {attempts:?}");
    assert_eq!(completions, 1);
    assert_eq!(
        attempts.first().map(|a| a.1.as_str()),
        Some("fenced"),
        "the paused attempt is metered, as fenced"
    );
    assert_eq!(attempts.len(), 2, "one fenced, one that completed: {attempts:?}");
    assert_eq!(attempts.iter().filter(|a| a.1 == "success").count(), 1);
    assert_ne!(attempts[0].2, attempts.last().unwrap().2, "another worker finished it");
    // The resumed worker is still a working member.
    let ok = client
        .post(format!("http://{}/fn/hello", c.http))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// SIGKILL the dispatcher while a worker runs an event: the worker kills
/// that sandbox at once (the event will be redelivered, so it must not keep
/// running), and after the dispatcher is back it reports the killed attempt,
/// which is recorded as fenced.
#[tokio::test]
async fn a_worker_that_loses_its_dispatcher_kills_its_sandboxes() {
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 1).await;
    c.deploy(hello_with("").path());
    let worker = c.workers[0].as_ref().unwrap().id();
    let id = post_async(&c.http, r#"{"sleep":8,"name":"long"}"#, None).await;
    let sandbox = handler_sleeping(worker).await;

    let mut d = c.dispatcher.take().unwrap();
    let _ = d.kill();
    let _ = d.wait();
    let killed_at = Instant::now();
    eventually(Duration::from_secs(5), "the worker to kill its sandbox", || async {
        sandbox.iter().all(|p| !stoke_tests::alive(*p)).then_some(())
    })
    .await;
    println!("sandbox gone {:?} after the dispatcher was killed", killed_at.elapsed());
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    assert!(stoke_tests::alive(worker), "the worker itself carries on");

    c.dispatcher = Some(c.spawn(&["dispatcher", "--admin", &c.admin.clone()], "dispatcher"));
    let db = stoke_tests::open_db(&c.db_path()).await;
    let fenced: (String, String) = eventually(Duration::from_secs(30), "the killed attempt to be recorded", || async {
        sqlx::query_as("SELECT outcome, error_type FROM attempts WHERE invocation_id = ? AND outcome = 'fenced'")
            .bind(&id)
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(fenced, ("fenced".to_string(), "Stoke.DispatcherLost".to_string()));
}

/// SIGKILL a worker while its function sleeps in its handler: the function
/// must not outlive it (PDEATHSIG reaches the function through its keeper;
/// nothing else would end a sandbox whose worker is gone).
#[tokio::test]
async fn a_killed_worker_takes_its_sandboxes_along() {
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 1).await;
    c.deploy(hello_with("").path());
    let worker = c.workers[0].as_ref().unwrap().id();
    post_async(&c.http, r#"{"sleep":8,"name":"orphan"}"#, None).await;
    let running = handler_sleeping(worker).await;
    let mut w = c.workers[0].take().unwrap();
    let _ = w.kill();
    let _ = w.wait();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(3),
        "the function to die with its worker",
        || async { running.iter().all(|p| !stoke_tests::alive(*p)).then_some(()) },
    )
    .await;
    println!("function gone {:?} after its worker was SIGKILLed", killed_at.elapsed());
}

/// SIGTERM drains a worker: the dispatcher sends it nothing new, what it
/// runs finishes and is recorded as a success (not lost, not run twice),
/// then it exits 0.
#[tokio::test]
async fn sigterm_drains_a_worker() {
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 2).await;
    c.deploy(hello_with("").path());
    let (a, b) = (c.worker_ids[0].clone(), c.worker_ids[1].clone());
    let a_pid = c.workers[0].as_ref().unwrap().id();
    let mut before = Vec::new();
    for _ in 0..4 {
        before.push(post_async(&c.http, r#"{"sleep":3}"#, None).await);
    }
    let running = handler_sleeping(a_pid).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let termed = Instant::now();
    // Once the dispatcher has the Drain, send more.
    eventually(
        Duration::from_secs(10),
        "the dispatcher to see the worker draining",
        || async {
            let out = c.cli().args(["workers", "-o", "json"]).output().unwrap();
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let draining = list
                .as_array()?
                .iter()
                .any(|w| w["id"] == a.as_str() && w["draining"] == true);
            draining.then_some(())
        },
    )
    .await;
    let mut after = Vec::new();
    for _ in 0..4 {
        after.push(post_async(&c.http, r#"{"sleep":0.2}"#, None).await);
    }
    let worker = c.workers[0].as_mut().unwrap();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            termed.elapsed() < Duration::from_secs(20),
            "the drained worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited_after = termed.elapsed();
    assert!(status.success(), "a drained worker exits cleanly: {status}");
    assert!(running.iter().all(|p| !stoke_tests::alive(*p)));

    let db = stoke_tests::open_db(&c.db_path()).await;
    eventually(Duration::from_secs(30), "all eight to complete", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions")
            .fetch_one(&db)
            .await
            .unwrap();
        (n == 8).then_some(())
    })
    .await;
    let mut ran_on_a = 0;
    for (id, late) in before.iter().map(|i| (i, false)).chain(after.iter().map(|i| (i, true))) {
        let attempts: Vec<(String, String)> =
            sqlx::query_as("SELECT outcome, worker FROM attempts WHERE invocation_id = ?")
                .bind(id)
                .fetch_all(&db)
                .await
                .unwrap();
        assert_eq!(attempts.len(), 1, "{id}: one attempt, {attempts:?}");
        assert_eq!(attempts[0].0, "success", "{id}: {attempts:?}");
        if late {
            assert_eq!(attempts[0].1, b, "{id}: nothing new for the draining worker");
        }
        ran_on_a += usize::from(attempts[0].1 == a);
    }
    println!("worker drained in {exited_after:?}; it finished {ran_on_a} in-flight events");
    assert!(ran_on_a >= 1, "the draining worker finished what it ran");
}

/// POST an event to `hello` with `Prefer: respond-async`; its invocation id.
async fn post_async(http: &str, body: &'static str, key: Option<&str>) -> String {
    let mut req = reqwest::Client::new()
        .post(format!("http://{http}/fn/hello"))
        .header("Prefer", "respond-async")
        .body(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 202);
    r.json::<serde_json::Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The pids of hello's process below `worker`, once it sleeps in its
/// handler (its current system call is clock_nanosleep): a function still
/// starting would exit by itself when its worker goes, proving nothing.
async fn handler_sleeping(worker: u32) -> Vec<u32> {
    eventually(
        Duration::from_secs(20),
        "the function to sleep in its handler",
        || async {
            let found = stoke_tests::processes_running(worker, "stoke_runtime.py");
            (!found.is_empty()
                && found
                    .iter()
                    .all(|p| stoke_tests::in_syscall(*p, libc::SYS_clock_nanosleep)))
            .then_some(found)
        },
    )
    .await
}

/// `min_warm` is split over the workers: a worker that joins takes half of
/// the provisioned sandboxes, and the first one stops its extra ones at
/// once rather than after the idle TTL.
#[tokio::test]
async fn provisioned_sandboxes_rebalance_when_a_worker_joins() {
    let nats = Nats::start().await.unwrap();
    let mut c = Cluster::start(&nats, 1).await;
    c.deploy(hello_with("min_warm = 4").path());
    let count = |pid: u32| stoke_tests::processes_running(pid, "stoke_runtime.py").len();
    let first = c.workers[0].as_ref().unwrap().id();
    eventually(Duration::from_secs(20), "four sandboxes on the only worker", || async {
        (count(first) == 4).then_some(())
    })
    .await;
    c.worker_ids.push(String::new());
    let w = c.spawn_worker(1);
    c.workers.push(Some(w));
    let second = c.workers[1].as_ref().unwrap().id();
    eventually(Duration::from_secs(20), "two sandboxes on each worker", || async {
        (count(first) == 2 && count(second) == 2).then_some(())
    })
    .await;
}
