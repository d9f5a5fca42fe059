//! The benchmark harness: measures the platform against an independent
//! peer doing the same work on the same nats-server in the same run, and
//! reports ratios (these machines are shared and noisy; absolute times
//! drift, ratios much less). Writes `report.md`, `report.json` and an SVG
//! latency plot to `--out`. Not a timed test: CI runs `--smoke` only, to
//! prove the harness works.
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/bench --out bench-report
//! ```
//!
//! Scenarios: P1 async warm throughput (subject trigger → no-op native
//! function) ÷ a raw JetStream publish → pull → ack loop; P2 sync warm HTTP
//! invoke latency under a fixed request rate (open loop) ÷ a raw NATS
//! request/reply round trip. Knobs (environment, real mode only):
//! BENCH_ROUNDS (3), BENCH_PAYLOAD_BYTES (128), BENCH_P1_EVENTS (5000),
//! BENCH_P1_WARM (8 sandboxes), BENCH_P2_RATE (200 req/s),
//! BENCH_P2_REQUESTS (3000 per round), BENCH_P2_WARM (4 sandboxes).

mod latency;
mod report;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use stoke_tests::measure::knob;
use stoke_tests::{Nats, Platform, PlatformOptions, built_binary};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Measure stoke against raw NATS/JetStream peers; write a report"
)]
struct Args {
    /// Tiny counts, a few seconds: proves the harness works (CI); the
    /// figures mean little.
    #[arg(long)]
    smoke: bool,
    /// Scenarios to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "p1,p2")]
    only: Vec<String>,
    /// Directory for report.md, report.json and the plots (created).
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
}

/// How much work each scenario does.
pub struct Scale {
    pub smoke: bool,
    /// Alternating peer/stoke rounds per scenario (P1 takes the medians,
    /// P2 pools the samples).
    pub rounds: usize,
    pub payload_bytes: usize,
    pub p1_events: usize,
    pub p1_warm: usize,
    pub p2_rate: f64,
    pub p2_requests: usize,
    pub p2_warm: usize,
}

impl Scale {
    fn new(smoke: bool) -> Scale {
        if smoke {
            return Scale {
                smoke,
                rounds: 1,
                payload_bytes: 128,
                p1_events: 300,
                p1_warm: 2,
                p2_rate: 200.0,
                p2_requests: 200,
                p2_warm: 2,
            };
        }
        Scale {
            smoke,
            rounds: knob("BENCH_ROUNDS", 3).max(1),
            payload_bytes: knob("BENCH_PAYLOAD_BYTES", 128),
            p1_events: knob("BENCH_P1_EVENTS", 5000),
            p1_warm: knob("BENCH_P1_WARM", 8).max(1),
            p2_rate: knob("BENCH_P2_RATE", 200).max(1) as f64,
            p2_requests: knob("BENCH_P2_REQUESTS", 3000),
            p2_warm: knob("BENCH_P2_WARM", 4).max(1),
        }
    }

    /// A JSON event of exactly `payload_bytes` (at least its fixed part).
    pub fn payload(&self) -> Vec<u8> {
        let fixed = r#"{"name":"bench","pad":""}"#.len();
        let pad = "x".repeat(self.payload_bytes.saturating_sub(fixed));
        format!(r#"{{"name":"bench","pad":"{pad}"}}"#).into_bytes()
    }
}

/// A fresh nats-server and `stoke up` (info logging, as deployed; warm
/// sandboxes kept for the whole run).
pub async fn start_platform() -> anyhow::Result<(Nats, Platform)> {
    let nats = Nats::start().await?;
    let platform = Platform::start_with(
        &nats,
        PlatformOptions {
            idle_ttl_secs: Some(3600.0),
            env: vec![("RUST_LOG".into(), "info".into())],
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

/// The version line of the nats-server the run used.
fn nats_version() -> String {
    std::process::Command::new(stoke_tests::nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

async fn run(args: &Args, out: &Path) -> anyhow::Result<()> {
    for id in &args.only {
        if !["p1", "p2"].contains(&id.as_str()) {
            bail!("unknown scenario {id:?} in --only (known: p1, p2)");
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let scale = Scale::new(args.smoke);
    let started = Instant::now();
    let mut scenarios = Vec::new();
    if args.only.iter().any(|s| s == "p1") {
        eprintln!("P1: async warm throughput ...");
        scenarios.push(throughput::run(&scale).await.context("P1")?);
    }
    if args.only.iter().any(|s| s == "p2") {
        eprintln!("P2: sync warm HTTP latency ...");
        scenarios.push(latency::run(&scale, out).await.context("P2")?);
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
