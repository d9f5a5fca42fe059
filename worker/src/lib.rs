//! stoke-worker owns execution: it attaches to a dispatcher over gRPC, keeps
//! warm pools of sandboxes per function version, launches new ones through
//! the single launcher in [`sandbox::launch`], serves each its own Lambda
//! Runtime API endpoint, enforces the timeout, and reports each attempt's
//! outcome with metering (duration, init, peak memory, cold/warm). Function
//! code comes as packages (`packages.rs`) or OCI images (`images.rs`: layers
//! unpacked once, a root per image), fetched from the dispatcher by digest.
//!
//! It must not touch NATS or the store: everything arrives and leaves over
//! the dispatcher stream. A worker that loses its dispatcher kills the
//! sandboxes it was running for it (the dispatcher redelivers).

mod images;
mod invoke;
mod outbox;
mod packages;
mod pool;
mod relay;
pub mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoke_proto::worker_service_client::WorkerServiceClient;
use stoke_proto::{
    DispatcherMessage, Drain, Heartbeat, Invocation, WarmSet, WorkerHello, WorkerMessage, dispatcher_message,
    worker_message,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Worker settings (the `[worker]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerOptions {
    /// gRPC address of the dispatcher to attach to; several, separated by
    /// commas, to fail over (the worker attaches to one at a time, starting
    /// at one picked by its id so workers spread out, and moves to the next
    /// when it loses it).
    pub dispatcher: String,
    /// Where packages are cached and sandboxes keep their scratch space.
    pub data_dir: PathBuf,
    /// Invocations run at once.
    pub slots: u32,
    /// Memory offered to sandboxes, in MB.
    pub memory_mb: u64,
    /// An idle warm sandbox is stopped after this many seconds (scale to zero).
    pub idle_ttl_secs: f64,
    /// Stable id of this worker; random when empty.
    pub id: String,
    /// Largest response a function may return, in bytes.
    pub max_response_bytes: usize,
    /// Largest response a function may stream to a caller waiting on it
    /// (a function URL in stream mode), in bytes; its first
    /// `max_response_bytes` are also kept as the invocation's result.
    pub max_stream_bytes: usize,
    /// Output (stdout + stderr) per invocation that is kept, in bytes: sent
    /// to the dispatcher for `stoke logs` (and to the worker's log); the
    /// rest is read and dropped, one line marks the cut, and a warning in
    /// the worker's log gives the count.
    pub log_cap_bytes: u64,
    /// Also write every line of function output to the worker's own log
    /// (target `stoke::function`, with function, sandbox and invocation),
    /// as well as to the dispatcher for `stoke logs`.
    pub output_to_worker_log: bool,
    /// `strict` (default): every sandbox gets cgroup limits, and a host
    /// that cannot provide them makes the worker refuse to start. `none`:
    /// no isolation at all, for development only.
    pub sandbox: SandboxMode,
    /// Processes (and threads) one sandbox may run at once.
    pub max_pids: u32,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// Make cgroup attaches cheap host-wide (the kernel's `favordynmods`;
    /// see `sandbox::cgroup::favor_dynamic_changes`): ~11–16 ms off every
    /// cold start here, for slightly dearer forks and exits on the host.
    pub favor_dynmods: bool,
    /// API token with the `worker` role (or an all-namespace admin), sent
    /// when attaching; needed when the dispatcher requires tokens. Prefer
    /// `STOKE_WORKER__TOKEN` over the config file.
    pub token: String,
    /// PEM file of the CA(s) that signed the dispatchers' certificates, for
    /// `https://` dispatcher addresses (without it: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// First host uid/gid of the range sandboxes run as, one id per live
    /// sandbox, seen as 65534 inside (`sandbox::ids`). No host user, group
    /// or subordinate id range (/etc/subuid, /etc/subgid) may fall in it:
    /// the worker checks at start.
    pub uid_range_start: u32,
    /// How many ids the range holds: at least as many as sandboxes may live
    /// at once.
    pub uid_range_size: u32,
}

/// What a worker asks its dispatcher for beside the `Attach` stream
/// (packages): over gRPC, or straight in the dispatcher's own process.
#[derive(Clone)]
pub enum DispatcherClient {
    Remote(
        WorkerServiceClient<
            tonic::service::interceptor::InterceptedService<tonic::transport::Channel, stoke_proto::BearerToken>,
        >,
    ),
    InProcess(Arc<dyn stoke_proto::InProcessAttach>),
}

impl DispatcherClient {
    /// The package with this digest, in chunks.
    pub async fn fetch_package(
        &mut self,
        digest: &str,
    ) -> Result<stoke_proto::MessageStream<stoke_proto::PackageChunk>, tonic::Status> {
        match self {
            DispatcherClient::Remote(client) => {
                let request = stoke_proto::FetchPackageRequest {
                    digest: digest.to_string(),
                };
                Ok(Box::pin(client.fetch_package(request).await?.into_inner()))
            }
            DispatcherClient::InProcess(link) => link.fetch_package(digest.to_string()).await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    Strict,
    None,
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SandboxMode, String> {
        match s {
            "strict" => Ok(SandboxMode::Strict),
            "none" => Ok(SandboxMode::None),
            other => Err(format!("unknown sandbox mode {other:?} (strict | none)")),
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            dispatcher: "http://127.0.0.1:50051".into(),
            data_dir: PathBuf::from(".stoke/worker"),
            slots: 64,
            memory_mb: 8192,
            idle_ttl_secs: 300.0,
            id: String::new(),
            max_response_bytes: 6 << 20,
            max_stream_bytes: 200 << 20,
            log_cap_bytes: 1 << 20,
            output_to_worker_log: true,
            sandbox: SandboxMode::Strict,
            max_pids: 1024,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            favor_dynmods: true,
            token: String::new(),
            ca_file: None,
            uid_range_start: 200_000,
            uid_range_size: 65_536,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("invalid dispatcher address {0:?}: {1}")]
    Address(String, String),
    #[error("package: {0}")]
    Package(String),
    #[error(
        "cannot sandbox functions on this host: {0}. Run as root on Linux with cgroup v2 (memory, pids, cpu \
         delegated) or v1 (memory, pids, cpu mounted under /sys/fs/cgroup), or pass --sandbox none for \
         development (no isolation)"
    )]
    Sandbox(String),
}

impl stoke_core::Retryable for WorkerError {
    fn is_retryable(&self) -> bool {
        matches!(self, WorkerError::Package(_))
    }
}

const MAX_MESSAGE: usize = 64 << 20;
/// How long a draining worker waits for the dispatcher's `Drained`.
const DRAIN_ANSWER: Duration = Duration::from_secs(5);

pub struct Worker {
    opts: WorkerOptions,
    runner: Arc<invoke::Runner>,
    /// The dispatchers to attach to, in failover order.
    endpoints: Vec<(String, tonic::transport::Endpoint)>,
    /// Results the dispatcher has not confirmed yet, kept across streams.
    outbox: Arc<outbox::Outbox>,
    /// The dispatcher is in this process: its invocation stream goes
    /// through channels (packages are still fetched over gRPC).
    in_process: Option<Arc<dyn stoke_proto::InProcessAttach>>,
}

impl Worker {
    pub async fn build(mut opts: WorkerOptions) -> Result<Worker, WorkerError> {
        // Sandboxes hold the worker's fds (pipes, Runtime API connections):
        // the soft default of 1024 is far too few.
        match sandbox::raise_open_files_limit() {
            Ok(n) => tracing::debug!(limit = n, "open files limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
        }
        // Sandboxes run with their code dir as cwd: every path handed to
        // them must be absolute.
        opts.data_dir =
            std::path::absolute(&opts.data_dir).map_err(|e| WorkerError::DataDir(opts.data_dir.clone(), e))?;
        let endpoints = opts
            .dispatcher
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|addr| {
                let endpoint = stoke_proto::tls::endpoint(addr, opts.ca_file.as_deref())
                    .map_err(|e| WorkerError::Address(addr.to_string(), e.to_string()))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5))
                    // Notice a dispatcher that is gone without closing the connection.
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                Ok((addr.to_string(), endpoint))
            })
            .collect::<Result<Vec<_>, WorkerError>>()?;
        if endpoints.is_empty() {
            return Err(WorkerError::Address(
                opts.dispatcher.clone(),
                "no dispatcher address".into(),
            ));
        }
        let scratch_root = opts.data_dir.join("sandboxes");
        // Scratch left by an earlier run of this worker is garbage now.
        let _ = std::fs::remove_dir_all(&scratch_root);
        std::fs::create_dir_all(&scratch_root).map_err(|e| WorkerError::DataDir(scratch_root.clone(), e))?;
        let packages_dir = opts.data_dir.join("packages");
        let packages =
            packages::PackageCache::new(packages_dir.clone()).map_err(|e| WorkerError::DataDir(packages_dir, e))?;
        let images_dir = opts.data_dir.join("images");
        let images = images::ImageCache::new(images_dir.clone()).map_err(|e| WorkerError::DataDir(images_dir, e))?;
        let worker_id = if opts.id.is_empty() {
            format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
        } else {
            opts.id.clone()
        };
        let (cgroups, seccomp, net, jail) = match opts.sandbox {
            SandboxMode::Strict => {
                let c = sandbox::cgroup::Cgroups::detect(&opts.cgroup_root).map_err(WorkerError::Sandbox)?;
                if opts.favor_dynmods
                    && let Err(e) = sandbox::cgroup::favor_dynamic_changes()
                {
                    tracing::warn!(
                        error = %e,
                        "cgroup attaches stay slow (one RCU grace period, ~10+ ms per cold start)"
                    );
                }
                let filters = sandbox::seccomp::filters().map_err(WorkerError::Sandbox)?;
                let net = sandbox::netns::NetPool::new();
                let root = scratch_root.join("root");
                let ids = sandbox::ids::IdRange::new(opts.uid_range_start, opts.uid_range_size)
                    .map_err(WorkerError::Sandbox)?;
                let jail = sandbox::jail::Jail::prepare(&root, ids)
                    .map_err(|e| WorkerError::Sandbox(format!("laying out {}: {e}", root.display())))?;
                sandbox::probe(&jail, &c, &net, &filters, &scratch_root)
                    .await
                    .map_err(|e| WorkerError::Sandbox(format!("a test sandbox failed: {e}")))?;
                tracing::info!(
                    cgroups = ?c,
                    host_ids = %format!("{}..{}", opts.uid_range_start, u64::from(opts.uid_range_start) + u64::from(opts.uid_range_size)),
                    "sandboxes: namespaces, read-only root, uid 65534 inside (a host id of its own), cgroup limits, seccomp"
                );
                (Some(c), filters, Some(net), Some(jail))
            }
            SandboxMode::None => {
                tracing::warn!(
                    "--sandbox none: functions run as plain child processes of the worker, with no \
                     memory, process or CPU limits and no syscall filter. Never use this for code you \
                     do not trust."
                );
                (None, Vec::new(), None, None)
            }
        };
        let runner = Arc::new(invoke::Runner {
            worker_id,
            pool: pool::WarmPool::new(Duration::from_secs_f64(opts.idle_ttl_secs.max(0.0))),
            packages,
            images,
            scratch_root,
            max_response: opts.max_response_bytes,
            max_stream: opts.max_stream_bytes,
            cgroups,
            max_pids: opts.max_pids,
            seccomp: Arc::new(seccomp),
            net,
            jail,
            log_cap: opts.log_cap_bytes,
            output_to_worker_log: opts.output_to_worker_log,
            shipper: Arc::new(sandbox::output::Shipper::default()),
            provisioned: std::sync::Mutex::new(std::collections::HashMap::new()),
            provisioning: tokio::sync::Mutex::new(()),
        });
        Ok(Worker {
            opts,
            runner,
            endpoints,
            outbox: Arc::new(outbox::Outbox::default()),
            in_process: None,
        })
    }

    /// Attach to a dispatcher in this same process (`stoke up`) through
    /// `link` rather than over loopback gRPC; `dispatcher` (its address)
    /// must still be set, for package downloads.
    pub fn attach_in_process(&mut self, link: Arc<dyn stoke_proto::InProcessAttach>) {
        self.in_process = Some(link);
    }

    pub fn id(&self) -> &str {
        &self.runner.worker_id
    }

    /// Attach to the dispatcher (reconnecting with backoff) until `shutdown`;
    /// then finish in-flight invocations and stop every sandbox.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let reaper = tokio::spawn({
            let runner = self.runner.clone();
            let every = Duration::from_secs_f64((self.opts.idle_ttl_secs / 2.0).clamp(0.05, 1.0));
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    let n = runner.pool.reap();
                    if n > 0 {
                        tracing::debug!(stopped = n, "idle sandboxes scaled down");
                    }
                }
            }
        });
        let mut backoff = Duration::from_millis(100);
        // Workers spread over the dispatchers: each starts at one picked by
        // its id, and moves on to the next when it loses it.
        let n = self.endpoints.len();
        let mut at = self
            .runner
            .worker_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
            % n;
        let mut failed_in_a_row = 0;
        while !shutdown.is_cancelled() {
            let (addr, endpoint) = &self.endpoints[at];
            let mut attached = false;
            match self.attach_once(addr, endpoint, &shutdown, &mut attached).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(dispatcher = %addr, error = %e, "dispatcher lost or unreachable");
                    at = (at + 1) % n;
                    failed_in_a_row = if attached { 1 } else { failed_in_a_row + 1 };
                    if attached {
                        backoff = Duration::from_millis(100);
                    }
                    // Another dispatcher to try: at once.
                    if failed_in_a_row < n {
                        continue;
                    }
                    failed_in_a_row = 0;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        reaper.abort();
        self.runner.pool.clear();
        if let Some(c) = &self.runner.cgroups {
            // Give the sandboxes just dropped a moment to be removed.
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.remove();
        }
        tracing::info!(worker = %self.runner.worker_id, "worker stopped");
        Ok(())
    }

    /// One attachment: returns when the stream ends or on shutdown.
    async fn attach_once(
        &self,
        addr: &str,
        endpoint: &tonic::transport::Endpoint,
        shutdown: &CancellationToken,
        attached: &mut bool,
    ) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel::<WorkerMessage>(1024);
        let hello = WorkerMessage {
            msg: Some(worker_message::Msg::Hello(WorkerHello {
                worker_id: self.runner.worker_id.clone(),
                slots: self.opts.slots,
                memory_mb: self.opts.memory_mb,
                hostname: hostname(),
            })),
        };
        tx.send(hello)
            .await
            .map_err(|_| tonic::Status::internal("stream closed"))?;
        // Results a previous stream may not have delivered: the dispatcher
        // records them as fenced (their attempts were given up on).
        for late in self.outbox.unconfirmed() {
            let _ = tx.try_send(WorkerMessage {
                msg: Some(worker_message::Msg::Result(late)),
            });
        }
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let (client, mut inbound) = match &self.in_process {
            Some(link) => (
                DispatcherClient::InProcess(link.clone()),
                link.attach(Box::pin(outbound.map(Ok))).await?,
            ),
            None => {
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| tonic::Status::unavailable(stoke_proto::tls::describe(addr, &e)))?;
                let bearer = stoke_proto::BearerToken::new(&self.opts.token)
                    .map_err(|_| tonic::Status::invalid_argument("the worker token is not valid header text"))?;
                let mut client = WorkerServiceClient::with_interceptor(channel, bearer)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let inbound: stoke_proto::MessageStream<DispatcherMessage> =
                    Box::pin(client.attach(outbound).await?.into_inner());
                (DispatcherClient::Remote(client), inbound)
            }
        };
        tracing::info!(worker = %self.runner.worker_id, dispatcher = %addr, "attached to dispatcher");
        *attached = true;
        // Function output goes up this stream from now on.
        self.runner.shipper.attach(tx.clone());

        let in_flight = TaskTracker::new();
        let lost = CancellationToken::new();
        let running = Arc::new(Running {
            runner: self.runner.clone(),
            tx: tx.clone(),
            lost: lost.clone(),
            client: client.clone(),
            outbox: self.outbox.clone(),
            in_flight: in_flight.clone(),
            relay: relay::Relay::default(),
        });
        let mut heartbeat = tokio::time::interval(Duration::from_secs(2));
        // Shutting down: Drain sent at, and whether the dispatcher answered
        // (after which nothing new comes down the stream).
        let mut draining: Option<tokio::time::Instant> = None;
        let mut drained = false;
        let end = loop {
            tokio::select! {
                msg = inbound.next() => match msg.transpose() {
                    Ok(Some(DispatcherMessage { msg: Some(dispatcher_message::Msg::Invoke(inv)) })) => {
                        // Now, or once the invocation it follows ends.
                        if let Some(inv) = running.relay.arrive(inv) {
                            running.start(inv, None);
                        }
                    }
                    Ok(Some(DispatcherMessage { msg: Some(dispatcher_message::Msg::Received(r)) })) => {
                        self.outbox.confirm(&r.invocation_id, r.epoch);
                    }
                    Ok(Some(DispatcherMessage { msg: Some(dispatcher_message::Msg::Drained(_)) })) => {
                        tracing::info!(in_flight = in_flight.len(), "dispatcher sends nothing new; finishing in-flight work");
                        drained = true;
                        in_flight.close();
                    }
                    Ok(Some(DispatcherMessage { msg: Some(dispatcher_message::Msg::Provision(p)) })) => {
                        if let Some(spec) = p.function {
                            self.runner.set_provision(spec, p.min_warm);
                            let (runner, mut client) = (self.runner.clone(), client.clone());
                            tokio::spawn(async move { runner.top_up(&mut client).await });
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break Err(tonic::Status::unavailable("dispatcher closed the stream")),
                    Err(s) => break Err(s),
                },
                _ = heartbeat.tick() => {
                    let warm = self.runner.pool.idle_counts().into_iter()
                        .map(|(function, version, idle)| WarmSet { function, version, idle }).collect();
                    let hb = Heartbeat { busy: in_flight.len() as u32, warm };
                    let _ = tx.try_send(WorkerMessage { msg: Some(worker_message::Msg::Heartbeat(hb)) });
                    // Replace provisioned sandboxes that died or were used up.
                    let (runner, mut client) = (self.runner.clone(), client.clone());
                    tokio::spawn(async move { runner.top_up(&mut client).await });
                }
                // Stop new work first; what was sent before the dispatcher
                // knew still runs.
                _ = shutdown.cancelled(), if draining.is_none() => {
                    tracing::info!(in_flight = in_flight.len(), "draining: asking the dispatcher for no new work");
                    let _ = tx.send(WorkerMessage { msg: Some(worker_message::Msg::Drain(Drain {})) }).await;
                    draining = Some(tokio::time::Instant::now());
                }
                _ = in_flight.wait(), if drained => break Ok(()),
                _ = tokio::time::sleep_until(draining.map_or_else(tokio::time::Instant::now, |t| t + DRAIN_ANSWER)),
                    if draining.is_some() && !drained => {
                    tracing::warn!(?DRAIN_ANSWER, "the dispatcher did not confirm the drain; finishing in-flight work");
                    break Ok(());
                }
            }
        };
        in_flight.close();
        match end {
            Ok(()) => {
                // Drain: in-flight invocations finish and report.
                tracing::info!(in_flight = in_flight.len(), "draining worker");
                in_flight.wait().await;
                drop(running);
                self.runner.shipper.detach();
                // End our half of the stream so the results just queued are
                // delivered, then wait for the dispatcher to close its half:
                // dropping the response stream first would reset the call
                // and lose them.
                drop(tx);
                let closed = async { while let Some(Ok(_)) = inbound.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
                Ok(())
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), in_flight = in_flight.len(), "lost dispatcher; killing its sandboxes");
                self.runner.shipper.detach();
                lost.cancel();
                in_flight.wait().await;
                drop(running);
                Err(status)
            }
        }
    }
}

