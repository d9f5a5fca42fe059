//! P3, cold start: the time from sending `POST /fn/<name>` while no sandbox
//! of the function is alive to reading its response (gateway, JetStream,
//! dispatcher, the sandbox's start, the runtime's init, the first event and
//! the way back), sandboxed (`stoke up`, `--sandbox strict`) ÷ the same
//! with `stoke up --sandbox none` (the same binary spawned as a plain child
//! process, speaking the same Runtime API), for the Python example and the
//! Rust `lambda_runtime` one. Both platforms run at once, each on its own
//! nats-server, with a 50 ms idle TTL; rounds alternate between them.
//! Before each cold invoke the harness waits until the function's previous
//! processes are gone; the attempt rows then confirm the invokes were cold
//! and give the worker's init duration (spawn → the runtime's first
//! `/next`). Also the warm sequential round trip in both modes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use stoke_tests::measure::{percentile, sorted};
use stoke_tests::{Nats, Platform, workspace_root};

use crate::report::{Figure, Scenario};
use crate::{Scale, native_function, start_platform, wait_sandboxes};

struct Function {
    name: &'static str,
    /// In figure ids.
    id: &'static str,
    label: &'static str,
    /// In the command line of its processes.
    needle: &'static str,
}

const FUNCTIONS: [Function; 2] = [
    Function {
        name: "hello",
        id: "python",
        label: "Python (examples/hello-python)",
        needle: "stoke_runtime.py",
    },
    Function {
        name: "hello-rust",
        id: "rust",
        label: "Rust lambda_runtime (hello-rust)",
        needle: "bootstrap",
    },
];

/// Unmeasured cold starts per function and mode first (the package fetch,
/// the page cache).
const WARMUP: usize = 2;

/// One platform in one sandbox mode.
struct Side {
    mode: &'static str,
    _nats: Nats,
    p: Platform,
    _rust: tempfile::TempDir,
}

async fn side(mode: &'static str) -> anyhow::Result<Side> {
    let (nats, p) = start_platform(0.05, &["--sandbox", mode]).await?;
    p.deploy(&workspace_root().join("examples/hello-python"));
    let rust = native_function("hello-rust", "")?;
    p.deploy(rust.path());
    Ok(Side {
        mode,
        _nats: nats,
        p,
        _rust: rust,
    })
}

/// One invoke; its request → response time in ms.
async fn invoke(s: &Side, f: &Function, body: &[u8]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = s.p.post(f.name, body.to_vec()).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if r.status != 200 {
        bail!("{} (--sandbox {}): {} {}", f.name, s.mode, r.status, r.text());
    }
    Ok(ms)
}

/// An invoke once the function's previous sandbox is gone.
async fn cold_invoke(s: &Side, f: &Function, body: &[u8]) -> anyhow::Result<f64> {
    wait_sandboxes(&s.p, f.needle, "the previous sandbox to stop", |n| n == 0).await?;
    invoke(s, f, body).await
}

