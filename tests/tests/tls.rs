//! TLS on the dispatcher's gRPC port, with real certificates (a throwaway CA
//! from `stoke_tests::certs`) and real processes: a `stoke worker` attaches
//! and the CLI deploys, sets a secret and reads state over `https://`, and
//! the secret reaches the function. Plaintext against TLS, an untrusted
//! certificate and a half-configured dispatcher each fail with an error
//! that says what to fix.

use std::process::Stdio;
use std::time::Duration;

use stoke_tests::certs::TestCerts;
use stoke_tests::{
    Cluster, ClusterOptions, Nats, Platform, PlatformOptions, built_binary, cli_command, eventually, hello_with,
};

const SECRET: &str = "s3cret-over-tls";

#[tokio::test]
async fn workers_and_the_cli_work_over_tls_and_mistakes_say_what_to_fix() {
    let certs = TestCerts::generate();
    let nats = Nats::start().await.unwrap();
    // Cluster::start_with waits for the worker to attach (over https://)
    // and reads the attached workers over https:// itself.
    let c = Cluster::start_with(
        &nats.url,
        ClusterOptions {
            dispatchers: 1,
            workers: 1,
            env: certs.dispatcher_env(),
            tls_ca: Some(certs.ca.clone()),
            ..Default::default()
        },
    )
    .await;
    let f = hello_with("");
    c.deploy(f.path());
    let out = c
        .cli()
        .args(["env", "hello", "--secret", "API_KEY"])
        .env("API_KEY", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The event runs on the worker that attached over TLS, with the secret
    // it was sent down that link.
    let reply = reqwest::Client::new()
        .post(format!("http://{}/fn/hello", c.http))
        .body(r#"{"env":"API_KEY"}"#)
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let body = reply.text().await.unwrap();
    assert!(status.is_success() && body.contains(SECRET), "{status} {body}");
    let workers = c.cli().args(["workers", "-o", "json"]).output().unwrap();
    let text = String::from_utf8_lossy(&workers.stdout);
    assert!(workers.status.success() && text.contains(&c.worker_ids[0]), "{text}");

    // Mistakes, each with its fix in the message.
    let fails = |admin: String, ca: Option<&std::path::Path>| {
        let mut cmd = cli_command(&admin);
        if let Some(ca) = ca {
            cmd.env("STOKE_CA_FILE", ca);
        }
        let out = cmd.args(["functions"]).output().unwrap();
        assert!(
            !out.status.success(),
            "{admin}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let plain = fails(format!("http://{}", c.admin), None);
    assert!(plain.contains("use https://"), "plaintext to a TLS port: {plain}");
    let bare = fails(c.admin.clone(), None);
    assert!(bare.contains("use https://"), "no scheme to a TLS port: {bare}");
    let untrusted = fails(format!("https://{}", c.admin), Some(&certs.other_ca));
    assert!(
        untrusted.contains("not trusted") && untrusted.contains("--ca-file"),
        "another CA: {untrusted}"
    );
    let system_roots = fails(format!("https://{}", c.admin), None);
    assert!(
        system_roots.contains("not trusted"),
        "the system's roots: {system_roots}"
    );
    // https:// to a port that does not speak TLS (the broker's HTTP).
    let not_tls = fails(format!("https://{}", c.http), Some(&certs.ca));
    assert!(
        not_tls.contains("did not answer in TLS"),
        "https to plaintext: {not_tls}"
    );
    eprintln!("what the CLI said:\n{plain}{bare}{untrusted}{system_roots}{not_tls}");

    // A worker that does not trust the dispatcher's certificate says so in
    // its log, and never attaches.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut w = std::process::Command::new(built_binary("stoke"))
        .args(["worker", "--dispatcher", &format!("https://{}", c.admin), "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--nats-url", &c.nats_url, "--store", &c.store])
        .env("STOKE_WORKER__CA_FILE", &certs.other_ca)
        .env("STOKE_WORKER__ID", "untrusting")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the worker to log the untrusted certificate",
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("not trusted")
                .then_some(())
        },
    )
    .await;
    let workers = c.cli().args(["workers", "-o", "json"]).output().unwrap();
    let text = String::from_utf8_lossy(&workers.stdout);
    assert!(workers.status.success() && !text.contains("untrusting"), "{text}");
    let _ = w.kill();
    let _ = w.wait();

    // A dispatcher given half a TLS set-up, or a key that is not its
    // certificate's, refuses to start.
    for (env, expected) in [
        (
            vec![("STOKE_DISPATCHER__TLS__CERT_FILE", certs.cert.clone())],
            "needs both cert_file and key_file",
        ),
        (
            vec![
                ("STOKE_DISPATCHER__TLS__CERT_FILE", certs.cert.clone()),
                ("STOKE_DISPATCHER__TLS__KEY_FILE", certs.other_key.clone()),
            ],
            "is the key the certificate's?",
        ),
        (
            vec![
                ("STOKE_DISPATCHER__TLS__CERT_FILE", certs.dir.path().join("missing.pem")),
                ("STOKE_DISPATCHER__TLS__KEY_FILE", certs.key.clone()),
            ],
            "missing.pem",
        ),
    ] {
        let d = dir.path().join("dispatcher");
        let out = std::process::Command::new(built_binary("stoke"))
            .args(["dispatcher", "--admin", "127.0.0.1:0", "--data-dir"])
            .arg(&d)
            .args(["--nats-url", &c.nats_url, "--store", &c.store])
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{expected}: {stderr}"
        );
    }
}

/// `stoke up` with TLS on its gRPC port and HTTPS on its gateway: its own
/// worker is attached in process (no network), so events run, packages
/// included; callers reach the gateway over https:// (plaintext, or a
/// client without the CA, get nothing); the CLI reaches the admin API over
/// https://, and a CA given for a plaintext address is refused before any
/// token could cross in clear.
#[tokio::test]
async fn stoke_up_with_tls_runs_functions_and_serves_the_cli_over_https() {
    let certs = TestCerts::generate();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            env: [certs.dispatcher_env(), certs.gateway_env()].concat(),
            gateway_ca: Some(certs.ca.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(p.url("/").starts_with("https://"));
    assert!(
        p.log().contains(&format!("HTTP gateway  https://{}", p.http)),
        "{}",
        p.log()
    );
    // Connected, then refused by TLS: not a closed port.
    let plain = reqwest::get(format!("http://{}/healthz", p.http)).await.unwrap_err();
    assert!(!plain.is_connect(), "plaintext HTTP: {plain:?}");
    let untrusting = reqwest::get(format!("https://{}/healthz", p.http)).await.unwrap_err();
    assert!(format!("{untrusting:?}").contains("UnknownIssuer"), "{untrusting:?}");
    // HTTP/2 by ALPN, as well as HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap())
        .build()
        .unwrap()
        .get(p.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!((h2.status().as_u16(), h2.version()), (200, reqwest::Version::HTTP_2));
    let cli = |admin: String| {
        let mut cmd = cli_command(&admin);
        cmd.env("STOKE_CA_FILE", &certs.ca);
        cmd
    };
    let f = hello_with("");
    let out = cli(format!("https://{}", p.admin))
        .arg("deploy")
        .arg(f.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = p.post("hello", r#"{"name":"up"}"#).await;
    assert_eq!(r.status, 200, "{} {}", String::from_utf8_lossy(&r.body), p.log());
    assert!(String::from_utf8_lossy(&r.body).contains("Hello, up!"));

    let out = cli(p.admin.clone()).arg("functions").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("use https://"), "{stderr}");
}

/// `stoke up` against a nats-server that requires TLS (`tls://`, trusting
/// the test CA through `[nats_tls] ca_file`) runs events; without the CA it
/// fails to start, saying the certificate is not trusted.
#[tokio::test]
async fn a_nats_server_that_requires_tls_is_reached_over_tls() {
    let certs = TestCerts::generate();
    let nats = Nats::start_tls(&certs).await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            env: vec![("STOKE_NATS_TLS__CA_FILE".into(), certs.ca.display().to_string())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(hello_with("").path());
    let r = p.post("hello", r#"{"name":"tls"}"#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("Hello, tls!"));

    // A refused start: the dispatcher exits, and its stderr says why.
    let dir = tempfile::tempdir().unwrap();
    let refused = |url: String, ca: std::path::PathBuf| {
        let out = tokio::process::Command::new(built_binary("stoke"))
            .args(["dispatcher", "--admin", "127.0.0.1:0", "--nats-url", &url, "--data-dir"])
            .arg(dir.path())
            .env("STOKE_NATS_TLS__CA_FILE", ca)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), out)
                .await
                .expect("a dispatcher that cannot reach NATS exits")
                .unwrap();
            assert!(!out.status.success(), "started against {url}");
            String::from_utf8_lossy(&out.stderr).to_string()
        }
    };
    let untrusted = refused(nats.url.clone(), certs.other_ca.clone()).await;
    assert!(untrusted.contains("not trusted"), "{untrusted}");

    // TLS asked of a server that has none: refused at start, not retried.
    let plain = Nats::start().await.unwrap();
    let not_tls = refused(plain.url.clone(), certs.ca.clone()).await;
    assert!(not_tls.contains("does not speak TLS"), "{not_tls}");
}
