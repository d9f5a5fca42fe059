//! Image functions pulled from a registry: a real one (Debian's
//! `docker-registry`, the CNCF distribution server) on a loopback port,
//! images pushed to it with `skopeo`; the dispatcher pulls (plain HTTP: the
//! host is in its `insecure_registries`), keeps the credentials `stoke
//! registry login` gave it, and refuses what it cannot pull with the
//! function's current version untouched.

use std::path::Path;

use stoke_tests::images::busybox_image;
use stoke_tests::registry::Registry;
use stoke_tests::{Nats, Platform, PlatformOptions};

/// A busybox image (under `dir`) whose process prints /etc/marker.
fn marked_image(dir: &Path, marker: &str) -> std::path::PathBuf {
    busybox_image(dir, "/bin/busybox cat /etc/marker", &[("etc/marker", marker)]).layout
}

/// A function directory whose stoke.toml runs `image`.
fn function(image: &str) -> tempfile::TempDir {
    let f = tempfile::tempdir().unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            "name = \"reg\"\nimage = \"{image}\"\nmode = \"exec\"\nmemory = 64\ntimeout = 10\n\n\
             [[triggers]]\nhttp = true\n"
        ),
    )
    .unwrap();
    f
}

async fn platform(nats: &Nats, registries: &[&Registry]) -> Platform {
    let hosts: Vec<String> = registries.iter().map(|r| format!("\"{}\"", r.host)).collect();
    Platform::start_with(
        nats,
        PlatformOptions {
            env: vec![(
                "STOKE_DISPATCHER__INSECURE_REGISTRIES".into(),
                format!("[{}]", hosts.join(",")),
            )],
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// `stoke deploy` with args; (success, stdout + stderr).
fn deploy(p: &Platform, dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["deploy", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn versions(p: &Platform) -> usize {
    let out = p.cli(&["versions", "reg", "-o", "json"]);
    if !out.status.success() {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .map_or(0, Vec::len)
}

/// The manifest digest a deploy's pull reported ("pulled sha256:…: …").
fn pulled_digest(text: &str) -> String {
    let at = text
        .find("pulled sha256:")
        .unwrap_or_else(|| panic!("no digest in: {text}"));
    text[at + "pulled ".len()..]
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn a_function_deploys_from_a_registry_by_tag_and_by_digest() {
    let registry = Registry::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = registry.push(&marked_image(a.path(), "A"), "team/fn", "1");
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats, &[&registry]).await;
    let f = function(&reference);

    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}\n{}", p.log());
    assert!(
        text.contains("layer 1/2") && text.contains("layer 2/2"),
        "progress: {text}"
    );
    assert!(text.contains("deployed reg version 1"), "{text}");
    let digest_a = pulled_digest(&text);
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "A"), "{}", p.log());

    // Unchanged image: no new version, and its layers are not fetched again.
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("reg is unchanged (version 1"), "{text}");
    assert_eq!(text.matches("stored already").count(), 2, "{text}");

    // The tag moved to another image: a new version runs it; the old
    // version still has its layers (a rollback runs A again).
    registry.push(&marked_image(b.path(), "B"), "team/fn", "1");
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("deployed reg version 2"), "{text}");
    assert_ne!(pulled_digest(&text), digest_a);
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "B"), "{}", p.log());
    p.cli_ok(&["rollback", "reg", "--to", "1"]);
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "A"), "{}", p.log());

    // By digest (--image overrides stoke.toml): the image pinned, whatever
    // the tag says now.
    let pinned = format!("{}/team/fn@{digest_a}", registry.host);
    let (ok, text) = deploy(&p, f.path(), &["--image", &pinned]);
    assert!(ok, "{text}\n{}", p.log());
    assert_eq!(pulled_digest(&text), digest_a);
    assert!(text.contains("deployed reg version 3"), "{text}");
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "A"), "{}", p.log());
}

