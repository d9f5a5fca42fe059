//! Function ownership, version history and API tokens.

use stoke_store::*;

fn new<'a>(function: &'a str, namespace: &'a str, digest: &'a str) -> NewVersion<'a> {
    NewVersion {
        function,
        namespace,
        digest,
        manifest: "",
        package_size: 3,
        image: "",
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
        sigv4_secret: "s3cr3t",
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
    let (by_id, secret) = store.sigv4_secret("tok-1").await.unwrap().unwrap();
    assert_eq!((by_id, secret.as_deref()), (found.clone(), Some("s3cr3t")));
    assert_eq!(store.sigv4_secret("tok-9").await.unwrap(), None);
    assert!(store.revoke_token("tok-1", 11).await.unwrap());
    assert_eq!(store.sigv4_secret("tok-1").await.unwrap(), None, "only while live");
    assert!(!store.revoke_token("tok-1", 12).await.unwrap(), "already revoked");
    assert_eq!(store.token_by_hash("h1").await.unwrap(), None);
    let all = store.tokens().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].revoked_ms, Some(11));
    assert_eq!(all[1].revoked_ms, None);

    // Settings: the first claim wins, whoever claims after; a replace wins.
    assert_eq!(store.setting("fingerprint").await.unwrap(), None);
    assert_eq!(store.claim_setting("fingerprint", "aaa", 20).await.unwrap(), "aaa");
    assert_eq!(store.setting("fingerprint").await.unwrap().as_deref(), Some("aaa"));
    assert_eq!(store.claim_setting("fingerprint", "bbb", 21).await.unwrap(), "aaa");
    assert_eq!(store.claim_setting("other", "ccc", 22).await.unwrap(), "ccc");
    store.replace_setting("fingerprint", "bbb", 23).await.unwrap();
    assert_eq!(store.claim_setting("fingerprint", "ddd", 24).await.unwrap(), "bbb");
    assert_eq!(store.claim_setting("other", "eee", 25).await.unwrap(), "ccc");
}

/// Environment and secrets as versions; aliases.
pub async fn config_contract(store: &dyn Store) {
    use stoke_core::ConfigEdit;
    store.put_package("cfg-1", b"one").await.unwrap();
    store.put_package("cfg-2", b"two").await.unwrap();
    let edit = |env: &[(&str, &str)], secrets: &[(&str, &str)], unset: &[&str]| ConfigEdit {
        set_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        set_secrets: secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        unset: unset.iter().map(|s| s.to_string()).collect(),
    };

    assert_eq!(
        store
            .edit_config("cfg", &edit(&[("A", "1")], &[], &[]), 8)
            .await
            .unwrap(),
        DeployOutcome::NotDeployed
    );
    let DeployOutcome::Created(v1) = store.deploy_version(new("cfg", "team-c", "cfg-1")).await.unwrap() else {
        panic!()
    };
    assert_eq!(v1.config, stoke_core::FunctionConfig::default());
    let DeployOutcome::Created(v2) = store
        .edit_config("cfg", &edit(&[("A", "1")], &[("KEY", "s")], &[]), 9)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (v2.version, v2.digest.as_str(), v2.namespace.as_str()),
        (2, "cfg-1", "team-c")
    );
    assert_eq!(
        (v2.config.env["A"].as_str(), v2.config.secrets["KEY"].as_str()),
        ("1", "s")
    );
    assert_eq!(store.current_version("cfg").await.unwrap().unwrap(), v2);
    // Nothing new when nothing changes, and nothing recorded when refused.
    assert!(matches!(
        store.edit_config("cfg", &edit(&[("A", "1")], &[], &[]), 10).await.unwrap(),
        DeployOutcome::Unchanged(v) if v.version == 2
    ));
    assert!(matches!(
        store.edit_config("cfg", &edit(&[("9", "1")], &[], &[]), 10).await.unwrap(),
        DeployOutcome::InvalidConfig(e) if e.name == "9"
    ));
    // A deploy keeps the configuration; the old version keeps its own.
    let DeployOutcome::Created(v3) = store.deploy_version(new("cfg", "team-c", "cfg-2")).await.unwrap() else {
        panic!()
    };
    assert_eq!((v3.version, &v3.config), (3, &v2.config));
    assert_eq!(store.get_version("cfg", 1).await.unwrap().unwrap().config, v1.config);
    let listed = store.list_versions("cfg").await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.config.secrets.len()).collect::<Vec<_>>(),
        [0, 1, 1]
    );
    let DeployOutcome::Created(v4) = store
        .edit_config("cfg", &edit(&[], &[], &["A", "KEY"]), 11)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (v4.digest.as_str(), v4.config.env.len(), v4.config.secrets.len()),
        ("cfg-2", 0, 0)
    );

    // Aliases point at existing versions only; setting again moves them.
    assert!(!store.set_alias("cfg", "live", 9, 12).await.unwrap());
    assert!(store.set_alias("cfg", "live", 1, 12).await.unwrap());
    assert!(store.set_alias("cfg", "beta", 3, 12).await.unwrap());
    assert!(store.set_alias("cfg", "live", 2, 13).await.unwrap());
    let aliases = store.aliases("cfg").await.unwrap();
    let seen: Vec<(&str, u32, i64)> = aliases
        .iter()
        .map(|a| (a.name.as_str(), a.version, a.updated_ms))
        .collect();
    assert_eq!(seen, [("beta", 3, 12), ("live", 2, 13)]);
    assert_eq!(
        resolve_version(store, "cfg:live").await.unwrap().map(|v| v.version),
        Some(2)
    );
    assert_eq!(
        resolve_version(store, "cfg:3").await.unwrap().map(|v| v.version),
        Some(3)
    );
    assert_eq!(resolve_version(store, "cfg").await.unwrap().map(|v| v.version), Some(4));
    assert_eq!(resolve_version(store, "cfg:nope").await.unwrap(), None);
    assert!(store.delete_alias("cfg", "beta").await.unwrap());
    assert!(!store.delete_alias("cfg", "beta").await.unwrap());
    assert_eq!(store.aliases("cfg").await.unwrap().len(), 1);
    assert!(store.aliases("other").await.unwrap().is_empty());
    // A deleted function runs under no alias.
    assert!(store.delete_function("cfg", 14).await.unwrap());
    assert_eq!(resolve_version(store, "cfg:live").await.unwrap(), None);
}

