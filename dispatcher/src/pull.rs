//! Pulling events: one durable pull consumer per source, each with
//! `max_ack_pending` = twice the function's concurrency (as many wait here
//! for a slot as run), so one function's backlog never takes another's
//! slots and a freed slot never waits for a delivery.
//!
//! Sources: a function's invocation subject (`fn-<name>` on `STOKE_INVOKE`:
//! HTTP, admin, redrive) and each of its subject subscriptions
//! (`sub-<name>-<hash>` on `STOKE_EVENTS`). Every message is handed to
//! [`crate::handle`], which decides its fate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ctx::{Ctx, Origin, Shared, Source};
use crate::versions::Versions;

pub(crate) struct Pullers {
    ctx: Arc<Ctx>,
}

impl Pullers {
    pub fn new(shared: Shared, catalog: stoke_core::catalog::CatalogChanges) -> Pullers {
        Pullers {
            ctx: Arc::new(Ctx {
                shared,
                versions: Versions::new(Arc::new(crate::current::Deployments::new(catalog))),
                tracker: TaskTracker::new(),
                release_now: CancellationToken::new(),
                gates: Mutex::new(HashMap::new()),
                board: crate::queue::Board::default(),
            }),
        }
    }

    /// The delivery state the admin API's queue view reads.
    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// Told by the admin API of every change, so a new function's consumer
    /// starts at once and subject events run the new current version.
    pub fn deployments(&self) -> Arc<crate::current::Deployments> {
        self.ctx.versions.deployments.clone()
    }

