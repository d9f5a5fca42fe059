//! The server roles: `stoke up` (everything in one process) and
//! `stoke broker|dispatcher|worker` (one role each).
//!
//! Shutdown: the first SIGINT/SIGTERM cancels the shared token (the gateway
//! stops accepting, the dispatcher stops pulling and lets in-flight
//! invocations finish or releases them, workers drain); a second signal
//! exits at once.

pub mod config;
mod nats_server;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use stoke_broker::Broker;
use stoke_dispatcher::Dispatcher;
use stoke_worker::Worker;
use tokio_util::sync::CancellationToken;

use config::{Config, NatsTlsOptions, ensure_dir};
use nats_server::NatsServer;
use stoke_proto::tls::TlsFailure;

type RoleFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Cancel `token` on the first SIGINT/SIGTERM; exit on the second.
fn handle_signals(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down (in-flight invocations finish first; signal again to exit now)");
        token.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Connect to NATS at `url`: one server, or a cluster's servers separated
/// by commas (the client moves to another when one goes away), over TLS as
/// `[nats_tls]` and the URL's `tls://` say.
async fn connect_nats(url: &str, tls: &NatsTlsOptions) -> anyhow::Result<async_nats::Client> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .with_context(|| format!("invalid NATS URL {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!servers.is_empty(), "no NATS URL given");
    // The files are checked here, and a first attempt is made in the
    // foreground: the connection retried in the background (below, so
    // that the roles may start before NATS) would only log "IO error"
    // again and again for a certificate it does not trust.
    if let Some(ca) = &tls.ca_file {
        stoke_proto::tls::check_pem("[nats_tls] CA certificate", ca)?;
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            stoke_proto::tls::check_pem("[nats_tls] certificate", cert)?;
            stoke_proto::tls::check_pem("[nats_tls] private key", key)?;
        }
        (None, None) => {}
        _ => anyhow::bail!("[nats_tls] needs both cert_file and key_file, or neither"),
    }
    let any_tls = tls.ca_file.is_some() || tls.cert_file.is_some();
    let options = || {
        let mut options = async_nats::ConnectOptions::new()
            .name("stoke")
            .connection_timeout(std::time::Duration::from_secs(5))
            // Set up for TLS: never plaintext, whatever the URL says.
            .require_tls(any_tls);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options
    };
    let shown = stoke_store::redact_url(url);
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), options().connect(servers.clone()));
    match first.await {
        Ok(Ok(client)) => return Ok(client),
        Ok(Err(e)) => {
            let why = stoke_proto::tls::chain(&e);
            // async-nats speaks TLS whenever either side asks for it, so a
            // failure that reads as TLS is one.
            let fix = match stoke_proto::tls::TlsFailure::classify(true, &why) {
                Some(TlsFailure::Untrusted) => {
                    Some("the server's certificate is not trusted: [nats_tls] ca_file names the CA that signed it")
                }
                Some(TlsFailure::WrongName) => {
                    Some("the server's certificate does not name the host in the NATS URL: dial a name it lists")
                }
                Some(TlsFailure::ServerNotTls) => {
                    Some("the server does not speak TLS: give it a tls {} block, or drop [nats_tls]")
                }
                Some(TlsFailure::ServerMaybeTls) | None => None,
            };
            if let Some(fix) = fix {
                anyhow::bail!("cannot connect to NATS at {shown}: {why} ({fix})");
            }
            tracing::warn!(nats = %shown, error = %why, "NATS not reachable yet; retrying in the background");
        }
        Err(_) => tracing::warn!(nats = %shown, "NATS not reachable within 5 s; retrying in the background"),
    }
    options()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .with_context(|| format!("cannot connect to NATS at {shown}"))
}

async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn stoke_store::Store>> {
    let url = cfg.store_url();
    stoke_store::open(&url)
        .await
        .with_context(|| format!("cannot open the store at {}", stoke_store::redact_url(&url)))
}

