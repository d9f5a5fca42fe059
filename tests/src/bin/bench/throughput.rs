//! P1, async warm throughput: events published on a subscribed subject run
//! a no-op native function (hello-rust) in provisioned sandboxes; the rate
//! at which they complete (counted in the store) ÷ the rate of a raw
//! JetStream publish → pull → ack loop with the same payload against the
//! same nats-server. Rounds alternate peer and stoke; the medians count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use stoke_tests::measure::{cpu_secs_of, median};
use stoke_tests::{Platform, processes_running};

use crate::report::{Figure, Scenario};
use crate::{Scale, native_function, start_platform, wait_sandboxes};

const FUNCTION: &str = "noop";
const SUBJECT: &str = "bench.p1";
const PEER_STREAM: &str = "PEER_P1";
const PEER_SUBJECT: &str = "peer.p1";

/// Publish `n` copies of `payload` with JetStream acks, keeping at most
/// 1000 acks in flight (async-nats bounds them).
pub async fn publish_all(
    js: &jetstream::Context,
    subject: &'static str,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<()> {
    let payload = bytes::Bytes::copy_from_slice(payload);
    let mut acks = Vec::with_capacity(1000);
    for _ in 0..n {
        acks.push(js.publish(subject, payload.clone()).await?);
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// Succeeded completions of `function` stored so far.
pub async fn completed(db: &sqlx::SqlitePool, function: &str) -> anyhow::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM completions WHERE function = ? AND status = 'succeeded'")
        .bind(function)
        .fetch_one(db)
        .await?;
    Ok(n as usize)
}

/// Completions of any function stored so far, read in O(log n): a
/// completion row is never deleted, so the highest rowid is their count. (A
/// `count(*)` polled every 5 ms scans more rows as they pile up, and took a
/// growing share of the CPU the platform was being measured on.)
pub async fn stored(db: &sqlx::SqlitePool) -> anyhow::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM completions")
        .fetch_one(db)
        .await?;
    Ok(n as usize)
}

