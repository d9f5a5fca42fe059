//! A real PostgreSQL server for tests (cargo feature `testing`): `initdb`
//! into a temp dir and `postgres` on a free 127.0.0.1 port, as uid/gid
//! 65534 when the tests run as root (PostgreSQL refuses to run as root),
//! stopped by its pid when dropped. `STOKE_TEST_POSTGRES_URL` (a superuser
//! URL of an existing server) is used instead when set. Each
//! [`Postgres::database`] is a fresh database, so tests can share a server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The unprivileged user the server runs as under root.
const NOBODY: u32 = 65534;

pub struct Postgres {
    /// Superuser URL of the `postgres` database.
    admin_url: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

/// Where Debian (and most distributions) put the server programs.
fn program(name: &str) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join(name).is_file() {
                return Ok(dir.join(name));
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| format!("{name} not found on PATH or in /usr/lib/postgresql (apt-get install postgresql)"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn as_server_user(cmd: &mut Command, dir: &Path) {
    use std::os::unix::process::CommandExt;
    if nix::unistd::geteuid().is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.current_dir(dir).env_remove("PGDATA");
}

impl Postgres {
    /// Start a server (or use `STOKE_TEST_POSTGRES_URL`) and wait until it
    /// accepts connections.
    pub async fn start() -> Result<Postgres, String> {
        if let Ok(url) = std::env::var("STOKE_TEST_POSTGRES_URL") {
            return Ok(Postgres {
                admin_url: url,
                child: None,
                _dir: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("stoke-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        if nix::unistd::geteuid().is_root() {
            let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
            nix::unistd::chown(dir.path(), nobody, Some(nix::unistd::Gid::from_raw(NOBODY)))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let mut initdb = Command::new(program("initdb")?);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "stoke", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        as_server_user(&mut initdb, dir.path());
        let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).map_err(|e| e.to_string())?;
        let mut server = Command::new(program("postgres")?);
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            // Loopback only; durability is not what these tests are about.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::null())
            .stderr(log);
        as_server_user(&mut server, dir.path());
        let child = server.spawn().map_err(|e| format!("postgres: {e}"))?;
        let pg = Postgres {
            admin_url: format!("postgres://stoke@127.0.0.1:{port}/postgres"),
            child: Some(child),
            _dir: Some(dir),
        };
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgPool::connect(&pg.admin_url).await {
                Ok(pool) => {
                    pool.close().await;
                    return Ok(pg);
                }
                Err(e) if Instant::now() > give_up => return Err(format!("postgres did not start: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A new, empty database on this server; its URL.
    pub async fn database(&self) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pool = sqlx::PgPool::connect(&self.admin_url)
            .await
            .map_err(|e| e.to_string())?;
        // The name is ours (digits and an underscore), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
        pool.close().await;
        let base = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }

    /// Stop the server now (fast shutdown), as a dead database for tests.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let give_up = Instant::now() + Duration::from_secs(10);
            while Instant::now() < give_up {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
