//! Listing invocations and usage per namespace and hour through the admin
//! API, with tokens required: every kind of outcome from a real `stoke up`,
//! each filter, paging, namespace isolation — through the generated client
//! and the CLI.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;

type Client = AdminClient;

const HOUR: i64 = 3_600_000;

/// examples/hello-python as `name`, http-triggered only, with `extra`
/// manifest lines.
fn function(name: &str, timeout: u32, extra: &str) -> tempfile::TempDir {
    let f = copy_function(&workspace_root().join("examples/hello-python"));
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            "name = \"{name}\"\ncommand = [\"python3\", \"-u\", \"stoke_runtime.py\"]\n\
             handler = \"handler.handler\"\nmemory = 128\ntimeout = {timeout}\n{extra}\n\
             [[triggers]]\nhttp = true\n"
        ),
    )
    .unwrap();
    f
}

fn deploy(p: &Platform, dir: &tempfile::TempDir, token: &str) {
    let out = p.cli(&["deploy", dir.path().to_str().unwrap(), "--token", token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

async fn invoke(c: &mut Client, function: &str, payload: &str, is_async: bool, key: &str) -> InvokeResponse {
    c.invoke(InvokeRequest {
        function: function.into(),
        payload: payload.as_bytes().to_vec(),
        r#async: is_async,
        idempotency_key: key.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("invoke {function} {payload}: {s}"))
    .into_inner()
}

async fn wait_status(c: &Client, id: &str, status: InvocationStatus) -> InvocationInfo {
    eventually(Duration::from_secs(60), &format!("{id} to be {status:?}"), || {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            let info = c
                .get_invocation(GetInvocationRequest { invocation_id: id })
                .await
                .ok()?
                .into_inner();
            (info.status == status as i32).then_some(info)
        }
    })
    .await
}

/// Every page of a listing; asserts each page respects the limit.
async fn list_all(c: &mut Client, mut req: ListInvocationsRequest) -> (Vec<InvocationSummary>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.list_invocations(req.clone()).await.unwrap().into_inner();
        pages += 1;
        assert!(req.limit == 0 || page.invocations.len() <= req.limit as usize);
        all.extend(page.invocations);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        req.page_token = page.next_page_token;
        assert!(pages < 100, "paging does not end");
    }
}

async fn list(c: &mut Client, req: ListInvocationsRequest) -> Vec<InvocationSummary> {
    c.list_invocations(req).await.unwrap().into_inner().invocations
}

fn ids(list: &[InvocationSummary]) -> Vec<&str> {
    list.iter().map(|i| i.invocation_id.as_str()).collect()
}

fn by_status(s: InvocationStatus) -> ListInvocationsRequest {
    ListInvocationsRequest {
        status: s as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn invocations_are_listed_filtered_paged_and_fenced_by_namespace() {
    let nats = Nats::start().await.unwrap();
    let (p, root) = Platform::start_with_tokens(&nats).await.unwrap();
    let root = root.trim();
    let mut root_c = admin_client(&p, root).await;
    let a_token = mint(&mut root_c, "a-ci", "team-a", "deployer").await;
    let b_token = mint(&mut root_c, "b-ci", "team-b", "deployer").await;
    let b_read = mint(&mut root_c, "b-dash", "team-b", "reader").await;
    let mut a = admin_client(&p, &a_token).await;
    let mut b = admin_client(&p, &b_token).await;

    // team-a: hello (retried quickly, twice at most), slow (times out),
    // nap (runs long); team-b: other.
    deploy(
        &p,
        &function("hello", 10, "max_attempts = 2\nretry_backoff_ms = 100\nconcurrency = 4"),
        &a_token,
    );
    deploy(&p, &function("slow", 1, ""), &a_token);
    deploy(&p, &function("nap", 60, ""), &a_token);
    deploy(&p, &function("other", 10, ""), &b_token);

    // Each kind of outcome.
    let ok = invoke(&mut a, "hello", r#"{"name":"Ada"}"#, false, "").await;
    assert_eq!(ok.invocation.unwrap().status, InvocationStatus::Succeeded as i32);
    let failed = invoke(&mut a, "hello", r#"{"fail":"boom"}"#, false, "").await;
    assert_eq!(failed.invocation.unwrap().status, InvocationStatus::Failed as i32);
    let keyed = invoke(&mut a, "hello", r#"{"name":"K"}"#, false, "order-42").await;
    let timed_out = invoke(&mut a, "slow", r#"{"sleep":5}"#, false, "").await;
    assert_eq!(timed_out.invocation.unwrap().status, InvocationStatus::TimedOut as i32);
    let async_ok = invoke(&mut a, "hello", r#"{"name":"B"}"#, true, "").await.invocation_id;
    let dead = invoke(&mut a, "hello", r#"{"terminal":"nope"}"#, true, "")
        .await
        .invocation_id;
    // Fails its 2 attempts, is dead-lettered, then redriven: attempt 3 succeeds.
    let redriven = invoke(&mut a, "hello", r#"{"fail_until":3}"#, true, "")
        .await
        .invocation_id;
    wait_status(&a, &async_ok, InvocationStatus::Succeeded).await;
    wait_status(&a, &dead, InvocationStatus::DeadLettered).await;
    wait_status(&a, &redriven, InvocationStatus::DeadLettered).await;
    let r = a
        .redrive(RedriveRequest {
            invocation_ids: vec![redriven.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.invocation_ids, std::slice::from_ref(&redriven));
    wait_status(&a, &redriven, InvocationStatus::Succeeded).await;
    // GetInvocation tells each attempt's outcome and error.
    let got = a
        .get_invocation(GetInvocationRequest {
            invocation_id: redriven.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let history: Vec<(u32, &str, &str)> = got
        .attempt_history
        .iter()
        .map(|h| {
            let error = h.error.as_ref().map_or("", |e| e.error_type.as_str());
            (h.attempt, h.outcome.as_str(), error)
        })
        .collect();
    assert_eq!(
        history,
        [
            (1, "function_error", "ValueError"),
            (2, "function_error", "ValueError"),
            (3, "success", "")
        ],
        "{got:?}"
    );
    let other = invoke(&mut b, "other", r#"{"name":"Bee"}"#, false, "")
        .await
        .invocation_id;
    // Still running while the listings below are read.
    let napping = invoke(&mut a, "nap", r#"{"sleep":40}"#, true, "").await.invocation_id;
    let running = wait_status(&a, &napping, InvocationStatus::Running).await;
    assert_eq!(running.attempts, 0, "under way, nothing metered yet: {running:?}");

    // Everything team-a ran, newest first, each once.
    let (all, _) = list_all(&mut a, ListInvocationsRequest::default()).await;
    let team_a = [
        ok.invocation_id.as_str(),
        &failed.invocation_id,
        &keyed.invocation_id,
        &timed_out.invocation_id,
        &async_ok,
        &dead,
        &redriven,
        &napping,
    ];
    assert_eq!(all.len(), team_a.len(), "{all:#?}");
    assert_eq!(
        ids(&all).into_iter().collect::<HashSet<_>>(),
        team_a.iter().copied().collect::<HashSet<_>>()
    );
    assert!(
        all.windows(2).all(|w| w[0].created_unix_ms >= w[1].created_unix_ms),
        "newest first: {all:#?}"
    );
    assert!(all.iter().all(|i| i.namespace == "team-a"));
    let find = |id: &str| all.iter().find(|i| i.invocation_id == id).unwrap().clone();
    let r = find(&redriven);
    assert_eq!(
        (r.status, r.attempts),
        (InvocationStatus::Succeeded as i32, 3),
        "redriven, then completed: {r:?}"
    );
    let f = find(&failed.invocation_id);
    assert_eq!(f.error.as_ref().unwrap().error_type, "ValueError");
    assert!(f.completed_unix_ms >= f.created_unix_ms && f.version == 1, "{f:?}");
    let d = find(&dead);
    assert_eq!(d.error.as_ref().unwrap().error_message, "nope");
    assert_eq!(find(&timed_out.invocation_id).function, "slow");
    let n = find(&napping);
    assert_eq!((n.completed_unix_ms, n.trigger.as_str()), (0, "admin"), "{n:?}");
    assert_eq!(
        n.status,
        InvocationStatus::Running as i32,
        "listed as GetInvocation says: {n:?}"
    );

    // Each status.
    let with = |s| {
        let mut a = a.clone();
        async move {
            let mut got: Vec<String> = list(&mut a, by_status(s))
                .await
                .into_iter()
                .map(|i| i.invocation_id)
                .collect();
            got.sort();
            got
        }
    };
    let sorted = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        with(InvocationStatus::Succeeded).await,
        sorted(&[&ok.invocation_id, &keyed.invocation_id, &async_ok, &redriven])
    );
    assert_eq!(with(InvocationStatus::Failed).await, sorted(&[&failed.invocation_id]));
    assert_eq!(
        with(InvocationStatus::TimedOut).await,
        sorted(&[&timed_out.invocation_id])
    );
    assert_eq!(with(InvocationStatus::DeadLettered).await, sorted(&[&dead]));
    assert_eq!(with(InvocationStatus::Running).await, sorted(&[&napping]));
    assert_eq!(with(InvocationStatus::Queued).await, sorted(&[]));

    // Function, key, time window, namespace.
    let slow = list(
        &mut a,
        ListInvocationsRequest {
            function: "slow".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&slow), [timed_out.invocation_id.as_str()]);
    let by_key = list(
        &mut a,
        ListInvocationsRequest {
            idempotency_key: "order-42".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&by_key), [keyed.invocation_id.as_str()]);
    assert_eq!(by_key[0].idempotency_key, "order-42");
    // [created of the 3rd newest, created of the newest): the 2nd and 3rd
    // newest, and any created in the same ms as them.
    let (newest, third) = (all[0].created_unix_ms, all[2].created_unix_ms);
    let window = list(
        &mut a,
        ListInvocationsRequest {
            since_unix_ms: third,
            until_unix_ms: newest,
            ..Default::default()
        },
    )
    .await;
    let expected: Vec<&str> = all
        .iter()
        .filter(|i| i.created_unix_ms >= third && i.created_unix_ms < newest)
        .map(|i| i.invocation_id.as_str())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(ids(&window), expected);
    let own_ns = list(
        &mut a,
        ListInvocationsRequest {
            namespace: "team-a".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(own_ns.len(), all.len());

    // Paging: limit 3 → 3 pages, the same rows in the same order.
    let (paged, pages) = list_all(
        &mut a,
        ListInvocationsRequest {
            limit: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pages, 3);
    assert_eq!(ids(&paged), ids(&all));
    let err = a
        .list_invocations(ListInvocationsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Another namespace sees none of it, and cannot ask for it.
    let mut b_reader = admin_client(&p, &b_read).await;
    let (theirs, _) = list_all(&mut b_reader, ListInvocationsRequest::default()).await;
    assert_eq!(ids(&theirs), [other.as_str()]);
    for req in [
        ListInvocationsRequest {
            namespace: "team-a".into(),
            ..Default::default()
        },
        ListInvocationsRequest {
            function: "hello".into(),
            ..Default::default()
        },
    ] {
        let err = b_reader.list_invocations(req).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let by_key = list(
        &mut b_reader,
        ListInvocationsRequest {
            idempotency_key: "order-42".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(by_key.is_empty());
    // The all-namespace admin sees both, or one namespace at a time.
    let (everything, _) = list_all(&mut root_c, ListInvocationsRequest::default()).await;
    assert_eq!(everything.len(), team_a.len() + 1);
    let only_b = list(
        &mut root_c,
        ListInvocationsRequest {
            namespace: "team-b".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&only_b), [other.as_str()]);

    // The CLI: a table with real rows.
    let table = p.cli_ok(&["invocations", "hello", "--token", &a_token]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("INVOCATION"), "{table}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 6, "{table}");
    let line = |id: &str| {
        *rows
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in {table}"))
    };
    let cols: Vec<&str> = line(&redriven).split_whitespace().collect();
    assert_eq!(&cols[1..5], ["hello", "1", "succeeded", "3"], "{table}");
    assert!(line(&dead).contains("dead_lettered"), "{table}");
    assert!(line(&failed.invocation_id).contains("failed"), "{table}");
    let failed_only = p.cli_ok(&[
        "invocations",
        "--status",
        "failed",
        "--since",
        "1h",
        "--token",
        &a_token,
    ]);
    assert_eq!(failed_only.lines().count(), 2, "{failed_only}");
    assert!(failed_only.contains(&failed.invocation_id), "{failed_only}");
    let out = p.cli(&["invocations", "--limit", "2", "--key", "order-42", "--token", &a_token]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.lines().count() == 2 && text.contains(&keyed.invocation_id),
        "{text}"
    );
    let out = p.cli(&["invocations", "--limit", "3", "--token", &a_token]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    assert!(String::from_utf8_lossy(&out.stderr).contains("showing the newest 3"));
    assert!(
        p.cli_err(&["invocations", "--status", "sleeping"])
            .contains("unknown status")
    );

    // Usage per namespace and hour: what the attempt rows say.
    let db = p.db().await;
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT f.namespace, COUNT(*) FROM attempts a JOIN functions f ON f.name = a.function \
         GROUP BY f.namespace ORDER BY f.namespace",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(counted.len(), 2, "{counted:?}");
    let usage = root_c
        .get_usage(GetUsageRequest {
            group_by: UsageGroupBy::Namespace as i32,
            bucket: UsageBucket::Hour as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let mut summed: BTreeMap<String, i64> = BTreeMap::new();
    for r in &usage {
        assert!(r.function.is_empty() && r.bucket_start_unix_ms % HOUR == 0, "{r:?}");
        assert!(r.bucket_start_unix_ms > stoke_core::now_ms() - 2 * HOUR, "{r:?}");
        *summed.entry(r.namespace.clone()).or_default() += r.attempts as i64;
    }
    assert_eq!(summed.into_iter().collect::<Vec<_>>(), counted);
    let theirs = admin_client(&p, &b_read)
        .await
        .get_usage(GetUsageRequest {
            group_by: UsageGroupBy::Namespace as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        (theirs[0].namespace.as_str(), theirs[0].attempts as i64),
        ("team-b", counted[1].1)
    );
    let err = admin_client(&p, &b_read)
        .await
        .get_usage(GetUsageRequest {
            namespace: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let table = p.cli_ok(&["usage", "--by", "namespace", "--per", "hour", "--token", root]);
    let mut from_cli: BTreeMap<String, i64> = BTreeMap::new();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("PERIOD (UTC)"), "{table}");
    for l in lines {
        // 2026-11-23 10:00  team-a  ATTEMPTS ERRORS COLD BILLED_MS GB_SECONDS
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(cols[1].ends_with(":00"), "{table}");
        *from_cli.entry(cols[2].to_string()).or_default() += cols[3].parse::<i64>().unwrap();
    }
    assert_eq!(from_cli.into_iter().collect::<Vec<_>>(), counted, "{table}");
    let per_fn = p.cli_ok(&["usage", "--namespace", "team-b", "--token", root]);
    assert!(
        per_fn
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("other ") && l.ends_with("team-b")),
        "{per_fn}"
    );
}
