//! stoke-dispatcher owns delivery: it pulls events from JetStream (one
//! durable pull consumer per function and per subject subscription, held
//! as the manifest says: `pull.rs`), admits each within the function's
//! concurrency and per-key limits (`gate.rs`), hands it — or a batch of
//! subject messages (`batch.rs`) — to an attached worker over gRPC
//! (`workers.rs`), keeps the message's lease alive with in-progress acks
//! while it runs, decides retry, completion or dead letter (`policy.rs`),
//! writes the metered attempt and the one completion per idempotency key
//! (`records.rs`), announces the result for synchronous callers, and only
//! then acks (`handle.rs`). It stores the function output workers send on
//! the logs stream (`logs.rs`), serves the admin API (`stoke_api`, through
//! the narrow handles in `handles.rs`: deployments changed, the queue view,
//! the worker registry) on its gRPC port, and the Prometheus metrics
//! (`metrics.rs`: `GET /metrics`, on `metrics_listen` or, in `stoke up`, on
//! the HTTP gateway).
//!
//! It must not run user code (workers do) and must not ack anything that is
//! not durable in the store first.

mod announce;
mod batch;
mod ctx;
mod current;
mod envelope;
mod gate;
mod handle;
mod handles;
mod lease;
mod logs;
pub mod metrics;
mod policy;
mod pull;
mod queue;
mod records;
mod versions;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoke_auth::sealed;
use stoke_auth::{AuthMode, Authenticator};
use stoke_bus::Invoker;
use stoke_bus::streams::{self, StreamOptions};
use stoke_proto::tls::TlsOptions;
use stoke_proto::worker_service_server::WorkerServiceServer;
use stoke_store::Store;
use tokio_util::sync::CancellationToken;

use workers::Registry;

/// Dispatcher settings (the `[dispatcher]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherOptions {
    /// gRPC address for workers and the admin API.
    pub listen: SocketAddr,
    /// How long an event waits for a worker with a free slot before it is
    /// released back to JetStream for later.
    pub worker_wait_secs: u64,
    /// Extra time, beyond the function timeout, a worker gets to answer
    /// (cold start, package fetch).
    pub answer_slack_secs: u64,
    /// Seconds between in-progress acks while an invocation runs.
    pub progress_secs: u64,
    /// A worker silent this long (it sends a heartbeat every 2 s) is taken
    /// for lost: its invocations are released for redelivery.
    pub worker_heartbeat_timeout_secs: u64,
    /// Seconds between checks for newly deployed functions.
    pub refresh_secs: u64,
    /// On shutdown, how long in-flight invocations may take to finish before
    /// they are released for redelivery.
    pub shutdown_grace_secs: u64,
    /// Largest invoke payload accepted through the admin API.
    pub max_payload_bytes: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`); none by default.
    /// `stoke up` serves them on its HTTP gateway unless this is set.
    pub metrics_listen: Option<SocketAddr>,
    /// The key secrets are sealed with in the database (32 bytes; made,
    /// mode 0600, when absent). Every dispatcher of a cluster needs the same
    /// file. `stoke` defaults it to `<data_dir>/secrets.key`.
    pub secrets_key_file: Option<std::path::PathBuf>,
    /// Make this dispatcher's key the one the store's secrets are sealed
    /// with, replacing the one recorded (only when that key is lost: the
    /// secrets sealed under it must be set again). Without it a dispatcher
    /// whose key is not the recorded one refuses to start.
    pub secrets_key_adopt: bool,
    /// OCI registries (`host[:port]`, as image references name them) the
    /// admin API pulls images from over plain HTTP; every other is HTTPS.
    /// For a registry on a trusted network only (e.g. `127.0.0.1:5000`).
    pub insecure_registries: Vec<String>,
    pub auth: AuthOptions,
    /// TLS on the gRPC port (see `load_tls`).
    pub tls: TlsOptions,
}

/// Who may call the admin API and attach workers (`[dispatcher.auth]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthOptions {
    /// `auto` (default): tokens are required unless `listen` is a loopback
    /// address. `tokens`: always. `none`: never (every caller is an admin).
    pub mode: AuthMode,
    /// Where the first admin token's secret is written when tokens are
    /// required and none exists yet (default `<data_dir>/admin.token`).
    pub bootstrap_token_file: Option<std::path::PathBuf>,
}

