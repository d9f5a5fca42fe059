//! A sandbox: one function process, its private Runtime API endpoint, its
//! temp dir, and the tasks that watch it. Dropping a `Sandbox` kills it
//! (`process::Killer`, and its cgroup) and removes its files.

pub mod cgroup;
pub mod child;
mod exec;
pub use exec::event_env as exec_env;
pub mod ids;
pub mod jail;
pub mod launch;
pub mod netns;
pub mod output;
pub mod process;
pub mod runtime_api;
pub mod seccomp;
pub mod sys;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stoke_proto::LogStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use output::Output;
use runtime_api::{ApiState, Delivery, Reply};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a function version needs to start.
pub struct StartSpec<'a> {
    pub function: &'a str,
    pub version: u32,
    pub command: &'a [String],
    pub handler: &'a str,
    pub memory_mb: u32,
    pub env: Vec<(String, String)>,
    pub code_dir: &'a Path,
    /// Parent of per-sandbox temp dirs (unjailed; jailed, /tmp is a tmpfs).
    pub scratch_root: &'a Path,
    pub worker_id: &'a str,
    pub max_response: usize,
    /// Largest streamed response (to a caller waiting on it), in bytes.
    pub max_stream: usize,
    /// The function's timeout (bounds how long its Runtime API connection
    /// may sit idle: `runtime_api::ServeLimits`).
    pub timeout: Duration,
    /// Where the sandbox's cgroups go; `None` only with `--sandbox none`.
    pub cgroups: Option<&'a cgroup::Cgroups>,
    /// Seccomp filters (empty only with `--sandbox none`).
    pub seccomp: Arc<Vec<seccompiler::BpfProgram>>,
    /// Namespaces, a read-only root and an unprivileged user (`jail.rs`);
    /// `None` only with `--sandbox none`.
    pub jail: Option<&'a jail::Jail>,
    /// Prepared network namespaces (`netns.rs`); `None` only with `--sandbox none`.
    pub net: Option<&'a Arc<netns::NetPool>>,
    /// Bytes of output per invocation that are kept (shipped, logged).
    pub log_cap: u64,
    /// Also write the function's output to the worker's own log.
    pub output_to_worker_log: bool,
    /// Where chunks of output go (the dispatcher stream); `None`: only the
    /// worker's log.
    pub shipper: Option<Arc<output::Shipper>>,
    /// The invocation this sandbox is started for: its start-up output is
    /// that invocation's. `None` for a provisioned sandbox.
    pub tag: Option<output::Tag>,
    pub max_pids: u32,
    /// Started ahead of traffic (provisioned concurrency), not on demand.
    pub provisioned: bool,
    /// Exec mode (`exec.rs`): the event's own variables. The process gets
    /// the event on stdin and no Runtime API.
    pub exec_env: Option<Vec<(String, String)>>,
}

/// One value per name, the last given (an image's PATH over the default,
/// the function's over both), in the order the names first came: a
/// process reading its environment sees the first of two alike.
fn later_wins(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match at.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

/// How the process ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub success: bool,
    /// As `ExitStatus` shows it: "exit status: 3", "signal: 9 (SIGKILL)".
    pub desc: String,
}

/// One event for a sandbox.
pub struct Event {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_unix_ms: i64,
    pub function_arn: String,
    /// The trace in X-Ray form (`Lambda-Runtime-Trace-Id`, `_X_AMZN_TRACE_ID`).
    pub trace_id: String,
    /// The same trace as a W3C `traceparent`.
    pub traceparent: String,
    pub idempotency_key: String,
    pub attempt: u32,
    /// Monotonic deadline the worker enforces.
    pub deadline: Instant,
    /// Where a streamed response goes as it comes (a caller waits on it).
    pub stream: Option<runtime_api::PartSink>,
}

/// How an event ended in the sandbox.
#[derive(Debug)]
pub enum Outcome {
    Response(Bytes),
    FunctionError {
        error_type: String,
        body: Bytes,
    },
    ResponseTooLarge {
        size: usize,
    },
    /// The process exited after taking the event.
    Crashed {
        message: String,
    },
    /// The sandbox ran out of memory (the kernel's OOM killer struck in it).
    OutOfMemory {
        message: String,
    },
    /// The process exited (or reported init/error) before asking for work.
    InitError {
        error_type: String,
        message: String,
        body: Bytes,
    },
    Timeout,
}

