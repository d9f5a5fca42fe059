//! Attached workers and placement: the `WorkerService` gRPC side.
//!
//! Each worker holds one bidirectional stream. An invocation is sent down
//! with a fresh epoch; the result must come back with the same epoch while
//! the dispatcher still waits for it, or it is fenced: not used, and its
//! attempt recorded with outcome `fenced`. Every result is confirmed to the
//! worker, which resends unconfirmed ones on its next stream. When a stream
//! ends, every invocation pending on that worker fails with `WorkerLost` so
//! the caller can release the event for redelivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use stoke_proto::MessageStream;
use stoke_proto::worker_service_server::WorkerService;
use stoke_proto::{
    DispatcherMessage, Drained, FetchPackageRequest, FunctionSpec, Invocation, InvocationResult, PackageChunk,
    Provision, ResultReceived, WorkerMessage, dispatcher_message, worker_message,
};
use stoke_store::{AttemptOutcome, AttemptRecord, Store};
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::gate::{Baton, Pass};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no worker with free capacity attached within {0:?}")]
    NoWorker(Duration),
    #[error("worker {worker} was lost before answering")]
    WorkerLost { worker: String, epoch: u64 },
    #[error("worker {worker} did not answer in time")]
    NoAnswer { worker: String, epoch: u64 },
}

type Outbox = mpsc::Sender<Result<DispatcherMessage, Status>>;

/// A result, with receivers that fire once its invocation's output chunks
/// are stored.
type Answer = (InvocationResult, Vec<oneshot::Receiver<()>>);

/// An invocation sent to a worker and waited for.
struct Pending {
    epoch: u64,
    answer: oneshot::Sender<Answer>,
    /// Its output chunks being stored.
    output: Vec<oneshot::Receiver<()>>,
    /// Another invocation was sent to run after it (`gate::Pass::after`).
    followed: Arc<AtomicBool>,
}

pub struct WorkerHandle {
    pub id: String,
    pub slots: u32,
    memory_mb: u64,
    hostname: String,
    attached_ms: i64,
    /// Invocations sent and not back, including those queued to run after
    /// another (`queued`): the load is `busy - queued`.
    busy: AtomicU32,
    queued: AtomicU32,
    tx: Outbox,
    pending: Mutex<HashMap<String, Pending>>,
    /// Idle warm sandboxes per (function, version), as far as we know.
    warm: Mutex<HashMap<(String, u32), u32>>,
    /// The provisioned share last sent, per function: (version, min_warm).
    provisioned: Mutex<HashMap<String, (u32, u32)>>,
    /// Shutting down: gets no new invocations (nor provisioned shares).
    draining: AtomicBool,
}

impl WorkerHandle {
    /// Hand a result to the dispatch waiting for it; a result nobody waits
    /// for (its attempt was given up on) is returned: it is fenced.
    fn complete(&self, r: InvocationResult) -> Option<InvocationResult> {
        let mut pending = self.pending.lock().expect("not poisoned");
        match pending.get(&r.invocation_id) {
            Some(p) if p.epoch == r.epoch => {
                let p = pending.remove(&r.invocation_id).expect("present");
                // A waiter that is gone (shutdown) makes it fenced too.
                p.answer.send((r, p.output)).err().map(|(r, _)| r)
            }
            _ => Some(r),
        }
    }

    /// Store a chunk of output; when its invocation is waited for here, the
    /// wait includes storing it.
    fn output(&self, publisher: &crate::logs::Publisher, chunk: stoke_proto::LogChunk) {
        let Some(stored) = publisher.submit(&chunk) else { return };
        if let Some(p) = self.pending.lock().expect("not poisoned").get_mut(&chunk.invocation_id) {
            p.output.push(stored);
        }
    }

    /// Slots in use: invocations sent, less those queued behind another.
    fn load(&self) -> u32 {
        let queued = self.queued.load(Ordering::Relaxed);
        self.busy.load(Ordering::Relaxed).saturating_sub(queued)
    }

    fn warm_for(&self, function: &str, version: u32) -> u32 {
        let warm = self.warm.lock().expect("not poisoned");
        warm.get(&(function.to_string(), version)).copied().unwrap_or(0)
    }

