//! The queue view (GetQueue, `stoke queue`) against a real `stoke up`:
//! running, waiting, deferred (busy key) and retrying events are counted
//! where they are, per key too.

use std::time::Duration;

use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;

#[tokio::test]
async fn the_queue_view_shows_where_events_wait() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let f = hello_with(
        "concurrency = 4\nconcurrency_key = \"k\"\nconcurrency_per_key = 1\nmax_attempts = 3\nretry_backoff_ms = 30000",
    );
    p.deploy(f.path());
    let idle = c
        .get_queue(GetQueueRequest {
            function: "hello".into(),
            by_key: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(idle.functions.len(), 1);
    let q = &idle.functions[0];
    assert_eq!(
        (q.queued, q.unacked, q.running, q.waiting, q.retrying, q.deferred),
        (0, 0, 0, 0, 0, 0)
    );

    // Key "a": one runs for 4 s, one waits, the others are deferred; key
    // "b" fails and waits out a 30 s backoff.
    let mut events = vec![r#"{"k": "a", "sleep": 4}"#; 4];
    events.push(r#"{"k": "b", "fail": "not yet"}"#);
    for e in events {
        c.invoke(InvokeRequest {
            function: "hello".into(),
            payload: e.as_bytes().to_vec(),
            r#async: true,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let q = eventually(
        Duration::from_secs(15),
        "busy key and a retry in the queue view",
        || {
            let mut c = c.clone();
            async move {
                let r = c
                    .get_queue(GetQueueRequest {
                        function: String::new(),
                        by_key: true,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let q = r.functions.into_iter().find(|f| f.function == "hello")?;
                let a = q.keys.iter().find(|k| k.key == "a")?;
                (a.running == 1 && a.waiting == 1 && q.running == 1 && q.retrying == 1 && q.deferred >= 1).then_some(q)
            }
        },
    )
    .await;
    assert_eq!(q.waiting, 1, "{q:?}");
    // Everything is out of JetStream's hands and not yet settled.
    assert_eq!(q.queued, 0, "{q:?}");
    assert!(q.unacked >= 4, "{q:?}");
    let table = p.cli_ok(&["queue", "hello", "--by-key"]);
    assert!(table.lines().any(|l| l.starts_with("hello")), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("key a")), "{table}");
    let doc: serde_json::Value = serde_json::from_str(&p.cli_ok(&["queue", "hello", "-o", "json"])).unwrap();
    assert_eq!(doc[0]["function"], "hello", "{doc}");
    assert!(doc[0]["unacked"].as_u64().unwrap() >= 1, "{doc}");

    let err = c
        .get_queue(GetQueueRequest {
            function: "nope".into(),
            by_key: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