/// Timings of one event.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub duration: Duration,
    /// Time from spawn to the first `/next`, for a cold start.
    pub init: Option<Duration>,
}

pub struct Sandbox {
    pub id: u64,
    pub function: String,
    pub version: u32,
    memory_mb: u32,
    pid: u32,
    killer: process::Killer,
    spawned: Instant,
    deliveries: mpsc::Sender<Delivery>,
    api: Arc<ApiState>,
    exited: watch::Receiver<Option<Ended>>,
    /// Exec mode: the process's stdin and stdout (taken by `exec`).
    stdin: Option<tokio::net::unix::pipe::Sender>,
    stdout: Option<tokio::net::unix::pipe::Receiver>,
    /// Largest response accepted, in bytes.
    max_response: usize,
    output: Arc<Output>,
    /// One per output pump: read what the pipe holds now.
    drains: Vec<output::Drain>,
    tasks: Vec<JoinHandle<()>>,
    scratch: Option<PathBuf>,
    cgroup: Option<cgroup::SandboxCgroup>,
    /// Its host id (jailed), given back once its cgroup is gone.
    host_id: Option<ids::HostId>,
    /// The sandbox's network namespace, held while it lives.
    _netns: Option<std::fs::File>,
    /// Events handled so far (0 = never used: the next one is cold,
    /// unless the sandbox was provisioned).
    pub served: u64,
    pub provisioned: bool,
}

