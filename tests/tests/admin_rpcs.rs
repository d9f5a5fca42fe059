//! The admin RPCs other tests drive through the CLI, called here through the
//! generated client as any gRPC program would: the streamed deploy and its
//! checks, schedules and the cron ledger, dead letters, aliases.

use std::time::Duration;

use stoke_core::package::{Limits, pack_dir};
use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;
use tonic::transport::Channel;

type Client = AdminServiceClient<Channel>;

/// A Deploy stream: the header, then the archive in `chunk`-byte parts.
fn deploy_parts(archive: &[u8], digest: &str, size: u64, chunk: usize) -> Vec<DeployRequest> {
    let mut parts = vec![DeployRequest {
        part: Some(deploy_request::Part::Header(DeployHeader {
            digest: digest.into(),
            size,
            namespace: String::new(),
            image: String::new(),
        })),
    }];
    parts.extend(archive.chunks(chunk).map(|c| DeployRequest {
        part: Some(deploy_request::Part::Chunk(c.to_vec())),
    }));
    parts
}

async fn aliases_of(c: &mut Client, function: &str) -> Vec<AliasInfo> {
    c.list_aliases(ListAliasesRequest {
        function: function.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .aliases
}

async fn deploy(c: &mut Client, parts: Vec<DeployRequest>) -> Result<DeployResponse, tonic::Status> {
    Ok(c.deploy(futures::stream::iter(parts)).await?.into_inner())
}

#[tokio::test]
async fn deploy_streams_in_chunks_and_refuses_what_does_not_match_its_header() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let dir = hello_with("");
    let packed = pack_dir(dir.path(), &Limits::default()).unwrap();
    let (archive, digest, size) = (&packed.archive, packed.digest.as_str(), packed.archive.len() as u64);

    // Wrong digest, short, long, chunks first: refused, nothing recorded.
    let mut flipped = archive.clone();
    flipped[size as usize / 2] ^= 1;
    for (parts, says) in [
        (deploy_parts(&flipped, digest, size, 1000), "digest"),
        (
            deploy_parts(&archive[..archive.len() - 1], digest, size, 1000),
            "ended after",
        ),
        (deploy_parts(archive, digest, size - 1, 1000), "larger than"),
        (deploy_parts(archive, digest, size, 1000)[1..].to_vec(), "header"),
    ] {
        let err = deploy(&mut c, parts).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{says}: {err:?}");
    }
    let listed = c
        .list_functions(ListFunctionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.functions.is_empty(), "{listed:?}");

    // Small chunks arrive whole; the same package again is unchanged.
    let r = deploy(&mut c, deploy_parts(archive, digest, size, 777)).await.unwrap();
    let f = r.function.unwrap();
    assert_eq!(
        (f.name.as_str(), f.version, f.digest.as_str(), r.unchanged),
        ("hello", 1, digest, false)
    );
    let r = deploy(&mut c, deploy_parts(archive, digest, size, 64 * 1024))
        .await
        .unwrap();
    assert!(r.unchanged);
    let aliases = aliases_of(&mut c, "hello").await;
    assert!(aliases.is_empty());
    c.set_alias(SetAliasRequest {
        function: "hello".into(),
        name: "live".into(),
        version: 1,
    })
    .await
    .unwrap();
    let aliases = aliases_of(&mut c, "hello").await;
    assert_eq!(
        aliases.iter().map(|a| (a.name.as_str(), a.version)).collect::<Vec<_>>(),
        [("live", 1)]
    );
    let err = c
        .list_aliases(ListAliasesRequest {
            function: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn schedules_ledger_and_dead_letters_through_the_generated_client() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut c = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    p.deploy(hello_with("max_attempts = 1").path());

    // A schedule every second: it fires, lands in the ledger, pauses,
    // resumes and goes.
    let s = c
        .create_schedule(CreateScheduleRequest {
            name: "every-second".into(),
            function: "hello".into(),
            cron: "* * * * * *".into(),
            payload: br#"{"name":"cron"}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (s.name.as_str(), s.source.as_str(), s.paused),
        ("every-second", "admin", false)
    );
    let err = c
        .create_schedule(CreateScheduleRequest {
            name: "bad".into(),
            function: "hello".into(),
            cron: "every minute".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let ticks = eventually(Duration::from_secs(15), "two fired ticks in the ledger", || {
        let mut c = c.clone();
        async move {
            let t = c
                .list_cron_ticks(ListCronTicksRequest {
                    function: "hello".into(),
                    limit: 10,
                })
                .await
                .unwrap()
                .into_inner()
                .ticks;
            (t.iter().filter(|t| t.outcome == "fired").count() >= 2).then_some(t)
        }
    })
    .await;
    assert!(ticks.iter().all(|t| t.schedule_id == s.id), "{ticks:?}");
    assert!(
        ticks
            .windows(2)
            .all(|w| w[0].scheduled_unix_ms > w[1].scheduled_unix_ms),
        "newest first"
    );
    let paused = c
        .pause_schedule(ScheduleNameRequest {
            name: "every-second".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused);
    let listed = c
        .list_schedules(ListSchedulesRequest {
            function: "hello".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(
        listed.iter().map(|s| (s.name.as_str(), s.paused)).collect::<Vec<_>>(),
        [("every-second", true)]
    );
    let resumed = c
        .resume_schedule(ScheduleNameRequest {
            name: "every-second".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    c.delete_schedule(ScheduleNameRequest {
        name: "every-second".into(),
    })
    .await
    .unwrap();
    let err = c
        .pause_schedule(ScheduleNameRequest {
            name: "every-second".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An async failure with one attempt allowed is dead-lettered: listed,
    // shown with its attempt, and redriven.
    let id = c
        .invoke(InvokeRequest {
            function: "hello".into(),
            payload: br#"{"fail":"boom"}"#.to_vec(),
            r#async: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .invocation_id;
    let dead = eventually(Duration::from_secs(15), "the dead letter listed", || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let d = c
                .list_dead_letters(ListDeadLettersRequest {
                    function: "hello".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            d.into_iter().find(|d| d.invocation_id == id)
        }
    })
    .await;
    assert_eq!((dead.reason.as_str(), dead.attempts), ("max_attempts", 1));
    let shown = c
        .get_dead_letter(GetDeadLetterRequest {
            invocation_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.payload, br#"{"fail":"boom"}"#);
    assert_eq!(shown.attempt_history.len(), 1);
    assert_eq!(
        shown.attempt_history[0].error.as_ref().unwrap().error_type,
        "ValueError"
    );
    let err = c
        .get_dead_letter(GetDeadLetterRequest {
            invocation_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let r = c
        .redrive(RedriveRequest {
            invocation_ids: vec![id.clone()],
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.invocation_ids.as_slice(), r.dry_run),
        (std::slice::from_ref(&id), true)
    );
}