#[tokio::test]
async fn a_private_registry_needs_the_credentials_kept_by_stoke() {
    let registry = Registry::start_with_auth("ci", "s3cret-pw").await.unwrap();
    let a = tempfile::tempdir().unwrap();
    let reference = registry.push(&marked_image(a.path(), "private"), "fn", "v1");
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats, &[&registry]).await;
    let f = function(&reference);

    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&registry.host) && text.contains("needs credentials"),
        "{text}"
    );

    let login = |password: &str| {
        let mut cmd = stoke_tests::cli_command(&p.admin);
        cmd.args([
            "registry",
            "login",
            &registry.host,
            "--username",
            "ci",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    login("wrong-pw");
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&registry.host) && text.contains("credentials refused"),
        "{text}"
    );
    assert_eq!(versions(&p), 0, "nothing deployed");

    login("s3cret-pw");
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}\n{}", p.log());
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "private"), "{}", p.log());

    let list = p.cli_ok(&["registry", "list"]);
    assert!(list.contains(&registry.host) && list.contains("ci"), "{list}");
    let json = p.cli_ok(&["registry", "list", "-o", "json"]);
    assert!(!json.contains("s3cret") && !json.contains("wrong-pw"), "{json}");
    assert!(!p.log().contains("s3cret-pw"), "the password is never logged");
    p.cli_ok(&["registry", "logout", &registry.host]);
    assert!(!p.cli_ok(&["registry", "list"]).contains(&registry.host));
    // The database holds it sealed, not as given.
    let db = std::fs::read(p.db_path()).unwrap();
    assert!(!db.windows(9).any(|w| w == b"s3cret-pw"), "sealed at rest");
}

#[tokio::test]
async fn refused_pulls_leave_the_current_version_alone() {
    let mut registry = Registry::start().await.unwrap();
    let a = tempfile::tempdir().unwrap();
    let reference = registry.push(&marked_image(a.path(), "A"), "fn", "1");
    let nats = Nats::start().await.unwrap();
    let p = platform(&nats, &[&registry]).await;
    let f = function(&reference);
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}\n{}", p.log());

    // An unknown tag, an unknown repository: NOT_FOUND.
    for missing in [
        format!("{}/fn:nope", registry.host),
        format!("{}/other:1", registry.host),
    ] {
        let (ok, text) = deploy(&p, f.path(), &["--image", &missing]);
        assert!(!ok, "{text}");
        assert!(
            text.contains("NOT_FOUND") || text.contains("not found") || text.contains("has no manifest"),
            "{text}"
        );
    }
    // A host not in insecure_registries is HTTPS, which this one does not speak.
    // The registry down: UNAVAILABLE, naming the host.
    registry.stop();
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&registry.host) && text.contains("cannot be reached"),
        "{text}"
    );

    assert_eq!(versions(&p), 1, "no version recorded by a refused deploy");
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "A"), "{}", p.log());
}

/// A registry that serves a layer whose bytes are not its digest's (one
/// byte of its stored copy flipped, the size unchanged): the deploy is
/// refused naming the mismatch, no blob of that image is stored, and the
/// current version runs on.
#[tokio::test]
async fn a_tampered_layer_from_a_registry_is_refused_and_nothing_is_stored() {
    let registry = Registry::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = registry.push(&marked_image(a.path(), "A"), "fn", "1");
    let layout_b = marked_image(b.path(), "B");
    let tampered = registry.push(&layout_b, "fn", "2");
    // B's own layer (its first is A's too): the last of its manifest.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout_b.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| layout_b.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&index["manifests"][0]["digest"])).unwrap()).unwrap();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()[7..]
        .to_string();
    let served = registry.blob_file(&top);
    let mut data = std::fs::read(&served).unwrap_or_else(|e| panic!("{}: {e}", served.display()));
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&served, data).unwrap();

    let nats = Nats::start().await.unwrap();
    let p = platform(&nats, &[&registry]).await;
    let f = function(&reference);
    let (ok, text) = deploy(&p, f.path(), &[]);
    assert!(ok, "{text}\n{}", p.log());
    let db = p.db().await;
    let blobs = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM packages")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let before = blobs().await;

    let (ok, text) = deploy(&p, f.path(), &["--image", &tampered]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not match its digest") && text.contains(&top),
        "{text}"
    );
    assert_eq!(blobs().await, before, "nothing of the refused image stored");
    assert_eq!(versions(&p), 1, "no version recorded");
    let r = p.post("reg", "{}").await;
    assert_eq!((r.status, r.text().trim()), (200, "A"), "{}", p.log());
}
