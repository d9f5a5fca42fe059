//! Sandbox figures: cold start sandboxed vs unsandboxed (`--sandbox none`)
//! for the same functions, the warm round trip, and the worker's memory per
//! idle warm sandbox. A benchmark that prints figures, not a test:
//!
//! ```sh
//! cargo build --release --workspace && cargo run --release -p stoke-tests --bin bench-sandbox
//! ```
//!
//! Cold start = the worker's init duration (spawn → the runtime's first
//! `/next`), from the attempt rows; every call is cold (idle TTL 50 ms).

use std::time::{Duration, Instant};

use stoke_tests::measure::percentile;
use stoke_tests::{Nats, Platform, PlatformOptions, built_binary, hello_with, workspace_root};

const COLD: usize = 40;
const WARM: usize = 300;
const WARM_SANDBOXES: usize = 40;

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:7.2} ms  p99 {:7.2} ms  (n={})",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.len()
    )
}

/// hello-rust packaged as a deployable directory.
fn hello_rust() -> tempfile::TempDir {
    let f = tempfile::tempdir().unwrap();
    std::fs::copy(built_binary("hello-rust"), f.path().join("bootstrap")).unwrap();
    std::fs::copy(
        workspace_root().join("examples/hello-rust/dist/stoke.toml"),
        f.path().join("stoke.toml"),
    )
    .unwrap();
    f
}

async fn platform(nats: &Nats, sandbox: &str, idle_ttl: f64) -> Platform {
    let p = Platform::start_with(
        nats,
        PlatformOptions {
            idle_ttl_secs: Some(idle_ttl),
            env: vec![("STOKE_WORKER__SANDBOX".into(), sandbox.into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));
    p.deploy(hello_rust().path());
    p
}

/// Init durations (ms) of `COLD` cold starts of `function`.
async fn cold_starts(p: &Platform, function: &str) -> Vec<f64> {
    for _ in 0..COLD + 2 {
        let r = p.post(function, "{}").await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let db = p.db().await;
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT init_duration_us FROM attempts WHERE function = ? AND cold ORDER BY id")
            .bind(function)
            .fetch_all(&db)
            .await
            .unwrap();
    // The first two include the package fetch and the page cache warming.
    rows.into_iter().skip(2).map(|us| us as f64 / 1000.0).collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap()
}

#[tokio::main]
async fn main() {
    let nats = Nats::start().await.unwrap();
    println!("cold start (spawn → first /next), {COLD} each, idle TTL 50 ms:");
    let mut medians = Vec::new();
    for sandbox in ["none", "strict"] {
        let p = platform(&nats, sandbox, 0.05).await;
        for function in ["hello", "hello-rust"] {
            let ms = cold_starts(&p, function).await;
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            medians.push(((sandbox, function), percentile(&sorted, 0.5)));
            println!("  {sandbox:6} {function:10} {}", summary(ms));
        }
    }
    for function in ["hello", "hello-rust"] {
        let m = |s: &str| medians.iter().find(|((b, f), _)| *b == s && *f == function).unwrap().1;
        println!(
            "  {function:10} sandboxed ÷ bare (p50): {:.2}×",
            m("strict") / m("none")
        );
    }

    println!("warm round trip (HTTP → JetStream → dispatcher → worker → function → back), {WARM} sequential:");
    for sandbox in ["none", "strict"] {
        let p = platform(&nats, sandbox, 300.0).await;
        for function in ["hello", "hello-rust"] {
            p.post(function, "{}").await;
            let mut ms = Vec::with_capacity(WARM);
            for _ in 0..WARM {
                let t = Instant::now();
                let r = p.post(function, "{}").await;
                assert_eq!(r.status, 200);
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            println!("  {sandbox:6} {function:10} {}", summary(ms));
        }
    }
    let p = platform(&nats, "strict", 300.0).await;

    // Worker memory per idle warm sandbox: make WARM_SANDBOXES of hello
    // at once (each call sleeps, so none can be reused), then let them idle.
    p.deploy(hello_with(&format!("concurrency = {WARM_SANDBOXES}")).path());
    p.post("hello", "{}").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(p.pid());
    p.post_at_once("hello", r#"{"sleep":1}"#, WARM_SANDBOXES).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(p.pid());
    println!(
        "worker memory per idle warm sandbox (platform side): {:.0} KiB ({} → {} KiB RSS for {} more sandboxes)",
        (after.saturating_sub(before)) as f64 / (WARM_SANDBOXES - 1) as f64,
        before,
        after,
        WARM_SANDBOXES - 1
    );
}
