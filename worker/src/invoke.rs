//! Running one invocation: code on disk, a warm or cold sandbox, the event
//! through the Runtime API, and a metered result back to the dispatcher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoke_core::trace::TraceContext;
use stoke_proto::{ErrorInfo, FunctionSpec, Invocation, InvocationResult, Metering, Outcome as WireOutcome, RunMode};

use crate::images::{ImageCache, Prepared};
use crate::packages::PackageCache;
use crate::pool::WarmPool;
use crate::sandbox::output::Tag;
use crate::sandbox::runtime_api::PartSink;
use crate::sandbox::{Event, Outcome, Sandbox, StartSpec, exec_env};

pub struct Runner {
    pub worker_id: String,
    pub pool: WarmPool,
    pub packages: PackageCache,
    /// Functions' images: their layers and roots.
    pub images: ImageCache,
    pub scratch_root: std::path::PathBuf,
    pub max_response: usize,
    pub max_stream: usize,
    /// The sandboxes' cgroups; `None` only with `--sandbox none`.
    pub cgroups: Option<crate::sandbox::cgroup::Cgroups>,
    pub max_pids: u32,
    /// Seccomp filters for every sandbox (empty with `--sandbox none`).
    pub seccomp: Arc<Vec<seccompiler::BpfProgram>>,
    /// The sandboxes' root (`None` with `--sandbox none`).
    pub jail: Option<crate::sandbox::jail::Jail>,
    /// Prepared network namespaces (`None` with `--sandbox none`).
    pub net: Option<Arc<crate::sandbox::netns::NetPool>>,
    /// Bytes of output per invocation that are kept.
    pub log_cap: u64,
    /// Also write function output to the worker's own log.
    pub output_to_worker_log: bool,
    /// Function output on its way to the dispatcher.
    pub shipper: Arc<crate::sandbox::output::Shipper>,
    /// Functions to keep sandboxes of started (the dispatcher's `Provision`).
    pub provisioned: std::sync::Mutex<std::collections::HashMap<String, (FunctionSpec, u32)>>,
    /// Held by the one top-up running at a time.
    pub provisioning: tokio::sync::Mutex<()>,
}

/// The result of `inv`, echoing what a dispatcher needs to meter it.
pub fn result_of(
    inv: &Invocation,
    outcome: WireOutcome,
    payload: Vec<u8>,
    error: Option<ErrorInfo>,
    metering: Metering,
) -> InvocationResult {
    let spec = inv.function.as_ref();
    InvocationResult {
        invocation_id: inv.invocation_id.clone(),
        epoch: inv.epoch,
        outcome: outcome as i32,
        payload,
        error,
        metering: Some(metering),
        attempt: inv.attempt,
        function: spec.map(|f| f.name.clone()).unwrap_or_default(),
        version: spec.map_or(0, |f| f.version),
        idempotency_key: inv.idempotency_key.clone(),
        memory_mb: spec.map_or(0, |f| f.memory_mb),
    }
}

/// The invocation's trace: its `traceparent`, else its X-Ray form (a
/// dispatcher from before `traceparent`), else a fresh one — so the
/// function always gets both forms, well made.
pub fn trace_of(inv: &Invocation) -> TraceContext {
    TraceContext::from_headers(Some(&inv.traceparent), Some(&inv.trace_id)).unwrap_or_else(TraceContext::fresh)
}

/// A sandbox that has just answered cleanly, on its way to the event
/// queued to follow on it (a hand-over, `relay.rs`). It never sits idle in
/// the pool in between, so no heartbeat reports it free, and it is counted
/// in use all along, so no top-up starts another. Dropped untaken, it goes
/// back to the pool.
pub struct Warm {
    runner: Arc<Runner>,
    key: (String, u32),
    sandbox: Option<Sandbox>,
}

impl Warm {
    /// Called while the run that used `sandbox` still counts it in use.
    fn new(runner: &Arc<Runner>, sandbox: Sandbox) -> Warm {
        let key = (sandbox.function.clone(), sandbox.version);
        runner.pool.hold(&key.0, key.1);
        Warm {
            runner: runner.clone(),
            key,
            sandbox: Some(sandbox),
        }
    }

