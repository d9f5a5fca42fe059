//! JetStream provisioning, from the one `[streams]` table every role reads:
//! the invocation stream (every role ensures it at
//! start), the events stream plus one durable consumer per subject
//! subscription (ensured when a function with a `subject` trigger is
//! deployed, before the deploy is acknowledged), and the logs stream
//! (ensured by dispatchers at start). All idempotent.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use stoke_core::{Batching, Manifest, naming};

/// How the invocation stream is provisioned.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamOptions {
    /// Replicas (1 for a single server, 3 on a cluster).
    pub replicas: usize,
    /// JetStream de-duplication window for idempotency keys, in seconds.
    pub duplicate_window_secs: u64,
    /// Largest message the stream accepts (payload + headers), in bytes.
    pub max_message_bytes: i32,
    /// How long messages on subscribed subjects are kept, in seconds (every
    /// subscriber's consumer must get through them in this time).
    pub event_max_age_secs: u64,
    /// How long function output is kept on the logs stream, in seconds.
    pub logs_max_age_secs: u64,
    /// Most bytes of function output the logs stream keeps (the oldest go
    /// first).
    pub logs_max_bytes: i64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            replicas: 1,
            duplicate_window_secs: 120,
            max_message_bytes: 8 << 20,
            event_max_age_secs: 7 * 24 * 3600,
            logs_max_age_secs: 7 * 24 * 3600,
            logs_max_bytes: 1 << 30,
        }
    }
}

