//! The `stoke` CLI as programs use it: `-o json` on every read verb (one
//! document, proto field names, RFC 3339 times, errors as JSON with the gRPC
//! code) and its settings from flags, environment and config file, against
//! a real `stoke up` with tokens required.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use stoke_tests::*;

/// The CLI with the admin token and `-o json`.
struct Json<'a> {
    p: &'a Platform,
    token: &'a str,
}

impl Json<'_> {
    fn run(&self, args: &[&str]) -> Output {
        self.p.cli(&[args, &["-o", "json", "--token", self.token]].concat())
    }

    /// A verb that must succeed; its stdout parsed as one JSON document.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stoke {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&out.stdout)
    }

    /// A verb that must fail: its stderr as the JSON error document.
    fn err(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(!out.status.success(), "stoke {args:?} should fail");
        parse(&out.stderr)
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", String::from_utf8_lossy(bytes)))
}

/// `2026-11-23T10:00:00.123Z`.
fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.as_bytes()[10] == b'T' && s.ends_with('Z') && s.starts_with("20"))
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list:#}"))
}

#[tokio::test]
async fn every_read_verb_prints_one_json_document() {
    let nats = Nats::start().await.unwrap();
    let (p, token) = Platform::start_with_tokens(&nats).await.unwrap();
    let cli = Json { p: &p, token: &token };

    // deploy: the DeployResponse.
    let f = hello_with("max_attempts = 1");
    let d = cli.ok(&["deploy", f.path().to_str().unwrap()]);
    assert_eq!(d["unchanged"], false);
    assert_eq!(
        (d["function"]["name"].as_str(), d["function"]["version"].as_u64()),
        (Some("hello"), Some(1))
    );

    // functions: an array of FunctionInfo.
    let fns = cli.ok(&["functions"]);
    assert_eq!(fns.as_array().unwrap().len(), 1, "{fns}");
    let hello = find(&fns, "name", "hello");
    assert_eq!(hello["version"], 1);
    assert_eq!(hello["memory_mb"], 128);
    assert_eq!(hello["timeout_ms"], 10_000);
    assert_eq!(hello["namespace"], "default");
    assert_eq!(hello["digest"].as_str().unwrap().len(), 64);
    assert!(
        hello["manifest"].as_str().unwrap().starts_with("max_attempts = 1"),
        "{hello}"
    );
    let triggers: Vec<&str> = hello["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(triggers, ["http", "subject greetings.*"]);
    assert!(is_rfc3339(&hello["created_at"]), "{hello}");
    assert!(hello.get("created_unix_ms").is_none());

    let versions = cli.ok(&["versions", "hello"]);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["current"], true);
    assert_eq!(versions[0]["digest"], hello["digest"]);

    // invoke: the InvokeResponse; status: the InvocationInfo.
    let inv = cli.ok(&["invoke", "hello", "--data", r#"{"name":"Jo"}"#]);
    let id = inv["invocation_id"].as_str().unwrap().to_string();
    assert_eq!(inv["invocation"]["invocation_id"], id.as_str());
    assert_eq!(inv["invocation"]["status"], "succeeded");
    let proxy: Value = serde_json::from_str(inv["invocation"]["result"].as_str().unwrap()).unwrap();
    assert!(proxy["body"].as_str().unwrap().contains("Hello, Jo!"), "{proxy}");
    let st = cli.ok(&["status", &id]);
    assert_eq!(st["status"], "succeeded");
    assert_eq!(
        (st["trigger"].as_str(), st["attempts"].as_u64()),
        (Some("admin"), Some(1))
    );
    assert_eq!(st["result"], inv["invocation"]["result"]);
    assert_eq!(st["error"], Value::Null);
    assert!(is_rfc3339(&st["created_at"]) && is_rfc3339(&st["completed_at"]), "{st}");

    // A failed invocation: its document on stdout, the error on stderr, exit 1.
    let out = cli.run(&["invoke", "hello", "--data", r#"{"fail":"boom"}"#]);
    assert!(!out.status.success());
    let failed = parse(&out.stdout);
    assert_eq!(failed["invocation"]["status"], "failed");
    assert_eq!(failed["invocation"]["error"]["error_type"], "ValueError");
    let err = parse(&out.stderr);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("ValueError: boom"),
        "{err}"
    );

    // An async failure, dead-lettered after its one attempt.
    let queued = cli.ok(&["invoke", "hello", "--async", "--data", r#"{"fail":"dead"}"#]);
    assert_eq!(queued["invocation"], Value::Null);
    let dead_id = queued["invocation_id"].as_str().unwrap().to_string();
    let dead = eventually(Duration::from_secs(20), "a dead letter", || async {
        let list = cli.ok(&["dlq", "list"]);
        list.as_array()?
            .iter()
            .find(|d| d["invocation_id"] == dead_id.as_str())
            .cloned()
    })
    .await;
    assert_eq!(
        (dead["reason"].as_str(), dead["attempts"].as_u64()),
        (Some("max_attempts"), Some(1))
    );
    assert_eq!(dead["payload"], r#"{"fail":"dead"}"#, "UTF-8 payloads are strings");
    assert!(dead.get("payload_base64").is_none());
    assert_eq!(dead["error"]["error_type"], "ValueError");
    assert!(is_rfc3339(&dead["dead_at"]), "{dead}");
    assert_eq!(dead["redriven_at"], Value::Null);
    let shown = cli.ok(&["dlq", "show", &dead_id]);
    let attempts = shown["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(attempts[0]["outcome"], "function_error");
    assert!(attempts[0]["worker"].as_str().unwrap().starts_with("w-"), "{shown}");
    assert!(is_rfc3339(&attempts[0]["started_at"]) && attempts[0]["duration_us"].as_u64().unwrap() > 0);
    let dry = cli.ok(&["dlq", "redrive", &dead_id, "--dry-run"]);
    assert_eq!(
        (dry["invocation_ids"][0].as_str(), dry["dry_run"].as_bool()),
        (Some(dead_id.as_str()), Some(true))
    );

    // usage: three attempts, two of them errors.
    let usage = cli.ok(&["usage"]);
    let u = find(&usage, "function", "hello");
    assert_eq!(
        (u["attempts"].as_u64(), u["errors"].as_u64()),
        (Some(3), Some(1 + 1)),
        "{u}"
    );
    assert!(
        u["billed_ms"].as_u64().unwrap() > 0 && u["gb_seconds"].as_f64().unwrap() > 0.0,
        "{u}"
    );
    // ... and as a table: a header and aligned rows.
    let table = p.cli_ok(&["usage", "--token", &token]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("FUNCTION") && lines[1].starts_with("hello "),
        "{table}"
    );
    let gb = lines[1].split_whitespace().nth(5).unwrap();
    assert_eq!(
        lines[0].find("GB_SECONDS").unwrap() + "GB_SECONDS".len(),
        lines[1].find(gb).unwrap() + gb.len(),
        "numbers right-aligned to the header:\n{table}"
    );
    assert!(lines[1].split_whitespace().nth(1) == Some("3"), "{table}");

    let workers = cli.ok(&["workers"]);
    let w = &workers[0];
    assert!(
        w["id"].as_str().unwrap().starts_with("w-") && w["slots"].as_u64().unwrap() > 0,
        "{w}"
    );
    assert_eq!(w["draining"], false);
    assert!(is_rfc3339(&w["attached_at"]), "{w}");
    assert!(w["warm"].is_array());

    let tokens = cli.ok(&["tokens", "list"]);
    let root = find(&tokens, "role", "admin");
    assert_eq!(root["namespace"], "*");
    assert!(
        is_rfc3339(&root["created_at"]) && root["revoked_at"].is_null(),
        "{root}"
    );
    let me = cli.ok(&["tokens", "whoami"]);
    assert_eq!(
        (me["id"].as_str(), me["role"].as_str()),
        (root["id"].as_str(), Some("admin"))
    );

    // cron: create and pause answer the ScheduleInfo; list and ledger are arrays.
    let s = cli.ok(&[
        "cron",
        "create",
        "every-sec",
        "--function",
        "hello",
        "--cron",
        "* * * * * *",
    ]);
    assert_eq!(
        (s["id"].as_str(), s["source"].as_str()),
        (Some("hello@every-sec"), Some("admin"))
    );
    assert_eq!(s["paused"], false);
    let schedules = cli.ok(&["cron", "list"]);
    assert_eq!(find(&schedules, "id", "hello@every-sec")["cron"], "* * * * * *");
    let tick = eventually(Duration::from_secs(20), "a cron tick", || async {
        cli.ok(&["cron", "ledger", "--function", "hello"]).get(0).cloned()
    })
    .await;
    assert_eq!(
        (tick["schedule_id"].as_str(), tick["outcome"].as_str()),
        (Some("hello@every-sec"), Some("fired"))
    );
    assert!(is_rfc3339(&tick["scheduled_at"]) && !tick["invocation_id"].as_str().unwrap().is_empty());
    assert_eq!(cli.ok(&["cron", "pause", "every-sec"])["paused"], true);
    assert_eq!(cli.ok(&["cron", "delete", "every-sec"]), serde_json::json!({}));

    // Errors: one JSON line on stderr with the gRPC code.
    let e = cli.err(&["status", "no-such-invocation"]);
    assert_eq!(e["error"]["code"], "NOT_FOUND", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("no-such-invocation"),
        "{e}"
    );
    let out = p.cli(&["functions", "-o", "json", "--token", "stoke_wrong"]);
    assert_eq!(parse(&out.stderr)["error"]["code"], "UNAUTHENTICATED");
    assert!(out.stdout.is_empty());
}

/// `stoke` with only the environment given (and HOME a temp dir, so the
/// caller's own ~/.config/stoke is not read).
fn stoke(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(built_binary("stoke"));
    for var in [
        "STOKE_ADMIN",
        "STOKE_CONFIG",
        "STOKE_TOKEN",
        "STOKE_TOKEN_FILE",
        "STOKE_OUTPUT",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run stoke")
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_config_file_supplies_admin_token_and_output_and_flags_win() {
    let nats = Nats::start().await.unwrap();
    let (p, token) = Platform::start_with_tokens(&nats).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let config = h.join(".config/stoke/config.toml");
    write(
        &config,
        &format!("admin = \"{}\"\ntoken = \"{token}\"\noutput = \"json\"\n", p.admin),
        0o600,
    );

    // Everything from ~/.config/stoke/config.toml.
    let out = stoke(h, &[], &["tokens", "whoami"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(parse(&out.stdout)["role"], "admin");

    // Flags win over the file...
    let out = stoke(h, &[], &["tokens", "whoami", "-o", "table"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(role admin, namespace *)"),
        "{out:?}"
    );
    let out = stoke(h, &[], &["tokens", "whoami", "--token", "stoke_wrong"]);
    assert_eq!(parse(&out.stderr)["error"]["code"], "UNAUTHENTICATED", "{out:?}");
    let closed = format!("127.0.0.1:{}", free_port());
    let out = stoke(h, &[], &["functions", "--admin", &closed]);
    assert_eq!(parse(&out.stderr)["error"]["code"], "UNAVAILABLE", "{out:?}");
    assert!(stderr(&out).contains(&closed));
    // ... and so does the environment.
    let out = stoke(h, &[("STOKE_ADMIN", &closed)], &["functions"]);
    assert!(!out.status.success() && stderr(&out).contains(&closed), "{out:?}");
    let out = stoke(h, &[("STOKE_OUTPUT", "table")], &["tokens", "whoami"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(role admin"), "{out:?}");

    // A token in a file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = stoke(h, &[], &["functions"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("chmod 600") && stderr(&out).contains("config.toml"),
        "{}",
        stderr(&out)
    );

    // $STOKE_CONFIG names another file (and beats ~/.config): one shared with
    // the servers' settings, its token in a token_file beside it.
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("stoke.toml");
    write(&dir.path().join("admin.token"), &token, 0o600);
    write(
        &shared,
        &format!(
            "admin = \"{}\"\ntoken_file = \"admin.token\"\ndata_dir = \"/srv/stoke\"\n[worker]\nslots = 4\n",
            p.admin
        ),
        0o644,
    );
    let env = [("STOKE_CONFIG", shared.to_str().unwrap())];
    let out = stoke(h, &env, &["tokens", "whoami"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(role admin"),
        "table by default: {out:?}"
    );
    std::fs::set_permissions(dir.path().join("admin.token"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(stderr(&stoke(h, &env, &["functions"])).contains("chmod 600"));

    write(&shared, "admn = \"x\"\n", 0o600);
    assert!(stderr(&stoke(h, &env, &["functions"])).contains("unknown key `admn`"));
    let missing = [("STOKE_CONFIG", "/nonexistent/stoke.toml")];
    assert!(stderr(&stoke(h, &missing, &["functions"])).contains("not found"));
}