    /// The sandbox, if it is alive and runs this version (else it goes
    /// back to the pool).
    fn take_for(mut self, function: &str, version: u32) -> Option<Sandbox> {
        let fits = self.key.0 == function && self.key.1 == version;
        self.sandbox.take_if(|sb| fits && sb.is_alive())
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            self.runner.pool.put(sb);
        }
        self.runner.pool.release(&self.key.0, self.key.1);
    }
}

impl Runner {
    /// Run `inv`, on `handed` if that fits (the sandbox of the event it
    /// followed), else on an idle sandbox of the pool, else on a new one.
    /// With the result, the sandbox if it answered cleanly and can serve
    /// again; dropped, that goes back to the pool.
    pub async fn run(
        self: &Arc<Self>,
        inv: Invocation,
        client: &mut crate::DispatcherClient,
        handed: Option<Warm>,
    ) -> (InvocationResult, Option<Warm>) {
        let mut kept = None;
        let result = self.run_on(inv, client, handed, &mut kept).await;
        (result, kept)
    }

    async fn run_on(
        self: &Arc<Self>,
        inv: Invocation,
        client: &mut crate::DispatcherClient,
        handed: Option<Warm>,
        kept: &mut Option<Warm>,
    ) -> InvocationResult {
        let started_ms = stoke_core::now_ms();
        let t0 = Instant::now();
        let spec = inv.function.clone().unwrap_or_default();
        let mut metering = Metering {
            started_unix_ms: started_ms,
            worker_id: self.worker_id.clone(),
            ..Default::default()
        };
        let result = |outcome: WireOutcome, payload: Vec<u8>, error: Option<ErrorInfo>, metering: Metering| {
            result_of(&inv, outcome, payload, error, metering)
        };
        let platform_error = |msg: String, mut metering: Metering| {
            tracing::warn!(invocation = %inv.invocation_id, function = %spec.name, "{msg}");
            metering.ended_unix_ms = stoke_core::now_ms();
            metering.duration_us = t0.elapsed().as_micros() as u64;
            result(
                WireOutcome::PlatformError,
                Vec::new(),
                Some(ErrorInfo {
                    error_type: "Stoke.PlatformError".into(),
                    error_message: msg,
                    raw: Vec::new(),
                }),
                metering,
            )
        };

        let _in_use = self.pool.in_use(&spec.name, spec.version);
        let code_dir = match self.packages.ensure(&spec.digest, client).await {
            Ok(d) => d,
            Err(e) => return platform_error(e.to_string(), metering),
        };
        let image = match self.image(&spec, client).await {
            Ok(i) => i,
            Err(e) => return platform_error(e.to_string(), metering),
        };
        // The worker's own deadline: the function timeout, from when the
        // sandbox has the event (a cold start's init is not counted, as on
        // Lambda; exec mode counts from the spawn).
        let timeout = Duration::from_millis(u64::from(spec.timeout_ms.max(1)));
        let trace = trace_of(&inv);
        let mut event = Event {
            request_id: inv.invocation_id.clone(),
            payload: inv.payload.clone().into(),
            deadline_unix_ms: started_ms + timeout.as_millis() as i64,
            function_arn: format!(
                "arn:aws:lambda:local:000000000000:function:{}:{}",
                spec.name, spec.version
            ),
            trace_id: trace.xray(),
            traceparent: trace.traceparent(),
            idempotency_key: inv.idempotency_key.clone(),
            attempt: inv.attempt,
            deadline: Instant::now() + timeout,
            stream: inv
                .stream
                .then(|| self.shipper.stream())
                .flatten()
                .map(|tx| PartSink::new(tx, inv.invocation_id.clone())),
        };
        // Exec mode: a new process per event, never pooled.
        let exec = spec.mode == RunMode::Exec as i32;
        let pooled = match exec {
            true => None,
            false => handed
                .and_then(|h| h.take_for(&spec.name, spec.version))
                .or_else(|| self.pool.take(&spec.name, spec.version)),
        };
        let mut sandbox = match pooled {
            Some(sb) => sb,
            None => match self
                .start(&spec, &code_dir, image.as_deref(), Start::for_event(&event, exec))
                .await
            {
                Ok(sb) => {
                    tracing::info!(invocation = %inv.invocation_id, function = %spec.name, version = spec.version, "cold start");
                    sb
                }
                Err(e) => return platform_error(format!("cannot start {:?}: {e}", spec.command), metering),
            },
        };
        // A provisioned sandbox was started ahead of traffic: not a cold start.
        metering.cold = sandbox.served == 0 && !sandbox.provisioned;
        let (outcome, timing) = match exec {
            true => sandbox.exec(event).await,
            false => {
                event.deadline = Instant::now() + timeout;
                sandbox.invoke(event).await
            }
        };
        metering.ended_unix_ms = stoke_core::now_ms();
        metering.duration_us = timing.duration.as_micros() as u64;
        metering.init_duration_us = timing.init.map(|d| d.as_micros() as u64).unwrap_or(0);
        metering.max_memory_used_kb = sandbox.max_memory_kb();

        let err = |error_type: &str, message: String, raw: &[u8]| ErrorInfo {
            error_type: error_type.into(),
            error_message: message,
            raw: raw.to_vec(),
        };
        let out = match outcome {
            Outcome::Response(body) => {
                if !exec {
                    *kept = Some(Warm::new(self, sandbox));
                }
                return result(WireOutcome::Success, body.to_vec(), None, metering);
            }
            Outcome::FunctionError { error_type, body } => {
                // A handled error leaves the runtime healthy: keep it warm.
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("errorMessage").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                if !exec {
                    *kept = Some(Warm::new(self, sandbox));
                }
                return result(
                    WireOutcome::FunctionError,
                    Vec::new(),
                    Some(err(&error_type, message, &body)),
                    metering,
                );
            }
            Outcome::ResponseTooLarge { size } => (
                WireOutcome::FunctionError,
                err(
                    "Function.ResponseSizeTooLarge",
                    format!(
                        "Response payload size ({size} bytes) exceeded maximum allowed payload size ({} bytes).",
                        self.max_response
                    ),
                    &[],
                ),
            ),
            Outcome::Crashed { message } => (WireOutcome::Crashed, err("Runtime.ExitError", message, &[])),
            Outcome::OutOfMemory { message } => (WireOutcome::Crashed, err("Runtime.OutOfMemory", message, &[])),
            Outcome::InitError {
                error_type,
                message,
                body,
            } => (WireOutcome::InitError, err(&error_type, message, &body)),
            Outcome::Timeout => (
                WireOutcome::Timeout,
                err(
                    "Sandbox.Timedout",
                    format!(
                        "{} Task timed out after {:.2} seconds",
                        inv.invocation_id,
                        timeout.as_secs_f64()
                    ),
                    &[],
                ),
            ),
        };
        // Anything but a clean answer: this sandbox is not reused.
        drop(sandbox);
        result(out.0, Vec::new(), Some(out.1), metering)
    }