    fn adjust_warm(&self, function: &str, version: u32, delta: i32) {
        let mut warm = self.warm.lock().expect("not poisoned");
        let e = warm.entry((function.to_string(), version)).or_insert(0);
        *e = e.saturating_add_signed(delta);
    }
}

fn worker_info(w: &WorkerHandle) -> stoke_proto::WorkerInfo {
    let mut warm: Vec<_> = w
        .warm
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|((function, version), idle)| stoke_proto::WarmFunction {
            function: function.clone(),
            version: *version,
            idle: *idle,
        })
        .collect();
    warm.sort_by(|a, b| (&a.function, a.version).cmp(&(&b.function, b.version)));
    stoke_proto::WorkerInfo {
        id: w.id.clone(),
        hostname: w.hostname.clone(),
        slots: w.slots,
        busy: w.load(),
        memory_mb: w.memory_mb,
        draining: w.draining.load(Ordering::Relaxed),
        attached_unix_ms: w.attached_ms,
        warm,
    }
}

/// The workers attached to this dispatcher.
pub struct Registry {
    workers: Mutex<Vec<Arc<WorkerHandle>>>,
    /// Functions with a `min_warm`, as the current versions say.
    provision_targets: Mutex<Vec<(FunctionSpec, u32)>>,
    changed: Notify,
    next_epoch: AtomicU64,
    store: Arc<dyn Store>,
    /// How long a worker may stay silent before it is taken for lost.
    heartbeat_timeout: Duration,
    /// Stores the function output workers send.
    logs: crate::logs::Publisher,
    /// Where streamed responses' parts are published for their callers
    /// elsewhere, after those here are handed theirs.
    nats: async_nats::Client,
    local_results: stoke_bus::results::LocalResults,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        heartbeat_timeout: Duration,
        logs: crate::logs::Publisher,
        nats: async_nats::Client,
        local_results: stoke_bus::results::LocalResults,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            workers: Mutex::new(Vec::new()),
            provision_targets: Mutex::new(Vec::new()),
            changed: Notify::new(),
            // Epochs grow across restarts: start from the clock.
            next_epoch: AtomicU64::new(stoke_core::now_ms() as u64 * 1000),
            store,
            heartbeat_timeout,
            logs,
            nats,
            local_results,
        })
    }

    /// Wait until at least one worker (not draining) is attached.
    pub async fn wait_for_worker(&self) {
        loop {
            let changed = self.changed.notified();
            let any = self
                .workers
                .lock()
                .expect("not poisoned")
                .iter()
                .any(|w| !w.draining.load(Ordering::Relaxed));
            if any {
                return;
            }
            changed.await;
        }
    }

    /// Close every worker stream (dispatcher shutdown).
    /// What the admin API shows of each attached worker.
    pub fn snapshot(&self) -> Vec<stoke_proto::WorkerInfo> {
        let workers = self.workers.lock().expect("not poisoned").clone();
        workers.iter().map(|w| worker_info(w)).collect()
    }

    /// Place no more work on worker `id` (in-flight work finishes); its
    /// provisioned share goes to the others. None if it is not attached here.
    pub fn cordon(&self, id: &str) -> Option<stoke_proto::WorkerInfo> {
        let worker = self
            .workers
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|w| w.id == id)
            .cloned()?;
        if !worker.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(worker = %id, "worker drained by the admin API");
            self.rebalance();
        }
        Some(worker_info(&worker))
    }

    pub fn detach_all(&self) {
        self.workers.lock().expect("not poisoned").clear();
        self.changed.notify_waiters();
    }

    fn remove(&self, handle: &Arc<WorkerHandle>) {
        self.workers
            .lock()
            .expect("not poisoned")
            .retain(|w| !Arc::ptr_eq(w, handle));
        // Dropping the senders wakes every waiter with WorkerLost.
        handle.pending.lock().expect("not poisoned").clear();
        self.changed.notify_waiters();
        self.rebalance();
    }

    /// Set the functions to keep provisioned (`min_warm` of their current
    /// version) and tell the workers their shares.
    pub fn provision(&self, targets: Vec<(FunctionSpec, u32)>) {
        *self.provision_targets.lock().expect("not poisoned") = targets;
        self.rebalance();
    }

    /// Split each function's `min_warm` across the attached workers (in
    /// worker id order, the remainder to the first ones) and send every
    /// share that changed, 0 for a function no longer provisioned.
    fn rebalance(&self) {
        let targets = self.provision_targets.lock().expect("not poisoned").clone();
        let mut workers = self.workers.lock().expect("not poisoned").clone();
        workers.retain(|w| !w.draining.load(Ordering::Relaxed));
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        for (i, w) in workers.iter().enumerate() {
            let mut sent = w.provisioned.lock().expect("not poisoned");
            let mut want: HashMap<String, (u32, u32, &FunctionSpec)> = HashMap::new();
            for (spec, n) in &targets {
                let share = share_of(*n, workers.len(), i);
                if share > 0 || sent.contains_key(&spec.name) {
                    want.insert(spec.name.clone(), (spec.version, share, spec));
                }
            }
            // Functions provisioned before and not now (deleted, or min_warm
            // gone from the current version): end them.
            let ended: Vec<String> = sent.keys().filter(|f| !want.contains_key(*f)).cloned().collect();
            for function in ended {
                let (version, _) = sent.remove(&function).expect("present");
                let spec = FunctionSpec {
                    name: function,
                    version,
                    ..Default::default()
                };
                let _ = w.tx.try_send(Ok(provision_message(spec, 0)));
            }
            for (function, (version, share, spec)) in want {
                if sent.get(&function) == Some(&(version, share)) {
                    continue;
                }
                let msg = provision_message(spec.clone(), share);
                if w.tx.try_send(Ok(msg)).is_ok() {
                    if share == 0 {
                        sent.remove(&function);
                    } else {
                        sent.insert(function, (version, share));
                    }
                }
            }
        }
    }

    /// Prefer a worker with an idle warm sandbox for this version, then the
    /// least loaded one with a free slot.
    fn pick(&self, function: &str, version: u32) -> Option<Arc<WorkerHandle>> {
        let workers = self.workers.lock().expect("not poisoned");
        let free = workers
            .iter()
            .filter(|w| w.load() < w.slots && !w.draining.load(Ordering::Relaxed));
        let best = free
            .map(|w| {
                let load = f64::from(w.load()) / f64::from(w.slots.max(1));
                (w.warm_for(function, version) > 0, load, w)
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))?;
        let w = best.2.clone();
        w.busy.fetch_add(1, Ordering::Relaxed);
        if best.0 {
            w.adjust_warm(function, version, -1);
        }
        Some(w)
    }

    /// The worker running `after`'s invocation, if it still does (as far
    /// as we know) and takes work: it gets the follower, counted as queued.
    fn follow(&self, after: &Baton) -> Option<Arc<WorkerHandle>> {
        let workers = self.workers.lock().expect("not poisoned");
        let w = workers
            .iter()
            .find(|w| w.id == after.worker && !w.draining.load(Ordering::Relaxed))?;
        let pending = w.pending.lock().expect("not poisoned");
        let running = pending.get(&after.invocation_id).filter(|p| p.epoch == after.epoch)?;
        if running.followed.swap(true, Ordering::Relaxed) {
            return None;
        }
        w.busy.fetch_add(1, Ordering::Relaxed);
        w.queued.fetch_add(1, Ordering::Relaxed);
        Some(w.clone())
    }

    /// Send `inv` to a worker and wait for its result. Waits up to
    /// `wait_for_worker` for capacity, and up to `answer_within` for the
    /// answer once sent. With a baton (`pass.after()`), it goes to the
    /// worker running that invocation, to run after it there (and may take
    /// as long again to answer); if that one is over, it is placed as any.
    pub(crate) async fn dispatch(
        &self,
        mut inv: Invocation,
        wait_for_worker: Duration,
        mut answer_within: Duration,
        pass: &Pass,
    ) -> Result<InvocationResult, DispatchError> {
        let spec = inv.function.clone().unwrap_or_default();
        let give_up = tokio::time::Instant::now() + wait_for_worker;
        let followed = pass.after().and_then(|after| Some((self.follow(after)?, after)));
        let following = followed.is_some();
        let worker = match followed {
            Some((w, after)) => {
                inv.after_invocation_id = after.invocation_id.clone();
                inv.after_epoch = after.epoch;
                answer_within *= 2;
                w
            }
            None => loop {
                let changed = self.changed.notified();
                if let Some(w) = self.pick(&spec.name, spec.version) {
                    break w;
                }
                if tokio::time::timeout_at(give_up, changed).await.is_err() {
                    return Err(DispatchError::NoWorker(wait_for_worker));
                }
            },
        };
        inv.epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let inv_epoch = inv.epoch;
        let (tx, rx) = oneshot::channel();
        let is_followed = Arc::new(AtomicBool::new(false));
        worker.pending.lock().expect("not poisoned").insert(
            inv.invocation_id.clone(),
            Pending {
                epoch: inv.epoch,
                answer: tx,
                output: Vec::new(),
                followed: is_followed.clone(),
            },
        );
        let id = inv.invocation_id.clone();
        let sent = worker
            .tx
            .send(Ok(DispatcherMessage {
                msg: Some(dispatcher_message::Msg::Invoke(inv)),
            }))
            .await;
        // Only once it is on the stream (ahead of any follower) may another
        // be sent to follow it.
        let _out = sent.is_ok().then(|| {
            pass.sent(
                Baton {
                    worker: worker.id.clone(),
                    invocation_id: id.clone(),
                    epoch: inv_epoch,
                },
                following,
            )
        });
        let (lost, no_answer) = (
            DispatchError::WorkerLost {
                worker: worker.id.clone(),
                epoch: inv_epoch,
            },
            DispatchError::NoAnswer {
                worker: worker.id.clone(),
                epoch: inv_epoch,
            },
        );
        let outcome = match sent {
            Err(_) => Err(lost),
            Ok(()) => match tokio::time::timeout(answer_within, rx).await {
                Ok(Ok((r, output))) => {
                    // The worker sent the output before the result: once it
                    // is stored, whoever sees the completion can read it.
                    crate::logs::wait_stored(output).await;
                    Ok(r)
                }
                Ok(Err(_)) => Err(lost),
                Err(_) => Err(no_answer),
            },
        };
        worker.pending.lock().expect("not poisoned").remove(&id);
        worker.busy.fetch_sub(1, Ordering::Relaxed);
        // Its follower took its slot (and its sandbox), counted from now.
        let follower = is_followed.load(Ordering::Relaxed);
        if follower {
            worker.queued.fetch_sub(1, Ordering::Relaxed);
        }
        if !follower
            && let Ok(r) = &outcome
            && matches!(
                stoke_proto::Outcome::try_from(r.outcome),
                Ok(stoke_proto::Outcome::Success | stoke_proto::Outcome::FunctionError)
            )
        {
            // The sandbox went back to the worker's pool.
            worker.adjust_warm(&spec.name, spec.version, 1);
        }
        self.changed.notify_waiters();
        outcome
    }
}