    /// Keep one consumer loop per deployed function until `shutdown`, then
    /// drain in-flight invocations for up to `grace`.
    pub async fn run(self, shutdown: CancellationToken, refresh: Duration, grace: Duration) {
        let mut consumers: HashMap<Source, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            match self.ctx.shared.store.list_functions().await {
                Ok(versions) => {
                    self.provision(&versions).await;
                    // A version whose stored manifest does not parse: nobody
                    // can say which sources it needs, but its consumers on the
                    // server say which it had. Their loops run on as those
                    // consumers hold messages (its events are released, then
                    // dead-lettered, by `handle::unreadable`); nothing of it is
                    // retired, so what is published keeps being captured. A
                    // function without an invocation consumer yet gets one.
                    let mut unreadable = HashSet::new();
                    let mut wanted: Vec<Source> = Vec::new();
                    for v in &versions {
                        match Source::all_of(v) {
                            Ok(sources) => wanted.extend(sources),
                            Err(e) => {
                                tracing::error!(function = %v.function, version = v.version, error = %e, "stored manifest unreadable; its consumers run on as they are");
                                unreadable.insert(v.function.clone());
                                let had = match existing_sources(&self.ctx.shared.js, &v.function).await {
                                    Ok(had) => had,
                                    Err(e) => {
                                        tracing::warn!(function = %v.function, error = %e, "cannot list its consumers; keeping its loops");
                                        Vec::new()
                                    }
                                };
                                let invoking = had
                                    .iter()
                                    .chain(consumers.keys())
                                    .any(|s| s.function == v.function && s.origin == Origin::Invoke);
                                wanted.extend(had);
                                if !invoking {
                                    wanted.push(Source::unreadable(&v.function));
                                }
                            }
                        }
                    }
                    self.ctx.shared.metrics.set_sources(
                        wanted
                            .iter()
                            .map(|s| crate::metrics::SourceRef {
                                stream: s.stream(),
                                durable: s.durable(),
                                function: s.function.clone(),
                            })
                            .collect(),
                    );
                    self.retire_subscriptions(&mut consumers, &wanted, &unreadable).await;
                    for source in wanted {
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
                _ = self.ctx.versions.deployments.notified() => {}
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

impl Pullers {
    /// Stop the subscriptions no current version has any more (the function
    /// was deleted, or its new current version dropped the subject) and
    /// delete their durable consumers, so messages published from now on
    /// are not kept for it. Invoke consumers stay: events accepted before a
    /// delete still run on the version they were accepted for. The
    /// functions in `unreadable` (their manifests do not parse) keep theirs.
    async fn retire_subscriptions(
        &self,
        consumers: &mut HashMap<Source, tokio::task::JoinHandle<()>>,
        wanted: &[Source],
        unreadable: &HashSet<String>,
    ) {
        let wanted: HashSet<String> = wanted.iter().map(Source::durable).collect();
        let gone: Vec<Source> = consumers
            .keys()
            .filter(|s| {
                matches!(s.origin, Origin::Subscription { .. })
                    && !wanted.contains(&s.durable())
                    && !unreadable.contains(&s.function)
            })
            .cloned()
            .collect();
        for source in gone {
            if let Some(loop_) = consumers.remove(&source) {
                loop_.abort();
            }
            let durable = source.durable();
            let deleted = match self.ctx.shared.js.get_stream(source.stream()).await {
                Ok(stream) => stream
                    .delete_consumer(&durable)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match deleted {
                Ok(()) => tracing::info!(function = %source.function, consumer = %durable, "subscription retired"),
                Err(e) => {
                    tracing::warn!(function = %source.function, consumer = %durable, error = %e, "subscription loop stopped; its consumer could not be deleted")
                }
            }
        }
    }

    /// Tell the workers which current versions want sandboxes kept started
    /// (`min_warm`).
    async fn provision(&self, versions: &[stoke_store::FunctionVersion]) {
        let mut targets = Vec::new();
        for v in versions {
            // (Cached per version: the handlers need the same.)
            match self.ctx.load(&v.function, Some(v.version)).await {
                Ok(Some(loaded)) if loaded.manifest.min_warm > 0 => {
                    targets.push((loaded.spec.clone(), loaded.manifest.min_warm));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(function = %v.function, error = %e, "cannot provision"),
            }
        }
        self.ctx.shared.registry.provision(targets);
    }
}

/// `function`'s sources as its durable consumers on the server hold them:
/// its invocation consumer and its subscriptions (each filter subject is
/// its subject; a batched one is read one message at a time).
async fn existing_sources(js: &jetstream::Context, function: &str) -> Result<Vec<Source>, async_nats::Error> {
    let mut sources = Vec::new();
    for stream_name in [stoke_core::naming::INVOKE_STREAM, stoke_core::naming::EVENTS_STREAM] {
        let Ok(stream) = js.get_stream(stream_name).await else {
            continue;
        };
        let mut infos = stream.consumers();
        while let Some(info) = infos.next().await {
            let config = info?.config;
            let (Some(durable), subject) = (config.durable_name.as_deref(), config.filter_subject.clone()) else {
                continue;
            };
            let origin = if stream_name == stoke_core::naming::INVOKE_STREAM {
                if durable != stoke_core::naming::invoke_consumer(function) {
                    continue;
                }
                Origin::Invoke
            } else {
                if durable != stoke_core::naming::subscription_consumer(function, &subject) {
                    continue;
                }
                Origin::Subscription { subject, batch: None }
            };
            sources.push(Source {
                function: function.to_string(),
                origin,
                holding: stoke_bus::streams::Holding {
                    max_ack_pending: u32::try_from(config.max_ack_pending).unwrap_or(1).max(1),
                    ack_wait: config.ack_wait,
                },
            });
        }
    }
    Ok(sources)
}

/// Pull one source's events until `stop`, reconnecting on errors.
async fn consume(ctx: Arc<Ctx>, source: Source, stop: CancellationToken) {
    let durable = source.durable();
    let config = source.config();
    let function = source.function.clone();
    let mut delay = Duration::from_millis(200);
    while !stop.is_cancelled() {
        // A dispatcher no worker is attached to pulls nothing: what it took
        // would only wait, while another dispatcher could run it.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ctx.shared.registry.wait_for_worker() => {}
        }
        let consumer = async {
            let stream = ctx.shared.js.get_stream(source.stream()).await?;
            let consumer = match stream.get_consumer::<pull::Config>(&durable).await {
                Ok(c) if same_holding(&c.cached_info().config, &config) => c,
                Ok(_) => stream.update_consumer(config.clone()).await?,
                Err(_) => stream.create_consumer(config.clone()).await?,
            };
            consumer
                .stream()
                .max_messages_per_batch(source.holding.max_ack_pending as usize)
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
        tracing::debug!(%function, holding = ?source.holding, "pulling");
        delay = Duration::from_millis(200);
        // A subscription with batching collects messages here first.
        let mut batch: Vec<jetstream::Message> = Vec::new();
        let mut batch_due: Option<tokio::time::Instant> = None;
        loop {
            let due = batch_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    release(&ctx, std::mem::take(&mut batch));
                    return;
                }
                _ = tokio::time::sleep_until(due), if batch_due.is_some() => {
                    spawn_batch(&ctx, &source, std::mem::take(&mut batch));
                    batch_due = None;
                    continue;
                }
                next = messages.next() => next,
            };
            match (next, source.batch()) {
                (Some(Ok(msg)), None) => {
                    let (ctx2, source) = (ctx.clone(), source.clone());
                    ctx.tracker
                        .spawn(async move { crate::handle::handle(&ctx2, &source, msg).await });
                }
                (Some(Ok(msg)), Some(b)) => {
                    if batch.is_empty() {
                        batch_due = Some(tokio::time::Instant::now() + Duration::from_millis(u64::from(b.window_ms)));
                    }
                    batch.push(msg);
                    if batch.len() >= b.max_size as usize {
                        spawn_batch(&ctx, &source, std::mem::take(&mut batch));
                        batch_due = None;
                    }
                }
                (Some(Err(e)), _) => {
                    tracing::warn!(%function, error = %e, "pull error");
                    break;
                }
                (None, _) => break,
            }
        }
        spawn_batch(&ctx, &source, std::mem::take(&mut batch));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn same_holding(a: &async_nats::jetstream::consumer::Config, b: &pull::Config) -> bool {
    a.max_ack_pending == b.max_ack_pending && a.ack_wait == b.ack_wait
}

/// Hand a collected batch to its handler.
fn spawn_batch(ctx: &Arc<Ctx>, source: &Source, batch: Vec<jetstream::Message>) {
    if batch.is_empty() {
        return;
    }
    let (ctx2, source) = (ctx.clone(), source.clone());
    ctx.tracker
        .spawn(async move { crate::batch::handle_batch(&ctx2, &source, batch).await });
}

/// Give back messages collected but never handled (shutdown).
fn release(ctx: &Ctx, msgs: Vec<jetstream::Message>) {
    if msgs.is_empty() {
        return;
    }
    ctx.tracker.spawn(async move {
        for msg in &msgs {
            crate::lease::ack(msg, async_nats::jetstream::AckKind::Nak(None)).await;
        }
    });
}