/// Create the invocation stream if missing; return it.
pub async fn ensure_invoke_stream(
    js: &jetstream::Context,
    opts: &StreamOptions,
) -> Result<stream::Stream, async_nats::Error> {
    let cfg = stream::Config {
        name: naming::INVOKE_STREAM.to_string(),
        subjects: vec![naming::INVOKE_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        duplicate_window: Duration::from_secs(opts.duplicate_window_secs),
        max_message_size: opts.max_message_bytes,
        ..Default::default()
    };
    // Retried while a new cluster elects leaders, before a role gives up starting.
    provision(js, "invocation", &cfg, None).await
}

/// Create the logs stream if missing, and bring its limits to `opts` (the
/// other settings of an existing stream are left alone). Limits retention:
/// the oldest output goes when it is older than `logs_max_age_secs` or the
/// stream is over `logs_max_bytes`.
pub async fn ensure_logs_stream(
    js: &jetstream::Context,
    opts: &StreamOptions,
) -> Result<stream::Stream, async_nats::Error> {
    let max_age = Duration::from_secs(opts.logs_max_age_secs);
    let cfg = stream::Config {
        name: naming::LOGS_STREAM.to_string(),
        subjects: vec![naming::LOGS_SUBJECTS.to_string()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        max_age,
        max_bytes: opts.logs_max_bytes,
        discard: stream::DiscardPolicy::Old,
        // Chunks are at most ~80 KiB; nothing is de-duplicated.
        max_message_size: 1 << 20,
        duplicate_window: Duration::from_secs(60).min(max_age),
        ..Default::default()
    };
    provision(
        js,
        "logs",
        &cfg,
        Some("[streams] logs_max_bytes (STOKE_STREAMS__LOGS_MAX_BYTES)"),
    )
    .await?;
    // Made a moment ago by another process on a cluster, the stream may not
    // answer yet ("stream not found" while its group forms): retried too.
    let js = &setup_context(js);
    retrying(
        "logs",
        || async {
            let mut current = js.get_stream(naming::LOGS_STREAM).await?.info().await?.config.clone();
            if current.max_age != max_age || current.max_bytes != opts.logs_max_bytes {
                tracing::info!(
                    ?max_age,
                    max_bytes = opts.logs_max_bytes,
                    "updating the logs stream's limits"
                );
                current.max_age = max_age;
                current.max_bytes = opts.logs_max_bytes;
                current.duplicate_window = current.duplicate_window.min(max_age);
                js.update_stream(current).await?;
            }
            Ok::<_, async_nats::Error>(js.get_stream(naming::LOGS_STREAM).await?)
        },
        |_| false,
    )
    .await
}

/// Create the stream `cfg` if missing (see [`retrying`]). A server that
/// cannot reserve the stream's `max_bytes` will not change its mind: that is
/// an error at once, saying what to do (`size_knob`: the setting that sizes
/// the stream).
async fn provision(
    js: &jetstream::Context,
    what: &str,
    cfg: &stream::Config,
    size_knob: Option<&str>,
) -> Result<stream::Stream, async_nats::Error> {
    let js = &setup_context(js);
    match retrying(what, || js.get_or_create_stream(cfg.clone()), out_of_storage).await {
        Ok(v) => Ok(v),
        Err(e) if out_of_storage(&e) => {
            let (size, lower) = match size_knob {
                Some(knob) => (format!("{} bytes of ", cfg.max_bytes), format!(", or lower {knob}")),
                None => (String::new(), String::new()),
            };
            Err(format!(
                "nats-server cannot reserve the {what} stream's {size}JetStream file storage ({e}): \
                 its max_file_store (by default 75 % of the free space on its store_dir's disk) \
                 has less left. Free disk space, raise the server's max_file_store{lower}"
            )
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `js` with a short request timeout, for setting streams up: a request
/// to a stream whose group is still forming may get no answer, and the
/// connection's 10 s timeout held processes starting together on a new
/// cluster for 10 s each time; a retry asks again sooner.
fn setup_context(js: &jetstream::Context) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(js.client())
}

/// Run a step of setting up the `what` stream until it works, for up to a
/// minute: a cluster that has just formed (or lost a node) may time out the
/// first requests while it elects leaders, and a stream another process has
/// just made may not be found for a moment while its group forms.
/// (`is_final`: an error retrying cannot mend.)
async fn retrying<T, E: std::fmt::Display, Fut: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut step: impl FnMut() -> Fut,
    is_final: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(200);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if !is_final(&e) && tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, "cannot provision the {what} stream yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The server has less storage left than the stream reserves.
fn out_of_storage(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::ErrorCode;
    use jetstream::context::CreateStreamErrorKind;
    matches!(e.kind(), CreateStreamErrorKind::JetStream(j)
        if [ErrorCode::STORAGE_RESOURCES_EXCEEDED, ErrorCode::INSUFFICIENT_RESOURCES].contains(&j.error_code()))
}

/// Make the events stream capture `subjects` (on top of what it already
/// captures): subjects only ever grow, so no subscriber's messages stop
/// being captured because another function was redeployed.
pub async fn ensure_event_stream(
    js: &jetstream::Context,
    opts: &StreamOptions,
    subjects: &[String],
) -> Result<stream::Stream, async_nats::Error> {
    match js.get_stream(naming::EVENTS_STREAM).await {
        Ok(mut existing) => {
            let mut config = existing.info().await?.config.clone();
            let mut wanted = config.subjects.clone();
            wanted.extend(subjects.iter().cloned());
            let cover = naming::subject_cover(&wanted);
            let mut current = config.subjects.clone();
            current.sort();
            if cover != current {
                tracing::info!(subjects = ?cover, "widening the events stream");
                config.subjects = cover;
                js.update_stream(config).await?;
            }
            Ok(js.get_stream(naming::EVENTS_STREAM).await?)
        }
        Err(_) => {
            let cfg = stream::Config {
                name: naming::EVENTS_STREAM.to_string(),
                subjects: naming::subject_cover(subjects),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: opts.replicas,
                duplicate_window: Duration::from_secs(opts.duplicate_window_secs),
                max_message_size: opts.max_message_bytes,
                max_age: Duration::from_secs(opts.event_max_age_secs),
                ..Default::default()
            };
            Ok(js.get_or_create_stream(cfg).await?)
        }
    }
}

/// How a function's consumers hold its messages, derived from its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holding {
    /// Messages delivered and not yet acked, at most.
    pub max_ack_pending: u32,
    /// The lease on a delivered message. The dispatcher renews it with
    /// in-progress acks while the message waits or runs; on its own it
    /// outlasts the function's timeout, so a message is redelivered only
    /// when every attempt holding it must be over (the worker kills a
    /// sandbox at its timeout) even if every renewal were lost.
    pub ack_wait: Duration,
}

/// Lease time beyond the function timeout (cold start, result write).
const LEASE_SLACK: Duration = Duration::from_secs(10);
/// Shortest lease.
const MIN_ACK_WAIT: Duration = Duration::from_secs(30);

impl Holding {
    /// For one source of `m`'s events, handed over `batch` at a time.
    pub fn of(m: &Manifest, batch: Option<Batching>) -> Holding {
        let batch_size = batch.map_or(1, |b| b.max_size);
        let window = Duration::from_millis(u64::from(batch.map_or(0, |b| b.window_ms)));
        // As many again as can run wait in the dispatcher for a slot (or,
        // with a concurrency key, for their key): a freed slot takes the
        // next event at once instead of after an ack's round trip to the
        // server and a new delivery.
        Holding {
            max_ack_pending: m.concurrency.max(1).saturating_mul(batch_size).saturating_mul(2),
            ack_wait: (Duration::from_millis(m.timeout_ms()) + LEASE_SLACK + window).max(MIN_ACK_WAIT),
        }
    }

    /// For a function whose stored manifest cannot be read: its events are
    /// only released, then dead-lettered, so a few at a time on the
    /// shortest lease.
    pub fn unreadable() -> Holding {
        Holding {
            max_ack_pending: 2,
            ack_wait: MIN_ACK_WAIT,
        }
    }

    /// How often to renew a lease.
    pub fn renew_every(&self, at_most: Duration) -> Duration {
        (self.ack_wait / 3).min(at_most)
    }
}

/// The durable pull consumer of one function's invocation subject, shared
/// by every dispatcher.
pub fn invoke_consumer_config(function: &str, holding: Holding) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(naming::invoke_consumer(function)),
        filter_subject: naming::invoke_subject(function),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: holding.ack_wait,
        max_deliver: -1,
        max_ack_pending: i64::from(holding.max_ack_pending),
        ..Default::default()
    }
}

/// The durable pull consumer of one subscription. Created with
/// DeliverPolicy::New: the subscription gets every message published after
/// it exists (i.e. after the deploy returns), not the stream's history.
pub fn subscription_consumer_config(
    function: &str,
    subject: &str,
    holding: Holding,
) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(naming::subscription_consumer(function, subject)),
        filter_subject: subject.to_string(),
        deliver_policy: jetstream::consumer::DeliverPolicy::New,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: holding.ack_wait,
        max_deliver: -1,
        max_ack_pending: i64::from(holding.max_ack_pending),
        ..Default::default()
    }
}

/// Ensure the events stream captures `subject` and `function`'s consumer
/// on it exists.
pub async fn ensure_subscription(
    js: &jetstream::Context,
    opts: &StreamOptions,
    function: &str,
    subject: &str,
    holding: Holding,
) -> Result<(), async_nats::Error> {
    let stream = ensure_event_stream(js, opts, &[subject.to_string()]).await?;
    let config = subscription_consumer_config(function, subject, holding);
    let durable = naming::subscription_consumer(function, subject);
    if stream
        .get_consumer::<jetstream::consumer::pull::Config>(&durable)
        .await
        .is_err()
    {
        stream.create_consumer(config).await?;
    }
    Ok(())
}