/// Meter a result that came back after its attempt was given up on, then
/// confirm it to the worker.
fn record_fenced(store: &Arc<dyn Store>, r: InvocationResult, tx: Outbox, confirm: Result<DispatcherMessage, Status>) {
    tracing::warn!(invocation = %r.invocation_id, epoch = r.epoch, attempt = r.attempt, "late result fenced");
    let m = r.metering.clone().unwrap_or_default();
    let outcome = stoke_proto::Outcome::try_from(r.outcome).unwrap_or(stoke_proto::Outcome::PlatformError);
    let record = AttemptRecord {
        invocation_id: r.invocation_id,
        function: r.function,
        version: r.version,
        idempotency_key: r.idempotency_key,
        attempt: r.attempt,
        epoch: r.epoch,
        trigger: String::new(),
        worker: m.worker_id,
        started_ms: m.started_unix_ms,
        ended_ms: m.ended_unix_ms,
        duration_us: m.duration_us,
        memory_mb: r.memory_mb,
        max_memory_used_kb: m.max_memory_used_kb,
        cold: m.cold,
        init_duration_us: m.init_duration_us,
        outcome: AttemptOutcome::Fenced,
        // What the late result was, kept for whoever reads the attempt.
        error_type: Some(r.error.as_ref().map_or_else(
            || format!("Stoke.Fenced.{}", outcome.as_str_name()),
            |e| e.error_type.clone(),
        )),
        error_message: Some(match &r.error {
            Some(e) => format!("late result (fenced): {}", e.error_message),
            None => "late result (fenced): the attempt had been superseded".into(),
        }),
    };
    let store = store.clone();
    tokio::spawn(async move {
        match store.record_fenced(&record).await {
            Ok(()) => {
                let _ = tx.try_send(confirm);
            }
            Err(e) => tracing::warn!(
                invocation = %record.invocation_id,
                error = %e,
                "fenced attempt not metered yet; the worker will send it again"
            ),
        }
    });
}

