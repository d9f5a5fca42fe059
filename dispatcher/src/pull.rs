//! Pulling events: one durable pull consumer per source, each with
//! `max_ack_pending` = the function's concurrency, so one function's backlog
//! never takes another's slots.
//!
//! Sources: a function's invocation subject (`fn-<name>` on `STOKE_INVOKE`:
//! HTTP, admin, redrive) and each of its subject subscriptions
//! (`sub-<name>-<hash>` on `STOKE_EVENTS`). Every message is handed to
//! [`crate::handle`], which decides its fate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use stoke_core::{Manifest, naming};
use stoke_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handle::Loaded;
use crate::workers::Registry;

pub(crate) struct Shared {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub worker_wait: Duration,
    pub answer_slack: Duration,
    pub progress_every: Duration,
}

pub(crate) struct Ctx {
    pub shared: Shared,
    pub specs: Mutex<HashMap<(String, u32), Arc<Loaded>>>,
    /// Handlers of in-flight messages.
    pub tracker: TaskTracker,
    /// Fired when the shutdown grace runs out: release what is still running.
    pub release_now: CancellationToken,
}

pub(crate) struct Pullers {
    ctx: Arc<Ctx>,
    deployed: Arc<Notify>,
}

impl Pullers {
    pub fn new(shared: Shared) -> Pullers {
        Pullers {
            ctx: Arc::new(Ctx {
                shared,
                specs: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                release_now: CancellationToken::new(),
            }),
            deployed: Arc::new(Notify::new()),
        }
    }

    /// Notified by the admin API after a deploy, so the new function's
    /// consumer starts at once.
    pub fn deployed_notifier(&self) -> Arc<Notify> {
        self.deployed.clone()
    }

    /// Keep one consumer loop per deployed function until `shutdown`, then
    /// drain in-flight invocations for up to `grace`.
    pub async fn run(self, shutdown: CancellationToken, refresh: Duration, grace: Duration) {
        let mut consumers: HashMap<Source, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            match self.ctx.shared.store.list_functions().await {
                Ok(versions) => {
                    for source in versions.iter().flat_map(Source::all_of) {
                        if consumers.get(&source).is_some_and(|h| !h.is_finished()) {
                            continue;
                        }
                        // A changed concurrency is a different Source: retire the old loop.
                        consumers.retain(|s, h| {
                            let stale = s.same_consumer(&source);
                            if stale {
                                h.abort();
                            }
                            !stale
                        });
                        let (ctx, stop, src) = (self.ctx.clone(), shutdown.clone(), source.clone());
                        consumers.insert(source, tokio::spawn(async move { consume(ctx, src, stop).await }));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list functions; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(refresh) => {}
                _ = self.deployed.notified() => {}
            }
        }

        // Stop pulling, then let what is running finish.
        for (_, task) in consumers {
            let _ = task.await;
        }
        let tracker = &self.ctx.tracker;
        tracker.close();
        let running = tracker.len();
        if running > 0 {
            tracing::info!(running, ?grace, "waiting for in-flight invocations");
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                running = tracker.len(),
                "grace period over; releasing in-flight events for redelivery"
            );
            self.ctx.release_now.cancel();
            tracker.wait().await;
        }
    }
}

/// Where a consumer loop pulls from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// `stoke.invoke.<function>` on the invocation stream.
    Invoke { function: String, concurrency: u32 },
    /// A `subject` trigger, on the events stream.
    Subscription {
        function: String,
        subject: String,
        concurrency: u32,
    },
}

impl Source {
    /// Every source a deployed version needs.
    fn all_of(v: &stoke_store::FunctionVersion) -> Vec<Source> {
        let manifest = match Manifest::parse(&v.manifest) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(function = %v.function, error = %e, "deployed manifest unreadable");
                return Vec::new();
            }
        };
        let concurrency = manifest.concurrency;
        let mut sources = vec![Source::Invoke {
            function: v.function.clone(),
            concurrency,
        }];
        for t in manifest.triggers().unwrap_or_default() {
            if let stoke_core::Trigger::Subject { subject } = t {
                sources.push(Source::Subscription {
                    function: v.function.clone(),
                    subject,
                    concurrency,
                });
            }
        }
        sources
    }

    pub fn function(&self) -> &str {
        match self {
            Source::Invoke { function, .. } | Source::Subscription { function, .. } => function,
        }
    }

    /// Same durable consumer (perhaps with another concurrency).
    fn same_consumer(&self, other: &Source) -> bool {
        self.durable() == other.durable()
    }

    fn durable(&self) -> String {
        match self {
            Source::Invoke { function, .. } => naming::invoke_consumer(function),
            Source::Subscription { function, subject, .. } => naming::subscription_consumer(function, subject),
        }
    }

    fn stream(&self) -> &'static str {
        match self {
            Source::Invoke { .. } => naming::INVOKE_STREAM,
            Source::Subscription { .. } => naming::EVENTS_STREAM,
        }
    }

    fn concurrency(&self) -> u32 {
        match self {
            Source::Invoke { concurrency, .. } | Source::Subscription { concurrency, .. } => (*concurrency).max(1),
        }
    }

    fn config(&self) -> pull::Config {
        match self {
            Source::Invoke { function, .. } => {
                stoke_broker::streams::invoke_consumer_config(function, self.concurrency())
            }
            Source::Subscription { function, subject, .. } => {
                stoke_broker::streams::subscription_consumer_config(function, subject, self.concurrency())
            }
        }
    }
}

/// Pull one source's events until `stop`, reconnecting on errors.
async fn consume(ctx: Arc<Ctx>, source: Source, stop: CancellationToken) {
    let durable = source.durable();
    let config = source.config();
    let function = source.function().to_string();
    let concurrency = source.concurrency();
    let mut delay = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let consumer = async {
            let stream = ctx.shared.js.get_stream(source.stream()).await?;
            let consumer = match stream.get_consumer::<pull::Config>(&durable).await {
                Ok(c) if c.cached_info().config.max_ack_pending == config.max_ack_pending => c,
                Ok(_) => stream.update_consumer(config.clone()).await?,
                Err(_) => stream.create_consumer(config.clone()).await?,
            };
            consumer
                .stream()
                .max_messages_per_batch(concurrency.max(1) as usize)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(async_nats::Error::from)
        };
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            opened = consumer => opened,
        };
        let mut messages = match opened {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%function, error = %e, "cannot open consumer; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::debug!(%function, concurrency, "pulling");
        delay = Duration::from_millis(200);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => {
                    let (ctx2, source) = (ctx.clone(), source.clone());
                    ctx.tracker
                        .spawn(async move { crate::handle::handle(&ctx2, &source, msg).await });
                }
                Some(Err(e)) => {
                    tracing::warn!(%function, error = %e, "pull error");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
