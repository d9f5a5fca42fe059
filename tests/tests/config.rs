//! A function's configuration through the admin API, against a real
//! `stoke up`: environment variables and secrets (a new version per change,
//! carried over by deploys, restored by rollback, secret values never shown
//! or logged) and aliases (`name:alias`, `name:7`, over gRPC and HTTP).

use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "s3cr3t-value-7f1c";

/// hello-python with `GREETING_V = v` in its manifest's [env].
fn hello_v(v: &str) -> tempfile::TempDir {
    let dir = hello_with("");
    let manifest = std::fs::read_to_string(dir.path().join("stoke.toml")).unwrap();
    let manifest = format!("{manifest}\n[env]\nGREETING_V = \"{v}\"\n");
    std::fs::write(dir.path().join("stoke.toml"), manifest).unwrap();
    dir
}

/// What `name` (qualified or not) sees in its environment as `var`, and the
/// version that ran.
async fn env_of(c: &mut AdminServiceClient<Channel>, name: &str, var: &str) -> Result<(String, u32), tonic::Status> {
    let r = c
        .invoke(InvokeRequest {
            function: name.into(),
            payload: format!(r#"{{"env": "{var}"}}"#).into_bytes(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let inv = r.invocation.expect("sync invoke");
    assert_eq!(inv.status, InvocationStatus::Succeeded as i32, "{inv:?}");
    assert_eq!(inv.function, "hello", "the plain name is recorded");
    let body: serde_json::Value = serde_json::from_slice(&inv.result).unwrap();
    let inner: serde_json::Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    Ok((inner["env"].as_str().unwrap_or_default().to_string(), inv.version))
}

fn set_env(function: &str, set: &[(&str, &str)], secrets: &[(&str, &str)], unset: &[&str]) -> SetEnvRequest {
    let map = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SetEnvRequest {
        function: function.into(),
        set: map(set),
        set_secrets: map(secrets),
        unset: unset.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn env_and_secrets_make_versions_and_secrets_never_come_back() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let v1 = hello_v("toml");
    p.deploy(v1.path());
    assert_eq!(env_of(&mut c, "hello", "GREETING_V").await.unwrap(), ("toml".into(), 1));

    // A plain variable (through the CLI) overrides the manifest's; a
    // secret (through the client) reaches the function. Each is a version.
    let out = p.cli_ok(&["env", "hello", "GREETING_V=api", "EXTRA=x", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["env"],
        serde_json::json!({"GREETING_V": "api", "EXTRA": "x"}),
        "{out}"
    );
    let r = c
        .set_env(set_env("hello", &[], &[("API_KEY", SECRET)], &[]))
        .await
        .unwrap()
        .into_inner();
    let info = r.function.unwrap();
    assert_eq!((info.version, r.unchanged), (3, false));
    assert_eq!(info.secret_names, vec!["API_KEY".to_string()]);
    assert_eq!(info.env.get("GREETING_V").map(String::as_str), Some("api"));
    assert_eq!(env_of(&mut c, "hello", "GREETING_V").await.unwrap(), ("api".into(), 3));
    assert_eq!(env_of(&mut c, "hello", "API_KEY").await.unwrap(), (SECRET.into(), 3));

    // The same edit again changes nothing.
    let r = c
        .set_env(set_env("hello", &[("GREETING_V", "api")], &[], &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.function.unwrap().version, r.unchanged), (3, true));

    // The secret's value is nowhere to be read back: not in GetFunction,
    // ListVersions, the CLI, or the platform's log.
    let got = c
        .get_function(GetFunctionRequest { name: "hello".into() })
        .await
        .unwrap()
        .into_inner();
    let versions = c
        .list_versions(ListVersionsRequest { name: "hello".into() })
        .await
        .unwrap()
        .into_inner();
    let shown = p.cli_ok(&["env", "hello"]);
    let row = |name: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(row("API_KEY").unwrap(), ["API_KEY", "<secret>", "secret"], "{shown}");
    assert_eq!(row("GREETING_V").unwrap(), ["GREETING_V", "api", "variable"], "{shown}");
    // Nor in the database: sealed there, under a key kept beside it.
    let stored: Vec<String> = sqlx::query_scalar("SELECT config FROM function_versions WHERE function = 'hello'")
        .fetch_all(&p.db().await)
        .await
        .unwrap();
    assert!(stored.iter().any(|c| c.contains("sealed:v1:")), "{stored:?}");
    let key = p.data_dir.path().join("secrets.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    for text in [
        stored.join("\n"),
        format!("{got:?}"),
        format!("{versions:?}"),
        shown,
        p.cli_ok(&["functions", "-o", "json"]),
        p.cli_ok(&["env", "hello", "-o", "json"]),
        p.log(),
    ] {
        assert!(!text.contains(SECRET), "secret shown: {text}");
    }

    // A deploy of a new package keeps the configuration set through the API.
    let v2 = hello_v("toml-2");
    p.deploy(v2.path());
    assert_eq!(env_of(&mut c, "hello", "API_KEY").await.unwrap(), (SECRET.into(), 4));
    assert_eq!(env_of(&mut c, "hello", "GREETING_V").await.unwrap(), ("api".into(), 4));
    // Unset removes plain and secret names alike.
    c.set_env(set_env("hello", &[], &[], &["API_KEY", "GREETING_V"]))
        .await
        .unwrap();
    assert_eq!(
        env_of(&mut c, "hello", "GREETING_V").await.unwrap(),
        ("toml-2".into(), 5)
    );
    assert_eq!(env_of(&mut c, "hello", "API_KEY").await.unwrap(), (String::new(), 5));
    // A rollback to version 3 brings its configuration back with its code.
    p.cli_ok(&["rollback", "hello", "--to", "3"]);
    assert_eq!(env_of(&mut c, "hello", "API_KEY").await.unwrap(), (SECRET.into(), 3));

    // Refusals say what is wrong, and record nothing.
    for (req, code, says) in [
        (
            set_env("hello", &[("1BAD", "x")], &[], &[]),
            Code::InvalidArgument,
            "1BAD",
        ),
        (
            set_env("hello", &[], &[("AWS_LAMBDA_RUNTIME_API", "x")], &[]),
            Code::InvalidArgument,
            "reserved",
        ),
        (
            set_env("hello", &[("A", "x\0y")], &[], &[]),
            Code::InvalidArgument,
            "NUL",
        ),
        (
            set_env("hello", &[("BIG", &"x".repeat(5000))], &[], &[]),
            Code::InvalidArgument,
            "4096",
        ),
        (
            set_env("hello", &[], &[], &[]),
            Code::InvalidArgument,
            "nothing to change",
        ),
        (set_env("nope", &[("A", "1")], &[], &[]), Code::NotFound, "nope"),
    ] {
        let err = c.set_env(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(says), "{err:?}");
    }
    let after = c
        .list_versions(ListVersionsRequest { name: "hello".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.versions.len(), after.current_version), (5, 3));
}

#[tokio::test]
async fn aliases_and_version_numbers_pick_what_runs() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let (a, b) = (hello_v("one"), hello_v("two"));
    p.deploy(a.path());
    p.deploy(b.path());

    let out = p.cli_ok(&["alias", "set", "hello", "live", "--version", "1"]);
    assert!(out.contains("hello:live -> v1"), "{out}");
    c.set_alias(SetAliasRequest {
        function: "hello".into(),
        name: "next".into(),
        version: 0,
    })
    .await
    .unwrap();
    assert_eq!(env_of(&mut c, "hello", "GREETING_V").await.unwrap(), ("two".into(), 2));
    assert_eq!(
        env_of(&mut c, "hello:live", "GREETING_V").await.unwrap(),
        ("one".into(), 1)
    );
    assert_eq!(
        env_of(&mut c, "hello:next", "GREETING_V").await.unwrap(),
        ("two".into(), 2)
    );
    assert_eq!(
        env_of(&mut c, "hello:1", "GREETING_V").await.unwrap(),
        ("one".into(), 1)
    );
    let got = c
        .get_function(GetFunctionRequest {
            name: "hello:live".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.name.as_str(), got.version), ("hello", 1));

    // Over HTTP too.
    let reply = p.post("hello:live", r#"{"env": "GREETING_V"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["env"], "one", "{}", reply.text());
    assert_eq!(p.post("hello:gone", "{}").await.status, 404);

    // Moving an alias takes effect for the next invoke.
    p.cli_ok(&["alias", "set", "hello", "live"]);
    assert_eq!(
        env_of(&mut c, "hello:live", "GREETING_V").await.unwrap(),
        ("two".into(), 2)
    );
    let list: serde_json::Value = serde_json::from_str(&p.cli_ok(&["alias", "list", "hello", "-o", "json"])).unwrap();
    let pairs: Vec<(&str, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(pairs, [("live", 2), ("next", 2)]);

    for (req, code) in [
        (("hello", "live", 9), Code::NotFound),
        (("hello", "7", 1), Code::InvalidArgument),
        (("hello", "Live", 1), Code::InvalidArgument),
        (("nope", "live", 1), Code::NotFound),
    ] {
        let err = c
            .set_alias(SetAliasRequest {
                function: req.0.into(),
                name: req.1.into(),
                version: req.2,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
    }
    for name in ["hello:gone", "hello:9", "nope:live"] {
        let err = env_of(&mut c, name, "GREETING_V").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
    }

    p.cli_ok(&["alias", "delete", "hello", "live"]);
    let err = env_of(&mut c, "hello:live", "GREETING_V").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .delete_alias(DeleteAliasRequest {
            function: "hello".into(),
            name: "live".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// hello-python under another name, its http trigger wanting a token.
fn protected(name: &str) -> tempfile::TempDir {
    let dir = hello_with("");
    let manifest = std::fs::read_to_string(dir.path().join("stoke.toml")).unwrap();
    let manifest = manifest
        .replace("name = \"hello\"", &format!("name = \"{name}\""))
        .replace("http = true", "http = true\nauth = \"token\"");
    assert!(manifest.contains("auth = \"token\""));
    std::fs::write(dir.path().join("stoke.toml"), manifest).unwrap();
    dir
}

async fn token(c: &mut AdminServiceClient<Channel>, namespace: &str, role: &str) -> String {
    c.create_token(CreateTokenRequest {
        name: format!("{role}-{namespace}"),
        namespace: namespace.into(),
        role: role.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .secret
}

#[tokio::test]
async fn token_protected_http_triggers_refuse_callers_without_the_right_token() {
    let nats = Nats::start().await.unwrap();
    // The admin API's auth is off (loopback): the trigger's token check
    // holds anyway.
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let guarded = protected("guarded");
    p.deploy(guarded.path());
    p.deploy(hello_with("").path());
    let listed = p.cli_ok(&["functions"]);
    assert!(listed.contains("http (token)"), "{listed}");

    let invoker = token(&mut c, "default", "invoker").await;
    let reader = token(&mut c, "default", "reader").await;
    let elsewhere = token(&mut c, "team-x", "invoker").await;
    let worker = token(&mut c, "*", "worker").await;
    let bearer = |t: &str| format!("Bearer {t}");

    let r = p.post("guarded", "{}").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Stoke.Unauthenticated");
    assert!(
        r.json()["errorMessage"].as_str().unwrap().contains("requires a token"),
        "{}",
        r.text()
    );
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = p.post_with("guarded", "{}", &[("authorization", "Bearer nope")]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    for t in [&reader, &elsewhere, &worker] {
        let r = p.post_with("guarded", "{}", &[("authorization", &bearer(t))]).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["errorType"], "Stoke.Forbidden");
    }
    let r = p
        .post_with("guarded", r#"{"name":"Ada"}"#, &[("authorization", &bearer(&invoker))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Ada"), "{}", r.text());
    // A refused call left nothing behind: one invocation only.
    let db = p.db().await;
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM attempts WHERE function = 'guarded'").await,
        1
    );

    // Its results are for token holders too.
    let r = p
        .post_with(
            "guarded",
            "{}",
            &[("authorization", &bearer(&invoker)), ("prefer", "respond-async")],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.json()["location"].as_str().unwrap().to_string();
    assert_eq!(p.get(&location).await.status, 401);
    let client = reqwest::Client::new();
    let r = client
        .get(p.url(&location))
        .header("authorization", bearer(&invoker))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A public trigger stays public; the admin API invokes either.
    assert_eq!(p.post("hello", "{}").await.status, 200);
    let r = c
        .invoke(InvokeRequest {
            function: "guarded".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.invocation.unwrap().status, InvocationStatus::Succeeded as i32);

    // Deleting the function does not make its results public.
    p.cli_ok(&["delete", "guarded"]);
    assert_eq!(p.get(&location).await.status, 401);
}

/// Every dispatcher of a cluster must seal with the same key: the first
/// one's is recorded in the store (if it opens the secrets already there),
/// a dispatcher with another key refuses to start and says what to do, and
/// `secrets_key_adopt` lets a new key take over (for a lost one).
#[tokio::test]
async fn a_dispatcher_with_another_secrets_key_refuses_to_start() {
    let nats = Nats::start().await.unwrap();
    // One dispatcher (with the cluster's shared key file) records its key.
    let c = Cluster::start(&nats, 0).await;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", c.db_path().display()))
        .await
        .unwrap();
    let recorded = || async {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE name = 'secrets_key_fingerprint'")
            .fetch_optional(&db)
            .await
            .unwrap()
    };
    let first = recorded().await.expect("the first dispatcher's key is recorded");
    let dir = tempfile::tempdir().unwrap();
    let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let start = |adopt: bool| {
        // Its own data dir: a key file of its own, made at start.
        let mut cmd = std::process::Command::new(built_binary("stoke"));
        let args = [
            "dispatcher",
            "--admin",
            "127.0.0.1:0",
            "--nats-url",
            &nats.url,
            "--store",
            &c.store,
        ];
        cmd.args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        if adopt {
            cmd.env("STOKE_DISPATCHER__SECRETS_KEY_ADOPT", "true");
        }
        cmd.spawn().unwrap()
    };
    // Started: its first line on stdout says where it listens (a refusal
    // ends it, and its stdout, at once); then stop it.
    let runs = |mut child: std::process::Child| {
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line.contains("stoke dispatcher: workers and admin API")
    };

    assert!(!runs(start(false)), "another key started");
    let refused = stderr();
    assert!(
        refused.contains("is not the one this store's secrets are sealed with"),
        "{refused}"
    );
    assert!(
        refused.contains("secrets_key_adopt") && refused.contains(&first),
        "{refused}"
    );
    assert_eq!(
        recorded().await.as_deref(),
        Some(first.as_str()),
        "a refused key is not recorded"
    );

    // A store with sealed secrets and no record yet (one from before the
    // record): a key that cannot open them is not recorded either.
    let f = hello_with("");
    c.deploy(f.path());
    let out = c
        .cli()
        .args(["env", "hello", "--secret", "API_KEY"])
        .env("API_KEY", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    sqlx::query("DELETE FROM settings").execute(&db).await.unwrap();
    assert!(
        !runs(start(false)),
        "a key that cannot open the store's secrets started"
    );
    let refused = stderr();
    assert!(
        refused.contains("cannot open secrets already sealed") && refused.contains("API_KEY"),
        "{refused}"
    );
    assert_eq!(recorded().await, None, "nothing recorded");

    // Adopting: it starts, its key is recorded, and it starts again without
    // adopting.
    assert!(runs(start(true)), "adopting starts: {}", stderr());
    let adopted = recorded().await.expect("recorded");
    assert_ne!(adopted, first);
    assert!(runs(start(false)), "the adopted key is the recorded one: {}", stderr());
}
