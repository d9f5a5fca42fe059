//! The local `nats-server -js` that `stoke up` starts when no `--nats-url`
//! is given: config and JetStream files under `<data-dir>/nats`, bound to
//! 127.0.0.1, stopped (SIGTERM, then SIGKILL) when stoke exits and killed by
//! the kernel if stoke dies first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::config::{NatsServerOptions, ensure_dir};

pub struct NatsServer {
    child: tokio::process::Child,
    pub url: String,
    log: PathBuf,
}

/// Find a program on PATH (or take a path as given).
fn which(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Path::new(bin).is_file().then(|| PathBuf::from(bin));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

impl NatsServer {
    pub async fn start(opts: &NatsServerOptions, data_dir: &Path) -> anyhow::Result<NatsServer> {
        let bin = which(&opts.bin).with_context(|| {
            format!(
                "{} not found on PATH; install it with `apt-get install nats-server` \
                 (or pass --nats-url to use a running server)",
                opts.bin
            )
        })?;
        let dir = data_dir.join("nats");
        ensure_dir(&dir.join("jetstream"))?;
        let port = if opts.port == 0 { free_port()? } else { opts.port };
        let conf = dir.join("nats-server.conf");
        let store_dir = std::fs::canonicalize(dir.join("jetstream"))?;
        std::fs::write(
            &conf,
            format!(
                "# Written by `stoke up`; edits are overwritten.\n\
                 host: 127.0.0.1\nport: {port}\nmax_payload: 8MB\n\
                 jetstream {{\n  store_dir: {:?}\n}}\n",
                store_dir.display().to_string()
            ),
        )
        .with_context(|| format!("cannot write {}", conf.display()))?;
        let log = dir.join("nats-server.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        stoke_worker::sandbox::child::die_with_parent_cmd(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready().await?;
        tracing::info!(url = %server.url, pid = server.child.id(), "nats-server started");
        Ok(server)
    }

    /// Wait until the server accepts connections (or report why it died).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}); its log ({}):\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
            if let Ok(c) = async_nats::connect(&self.url).await {
                drop(c);
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server did not come up on {}; log:\n{}", self.url, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Supervise the server: returns an error if it exits before `stop` is
    /// cancelled; otherwise stops it (SIGTERM, then SIGKILL) and returns Ok.
    pub async fn supervise(mut self, stop: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        tokio::select! {
            status = self.child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                bail!("nats-server exited unexpectedly ({status}); its log ({}):\n{}", self.log.display(), self.log_tail())
            }
            _ = stop.cancelled() => {
                self.stop().await;
                Ok(())
            }
        }
    }

    /// SIGTERM (lets JetStream flush), then SIGKILL after 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("nats-server did not stop in 10 s; killing it");
            let _ = self.child.kill().await;
        }
    }
}
