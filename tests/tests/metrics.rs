//! Prometheus metrics of a real `stoke up`, scraped over HTTP and read with
//! a real parser (`prometheus-parse`): counters and histograms move with
//! real invocations and agree with the rows the store metered; queue depth,
//! warm sandboxes and worker capacity are there with sane values.

use std::time::Duration;

use stoke_tests::{Nats, Platform, PlatformOptions, count, eventually, free_port, hello_with};

/// One scrape, parsed.
struct Metrics {
    text: String,
    scrape: prometheus_parse::Scrape,
}

impl Metrics {
    async fn get(url: &str) -> Metrics {
        let r = reqwest::get(url).await.expect("metrics endpoint reachable");
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let text = r.text().await.unwrap();
        assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        Metrics { text, scrape }
    }

    fn samples<'a>(
        &'a self,
        metric: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .filter(move |s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// A counter's or gauge's value (counters are `<name>_total`).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value;
        self.samples(metric, labels).find_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
    }

    fn value_or_zero(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(metric, labels).unwrap_or(0.0)
    }

    /// A histogram's observation count (its `+Inf` bucket), checked against
    /// its `_count` series, and its `_sum`.
    fn histogram(&self, metric: &str, labels: &[(&str, &str)]) -> Option<(f64, f64)> {
        let buckets = self.samples(metric, labels).find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => Some(b),
            _ => None,
        })?;
        let inf = buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .expect("+Inf bucket")
            .count;
        // Cumulative buckets never go down.
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{metric}: {buckets:?}"
        );
        let count = self.value(&format!("{metric}_count"), labels).expect("_count");
        assert_eq!(inf, count, "{metric}: +Inf bucket vs _count");
        Some((count, self.value(&format!("{metric}_sum"), labels).expect("_sum")))
    }
}

const HELLO: &[(&str, &str)] = &[("function", "hello")];

fn outcome(o: &'static str) -> [(&'static str, &'static str); 2] {
    [("function", "hello"), ("outcome", o)]
}