/// What the invocations of one attachment share.
struct Running {
    runner: Arc<invoke::Runner>,
    tx: mpsc::Sender<WorkerMessage>,
    /// The dispatcher is gone: kill what runs, start nothing more.
    lost: CancellationToken,
    client: DispatcherClient,
    outbox: Arc<outbox::Outbox>,
    in_flight: TaskTracker,
    relay: relay::Relay,
}

impl Running {
    /// Run `inv` in its own task (on `handed` if that fits), then start the
    /// invocation queued to follow it on the sandbox it leaves warm (before
    /// reporting, so its slot does not wait for that), then send the result.
    fn start(self: &Arc<Self>, mut inv: Invocation, handed: Option<invoke::Warm>) {
        let this = self.clone();
        // Both forms of the trace, settled once (the log and the function agree).
        let trace = invoke::trace_of(&inv);
        (inv.trace_id, inv.traceparent) = (trace.xray(), trace.traceparent());
        let span = tracing::info_span!(
            "invocation",
            id = %inv.invocation_id,
            function = %inv.function.as_ref().map_or("", |f| f.name.as_str()),
            trace_id = %trace.trace_id(),
        );
        self.in_flight.spawn(tracing::Instrument::instrument(
            async move {
                let started = (stoke_core::now_ms(), std::time::Instant::now());
                // What a result must echo (the invocation minus its payload).
                let mut head = inv;
                let payload = std::mem::take(&mut head.payload);
                let inv = Invocation {
                    payload,
                    ..head.clone()
                };
                let mut client = this.client.clone();
                let (mut result, warm) = tokio::select! {
                    ran = this.runner.run(inv, &mut client, handed) => ran,
                    // Dropping the run kills its sandbox.
                    _ = this.lost.cancelled() => (outbox::dispatcher_lost(&head, &this.runner.worker_id, started), None),
                };
                if !this.lost.is_cancelled()
                    && let Some(next) = this.relay.ended(&head.invocation_id, head.epoch)
                {
                    this.start(next, warm);
                } else {
                    drop(warm); // back to the pool
                }
                this.outbox.hold(&mut result);
                if !this.lost.is_cancelled() {
                    let _ = this
                        .tx
                        .send(WorkerMessage {
                            msg: Some(worker_message::Msg::Result(result)),
                        })
                        .await;
                }
            },
            span,
        ));
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}