/// A version's image (the digest of its image spec blob) is part of what
/// makes a deploy new: a new image under the same package and manifest is a
/// new version, the same image again is unchanged, and an edit of the
/// configuration keeps the image.
pub async fn image_contract(store: &dyn Store) {
    store.put_package("img-pkg", b"pkg").await.unwrap();
    let deploy = |image: &'static str| NewVersion {
        image,
        ..new("imaged", "team-i", "img-pkg")
    };
    let DeployOutcome::Created(v1) = store.deploy_version(deploy("")).await.unwrap() else {
        panic!("first deploy")
    };
    assert_eq!(v1.image, "");
    let DeployOutcome::Created(v2) = store.deploy_version(deploy("spec-a")).await.unwrap() else {
        panic!("a new image is a new version")
    };
    assert_eq!((v2.version, v2.image.as_str()), (2, "spec-a"));
    assert!(matches!(
        store.deploy_version(deploy("spec-a")).await.unwrap(),
        DeployOutcome::Unchanged(v) if v.version == 2 && v.image == "spec-a"
    ));
    let DeployOutcome::Created(v3) = store.deploy_version(deploy("spec-b")).await.unwrap() else {
        panic!("another image is a new version")
    };
    assert_eq!((v3.version, v3.image.as_str()), (3, "spec-b"));
    assert_eq!(store.current_version("imaged").await.unwrap().unwrap().image, "spec-b");
    assert_eq!(store.get_version("imaged", 2).await.unwrap().unwrap().image, "spec-a");
    assert_eq!(
        store
            .list_versions("imaged")
            .await
            .unwrap()
            .iter()
            .map(|v| v.image.as_str())
            .collect::<Vec<_>>(),
        ["", "spec-a", "spec-b"]
    );
    let edit = stoke_core::ConfigEdit {
        set_env: [("A".to_string(), "1".to_string())].into_iter().collect(),
        ..Default::default()
    };
    let DeployOutcome::Created(v4) = store.edit_config("imaged", &edit, 9).await.unwrap() else {
        panic!("a config edit")
    };
    assert_eq!(
        (v4.version, v4.image.as_str()),
        (4, "spec-b"),
        "an edit keeps the image"
    );
    assert!(
        store
            .list_functions()
            .await
            .unwrap()
            .iter()
            .any(|v| v.function == "imaged" && v.image == "spec-b")
    );
}

pub async fn registry_credentials_contract(store: &dyn Store) {
    let cred = |host: &str, username: &str, password: &str, set_ms| RegistryCredential {
        host: host.into(),
        username: username.into(),
        password: password.into(),
        set_ms,
    };
    assert_eq!(store.registry_credential("reg.example:5000").await.unwrap(), None);
    assert!(!store.delete_registry_credential("reg.example:5000").await.unwrap());
    store
        .put_registry_credential(&cred("reg.example:5000", "ann", "sealed:v1:a", 1))
        .await
        .unwrap();
    store
        .put_registry_credential(&cred("a.example", "bob", "sealed:v1:b", 2))
        .await
        .unwrap();
    // One per host: a second login replaces the first.
    store
        .put_registry_credential(&cred("reg.example:5000", "cid", "sealed:v1:c", 3))
        .await
        .unwrap();
    assert_eq!(
        store.registry_credential("reg.example:5000").await.unwrap(),
        Some(cred("reg.example:5000", "cid", "sealed:v1:c", 3))
    );
    assert_eq!(
        store.registry_credentials().await.unwrap(),
        vec![
            cred("a.example", "bob", "sealed:v1:b", 2),
            cred("reg.example:5000", "cid", "sealed:v1:c", 3)
        ]
    );
    assert!(store.delete_registry_credential("a.example").await.unwrap());
    assert!(!store.delete_registry_credential("a.example").await.unwrap());
    assert_eq!(store.registry_credential("a.example").await.unwrap(), None);
    assert_eq!(store.registry_credentials().await.unwrap().len(), 1);
}
