//! Function ownership, version history and API tokens.

use stoke_store::*;

fn new<'a>(function: &'a str, namespace: &'a str, digest: &'a str) -> NewVersion<'a> {
    NewVersion {
        function,
        namespace,
        digest,
        manifest: "",
        package_size: 3,
        now_ms: 7,
    }
}

pub async fn catalog_contract(store: &dyn Store) {
    store.put_package("cat-1", b"one").await.unwrap();
    store.put_package("cat-2", b"two").await.unwrap();

    // The first deploy claims the name for its namespace; another namespace
    // is refused and records nothing.
    let DeployOutcome::Created(v1) = store.deploy_version(new("owned", "team-a", "cat-1")).await.unwrap() else {
        panic!("first deploy")
    };
    assert_eq!(v1.namespace, "team-a");
    assert_eq!(
        store.deploy_version(new("owned", "team-b", "cat-2")).await.unwrap(),
        DeployOutcome::OtherNamespace("team-a".into())
    );
    assert_eq!(store.list_versions("owned").await.unwrap().len(), 1);
    assert_eq!(
        store.function_namespace("owned").await.unwrap().as_deref(),
        Some("team-a")
    );
    assert_eq!(store.function_namespace("nobody").await.unwrap(), None);

    // History, rollback and roll forward.
    let DeployOutcome::Created(v2) = store.deploy_version(new("owned", "team-a", "cat-2")).await.unwrap() else {
        panic!("second deploy")
    };
    assert_eq!(v2.version, 2);
    let versions = store.list_versions("owned").await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert!(versions.iter().all(|v| v.namespace == "team-a"));
    assert!(store.set_current_version("owned", 1, 8).await.unwrap());
    assert_eq!(store.current_version("owned").await.unwrap().unwrap().digest, "cat-1");
    assert!(!store.set_current_version("owned", 9, 8).await.unwrap(), "no version 9");
    assert!(!store.set_current_version("nobody", 1, 8).await.unwrap());
    assert_eq!(store.current_version("owned").await.unwrap().unwrap().version, 1);
    // A deploy after a rollback is a new version, never a reused number.
    store.put_package("cat-3", b"three").await.unwrap();
    let DeployOutcome::Created(v3) = store.deploy_version(new("owned", "team-a", "cat-3")).await.unwrap() else {
        panic!("third deploy")
    };
    assert_eq!(v3.version, 3);

    // Delete: not listed, no current version, history and ownership kept.
    assert!(store.delete_function("owned", 9).await.unwrap());
    assert!(!store.delete_function("owned", 9).await.unwrap(), "already deleted");
    assert_eq!(store.current_version("owned").await.unwrap(), None);
    assert!(
        store
            .list_functions()
            .await
            .unwrap()
            .iter()
            .all(|v| v.function != "owned")
    );
    assert_eq!(store.list_versions("owned").await.unwrap().len(), 3);
    assert_eq!(
        store.deploy_version(new("owned", "team-b", "cat-1")).await.unwrap(),
        DeployOutcome::OtherNamespace("team-a".into()),
        "a deleted name stays with its namespace"
    );
    let DeployOutcome::Created(v4) = store.deploy_version(new("owned", "team-a", "cat-1")).await.unwrap() else {
        panic!("redeploy after delete")
    };
    assert_eq!(v4.version, 4);

    // Tokens: found by hash only while live; listed with revocation.
    let token = |id: &'static str, hash: &'static str| NewToken {
        id,
        name: "ci",
        namespace: "team-a",
        role: "deployer",
        hash,
        now_ms: 10,
    };
    store.create_token(&token("tok-1", "h1")).await.unwrap();
    store.create_token(&token("tok-2", "h2")).await.unwrap();
    assert!(
        store.create_token(&token("tok-3", "h1")).await.is_err(),
        "hashes are unique"
    );
    let found = store.token_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.role.as_str(), found.namespace.as_str()),
        ("tok-1", "deployer", "team-a")
    );
    assert_eq!(store.token_by_hash("h9").await.unwrap(), None);
    assert!(store.revoke_token("tok-1", 11).await.unwrap());
    assert!(!store.revoke_token("tok-1", 12).await.unwrap(), "already revoked");
    assert_eq!(store.token_by_hash("h1").await.unwrap(), None);
    let all = store.tokens().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].revoked_ms, Some(11));
    assert_eq!(all[1].revoked_ms, None);
}