/// Worker `i` of `workers`' share of `n` provisioned sandboxes.
fn share_of(n: u32, workers: usize, i: usize) -> u32 {
    if workers == 0 {
        return 0;
    }
    let k = workers as u32;
    n / k + u32::from((i as u32) < n % k)
}

fn provision_message(function: FunctionSpec, min_warm: u32) -> DispatcherMessage {
    DispatcherMessage {
        msg: Some(dispatcher_message::Msg::Provision(Provision {
            function: Some(function),
            min_warm,
        })),
    }
}

/// The gRPC face of the registry.
pub struct WorkerApi {
    pub registry: Arc<Registry>,
}

const CHUNK: usize = 1 << 20;

impl WorkerApi {
    /// One attached worker, whichever way it came (gRPC or in process):
    /// register it, read its results, heartbeats and output until it goes,
    /// and return the stream its invocations go down.
    async fn session(
        &self,
        mut inbound: MessageStream<WorkerMessage>,
    ) -> Result<MessageStream<DispatcherMessage>, Status> {
        let hello = match inbound.next().await.transpose()? {
            Some(WorkerMessage {
                msg: Some(worker_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on Attach must be WorkerHello",
                ));
            }
        };
        if hello.worker_id.is_empty() || hello.slots == 0 {
            return Err(Status::invalid_argument("WorkerHello needs a worker_id and slots > 0"));
        }
        let (tx, rx) = mpsc::channel(1024);
        let handle = Arc::new(WorkerHandle {
            id: hello.worker_id.clone(),
            slots: hello.slots,
            memory_mb: hello.memory_mb,
            hostname: hello.hostname.clone(),
            attached_ms: stoke_core::now_ms(),
            busy: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            tx,
            pending: Mutex::new(HashMap::new()),
            warm: Mutex::new(HashMap::new()),
            provisioned: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
        });
        let registry = self.registry.clone();
        registry.workers.lock().expect("not poisoned").push(handle.clone());
        registry.changed.notify_waiters();
        registry.rebalance();
        tracing::info!(worker = %hello.worker_id, slots = hello.slots, host = %hello.hostname, "worker attached");
        let silence = self.registry.heartbeat_timeout;
        tokio::spawn(async move {
            loop {
                // A worker that says nothing (heartbeats come every 2 s) for
                // this long is lost, whatever its TCP connection says.
                let Ok(next) = tokio::time::timeout(silence, inbound.next()).await else {
                    tracing::warn!(worker = %handle.id, ?silence, "worker missed its heartbeats");
                    break;
                };
                match next.transpose() {
                    Ok(Some(WorkerMessage { msg: Some(m) })) => match m {
                        worker_message::Msg::Result(r) => {
                            let received = ResultReceived {
                                invocation_id: r.invocation_id.clone(),
                                epoch: r.epoch,
                            };
                            let confirm = Ok(DispatcherMessage {
                                msg: Some(dispatcher_message::Msg::Received(received)),
                            });
                            match handle.complete(r) {
                                // Confirmed once metered: a failed write leaves it with the worker.
                                Some(late) => record_fenced(&registry.store, late, handle.tx.clone(), confirm),
                                None => {
                                    let _ = handle.tx.try_send(confirm);
                                }
                            }
                        }
                        worker_message::Msg::Heartbeat(hb) => {
                            let mut warm = handle.warm.lock().expect("not poisoned");
                            warm.clear();
                            for w in hb.warm {
                                warm.insert((w.function, w.version), w.idle);
                            }
                        }
                        worker_message::Msg::Logs(chunk) => handle.output(&registry.logs, chunk),
                        // In order, before the invocation's result (which
                        // comes later on this same stream).
                        worker_message::Msg::ResponsePart(part) => {
                            let Some(part) = registry.local_results.streams().deliver(part) else {
                                continue;
                            };
                            if let Err(e) = stoke_bus::stream::publish(&registry.nats, &part).await {
                                tracing::warn!(invocation = %part.invocation_id, error = %e, "a streamed response's part was not published");
                            }
                        }
                        worker_message::Msg::Drain(_) => {
                            tracing::info!(worker = %handle.id, "worker draining");
                            handle.draining.store(true, Ordering::Relaxed);
                            let drained = DispatcherMessage {
                                msg: Some(dispatcher_message::Msg::Drained(Drained {})),
                            };
                            let _ = handle.tx.send(Ok(drained)).await;
                            // Its provisioned shares go to the others.
                            registry.rebalance();
                        }
                        worker_message::Msg::Hello(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            tracing::info!(worker = %handle.id, "worker detached");
            registry.remove(&handle);
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl stoke_proto::InProcessAttach for WorkerApi {
    /// No token: only code in this process holds the link.
    async fn attach(
        &self,
        from_worker: MessageStream<WorkerMessage>,
    ) -> Result<MessageStream<DispatcherMessage>, Status> {
        self.session(from_worker).await
    }

    async fn fetch_package(&self, digest: String) -> Result<MessageStream<PackageChunk>, Status> {
        self.package(digest).await
    }
}

impl WorkerApi {
    /// A package's bytes, in chunks.
    async fn package(&self, digest: String) -> Result<MessageStream<PackageChunk>, Status> {
        let data = self
            .registry
            .store
            .get_package(&digest)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("package {digest} not found")))?;
        let chunks: Vec<Result<PackageChunk, Status>> = data
            .chunks(CHUNK)
            .map(|c| Ok(PackageChunk { data: c.to_vec() }))
            .collect();
        Ok(Box::pin(tokio_stream::iter(chunks)))
    }
}

/// What each `WorkerService` call needs (checked before it reaches
/// [`WorkerApi`], by `stoke_api::Guarded`): the worker role. A worker in
/// the dispatcher's own process attaches without a token
/// (`InProcessAttach`).
pub(crate) const ACCESS: stoke_api::access::Table = &[
    ("Attach", stoke_api::Access::Anywhere(stoke_auth::Role::Worker)),
    ("FetchPackage", stoke_api::Access::Anywhere(stoke_auth::Role::Worker)),
];

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = MessageStream<DispatcherMessage>;
    type FetchPackageStream = MessageStream<PackageChunk>;

    async fn attach(&self, req: Request<Streaming<WorkerMessage>>) -> Result<Response<Self::AttachStream>, Status> {
        Ok(Response::new(self.session(Box::pin(req.into_inner())).await?))
    }

    async fn fetch_package(
        &self,
        req: Request<FetchPackageRequest>,
    ) -> Result<Response<Self::FetchPackageStream>, Status> {
        Ok(Response::new(self.package(req.into_inner().digest).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::share_of;

    /// Every method of the service has an entry, and every entry a method.
    #[test]
    fn every_worker_rpc_declares_what_it_needs() {
        let methods = stoke_api::access::methods_of("WorkerService");
        assert_eq!(methods.len(), super::ACCESS.len(), "{methods:?}");
        for m in &methods {
            assert!(
                stoke_api::access::access_in(super::ACCESS, m).is_some(),
                "WorkerService.{m} has no entry"
            );
        }
    }

    #[test]
    fn provisioned_sandboxes_are_split_evenly_and_completely() {
        for n in 0..20 {
            for workers in 1..6 {
                let shares: Vec<u32> = (0..workers).map(|i| share_of(n, workers, i)).collect();
                assert_eq!(shares.iter().sum::<u32>(), n, "{n} over {workers}: {shares:?}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} over {workers}: {shares:?}");
            }
        }
        assert_eq!(share_of(3, 0, 0), 0);
    }
}
