//! Hostile functions: each misbehaves inside its sandbox; the sandbox
//! contains it, the worker keeps serving, and a neighbouring function is
//! unaffected. (More arrive with namespaces, pivot_root and seccomp.)

use std::time::Duration;

use futures::StreamExt as _;

use stoke_tests::{Nats, Platform, PlatformOptions, copy_function, eventually, workspace_root};

/// hello-python's runtime with tests/fixtures/hostile/hostile.py as
/// handler, a timeout of `timeout` seconds and `memory` MB.
fn hostile(timeout: u32, memory: u32) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::copy(
        workspace_root().join("tests/fixtures/hostile/hostile.py"),
        f.path().join("hostile.py"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml"))
        .unwrap()
        .replace("name = \"hello\"", "name = \"hostile\"")
        .replace("timeout = 10", &format!("timeout = {timeout}"))
        .replace("memory = 128", &format!("memory = {memory}"))
        .replace("handler = \"handler.handler\"", "handler = \"hostile.handler\"")
        // Its orders are the request body.
        .replace("http = true", "http = true\nevent = \"body\"");
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    f
}

/// The same hostile function as an image: examples/hello-image's Debian
/// root with hello-python's runtime and hostile.py in /var/task, started
/// by the manifest's command (the image's own python3).
fn hostile_image() -> tempfile::TempDir {
    let f = hostile(10, 128);
    let files: Vec<(std::path::PathBuf, &str)> = ["stoke_runtime.py", "handler.py", "hostile.py"]
        .into_iter()
        .map(|name| (f.path().join(name), name))
        .collect();
    let layout = stoke_tests::images::lambda_image_with("hostile-image", &files);
    let manifest = std::fs::read_to_string(f.path().join("stoke.toml")).unwrap().replace(
        "name = \"hostile\"",
        &format!("name = \"hostile-image\"\nimage = \"{}\"", layout.display()),
    );
    std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
    f
}

async fn platform(nats: &Nats) -> Platform {
    let p = Platform::start_with(
        nats,
        PlatformOptions {
            env: vec![("STOKE_WORKER__MAX_PIDS".into(), "64".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(hostile(10, 128).path());
    p.deploy(workspace_root().join("examples/hello-python").as_path());
    p
}

/// The neighbour still answers.
async fn neighbour_ok(p: &Platform) {
    let r = p.post("hello", r#"{"name":"neighbour"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Sandbox cgroups of this platform's worker that still exist.
fn sandbox_cgroups(p: &Platform) -> Vec<String> {
    let pid = p.pid();
    let mut found = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let pattern = "stoke-sandboxes-";
        for root in walk(&std::path::Path::new("/sys/fs/cgroup").join(controller), 3) {
            let name = root.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with(pattern) && name.ends_with(&format!("-{pid}")) {
                for sb in std::fs::read_dir(&root)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                {
                    found.push(sb.path().display().to_string());
                }
            }
        }
    }
    found
}

/// Directories up to `depth` below `dir`.
fn walk(dir: &std::path::Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            out.extend(walk(&e.path(), depth - 1));
        }
    }
    out
}

#[tokio::test]
async fn a_memory_bomb_is_killed_and_reported_as_out_of_memory() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    // Within the limit: fine, and metered with the sandbox's peak memory.
    let r = p.post("hostile", r#"{"do":"allocate","mb":40}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Over its 128 MB.
    let r = p.post("hostile", r#"{"do":"allocate","mb":400}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Runtime.OutOfMemory", "{}", r.text());
    let db = p.db().await;
    let peaks: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, max_memory_used_kb FROM attempts WHERE function = 'hostile' ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    println!("attempts (outcome, peak KiB): {peaks:?}");
    assert!(peaks[0].1 > 40 * 1024, "peak covers the 40 MB allocated: {peaks:?}");
    assert!(peaks[1].1 > 100 * 1024 && peaks[1].1 <= 128 * 1024 + 64, "{peaks:?}");
    neighbour_ok(&p).await;
    let r = p.post("hostile", r#"{"do":"allocate","mb":10}"#).await;
    assert_eq!(r.status, 200, "a fresh sandbox serves the function again: {}", r.text());
}

#[tokio::test]
async fn a_fork_bomb_hits_the_pids_limit() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let r = p.post("hostile", r#"{"do":"fork_bomb"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    println!("fork bomb: {body}");
    assert_eq!(
        body["error"], "BlockingIOError",
        "fork fails with EAGAIN at pids.max: {body}"
    );
    assert!(body["forked"].as_u64().unwrap() < 64, "{body}");
    neighbour_ok(&p).await;
}

/// Host pids of the hostile function's processes (runtime and whatever it
/// started) below the platform process.
fn hostile_processes(p: &Platform) -> Vec<u32> {
    stoke_tests::processes_running(p.pid(), "stoke_runtime.py")
}

#[tokio::test]
async fn a_daemon_dies_with_its_sandbox_and_cgroups_are_removed() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            idle_ttl_secs: Some(0.5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(hostile(2, 128).path());
    // The daemon outlives its invocation's answer, in its own session.
    let r = p.post("hostile", r#"{"do":"daemon"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let running = hostile_processes(&p);
    assert_eq!(running.len(), 2, "the runtime and its daemon: {running:?}");
    assert!(!sandbox_cgroups(&p).is_empty(), "the warm sandbox has its cgroups");
    // Scale to zero: the sandbox goes, and everything in it.
    eventually(
        Duration::from_secs(10),
        "the daemon to be killed with its idle sandbox",
        || async { running.iter().all(|pid| !stoke_tests::alive(*pid)).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(10), "the sandbox cgroups to be removed", || async {
        sandbox_cgroups(&p).is_empty().then_some(())
    })
    .await;

    // A timeout kills the daemon too, within timeout + 1 s.
    let started = std::time::Instant::now();
    let call = {
        let (http, client) = (p.url("/fn/hostile"), reqwest::Client::new());
        tokio::spawn(async move {
            client
                .post(http)
                .body(r#"{"do":"daemon","sleep":30}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let running = eventually(Duration::from_secs(5), "the runtime and its daemon", || async {
        let found = hostile_processes(&p);
        (found.len() == 2).then_some(found)
    })
    .await;
    assert_eq!(call.await.unwrap(), 504);
    eventually(
        Duration::from_secs(1),
        "the timed-out sandbox's processes to die",
        || async { running.iter().all(|pid| !stoke_tests::alive(*pid)).then_some(()) },
    )
    .await;
    println!(
        "timeout answered and daemon gone {:?} after the call",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "within timeout (2 s) + 1 s and some"
    );
}

#[tokio::test]
async fn tmp_is_capped_and_files_over_the_size_limit_fail() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    // /tmp is a 512 MiB tmpfs, charged to the function's memory: room
    // for it needs memory above 512 MB.
    p.deploy(hostile(10, 1024).path());
    let r = p.post("hostile", r#"{"do":"big_file","mb":8}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // RLIMIT_FSIZE (512 MiB): a write past it fails with EFBIG (Python
    // ignores SIGXFSZ; other runtimes are killed by it).
    let r = p.post("hostile", r#"{"do":"big_file","mb":600}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.json()["errorMessage"].as_str().unwrap().contains("File too large"),
        "{}",
        r.text()
    );
    // Many smaller files stop at the tmpfs size.
    let r = p.post("hostile", r#"{"do":"fill_tmp"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    println!("fill /tmp: {body}");
    assert_eq!(body["error"], "No space left on device", "{body}");
    assert!((400..=512).contains(&body["written_mb"].as_u64().unwrap()), "{body}");
    neighbour_ok(&p).await;
}

#[tokio::test]
async fn a_host_without_cgroups_is_refused_unless_sandbox_none_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(stoke_tests::built_binary("stoke"))
        .args(["worker", "--dispatcher", "http://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .env("STOKE_WORKER__CGROUP_ROOT", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot sandbox functions on this host"), "{stderr}");
    assert!(stderr.contains("--sandbox none"), "says how to run anyway: {stderr}");
    // A host id range that holds the host's nobody is refused too.
    let out = std::process::Command::new(stoke_tests::built_binary("stoke"))
        .args(["worker", "--dispatcher", "http://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .env("STOKE_WORKER__UID_RANGE_START", "60000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("holds 65534, the host's nobody"), "{stderr}");

    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            env: vec![
                ("STOKE_WORKER__CGROUP_ROOT".into(), "/nonexistent".into()),
                ("STOKE_WORKER__SANDBOX".into(), "none".into()),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        p.log()
            .contains("--sandbox none: functions run as plain child processes"),
        "loud about it"
    );
    p.deploy(workspace_root().join("examples/hello-python").as_path());
    neighbour_ok(&p).await;
}

/// The hostile function's `syscalls` answer: every filtered call refused
/// (clone3 as unimplemented, so that libcs fall back to clone), an ordinary
/// fork still working.
fn refused_syscalls(answers: &serde_json::Value) {
    let answers = answers.as_object().unwrap();
    assert!(answers.len() > 15, "{answers:?}");
    for (name, answer) in answers {
        let expected = match name.as_str() {
            "fork" => "ok",
            "clone3" => "Function not implemented",
            _ => "Operation not permitted",
        };
        assert_eq!(answer, expected, "{name}");
    }
}

#[tokio::test]
async fn refused_syscalls_get_eperm_and_the_function_carries_on() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let r = p.post("hostile", r#"{"do":"syscalls"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    println!("refused syscalls: {answers}");
    refused_syscalls(&answers);
    neighbour_ok(&p).await;
}

#[tokio::test]
async fn sockets_other_than_unix_ip_and_netlink_route_are_refused() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let r = p.post("hostile", r#"{"do":"sockets"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    println!("sockets: {answers}");
    let refused = "Address family not supported by protocol";
    for (name, expected) in [
        ("unix", "ok"),
        ("inet", "ok"),
        ("inet6", "ok"),
        ("netlink_route", "ok"),
        ("socketpair_unix", "ok"),
        // AF_VSOCK reaches the hypervisor's host on a VM (this one too).
        ("vsock", refused),
        ("netlink_uevent", refused),
        ("netlink_sock_diag", refused),
        ("netlink_generic", refused),
        ("packet", refused),
        ("alg", refused),
        ("bluetooth", refused),
    ] {
        assert_eq!(answers[name], expected, "{name}: {answers}");
    }
    assert_eq!(answers["interfaces"], serde_json::json!(["lo"]));
    neighbour_ok(&p).await;
}

/// Unmounts (lazily) on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_mount_under_the_code_is_read_only_in_the_sandbox_too() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let f = hostile(10, 128);
    std::fs::write(f.path().join("sub.txt"), "").unwrap();
    p.deploy(f.path());
    let r = p.post("hostile", r#"{"do":"nothing"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The unpacked package on the worker's disk, and a writable host file
    // mounted under it (as anything mounted under a bound tree would be).
    let package = walk(p.data_dir.path(), 6)
        .into_iter()
        .find(|d| d.join("sub.txt").is_file() && d.join("hostile.py").is_file())
        .expect("the unpacked package");
    let host_file = tempfile::NamedTempFile::new().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host_file.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let target = package.join("sub.txt");
    nix::mount::mount(
        Some(host_file.path()),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _mounted = Mounted(target);
    // A crash ends the warm sandbox: the next one is new and sees the mount.
    let r = p.post("hostile", r#"{"do":"crash"}"#).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let r = p.post("hostile", r#"{"do":"write","path":"/var/task/sub.txt"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["write"], "Read-only file system", "{}", r.text());
    assert_eq!(std::fs::read_to_string(host_file.path()).unwrap(), "");
    // The top of the code is read-only as before.
    let r = p
        .post("hostile", r#"{"do":"write","path":"/var/task/hostile.py"}"#)
        .await;
    assert_eq!(r.json()["write"], "Read-only file system", "{}", r.text());
    neighbour_ok(&p).await;
}

/// The hostile function's `probe` order: the worker's pid, another
/// function's package on the worker's disk (hello's, run first), the
/// host's service ports.
async fn probe_event(p: &Platform, nats: &Nats) -> serde_json::Value {
    // hello's package, unpacked on the worker's disk.
    neighbour_ok(p).await;
    let packages = walk(p.data_dir.path(), 4)
        .into_iter()
        .find(|d| d.ends_with("packages"))
        .expect("the worker's package cache");
    let other_code = std::fs::read_dir(packages)
        .unwrap()
        .flatten()
        .next()
        .expect("a package")
        .path();
    let port = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let host_ports = serde_json::json!({
        "nats": port(&nats.url),
        "gateway": port(&p.http),
        "admin_grpc": port(&p.admin),
    });
    serde_json::json!({
        "do": "probe",
        "worker_pid": p.pid(),
        "other_code": other_code,
        "host_ports": host_ports,
    })
}

#[tokio::test]
async fn the_function_sees_only_its_own_read_only_world_as_nobody() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let event = probe_event(&p, &nats).await;
    let r = p.post("hostile", event.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    println!("the sandbox sees: {seen}");
    let no_such = "No such file or directory";
    assert_eq!(seen["shadow"], no_such, "no /etc/shadow");
    assert_eq!(seen["worker_environ"], no_such, "the worker is not in its /proc");
    assert_eq!(seen["other_code"], no_such, "other packages are not there");
    assert_eq!(seen["write_root"], "Read-only file system");
    assert_eq!(seen["write_task"], "Read-only file system");
    assert_eq!(seen["kill_worker"], "No such process");
    assert_eq!(seen["mknod"], "Operation not permitted");
    assert_eq!((seen["uid"].as_u64(), seen["gid"].as_u64()), (Some(65534), Some(65534)));
    assert_eq!(seen["groups"], serde_json::json!([]), "no supplementary groups");
    assert_eq!(seen["hostname"], "stoke");
    // Its own network: loopback only, with nothing but its Runtime API on it.
    assert_eq!(seen["interfaces"], serde_json::json!(["lo"]));
    for service in ["nats", "gateway", "admin_grpc"] {
        assert_eq!(seen[format!("connect_{service}")], "Connection refused", "{service}");
    }
    assert_eq!(seen["connect_outside"], "Network is unreachable");
    assert_eq!(seen["procs"], serde_json::json!([1]), "only itself, as pid 1");
    assert_eq!(
        seen["dev"],
        serde_json::json!(["fd", "null", "stderr", "stdin", "stdout", "urandom", "zero"])
    );
    // Process count limited by rlimit too (the platform's max_pids), and
    // nothing of the kernel's in /proc: only processes (subset=pid, on this
    // kernel).
    assert_eq!(seen["nproc"], serde_json::json!([64, 64]));
    assert_eq!(seen["proc_entries"], serde_json::json!(["self", "thread-self"]));
    let gone = no_such;
    assert_eq!(
        seen["proc_masked"],
        serde_json::json!({"kallsyms": gone, "keys": gone, "meminfo": gone, "sys/kernel/hostname": gone})
    );
    assert_eq!(
        seen["proc_read_only"],
        serde_json::json!({"sys": "absent", "bus": "absent", "fs": "absent", "irq": "absent"})
    );
    // A user namespace of its own that maps nothing but that uid and gid,
    // to a host id of the sandbox's own from the worker's range (200000
    // up by default), not the host's nobody.
    let host_id = |map: &serde_json::Value| -> u32 {
        assert_eq!(
            (&map[0], &map[2]),
            (&serde_json::json!("65534"), &serde_json::json!("1")),
            "{map}"
        );
        map[1].as_str().unwrap().parse().unwrap()
    };
    let uid = host_id(&seen["uid_map"]);
    assert!((200_000..265_536).contains(&uid), "host uid {uid}");
    assert_eq!(host_id(&seen["gid_map"]), uid, "the same host gid");
    assert_eq!(seen["setgroups"], serde_json::json!(["deny"]));
    // Root does not even exist in it.
    assert_eq!(seen["setuid_root"], "Invalid argument");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(seen["caps"][cap], "0000000000000000", "{cap}");
    }
    let root: Vec<&str> = seen["root"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for absent in ["root", "home", "work", "sys", "boot", "run", "srv", "opt"] {
        assert!(!root.contains(&absent), "/{absent} is not in the sandbox: {root:?}");
    }
    neighbour_ok(&p).await;
    // Seen from the host, the two warm sandboxes (hello's and this one's)
    // run as two different ids of the range.
    let mut host_uids: Vec<u32> = stoke_tests::processes_running(p.pid(), "stoke_runtime.py")
        .into_iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        })
        .collect();
    host_uids.sort();
    println!("host uids of the sandboxes: {host_uids:?}");
    assert_eq!(host_uids.len(), 2, "{host_uids:?}");
    assert_ne!(host_uids[0], host_uids[1]);
    assert!(
        host_uids.iter().all(|u| (200_000..265_536).contains(u)),
        "{host_uids:?}"
    );
}

/// The escape and bomb checks above, inside an image function (a Debian
/// root of its own, its own python3): the same sandbox holds.
#[tokio::test]
async fn escape_and_bomb_checks_hold_inside_an_image_function_too() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    p.deploy(hostile_image().path());
    let f = "hostile-image";

    let r = p.post(f, r#"{"do":"allocate","mb":400}"#).await;
    assert_eq!(r.status, 502, "{}\n{}", r.text(), p.log());
    assert_eq!(r.json()["errorType"], "Runtime.OutOfMemory", "{}", r.text());

    let r = p.post(f, r#"{"do":"syscalls"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    refused_syscalls(&answers);

    let r = p.post(f, r#"{"do":"sockets"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    let refused = "Address family not supported by protocol";
    for name in ["vsock", "netlink_uevent", "packet", "alg"] {
        assert_eq!(answers[name], refused, "{name}: {answers}");
    }

    let event = probe_event(&p, &nats).await;
    let r = p.post(f, event.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    println!("the image sandbox sees: {seen}");
    let no_such = "No such file or directory";
    // The image has its own /etc/shadow (root's, mode 0640): unreadable.
    assert_eq!(seen["shadow"], "Permission denied");
    assert_eq!(seen["worker_environ"], no_such, "the worker is not in its /proc");
    assert_eq!(seen["other_code"], no_such, "other packages are not there");
    assert_eq!(seen["write_root"], "Read-only file system");
    assert_eq!(seen["write_task"], "Read-only file system");
    assert_eq!(seen["kill_worker"], "No such process");
    assert_eq!(seen["mknod"], "Operation not permitted");
    assert_eq!((seen["uid"].as_u64(), seen["gid"].as_u64()), (Some(65534), Some(65534)));
    assert_eq!(seen["interfaces"], serde_json::json!(["lo"]));
    for service in ["nats", "gateway", "admin_grpc"] {
        assert_eq!(seen[format!("connect_{service}")], "Connection refused", "{service}");
    }
    assert_eq!(seen["connect_outside"], "Network is unreachable");
    assert_eq!(seen["procs"], serde_json::json!([1]), "only itself, as pid 1");
    assert_eq!(seen["setuid_root"], "Invalid argument");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(seen["caps"][cap], "0000000000000000", "{cap}");
    }

    // Last: its children stay in the warm sandbox.
    let r = p.post(f, r#"{"do":"fork_bomb"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "BlockingIOError", "{body}");
    assert!(body["forked"].as_u64().unwrap() < 64, "{body}");
    neighbour_ok(&p).await;
}

#[tokio::test]
async fn a_gigabyte_of_output_is_capped_and_an_endless_loop_times_out() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    let started = std::time::Instant::now();
    let r = p.post("hostile", r#"{"do":"flood_stdout","mb":1024}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    println!("1 GiB of stdout handled in {:?}", started.elapsed());
    // The worker logged at most the 1 MiB cap of it, and said so.
    let log = p.log();
    let logged = log.lines().filter(|l| l.contains("xxxxxxxx")).count();
    assert!(logged <= 1024 + 8, "{logged} lines of output logged");
    eventually(Duration::from_secs(10), "the log cap warning", || async {
        p.log().contains("output over the log cap").then_some(())
    })
    .await;
    assert!(log.len() < 4 << 20, "the log stays small: {} bytes", log.len());
    neighbour_ok(&p).await;

    // A function that never answers is killed at its timeout (2 s here).
    p.deploy(hostile(2, 128).path());
    let started = std::time::Instant::now();
    let r = p.post("hostile", r#"{"do":"spin"}"#).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    neighbour_ok(&p).await;
}

/// Namespaces in use by the platform process and everything below it, by
/// kind. (A namespace without a process would have to be held by an fd,
/// which the fd count covers; other tests' sandboxes are not counted.)
fn namespaces_in_use(root: u32) -> std::collections::BTreeMap<&'static str, usize> {
    let mut seen: std::collections::BTreeMap<&'static str, std::collections::HashSet<u64>> = Default::default();
    for pid in std::iter::once(root).chain(stoke_tests::descendants(root)) {
        for kind in ["mnt", "pid", "net", "ipc", "uts", "user"] {
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/{kind}")) {
                use std::os::unix::fs::MetadataExt;
                seen.entry(kind).or_default().insert(m.ino());
            }
        }
    }
    seen.into_iter().map(|(k, v)| (k, v.len())).collect()
}

/// Everything a sandbox leaves on the host while it lives.
#[derive(Debug, Clone, PartialEq)]
struct Footprint {
    cgroups: usize,
    processes: usize,
    scratch_dirs: usize,
    /// Mounts the worker sees (sandboxes mount only in their own namespaces).
    mounts: usize,
    namespaces: std::collections::BTreeMap<&'static str, usize>,
    /// The worker's open files (compared loosely: HTTP connections and the
    /// pool of prepared network namespaces come and go).
    fds: usize,
}

fn footprint(p: &Platform) -> Footprint {
    let scratch_dirs = walk(p.data_dir.path(), 3)
        .into_iter()
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("sb-")))
        .count();
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", p.pid()))
        .unwrap()
        .lines()
        .count();
    Footprint {
        cgroups: sandbox_cgroups(p).len(),
        processes: stoke_tests::descendants(p.pid()).len(),
        scratch_dirs,
        mounts,
        namespaces: namespaces_in_use(p.pid()),
        fds: std::fs::read_dir(format!("/proc/{}/fd", p.pid())).unwrap().count(),
    }
}

/// Sandboxes the leak soak creates and destroys.
const SOAK: usize = 2000;

#[tokio::test]
async fn two_thousand_sandboxes_come_and_go_without_leaking() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    neighbour_ok(&p).await;
    // Let the first sandbox of hello go idle-warm; it stays through the soak.
    let before = footprint(&p);
    println!("before: {before:?}");
    // Each crash destroys its sandbox, so every call is a cold start; ten at
    // a time (the function's concurrency), so launches overlap too.
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    let url = p.url("/fn/hostile");
    let crashes = futures::stream::iter(0..SOAK)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.post(url).body(r#"{"do":"crash"}"#).send().await.unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["errorType"] == "Stoke.PlatformError" {
                    println!("platform error: {body}");
                }
                (status, body["errorType"].as_str().unwrap_or_default().to_string())
            }
        })
        .buffer_unordered(10)
        .filter(|(status, error)| {
            // Anything else (a sandbox that could not start) is a failure.
            let crashed = *status == 502 && error == "Runtime.ExitError";
            if !crashed {
                println!("not a crash: {status} {error}");
            }
            std::future::ready(crashed)
        })
        .count()
        .await;
    println!("{SOAK} sandboxes started and destroyed in {:?}", started.elapsed());
    assert_eq!(crashes, SOAK);
    // Its keep-alive connections to the gateway close with it.
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        let now = footprint(&p);
        let back = now.fds <= before.fds + 16
            && Footprint {
                fds: before.fds,
                ..now.clone()
            } == before;
        if back || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("after: {after:?}");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for fd in std::fs::read_dir(format!("/proc/{}/fd", p.pid())).unwrap().flatten() {
        let target = std::fs::read_link(fd.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        *kinds
            .entry(target.split(':').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    println!("worker fds by kind: {kinds:?}");
    assert!(after.fds <= before.fds + 16, "fds: {} then {}", before.fds, after.fds);
    assert_eq!(
        Footprint {
            fds: before.fds,
            ..after
        },
        before,
        "back to where it started"
    );
    neighbour_ok(&p).await;
}

/// The worker's open files.
fn worker_fds(p: &Platform) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid())).unwrap().count()
}

#[tokio::test]
async fn a_flood_of_runtime_api_connections_is_capped_per_sandbox() {
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats).await;
    neighbour_ok(&p).await;
    // Warm: the hostile sandbox exists (with its pipes, cgroup files and
    // listener) before the worker's fds are counted.
    let r = p.post("hostile", r#"{"do":"nothing"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = worker_fds(&p);
    // 300 connections to its own Runtime API, held for 4 s, half of them
    // with a request head that never ends.
    let flood = {
        let (url, client) = (p.url("/fn/hostile"), reqwest::Client::new());
        tokio::spawn(async move {
            let r = client
                .post(url)
                .body(r#"{"do":"api_flood","connections":300,"hold":4}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let mut most = before;
    let mut neighbour_served = false;
    while !flood.is_finished() {
        most = most.max(worker_fds(&p));
        if !neighbour_served && most > before + 8 {
            // Mid-flood, the worker still serves another function.
            neighbour_ok(&p).await;
            neighbour_served = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = flood.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    println!("flood: {seen}; worker fds {before} before, at most {most} during");
    assert_eq!(seen["opened"], 300, "the sandbox could connect: {seen}");
    assert!(seen["held"].as_u64().unwrap() <= 16, "at most 16 kept: {seen}");
    assert!(
        seen["closed_at_once"].as_u64().unwrap() >= 280,
        "the rest closed at once: {seen}"
    );
    assert!(
        most <= before + 24,
        "worker fds: {before} before, {most} during the flood"
    );
    assert!(neighbour_served, "the flood was seen in the worker's fds at all");
    // Its own runtime connection survived the flood: it answers again.
    let r = p.post("hostile", r#"{"do":"nothing"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    neighbour_ok(&p).await;
}
