//! Functions that bring their own root filesystem: an OCI image (built
//! without Docker by `umoci`, converted by `skopeo`) deployed with the CLI
//! and run in the usual sandbox with the image's root as `/`: its layers
//! applied with their whiteouts, its WorkingDir, Entrypoint + Cmd and Env;
//! nothing of the host's /usr; the manifest's env on top.

use stoke_tests::images::busybox_image;
use stoke_tests::{Nats, Platform};

/// What the image's handler reports, one JSON object (busybox applets
/// named through `busybox`: the image has no links for them).
const HANDLER: &str = r#"read -r ev
bb=/bin/busybox
gone=false; [ -e /etc/gone ] && gone=true
usr=false; [ -e /usr/bin/python3 ] && usr=true
printf '{"new":"%s","kept":"%s","gone":%s,"pwd":"%s","uid":%s,"host_usr":%s,"path":"%s","manifest_env":"%s","event":%s}' \
  "$($bb cat /etc/new)" "$($bb cat /etc/kept)" "$gone" "$(pwd)" "$($bb id -u)" "$usr" "$PATH" "$FROM_MANIFEST" "$ev"
"#;

#[tokio::test]
async fn an_image_function_runs_on_the_images_root() {
    let dir = tempfile::tempdir().unwrap();
    let built = busybox_image(dir.path(), ". ./handler.sh", &[("srv/handler.sh", HANDLER)]);
    let f = tempfile::tempdir().unwrap();
    std::fs::copy(&built.oci_archive, f.path().join("image.tar")).unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        "name = \"bb\"\nimage = \"image.tar\"\nmode = \"exec\"\nmemory = 64\ntimeout = 10\n\n\
         [env]\nFROM_MANIFEST = \"m\"\n\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());

    let r = p.post("bb", "{\"n\": 1}\n").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
    let v = r.json();
    assert_eq!(v["new"], "from layer 2", "{v}");
    assert_eq!(v["kept"], "from layer 1", "{v}");
    assert_eq!(v["gone"], false, "layer 2's whiteout hides layer 1's file: {v}");
    assert_eq!(v["pwd"], "/srv", "the image's WorkingDir: {v}");
    assert_eq!(v["uid"], 65534, "sandboxed as nobody: {v}");
    assert_eq!(v["host_usr"], false, "the host's /usr is not there: {v}");
    assert_eq!(v["path"], "/bin", "the image's PATH: {v}");
    assert_eq!(v["manifest_env"], "m", "the manifest's env on top: {v}");
    assert_eq!(v["event"]["n"], 1, "{v}");

    // A second event: the layers are unpacked once per worker, not per
    // start, and nothing is made per image (each sandbox mounts them).
    let again = p.post("bb", "{\"n\": 2}\n").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["event"]["n"], 2);
    let images = p.data_dir.path().join("worker/images");
    let count = |dir: &str| {
        std::fs::read_dir(images.join(dir))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or_default()
    };
    assert_eq!(count("layers"), 2, "the image's two layers, once");
    assert_eq!(count("mnt"), 0, "an empty mount point");
}

/// Lambda's container contract, unmodified: examples/hello-image, a Debian
/// image whose ENTRYPOINT is the runtime interface client (`python3 -m
/// awslambdaric`, from PyPI) and CMD the handler, code in /var/task;
/// deployed as an oci-archive with no `command` in its manifest.
#[tokio::test]
async fn a_lambda_container_image_runs_unmodified() {
    let cached = stoke_tests::images::lambda_python_image();
    let f = tempfile::tempdir().unwrap();
    std::fs::copy(cached.join("image.tar"), f.path().join("image.tar")).unwrap();
    std::fs::copy(
        stoke_tests::workspace_root().join("examples/hello-image/dist/stoke.toml"),
        f.path().join("stoke.toml"),
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());

    let r = p.post("hello-image", "{\"hello\": \"image\"}").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
    let v = r.json();
    assert_eq!(v["os"], "Debian GNU/Linux 12 (bookworm)", "{v}");
    assert_eq!(v["python"], "/usr/bin/python3", "{v}");
    assert_eq!(v["cwd"], "/var/task", "{v}");
    assert_eq!(v["task_root"], "/var/task", "{v}");
    assert_eq!(v["uid"], 65534, "{v}");
    // Through its function URL: Lambda's 2.0 event, the request's body in it.
    assert_eq!(v["event"]["requestContext"]["http"]["method"], "POST", "{v}");
    let body: serde_json::Value = serde_json::from_str(v["event"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["hello"], "image", "{v}");
    // Warm: the runtime client stays up between events.
    let again = p.post("hello-image", "{\"hello\": \"again\"}").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_ne!(again.json()["request_id"], v["request_id"]);
}

/// The image's `User` (here `4242:7`, a uid its /etc/passwd does not
/// know) is who the process is inside; the image deployed as its OCI
/// layout directory.
#[tokio::test]
async fn an_image_runs_as_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = r#"bb=/bin/busybox; $bb printf '{"uid":%s,"gid":%s}' "$($bb id -u)" "$($bb id -g)""#;
    let built = busybox_image(dir.path(), cmd, &[]);
    let image = format!("{}:latest", built.layout.display());
    stoke_tests::images::run(
        "umoci",
        &["config", "--image", &image, "--config.user", "4242:7"],
        dir.path(),
    );
    let f = tempfile::tempdir().unwrap();
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            "name = \"who\"\nimage = \"{}\"\nmode = \"exec\"\n\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
            built.layout.display()
        ),
    )
    .unwrap();
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    p.deploy(f.path());
    let r = p.post("who", "").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
    assert_eq!(r.json(), serde_json::json!({"uid": 4242, "gid": 7}));
}

/// Two functions on the same layers started at once (a fresh worker): each
/// image is prepared once, the shared layers unpacked once, both answer.
#[tokio::test]
async fn two_images_sharing_layers_start_together() {
    let dir = tempfile::tempdir().unwrap();
    let built = busybox_image(dir.path(), "/bin/busybox cat /etc/new", &[]);
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let mut fns = Vec::new();
    for (name, image) in [("one", &built.layout), ("two", &built.oci_archive)] {
        let f = tempfile::tempdir().unwrap();
        std::fs::write(
            f.path().join("stoke.toml"),
            format!(
                "name = \"{name}\"\nimage = \"{}\"\nmode = \"exec\"\n\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
                image.display()
            ),
        )
        .unwrap();
        p.deploy(f.path());
        fns.push(f);
    }
    let (a, b, c) = tokio::join!(p.post("one", ""), p.post("two", ""), p.post("one", ""));
    for r in [a, b, c] {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), p.log());
        assert_eq!(r.text(), "from layer 2");
    }
    let layers = std::fs::read_dir(p.data_dir.path().join("worker/images/layers"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(layers.len(), 2, "shared layers once, no temp dirs left: {layers:?}");
}
