//! The connection to the gRPC admin API, and the verbs that run functions:
//! deploy, invoke, status, publish. (Lifecycle and tokens: manage.rs; dead
//! letters: dlq.rs; cron: cron.rs; printing: output.rs.)

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use stoke_core::Manifest;
use stoke_core::package::{self, Limits};
use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::{
    DeployHeader, DeployRequest, GetInvocationRequest, InvocationInfo, InvocationStatus, InvokeRequest, deploy_request,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{self, Output};
use crate::settings::Settings;

const MAX_MESSAGE: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, stoke_proto::BearerToken>>;

/// A connected admin API client, the address it was reached at (for error
/// messages) and how to print answers.
pub struct Admin {
    client: AdminClient,
    pub addr: String,
    pub out: Output,
}

/// A failed call, with the gRPC status code a program can branch on (see
/// output.rs: `-o json` prints it).
#[derive(Debug)]
pub struct RpcError {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    /// `NOT_FOUND`, `PERMISSION_DENIED`, ...
    pub fn code_name(&self) -> String {
        output::screaming_snake(&format!("{:?}", self.code))
    }
}

fn unreachable(addr: &str, why: impl std::fmt::Display) -> anyhow::Error {
    let why = why.to_string();
    let message = match stoke_proto::tls::hint(addr, &why) {
        Some(hint) => format!("cannot reach the stoke admin API at {addr}: {why} ({hint})"),
        None => format!(
            "cannot reach the stoke admin API at {addr} ({why}): is `stoke up` running? (set --admin or STOKE_ADMIN)"
        ),
    };
    RpcError {
        code: tonic::Code::Unavailable,
        message,
    }
    .into()
}

/// Turn a gRPC status into an error that says what to do.
pub fn rpc_error(addr: &str, s: tonic::Status) -> anyhow::Error {
    // A status made from a transport failure says only "transport error";
    // the rest is in its causes.
    let transport = std::error::Error::source(&s).is_some();
    let s = match std::error::Error::source(&s) {
        Some(cause) => {
            let text = stoke_proto::tls::chain(cause);
            let message = if text.contains(s.message()) {
                text
            } else {
                format!("{}: {text}", s.message())
            };
            tonic::Status::new(s.code(), message)
        }
        None => s,
    };
    let message = match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") || s.message().contains("connect") => {
            return unreachable(addr, s.message());
        }
        tonic::Code::Unauthenticated => format!(
            "{} (the admin API at {addr} requires a token: pass --token or --token-file, set STOKE_TOKEN, \
             or put token_file in the config file; the first admin token is in <data-dir>/admin.token)",
            s.message()
        ),
        // TLS on one side only can fail the first call, not the connect:
        // a transport failure (not the server's answer) may say so.
        code => match stoke_proto::tls::hint(addr, s.message()).filter(|_| transport) {
            Some(hint) => format!("{} ({code:?}; {hint})", s.message()),
            None => format!("{} ({code:?})", s.message()),
        },
    };
    RpcError {
        code: s.code(),
        message,
    }
    .into()
}

