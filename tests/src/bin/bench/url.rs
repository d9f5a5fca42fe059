//! P7, function URLs.
//! - P7.event: what Lambda's function URL event costs: P2's no-op
//!   (hello-rust) POSTed through its URL once with the body as its event
//!   (P2's path) and once as the 2.0 event (`event = "url"`: made by the
//!   Invoker, carried, parsed by the function). Goal: at most 0.1 ms of p50
//!   over the body path.
//! - P7.url: the same against an axum app behind `lambda_http` (the event
//!   parsed, routed, a proxy response mapped back), which adds the
//!   framework's own cost to the event's. Same goal, as the issue states it.
//!   All three in alternating open-loop rounds at P2's rate, one platform.
//! - P7.ttfb: a streamed answer's time to first byte (from sending the
//!   request to the first body byte), hello-axum in stream mode sending
//!   1 MiB against 1 KiB, alternating, one request at a time. Goal: within
//!   1 ms (nothing is buffered before it goes out).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, bail};
use stoke_tests::built_binary;
use stoke_tests::measure::percentile;

use crate::latency::{Samples, open_loop};
use crate::report::{Figure, Scenario};
use crate::{Scale, native_function, start_platform};

/// hello-axum deployable as `name` with `extra` manifest lines (its http
/// trigger's, when they come last).
fn axum_function(name: &str, env: &str, trigger: &str) -> anyhow::Result<tempfile::TempDir> {
    let f = tempfile::tempdir()?;
    std::fs::copy(built_binary("hello-axum"), f.path().join("bootstrap")).context("copy hello-axum")?;
    let manifest = format!(
        "name = \"{name}\"\ncommand = [\"./bootstrap\"]\nmemory = 128\ntimeout = 10\n{env}\n[[triggers]]\nhttp = true\n{trigger}\n"
    );
    std::fs::write(f.path().join("stoke.toml"), manifest)?;
    Ok(f)
}

