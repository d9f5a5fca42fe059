//! The admin API with tokens required: bootstrap, roles, namespaces,
//! versions/rollback/delete, and the standard health and reflection
//! services — through the generated client and the CLI, against a real
//! `stoke up`.

use std::time::Duration;

use stoke_proto::*;
use stoke_tests::*;
use tonic::Code;
use tonic::transport::Channel;

type Client = AdminClient;

/// hello-python with `GREETING_V = v` in its environment.
fn hello_v(v: &str) -> tempfile::TempDir {
    let dir = hello_with("");
    let manifest = std::fs::read_to_string(dir.path().join("stoke.toml")).unwrap();
    std::fs::write(
        dir.path().join("stoke.toml"),
        format!("{manifest}\n[env]\nGREETING_V = \"{v}\"\n"),
    )
    .unwrap();
    dir
}

async fn invoke_env(c: &mut Client, function: &str) -> Result<String, tonic::Status> {
    let r = c
        .invoke(InvokeRequest {
            function: function.into(),
            payload: br#"{"env": "GREETING_V"}"#.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let result = r.invocation.expect("sync invoke").result;
    let body: serde_json::Value = serde_json::from_slice(&result).unwrap();
    let inner: serde_json::Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    Ok(inner["env"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn tokens_roles_and_namespaces_fence_every_call() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with_tokens(&nats).await.unwrap().0;

    // Bootstrap: the first admin token's secret, readable by the owner only.
    let file = p.data_dir.path().join("admin.token");
    let meta = std::fs::metadata(&file).expect("bootstrap token file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let root = std::fs::read_to_string(&file).unwrap().trim().to_string();

    // No token, a wrong one: UNAUTHENTICATED with what to do.
    let mut anon = admin_client(&p, "").await;
    let err = anon.list_functions(ListFunctionsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("Bearer"), "{}", err.message());
    let err = admin_client(&p, "stoke_nope")
        .await
        .list_functions(ListFunctionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let stderr = p.cli_err(&["functions"]);
    assert!(stderr.contains("--token"), "{stderr}");

    let mut root_c = admin_client(&p, &root).await;
    let a_deploy = mint(&mut root_c, "a-ci", "team-a", "deployer").await;
    let a_read = mint(&mut root_c, "a-dash", "team-a", "reader").await;
    let b_deploy = mint(&mut root_c, "b-ci", "team-b", "deployer").await;
    let a_admin = mint(&mut root_c, "a-admin", "team-a", "admin").await;

    // Tokens are stored hashed: no secret appears in the database.
    let db = p.db().await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT hash FROM tokens").fetch_all(&db).await.unwrap();
    assert_eq!(rows.len(), 5);
    for secret in [&root, &a_deploy, &a_read, &b_deploy, &a_admin] {
        assert!(rows.iter().all(|(h,)| !h.contains(secret.as_str()) && h.len() == 64));
    }

    // team-a deploys `hello` through the CLI; the name is now team-a's.
    let v1 = hello_v("1");
    let out = p.cli(&["deploy", v1.path().to_str().unwrap(), "--token", &a_deploy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v2 = hello_v("2");
    let out = p.cli(&["deploy", v2.path().to_str().unwrap(), "--token", &b_deploy]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another namespace") && stderr.contains("PermissionDenied"),
        "{stderr}"
    );

    // Reads and invokes across namespaces are refused; listings are filtered.
    let mut a = admin_client(&p, &a_deploy).await;
    let mut b = admin_client(&p, &b_deploy).await;
    let mut reader = admin_client(&p, &a_read).await;
    assert_eq!(invoke_env(&mut a, "hello").await.unwrap(), "1");
    let err = invoke_env(&mut b, "hello").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = b
        .get_function(GetFunctionRequest { name: "hello".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = |c: ListFunctionsResponse| c.functions.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        listed(
            b.list_functions(ListFunctionsRequest::default())
                .await
                .unwrap()
                .into_inner()
        ),
        Vec::<String>::new()
    );
    let mine = reader
        .list_functions(ListFunctionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(mine.clone()), ["hello"]);
    assert_eq!(mine.functions[0].namespace, "team-a");
    let usage = b.get_usage(GetUsageRequest::default()).await.unwrap().into_inner();
    assert!(usage.rows.is_empty(), "team-b sees team-a's usage: {usage:?}");
    let usage = reader.get_usage(GetUsageRequest::default()).await.unwrap().into_inner();
    assert_eq!(usage.rows.len(), 1);
    let err = b
        .list_functions(ListFunctionsRequest {
            namespace: "team-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Roles: a reader cannot invoke; a namespace admin cannot mint
    // all-namespace or worker tokens, nor tokens elsewhere.
    let err = invoke_env(&mut reader, "hello").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("invoker"), "{}", err.message());
    let mut a_adm = admin_client(&p, &a_admin).await;
    for (ns, role) in [("*", "reader"), ("team-a", "worker"), ("team-b", "reader")] {
        let err = a_adm
            .create_token(CreateTokenRequest {
                name: "x".into(),
                namespace: ns.into(),
                role: role.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{ns} {role}: {err:?}");
    }
    let seen = a_adm
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(
        seen.iter().all(|t| t.namespace == "team-a") && seen.len() == 3,
        "{seen:?}"
    );
    let me = a.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (me.namespace.as_str(), me.role.as_str(), me.name.as_str()),
        ("team-a", "deployer", "a-ci")
    );

    // Versions, rollback, delete.
    let out = p.cli(&["deploy", v2.path().to_str().unwrap(), "--token", &a_deploy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(invoke_env(&mut a, "hello").await.unwrap(), "2");
    let versions = a
        .list_versions(ListVersionsRequest { name: "hello".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((versions.versions.len(), versions.current_version), (2, 2));
    let err = reader
        .rollback(RollbackRequest {
            name: "hello".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let out = p.cli(&["rollback", "hello", "--token", &a_deploy]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now runs version 1"));
    assert_eq!(invoke_env(&mut a, "hello").await.unwrap(), "1");
    let err = a
        .rollback(RollbackRequest {
            name: "hello".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "v1 has nothing before it");
    let err = a
        .rollback(RollbackRequest {
            name: "hello".into(),
            version: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let out = p.cli(&["versions", "hello", "--token", &a_read]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with('*') && l.contains(" 1 ")), "{text}");
    let err = b
        .delete_function(DeleteFunctionRequest { name: "hello".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    a.delete_function(DeleteFunctionRequest { name: "hello".into() })
        .await
        .unwrap();
    let err = invoke_env(&mut a, "hello").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        listed(
            a.list_functions(ListFunctionsRequest::default())
                .await
                .unwrap()
                .into_inner()
        )
        .is_empty()
    );
    let versions = a
        .list_versions(ListVersionsRequest { name: "hello".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((versions.versions.len(), versions.current_version), (2, 0));

    // Revocation takes effect (tokens are cached for at most 5 s).
    let id = a_adm
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens
        .into_iter()
        .find(|t| t.name == "a-dash")
        .unwrap()
        .id;
    a_adm.revoke_token(RevokeTokenRequest { id }).await.unwrap();
    eventually(Duration::from_secs(10), "revoked token refused", || {
        let mut reader = reader.clone();
        async move {
            let r = reader.list_functions(ListFunctionsRequest::default()).await;
            matches!(r, Err(s) if s.code() == Code::Unauthenticated).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with_tokens(&nats).await.unwrap().0;
    let channel = Channel::from_shared(format!("http://{}", p.admin))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "stoke.v1.AdminService", "stoke.v1.WorkerService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("stoke.v1.AdminService".into())),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"stoke.v1.AdminService"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor for AdminService")
    };
    let text = files
        .file_descriptor_proto
        .iter()
        .map(|f| String::from_utf8_lossy(f))
        .collect::<String>();
    assert!(
        text.contains("CreateToken") && text.contains("Rollback"),
        "descriptor lacks the RPCs"
    );
}

#[tokio::test]
async fn workers_are_listed_and_drained_by_a_cluster_admin_only() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start_with_tokens(&nats).await.unwrap().0;
    let root = std::fs::read_to_string(p.data_dir.path().join("admin.token")).unwrap();
    let mut root_c = admin_client(&p, root.trim()).await;
    let ns_admin = mint(&mut root_c, "a-admin", "team-a", "admin").await;

    let workers = root_c
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1, "{workers:?}");
    let w = &workers[0];
    assert!(
        w.slots > 0 && w.memory_mb > 0 && !w.hostname.is_empty() && !w.draining,
        "{w:?}"
    );
    let err = admin_client(&p, &ns_admin)
        .await
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a namespace admin sees no workers");

    let err = root_c
        .drain_worker(DrainWorkerRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let out = p.cli(&["workers", "drain", &w.id, "--token", root.trim()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    let after = root_c
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(after[0].draining);
}
