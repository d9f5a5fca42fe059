//! A real PostgreSQL server for tests (cargo feature `testing`; no mocks).
//!
//! [`Postgres::start`] finds the server programs (`initdb` and `postgres`
//! on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`, where
//! Debian's `postgresql` package puts them), runs `initdb` into a fresh temp
//! dir and starts `postgres` on a free 127.0.0.1 port with its Unix socket
//! inside that dir, waits until it accepts connections and creates a
//! database ([`Postgres::url`]; [`Postgres::database`] makes more). Dropping
//! it stops the server by its pid and removes the dir. A port another
//! test's server took between choosing and binding it is noticed (our
//! server exits, or the one answering has another data directory) and a
//! new port tried.
//!
//! Root: PostgreSQL refuses to run as root, and CI runs tests as root. The
//! temp dir is then chowned to uid/gid 65534 (Debian's `nobody`/`nogroup`)
//! and `initdb` and `postgres` are exec'd with that uid and gid and no
//! supplementary groups (`std::os::unix::process::CommandExt::uid`/`gid`,
//! no `runuser` or `sudo` needed). The temp dir's parent (`$TMPDIR`, else
//! `/tmp`) must be searchable by uid 65534.
//!
//! `postgres` is started directly rather than through `pg_ctl`, so the
//! test holds the postmaster's pid. Stopping sends SIGINT (PostgreSQL's
//! "fast" shutdown: disconnect clients, checkpoint, exit; SIGTERM would be
//! its "smart" shutdown, which waits for every client, such as a store pool
//! the test still holds, to disconnect), then SIGKILL after 10 s. The server
//! stays in the test's process group, so a test runner that kills the
//! group on a timeout takes it down too.
//!
//! `STOKE_TEST_POSTGRES_URL` (a superuser URL of an existing server, e.g.
//! `postgres://postgres:secret@127.0.0.1:5432/postgres`) makes every
//! [`Postgres`] use that server instead of starting one; the databases it
//! creates there are dropped again when it is dropped.
//!
//! Databases are created with ICU's `en-US` collation where the server
//! supports it (PostgreSQL ≥ 15 built with ICU, as Debian's is), since
//! production databases usually sort linguistically: a query that silently
//! relied on byte order would fail here, not in production.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// The unprivileged user (and group) the server runs as under root.
const NOBODY: u32 = 65534;
/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A port taken between choosing and binding it: try another this often.
const START_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL's initdb and postgres not found together on PATH or in /usr/lib/postgresql/*/bin \
         (Debian: apt-get install postgresql; or set STOKE_TEST_POSTGRES_URL)"
    )]
    NotFound,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}): {stderr}")]
    Initdb {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("postgres did not start: {0}")]
    Start(String),
    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let what = what.into();
    move |source| PostgresError::Io { what, source }
}

/// A PostgreSQL server for one test (or `STOKE_TEST_POSTGRES_URL`'s).
pub struct Postgres {
    /// Superuser URL of the `postgres` database.
    admin_url: String,
    /// The postmaster, when we started it.
    child: Option<Child>,
    /// The database made at start.
    url: String,
    /// Databases to drop on an external server when done.
    created: Mutex<Vec<String>>,
    dir: Option<tempfile::TempDir>,
}

/// The directory holding both `initdb` and `postgres` (one version's).
fn bin_dir() -> Result<PathBuf, PostgresError> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    // Numerically: 15 is newer than 9.6.
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(PostgresError::NotFound)
}

/// PostgreSQL's ports: 10000–15999, apart from the suite's other servers
/// (`stoke_tests::free_port`, 16000–31999). See [`free_port_in`].
fn free_port() -> Result<u16, PostgresError> {
    free_port_in(10_000, 6_000).map_err(io("choosing a free port"))
}

/// A loopback TCP port in `low..low + span` that nothing listens on now.
///
/// Keep both below the kernel's ephemeral range (32768–60999 by default).
/// Never port 0: a port the kernel hands out there is soon handed to
/// another listener bound to port 0 (a sandbox's Runtime API) or to an
/// outgoing connection, so a server could lose it before binding it, and a
/// test that stops its server and expects "refused" could find someone
/// else there. Each process walks the range from a start of its own
/// (nextest runs each test in its own process), keeping the first port it
/// can bind.
pub fn free_port_in(low: u16, span: u16) -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span32 = u32::from(span.max(1));
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % 65_536,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span32 {
        let port = low.saturating_add((NEXT.fetch_add(1, Ordering::Relaxed) % span32) as u16);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port in {low}..{}", u32::from(low) + span32),
    ))
}

