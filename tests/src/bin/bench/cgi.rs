//! P4, sync warm throughput: HTTP POSTs to the Python example (hello) in
//! provisioned sandboxes, closed loop (each client sends its next request
//! when its last one is answered), ÷ the same requests to lighttpd running
//! the same handler module through mod_cgi (a Python process per request),
//! with the same clients and payload. Rounds alternate peer and stoke; the
//! medians count. CPU per request is summed over each side's processes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use stoke_tests::measure::{cpu_secs, cpu_secs_of, cpu_secs_with_children, median};
use stoke_tests::{hello_with, processes_running};

use crate::lighttpd::Lighttpd;
use crate::report::{Figure, Scenario};
use crate::{Scale, start_platform, wait_sandboxes};

const FUNCTION: &str = "hello";
/// In the command line of the function's processes.
const RUNTIME: &str = "stoke_runtime.py";

/// Make `n` calls from `clients` concurrent loops; calls per second over
/// the whole run, and how many failed.
async fn closed_loop<F, Fut>(clients: usize, n: usize, call: F) -> anyhow::Result<(f64, usize)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let (mut errors, mut first) = (0, None);
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    if let Err(e) = call().await {
                        errors += 1;
                        first.get_or_insert(e);
                    }
                }
                (errors, first)
            })
        })
        .collect();
    let (mut errors, mut first_error) = (0, None);
    for l in loops {
        let (e, first) = l.await?;
        errors += e;
        first_error = first_error.or(first);
    }
    if let Some(e) = first_error {
        eprintln!("  {errors} of {n} calls failed; the first: {e:#}");
    }
    Ok((n as f64 / t0.elapsed().as_secs_f64(), errors))
}

/// A call POSTing `body` to `url` that must answer 200 with the greeting.
fn poster(http: &reqwest::Client, url: String, body: Bytes) -> impl Fn() -> PostCall + Clone + Send + 'static {
    let http = http.clone();
    move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let r = http.post(url).body(body).send().await?;
            let status = r.status();
            let text = r.text().await?;
            if status != 200 || !text.contains("Hello, bench!") {
                bail!("{status}: {text}");
            }
            Ok(())
        })
    }
}

type PostCall = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let (clients, n) = (scale.p4_clients, scale.p4_requests);
    let (nats, p) = start_platform(3600.0, &[]).await?;
    let function = hello_with(&format!("concurrency = {clients}\nmin_warm = {clients}"));
    p.deploy(function.path());
    wait_sandboxes(&p, RUNTIME, "provisioning", |k| k >= clients).await?;
    let peer = Lighttpd::start().await?;

    let http = reqwest::Client::new();
    let body = Bytes::from(scale.payload());
    let stoke_call = poster(&http, p.url(&format!("/fn/{FUNCTION}")), body.clone());
    let peer_call = poster(&http, peer.url(), body.clone());
    // Warm-up: connections, the page cache, lighttpd's bytecode cache.
    let (_, errors) = closed_loop(clients, clients * 5, stoke_call.clone()).await?;
    if errors > 0 {
        bail!("warm-up: {errors} stoke calls failed:\n{}", p.log());
    }
    let (_, errors) = closed_loop(clients, clients * 2, peer_call.clone()).await?;
    if errors > 0 {
        bail!("warm-up: {errors} lighttpd calls failed:\n{}", peer.log());
    }

    let functions = processes_running(p.pid(), RUNTIME);
    let (mut stoke_rates, mut peer_rates) = (Vec::new(), Vec::new());
    let (mut stoke_cpu, mut peer_cpu) = ([0.0; 3], 0.0);
    let (mut stoke_errors, mut peer_errors) = (0, 0);
    let stoke_cpu_now = || [cpu_secs(p.pid()), cpu_secs_of(&functions), cpu_secs(nats.pid())];
    for round in 0..scale.rounds {
        let before = cpu_secs_with_children(peer.pid());
        let (rate, errors) = closed_loop(clients, n, peer_call.clone()).await?;
        peer_cpu += cpu_secs_with_children(peer.pid()) - before;
        peer_rates.push(rate);
        peer_errors += errors;
        let before = stoke_cpu_now();
        let (rate, errors) = closed_loop(clients, n, stoke_call.clone()).await?;
        let after = stoke_cpu_now();
        (0..3).for_each(|i| stoke_cpu[i] += after[i] - before[i]);
        stoke_rates.push(rate);
        stoke_errors += errors;
        eprintln!(
            "  round {round}: lighttpd {:.0}/s, stoke {rate:.0}/s",
            peer_rates[round]
        );
    }

    let total = (n * scale.rounds) as f64;
    let per = |secs: f64| secs * 1e6 / total;
    let metrics = BTreeMap::from([
        ("clients".into(), clients as f64),
        ("requests per round and side".into(), n as f64),
        ("stoke errors".into(), stoke_errors as f64),
        ("lighttpd errors".into(), peer_errors as f64),
        ("stoke CPU-µs per request (stoke up)".into(), per(stoke_cpu[0])),
        (
            "function CPU-µs per request (the sandboxed runtimes)".into(),
            per(stoke_cpu[1]),
        ),
        ("nats-server CPU-µs per request".into(), per(stoke_cpu[2])),
        (
            "platform CPU-µs per request (stoke up + functions + nats-server)".into(),
            per(stoke_cpu.iter().sum()),
        ),
        (
            "lighttpd CPU-µs per request (server + its CGI processes)".into(),
            per(peer_cpu),
        ),
    ]);
    let figure = Figure::new(
        "P4",
        "sync warm throughput, Python handler",
        "req/s",
        median(stoke_rates),
        "lighttpd mod_cgi, same handler",
        median(peer_rates),
    )
    .ratio_at_least(20.0)
    .require("no errors", stoke_errors == 0 && peer_errors == 0);
    Ok(Scenario {
        id: "P4".into(),
        name: "sync warm throughput ÷ lighttpd mod_cgi".into(),
        setup: format!(
            "{n} HTTP POSTs per round and side of a {}-byte JSON event from {clients} closed-loop clients \
             (each sends its next request when its last is answered). stoke: `POST /fn/hello`, the Python \
             example in {clients} provisioned sandboxes. Peer: lighttpd {} with mod_cgi on loopback running \
             the same handler module through a CGI wrapper (a Python process per request, the body as the \
             event). Medians of {} alternating round(s).",
            body.len(),
            Lighttpd::version(),
            scale.rounds
        ),
        figures: vec![figure],
        metrics,
        plots: Vec::new(),
    })
}
