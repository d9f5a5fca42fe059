//! The benchmark harness: measures the platform against an independent
//! peer doing the same work on the same machine in the same run, and
//! reports ratios (these machines are shared and noisy; absolute times
//! drift, ratios much less). Writes `report.md`, `report.json` and an SVG
//! latency plot to `--out`. Not a timed test: CI runs `--smoke` only, to
//! prove the harness works.
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/bench --out bench-report
//! ```
//!
//! Scenarios (`--only`, comma-separated; `p6` is both P6 parts):
//! - p1: the platform's CPU per event (stoke + nats-server, subject trigger
//!   → no-op native function, one event per invocation) ÷ the function's own
//!   CPU per event (its Runtime API round trip); P1.rate: that throughput ÷ a
//!   raw JetStream publish → pull → ack loop; P1.batched: the same with
//!   `batch_size = 100`;
//! - p2: sync warm HTTP invoke latency at a fixed request rate (open loop)
//!   ÷ a raw NATS request/reply round trip;
//! - p3: cold start, HTTP request → response of a cold invoke, sandboxed ÷
//!   `stoke up --sandbox none`, for Python and Rust `lambda_runtime`;
//! - p4: sync warm throughput (closed loop) of the Python example ÷ lighttpd
//!   running the same handler through mod_cgi;
//! - p5: idle CPU of the platform with many deployed functions, and its
//!   memory per warm sandbox;
//! - p6a: drain throughput with a large subject backlog ÷ with a small one;
//! - p6b: the usage query over millions of attempt rows, SQLite and
//!   PostgreSQL, ÷ a bare aggregate over the same rows;
//! - p7: function URLs: P2's no-op given the 2.0 event, and an axum app
//!   behind `lambda_http` through its URL, against P2's no-op (p50 over
//!   it); a streamed 1 MiB answer's time to first byte against 1 KiB's
//!   (P7 uses P2's knobs);
//! - p8: image functions (examples/hello-image): a cold start ÷ the same
//!   code as a package; the first start on a worker new to the image (less
//!   a cold start) ÷ `tar -xzf` of its layers; the worker's disk for ten
//!   functions on one base image ÷ for one (P8 uses P3's knobs).
//!
//! Knobs (environment, real mode only; defaults in brackets):
//! - BENCH_ROUNDS [3], BENCH_PAYLOAD_BYTES [128];
//! - P1: BENCH_P1_EVENTS [5000 per round], BENCH_P1_WARM [8 sandboxes];
//! - P2: BENCH_P2_RATE [200 req/s], BENCH_P2_REQUESTS [3000 per round],
//!   BENCH_P2_WARM [4 sandboxes];
//! - P3: BENCH_P3_COLD [15 cold invokes per function, mode and round],
//!   BENCH_P3_WARM_CALLS [200];
//! - P4: BENCH_P4_CLIENTS [8], BENCH_P4_REQUESTS [1000 per round and side];
//! - P5: BENCH_P5_FUNCTIONS [100], BENCH_P5_IDLE_SECS [60],
//!   BENCH_P5_SANDBOXES [40];
//! - P6: BENCH_P6_BACKLOG [1000000 events], BENCH_P6_SMALL_BACKLOG [1000],
//!   BENCH_P6_WINDOW [20000 completions], BENCH_P6_ROWS [10000000],
//!   BENCH_P6_QUERIES [5 timed runs per query].

mod backlog;
mod cgi;
mod cold;
mod idle;
mod images;
mod latency;
mod lighttpd;
mod report;
mod scale;
mod throughput;
mod url;
mod usage;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use stoke_tests::{Nats, Platform, PlatformOptions, built_binary, processes_running};

pub use scale::Scale;

/// Every scenario `--only` knows, in the order they run.
const SCENARIOS: [&str; 9] = ["p1", "p2", "p3", "p4", "p5", "p6a", "p6b", "p7", "p8"];

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Measure stoke against independent peers on the same machine; write a report"
)]
struct Args {
    /// Tiny counts, a few seconds each: proves the harness works (CI); the
    /// figures mean little.
    #[arg(long)]
    smoke: bool,
    /// Scenarios to run, comma-separated: p1, p2, p3, p4, p5, p6a, p6b, p7, p8 (p6 =
    /// both P6 parts).
    #[arg(long, value_delimiter = ',', default_value = "p1,p2,p3,p4,p5,p6,p7,p8")]
    only: Vec<String>,
    /// Directory for report.md, report.json and the plots (created).
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
}

