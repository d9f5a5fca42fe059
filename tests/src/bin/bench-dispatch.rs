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
//! BENCH_EVENTS (20000: 200 cycles, ~20 s), BENCH_SLEEP_MS (100), BENCH_RUNTIME (python | rust),
//! BENCH_KEEP_LOGS (a directory to copy the processes' logs into, e.g. with
//! `RUST_LOG=info,stoke_dispatcher=debug`).
//!
//! Figures: the throughput over the slots' working period (first event
//! handed to a worker → last result) ÷ the ideal; the same in the steady
//! state (the slots' mean cycle with the first and last 3 cycles left out,
//! where the slots fill and drain one after another); each slot's cycle split
//! into the function's own time (worker-measured: the runtime's `/next`
//! answered → its result posted, so it includes the runtime client's
//! overhead and its timer's precision) and the platform's rest; and the
//! slot occupancy (function time ÷ cycle).

use std::time::{Duration, Instant};

use stoke_tests::measure::{cpu_secs, knob, steady_cycle};
use stoke_tests::{Cluster, ClusterOptions, Nats, eventually};

#[tokio::main]
async fn main() {
    let workers = knob("BENCH_WORKERS", 4);
    let slots = knob("BENCH_SLOTS", 25);
    let events = knob("BENCH_EVENTS", 20000);
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
    if let Ok(to) = std::env::var("BENCH_KEEP_LOGS") {
        for e in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                std::fs::copy(e.path(), std::path::Path::new(&to).join(e.file_name())).unwrap();
            }
        }
    }
    let cold: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE cold")
        .fetch_one(&db)
        .await
        .unwrap();
    // The slots' working period: the first event handed to a worker to the
    // last result (the publishing and the harness's polling left out).
    // Over it: the rate, how much of the slots' time the function itself
    // had an event (the runtime's /next answered → its result posted), and
    // the rest of a slot's cycle, which is the platform's.
    let (first_ms, last_ms, function_us): (i64, i64, i64) =
        sqlx::query_as("SELECT min(started_ms), max(ended_ms), sum(duration_us) FROM attempts")
            .fetch_one(&db)
            .await
            .unwrap();
    let window_s = (last_ms - first_ms).max(1) as f64 / 1000.0;
    let ideal = total as f64 / (sleep_ms as f64 / 1000.0);
    let achieved = events as f64 / window_s;
    // Steady state: the slots start one after another (the dispatcher
    // places the first events one by one) and so end one after another; a
    // short run's whole-run rate counts that fill and drain. The steady
    // cycle comes from the end times ranked a whole number of cycles apart
    // (`measure::steady_cycle`), the first and last 3 cycles left out.
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT ended_ms, duration_us FROM attempts ORDER BY ended_ms")
        .fetch_all(&db)
        .await
        .unwrap();
    let ends: Vec<f64> = rows.iter().map(|r| r.0 as f64).collect();
    let steady = steady_cycle(&ends, total, 3).map(|cycle| {
        let inner = &rows[total * 3..rows.len() - total * 3];
        let function = inner.iter().map(|r| r.1 as f64).sum::<f64>() / 1000.0 / inner.len() as f64;
        (cycle, function)
    });
    // How long the slots took to fill (the first events' starts) and to
    // drain (the last events' ends).
    let starts: Vec<i64> = sqlx::query_scalar("SELECT started_ms FROM attempts ORDER BY started_ms LIMIT ?1")
        .bind(total as i64)
        .fetch_all(&db)
        .await
        .unwrap();
    let fill_ms = starts.last().unwrap_or(&first_ms) - first_ms;
    let drain_ms = last_ms - rows.len().checked_sub(total).map_or(last_ms, |i| rows[i].0);
    let cycle_ms = total as f64 * window_s * 1000.0 / events as f64;
    let function_ms = function_us as f64 / 1000.0 / events as f64;
    println!("{events} events published in {published:?}, all counted done after {elapsed:?} ({cold} cold starts)");
    println!(
        "throughput {achieved:.0}/s over the slots' {window_s:.2} s; ideal {ideal:.0}/s ({total} slots ÷ {sleep_ms} ms): \
         efficiency {:.3}",
        achieved / ideal
    );
    println!("the {total} slots filled in {fill_ms} ms and drained in {drain_ms} ms");
    match steady {
        Some((cycle, function)) => println!(
            "steady state (the first and last 3 cycles left out): cycle {cycle:.2} ms, efficiency {:.3}; \
             function {function:.2} ms, platform {:.2} ms, slot occupancy {:.3}",
            sleep_ms as f64 / cycle,
            cycle - function,
            function / cycle
        ),
        None => println!("steady state: too few cycles to tell (raise BENCH_EVENTS)"),
    }
    println!(
        "per slot cycle {cycle_ms:.2} ms: function {function_ms:.2} ms (its {sleep_ms} ms sleep and its runtime), \
         platform {:.2} ms; slot occupancy {:.3}",
        cycle_ms - function_ms,
        function_ms / cycle_ms
    );
    println!(
        "platform CPU (dispatcher, broker, workers; not nats-server or the functions): {:.0} µs per event, \
         {:.2} cores on average",
        cpu_used * 1e6 / events as f64,
        cpu_used / elapsed.as_secs_f64()
    );
}