/// Wait until `target` completions (of any function) are stored, polled
/// every 5 ms; when they were seen.
pub async fn wait_stored(db: &sqlx::SqlitePool, target: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if stored(db).await? >= target {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "{target} completions not reached in 600 s ({} so far)",
                stored(db).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until `target` completions are stored (the platform runs only
/// `function`), then check they are all `function`'s and succeeded; when
/// they were seen.
pub async fn wait_completed(db: &sqlx::SqlitePool, function: &str, target: usize) -> anyhow::Result<Instant> {
    let seen = wait_stored(db, target).await?;
    let succeeded = completed(db, function).await?;
    if succeeded < target {
        bail!(
            "{target} completions stored, but only {succeeded} are successes of {function}: \
             the function failed or another one ran"
        );
    }
    Ok(seen)
}

/// One of the two subscribed functions P1 drives.
struct Target {
    function: &'static str,
    subject: &'static str,
}

/// One event per invocation.
const SINGLE: Target = Target {
    function: FUNCTION,
    subject: SUBJECT,
};
/// A `batch_size` subscription: up to that many events per invocation.
const BATCHED: Target = Target {
    function: "noop-batched",
    subject: "bench.p1b",
};
/// How long a batch's first event waits for the rest.
const BATCH_WINDOW_MS: u32 = 5;

/// One stoke round: events/s, and CPU seconds (stoke, functions, nats).
async fn stoke_round(
    p: &Platform,
    nats_pid: u32,
    js: &jetstream::Context,
    db: &sqlx::SqlitePool,
    payload: &[u8],
    n: usize,
    target: &Target,
) -> anyhow::Result<(f64, [f64; 3])> {
    let (base, base_fn) = (stored(db).await?, completed(db, target.function).await?);
    let functions = processes_running(p.pid(), "bootstrap");
    let cpu = || {
        [
            cpu_secs_of(&[p.pid()]),
            cpu_secs_of(&functions),
            cpu_secs_of(&[nats_pid]),
        ]
    };
    let before = cpu();
    let t0 = Instant::now();
    publish_all(js, target.subject, payload, n).await?;
    let done = wait_stored(db, base + n).await?;
    let after = cpu();
    let succeeded = completed(db, target.function).await? - base_fn;
    if succeeded < n {
        bail!(
            "{n} completions stored, but only {succeeded} are successes of {}: the function failed",
            target.function
        );
    }
    let used = [0, 1, 2].map(|i| after[i] - before[i]);
    Ok((n as f64 / (done - t0).as_secs_f64(), used))
}

/// One peer round: publish `n` on one connection while another pulls and
/// acks them; messages/s from the first publish to the last ack, and the
/// nats-server's CPU seconds.
async fn peer_round(url: &str, nats_pid: u32, payload: &[u8], n: usize) -> anyhow::Result<(f64, f64)> {
    let consumer_js = jetstream::new(async_nats::connect(url).await?);
    let stream = consumer_js.get_stream(PEER_STREAM).await?;
    let consumer: consumer::PullConsumer = stream.get_consumer("peer").await.map_err(anyhow::Error::from_boxed)?;
    let mut messages = consumer.messages().await?;
    let puller = tokio::spawn(async move {
        for _ in 0..n {
            let m = messages
                .next()
                .await
                .context("pull stream ended")?
                .map_err(anyhow::Error::msg)?;
            m.ack().await.map_err(anyhow::Error::msg)?;
        }
        anyhow::Ok(Instant::now())
    });
    let js = jetstream::new(async_nats::connect(url).await?);
    let before = cpu_secs_of(&[nats_pid]);
    let t0 = Instant::now();
    publish_all(&js, PEER_SUBJECT, payload, n).await?;
    let done = puller.await??;
    let cpu = cpu_secs_of(&[nats_pid]) - before;
    Ok((n as f64 / (done - t0).as_secs_f64(), cpu))
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let (nats, p) = start_platform(3600.0, &[]).await?;
    let (n, warm, batch) = (scale.p1_events, scale.p1_warm, scale.p1_batch);
    let nb = scale.p1_batched_events;
    let subscribed = |t: &Target, extra: &str| {
        format!(
            "concurrency = {warm}\nmin_warm = {warm}\n[[triggers]]\nsubject = \"{}\"{extra}",
            t.subject
        )
    };
    let single = native_function(SINGLE.function, &subscribed(&SINGLE, ""))?;
    let batched = native_function(
        BATCHED.function,
        &subscribed(
            &BATCHED,
            &format!("\nbatch_size = {batch}\nbatch_window_ms = {BATCH_WINDOW_MS}"),
        ),
    )?;
    p.deploy(single.path());
    p.deploy(batched.path());
    wait_sandboxes(&p, "bootstrap", "provisioning", |n| n >= 2 * warm).await?;

    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    js.create_stream(stream::Config {
        name: PEER_STREAM.into(),
        subjects: vec![PEER_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?
    .create_consumer(consumer::pull::Config {
        durable_name: Some("peer".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await?;
    let db = p.db().await;
    let payload = scale.payload();
    // Warm-up: every sandbox has answered, the pull consumers have pulled.
    let warmup = (warm * 10).min(n.max(1));
    stoke_round(&p, nats.pid(), &js, &db, &payload, warmup, &SINGLE).await?;
    stoke_round(&p, nats.pid(), &js, &db, &payload, warm * batch, &BATCHED).await?;
    peer_round(&nats.url, nats.pid(), &payload, warmup).await?;

    // Per side: rates, and CPU seconds (stoke, functions, nats-server).
    let (mut single_runs, mut batched_runs) = (Runs::default(), Runs::default());
    for round in 0..scale.rounds {
        for (runs, target, events) in [(&mut single_runs, &SINGLE, n), (&mut batched_runs, &BATCHED, nb)] {
            let (rate, cpu) = peer_round(&nats.url, nats.pid(), &payload, events).await?;
            runs.peer.push(rate);
            runs.peer_cpu += cpu;
            let (rate, cpu) = stoke_round(&p, nats.pid(), &js, &db, &payload, events, target).await?;
            runs.stoke.push(rate);
            (0..3).for_each(|i| runs.stoke_cpu[i] += cpu[i]);
            eprintln!(
                "  round {round}, {}: peer {:.0}/s, stoke {rate:.0}/s",
                target.function, runs.peer[round]
            );
        }
    }
    let cold: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE cold")
        .fetch_one(&db)
        .await?;
    let mut metrics = BTreeMap::from([
        ("events per round".into(), n as f64),
        ("events per round, batched".into(), nb as f64),
        ("batch_size".into(), batch as f64),
        ("warm sandboxes per function".into(), warm as f64),
        ("cold starts (all rounds)".into(), cold as f64),
    ]);
    single_runs.cpu_metrics(&mut metrics, "", (n * scale.rounds) as f64);
    batched_runs.cpu_metrics(&mut metrics, ", batched", (nb * scale.rounds) as f64);
    // P1 proper: what the platform spends on an event it controls (stoke's
    // processes and nats-server), against what the function itself spends
    // on its Runtime API round trip for the same event; the goal is to
    // spend no more than the function does.
    let single_events = (n * scale.rounds) as f64;
    let per_event = |secs: f64| secs * 1e6 / single_events;
    let platform = per_event(single_runs.stoke_cpu[0] + single_runs.stoke_cpu[2]);
    let function = per_event(single_runs.stoke_cpu[1]);
    let figures = vec![
        Figure::new(
            "P1",
            "platform CPU per event, one event per invocation (stoke + nats-server)",
            "CPU-µs",
            platform,
            "the function's own CPU per event (its Runtime API round trip)",
            function,
        )
        .ratio_at_most(1.0),
        Figure::new(
            "P1.rate",
            "async warm throughput, one event per invocation",
            "ev/s",
            median(single_runs.stoke),
            "raw JetStream publish → pull → ack",
            median(single_runs.peer),
        )
        .ratio_at_least(0.30),
        Figure::new(
            "P1.batched",
            &format!("async warm throughput, `batch_size = {batch}` (up to {batch} events per invocation)"),
            "ev/s",
            median(batched_runs.stoke),
            "raw JetStream publish → pull → ack",
            median(batched_runs.peer),
        )
        .ratio_at_least(0.30),
    ];
    Ok(Scenario {
        id: "P1".into(),
        name: "async warm throughput".into(),
        setup: format!(
            "Events published with JetStream acks on a subject a no-op native function (hello-rust, \
             `lambda_runtime`) subscribes to, {warm} provisioned sandboxes; the rate from the first \
             publish to the last completion stored. P1: {n} events per round, one per invocation; \
             the figure is the CPU stoke's processes and nats-server spend per event, against the \
             CPU the function's processes spend on the same event (its Runtime API round trip). \
             P1.rate: those events' rate against the raw JetStream loop below. \
             P1.batched: {nb} events per round to a second function whose subscription has \
             `batch_size = {batch}`, `batch_window_ms = {BATCH_WINDOW_MS}` (Lambda's SQS-style batches: \
             each event still gets its own completion row, idempotency key and ack). Peer: a work-queue \
             file stream and a durable pull consumer on the same nats-server, the same number of \
             messages of the same payload published while another connection pulls and acks them. \
             Medians of {} alternating round(s).",
            scale.rounds
        ),
        figures,
        metrics,
        plots: Vec::new(),
    })
}

/// One side's rounds.
#[derive(Default)]
struct Runs {
    stoke: Vec<f64>,
    peer: Vec<f64>,
    stoke_cpu: [f64; 3],
    peer_cpu: f64,
}

impl Runs {
    /// CPU-µs per event of each part, over `events` in all.
    fn cpu_metrics(&self, metrics: &mut BTreeMap<String, f64>, which: &str, events: f64) {
        let per = |secs: f64| secs * 1e6 / events;
        metrics.extend([
            (
                format!("stoke CPU-µs per event{which} (stoke up: gateway, dispatcher, worker)"),
                per(self.stoke_cpu[0]),
            ),
            (
                format!("function CPU-µs per event{which} (the sandboxed processes)"),
                per(self.stoke_cpu[1]),
            ),
            (
                format!("nats-server CPU-µs per event{which} (stoke)"),
                per(self.stoke_cpu[2]),
            ),
            (
                format!("nats-server CPU-µs per message{which} (peer)"),
                per(self.peer_cpu),
            ),
        ]);
    }
}
