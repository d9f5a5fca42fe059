//! The CLI verbs that drive the gRPC admin API.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use stoke_core::Manifest;
use stoke_core::package::{self, Limits};
use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::{
    DeployHeader, DeployRequest, GetInvocationRequest, InvocationInfo, InvocationStatus, InvokeRequest,
    ListFunctionsRequest, deploy_request,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const MAX_MESSAGE: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, stoke_proto::BearerToken>>;

pub struct Admin {
    client: AdminClient,
}

/// Turn a gRPC status into an error that says what to do.
pub fn rpc_error(addr: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") || s.message().contains("connect") => {
            anyhow::anyhow!(
                "cannot reach the stoke admin API at {addr} ({}): is `stoke up` running? (set STOKE_ADMIN)",
                s.message()
            )
        }
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "{} (the admin API at {addr} requires a token: pass --token or set STOKE_TOKEN; the first admin token is in <data-dir>/admin.token)",
            s.message()
        ),
        code => anyhow::anyhow!("{} ({code:?})", s.message()),
    }
}

impl Admin {
    /// Connect to the admin API at `addr`, sending `token` (if any) on every call.
    pub async fn connect(addr: &str, token: Option<&str>) -> anyhow::Result<(Admin, String)> {
        let bearer = stoke_proto::BearerToken::new(token.unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?;
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = Channel::from_shared(url.clone())
            .with_context(|| format!("invalid admin address {addr:?}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the stoke admin API at {addr} ({e}): is `stoke up` running? (set STOKE_ADMIN)"
                )
            })?;
        let client = AdminServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok((Admin { client }, addr.to_string()))
    }

    pub fn client(&mut self) -> &mut AdminClient {
        &mut self.client
    }
}

/// `stoke deploy DIR`.
pub async fn deploy(admin: &mut Admin, addr: &str, dir: &Path, namespace: Option<String>) -> anyhow::Result<()> {
    // Check locally first: the same checks the server runs, with local paths.
    let manifest = Manifest::load_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let dir_owned = dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || package::pack_dir(&dir_owned, &Limits::default()))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot package {}: {e}", dir.display()))?;
    let size = packed.archive.len() as u64;
    eprintln!(
        "packaged {} ({} files, {}) as {}",
        manifest.name,
        packed.files,
        human_bytes(size),
        &packed.digest[..12]
    );
    let bar = indicatif::ProgressBar::new(size);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let header = DeployRequest {
        part: Some(deploy_request::Part::Header(DeployHeader {
            digest: packed.digest.clone(),
            size,
            namespace: namespace.unwrap_or_default(),
        })),
    };
    let chunks: Vec<Vec<u8>> = packed.archive.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let bar2 = bar.clone();
    let parts = futures::stream::iter(std::iter::once(header).chain(chunks.into_iter().map(move |c| {
        bar2.inc(c.len() as u64);
        DeployRequest {
            part: Some(deploy_request::Part::Chunk(c)),
        }
    })));
    let resp = admin
        .client
        .deploy(parts)
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    bar.finish_and_clear();
    let f = resp.function.context("server sent no function info")?;
    if resp.unchanged {
        println!(
            "{} is unchanged (version {}, digest {})",
            f.name,
            f.version,
            &f.digest[..12]
        );
    } else {
        println!("deployed {} version {} (digest {})", f.name, f.version, &f.digest[..12]);
    }
    if f.triggers.iter().any(|t| t == "http") {
        println!(
            "  invoke: curl -X POST http://<gateway>/fn/{} -d '{{}}'   or   stoke invoke {}",
            f.name, f.name
        );
    }
    Ok(())
}

/// The payload of `--data`: inline JSON, `@FILE`, or `@-` for stdin.
pub fn read_payload(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match data {
        None => Ok(b"{}".to_vec()),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read stdin")?;
            Ok(buf)
        }
        Some(s) if s.starts_with('@') => {
            let path = PathBuf::from(&s[1..]);
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
        }
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

pub struct InvokeArgs<'a> {
    pub function: &'a str,
    pub payload: Vec<u8>,
    pub is_async: bool,
    pub idempotency_key: Option<String>,
}