impl Admin {
    /// Connect to the admin API, sending the token (if any) on every call.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Admin> {
        let addr = settings.admin.as_str();
        let bearer = stoke_proto::BearerToken::new(settings.token.as_deref().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?;
        let channel = stoke_proto::tls::endpoint(addr, settings.ca_file.as_deref())
            .context("cannot set up the admin API connection")?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| unreachable(addr, stoke_proto::tls::chain(&e)))?;
        let client = AdminServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Admin {
            client,
            addr: addr.to_string(),
            out: Output::new(settings.output),
        })
    }

    pub fn client(&mut self) -> &mut AdminClient {
        &mut self.client
    }

    /// Map a failed call's status to an error naming this server.
    pub fn err(&self) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
        |s| rpc_error(&self.addr, s)
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal (CI logs
/// and pipes get nothing). `len` None is a spinner.
fn progress(len: Option<u64>, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(100));
            b
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// `stoke deploy DIR`.
pub async fn deploy(admin: &mut Admin, dir: &Path, namespace: Option<String>) -> anyhow::Result<()> {
    // Check locally first: the same checks the server runs, with local paths.
    let manifest = Manifest::load_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let packing = progress(None, "{spinner} {msg}");
    packing.set_message(format!("packing {}", dir.display()));
    let dir_owned = dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || package::pack_dir(&dir_owned, &Limits::default())).await?;
    packing.finish_and_clear();
    let packed = packed.map_err(|e| anyhow::anyhow!("cannot package {}: {e}", dir.display()))?;
    let size = packed.archive.len() as u64;
    eprintln!(
        "packaged {} ({} files, {}) as {}",
        manifest.name,
        packed.files,
        human_bytes(size),
        &packed.digest[..12]
    );
    let bar = progress(Some(size), "uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}");
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
    let resp = admin.client.deploy(parts).await;
    bar.finish_and_clear();
    let resp = resp.map_err(admin.err())?.into_inner();
    admin.out.one(&resp, |resp| {
        let Some(f) = &resp.function else { return };
        let digest = &f.digest[..12.min(f.digest.len())];
        if resp.unchanged {
            println!("{} is unchanged (version {}, digest {digest})", f.name, f.version);
        } else {
            println!("deployed {} version {} (digest {digest})", f.name, f.version);
        }
        if f.triggers.iter().any(|t| t == "http") {
            println!(
                "  invoke: curl -X POST http://<gateway>/fn/{} -d '{{}}'   or   stoke invoke {}",
                f.name, f.name
            );
        }
    })
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

/// `stoke invoke`. Prints the result body (json: the InvokeResponse) on
/// stdout; a failed or unfinished invocation is an error (exit 1) after that.
pub async fn invoke(admin: &mut Admin, args: InvokeArgs<'_>) -> anyhow::Result<()> {
    let resp = admin
        .client
        .invoke(InvokeRequest {
            function: args.function.to_string(),
            payload: args.payload,
            r#async: args.is_async,
            idempotency_key: args.idempotency_key.unwrap_or_default(),
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    let id = &resp.invocation_id;
    let failure = match &resp.invocation {
        None if args.is_async => None,
        None => Some(anyhow::anyhow!(
            "invocation {id} is still running; see its result later with: stoke status {id}"
        )),
        Some(info) => failure(info),
    };
    if admin.out.is_json() {
        output::print_json(&output::to_json(&resp))?;
    } else if resp.invocation.is_none() && args.is_async {
        println!("{id}");
        eprintln!("queued; see the result with: stoke status {id}");
    } else if let (Some(info), None) = (&resp.invocation, &failure) {
        let mut out = std::io::stdout();
        out.write_all(&info.result)?;
        if !info.result.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
    }
    failure.map_or(Ok(()), Err)
}

/// An error for an invocation that ended without succeeding.
fn failure(info: &InvocationInfo) -> Option<anyhow::Error> {
    let status = InvocationStatus::try_from(info.status).unwrap_or(InvocationStatus::Unspecified);
    if status == InvocationStatus::Succeeded {
        return None;
    }
    let err = info.error.clone().unwrap_or_default();
    Some(anyhow::anyhow!(
        "invocation {} {}: {}: {}",
        info.invocation_id,
        status_name(status),
        err.error_type,
        err.error_message
    ))
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

/// `stoke status ID`: one invocation.
pub async fn status(admin: &mut Admin, id: &str) -> anyhow::Result<()> {
    let info = admin
        .client
        .get_invocation(GetInvocationRequest {
            invocation_id: id.to_string(),
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    admin.out.one(&info, |i| {
        let status = InvocationStatus::try_from(i.status).unwrap_or(InvocationStatus::Unspecified);
        let mut rows = vec![
            ("invocation", i.invocation_id.clone()),
            ("function", format!("{} version {}", i.function, i.version)),
            (
                "status",
                format!("{} after {} attempt(s)", status_name(status), i.attempts),
            ),
            ("trigger", i.trigger.clone()),
            ("idempotency key", i.idempotency_key.clone()),
            ("accepted", output::when(i.created_unix_ms)),
            ("completed", output::when(i.completed_unix_ms)),
        ];
        if let Some(e) = &i.error {
            rows.push(("error", format!("{}: {}", e.error_type, e.error_message)));
        }
        if status == InvocationStatus::Succeeded {
            rows.push(("result", String::from_utf8_lossy(&i.result).trim_end().to_string()));
        }
        output::fields(&rows);
    })
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `stoke publish`.
pub async fn publish(admin: &mut Admin, subject: &str, payload: Vec<u8>, msg_id: Option<String>) -> anyhow::Result<()> {
    let ack = admin
        .client
        .publish(stoke_proto::PublishRequest {
            subject: subject.to_string(),
            payload,
            msg_id: msg_id.unwrap_or_default(),
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    admin.out.one(&ack, |ack| {
        if ack.duplicate {
            println!(
                "duplicate of {} sequence {}: not stored again",
                ack.stream, ack.sequence
            );
        } else {
            println!("stored in {} at sequence {}", ack.stream, ack.sequence);
        }
    })
}