/// One GET whose answer must be a success; drained.
async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let r = http.get(url).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// Time to the first body byte of a GET, ms; the rest is read and must
/// be `len` bytes.
async fn ttfb(http: &reqwest::Client, url: &str, len: usize) -> anyhow::Result<f64> {
    let sent = Instant::now();
    let mut r = http.get(url).send().await?;
    if !r.status().is_success() {
        bail!("{}", r.status());
    }
    let first = r.chunk().await?.context("an empty answer")?;
    let took = sent.elapsed().as_secs_f64() * 1000.0;
    let mut got = first.len();
    while let Some(c) = r.chunk().await? {
        got += c.len();
    }
    if got != len {
        bail!("{got} bytes, not {len}");
    }
    Ok(took)
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let (_nats, p) = start_platform(3600.0, &[]).await?;
    let (rate, n, warm) = (scale.p2_rate, scale.p2_requests, scale.p2_warm);
    let sandboxes = format!("concurrency = {warm}\nmin_warm = {warm}");
    let noop = native_function(
        "noop",
        &format!("{sandboxes}\n[[triggers]]\nhttp = true\nevent = \"body\""),
    )?;
    p.deploy(noop.path());
    let noop_event = native_function("noop-event", &format!("{sandboxes}\n[[triggers]]\nhttp = true"))?;
    p.deploy(noop_event.path());
    p.deploy(axum_function("url", &sandboxes, "")?.path());
    p.deploy(
        axum_function(
            "streamer",
            &format!("{sandboxes}\n[env]\nSTREAM = \"1\""),
            "response = \"stream\"",
        )?
        .path(),
    );
    let http = reqwest::Client::new();
    let payload = bytes::Bytes::from(scale.payload());
    let noop_url = p.url("/fn/noop");
    let event_url = p.url("/fn/noop-event");
    let url_url = p.url("/fn/url/");
    let post = |url: &String| {
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
    let noop_call = || post(&noop_url);
    let event_call = || post(&event_url);
    let url_call = || {
        let (http, url) = (http.clone(), url_url.clone());
        async move { get(&http, &url).await }
    };
    let warmup = (warm * 25).min(n.max(1));
    for (what, s) in [
        ("noop", open_loop(rate, warmup, noop_call).await?),
        ("noop-event", open_loop(rate, warmup, event_call).await?),
        ("url", open_loop(rate, warmup, url_call).await?),
    ] {
        if s.errors > 0 {
            bail!("warm-up of {what}: {} of {warmup} failed:\n{}", s.errors, p.log());
        }
    }
    let empty = || Samples { ms: vec![], errors: 0 };
    let (mut noop, mut event, mut url) = (empty(), empty(), empty());
    for round in 0..scale.rounds {
        let s = open_loop(rate, n, noop_call).await?;
        eprintln!("  round {round}: P2 no-op p50 {:.3} ms", percentile(&s.ms, 0.5));
        noop.ms.extend(s.ms);
        noop.errors += s.errors;
        let s = open_loop(rate, n, event_call).await?;
        eprintln!(
            "  round {round}: no-op with the 2.0 event p50 {:.3} ms",
            percentile(&s.ms, 0.5)
        );
        event.ms.extend(s.ms);
        event.errors += s.errors;
        let s = open_loop(rate, n, url_call).await?;
        eprintln!("  round {round}: function URL p50 {:.3} ms", percentile(&s.ms, 0.5));
        url.ms.extend(s.ms);
        url.errors += s.errors;
    }
    noop.ms.sort_by(f64::total_cmp);
    event.ms.sort_by(f64::total_cmp);
    url.ms.sort_by(f64::total_cmp);
    if noop.ms.is_empty() || url.ms.is_empty() || event.ms.is_empty() {
        bail!(
            "no call succeeded (no-op {} errors, function URL {})",
            noop.errors,
            url.errors
        );
    }

    // Time to first byte, 1 KiB against 1 MiB, alternating.
    let (small, big) = (1usize << 10, 1usize << 20);
    let url_of = |len: usize| p.url(&format!("/fn/streamer/bytes?n={len}"));
    let count = (n / 10).clamp(20, 300);
    for _ in 0..5 {
        ttfb(&http, &url_of(big), big).await?;
    }
    let (mut ttfb_small, mut ttfb_big) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        ttfb_small.push(ttfb(&http, &url_of(small), small).await?);
        ttfb_big.push(ttfb(&http, &url_of(big), big).await?);
    }
    ttfb_small.sort_by(f64::total_cmp);
    ttfb_big.sort_by(f64::total_cmp);

    let (noop_p50, url_p50) = (percentile(&noop.ms, 0.5), percentile(&url.ms, 0.5));
    let event_p50 = percentile(&event.ms, 0.5);
    let (small_p50, big_p50) = (percentile(&ttfb_small, 0.5), percentile(&ttfb_big, 0.5));
    eprintln!(
        "  function URL p50 {url_p50:.3} ms vs no-op {noop_p50:.3} ms; TTFB 1 MiB {big_p50:.3} ms vs 1 KiB {small_p50:.3} ms"
    );
    let metrics = BTreeMap::from([
        ("P2 no-op p50 (ms)".into(), noop_p50),
        ("no-op with the 2.0 event p50 (ms)".into(), event_p50),
        ("no-op with the 2.0 event errors".into(), event.errors as f64),
        ("function URL p50 (ms)".into(), url_p50),
        ("function URL p99 (ms)".into(), percentile(&url.ms, 0.99)),
        ("P2 no-op p99 (ms)".into(), percentile(&noop.ms, 0.99)),
        ("function URL errors".into(), url.errors as f64),
        ("TTFB 1 KiB p50 (ms)".into(), small_p50),
        ("TTFB 1 MiB p50 (ms)".into(), big_p50),
        ("TTFB 1 MiB p90 (ms)".into(), percentile(&ttfb_big, 0.9)),
        ("TTFB requests per size".into(), count as f64),
    ]);
    let event_figure = Figure::new(
        "P7.event",
        "the 2.0 event: P2's no-op through its URL, p50",
        "ms",
        event_p50,
        "P2's no-op, body as the event, same run",
        noop_p50,
    )
    .over_peer_at_most(0.1)
    .require("no errors", event.errors == 0 && noop.errors == 0);
    let url_figure = Figure::new(
        "P7.url",
        "function URL (axum + lambda_http) p50",
        "ms",
        url_p50,
        "P2's no-op, same run",
        noop_p50,
    )
    .over_peer_at_most(0.1)
    .require("no errors", url.errors == 0);
    let first_byte = Figure::new(
        "P7.ttfb",
        "streamed 1 MiB's time to first byte p50",
        "ms",
        big_p50,
        "1 KiB streamed, same run",
        small_p50,
    )
    .over_peer_at_most(1.0);
    Ok(Scenario {
        id: "P7".into(),
        name: "function URLs: the 2.0 event's cost, streamed time to first byte".into(),
        setup: format!(
            "One platform. {n} POSTs per round of P2's {}-byte body to /fn/noop (hello-rust, event = \"body\") \
             and to /fn/noop-event (the same, with the 2.0 event), and {n} GETs of /fn/url/ (hello-axum: axum \
             behind lambda_http, the event routed to a handler answering a proxy response), {warm} provisioned \
             sandboxes each, {rate} req/s open loop, \
             {} alternating round(s). Then {count} GETs each, alternating, of 1 KiB and 1 MiB streamed \
             (hello-axum with run_with_streaming_response, response = \"stream\", 64 KiB pieces), one at a \
             time; time to first byte from the send.",
            payload.len(),
            scale.rounds
        ),
        figures: vec![event_figure, url_figure, first_byte],
        metrics,
        plots: vec![],
    })
}
