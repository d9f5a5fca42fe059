//! The verbs that run functions: deploy, invoke, status, publish.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use stoke_core::Manifest;
use stoke_core::package::{self, Limits};
use stoke_proto::{
    DeployHeader, DeployRequest, GetInvocationRequest, InvocationInfo, InvocationStatus, InvokeRequest, deploy_request,
};

use crate::client::Admin;
use crate::output;

/// Deploy uploads in chunks of this size.
const CHUNK: usize = 1 << 20;

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
pub async fn deploy(
    admin: &mut Admin,
    dir: &Path,
    namespace: Option<String>,
    image_flag: Option<String>,
) -> anyhow::Result<()> {
    // Check locally first: the same checks the server runs, with local paths.
    let mut manifest = Manifest::load_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let skip: Vec<PathBuf> = manifest
        .image
        .as_deref()
        .filter(|i| !super::image::is_reference(dir, i))
        .and_then(|i| super::image::inside(dir, i))
        .into_iter()
        .collect();
    if let Some(flag) = image_flag {
        if manifest.image.is_none() {
            anyhow::bail!(
                "--image {flag}: {} has no `image`: set one there (it says the function runs an image)",
                dir.join(stoke_core::manifest::MANIFEST_FILE).display()
            );
        }
        manifest.image = Some(flag);
    }
    let packing = progress(None, "{spinner} {msg}");
    packing.set_message(format!("packing {}", dir.display()));
    let dir_owned = dir.to_path_buf();
    let packed =
        tokio::task::spawn_blocking(move || package::pack_dir_except(&dir_owned, &Limits::default(), &skip)).await?;
    packing.finish_and_clear();
    let packed = packed.map_err(|e| anyhow::anyhow!("cannot package {}: {e}", dir.display()))?;
    // An image is uploaded (layers, then its spec) before the deploy that
    // names it (and was left out of the package).
    let image = match &manifest.image {
        Some(image) if super::image::is_reference(dir, image) => Some(super::image::pull(admin, image).await?),
        Some(image) => Some(super::image::upload(admin, dir, image).await?),
        None => None,
    };
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
            image: image.unwrap_or_default(),
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
    let resp = admin.client().deploy(parts).await;
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
        .client()
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
        .client()
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

pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `stoke publish`.
pub async fn publish(admin: &mut Admin, subject: &str, payload: Vec<u8>, msg_id: Option<String>) -> anyhow::Result<()> {
    let ack = admin
        .client()
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
