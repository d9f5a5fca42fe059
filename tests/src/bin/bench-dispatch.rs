//! Dispatch efficiency: do the slots stay busy? W workers with S slots
//! each (100 in all by default) run hello (Python; BENCH_RUNTIME=rust for
//! hello-rust), sleeping 100 ms per event; the ideal throughput is slots ÷ 0.1 s. Events are published on a
//! subscribed NATS subject (as any NATS client would); every sandbox is
//! provisioned first (`min_warm`), so no cold start is measured. A
//! benchmark that prints figures, not a test:
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/bench-dispatch
//! ```
//!
//! Knobs (environment): BENCH_WORKERS (4), BENCH_SLOTS per worker (25),
//! BENCH_EVENTS (4000), BENCH_SLEEP_MS (100), BENCH_RUNTIME (python | rust).

use std::time::{Duration, Instant};

use stoke_tests::measure::{cpu_secs, knob};
use stoke_tests::{Cluster, ClusterOptions, Nats, eventually};

#[tokio::main]
async fn main() {
    let workers = knob("BENCH_WORKERS", 4);
    let slots = knob("BENCH_SLOTS", 25);
    let events = knob("BENCH_EVENTS", 4000);
    let sleep_ms = knob("BENCH_SLEEP_MS", 100);
    let total = workers * slots;

    let nats = Nats::start().await.unwrap();
    let c = Cluster::start_with(
        &nats.url,
        ClusterOptions {
            dispatchers: 1,
            workers,
            env: vec![("STOKE_WORKER__SLOTS".into(), slots.to_string())],
            ..Default::default()
        },
    )
    .await;
    // BENCH_RUNTIME=python (default: examples/hello-python) or rust
    // (hello-rust, `lambda_runtime`), on subject `bench.*`.
    let rust = std::env::var("BENCH_RUNTIME").is_ok_and(|r| r == "rust");
    let limits = format!("concurrency = {total}\nmin_warm = {total}\n[[triggers]]\nsubject = \"bench.*\"\n");
    let (function, needle) = if rust {
        let f = tempfile::tempdir().unwrap();
        std::fs::copy(stoke_tests::built_binary("hello-rust"), f.path().join("bootstrap")).unwrap();
        let manifest = format!("name = \"hello-rust\"\ncommand = [\"./bootstrap\"]\n{limits}");
        std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
        (f, "bootstrap")
    } else {
        let f = stoke_tests::copy_function(&stoke_tests::workspace_root().join("examples/hello-python"));
        let manifest = format!(
            "name = \"hello\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\n\
             handler = \"handler.handler\"\n{limits}"
        );
        std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
        (f, "stoke_runtime.py")
    };
    c.deploy(function.path());
    let db = stoke_tests::open_db(&c.db_path()).await;
    println!("{workers} workers × {slots} slots, {sleep_ms} ms per event; provisioning {total} sandboxes...");
    // Every sandbox started and its runtime waiting for work.
    eventually(Duration::from_secs(120), "the sandboxes to be provisioned", || async {
        let running: usize = c
            .workers
            .iter()
            .flatten()
            .map(|w| stoke_tests::processes_running(w.id(), needle).len())
            .sum();
        (running >= total).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let payload = format!(r#"{{"sleep":{}}}"#, sleep_ms as f64 / 1000.0);
    let platform: Vec<u32> = c
        .workers
        .iter()
        .flatten()
        .chain(c.dispatcher.iter())
        .chain(c.broker.iter())
        .map(|p| p.id())
        .collect();
    let cpu = || platform.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let cpu_before = cpu();
    let started = Instant::now();
    let mut acks = Vec::with_capacity(events);
    for _ in 0..events {
        acks.push(js.publish("bench.events", payload.clone().into()).await.unwrap());
        // async-nats bounds the acks in flight (5000): collect them as we go.
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let published = started.elapsed();
    eventually(Duration::from_secs(600), "every event to complete", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE status = 'succeeded'")
            .fetch_one(&db)
            .await
            .unwrap();
        (n as usize >= events).then_some(())
    })
    .await;
    let elapsed = started.elapsed();
    let cpu_used = cpu() - cpu_before;
    let cold: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE cold")
        .fetch_one(&db)
        .await
        .unwrap();
    let ideal = total as f64 / (sleep_ms as f64 / 1000.0);
    let achieved = events as f64 / elapsed.as_secs_f64();
    println!("{events} events published in {published:?}, all done in {elapsed:?} ({cold} cold starts)");
    println!(
        "throughput {achieved:.0}/s; ideal {ideal:.0}/s ({total} slots ÷ {sleep_ms} ms); efficiency {:.3}",
        achieved / ideal
    );
    println!(
        "platform CPU (dispatcher, broker, workers; not nats-server or the functions): {:.0} µs per event, \
         {:.2} cores on average",
        cpu_used * 1e6 / events as f64,
        cpu_used / elapsed.as_secs_f64()
    );
}
