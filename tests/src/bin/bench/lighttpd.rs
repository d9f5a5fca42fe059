//! The P4 peer: a lighttpd (Debian package `lighttpd`) of our own, started
//! as a non-daemon child (`-D`) with a generated config on a free loopback
//! port, serving examples/hello-python's handler through mod_cgi (one
//! Python process per request; `cgi_handler.py` is the wrapper). Killed by
//! its pid when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use stoke_tests::{free_port, workspace_root};

/// The CGI script's name under the document root.
const SCRIPT: &str = "hello.py";

pub struct Lighttpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// `lighttpd` on PATH, else where Debian puts it.
fn program() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("lighttpd"))
            .find(|b| b.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/lighttpd")).filter(|b| b.is_file()))
        .context("lighttpd not found (apt-get install lighttpd; scripts/deps.sh installs it)")
}

impl Lighttpd {
    pub async fn start() -> anyhow::Result<Lighttpd> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::copy(
            workspace_root().join("examples/hello-python/handler.py"),
            root.join("handler.py"),
        )
        .context("copy the example's handler")?;
        std::fs::write(root.join(SCRIPT), include_str!("cgi_handler.py"))?;
        let port = free_port();
        let config = format!(
            "server.document-root = \"{root}\"\n\
             server.bind = \"127.0.0.1\"\n\
             server.port = {port}\n\
             server.modules = (\"mod_cgi\")\n\
             server.errorlog = \"{root}/error.log\"\n\
             cgi.assign = (\".py\" => \"/usr/bin/python3\")\n",
            root = root.display()
        );
        std::fs::write(root.join("lighttpd.conf"), config)?;
        let child = Command::new(program()?)
            .arg("-D")
            .arg("-f")
            .arg(root.join("lighttpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start lighttpd")?;
        let mut server = Lighttpd { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("lighttpd exited ({status}):\n{}", server.log());
            }
            if Instant::now() > deadline {
                bail!("lighttpd not listening in 10 s:\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    /// "1.4.69", from `lighttpd -v`.
    pub fn version() -> String {
        let out = program().and_then(|p| Ok(Command::new(p).arg("-v").output()?));
        out.ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                Some(
                    text.split_whitespace()
                        .next()?
                        .trim_start_matches("lighttpd/")
                        .to_string(),
                )
            })
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CGI script's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{SCRIPT}", self.port)
    }

    /// lighttpd's error log (CGI scripts' stderr goes there too).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Lighttpd {
    fn drop(&mut self) {
        // SIGKILL by pid (Child::kill), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
