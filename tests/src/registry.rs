//! A real OCI distribution registry for the tests: Debian's
//! `docker-registry` (the CNCF distribution server; `scripts/deps.sh`
//! installs it) on a loopback port, filesystem storage in a temp dir,
//! optionally behind htpasswd (bcrypt) basic auth; images pushed to it with
//! `skopeo copy`. Started and stopped by its pid, like [`crate::Nats`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// A running `docker-registry`.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`: the host part of image references.
    pub host: String,
    /// Basic-auth user and password, when it requires them.
    pub credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry (anyone may pull and push).
    pub async fn start() -> anyhow::Result<Registry> {
        Registry::start_with(None).await
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt).
    pub async fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Registry> {
        Registry::start_with(Some((user.to_string(), password.to_string()))).await
    }

    async fn start_with(credentials: Option<(String, String)>) -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let auth = match &credentials {
            Some((user, password)) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{}\n", bcrypt(password)?))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: stoke-tests\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        );
        std::fs::write(dir.path().join("config.yml"), config)?;
        let mut r = Registry {
            child: None,
            host: format!("127.0.0.1:{port}"),
            credentials,
            dir,
        };
        r.spawn()?;
        r.wait_listening().await;
        Ok(r)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start docker-registry (apt-get install docker-registry)")?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_listening(&self) {
        let addr = self.host.clone();
        crate::eventually(Duration::from_secs(15), "docker-registry to listen", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Push the image in the OCI layout `layout` (tag `latest`) as
    /// `repo:tag`; the reference (`127.0.0.1:<port>/repo:tag`).
    pub fn push(&self, layout: &Path, repo: &str, tag: &str) -> String {
        let reference = format!("{}/{repo}:{tag}", self.host);
        let mut args = vec![
            "copy".to_string(),
            "--dest-tls-verify=false".to_string(),
            format!("oci:{}:latest", layout.display()),
            format!("docker://{reference}"),
        ];
        if let Some((u, p)) = &self.credentials {
            args.insert(1, format!("--dest-creds={u}:{p}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::images::run("skopeo", &args, self.dir.path());
        reference
    }

    /// The file the registry serves the blob with sha256 hex `hex` from
    /// (its filesystem storage), to tamper with.
    pub fn blob_file(&self, hex: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stop the registry (SIGKILL): its port refuses connections after.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bcrypt hash of `password` for htpasswd: `htpasswd -B` (apache2-utils)
/// when installed, else Python's `crypt` (glibc's bcrypt).
fn bcrypt(password: &str) -> anyhow::Result<String> {
    if let Ok(out) = Command::new("htpasswd").args(["-nbB", "u", password]).output()
        && out.status.success()
    {
        let line = String::from_utf8(out.stdout)?;
        return Ok(line.trim().trim_start_matches("u:").to_string());
    }
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.METHOD_BLOWFISH))",
            password,
        ])
        .output()
        .context("python3 for a bcrypt hash (or apt-get install apache2-utils)")?;
    anyhow::ensure!(
        out.status.success(),
        "python3 crypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}