/// Run roles until shutdown; if one fails, stop the others and report it.
async fn run_roles(token: CancellationToken, roles: Vec<(&'static str, RoleFuture)>) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for (name, fut) in roles {
        set.spawn(async move { (name, fut.await) });
    }
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        let (name, result) = joined.context("a role panicked")?;
        if let Err(e) = result {
            tracing::error!(role = name, error = %format!("{e:#}"), "role failed; stopping");
            token.cancel();
            first_err.get_or_insert(e.context(format!("{name} failed")));
        } else if !token.is_cancelled() {
            tracing::error!(role = name, "role stopped unexpectedly; stopping");
            token.cancel();
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Where a server role says where it listens: plain lines on stdout, or
/// (with `--log-json`) one JSON log event with the same facts as fields, so
/// everything a JSON log collector reads is JSON.
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub json: bool,
}

/// `stoke up`.
pub async fn up(mut cfg: Config, announce: Announce) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir();
    ensure_dir(&data_dir)?;
    let token = CancellationToken::new();
    handle_signals(token.clone());

    let nats_server = match &cfg.nats_url {
        Some(_) => None,
        None => Some(NatsServer::start(&cfg.nats_server, &data_dir).await?),
    };
    // [nats_tls] is for a server of one's own choosing: the one started
    // here listens on loopback, in plaintext.
    let own_tls = match nats_server {
        Some(_) => NatsTlsOptions::default(),
        None => cfg.nats_tls.clone(),
    };
    let nats_url = cfg
        .nats_url
        .clone()
        .or_else(|| nats_server.as_ref().map(|s| s.url.clone()))
        .expect("one of the two");
    // Our own nats-server is supervised: if it dies, everything stops with
    // its log; otherwise it is stopped after the roles are done.
    let stop_nats = CancellationToken::new();
    let supervisor = nats_server.map(|server| {
        let (token, stop) = (token.clone(), stop_nats.clone());
        tokio::spawn(async move {
            let result = server.supervise(stop).await;
            if result.is_err() {
                token.cancel();
            }
            result
        })
    });
    let result = async {
        let nats = connect_nats(&nats_url, &own_tls).await?;
        let store = open_store(&cfg).await?;
        let dispatcher =
            Dispatcher::build(cfg.dispatcher.clone(), cfg.streams.clone(), nats.clone(), store.clone()).await?;
        let admin = dispatcher.local_addr()?;
        cfg.attach_worker_to(admin);
        let admin = admin_address(&cfg, admin);
        if cfg.worker.token.is_empty() {
            cfg.worker.token = dispatcher.local_worker_token();
        }
        let mut broker = Broker::build(&cfg.broker, &cfg.streams, nats.clone(), store).await?;
        // The admin API that changes functions is in this process: the
        // gateway may remember current versions (stale at every change).
        broker.share_catalog(dispatcher.catalog_changes());
        broker.share_results(dispatcher.local_results());
        let http = broker.url()?;
        // Metrics on the gateway, unless they have a listener of their own.
        let metrics = match dispatcher.metrics_addr() {
            Some(addr) => format!("http://{addr}/metrics"),
            None => {
                broker = broker.with_routes(dispatcher.metrics_router());
                format!("{http}/metrics")
            }
        };
        let mut worker = Worker::build(cfg.worker.clone()).await?;
        worker.attach_in_process(dispatcher.in_process_attach());
        let store_url = stoke_store::redact_url(&cfg.store_url());
        if announce.json {
            tracing::info!(
                %http,
                %admin,
                %metrics,
                nats = %nats_url,
                store = %store_url,
                worker = %worker.id(),
                slots = cfg.worker.slots,
                "stoke is up"
            );
        } else {
            println!("stoke is up");
            println!("  HTTP gateway  {http}   (POST /fn/<name>)");
            println!("  admin API     {admin}   (STOKE_ADMIN for the CLI)");
            println!("  metrics       {metrics}");
            println!("  NATS          {nats_url}");
            println!("  store         {store_url}");
            println!("  worker        {} ({} slots)", worker.id(), cfg.worker.slots);
            println!("Ctrl-C stops; in-flight invocations finish first.");
        }
        let (t1, t2, t3) = (token.clone(), token.clone(), token.clone());
        run_roles(
            token.clone(),
            vec![
                ("broker", Box::pin(async move { Ok(broker.run(t1).await?) })),
                ("dispatcher", Box::pin(async move { Ok(dispatcher.run(t2).await?) })),
                ("worker", Box::pin(async move { Ok(worker.run(t3).await?) })),
            ],
        )
        .await
    }
    .await;
    stop_nats.cancel();
    if let Some(supervisor) = supervisor {
        supervisor.await.context("nats-server supervisor panicked")??;
    }
    result
}

/// `stoke broker`.
pub async fn broker(cfg: Config, announce: Announce) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    handle_signals(token.clone());
    let nats = connect_nats(&nats_url(&cfg), &cfg.nats_tls).await?;
    let store = open_store(&cfg).await?;
    let broker = Broker::build(&cfg.broker, &cfg.streams, nats, store).await?;
    let http = broker.url()?;
    if announce.json {
        tracing::info!(%http, "stoke broker is up");
    } else {
        println!("stoke broker: HTTP gateway on {http}");
    }
    run_roles(
        token.clone(),
        vec![("broker", Box::pin(async move { Ok(broker.run(token).await?) }))],
    )
    .await
}

/// `stoke dispatcher`.
pub async fn dispatcher(cfg: Config, announce: Announce) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    handle_signals(token.clone());
    let nats = connect_nats(&nats_url(&cfg), &cfg.nats_tls).await?;
    let store = open_store(&cfg).await?;
    let d = Dispatcher::build(cfg.dispatcher.clone(), cfg.streams.clone(), nats, store).await?;
    let admin = admin_address(&cfg, d.local_addr()?);
    let metrics = d.metrics_addr().map(|a| format!("http://{a}/metrics"));
    if announce.json {
        tracing::info!(%admin, metrics = metrics.as_deref().unwrap_or(""), "stoke dispatcher is up");
    } else {
        println!("stoke dispatcher: workers and admin API on {admin}");
        if let Some(m) = &metrics {
            println!("  metrics on {m}");
        }
    }
    run_roles(
        token.clone(),
        vec![("dispatcher", Box::pin(async move { Ok(d.run(token).await?) }))],
    )
    .await
}

/// `stoke worker`.
pub async fn worker(cfg: Config, announce: Announce) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    handle_signals(token.clone());
    ensure_dir(&cfg.worker.data_dir)?;
    let w = Worker::build(cfg.worker.clone()).await?;
    if announce.json {
        tracing::info!(worker = %w.id(), dispatcher = %cfg.worker.dispatcher, "stoke worker is up");
    } else {
        println!("stoke worker {}: attaching to {}", w.id(), cfg.worker.dispatcher);
    }
    run_roles(
        token.clone(),
        vec![("worker", Box::pin(async move { Ok(w.run(token).await?) }))],
    )
    .await
}

/// The admin API's address as the CLI should be given it: `https://` when
/// the port has TLS.
fn admin_address(cfg: &Config, addr: std::net::SocketAddr) -> String {
    match cfg.dispatcher.tls.cert_file {
        Some(_) => format!("https://{addr}"),
        None => addr.to_string(),
    }
}

fn nats_url(cfg: &Config) -> String {
    cfg.nats_url.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into())
}