    /// Keep (or stop keeping) `min_warm` sandboxes of `spec` started.
    pub fn set_provision(&self, spec: FunctionSpec, min_warm: u32) {
        self.pool.set_floor(&spec.name, spec.version, min_warm);
        let stopped = self.pool.trim_provisioned(&spec.name, spec.version, min_warm);
        if stopped > 0 {
            tracing::info!(function = %spec.name, stopped, min_warm, "provisioned share shrank");
        }
        let mut provisioned = self.provisioned.lock().expect("not poisoned");
        if min_warm == 0 {
            provisioned.remove(&spec.name);
        } else {
            tracing::info!(function = %spec.name, version = spec.version, min_warm, "provisioned concurrency");
            provisioned.insert(spec.name.clone(), (spec, min_warm));
        }
    }

    /// Start sandboxes until every provisioned function has its share
    /// (idle or busy); one top-up at a time.
    pub async fn top_up(&self, client: &mut crate::DispatcherClient) {
        let Ok(_one) = self.provisioning.try_lock() else {
            return;
        };
        let wanted: Vec<(FunctionSpec, u32)> = self
            .provisioned
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        for (spec, min_warm) in wanted {
            let live = self.pool.live(&spec.name, spec.version);
            if live >= min_warm {
                continue;
            }
            let code_dir = match self.packages.ensure(&spec.digest, client).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(function = %spec.name, error = %e, "cannot provision");
                    continue;
                }
            };
            let image = match self.image(&spec, client).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(function = %spec.name, error = %e, "cannot provision");
                    continue;
                }
            };
            for _ in live..min_warm {
                let _starting = self.pool.in_use(&spec.name, spec.version);
                match self
                    .start(&spec, &code_dir, image.as_deref(), Start::provisioned())
                    .await
                {
                    Ok(sb) => {
                        tracing::info!(function = %spec.name, version = spec.version, "provisioned sandbox started");
                        self.pool.put(sb);
                    }
                    Err(e) => {
                        tracing::warn!(function = %spec.name, error = %e, "cannot provision");
                        break;
                    }
                }
            }
        }
    }

    /// The version's image, ready (None for a function on the host's /usr).
    async fn image(
        &self,
        spec: &FunctionSpec,
        client: &mut crate::DispatcherClient,
    ) -> Result<Option<Arc<Prepared>>, crate::WorkerError> {
        if spec.image.is_empty() {
            return Ok(None);
        }
        self.images
            .ensure(&spec.image, self.jail.as_ref(), client)
            .await
            .map(Some)
    }

    async fn start(
        &self,
        spec: &FunctionSpec,
        code_dir: &std::path::Path,
        image: Option<&Prepared>,
        start: Start,
    ) -> std::io::Result<Sandbox> {
        let mut env: Vec<(String, String)> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.sort();
        // An image's own environment goes under the function's.
        let (command, jail) = match image {
            Some(image) => {
                env.splice(0..0, image.env());
                let argv = image
                    .argv(&spec.command)
                    .map_err(|why| std::io::Error::new(std::io::ErrorKind::NotFound, why))?;
                (argv, Some(&image.jail))
            }
            None => (spec.command.clone(), self.jail.as_ref()),
        };
        Sandbox::start(StartSpec {
            function: &spec.name,
            version: spec.version,
            command: &command,
            handler: &spec.handler,
            memory_mb: spec.memory_mb,
            env,
            code_dir,
            scratch_root: &self.scratch_root,
            worker_id: &self.worker_id,
            max_response: self.max_response,
            max_stream: self.max_stream,
            timeout: std::time::Duration::from_millis(u64::from(spec.timeout_ms)),
            cgroups: self.cgroups.as_ref(),
            max_pids: self.max_pids,
            seccomp: self.seccomp.clone(),
            jail,
            net: self.net.as_ref(),
            log_cap: self.log_cap,
            output_to_worker_log: self.output_to_worker_log,
            shipper: Some(self.shipper.clone()),
            tag: start.tag,
            provisioned: start.provisioned,
            exec_env: start.exec_env,
        })
        .await
    }
}

/// Why a sandbox starts.
struct Start {
    /// Ahead of traffic (provisioned concurrency).
    provisioned: bool,
    /// Exec mode: the event's variables.
    exec_env: Option<Vec<(String, String)>>,
    /// The invocation it starts for (its start-up output is that one's).
    tag: Option<Tag>,
}

impl Start {
    fn for_event(event: &Event, exec: bool) -> Start {
        Start {
            provisioned: false,
            exec_env: exec.then(|| exec_env(event)),
            tag: Some(Tag {
                invocation_id: event.request_id.clone(),
                attempt: event.attempt,
            }),
        }
    }

    fn provisioned() -> Start {
        Start {
            provisioned: true,
            exec_env: None,
            tag: None,
        }
    }
}
