//! stoke-broker owns the edge: the HTTP gateway (axum, HTTPS optional) and
//! the cron scheduler, which turn the outside world into invocation events
//! through the shared `stoke_bus::Invoker`.
//!
//! It must not run user code, write completions or attempts, or know the
//! dispatcher: it only records that an event was accepted (through the
//! Invoker) and reads results back. What it shares with the dispatcher
//! (streams, the event envelope, ids, auth) lives in stoke-bus and
//! stoke-auth.

mod cors;
pub mod cron;
mod eventstream;
pub mod gateway;
pub mod lambda_api;
mod proxy;
mod streamed;
pub mod tls;

use std::net::SocketAddr;

use axum::serve::ListenerExt as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoke_store::Edge;
use tokio_util::sync::CancellationToken;

use stoke_bus::Invoker;
use stoke_bus::streams::{self, StreamOptions};

/// Broker settings (the `[broker]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerOptions {
    /// Address of the HTTP gateway.
    pub http: SocketAddr,
    /// Largest request payload, in bytes (Lambda's limit: 6 MiB).
    pub max_payload_bytes: usize,
    /// Added to a function's timeout when a synchronous caller waits.
    pub sync_wait_slack_secs: u64,
    pub cron: cron::CronOptions,
    /// HTTPS on the gateway (`[broker.tls]`); plaintext without it.
    pub tls: tls::TlsOptions,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            http: "127.0.0.1:8080".parse().expect("valid default"),
            max_payload_bytes: 6 << 20,
            sync_wait_slack_secs: 30,
            cron: cron::CronOptions::default(),
            tls: tls::TlsOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot bind the HTTP gateway on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot provision the invocation stream: {0}")]
    Stream(async_nats::Error),
    #[error("HTTP gateway failed: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A built broker, ready to serve.
pub struct Broker {
    listener: tokio::net::TcpListener,
    /// HTTPS; None: plaintext.
    tls: Option<tokio_rustls::TlsAcceptor>,
    invoker: Invoker,
    scheduler: Option<cron::Scheduler>,
    /// More routes served beside the gateway's (`stoke up`: `/metrics`).
    extra: Option<axum::Router>,
}

impl Broker {
    /// A broker serving `opts`, on the streams `streams` describes.
    pub async fn build(
        opts: &BrokerOptions,
        streams: &StreamOptions,
        nats: async_nats::Client,
        store: Arc<dyn Edge>,
    ) -> Result<Broker, BrokerError> {
        let tls = tls::acceptor(&opts.tls).map_err(BrokerError::Tls)?;
        let js = async_nats::jetstream::new(nats.clone());
        streams::ensure_invoke_stream(&js, streams)
            .await
            .map_err(BrokerError::Stream)?;
        let listener = tokio::net::TcpListener::bind(opts.http)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: opts.http,
                source,
            })?;
        let invoker = Invoker::new(
            nats,
            store.clone(),
            opts.max_payload_bytes,
            Duration::from_secs(opts.sync_wait_slack_secs),
        );
        let scheduler = opts
            .cron
            .enabled
            .then(|| cron::Scheduler::new(store, invoker.clone(), opts.cron.clone()));
        Ok(Broker {
            listener,
            tls,
            invoker,
            scheduler,
            extra: None,
        })
    }

    /// Serve `routes` on the gateway's listener too (paths must not clash
    /// with the gateway's own).
    pub fn with_routes(mut self, routes: axum::Router) -> Broker {
        self.extra = Some(match self.extra.take() {
            Some(r) => r.merge(routes),
            None => routes,
        });
        self
    }

    /// Remember functions' current versions, stale at every change counted
    /// in `changes` — only where every change that matters is counted
    /// there: `stoke up`, whose dispatcher's admin API bumps it.
    pub fn share_catalog(&self, changes: stoke_core::catalog::CatalogChanges) {
        self.invoker.share_catalog(changes);
    }

    /// Take results straight from the dispatcher of this same process
    /// (`Dispatcher::local_results`) as well as from NATS.
    pub fn share_results(&self, results: stoke_bus::results::LocalResults) {
        self.invoker.share_results(results);
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gateway's base URL (`https://` when it has TLS).
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// Serve until `shutdown`; in-flight requests finish first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        tracing::info!(addr = %self.local_addr().map_err(BrokerError::Serve)?, tls = self.tls.is_some(), "HTTP gateway listening");
        let scheduler = self.scheduler.map(|s| tokio::spawn(s.run(shutdown.clone())));
        let mut app = gateway::router(self.invoker);
        if let Some(extra) = self.extra {
            app = app.merge(extra);
        }
        let stop = shutdown.cancelled_owned();
        let served = match self.tls {
            Some(acceptor) => axum::serve(
                tls::TlsListener::new(self.listener, acceptor),
                app.into_make_service_with_connect_info::<gateway::Peer>(),
            )
            .with_graceful_shutdown(stop)
            .await
            .map_err(BrokerError::Serve),
            None => {
                // Without TCP_NODELAY a response written in two segments waits
                // for the client's delayed ACK: ~40 ms on every keep-alive request.
                let listener = self.listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stop)
                    .await
                    .map_err(BrokerError::Serve)
            }
        };
        if let Some(s) = scheduler {
            let _ = s.await;
        }
        served
    }
}
