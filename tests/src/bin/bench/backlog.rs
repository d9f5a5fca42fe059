//! P6a, throughput with a deep backlog: events wait on a subscribed subject
//! before the function can run, then drain. Each round is a fresh
//! nats-server and stoke's roles as separate processes (`Cluster`) started
//! with no worker: the deploy creates the subscription's durable consumer
//! (a dispatcher with no worker attached does not pull), the backlog is
//! published with JetStream acks, and only then a worker attaches (the
//! function's sandboxes are provisioned as it does). The rate over the same
//! completions (from `skip` in, so cold starts and the first pulls are left
//! out, to `skip` + the window) with a large backlog ÷ with a small one kept
//! topped up to its size as it drains (a 1 k burst drained in a third of a
//! second would compare a sprint with a run: the platform's rate over 20 k
//! completions is not its rate over the first 1 k). Rounds alternate small
//! and large; medians.

use std::collections::BTreeMap;
use std::time::Instant;

use async_nats::jetstream;
use stoke_tests::measure::median;
use stoke_tests::{Cluster, ClusterOptions, Nats, open_db};

use crate::report::{Figure, Scenario};
use crate::throughput::{publish_all, stored, wait_completed};
use crate::{Scale, native_function};

const FUNCTION: &str = "drain";
const SUBJECT: &str = "bench.p6";

/// What one round measured.
struct Drain {
    /// Events/s from completion `skip` to completion `end`.
    rate: f64,
    /// Events/s from completion `skip` to completion `early` (≤ `end`).
    early_rate: f64,
    /// Seconds the backlog took to publish.
    publish_secs: f64,
}

/// How often the small backlog is topped up.
const TOP_UP_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// One round with a `backlog`-event backlog; `kept`: topped up to
/// `backlog` events waiting until `end` events were published.
async fn round(
    scale: &Scale,
    backlog: usize,
    kept: bool,
    skip: usize,
    early: usize,
    end: usize,
) -> anyhow::Result<Drain> {
    let nats = Nats::start().await?;
    let mut c = Cluster::start_with(
        &nats.url,
        ClusterOptions {
            dispatchers: 1,
            workers: 0,
            env: vec![("RUST_LOG".into(), "info".into())],
            ..Default::default()
        },
    )
    .await;
    let warm = scale.p1_warm;
    let extra = format!("concurrency = {warm}\nmin_warm = {warm}\n[[triggers]]\nsubject = \"{SUBJECT}\"");
    let function = native_function(FUNCTION, &extra)?;
    c.deploy(function.path());
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let t = Instant::now();
    publish_all(&js, SUBJECT, &scale.payload(), backlog).await?;
    let publish_secs = t.elapsed().as_secs_f64();
    // Now the function can run.
    c.worker_ids.push(String::new());
    let worker = c.spawn_worker(0);
    c.workers.push(Some(worker));
    let db = open_db(&c.db_path()).await;
    let top_up = kept.then(|| {
        let (js, db, payload) = (js.clone(), db.clone(), scale.payload());
        tokio::spawn(async move {
            let mut published = backlog;
            while published < end {
                let waiting = published.saturating_sub(stored(&db).await?);
                let more = backlog.saturating_sub(waiting).min(end - published);
                if more > 0 {
                    publish_all(&js, SUBJECT, &payload, more).await?;
                    published += more;
                }
                tokio::time::sleep(TOP_UP_EVERY).await;
            }
            anyhow::Ok(())
        })
    });
    let from = wait_completed(&db, FUNCTION, skip).await?;
    let early_at = wait_completed(&db, FUNCTION, early).await?;
    let to = wait_completed(&db, FUNCTION, end).await?;
    if let Some(t) = top_up {
        t.await??;
    }
    Ok(Drain {
        rate: (end - skip) as f64 / (to - from).as_secs_f64(),
        early_rate: (early - skip) as f64 / (early_at - from).as_secs_f64(),
        publish_secs,
    })
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let (large, small) = (scale.p6_backlog, scale.p6_small_backlog);
    let skip = small / 10;
    let large_end = (skip + scale.p6_window).min(large);
    let (mut large_rates, mut small_rates, mut early_rates, mut publish) = (vec![], vec![], vec![], vec![]);
    for r in 0..scale.rounds {
        let s = round(scale, small, true, skip, small.min(large_end), large_end).await?;
        small_rates.push(s.rate);
        let l = round(scale, large, false, skip, small.min(large_end), large_end).await?;
        large_rates.push(l.rate);
        early_rates.push(l.early_rate);
        publish.push(l.publish_secs);
        eprintln!(
            "  round {r}: {small} backlog kept {:.0}/s, {large} backlog {:.0}/s ({:.0}/s over its first {small}; \
             published in {:.1} s)",
            s.rate, l.rate, l.early_rate, l.publish_secs
        );
    }
    let publish = median(publish);
    let metrics = BTreeMap::from([
        ("large backlog (events)".into(), large as f64),
        ("small backlog (events)".into(), small as f64),
        ("completions skipped before timing".into(), skip as f64),
        ("completions timed, large backlog".into(), (large_end - skip) as f64),
        (
            "completions timed, small backlog (kept topped up)".into(),
            (large_end - skip) as f64,
        ),
        ("warm sandboxes".into(), scale.p1_warm as f64),
        ("large backlog publish time (s)".into(), publish),
        ("large backlog publish rate (per s)".into(), large as f64 / publish),
        (
            format!("large backlog drain rate over completions {skip} → {small}, as the small one's (per s)"),
            median(early_rates),
        ),
    ]);
    let figure = Figure::new(
        "P6a",
        &format!("drain throughput with a {large}-event backlog"),
        "ev/s",
        median(large_rates),
        &format!("same with a {small}-event backlog kept topped up"),
        median(small_rates),
    )
    .ratio_at_least(0.9);
    Ok(Scenario {
        id: "P6a".into(),
        name: "throughput with a deep backlog".into(),
        setup: format!(
            "A no-op native function (hello-rust, {} provisioned sandboxes) subscribed to a subject. Each \
             round: a fresh nats-server, dispatcher and broker with no worker; the deploy creates the \
             subscription's consumer; the backlog ({}-byte events) is published with JetStream acks; then a \
             worker attaches. Rate from completion {skip} to completion {large_end} with a {large}-event \
             backlog ÷ the same completions with a {small}-event backlog topped up every {} ms as it drains. \
             Medians of {} alternating round(s).",
            scale.p1_warm,
            scale.payload_bytes,
            TOP_UP_EVERY.as_millis(),
            scale.rounds
        ),
        figures: vec![figure],
        metrics,
        plots: Vec::new(),
    })
}