/// `stoke invoke`. Prints the result body on stdout; a failed invocation
/// prints its error on stderr and exits non-zero.
pub async fn invoke(admin: &mut Admin, addr: &str, args: InvokeArgs<'_>) -> anyhow::Result<()> {
    let resp = admin
        .client
        .invoke(InvokeRequest {
            function: args.function.to_string(),
            payload: args.payload,
            r#async: args.is_async,
            idempotency_key: args.idempotency_key.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    match resp.invocation {
        None if args.is_async => {
            println!("{}", resp.invocation_id);
            eprintln!("queued; see the result with: stoke status {}", resp.invocation_id);
            Ok(())
        }
        None => bail!(
            "invocation {} is still running; see its result later with: stoke status {}",
            resp.invocation_id,
            resp.invocation_id
        ),
        Some(info) => print_result(&info),
    }
}

fn print_result(info: &InvocationInfo) -> anyhow::Result<()> {
    match InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified) {
        InvocationStatus::Succeeded => {
            let mut out = std::io::stdout();
            out.write_all(&info.result)?;
            if !info.result.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        status => {
            let err = info.error.clone().unwrap_or_default();
            bail!(
                "invocation {} {}: {}: {}",
                info.invocation_id,
                status_name(status),
                err.error_type,
                err.error_message
            )
        }
    }
}

fn status_name(s: InvocationStatus) -> &'static str {
    match s {
        InvocationStatus::Unspecified => "unknown",
        InvocationStatus::Queued => "queued",
        InvocationStatus::Running => "running",
        InvocationStatus::Succeeded => "succeeded",
        InvocationStatus::Failed => "failed",
        InvocationStatus::TimedOut => "timed out",
        InvocationStatus::DeadLettered => "dead-lettered",
    }
}

/// `stoke status ID`: the invocation as JSON.
pub async fn status(admin: &mut Admin, addr: &str, id: &str) -> anyhow::Result<()> {
    let info = admin
        .client
        .get_invocation(GetInvocationRequest {
            invocation_id: id.to_string(),
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
    let result = match std::str::from_utf8(&info.result) {
        Ok(s) => serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string())),
        Err(_) => serde_json::Value::Null,
    };
    let json = serde_json::json!({
        "invocationId": info.invocation_id,
        "function": info.function,
        "version": info.version,
        "status": status_name(status),
        "attempts": info.attempts,
        "trigger": info.trigger,
        "idempotencyKey": info.idempotency_key,
        "result": result,
        "error": info.error.map(|e| serde_json::json!({"errorType": e.error_type, "errorMessage": e.error_message})),
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// `stoke functions`.
pub async fn functions(admin: &mut Admin, addr: &str) -> anyhow::Result<()> {
    let list = admin
        .client
        .list_functions(ListFunctionsRequest::default())
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner()
        .functions;
    if list.is_empty() {
        println!("no functions deployed (deploy one with: stoke deploy examples/hello-python)");
        return Ok(());
    }
    println!(
        "{:<24} {:>7} {:>8} {:>8}  {:<14} TRIGGERS",
        "NAME", "VERSION", "MEMORY", "TIMEOUT", "DIGEST"
    );
    for f in list {
        println!(
            "{:<24} {:>7} {:>6}MB {:>7}s  {:<14} {}",
            f.name,
            f.version,
            f.memory_mb,
            f.timeout_ms / 1000,
            &f.digest[..12.min(f.digest.len())],
            f.triggers.join(", ")
        );
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `stoke publish`.
pub async fn publish(
    admin: &mut Admin,
    addr: &str,
    subject: &str,
    payload: Vec<u8>,
    msg_id: Option<String>,
) -> anyhow::Result<()> {
    let ack = admin
        .client
        .publish(stoke_proto::PublishRequest {
            subject: subject.to_string(),
            payload,
            msg_id: msg_id.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    if ack.duplicate {
        println!(
            "duplicate of {} sequence {}: not stored again",
            ack.stream, ack.sequence
        );
    } else {
        println!("stored in {} at sequence {}", ack.stream, ack.sequence);
    }
    Ok(())
}

/// `stoke cron ledger`.
pub async fn cron_ledger(admin: &mut Admin, addr: &str, function: Option<String>, limit: u32) -> anyhow::Result<()> {
    let ticks = admin
        .client
        .list_cron_ticks(stoke_proto::ListCronTicksRequest {
            function: function.unwrap_or_default(),
            limit,
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner()
        .ticks;
    if ticks.is_empty() {
        println!("no cron ticks yet");
        return Ok(());
    }
    println!(
        "{:<26} {:<28} {:<17} INVOCATION",
        "SCHEDULED (UTC)", "SCHEDULE", "OUTCOME"
    );
    for t in ticks {
        let at = chrono::DateTime::from_timestamp_millis(t.scheduled_unix_ms)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        println!("{at:<26} {:<28} {:<17} {}", t.schedule_id, t.outcome, t.invocation_id);
    }
    Ok(())
}

pub enum ScheduleOp {
    Create(stoke_proto::CreateScheduleRequest),
    List(String),
    Pause(String),
    Resume(String),
    Delete(String),
}

fn print_schedules(list: &[stoke_proto::ScheduleInfo]) {
    if list.is_empty() {
        println!("no cron schedules");
        return;
    }
    println!(
        "{:<30} {:<9} {:<20} {:<8} {:<7} {:<8} {:<16} TIMEZONE",
        "ID", "SOURCE", "CRON", "OVERLAP", "CATCHUP", "PAUSED", "FUNCTION"
    );
    for s in list {
        println!(
            "{:<30} {:<9} {:<20} {:<8} {:<7} {:<8} {:<16} {}",
            s.id, s.source, s.cron, s.overlap, s.catch_up, s.paused, s.function, s.timezone
        );
    }
}

/// `stoke cron create|list|pause|resume|delete`.
pub async fn schedules(admin: &mut Admin, addr: &str, op: ScheduleOp) -> anyhow::Result<()> {
    use stoke_proto::{ListSchedulesRequest, ScheduleNameRequest};
    let c = &mut admin.client;
    let err = |s| rpc_error(addr, s);
    match op {
        ScheduleOp::Create(req) => print_schedules(&[c.create_schedule(req).await.map_err(err)?.into_inner()]),
        ScheduleOp::List(function) => print_schedules(
            &c.list_schedules(ListSchedulesRequest { function })
                .await
                .map_err(err)?
                .into_inner()
                .schedules,
        ),
        ScheduleOp::Pause(name) => print_schedules(&[c
            .pause_schedule(ScheduleNameRequest { name })
            .await
            .map_err(err)?
            .into_inner()]),
        ScheduleOp::Resume(name) => print_schedules(&[c
            .resume_schedule(ScheduleNameRequest { name })
            .await
            .map_err(err)?
            .into_inner()]),
        ScheduleOp::Delete(name) => {
            c.delete_schedule(ScheduleNameRequest { name: name.clone() })
                .await
                .map_err(err)?;
            println!("deleted schedule {name}");
        }
    }
    Ok(())
}
