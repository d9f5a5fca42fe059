//! P2, sync warm HTTP invoke latency: POST /fn/<name> to a warm no-op
//! native function (hello-rust) at a fixed rate, open loop: a ticker thread
//! fires each request at its scheduled time whatever the earlier ones are
//! doing, and latency runs from the scheduled time (no coordinated
//! omission). Peer: NATS request/reply round trips to a responder that
//! answers at once, on the same nats-server at the same rate. Rounds
//! alternate peer and stoke; the samples are pooled.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use plotters::prelude::*;
use stoke_tests::measure::{cpu_secs_of, percentile};

use crate::report::{Figure, Scenario};
use crate::{Scale, native_function, start_platform};

const FUNCTION: &str = "hello-rust";
const PEER_SUBJECT: &str = "peer.p2";
const PLOT: &str = "p2-latency-cdf.svg";

/// Latencies (ms, sorted) of the calls that succeeded, and the failures.
pub struct Samples {
    pub ms: Vec<f64>,
    pub errors: usize,
}

/// Fire `n` calls at `rate` per second, each at its scheduled time.
pub async fn open_loop<F, Fut>(rate: f64, n: usize, call: F) -> anyhow::Result<Samples>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(20);
    // A thread, not a tokio timer: tokio's timer wheel has 1 ms ticks,
    // which would show up in every sub-millisecond latency.
    let ticker = std::thread::spawn(move || {
        for i in 0..n {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    let mut calls = Vec::with_capacity(n);
    while let Some(at) = rx.recv().await {
        let call = call();
        calls.push(tokio::spawn(async move {
            let result = call.await;
            (result, at.elapsed())
        }));
    }
    ticker.join().map_err(|_| anyhow::anyhow!("ticker thread panicked"))?;
    let mut samples = Samples {
        ms: Vec::with_capacity(n),
        errors: 0,
    };
    let mut first_error = None;
    for c in calls {
        match c.await? {
            (Ok(()), took) => samples.ms.push(took.as_secs_f64() * 1000.0),
            (Err(e), _) => {
                samples.errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("  {} of {n} calls failed; the first: {e:#}", samples.errors);
    }
    samples.ms.sort_by(f64::total_cmp);
    Ok(samples)
}

/// A CDF of each series' latencies (log x axis) as an SVG.
fn plot_cdf(path: &Path, series: &[(&str, &[f64], RGBColor)]) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|(_, ms, _)| ms.iter().copied());
    let lo = all().fold(f64::INFINITY, f64::min).max(1e-3) * 0.9;
    let hi = all().fold(0.0, f64::max).max(lo * 10.0) * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "P2: warm invoke latency from the scheduled send time (CDF)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of requests")
        .draw()?;
    for (name, ms, color) in series {
        let n = ms.len() as f64;
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                ms.iter().enumerate().map(|(i, v)| (*v, (i + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

pub async fn run(scale: &Scale, out: &Path) -> anyhow::Result<Scenario> {
    let (nats, p) = start_platform(3600.0, &[]).await?;
    let (rate, n, warm) = (scale.p2_rate, scale.p2_requests, scale.p2_warm);
    // The body is the event (the Invoke API's call): P2 measures the event
    // path itself, the function URL event has a figure of its own.
    let function = native_function(
        FUNCTION,
        &format!("concurrency = {warm}\nmin_warm = {warm}\n[[triggers]]\nhttp = true\nevent = \"body\""),
    )?;
    p.deploy(function.path());
    let payload = bytes::Bytes::from(scale.payload());

    // The responder: its own connection, answering each request at once.
    let responder = async_nats::connect(&nats.url).await?;
    let mut requests = responder.subscribe(PEER_SUBJECT).await?;
    responder.flush().await?;
    let answer = bytes::Bytes::from_static(br#"{"message":"Hello, bench!"}"#);
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, answer.clone()).await;
            }
        }
    });
    let requester = async_nats::connect(&nats.url).await?;
    let http = reqwest::Client::new();
    let url = p.url(&format!("/fn/{FUNCTION}"));
    let stoke_call = || {
        let (http, url, body) = (http.clone(), url.clone(), payload.clone());
        async move {
            let r = http.post(url).body(body).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            if !status.is_success() {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    };
    let peer_call = || {
        let (nc, body) = (requester.clone(), payload.clone());
        async move {
            nc.request(PEER_SUBJECT, body).await.context("request")?;
            Ok(())
        }
    };
    // Warm-up: sandboxes, connections and the page cache.
    let warmup = (warm * 25).min(n.max(1));
    let w = open_loop(rate, warmup, stoke_call).await?;
    if w.errors > 0 {
        bail!("warm-up: {} of {warmup} invocations failed:\n{}", w.errors, p.log());
    }
    open_loop(rate, warmup, peer_call).await?;

    let (mut stoke, mut peer) = (Samples { ms: vec![], errors: 0 }, Samples { ms: vec![], errors: 0 });
    let (mut stoke_cpu, mut peer_cpu) = ([0.0; 2], 0.0);
    for round in 0..scale.rounds {
        let before = cpu_secs_of(&[nats.pid()]);
        let s = open_loop(rate, n, peer_call).await?;
        peer_cpu += cpu_secs_of(&[nats.pid()]) - before;
        eprintln!("  round {round}: peer p50 {:.3} ms", percentile(&s.ms, 0.5));
        peer.ms.extend(s.ms);
        peer.errors += s.errors;
        let before = [cpu_secs_of(&[p.pid()]), cpu_secs_of(&[nats.pid()])];
        let s = open_loop(rate, n, stoke_call).await?;
        stoke_cpu[0] += cpu_secs_of(&[p.pid()]) - before[0];
        stoke_cpu[1] += cpu_secs_of(&[nats.pid()]) - before[1];
        eprintln!("  round {round}: stoke p50 {:.3} ms", percentile(&s.ms, 0.5));
        stoke.ms.extend(s.ms);
        stoke.errors += s.errors;
    }
    stoke.ms.sort_by(f64::total_cmp);
    peer.ms.sort_by(f64::total_cmp);
    if stoke.ms.is_empty() || peer.ms.is_empty() {
        bail!(
            "no call succeeded (stoke {} errors, peer {})",
            stoke.errors,
            peer.errors
        );
    }
    plot_cdf(
        &out.join(PLOT),
        &[
            ("stoke: HTTP POST /fn/hello-rust", &stoke.ms, RED),
            ("peer: NATS request/reply", &peer.ms, BLUE),
        ],
    )
    .context("plot")?;

    let total = (n * scale.rounds) as f64;
    let per = |secs: f64| secs * 1e6 / total;
    let metrics = BTreeMap::from([
        ("request rate (per s)".into(), rate),
        ("requests per round".into(), n as f64),
        ("warm sandboxes".into(), warm as f64),
        ("stoke errors".into(), stoke.errors as f64),
        ("peer errors".into(), peer.errors as f64),
        ("stoke p90 (ms)".into(), percentile(&stoke.ms, 0.90)),
        ("stoke p99.9 (ms)".into(), percentile(&stoke.ms, 0.999)),
        ("stoke max (ms)".into(), percentile(&stoke.ms, 1.0)),
        ("peer p99.9 (ms)".into(), percentile(&peer.ms, 0.999)),
        (
            "stoke CPU-µs per request (stoke up, incl. the HTTP gateway)".into(),
            per(stoke_cpu[0]),
        ),
        ("nats-server CPU-µs per request (stoke)".into(), per(stoke_cpu[1])),
        ("nats-server CPU-µs per request (peer)".into(), per(peer_cpu)),
    ]);
    let peer_name = "raw NATS request/reply";
    let no_errors = stoke.errors == 0;
    let p50 = Figure::new(
        "P2.p50",
        "sync warm HTTP latency p50",
        "ms",
        percentile(&stoke.ms, 0.5),
        peer_name,
        percentile(&peer.ms, 0.5),
    )
    .at_most(1.0)
    .ratio_at_most(5.0)
    .require("no errors", no_errors);
    let p99 = Figure::new(
        "P2.p99",
        "sync warm HTTP latency p99",
        "ms",
        percentile(&stoke.ms, 0.99),
        peer_name,
        percentile(&peer.ms, 0.99),
    )
    .at_most(3.0)
    .require("no errors", no_errors);
    Ok(Scenario {
        id: "P2".into(),
        name: "sync warm HTTP invoke latency".into(),
        setup: format!(
            "{n} HTTP POSTs per round of a {}-byte body to a warm no-op native function (hello-rust, \
             {warm} provisioned sandboxes) at {rate} req/s, open loop (each request fired at its scheduled \
             time; latency from that time). Peer: NATS request/reply to a responder answering at once, same \
             payload, same rate, same nats-server. {} alternating round(s), samples pooled.",
            payload.len(),
            scale.rounds
        ),
        figures: vec![p50, p99],
        metrics,
        plots: vec![PLOT.into()],
    })
}
