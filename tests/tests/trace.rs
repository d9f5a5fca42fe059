//! W3C trace context from the caller into the function, through real
//! processes: an HTTP `traceparent` (or a message's NATS header) reaches
//! the function as `_X_AMZN_TRACE_ID` in X-Ray form and as `TRACEPARENT`;
//! without one, each event gets a fresh, well-formed trace. And the logs,
//! as JSON from every role, name the trace id.

use std::time::Duration;

use stoke_tests::{
    Cluster, ClusterOptions, Nats, Platform, PlatformOptions, copy_function, eventually, free_port, workspace_root,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const XRAY: &str = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";

/// `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`, and its trace id.
fn xray_trace_id(xray: &str) -> String {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    let parts: Vec<&str> = xray.split(';').collect();
    assert_eq!(parts.len(), 3, "{xray}");
    let root: Vec<&str> = parts[0].strip_prefix("Root=").expect("Root=").split('-').collect();
    assert!(
        root.len() == 3 && root[0] == "1" && hex(root[1], 8) && hex(root[2], 24),
        "{xray}"
    );
    let parent = parts[1].strip_prefix("Parent=").expect("Parent=");
    assert!(hex(parent, 16) && parent != "0000000000000000", "{xray}");
    assert!(parts[2] == "Sampled=1" || parts[2] == "Sampled=0", "{xray}");
    format!("{}{}", root[1], root[2])
}

/// The hello example's answer to `{"env": var}`: that variable as the
/// function saw it while handling this event.
async fn env_seen(p: &Platform, var: &str, headers: &[(&str, &str)]) -> String {
    let r = p.post_with("hello", format!(r#"{{"env": "{var}"}}"#), headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body: serde_json::Value = r.json();
    body["env"]
        .as_str()
        .unwrap_or_else(|| panic!("{var} not set: {body}"))
        .to_string()
}

#[tokio::test]
async fn a_runtime_function_sees_the_callers_trace() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            env: vec![("RUST_LOG".into(), "info,stoke_dispatcher=debug,stoke_bus=debug".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));

    // The caller's traceparent: the X-Ray form Lambda clients expect, and
    // the W3C form as it came (stoke adds no span of its own).
    let tp = [("traceparent", TRACEPARENT)];
    assert_eq!(env_seen(&p, "_X_AMZN_TRACE_ID", &tp).await, XRAY);
    assert_eq!(env_seen(&p, "TRACEPARENT", &tp).await, TRACEPARENT);
    // An X-Ray header alone is understood too.
    let xr = [("X-Amzn-Trace-Id", XRAY)];
    assert_eq!(env_seen(&p, "TRACEPARENT", &xr).await, TRACEPARENT);

    // No header, or a malformed one: never an error, a fresh trace each time.
    let a = env_seen(&p, "_X_AMZN_TRACE_ID", &[]).await;
    let b = env_seen(&p, "_X_AMZN_TRACE_ID", &[]).await;
    assert_ne!(xray_trace_id(&a), xray_trace_id(&b));
    assert!(a.ends_with(";Sampled=1"), "{a}");
    let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let c = env_seen(&p, "_X_AMZN_TRACE_ID", &[("traceparent", bad)]).await;
    let fresh = xray_trace_id(&c);
    assert!(fresh != TRACE_ID && fresh != xray_trace_id(&a), "{c}");
    let c = env_seen(&p, "TRACEPARENT", &[("traceparent", "garbage")]).await;
    assert!(c.starts_with("00-") && c.len() == 55 && c.ends_with("-01"), "{c}");

    // The dispatcher's and the worker's spans carry the trace id.
    let log = p.log();
    let spans: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("trace_id={TRACE_ID}")))
        .collect();
    assert!(
        spans
            .iter()
            .any(|l| l.contains("stoke_dispatcher") && l.contains("completed")),
        "{log}"
    );
    assert!(spans.iter().any(|l| l.contains("stoke_bus::invoke")), "{log}");

    // A message on a subscribed subject, with a traceparent header from
    // a plain NATS client.
    let client = async_nats::connect(&nats.url).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    client
        .publish_with_headers("greetings.trace", headers, r#"{"env": "_X_AMZN_TRACE_ID"}"#.into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let db = p.db().await;
    let result: Vec<u8> = eventually(Duration::from_secs(20), "the subject event to complete", || async {
        sqlx::query_scalar("SELECT result FROM completions WHERE function = 'hello' AND trigger = 'subject'")
            .fetch_optional(&db)
            .await
            .unwrap()
    })
    .await;
    let proxy: serde_json::Value = serde_json::from_slice(&result).unwrap();
    let body: serde_json::Value = serde_json::from_str(proxy["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["env"], "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1",
        "{body}"
    );
}

#[tokio::test]
async fn an_exec_mode_function_gets_the_trace_in_its_environment() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let f = copy_function(&workspace_root().join("tests/fixtures/trace-echo"));
    p.deploy(f.path());

    let r = p.post_with("trace-echo", "{}", &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["xray"], XRAY, "{seen}");
    assert_eq!(seen["traceparent"], TRACEPARENT, "{seen}");

    let fresh = p
        .post_with("trace-echo", "{}", &[("traceparent", "00-zz")])
        .await
        .json();
    let id = xray_trace_id(fresh["xray"].as_str().unwrap());
    let tp = fresh["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{id}-")),
        "both forms name one trace: {fresh}"
    );
    assert_ne!(id, TRACE_ID);
}

