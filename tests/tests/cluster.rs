//! Scale-out under faults, all real processes on loopback: a three-node
//! NATS cluster (streams replicated ×3), PostgreSQL, two dispatchers, three
//! workers (each given both dispatchers) and a broker. Under
//! load, SIGKILL one NATS node, one dispatcher and one worker: every
//! accepted event completes exactly once and the load finishes. Prints
//! throughput and the cold-start rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stoke_tests::nats_cluster::NatsCluster;
use stoke_tests::{Cluster, ClusterOptions, eventually, hello_with};

/// Events offered to the cluster.
const EVENTS: usize = 1200;
/// Concurrent HTTP clients posting them.
const POSTERS: usize = 6;

/// Post event `key` asynchronously until the gateway accepts it (202, or
/// 200 once it has completed): a
/// 503 or a refused connection while NATS fails over is retried with the
/// same idempotency key, as a client should. Gives up after ~30 s with the
/// last answer.
async fn accept(http: &reqwest::Client, url: &str, key: usize) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..150 {
        let sent = http
            .post(url)
            .header("Prefer", "respond-async")
            .header("Idempotency-Key", format!("key-{key}"))
            .body(format!(r#"{{"name":"k{key}"}}"#))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => return Ok(()),
            // A retry of a key whose first try got through (its answer was
            // lost in the fail-over) and has completed since: its result.
            Ok(r) if r.status() == 200 => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

#[tokio::test]
async fn a_cluster_survives_losing_a_nats_node_a_dispatcher_and_a_worker() {
    let mut nats = NatsCluster::start(3).await.unwrap();
    let pg = stoke_store::testing::Postgres::start().await.unwrap();
    let store = pg.database().await.unwrap();
    let env = vec![("STOKE_STREAMS__REPLICAS".to_string(), "3".to_string())];
    let mut c = Cluster::start_with(
        &nats.url(),
        ClusterOptions {
            store: Some(store.clone()),
            dispatchers: 2,
            workers: 3,
            env,
            ..Default::default()
        },
    )
    .await;
    c.deploy(hello_with("concurrency = 24").path());

    let url = format!("http://{}/fn/hello", c.http);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let posters: Vec<_> = (0..POSTERS)
        .map(|_| {
            let (url, next, accepted) = (url.clone(), next.clone(), accepted.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut refused = Vec::new();
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= EVENTS {
                        return refused;
                    }
                    match accept(&http, &url, key).await {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(last) => refused.push((key, last)),
                    }
                }
            })
        })
        .collect();

    // The faults, a quarter of the way apart.
    let at = |n: usize| {
        let accepted = accepted.clone();
        async move {
            eventually(Duration::from_secs(120), "load to progress", || async {
                (accepted.load(Ordering::Relaxed) >= n).then_some(())
            })
            .await
        }
    };
    at(EVENTS / 4).await;
    nats.kill(0);
    println!("SIGKILLed NATS node n0 at {:?}", started.elapsed());
    at(EVENTS / 2).await;
    let mut d = c.dispatcher.take().unwrap();
    let _ = d.kill();
    let _ = d.wait();
    println!("SIGKILLed a dispatcher at {:?}", started.elapsed());
    at(3 * EVENTS / 4).await;
    let mut w = c.workers[0].take().unwrap();
    let _ = w.kill();
    let _ = w.wait();
    println!("SIGKILLed a worker at {:?}", started.elapsed());

    let mut refused = Vec::new();
    for p in posters {
        refused.extend(p.await.unwrap());
    }
    let accepted_n = accepted.load(Ordering::Relaxed);
    let posted_in = started.elapsed();
    assert!(refused.is_empty(), "events never accepted: {refused:?}");

    let db = sqlx::PgPool::connect(&store).await.unwrap();
    let done = eventually(Duration::from_secs(180), "every accepted event to complete", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions")
            .fetch_one(&db)
            .await
            .unwrap();
        (n as usize >= accepted_n).then_some(n)
    })
    .await;
    let elapsed = started.elapsed();
    let keys: i64 = sqlx::query_scalar("SELECT count(DISTINCT idempotency_key) FROM completions")
        .fetch_one(&db)
        .await
        .unwrap();
    let succeeded: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE status = 'succeeded'")
        .fetch_one(&db)
        .await
        .unwrap();
    let (attempts, cold): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(CASE WHEN cold THEN 1 ELSE 0 END), 0) FROM attempts")
            .fetch_one(&db)
            .await
            .unwrap();
    // Steady state: the second half of the attempts, after the pools warmed up.
    let (late, late_cold): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(CASE WHEN cold THEN 1 ELSE 0 END), 0) FROM \
         (SELECT cold FROM attempts ORDER BY started_ms OFFSET (SELECT count(*) / 2 FROM attempts)) AS late",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    println!(
        "{accepted_n} events accepted in {posted_in:?}, all {done} completed in {elapsed:?} \
         ({:.0}/s); {attempts} attempts, {cold} cold ({:.2} %; {late_cold} of the last {late}: {:.2} %)",
        done as f64 / elapsed.as_secs_f64(),
        100.0 * cold as f64 / attempts as f64,
        100.0 * late_cold as f64 / late.max(1) as f64
    );
    assert_eq!(done as usize, EVENTS, "exactly one completion per key");
    assert_eq!(keys as usize, EVENTS);
    assert_eq!(succeeded as usize, EVENTS);
}

/// Processes starting together on a new cluster all set up the streams
/// (R3): one makes each stream, and the others, which may not find it for
/// a moment while its group forms, wait for it instead of giving up (a
/// dispatcher once exited at start with "stream not found" this way).
#[tokio::test]
async fn processes_starting_together_on_a_cluster_all_set_up_the_streams() {
    let nats = NatsCluster::start(3).await.unwrap();
    let opts = stoke_bus::streams::StreamOptions {
        replicas: 3,
        ..Default::default()
    };
    for round in 0..3 {
        let started = Instant::now();
        // Each through another node, as processes on three boxes would be.
        let nodes: Vec<String> = nats.url().split(',').map(str::to_string).collect();
        let starts = (0..6).map(|i| {
            let (url, opts) = (nodes[i % nodes.len()].clone(), opts.clone());
            tokio::spawn(async move {
                let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
                stoke_bus::streams::ensure_invoke_stream(&js, &opts).await?;
                stoke_bus::streams::ensure_logs_stream(&js, &opts).await?;
                Ok::<_, async_nats::Error>(())
            })
        });
        for (i, started) in futures::future::join_all(starts).await.into_iter().enumerate() {
            if let Err(e) = started.unwrap() {
                panic!("round {round}, process {i}: {e}");
            }
        }
        println!(
            "round {round}: six processes set up the streams in {:?}",
            started.elapsed()
        );
        // Again from scratch.
        let js = async_nats::jetstream::new(async_nats::connect(nodes[0].as_str()).await.unwrap());
        js.delete_stream(stoke_core::naming::INVOKE_STREAM).await.unwrap();
        js.delete_stream(stoke_core::naming::LOGS_STREAM).await.unwrap();
    }
}