#[tokio::test]
async fn counters_histograms_and_gauges_follow_real_invocations() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let url = p.url("/metrics");

    // Before any function: the worker's capacity, nothing counted.
    let m = Metrics::get(&url).await;
    assert_eq!(m.value("stoke_workers", &[]), Some(1.0), "{}", m.text);
    let worker = m
        .samples("stoke_worker_slots", &[])
        .next()
        .and_then(|s| s.labels.get("worker"))
        .expect("a worker label")
        .to_string();
    let w: &[(&str, &str)] = &[("worker", &worker)];
    assert_eq!(m.value("stoke_worker_slots", w), Some(64.0), "the default slots");
    assert_eq!(m.value("stoke_worker_busy_slots", w), Some(0.0));
    assert_eq!(m.value("stoke_worker_memory_bytes", w), Some(8192.0 * 1024.0 * 1024.0));
    assert_eq!(m.samples("stoke_invocations_total", &[]).count(), 0, "{}", m.text);

    // One slot, so events queue in JetStream behind a slow one.
    p.deploy(hello_with("concurrency = 1\nretry_backoff_ms = 100\nretry_backoff_max_ms = 100").path());
    for _ in 0..6 {
        let r = p
            .post_with("hello", r#"{"sleep": 0.5}"#, &[("Prefer", "respond-async")])
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    // Most wait undelivered; two are held, as concurrency = 1 allows: one
    // running, one waiting in the dispatcher for the slot.
    let queued = eventually(Duration::from_secs(10), "events waiting in the consumer", || async {
        let m = Metrics::get(&url).await;
        let held = m.value("stoke_queue_ack_pending", HELLO) == Some(2.0);
        (m.value_or_zero("stoke_queue_depth", HELLO) >= 3.0 && held).then_some(m)
    })
    .await;
    assert!(
        queued.value("stoke_queue_depth", HELLO).unwrap() <= 4.0,
        "{}",
        queued.text
    );
    eventually(Duration::from_secs(20), "the queue to drain", || async {
        let m = Metrics::get(&url).await;
        (m.value("stoke_queue_depth", HELLO) == Some(0.0)
            && m.value("stoke_queue_ack_pending", HELLO) == Some(0.0)
            && m.value_or_zero("stoke_invocations_total", &outcome("success")) == 6.0)
            .then_some(())
    })
    .await;

    // Successes, a synchronous function error, an async event that fails
    // once and is retried, an async terminal error that is dead-lettered.
    for _ in 0..3 {
        let r = p.post("hello", r#"{"name": "metrics"}"#).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(p.post("hello", r#"{"fail": "boom"}"#).await.status, 502);
    for event in [r#"{"fail_until": 2}"#, r#"{"terminal": "no"}"#] {
        let r = p.post_with("hello", event, &[("Prefer", "respond-async")]).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let dead: &[(&str, &str)] = &[("function", "hello"), ("reason", "terminal_error")];
    let m = eventually(Duration::from_secs(30), "the retry and the dead letter", || async {
        let m = Metrics::get(&url).await;
        (m.value("stoke_dead_letters_total", dead) == Some(1.0)
            && m.value("stoke_invocations_total", &outcome("success")) == Some(10.0))
        .then_some(m)
    })
    .await;
    assert_eq!(m.value("stoke_retries_total", HELLO), Some(1.0), "{}", m.text);
    assert_eq!(
        m.value("stoke_results_in_process_total", &[]),
        Some(4.0),
        "the four synchronous calls' results went straight to the gateway of this process: {}",
        m.text
    );
    assert_eq!(
        m.value("stoke_invocations_total", &outcome("function_error")),
        Some(3.0),
        "the sync failure, the first try of fail_until, the terminal error"
    );

    // The counters agree with what the store metered.
    let db = p.db().await;
    let attempts = count(&db, "SELECT count(*) FROM attempts WHERE function = 'hello'").await as f64;
    let cold = count(&db, "SELECT count(*) FROM attempts WHERE function = 'hello' AND cold").await as f64;
    let dead_rows = count(&db, "SELECT count(*) FROM dead_letters WHERE function = 'hello'").await as f64;
    let total: f64 = m
        .samples("stoke_invocations_total", HELLO)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!((total, attempts), (13.0, 13.0), "{}", m.text);
    assert_eq!(dead_rows, 1.0);
    assert!(cold >= 1.0);
    assert_eq!(m.value("stoke_cold_starts_total", HELLO), Some(cold), "{}", m.text);
    let (n, sum) = m
        .histogram("stoke_invocation_duration_seconds", HELLO)
        .expect("duration histogram");
    assert_eq!(n, attempts);
    let metered: i64 = sqlx::query_scalar("SELECT sum(duration_us) FROM attempts WHERE function = 'hello'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        (sum - metered as f64 / 1e6).abs() < 1e-3,
        "histogram sum {sum} s, metered {metered} us"
    );
    assert!(sum >= 3.0, "six events slept 0.5 s each: {sum}");
    let (inits, init_sum) = m
        .histogram("stoke_init_duration_seconds", HELLO)
        .expect("init histogram");
    assert_eq!(inits, cold, "one init per cold start");
    assert!(init_sum > 0.0 && init_sum < 30.0 * cold, "{init_sum}");

    // Warm sandboxes come from the worker's heartbeats (every 2 s), adjusted
    // by the dispatcher as it sends events and gets results, never more
    // than were started once settled. A heartbeat that crosses an event on
    // its way to the worker still counts the sandbox that event will take,
    // and its result adds it once more, until the next heartbeat (a
    // placement hint, not a ledger): wait for a settled count, not the first.
    eventually(
        Duration::from_secs(10),
        "a warm sandbox reported, no more than started",
        || async {
            let m = Metrics::get(&url).await;
            let warm = m.value_or_zero("stoke_warm_sandboxes", HELLO);
            (warm >= 1.0 && warm <= cold).then_some(m)
        },
    )
    .await;
    let m = Metrics::get(&url).await;
    assert_eq!(m.value("stoke_worker_busy_slots", w), Some(0.0));
    assert_eq!(m.value("stoke_queue_depth", HELLO), Some(0.0));
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let nats = Nats::start().await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            args: vec!["--metrics".into(), addr.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let m = Metrics::get(&format!("http://{addr}/metrics")).await;
    assert_eq!(m.value("stoke_workers", &[]), Some(1.0), "{}", m.text);
    assert_eq!(p.get("/metrics").await.status, 404, "not on the gateway then");
}