impl Sandbox {
    pub async fn start(spec: StartSpec<'_>) -> std::io::Result<Sandbox> {
        // A cold start's init duration counts from here: everything the
        // platform does for a new sandbox is in it.
        let spawned = Instant::now();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // Jailed, the sandbox sees its code at /var/task and its own tmpfs
        // /tmp; unjailed, it gets a temp dir of its own.
        let (scratch, seen_tmp, seen_code) = match spec.jail {
            Some(_) => (None, "/tmp".to_string(), jail::TASK_ROOT.to_string()),
            None => {
                let scratch = spec.scratch_root.join(format!("sb-{}-{id}", std::process::id()));
                let tmp = scratch.join("tmp");
                std::fs::create_dir_all(&tmp)?;
                let tmp = tmp.display().to_string();
                (Some(scratch), tmp, spec.code_dir.display().to_string())
            }
        };

        // The Runtime API listener: this sandbox's only way to get work
        // (and, in its own network namespace, the only thing it can reach).
        // In exec mode the event comes on stdin: nothing listens at all.
        let exec = spec.exec_env.is_some();
        let (listener, netns) = match spec.net {
            Some(pool) => {
                let prepared = pool.take()?;
                (Some(prepared.listener), Some(prepared.ns))
            }
            None if exec => (None, None),
            None => (Some(std::net::TcpListener::bind("127.0.0.1:0")?), None),
        };
        let listener = match listener.filter(|_| !exec) {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(tokio::net::TcpListener::from_std(l)?)
            }
            None => None,
        };
        let api_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let (api, deliveries) = runtime_api::new_state(spec.max_response, spec.max_stream);
        let mut tasks = Vec::new();
        if let Some(listener) = listener {
            let limits = runtime_api::ServeLimits {
                max_connections: runtime_api::MAX_CONNECTIONS,
                idle: spec.timeout + runtime_api::IDLE_GRACE,
            };
            let app = runtime_api::router(api.clone());
            tasks.push(tokio::spawn(runtime_api::serve(listener, app, limits)));
        }

        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("LANG".into(), "C.UTF-8".into()),
            ("TZ".into(), "UTC".into()),
            ("HOME".into(), seen_tmp.clone()),
            ("TMPDIR".into(), seen_tmp),
            ("AWS_REGION".into(), "local".into()),
            ("AWS_DEFAULT_REGION".into(), "local".into()),
            ("AWS_EXECUTION_ENV".into(), "stoke".into()),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
                match spec.provisioned {
                    true => "provisioned-concurrency",
                    false => "on-demand",
                }
                .into(),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), spec.function.into()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), spec.version.to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), spec.memory_mb.to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/stoke/{}", spec.function)),
            ("AWS_LAMBDA_LOG_STREAM_NAME".into(), format!("{}/{id}", spec.worker_id)),
            ("LAMBDA_TASK_ROOT".into(), seen_code.clone()),
            ("LAMBDA_RUNTIME_DIR".into(), seen_code),
            ("_HANDLER".into(), spec.handler.into()),
        ];
        if let Some(addr) = api_addr {
            env.push(("AWS_LAMBDA_RUNTIME_API".into(), addr.to_string()));
        }
        env.extend(spec.exec_env.unwrap_or_default());
        env.extend(spec.env);
        let env = later_wins(env);

        let limits = cgroup::Limits {
            memory_mb: spec.memory_mb,
            max_pids: spec.max_pids,
        };
        // Jailed, a host id of its own (`ids.rs`), held until its cgroup is gone.
        let host_id = spec.jail.map(|j| j.lease_id()).transpose();
        let made = host_id.and_then(|h| {
            Ok((
                h,
                spec.cgroups
                    .map(|c| c.create(&format!("sb-{id}"), limits))
                    .transpose()?,
            ))
        });
        let launched = made.and_then(|(host_id, cg)| {
            let child = launch::launch(&launch::LaunchSpec {
                command: spec.command,
                code_dir: spec.code_dir,
                env,
                cgroup_fds: cg.as_ref().map(|c| c.join_fds()).unwrap_or_default(),
                jail: spec
                    .jail
                    .zip(host_id.as_ref())
                    .map(|(jail, h)| launch::Jailed { jail, host_id: h.get() }),
                netns: netns.as_ref().map(std::os::fd::AsFd::as_fd),
                seccomp: &spec.seccomp,
                stdin_pipe: exec,
                max_pids: spec.max_pids,
            })?;
            Ok((child, cg, host_id))
        });
        let (child, cgroup, host_id) = match launched {
            Ok(c) => c,
            Err(e) => {
                for t in &tasks {
                    t.abort();
                }
                if let Some(scratch) = &scratch {
                    let _ = std::fs::remove_dir_all(scratch);
                }
                return Err(e);
            }
        };
        let pid = child.pid;
        let killer = child.killer;
        let label = format!("{}:{}", spec.function, spec.version);
        let output = Output::new(output::OutputSpec {
            label: label.clone(),
            function: spec.function.to_string(),
            sandbox: id,
            cap: spec.log_cap,
            to_worker_log: spec.output_to_worker_log,
            shipper: spec.shipper,
            tag: spec.tag,
        });
        // In exec mode stdout is the response, read by `exec`.
        let (stdout, logged) = match exec {
            true => (Some(child.stdout), vec![(child.stderr, LogStream::Stderr)]),
            false => (
                None,
                vec![(child.stdout, LogStream::Stdout), (child.stderr, LogStream::Stderr)],
            ),
        };
        let mut drains = Vec::new();
        for (pipe, stream) in logged {
            let (drain, asked) = mpsc::unbounded_channel();
            drains.push(drain);
            tasks.push(tokio::spawn(output::pump(pipe, stream, output.clone(), asked)));
        }
        let (exit_tx, exited) = watch::channel(None);
        let mut exit = child.exit;
        tasks.push(tokio::spawn(async move {
            let status = exit.wait().await;
            let ended = match status {
                Ok(s) => Ended {
                    success: s.success(),
                    desc: s.to_string(),
                },
                Err(e) => Ended {
                    success: false,
                    desc: format!("wait failed: {e}"),
                },
            };
            let _ = exit_tx.send(Some(ended));
        }));
        tracing::debug!(sandbox = id, pid, function = %label, api = ?api_addr, "sandbox started");
        Ok(Sandbox {
            id,
            function: spec.function.to_string(),
            version: spec.version,
            memory_mb: spec.memory_mb,
            pid,
            killer,
            spawned,
            deliveries,
            api,
            exited,
            stdin: child.stdin,
            stdout,
            max_response: spec.max_response,
            output,
            drains,
            tasks,
            scratch,
            cgroup,
            host_id,
            _netns: netns,
            served: 0,
            provisioned: spec.provisioned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_alive(&self) -> bool {
        self.exited.borrow().is_none()
    }

    /// Peak memory of the sandbox (all its processes) so far, in KiB;
    /// without cgroups, the runtime process's VmHWM.
    pub fn max_memory_kb(&self) -> u64 {
        if let Some(cg) = &self.cgroup {
            return cg.peak_memory_kb();
        }
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    fn tail_text(&self) -> String {
        self.output.tail_text()
    }

    /// The output of the invocation that just ended: read what its pipes
    /// hold, ship it, and stop labelling lines with it.
    async fn end_output(&self) {
        output::drain(&self.drains).await;
        self.output.finish();
    }

    /// Hand one event to the runtime and wait for its answer, its death, or
    /// the deadline (after which the whole sandbox is killed).
    pub async fn invoke(&mut self, ev: Event) -> (Outcome, Timing) {
        self.output.begin(output::Tag {
            invocation_id: ev.request_id.clone(),
            attempt: ev.attempt,
        });
        let cold = self.served == 0;
        self.served += 1;
        let sent = Instant::now();
        let (reply_tx, reply_rx) = oneshot::channel();
        let request_id = ev.request_id.clone();
        let delivery = Delivery {
            request_id: ev.request_id,
            payload: ev.payload,
            deadline_ms: ev.deadline_unix_ms,
            function_arn: ev.function_arn,
            trace_id: ev.trace_id,
            traceparent: ev.traceparent,
            idempotency_key: ev.idempotency_key,
            attempt: ev.attempt,
            reply: reply_tx,
            stream: ev.stream,
        };
        if self.deliveries.send(delivery).await.is_err() {
            let timing = self.timing(cold, sent);
            self.end_output().await;
            return (
                Outcome::Crashed {
                    message: "the sandbox's runtime API is gone".into(),
                },
                timing,
            );
        }
        let mut exited = self.exited.clone();
        let outcome = tokio::select! {
            reply = reply_rx => match reply {
                Ok(Reply::Response(body)) => Outcome::Response(body),
                Ok(Reply::Error { error_type, body }) => Outcome::FunctionError { error_type, body },
                Ok(Reply::TooLarge { size }) => Outcome::ResponseTooLarge { size },
                Err(_) => Outcome::Crashed { message: String::new() },
            },
            _ = exited.wait_for(Option::is_some) => Outcome::Crashed { message: String::new() },
            _ = tokio::time::sleep_until(ev.deadline.into()) => Outcome::Timeout,
        };
        // Billed up to the outcome; a timed-out one answered once its
        // process is gone.
        let timing = self.timing(cold, sent);
        if matches!(outcome, Outcome::Timeout) {
            self.kill_and_wait().await;
        }
        // Everything the function wrote before it answered (or died) is
        // read, so it is this invocation's and the crash report's.
        output::drain(&self.drains).await;
        let outcome = match outcome {
            Outcome::Crashed { message } if message.is_empty() => self.death(&request_id).await,
            other => other,
        };
        self.output.finish();
        (outcome, timing)
    }

    fn timing(&self, cold: bool, sent: Instant) -> Timing {
        let ready = self.api.ready_at.get().copied();
        let start = match ready {
            Some(r) if r > sent => r,
            _ => sent,
        };
        Timing {
            duration: start.elapsed(),
            init: if cold {
                ready.map(|r| r.duration_since(self.spawned))
            } else {
                None
            },
        }
    }

    /// Describe why the process went away.
    async fn death(&self, request_id: &str) -> Outcome {
        let mut exited = self.exited.clone();
        // The exit status arrives a moment after the connection drops.
        let status = match tokio::time::timeout(Duration::from_secs(2), exited.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => s.as_ref().map(|e| e.desc.clone()).unwrap_or_default(),
            _ => "unknown exit".to_string(),
        };
        let tail = self.tail_text();
        if !self.api.called_next.load(Ordering::SeqCst) {
            let reported = self.api.init_error.lock().expect("not poisoned").take();
            let (error_type, body) = reported.unwrap_or_else(|| ("Runtime.ExitError".into(), Bytes::new()));
            return Outcome::InitError {
                error_type,
                message: format!("Runtime exited before taking the event ({status}). Output:\n{tail}"),
                body,
            };
        }
        if self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0) {
            return Outcome::OutOfMemory {
                message: format!(
                    "RequestId: {request_id} Error: Runtime exited with error: {status}: out of memory \
                     (the function's memory limit is {} MB)\n{tail}",
                    self.memory_mb
                ),
            };
        }
        Outcome::Crashed {
            message: format!("RequestId: {request_id} Error: Runtime exited with error: {status}\n{tail}"),
        }
    }

    /// Kill the sandbox: its process (jailed: its whole pid namespace;
    /// unjailed: its process group, while unreaped) and, with cgroups,
    /// every process in it (daemons that started their own session
    /// included). Safe at any time: see `process::Killer`.
    pub fn kill(&self) {
        self.killer.kill();
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }

    /// Kill the sandbox and wait until its process is reaped — jailed, that
    /// is once every process of its pid namespace has exited (the kernel
    /// reaps a namespace's init last) — so an event killed at its deadline
    /// does not outlive its answer nor overlap its retry. At most 2 s: a
    /// kill takes moments, and no answer may hang on a stuck process.
    pub async fn kill_and_wait(&self) {
        self.kill();
        let mut exited = self.exited.clone();
        let reaped = tokio::time::timeout(Duration::from_secs(2), exited.wait_for(Option::is_some)).await;
        if reaped.is_err() {
            tracing::debug!(sandbox = %self.id, "killed sandbox not reaped within 2 s");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
        // Whatever is still buffered (a sandbox idle since its last event).
        self.output.finish();
        for t in &self.tasks {
            // The exit waiter's end kills and reaps the child; the rest just stop.
            if !t.is_finished() {
                t.abort();
            }
        }
        if let Some(scratch) = &self.scratch {
            let _ = std::fs::remove_dir_all(scratch);
        }
        // The cgroup goes once everything in it is gone (a moment after the
        // kill), and then the host id may go to another sandbox; if the
        // cgroup cannot be emptied (or there is no runtime left to wait
        // on it), the id is never reused.
        let host_id = self.host_id.take();
        if let Some(cg) = self.cgroup.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        if !cg.destroy().await {
                            std::mem::forget(host_id);
                        }
                    });
                }
                Err(_) => {
                    cg.kill_all();
                    std::mem::forget(host_id);
                }
            }
        }
        tracing::debug!(sandbox = self.id, function = %self.function, "sandbox destroyed");
    }
}

