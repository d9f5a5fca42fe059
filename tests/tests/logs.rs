//! Function output (`GetLogs`, `TailLogs`, `stoke logs`) against a real
//! `stoke up`: one invocation's lines in order with their attempts (also
//! when written just before the answer), a retried invocation's attempts, a
//! live tail, the log cap's marker, start-up output (a cold start's belongs
//! to its invocation, a provisioned sandbox's to none), exec mode's stderr,
//! namespaces and unknown ids.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;

type Client = AdminClient;

/// hello-python's runtime with tests/fixtures/logs/printer.py as handler.
fn printer() -> tempfile::TempDir {
    printer_with("printer", "")
}

/// The printer under another name, with `extra` manifest lines.
fn printer_with(name: &str, extra: &str) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::copy(
        workspace_root().join("tests/fixtures/logs/printer.py"),
        f.path().join("printer.py"),
    )
    .unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            r#"name = "{name}"
command = ["python3", "-u", "stoke_runtime.py"]
handler = "printer.handler"
memory = 128
timeout = 10
max_attempts = 3
retry_backoff_ms = 100
retry_backoff_max_ms = 200
{extra}

[[triggers]]
http = true
"#
        ),
    )
    .unwrap();
    f
}

async fn invoke(c: &mut Client, function: &str, payload: serde_json::Value, is_async: bool) -> InvokeResponse {
    c.invoke(InvokeRequest {
        function: function.into(),
        payload: payload.to_string().into_bytes(),
        r#async: is_async,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|s| panic!("invoke {function}: {s}"))
    .into_inner()
}

async fn logs(c: &mut Client, id: &str, attempt: u32) -> Result<GetLogsResponse, tonic::Status> {
    c.get_logs(GetLogsRequest {
        invocation_id: id.into(),
        attempt,
    })
    .await
    .map(|r| r.into_inner())
}

/// (attempt, stream, text) of each line.
fn seen(lines: &[LogLine]) -> Vec<(u32, &'static str, String)> {
    lines
        .iter()
        .map(|l| {
            let stream = match LogStream::try_from(l.stream) {
                Ok(LogStream::Stdout) => "stdout",
                Ok(LogStream::Stderr) => "stderr",
                _ => "?",
            };
            (l.attempt, stream, l.text.clone())
        })
        .collect()
}

#[tokio::test]
async fn an_invocations_output_is_read_back_by_attempt_and_namespace() {
    let nats = Nats::start().await.unwrap();
    let (p, root) = Platform::start_with_tokens(&nats).await.unwrap();
    let mut root_c = admin_client(&p, root.trim()).await;
    let a_deploy = mint(&mut root_c, "a-ci", "team-a", "deployer").await;
    let a_read = mint(&mut root_c, "a-dash", "team-a", "reader").await;
    let b_read = mint(&mut root_c, "b-dash", "team-b", "reader").await;
    let f = printer();
    let out = p.cli(&["deploy", f.path().to_str().unwrap(), "--token", &a_deploy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut a = admin_client(&p, &a_deploy).await;
    let mut reader = admin_client(&p, &a_read).await;
    let mut b = admin_client(&p, &b_read).await;

    // A synchronous invoke: once it returned, its output is all there, in
    // order, with its attempt and streams.
    let started = Instant::now();
    let r = invoke(
        &mut a,
        "printer",
        serde_json::json!({"out": ["one", "two", "three"], "err": ["oops", "again"]}),
        false,
    )
    .await;
    let info = r.invocation.expect("sync invoke");
    assert_eq!(info.status, InvocationStatus::Succeeded as i32, "{info:?}");
    let got = logs(&mut reader, &r.invocation_id, 0).await.unwrap();
    println!("sync invoke + GetLogs: {:?}", started.elapsed());
    assert_eq!(got.function, "printer");
    assert!(!got.truncated);
    let expected = [
        (1, "stdout", "one #1"),
        (1, "stdout", "two #1"),
        (1, "stdout", "three #1"),
        (1, "stderr", "oops #1"),
        (1, "stderr", "again #1"),
    ]
    .map(|(a, s, t)| (a, s, t.to_string()));
    assert_eq!(seen(&got.lines), expected);
    assert!(got.lines.iter().all(|l| l.invocation_id == r.invocation_id));
    let now = stoke_core::now_ms();
    assert!(
        got.lines.iter().all(|l| l.unix_ms <= now && l.unix_ms > now - 60_000),
        "{:?}",
        got.lines
    );
    assert!(got.lines.windows(2).all(|w| w[0].unix_ms <= w[1].unix_ms));

    // Lines written just before the answer are there too: the worker reads
    // the pipes dry before it reports the result. (1000 lines, over 64 KiB:
    // several chunks.)
    let many: Vec<String> = (0..1000).map(|i| format!("line {i:04} {}", "x".repeat(60))).collect();
    let r2 = invoke(&mut a, "printer", serde_json::json!({"out": many}), false).await;
    let got = logs(&mut reader, &r2.invocation_id, 0).await.unwrap();
    let texts: Vec<String> = got.lines.iter().map(|l| l.text.clone()).collect();
    let wanted: Vec<String> = many.iter().map(|l| format!("{l} #1")).collect();
    assert_eq!(texts.len(), wanted.len(), "last seen: {:?}", texts.last());
    assert!(texts == wanted, "lines out of order");

    // The CLI prints the same lines.
    let out = p.cli_ok(&["logs", "--invocation", &r.invocation_id, "--token", &a_read]);
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 5, "{out}");
    for (line, (_, stream, text)) in printed.iter().zip(&expected) {
        assert!(line.ends_with(&format!(" 1 {stream} {text}")), "{line:?} in\n{out}");
    }

    // A retried invocation: every attempt's lines, attempt by attempt.
    let r = invoke(
        &mut a,
        "printer",
        serde_json::json!({"out": ["try"], "err": ["bad"], "fail_until": 3}),
        true,
    )
    .await;
    let id = r.invocation_id.clone();
    eventually(Duration::from_secs(30), "the retried invocation to succeed", || {
        let (mut a, id) = (a.clone(), id.clone());
        async move {
            let info = a
                .get_invocation(GetInvocationRequest { invocation_id: id })
                .await
                .ok()?
                .into_inner();
            (info.status == InvocationStatus::Succeeded as i32).then_some(())
        }
    })
    .await;
    let got = logs(&mut reader, &id, 0).await.unwrap();
    let expected: Vec<_> = (1..=3)
        .flat_map(|n| [(n, "stdout", format!("try #{n}")), (n, "stderr", format!("bad #{n}"))])
        .collect();
    assert_eq!(seen(&got.lines), expected);
    let second = logs(&mut reader, &id, 2).await.unwrap();
    assert_eq!(seen(&second.lines), expected[2..4]);

    // Another namespace's reader may not read them, nor tail the function.
    let err = logs(&mut b, &id, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("another namespace"), "{}", err.message());
    let err = b
        .tail_logs(TailLogsRequest {
            function: "printer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let stderr = p.cli_err(&["logs", "--invocation", &id, "--token", &b_read]);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");

    // Unknown ids (including ones that look like subject wildcards) are
    // NOT_FOUND, saying why; an empty one is refused.
    for unknown in ["0193c0de-7a51-7c3e-9a1b-2f4c5d6e7f80", ">", "*", "a.b"] {
        let err = logs(&mut root_c, unknown, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
        assert!(
            err.message().contains("no invocation") && err.message().contains("no stored output"),
            "{}",
            err.message()
        );
    }
    let err = logs(&mut root_c, "", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = reader
        .tail_logs(TailLogsRequest {
            function: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn a_tail_follows_output_live_and_the_cap_is_marked() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with(
        &nats,
        PlatformOptions {
            // 4 KiB of output per invocation.
            env: vec![("STOKE_WORKER__LOG_CAP_BYTES".into(), "4096".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.deploy(printer().path());
    p.deploy(&workspace_root().join("examples/wordcount"));
    let mut c = admin_client(&p, "").await;

    // A tail started before the invoke gets its lines as they are written:
    // the stdout line while the function still sleeps before its stderr one.
    let mut tail = c
        .tail_logs(TailLogsRequest {
            function: "printer".into(),
            since_unix_ms: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let invoked = Instant::now();
    let r = invoke(
        &mut c,
        "printer",
        serde_json::json!({"out": ["tick"], "err": ["tock"], "pause": 3}),
        true,
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .unwrap();
    let latency = invoked.elapsed();
    println!("first tailed line {latency:?} after the invoke");
    assert_eq!(
        (first.text.as_str(), first.invocation_id.as_str(), first.attempt),
        ("tick #1", r.invocation_id.as_str(), 1)
    );
    assert_eq!(first.function, "printer");
    assert!(latency < Duration::from_millis(2500), "not live: {latency:?}");
    let second = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("the second line")
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.text.as_str(), second.stream),
        ("tock #1", LogStream::Stderr as i32)
    );
    drop(tail);

    // The CLI's follow mode prints lines as they come.
    let mut follow = std::process::Command::new(built_binary("stoke"))
        .args(["logs", "printer", "-f"])
        .env("STOKE_ADMIN", &p.admin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    // Its consumer exists once it has connected; invoke until a line shows.
    let shown = eventually(Duration::from_secs(20), "`stoke logs -f` to print a line", || {
        let mut c = c.clone();
        let got = line_rx.try_recv().ok();
        async move {
            if got.is_none() {
                invoke(&mut c, "printer", serde_json::json!({"out": ["followed"]}), true).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            got
        }
    })
    .await;
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(shown.ends_with(" 1 stdout followed #1"), "{shown}");

    // Without -f: the recent window, then exit.
    let out = p.cli_ok(&["logs", "printer", "--since", "5m"]);
    assert!(
        out.lines()
            .any(|l| l.contains(&r.invocation_id) && l.ends_with("stdout tick #1")),
        "{out}"
    );

    // Over the cap: the first 4 KiB of lines, then one marker, nothing more.
    let r = invoke(
        &mut c,
        "printer",
        serde_json::json!({"flood": 64 * 1024, "out": ["start"]}),
        false,
    )
    .await;
    let got = logs(&mut c, &r.invocation_id, 0).await.unwrap();
    let texts: Vec<&str> = got.lines.iter().map(|l| l.text.as_str()).collect();
    let (last, kept) = texts.split_last().unwrap();
    assert!(last.starts_with("[output over the log cap of 4096 bytes"), "{last}");
    assert_eq!(kept[0], "start #1");
    assert!(kept[1..].iter().all(|t| *t == "f".repeat(63)), "{kept:?}");
    let kept_bytes: usize = kept.iter().map(|t| t.len() + 1).sum();
    assert!(kept_bytes <= 4096 && kept_bytes > 4096 - 64, "{kept_bytes} bytes kept");
    // The next invocation has its full budget again.
    let r = invoke(&mut c, "printer", serde_json::json!({"out": ["after"]}), false).await;
    let got = logs(&mut c, &r.invocation_id, 0).await.unwrap();
    assert_eq!(seen(&got.lines), [(1, "stdout", "after #1".to_string())]);

    // A cold start's start-up output is the invocation's that started it;
    // a provisioned sandbox's belongs to none, and a tail shows it so.
    p.deploy(printer_with("loud", "[env]\nPRINT_ON_LOAD = \"1\"").path());
    let r = invoke(&mut c, "loud", serde_json::json!({"out": ["hi"]}), false).await;
    let got = logs(&mut c, &r.invocation_id, 0).await.unwrap();
    assert_eq!(
        seen(&got.lines),
        [(1, "stdout", "loaded".to_string()), (1, "stdout", "hi #1".to_string())]
    );
    p.deploy(printer_with("loud", "min_warm = 1\n[env]\nPRINT_ON_LOAD = \"1\"").path());
    eventually(Duration::from_secs(20), "the provisioned sandbox's output", || async {
        let out = p.cli_ok(&["logs", "loud", "--since", "5m"]);
        out.lines()
            .any(|l| l.ends_with("(no invocation)  0 stdout loaded"))
            .then_some(())
    })
    .await;

    // Exec mode: stderr is the output (stdout is the answer).
    let r = c
        .invoke(InvokeRequest {
            function: "wordcount".into(),
            payload: b"fail".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = logs(&mut c, &r.invocation_id, 0).await.unwrap();
    assert_eq!(seen(&got.lines), [(1, "stderr", "asked to fail".to_string())]);
}
