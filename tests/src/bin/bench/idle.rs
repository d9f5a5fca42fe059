//! P5, what the platform costs when nothing happens. Idle CPU: `stoke up`
//! (gateway, dispatcher, worker: the platform's one process) with many
//! deployed functions, each with an HTTP and a subject trigger (so a pull
//! consumer each) and `min_warm = 0` (no sandbox), no traffic; its CPU over
//! a window as % of one core, beside nats-server's over the same window
//! (the peer: the broker idling with the same consumers). Memory: the
//! growth of `stoke up`'s RSS from 1 to N idle warm sandboxes of the Python
//! example, per sandbox (the sandboxes' own processes are not in it),
//! beside the RSS of one such function process.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use stoke_tests::measure::{rss_kib, thread_cpu_secs};
use stoke_tests::{Platform, copy_function, hello_with, processes_running, workspace_root};

use crate::report::{Figure, Scenario};
use crate::{Scale, start_platform, wait_sandboxes};

/// The Python example's name, and what its processes' command lines hold.
const MEMORY_FUNCTION: &str = "hello";
const RUNTIME: &str = "stoke_runtime.py";

/// Deploy `n` copies of the Python example named `idle-<i>`, each on HTTP
/// and on the subject `idle.<i>`.
fn deploy_functions(p: &Platform, n: usize) -> anyhow::Result<()> {
    let dir = copy_function(&workspace_root().join("examples/hello-python"));
    for i in 0..n {
        let manifest = format!(
            "name = \"idle-{i}\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\n\
             handler = \"handler.handler\"\nmemory = 128\ntimeout = 10\nmin_warm = 0\n\
             [[triggers]]\nhttp = true\n[[triggers]]\nsubject = \"idle.{i}\"\n"
        );
        std::fs::write(dir.path().join("stoke.toml"), manifest).context("write manifest")?;
        p.deploy(dir.path());
    }
    Ok(())
}

/// CPU % of one core used by `pids` (live threads, ns resolution) over
/// `window`.
async fn cpu_percent(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<f64> = pids.iter().map(|p| thread_cpu_secs(*p)).collect();
    tokio::time::sleep(window).await;
    pids.iter()
        .zip(before)
        .map(|(p, b)| (thread_cpu_secs(*p) - b) / window.as_secs_f64() * 100.0)
        .collect()
}

/// `stoke up`'s RSS growth per idle warm sandbox (KiB) from 1 to `n` of
/// the Python example (a package of a few KiB: a large one leaves freed
/// buffers behind that make RSS shrink later), and the mean RSS of one
/// function process. Each reading after a second of rest.
async fn memory_per_sandbox(p: &Platform, n: usize) -> anyhow::Result<(f64, f64, [u64; 2])> {
    let rest = || tokio::time::sleep(Duration::from_secs(1));
    p.deploy(hello_with(&format!("concurrency = {n}")).path());
    p.post(MEMORY_FUNCTION, "{}").await;
    wait_sandboxes(p, RUNTIME, "one sandbox", |k| k == 1).await?;
    rest().await;
    let before = rss_kib(p.pid()).context("stoke up's RSS")?;
    // Each call sleeps, so none can reuse another's sandbox.
    p.post_at_once(MEMORY_FUNCTION, r#"{"sleep":1}"#, n).await;
    wait_sandboxes(p, RUNTIME, "every sandbox", |k| k == n).await?;
    rest().await;
    let after = rss_kib(p.pid()).context("stoke up's RSS")?;
    let functions = processes_running(p.pid(), RUNTIME);
    let own: u64 = functions.iter().filter_map(|f| rss_kib(*f)).sum();
    let per = (after as f64 - before as f64) / (n - 1) as f64;
    Ok((per, own as f64 / functions.len() as f64, [before, after]))
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let (nats, p) = start_platform(3600.0, &[]).await?;
    let n = scale.p5_functions;
    deploy_functions(&p, n)?;
    // Let the deploys' after-effects (consumers starting to pull) pass.
    let settle = if scale.smoke { 0.5 } else { 2.0 };
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let sandboxes = processes_running(p.pid(), "").len();
    let window = Duration::from_secs_f64(scale.p5_idle_secs);
    let idle = cpu_percent(&[p.pid(), nats.pid()], window).await;
    eprintln!(
        "  idle: stoke up {:.3} %, nats-server {:.3} % of a core",
        idle[0], idle[1]
    );
    let k = scale.p5_sandboxes;
    let (per, own, [before, after]) = memory_per_sandbox(&p, k).await?;
    eprintln!("  memory: {per:.0} KiB per warm sandbox ({before} → {after} KiB for {k})");

    let metrics = BTreeMap::from([
        ("functions deployed".into(), n as f64),
        ("processes below stoke up while idle".into(), sandboxes as f64),
        ("idle window (s)".into(), window.as_secs_f64()),
        ("warm sandboxes (memory)".into(), k as f64),
        ("stoke up RSS with 1 warm sandbox (KiB)".into(), before as f64),
        (format!("stoke up RSS with {k} warm sandboxes (KiB)"), after as f64),
    ]);
    let idle_figure = Figure::new(
        "P5.idle",
        &format!("idle CPU, {n} functions deployed"),
        "% of a core",
        idle[0],
        "nats-server, same window",
        idle[1],
    )
    .at_most(0.5);
    let memory_figure = Figure::new(
        "P5.memory",
        "platform memory per warm sandbox",
        "KiB",
        per,
        "RSS of the function process itself (Python example)",
        own,
    )
    .at_most(1024.0);
    Ok(Scenario {
        id: "P5".into(),
        name: "idle cost".into(),
        setup: format!(
            "Idle CPU: `stoke up` with {n} deployed copies of the Python example, each on HTTP and on its \
             own NATS subject (a pull consumer each), `min_warm = 0` (no sandbox), no traffic; {settle} s \
             after the last deploy, the CPU of the `stoke up` process (gateway, dispatcher, worker: the \
             whole platform) over {} s as % of one core, from its threads' schedstat, beside nats-server's \
             (reported separately as the peer, not counted in the platform's). Memory: `stoke up`'s RSS with \
             1 idle warm sandbox of the Python example and with {k} (calls that sleep 1 s, all at once), each \
             read after 1 s of rest; the growth per added sandbox. The sandboxes' own processes are not in \
             it (their mean RSS is the peer).",
            window.as_secs_f64()
        ),
        figures: vec![idle_figure, memory_figure],
        metrics,
        plots: Vec::new(),
    })
}