/// The init durations (ms) of `f`'s cold attempts after the first
/// `WARMUP`, once `expected` attempts are stored, and how many of those
/// attempts were not cold.
async fn init_durations(s: &Side, f: &Function, expected: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let db = s.p.db().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<(bool, i64)> =
            sqlx::query_as("SELECT cold, init_duration_us FROM attempts WHERE function = ? ORDER BY id")
                .bind(f.name)
                .fetch_all(&db)
                .await?;
        if rows.len() >= expected {
            let measured = &rows[WARMUP.min(rows.len())..expected];
            let warm = measured.iter().filter(|(cold, _)| !cold).count();
            let ms = measured
                .iter()
                .filter(|(cold, _)| *cold)
                .map(|(_, us)| *us as f64 / 1000.0);
            return Ok((sorted(ms.collect()), warm));
        }
        if Instant::now() > deadline {
            bail!("{expected} attempts of {} not stored in 30 s ({})", f.name, rows.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// p50 and p99 of `ms` as two metrics.
fn spread(metrics: &mut BTreeMap<String, f64>, what: &str, ms: &[f64]) {
    metrics.insert(format!("{what} p50 (ms)"), percentile(ms, 0.5));
    metrics.insert(format!("{what} p99 (ms)"), percentile(ms, 0.99));
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    // Index 0: sandboxed; 1: --sandbox none.
    let sides = [side("strict").await?, side("none").await?];
    let body = scale.payload();
    for s in &sides {
        for f in &FUNCTIONS {
            for _ in 0..WARMUP {
                cold_invoke(s, f, &body).await?;
            }
        }
    }
    // cold[function][side]: request → response, ms.
    let mut cold: [[Vec<f64>; 2]; 2] = Default::default();
    for round in 0..scale.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for si in order {
            for (fi, f) in FUNCTIONS.iter().enumerate() {
                for _ in 0..scale.p3_cold {
                    cold[fi][si].push(cold_invoke(&sides[si], f, &body).await?);
                }
            }
        }
        eprintln!(
            "  round {round}: python {:.1} / {:.1} ms, rust {:.1} / {:.1} ms (sandboxed / none, last)",
            cold[0][0].last().unwrap_or(&f64::NAN),
            cold[0][1].last().unwrap_or(&f64::NAN),
            cold[1][0].last().unwrap_or(&f64::NAN),
            cold[1][1].last().unwrap_or(&f64::NAN),
        );
    }
    let expected = WARMUP + scale.rounds * scale.p3_cold;
    let mut metrics = BTreeMap::new();
    let mut not_cold = 0;
    let mut figures = Vec::new();
    for (fi, f) in FUNCTIONS.iter().enumerate() {
        let mut all_cold = true;
        for s in &sides {
            let (init, warm) = init_durations(s, f, expected).await?;
            not_cold += warm;
            all_cold &= warm == 0;
            spread(
                &mut metrics,
                &format!("{} init, spawn → first /next, {}", f.id, s.mode),
                &init,
            );
            // The warm sequential round trip, for comparison.
            invoke(s, f, &body).await?;
            let mut ms = Vec::with_capacity(scale.p3_warm_calls);
            for _ in 0..scale.p3_warm_calls {
                ms.push(invoke(s, f, &body).await?);
            }
            spread(
                &mut metrics,
                &format!("{} warm round trip, {}", f.id, s.mode),
                &sorted(ms),
            );
        }
        let [jailed, bare] = [sorted(cold[fi][0].clone()), sorted(cold[fi][1].clone())];
        let peer = "same binary, `stoke up --sandbox none`";
        for (q, label, goal) in [(0.5, "p50", 1.5), (0.99, "p99", 3.0)] {
            figures.push(
                Figure::new(
                    &format!("P3.{}.{label}", f.id),
                    &format!("cold start {label}, {}", f.label),
                    "ms",
                    percentile(&jailed, q),
                    peer,
                    percentile(&bare, q),
                )
                .ratio_at_most(goal)
                .require("every measured invoke cold", all_cold),
            );
        }
    }
    metrics.insert("cold invokes per function and mode".into(), cold[0][0].len() as f64);
    metrics.insert("measured invokes that were not cold".into(), not_cold as f64);
    metrics.insert(
        "warm round trips per function and mode".into(),
        scale.p3_warm_calls as f64,
    );
    Ok(Scenario {
        id: "P3".into(),
        name: "cold start, sandboxed ÷ unsandboxed".into(),
        setup: format!(
            "Time from sending `POST /fn/<name>` (a {}-byte body) while no process of the function is \
             alive to reading its 200 response: gateway, JetStream, dispatcher, the sandbox's start, the \
             runtime's init, the first event and the way back. Sandboxed (`stoke up`, `--sandbox strict`) \
             ÷ the same with `stoke up --sandbox none` (the same binary as a plain child process, same \
             Runtime API); both platforms up at once on their own nats-servers, 50 ms idle TTL, {} round(s) \
             alternating between them of {} cold invokes per function, after {WARMUP} unmeasured ones; \
             samples pooled. The attempt rows confirm every measured invoke was cold and give the init \
             duration (spawn → the runtime's first `/next`). Warm: {} sequential invokes of a warm sandbox.",
            body.len(),
            scale.rounds,
            scale.p3_cold,
            scale.p3_warm_calls
        ),
        figures,
        metrics,
        plots: Vec::new(),
    })
}
