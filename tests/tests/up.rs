//! `stoke up` without `--nats-url`: it starts its own nats-server under the
//! data dir, serves, and stops it on Ctrl-C; a missing nats-server is a clear
//! error naming the install command.

use std::process::{Command, Stdio};
use std::time::Duration;

use stoke_tests::{alive, built_binary, eventually, free_port};

/// `stoke up` with its own nats-server on a free port, run in `data`
/// (`--data-dir data_dir`, relative to it), stderr to `data/up.err`.
struct Up {
    child: std::process::Child,
    http: String,
    admin: String,
    err_file: std::path::PathBuf,
}

fn spawn_up(data: &std::path::Path, data_dir: &str, nats_bin: &str) -> Up {
    let (http, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let err_file = data.join("up.err");
    let child = Command::new(built_binary("stoke"))
        .args(["up", "--http", &http, "--admin", &admin, "--data-dir", data_dir])
        .current_dir(data)
        .env("STOKE_NATS_SERVER__PORT", "0")
        .env("STOKE_NATS_SERVER__BIN", nats_bin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    Up {
        child,
        http,
        admin,
        err_file,
    }
}

#[tokio::test]
async fn up_runs_its_own_nats_server_and_stops_it_on_sigint() {
    let data = tempfile::tempdir().unwrap();
    // A relative data dir, as `./scripts/up.sh` uses (`.stoke`).
    let Up {
        mut child, http, admin, ..
    } = spawn_up(data.path(), "rel-data", &stoke_tests::nats_server_bin());
    let client = reqwest::Client::new();
    stoke_tests::wait_gateway(&http).await;
    // The JetStream store lives under the data dir.
    assert!(data.path().join("rel-data/nats/jetstream").is_dir());
    let nats_pid = find_child_nats_server(child.id()).expect("a nats-server child of stoke");
    let r = client
        .post(format!("http://{http}/fn/none"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the whole path is up");
    let deploy = Command::new(built_binary("stoke"))
        .args(["deploy"])
        .arg(stoke_tests::workspace_root().join("examples/hello-shell"))
        .env("STOKE_ADMIN", &admin)
        .output()
        .unwrap();
    assert!(deploy.status.success(), "{}", String::from_utf8_lossy(&deploy.stderr));
    let r = client
        .post(format!("http://{http}/fn/hello-shell"))
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status}");
    eventually(Duration::from_secs(15), "nats-server to be stopped", || async {
        (!alive(nats_pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn up_without_nats_server_names_the_install_command() {
    let data = tempfile::tempdir().unwrap();
    let Up {
        mut child, err_file, ..
    } = spawn_up(data.path(), ".", "nats-server-that-is-not-installed");
    let status = exit_within(&mut child, Duration::from_secs(20)).await;
    assert!(!status.success());
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("apt-get install nats-server"), "{err}");
}

#[tokio::test]
async fn up_stops_with_an_error_when_its_nats_server_dies() {
    let data = tempfile::tempdir().unwrap();
    let Up {
        mut child,
        http,
        err_file,
        ..
    } = spawn_up(data.path(), ".", &stoke_tests::nats_server_bin());
    stoke_tests::wait_gateway(&http).await;
    let nats_pid = find_child_nats_server(child.id()).expect("a nats-server child of stoke");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nats_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(40)).await;
    assert!(!status.success());
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("nats-server exited unexpectedly"), "{err}");
}

/// Wait for a child to exit; SIGKILL it and fail the test after `within`.
async fn exit_within(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stoke up did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pid of a nats-server whose parent is `parent`.
fn find_child_nats_server(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm.ends_with("(nats-server") && ppid == parent).then_some(pid)
    })
}

/// `stoke broker`, `stoke dispatcher` and `stoke worker` as three processes
/// sharing one NATS and one store: the same path as `stoke up`.
#[tokio::test]
async fn separate_roles_serve_the_same_path() {
    let nats = stoke_tests::Nats::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (http, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let store = format!("sqlite://{}", data.path().join("shared.db").display());
    let spawn = |args: &[&str], name: &str| {
        Command::new(built_binary("stoke"))
            .args(args)
            .args(["--nats-url", &nats.url, "--store", &store, "--data-dir"])
            .arg(data.path().join(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap()
    };
    let mut roles = Roles(vec![
        spawn(&["dispatcher", "--admin", &admin], "dispatcher"),
        spawn(&["broker", "--http", &http], "broker"),
        spawn(&["worker", "--dispatcher", &format!("http://{admin}")], "worker"),
    ]);
    let client = reqwest::Client::new();
    stoke_tests::wait_gateway(&http).await;
    let deploy = eventually(Duration::from_secs(30), "deploy through the dispatcher", || async {
        let out = Command::new(built_binary("stoke"))
            .arg("deploy")
            .arg(stoke_tests::workspace_root().join("examples/hello-python"))
            .env("STOKE_ADMIN", &admin)
            .output()
            .unwrap();
        out.status.success().then_some(out)
    })
    .await;
    assert!(String::from_utf8_lossy(&deploy.stdout).contains("deployed hello"));
    let r = client
        .post(format!("http://{http}/fn/hello"))
        .body(r#"{"name":"roles"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Hello, roles!"));
    for child in &mut roles.0 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }
    for child in &mut roles.0 {
        assert!(exit_within(child, Duration::from_secs(30)).await.success());
    }
}

/// Kills whatever is still running when a test fails.
struct Roles(Vec<std::process::Child>);

impl Drop for Roles {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A nats-server with less JetStream storage left than the logs stream
/// reserves (`logs_max_bytes`, 1 GiB by default): `stoke up` stops at once
/// and says what to change, instead of retrying; with a smaller reservation
/// it starts on the same server.
#[tokio::test]
async fn up_says_what_to_change_when_nats_cannot_reserve_the_logs_stream() {
    let nats = stoke_tests::Nats::start_with_store_limit(Some("256MB")).await.unwrap();
    let start = |logs_max_bytes: u64| {
        stoke_tests::Platform::start_with(
            &nats,
            stoke_tests::PlatformOptions {
                env: vec![(stoke_tests::LOGS_MAX_BYTES.0.into(), logs_max_bytes.to_string())],
                ..Default::default()
            },
        )
    };
    let started = std::time::Instant::now();
    let refused = start(1 << 30).await;
    let err = format!("{:#}", refused.err().expect("stoke up must refuse to start"));
    assert!(err.contains("exited early"), "{err}");
    assert!(
        err.contains("cannot reserve the logs stream's 1073741824 bytes"),
        "{err}"
    );
    assert!(err.contains("logs_max_bytes"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it retried: {:?}",
        started.elapsed()
    );

    let p = start(64 << 20).await.expect("a 64 MiB logs stream fits");
    let health = reqwest::get(p.url("/healthz")).await.unwrap();
    assert!(health.status().is_success());
}
