//! The dispatcher's Prometheus metrics, all defined here, served as
//! OpenMetrics text on `GET /metrics` (the `prometheus-client` encoder).
//!
//! The dispatcher sees every attempt's result and metering, every retry
//! and dead letter, and each attached worker's capacity and warm sandboxes,
//! so it is the one role with metrics. Counters and histograms move on the
//! event path (a label lookup and an atomic add; no lock is held across an
//! await). Gauges of state — worker capacity, warm sandboxes, queue depth —
//! are read when scraped: the registry's snapshot, and one consumer listing
//! per stream from JetStream (a page per 256 consumers, 2 s at most).
//!
//! Label sets are bounded: `function` by the deployed functions, `outcome`
//! and `reason` by fixed lists, `worker` by the workers attached now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::TryStreamExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use stoke_proto::{InvocationResult, Outcome};

use crate::workers;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    function: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLabels {
    function: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

type Histograms = Family<FunctionLabel, Histogram, fn() -> Histogram>;

/// Invocation durations: 1 ms to ~17 min, doubling.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 21))
}

/// Cold-start init durations: 1 ms to ~33 s, doubling.
fn init_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// One consumer the pullers keep: where to find it and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceRef {
    pub stream: &'static str,
    pub durable: String,
    pub function: String,
}

pub struct Metrics {
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    duration: Histograms,
    init_duration: Histograms,
    cold_starts: Family<FunctionLabel, Counter>,
    retries: Family<FunctionLabel, Counter>,
    handovers: Family<FunctionLabel, Counter>,
    results_in_process: Counter,
    dead_letters: Family<DeadLabels, Counter>,
    queue_depth: Family<FunctionLabel, Gauge>,
    queue_ack_pending: Family<FunctionLabel, Gauge>,
    warm: Family<FunctionLabel, Gauge>,
    workers: Gauge,
    worker_slots: Family<WorkerLabel, Gauge>,
    worker_busy: Family<WorkerLabel, Gauge>,
    worker_memory: Family<WorkerLabel, Gauge>,
    /// The consumers to read queue depth from (the pullers' sources).
    sources: Mutex<Vec<SourceRef>>,
    /// One scrape at a time: a scrape clears and refills the gauges.
    scraping: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut m = Metrics {
            invocations: Family::default(),
            duration: Family::new_with_constructor(duration_buckets as fn() -> Histogram),
            init_duration: Family::new_with_constructor(init_buckets as fn() -> Histogram),
            cold_starts: Family::default(),
            retries: Family::default(),
            handovers: Family::default(),
            results_in_process: Counter::default(),
            dead_letters: Family::default(),
            queue_depth: Family::default(),
            queue_ack_pending: Family::default(),
            warm: Family::default(),
            workers: Gauge::default(),
            worker_slots: Family::default(),
            worker_busy: Family::default(),
            worker_memory: Family::default(),
            sources: Mutex::new(Vec::new()),
            scraping: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        // Counter names get `_total` appended by the encoder.
        let r = &mut m.registry;
        r.register(
            "stoke_invocations",
            "Attempts run by a worker, by outcome (success, function_error, crashed, timeout, init_error, platform_error)",
            m.invocations.clone(),
        );
        r.register(
            "stoke_invocation_duration_seconds",
            "Duration of each attempt in its sandbox (what is billed)",
            m.duration.clone(),
        );
        r.register(
            "stoke_init_duration_seconds",
            "Init duration of cold starts: sandbox spawn to the runtime's first /next",
            m.init_duration.clone(),
        );
        r.register(
            "stoke_cold_starts",
            "Attempts that started a new sandbox",
            m.cold_starts.clone(),
        );
        r.register(
            "stoke_retries",
            "Failed attempts released for another try (NAK with backoff)",
            m.retries.clone(),
        );
        r.register(
            "stoke_handovers",
            "Events sent to run after a running one of the function on its worker (taking over its slot and \
             sandbox when it ends) instead of waiting for a free slot",
            m.handovers.clone(),
        );
        r.register(
            "stoke_results_in_process",
            "Results handed straight to a synchronous caller in the dispatcher's own process (stoke up's gateway, \
             the admin API's invoke), ahead of (or instead of) their NATS announcement",
            m.results_in_process.clone(),
        );
        r.register(
            "stoke_dead_letters",
            "Events written to the dead-letter store, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "stoke_queue_depth",
            "Messages waiting in the function's JetStream consumers, not yet delivered",
            m.queue_depth.clone(),
        );
        r.register(
            "stoke_queue_ack_pending",
            "Messages delivered from the function's consumers and not yet acknowledged (running or waiting for a slot)",
            m.queue_ack_pending.clone(),
        );
        r.register(
            "stoke_warm_sandboxes",
            "Idle warm sandboxes of the function on the attached workers, as their heartbeats report",
            m.warm.clone(),
        );
        r.register(
            "stoke_workers",
            "Workers attached to this dispatcher",
            m.workers.clone(),
        );
        r.register(
            "stoke_worker_slots",
            "Invocations the worker runs at once",
            m.worker_slots.clone(),
        );
        r.register(
            "stoke_worker_busy_slots",
            "The worker's slots taken by invocations this dispatcher sent",
            m.worker_busy.clone(),
        );
        r.register(
            "stoke_worker_memory_bytes",
            "Memory the worker offers to sandboxes",
            m.worker_memory.clone(),
        );
        Arc::new(m)
    }