/// Raise this process's soft limit on open files to its hard limit, and
/// return it. Every sandbox costs the worker a dozen fds (pipes, cgroup
/// files, its network namespace) plus up to
/// [`runtime_api::MAX_CONNECTIONS`] Runtime API connections; the usual soft
/// default of 1024 runs out at a few dozen sandboxes. (Sandboxes get their
/// own limit, `launch::NOFILE`, whatever the worker's.)
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Start and finish one sandbox of `true` with every protection, so a host
/// that cannot provide them (no root, no namespaces, a seccomp-less kernel)
/// is refused at worker start rather than at the first invocation.
pub async fn probe(
    jail: &jail::Jail,
    cgroups: &cgroup::Cgroups,
    net: &Arc<netns::NetPool>,
    seccomp: &[seccompiler::BpfProgram],
    scratch_root: &Path,
) -> Result<(), String> {
    let code = scratch_root.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&code).map_err(|e| format!("{}: {e}", code.display()))?;
    let result = async {
        let limits = cgroup::Limits {
            memory_mb: 64,
            max_pids: 16,
        };
        let cg = cgroups
            .create("probe", limits)
            .map_err(|e| format!("creating a cgroup: {e}"))?;
        let prepared_net = net.take().map_err(|e| format!("preparing a network namespace: {e}"))?;
        let host_id = jail.lease_id().map_err(|e| e.to_string())?;
        let spawned = launch::launch(&launch::LaunchSpec {
            command: &["true".to_string()],
            code_dir: &code,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cgroup_fds: cg.join_fds(),
            jail: Some(launch::Jailed {
                jail,
                host_id: host_id.get(),
            }),
            netns: Some(std::os::fd::AsFd::as_fd(&prepared_net.ns)),
            seccomp,
            stdin_pipe: false,
            max_pids: 16,
        });
        let outcome = match spawned {
            Ok(mut child) => match tokio::time::timeout(Duration::from_secs(10), child.exit.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("a sandboxed `true` ended with {status}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("a sandboxed `true` did not finish in 10 s".to_string()),
            },
            Err(e) => Err(format!("namespaces, mounts, privileges or seccomp: {e}")),
        };
        cg.destroy().await;
        outcome
    }
    .await;
    let _ = std::fs::remove_dir_all(&code);
    result
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        // This test's own process (nextest runs each test in one).
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).unwrap();
        assert_eq!(super::raise_open_files_limit().unwrap(), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}

#[cfg(test)]
mod env_tests {
    #[test]
    fn a_later_value_replaces_an_earlier_one_in_its_place() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            super::later_wins(env(&[
                ("PATH", "/usr/bin"),
                ("A", "1"),
                ("PATH", "/bin"),
                ("B", "2"),
                ("A", "3")
            ])),
            env(&[("PATH", "/bin"), ("A", "3"), ("B", "2")])
        );
    }
}