/// A fresh nats-server and `stoke up` (info logging, as deployed) keeping
/// idle sandboxes `idle_ttl_secs`, with extra `args`.
pub async fn start_platform(idle_ttl_secs: f64, args: &[&str]) -> anyhow::Result<(Nats, Platform)> {
    let nats = Nats::start().await?;
    let platform = Platform::start_with(
        &nats,
        PlatformOptions {
            idle_ttl_secs: Some(idle_ttl_secs),
            env: vec![("RUST_LOG".into(), "info".into())],
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    )
    .await?;
    Ok((nats, platform))
}

/// hello-rust (the `lambda_runtime` example, a native no-op) as a
/// deployable directory named `name`, with `extra` manifest lines.
pub fn native_function(name: &str, extra: &str) -> anyhow::Result<tempfile::TempDir> {
    let f = tempfile::tempdir()?;
    std::fs::copy(built_binary("hello-rust"), f.path().join("bootstrap")).context("copy hello-rust")?;
    let manifest = format!("name = \"{name}\"\ncommand = [\"./bootstrap\"]\nmemory = 128\ntimeout = 10\n{extra}\n");
    std::fs::write(f.path().join("stoke.toml"), manifest)?;
    Ok(f)
}

/// Wait (polling every 5 ms, at most 60 s) until the count of function
/// processes below `p` whose command line contains `needle` satisfies
/// `ok`; that count. `what` names the wait in the error.
pub async fn wait_sandboxes(
    p: &Platform,
    needle: &str,
    what: &str,
    ok: impl Fn(usize) -> bool,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = processes_running(p.pid(), needle).len();
        if ok(n) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("{what}: not in 60 s ({n} {needle} processes):\n{}", p.log());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The version line of the nats-server the run used.
fn nats_version() -> String {
    std::process::Command::new(stoke_tests::nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The scenarios `--only` names, in run order (`p6`: both P6 parts).
fn selected(only: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let named = |s: &str, id: &str| s == id || (id == "p6" && s.starts_with("p6"));
    for id in only {
        if !SCENARIOS.iter().any(|s| named(s, id)) {
            bail!(
                "unknown scenario {id:?} in --only (known: {}, p6)",
                SCENARIOS.join(", ")
            );
        }
    }
    Ok(SCENARIOS
        .into_iter()
        .filter(|s| only.iter().any(|id| named(s, id)))
        .collect())
}

async fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    let ids = selected(&args.only)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let scale = Scale::new(args.smoke);
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for id in ids {
        let t = Instant::now();
        let scenario = match id {
            "p1" => {
                eprintln!("P1: platform CPU per event, async warm throughput ...");
                throughput::run(&scale).await
            }
            "p2" => {
                eprintln!("P2: sync warm HTTP latency ...");
                latency::run(&scale, out).await
            }
            "p3" => {
                eprintln!("P3: cold start, sandboxed vs --sandbox none ...");
                cold::run(&scale).await
            }
            "p4" => {
                eprintln!("P4: sync throughput vs lighttpd mod_cgi ...");
                cgi::run(&scale).await
            }
            "p5" => {
                eprintln!("P5: idle cost and memory per warm sandbox ...");
                idle::run(&scale).await
            }
            "p6a" => {
                eprintln!("P6a: drain throughput with a large backlog ...");
                backlog::run(&scale).await
            }
            "p6b" => {
                eprintln!("P6b: usage queries over many attempt rows ...");
                usage::run(&scale).await
            }
            "p7" => {
                eprintln!("P7: function URL event cost, streamed time to first byte ...");
                url::run(&scale).await
            }
            "p8" => {
                eprintln!("P8: image functions: cold start, first start, disk ...");
                images::run(&scale).await
            }
            other => unreachable!("selected() knows no {other}"),
        };
        scenarios.push(scenario.with_context(|| id.to_uppercase())?);
        eprintln!("  ({:.1} s)", t.elapsed().as_secs_f64());
    }
    let report = report::Report {
        smoke: args.smoke,
        generated_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        duration_secs: started.elapsed().as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        nats_server: nats_version(),
        payload_bytes: scale.payload_bytes,
        rounds: scale.rounds,
        scenarios,
    };
    report.write(out)?;
    print!("{}", report.markdown());
    eprintln!("wrote {}/report.md and report.json", out.display());
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args, &args.out.clone()).await {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}