/// The gRPC port's TLS set-up (`[dispatcher.tls]`), checked (files read,
/// key matching the certificate); None for plaintext. Workers then attach
/// to, and the CLI calls, `https://host:port`, trusting the CA that signed
/// the certificate (their `ca_file`). Without it, API tokens and the
/// secrets sent to workers cross the network in clear.
fn load_tls(opts: &TlsOptions) -> Result<Option<tonic::transport::ServerTlsConfig>, DispatcherError> {
    let Some((cert, key)) = opts.files("dispatcher.tls").map_err(DispatcherError::Tls)? else {
        return Ok(None);
    };
    let config = stoke_proto::tls::server(cert, key)?;
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|e| {
            DispatcherError::Tls(format!(
                "{} with {}: {} (is the key the certificate's?)",
                cert.display(),
                key.display(),
                stoke_proto::tls::chain(&e)
            ))
        })?;
    Ok(Some(config))
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            listen: "127.0.0.1:50051".parse().expect("valid default"),
            worker_wait_secs: 10,
            answer_slack_secs: 60,
            progress_secs: 10,
            worker_heartbeat_timeout_secs: 8,
            refresh_secs: 5,
            shutdown_grace_secs: 30,
            max_payload_bytes: 6 << 20,
            metrics_listen: None,
            secrets_key_file: None,
            secrets_key_adopt: false,
            insecure_registries: Vec::new(),
            auth: AuthOptions::default(),
            tls: TlsOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("cannot bind the gRPC listener on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind the metrics listener on {addr}")]
    BindMetrics { addr: SocketAddr, source: std::io::Error },
    #[error("cannot provision the invocation stream: {0}")]
    Stream(async_nats::Error),
    #[error("cannot provision the logs stream (STOKE_LOGS): {0}")]
    LogsStream(async_nats::Error),
    #[error("gRPC server failed: {0}")]
    Serve(Box<dyn std::error::Error + Send + Sync>),
    #[error("auth: {0}")]
    Auth(stoke_auth::AuthError),
    #[error(transparent)]
    Secrets(#[from] sealed::SealError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("TLS: {0}")]
    TlsSetup(stoke_proto::tls::TlsError),
}

impl From<stoke_auth::AuthError> for DispatcherError {
    fn from(e: stoke_auth::AuthError) -> Self {
        DispatcherError::Auth(e)
    }
}

impl From<stoke_proto::tls::TlsError> for DispatcherError {
    fn from(e: stoke_proto::tls::TlsError) -> Self {
        DispatcherError::TlsSetup(e)
    }
}

/// Largest gRPC message (package chunks are smaller; this bounds payloads).
const MAX_MESSAGE: usize = 64 << 20;