    /// A worker reported an attempt.
    pub fn attempt(&self, function: &str, r: &InvocationResult) {
        let outcome = outcome_label(Outcome::try_from(r.outcome).unwrap_or(Outcome::PlatformError));
        self.invocations
            .get_or_create(&OutcomeLabels {
                function: function.to_string(),
                outcome,
            })
            .inc();
        let Some(m) = &r.metering else { return };
        let label = FunctionLabel {
            function: function.to_string(),
        };
        self.duration
            .get_or_create(&label)
            .observe(Duration::from_micros(m.duration_us).as_secs_f64());
        if m.cold {
            self.cold_starts.get_or_create(&label).inc();
            // Exec mode has no init phase (every attempt is cold).
            if m.init_duration_us > 0 {
                self.init_duration
                    .get_or_create(&label)
                    .observe(Duration::from_micros(m.init_duration_us).as_secs_f64());
            }
        }
    }

    /// An attempt whose worker was lost (metered as a platform error).
    pub fn lost_attempt(&self, function: &str) {
        self.invocations
            .get_or_create(&OutcomeLabels {
                function: function.to_string(),
                outcome: outcome_label(Outcome::PlatformError),
            })
            .inc();
    }

    pub fn handover(&self, function: &str) {
        self.handovers
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .inc();
    }

    pub fn result_in_process(&self, callers: usize) {
        self.results_in_process.inc_by(callers as u64);
    }

    pub fn retry(&self, function: &str) {
        self.retries
            .get_or_create(&FunctionLabel {
                function: function.to_string(),
            })
            .inc();
    }

    pub fn dead_letter(&self, function: &str, reason: stoke_store::DeadReason) {
        self.dead_letters
            .get_or_create(&DeadLabels {
                function: function.to_string(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The consumers the pullers keep now (queue depth is read from them).
    pub(crate) fn set_sources(&self, sources: Vec<SourceRef>) {
        *self.sources.lock().expect("not poisoned") = sources;
    }

    /// Refresh the gauges and encode everything (OpenMetrics text).
    pub async fn scrape(&self, workers: &workers::Registry, js: &jetstream::Context) -> String {
        let _one = self.scraping.lock().await;
        let sources = self.sources.lock().expect("not poisoned").clone();
        let functions: Vec<&str> = {
            let mut f: Vec<&str> = sources.iter().map(|s| s.function.as_str()).collect();
            f.sort_unstable();
            f.dedup();
            f
        };
        self.refresh_workers(&workers.snapshot(), &functions);
        match tokio::time::timeout(Duration::from_secs(2), consumer_depths(js, &sources)).await {
            Ok(Ok(depths)) => {
                self.queue_depth.clear();
                self.queue_ack_pending.clear();
                for f in &functions {
                    let (pending, ack_pending) = depths.get(*f).copied().unwrap_or((0, 0));
                    let label = FunctionLabel {
                        function: f.to_string(),
                    };
                    self.queue_depth.get_or_create(&label).set(pending);
                    self.queue_ack_pending.get_or_create(&label).set(ack_pending);
                }
            }
            // The last values stay; the scrape still answers.
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read queue depth"),
            Err(_) => tracing::warn!("reading queue depth took over 2 s; skipped"),
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    fn refresh_workers(&self, workers: &[stoke_proto::WorkerInfo], functions: &[&str]) {
        self.workers.set(workers.len() as i64);
        self.worker_slots.clear();
        self.worker_busy.clear();
        self.worker_memory.clear();
        let mut warm: HashMap<&str, i64> = functions.iter().map(|f| (*f, 0)).collect();
        for w in workers {
            let label = WorkerLabel { worker: w.id.clone() };
            self.worker_slots.get_or_create(&label).set(i64::from(w.slots));
            self.worker_busy.get_or_create(&label).set(i64::from(w.busy));
            let bytes = i64::try_from(w.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
            self.worker_memory.get_or_create(&label).set(bytes);
            for set in &w.warm {
                *warm.entry(set.function.as_str()).or_insert(0) += i64::from(set.idle);
            }
        }
        self.warm.clear();
        for (function, idle) in warm {
            self.warm
                .get_or_create(&FunctionLabel {
                    function: function.to_string(),
                })
                .set(idle);
        }
    }
}

/// Pending and ack-pending messages per function, summed over its
/// consumers: one listing per stream that has any of them.
async fn consumer_depths(
    js: &jetstream::Context,
    sources: &[SourceRef],
) -> Result<HashMap<String, (i64, i64)>, async_nats::Error> {
    let owner: HashMap<(&str, &str), &str> = sources
        .iter()
        .map(|s| ((s.stream, s.durable.as_str()), s.function.as_str()))
        .collect();
    let mut streams: Vec<&'static str> = sources.iter().map(|s| s.stream).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut depths: HashMap<String, (i64, i64)> = HashMap::new();
    for stream in streams {
        let mut infos = js.get_stream_no_info(stream).await?.consumers();
        while let Some(info) = infos.try_next().await? {
            if let Some(function) = owner.get(&(stream, info.name.as_str())) {
                let d = depths.entry(function.to_string()).or_default();
                d.0 += i64::try_from(info.num_pending).unwrap_or(i64::MAX);
                d.1 += i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX);
            }
        }
    }
    Ok(depths)
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::FunctionError => "function_error",
        Outcome::Crashed => "crashed",
        Outcome::Timeout => "timeout",
        Outcome::InitError => "init_error",
        Outcome::PlatformError | Outcome::Unspecified => "platform_error",
    }
}

/// `GET /metrics` over `metrics`, `workers` and `js`.
pub fn router(metrics: Arc<Metrics>, workers: Arc<workers::Registry>, js: jetstream::Context) -> axum::Router {
    use axum::http::header;
    let handler = move || {
        let (metrics, workers, js) = (metrics.clone(), workers.clone(), js.clone());
        async move {
            let body = metrics.scrape(&workers, &js).await;
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}