/// Every line a role writes with `--log-json` is one JSON object; the
/// invocation's lines carry its trace id in their span.
fn check_json_log(name: &str, text: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "{name} logged nothing");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{name}: {l}");
    }
    lines
}

fn traced(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["span"]["trace_id"] == TRACE_ID || l["fields"]["trace_id"] == TRACE_ID)
        .collect()
}

#[tokio::test]
async fn json_logs_from_every_role_carry_the_trace_id() {
    let nats = Nats::start().await.unwrap();

    // All roles in one process: stdout and stderr both JSON.
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            args: vec!["--log-json".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(&workspace_root().join("examples/hello-python"));
    let r = p.post_with("hello", "{}", &[("traceparent", TRACEPARENT)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = check_json_log("stoke up", &p.log());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "stoke is up" && l["fields"]["metrics"].is_string()),
        "the banner is a log event"
    );
    let t = traced(&lines);
    assert!(
        t.iter()
            .any(|l| l["fields"]["message"] == "completed" && l["span"]["name"] == "invocation"),
        "{t:?}"
    );
    drop(p);

    // Each role on its own (and the dispatcher's metrics on a listener of
    // their own, set through the environment: the broker and the worker
    // read the same config and ignore it).
    let metrics = format!("127.0.0.1:{}", free_port());
    let c = Cluster::start_with(
        &nats.url,
        ClusterOptions {
            dispatchers: 1,
            workers: 1,
            args: vec!["--log-json".into()],
            env: vec![
                ("RUST_LOG".into(), "info,stoke_bus=debug".into()),
                ("STOKE_DISPATCHER__METRICS_LISTEN".into(), metrics.clone()),
            ],
            ..Default::default()
        },
    )
    .await;
    c.deploy(&workspace_root().join("examples/hello-python"));
    let client = reqwest::Client::new();
    let url = format!("http://{}/fn/hello", c.http);
    let status = eventually(Duration::from_secs(30), "the worker to attach and answer", || async {
        let r = client
            .post(&url)
            .header("traceparent", TRACEPARENT)
            .body("{}")
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(r.status())
    })
    .await;
    assert!(status.is_success());
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("stoke_workers 1\n")
            && text.contains(r#"stoke_invocations_total{function="hello",outcome="success"} 1"#),
        "{text}"
    );
    let mut roles = Vec::new();
    for e in std::fs::read_dir(c.dir.path()).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "log") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let lines = check_json_log(&name, &std::fs::read_to_string(&path).unwrap());
            roles.push((name, traced(&lines).len()));
        }
    }
    roles.sort();
    let traced_in = |role: &str| roles.iter().any(|(n, t)| n.starts_with(role) && *t > 0);
    assert!(
        traced_in("broker") && traced_in("dispatcher") && traced_in("worker"),
        "every role logs the trace id: {roles:?}"
    );
}