pub struct Dispatcher {
    opts: DispatcherOptions,
    /// The `[streams]` settings (the admin API provisions subscriptions).
    streams: StreamOptions,
    listener: tokio::net::TcpListener,
    nats: async_nats::Client,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    auth: Authenticator,
    local_worker_token: String,
    metrics: Arc<metrics::Metrics>,
    metrics_listener: Option<tokio::net::TcpListener>,
    /// Bumped by the admin API on every catalog change.
    catalog: stoke_core::catalog::CatalogChanges,
    /// What seals secrets at rest (none: they are stored as given).
    secrets: Option<Arc<sealed::SecretsKey>>,
    /// Synchronous callers of this process waiting for results.
    local_results: stoke_bus::results::LocalResults,
    /// TLS on the gRPC port; None: plaintext.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Dispatcher {
    /// A dispatcher serving `opts`, on the streams `streams` describes.
    pub async fn build(
        opts: DispatcherOptions,
        streams: StreamOptions,
        nats: async_nats::Client,
        store: Arc<dyn Store>,
    ) -> Result<Dispatcher, DispatcherError> {
        let tls = load_tls(&opts.tls)?;
        let js = async_nats::jetstream::new(nats.clone());
        streams::ensure_invoke_stream(&js, &streams)
            .await
            .map_err(DispatcherError::Stream)?;
        streams::ensure_logs_stream(&js, &streams)
            .await
            .map_err(DispatcherError::LogsStream)?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| DispatcherError::Bind {
                addr: opts.listen,
                source,
            })?;
        let metrics_listener = match opts.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DispatcherError::BindMetrics { addr, source })?,
            ),
            None => None,
        };
        let secrets = match &opts.secrets_key_file {
            Some(path) => {
                let key = sealed::SecretsKey::load_or_create(path)?;
                sealed::check_at_start(&key, path, store.as_ref(), opts.secrets_key_adopt).await?;
                Some(Arc::new(key))
            }
            None => {
                tracing::warn!("no secrets_key_file: secrets are stored unsealed");
                None
            }
        };
        let enabled = opts.auth.mode.enabled_for(opts.listen);
        if enabled && let Some(file) = &opts.auth.bootstrap_token_file {
            stoke_auth::bootstrap(store.as_ref(), file).await?;
        }
        tracing::info!(auth = if enabled { "tokens" } else { "off" }, "admin API auth");
        let (auth, local_worker_token) = Authenticator::new(store.clone(), enabled).with_local_worker();
        let local_results = stoke_bus::results::LocalResults::default();
        let registry = Registry::new(
            store.clone(),
            Duration::from_secs(opts.worker_heartbeat_timeout_secs.max(1)),
            logs::Publisher::start(js),
            nats.clone(),
            local_results.clone(),
        );
        Ok(Dispatcher {
            opts,
            streams,
            listener,
            nats,
            store,
            registry,
            auth,
            local_worker_token,
            metrics: metrics::Metrics::new(),
            metrics_listener,
            catalog: Default::default(),
            secrets,
            local_results,
            tls,
        })
    }

    /// `GET /metrics` of this dispatcher, to serve on another listener (the
    /// HTTP gateway of `stoke up`).
    pub fn metrics_router(&self) -> axum::Router {
        metrics::router(
            self.metrics.clone(),
            self.registry.clone(),
            async_nats::jetstream::new(self.nats.clone()),
        )
    }

    /// Where the metrics listener is bound, if one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The count of catalog changes made through this dispatcher's admin
    /// API: a broker in the same process (`stoke up`) shares it to cache
    /// current versions (`Broker::share_catalog`).
    pub fn catalog_changes(&self) -> stoke_core::catalog::CatalogChanges {
        self.catalog.clone()
    }

    /// Where this dispatcher hands results to synchronous callers of its
    /// own process before announcing them on NATS: its admin API's, and a
    /// broker's in the same process (`Broker::share_results`).
    pub fn local_results(&self) -> stoke_bus::results::LocalResults {
        self.local_results.clone()
    }

    /// A token a worker in this same process attaches with (valid until the
    /// process exits; never stored).
    pub fn local_worker_token(&self) -> String {
        self.local_worker_token.clone()
    }

    /// `WorkerService.Attach` for a worker in this same process
    /// (`Worker::attach_in_process`): no token, no network.
    pub fn in_process_attach(&self) -> Arc<dyn stoke_proto::InProcessAttach> {
        Arc::new(workers::WorkerApi {
            registry: self.registry.clone(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve workers and the admin API and deliver events until `shutdown`.
    /// Shutdown order: stop pulling, let in-flight invocations finish (up to
    /// the grace period; the rest are released to JetStream), detach the
    /// workers, stop the server.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DispatcherError> {
        let addr = self.local_addr().map_err(|e| DispatcherError::Serve(e.into()))?;
        let pullers = pull::Pullers::new(
            ctx::Shared {
                nats: self.nats.clone(),
                js: async_nats::jetstream::new(self.nats.clone()),
                store: self.store.clone(),
                registry: self.registry.clone(),
                worker_wait: Duration::from_secs(self.opts.worker_wait_secs),
                answer_slack: Duration::from_secs(self.opts.answer_slack_secs),
                progress_every: Duration::from_secs(self.opts.progress_secs.max(1)),
                metrics: self.metrics.clone(),
                local_results: self.local_results.clone(),
                secrets: self.secrets.clone(),
            },
            self.catalog.clone(),
        );
        let invoker = Invoker::new(
            self.nats.clone(),
            self.store.clone(),
            self.opts.max_payload_bytes,
            Duration::from_secs(self.opts.answer_slack_secs),
        );
        invoker.share_catalog(self.catalog.clone());
        invoker.share_results(self.local_results.clone());
        // Ends long-lived admin streams (log tails) before the server stops.
        let server_stop = CancellationToken::new();
        let admin = stoke_api::AdminApi {
            store: self.store.clone(),
            js: async_nats::jetstream::new(self.nats.clone()),
            streams: self.streams.clone(),
            invoker,
            limits: stoke_core::package::Limits::default(),
            secrets: self.secrets.clone(),
            handles: handles::of(&pullers, &self.registry, async_nats::jetstream::new(self.nats.clone())),
            insecure_registries: self.opts.insecure_registries.clone(),
            stop: server_stop.clone(),
        }
        .into_service(self.auth.clone(), MAX_MESSAGE);
        let worker_api = stoke_api::Guarded::new(
            WorkerServiceServer::new(workers::WorkerApi {
                registry: self.registry.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
            self.auth.clone(),
            workers::ACCESS,
        );

        // Standard gRPC health checking and reflection, open to every caller
        // (no token), so load balancers, grpcurl and other generic clients
        // work without the .proto files.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<stoke_api::AdminService>().await;
        health
            .set_serving::<stoke_api::Guarded<WorkerServiceServer<workers::WorkerApi>>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stoke_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| DispatcherError::Serve(e.into()))?;

        // TCP_NODELAY on every connection: with Nagle, an invocation sent
        // right after a small message (a result confirmation) waits for the
        // worker's delayed ACK, ~40 ms.
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(self.listener), |s| {
                s.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls.clone() {
            builder = builder.tls_config(tls).map_err(|e| DispatcherError::Serve(e.into()))?;
        }
        let server = builder
            // A worker that stops answering pings (paused, partitioned) is
            // detached within ~10 s; its invocations are then redelivered.
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(worker_api)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, server_stop.clone().cancelled_owned());
        let server = tokio::spawn(server);
        tracing::info!(%addr, tls = self.tls.is_some(), "dispatcher listening (workers + admin API)");
        let metrics_server = self.metrics_listener.map(|listener| {
            let app = metrics::router(
                self.metrics.clone(),
                self.registry.clone(),
                async_nats::jetstream::new(self.nats.clone()),
            );
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening (GET /metrics)");
            }
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(server_stop.clone().cancelled_owned())
                    .into_future(),
            )
        });

        let grace = Duration::from_secs(self.opts.shutdown_grace_secs);
        let refresh = Duration::from_secs(self.opts.refresh_secs.max(1));
        pullers.run(shutdown, refresh, grace).await;

        self.registry.detach_all();
        server_stop.cancel();
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DispatcherError::Serve(e.into())),
            Err(e) => Err(DispatcherError::Serve(e.into())),
        }
    }
}