/// Run as uid/gid 65534 when we are root (PostgreSQL refuses root).
fn as_server_user(cmd: &mut Command, dir: &Path) {
    use std::os::unix::process::CommandExt;
    if nix::unistd::geteuid().is_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.current_dir(dir).env_remove("PGDATA");
}

/// The last lines of the server's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "stoke_t{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Postgres {
    /// Start a server (or use `STOKE_TEST_POSTGRES_URL`), wait until it
    /// accepts connections, and create a database ([`Postgres::url`]).
    pub async fn start() -> Result<Postgres, PostgresError> {
        let mut pg = match std::env::var("STOKE_TEST_POSTGRES_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                tracing::info!("using the PostgreSQL server of STOKE_TEST_POSTGRES_URL");
                Postgres {
                    admin_url,
                    child: None,
                    url: String::new(),
                    created: Mutex::default(),
                    dir: None,
                }
            }
            _ => Self::launch(None).await?,
        };
        pg.url = pg.database().await?;
        Ok(pg)
    }

    /// A server of its own (never `STOKE_TEST_POSTGRES_URL`'s) with
    /// `ssl = on`, serving the certificate `cert` with its key `key` (PEM
    /// files, copied into its data dir).
    pub async fn start_with_tls(cert: &Path, key: &Path) -> Result<Postgres, PostgresError> {
        let mut pg = Self::launch(Some((cert, key))).await?;
        pg.url = pg.database().await?;
        Ok(pg)
    }

    async fn launch(tls: Option<(&Path, &Path)>) -> Result<Postgres, PostgresError> {
        let bin = bin_dir()?;
        let mut dir = tempfile::Builder::new()
            .prefix("stoke-pg-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        let data = dir.path().join("data");
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(NOBODY)),
                Some(nix::unistd::Gid::from_raw(NOBODY)),
            )
            .map_err(|e| PostgresError::Io {
                what: format!("chown {}", dir.path().display()),
                source: e.into(),
            })?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "stoke", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        as_server_user(&mut initdb, dir.path());
        let out = initdb
            .output()
            .map_err(io(format!("running {}", bin.join("initdb").display())))?;
        if !out.status.success() {
            return Err(PostgresError::Initdb {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let mut ssl_args: Vec<&str> = Vec::new();
        if let Some((cert, key)) = tls {
            // The server (uid 65534 under root) must own its key, mode 0600.
            for (from, to, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
                let copy = data.join(to);
                std::fs::copy(from, &copy).map_err(io(format!("copying {} into the data dir", from.display())))?;
                std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(io(format!("chmod {}", copy.display())))?;
                if nix::unistd::geteuid().is_root() {
                    nix::unistd::chown(
                        &copy,
                        Some(nix::unistd::Uid::from_raw(NOBODY)),
                        Some(nix::unistd::Gid::from_raw(NOBODY)),
                    )
                    .map_err(|e| PostgresError::Io {
                        what: format!("chown {}", copy.display()),
                        source: e.into(),
                    })?;
                }
            }
            ssl_args = vec![
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ];
        }
        let log = dir.path().join("postgres.log");
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let log_file = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
            let mut server = Command::new(bin.join("postgres"));
            server
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                // Loopback only; durability is not what these tests are about.
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
                .args(&ssl_args)
                .stdout(Stdio::null())
                .stderr(log_file);
            as_server_user(&mut server, dir.path());
            let child = server
                .spawn()
                .map_err(io(format!("running {}", bin.join("postgres").display())))?;
            let pid = child.id();
            let mut pg = Postgres {
                admin_url: format!("postgres://stoke@127.0.0.1:{port}/postgres"),
                child: Some(child),
                url: String::new(),
                created: Mutex::default(),
                dir: Some(dir),
            };
            match pg.wait_until_accepting(&data).await {
                Ok(()) => {
                    tracing::info!(pid, port, bin = %bin.display(), "postgres started");
                    return Ok(pg);
                }
                Err(PortTaken) => {
                    tracing::info!(port, "port taken before postgres bound it; trying another");
                    pg.stop();
                    dir = pg.dir.take().expect("ours");
                }
                Err(Exited(tail)) => return Err(PostgresError::Start(tail)),
                Err(TimedOut(e)) => return Err(PostgresError::Start(format!("{e}; log: {}", log_tail(&log)))),
            }
        }
        Err(PostgresError::Start(format!(
            "no free port after {START_ATTEMPTS} tries; log: {}",
            log_tail(&log)
        )))
    }

    /// Poll until our server answers (a condition, not a fixed sleep). The
    /// port was free when chosen, but another test's server may have taken
    /// it since: the server that answers must be the one on `data`.
    async fn wait_until_accepting(&mut self, data: &Path) -> Result<(), StartFailure> {
        let give_up = Instant::now() + START_TIMEOUT;
        loop {
            match sqlx::PgConnection::connect(&self.admin_url).await {
                Ok(mut conn) => {
                    let serves: Result<(String,), _> = sqlx::query_as("SELECT current_setting('data_directory')")
                        .fetch_one(&mut conn)
                        .await;
                    let _ = conn.close().await;
                    return match serves {
                        Ok((dir,)) if Path::new(&dir) == data => Ok(()),
                        Ok(_) => Err(PortTaken),
                        Err(e) => Err(TimedOut(e.to_string())),
                    };
                }
                Err(e) if Instant::now() > give_up => return Err(TimedOut(e.to_string())),
                Err(_) => {}
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                self.child = None;
                let log = self.dir.as_ref().map(|d| d.path().join("postgres.log"));
                let tail = log.as_deref().map(log_tail).unwrap_or_default();
                if tail.contains("could not bind") || tail.contains("already in use") {
                    return Err(PortTaken);
                }
                return Err(Exited(tail));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of the database made at start.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new, empty database on this server; its URL.
    pub async fn database(&self) -> Result<String, PostgresError> {
        let name = unique_name();
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        // The name is ours (letters, digits, underscores), never input.
        let icu = format!("CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(icu)).execute(&mut conn).await {
            // Before PostgreSQL 15, or built without ICU: the default collation.
            tracing::debug!(error = %e, "no ICU database; using the server's default collation");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
        }
        let _ = conn.close().await;
        if self.child.is_none() {
            self.created.lock().expect("not poisoned").push(name.clone());
        }
        let base = self
            .admin_url
            .split('?')
            .next()
            .and_then(|u| u.rsplit_once('/'))
            .map_or(self.admin_url.as_str(), |(b, _)| b);
        let query = self
            .admin_url
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        Ok(format!("{base}/{name}{query}"))
    }

    /// Whether this is a server we started (and so can stop).
    pub fn owns_server(&self) -> bool {
        self.child.is_some()
    }

    /// Stop the server now: a dead database for tests. SIGINT (fast
    /// shutdown), then SIGKILL if it is still running after 10 s. Does
    /// nothing to an external server (`STOKE_TEST_POSTGRES_URL`).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let give_up = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < give_up {
            if matches!(child.try_wait(), Ok(Some(_))) {
                tracing::info!(pid = pid.as_raw(), "postgres stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid = pid.as_raw(), "postgres ignored SIGINT; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Drop the databases made on an external server (from a thread of its
    /// own: `Drop` may run inside or outside a runtime).
    fn drop_created_databases(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        let admin_url = self.admin_url.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                for name in names {
                    // FORCE (PostgreSQL ≥ 13) disconnects a pool still open.
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
                }
                conn.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if let Ok(Err(e)) = dropped {
            tracing::warn!(error = %e, "cannot drop test databases");
        }
    }
}

enum StartFailure {
    /// Another server got the port first.
    PortTaken,
    /// The server exited; the end of its log.
    Exited(String),
    TimedOut(String),
}
use StartFailure::{Exited, PortTaken, TimedOut};

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        self.drop_created_databases();
        // `dir` (a TempDir) is removed after this.
    }
}
