//! OCI images read from disk, as `umoci` and `skopeo` write them: an OCI
//! layout directory, an `oci-archive` and a `docker save` tarball; every
//! blob checked; the layers unpacked with their whiteouts;
//! bad images refused naming what is wrong.

use std::path::{Path, PathBuf};

use stoke_core::oci::{self, ImageError, ImageLimits, ImageSpec, LayerRef, layer};
use stoke_core::package::Limits;
use stoke_tests::images::{busybox_image, run};

/// `image`'s layers unpacked under `dir`, bottom first.
fn layers_of(image: &oci::Image, dir: &Path) -> Vec<PathBuf> {
    let mut layers = Vec::new();
    for (i, blob) in image.layers.iter().enumerate() {
        let d = dir.join(format!("layer{i}"));
        std::fs::create_dir(&d).unwrap();
        layer::unpack_layer(&blob.data, &d, &Limits::default()).unwrap();
        layers.push(d);
    }
    layers
}

#[test]
fn an_image_reads_the_same_from_a_layout_an_oci_archive_and_docker_save() {
    let dir = tempfile::tempdir().unwrap();
    let built = busybox_image(dir.path(), "cat", &[("srv/app.txt", "hello")]);
    let mut roots = Vec::new();
    for (i, path) in [&built.layout, &built.oci_archive, &built.docker_archive]
        .into_iter()
        .enumerate()
    {
        let image = oci::read_image(path, &ImageLimits::default()).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(image.layers.len(), 2, "{path:?}: two layers");
        let spec = ImageSpec::new(
            "test",
            &image.manifest_digest,
            &image.config,
            image
                .layers
                .iter()
                .map(|b| LayerRef {
                    digest: b.digest.clone(),
                    size: b.data.len() as u64,
                })
                .collect(),
        );
        assert_eq!(spec.argv, ["/bin/sh", "-c", "cat"]);
        assert_eq!(spec.working_dir, "/srv");
        assert_eq!(spec.path_var(), "/bin");
        let work = dir.path().join(format!("unpacked{i}"));
        std::fs::create_dir(&work).unwrap();
        roots.push(layers_of(&image, &work));
    }
    for layers in &roots {
        let (first, second) = (&layers[0], &layers[1]);
        assert_eq!(
            std::fs::read(first.join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap(),
            "{first:?}"
        );
        assert_eq!(std::fs::read_link(first.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(std::fs::read_to_string(first.join("etc/gone")).unwrap(), "from layer 1");
        assert_eq!(std::fs::read_to_string(first.join("etc/kept")).unwrap(), "from layer 1");
        // Layer 2 removes etc/gone: a whiteout marker, kept for the worker.
        assert!(second.join("etc/.wh.gone").is_file(), "{second:?}: layer 2's whiteout");
        assert_eq!(std::fs::read_to_string(second.join("etc/new")).unwrap(), "from layer 2");
        assert_eq!(std::fs::read_to_string(second.join("srv/app.txt")).unwrap(), "hello");
    }
    // The layout and its archive are the same image.
    let a = oci::read_image(&built.layout, &ImageLimits::default()).unwrap();
    let b = oci::read_image(&built.oci_archive, &ImageLimits::default()).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
}

/// A copy of the layout at `from` in `to`.
fn copy_layout(from: &Path, to: &Path) {
    run(
        "cp",
        &["-r", from.to_str().unwrap(), to.to_str().unwrap()],
        Path::new("/"),
    );
}

/// The blob files of a layout's one image: (manifest, config, layers).
fn blobs(layout: &Path) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| layout.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let manifest_path = blob(&index["manifests"][0]["digest"]);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect();
    (manifest_path, blob(&manifest["config"]["digest"]), layers)
}

#[test]
fn bad_images_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let built = busybox_image(dir.path(), "cat", &[]);
    let read = |p: &Path| oci::read_image(p, &ImageLimits::default()).map(|_| ()).unwrap_err();

    // A layer whose bytes are not its digest's.
    let tampered = dir.path().join("tampered");
    copy_layout(&built.layout, &tampered);
    let (_, _, layers) = blobs(&tampered);
    let mut data = std::fs::read(&layers[1]).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&layers[1], data).unwrap();
    let e = read(&tampered);
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains(layers[1].file_name().unwrap().to_str().unwrap()),
        "{e}"
    );

    // A layer missing.
    let missing = dir.path().join("missing");
    copy_layout(&built.layout, &missing);
    let (_, _, layers) = blobs(&missing);
    std::fs::remove_file(&layers[0]).unwrap();
    let e = read(&missing);
    assert!(matches!(e, ImageError::MissingBlob { .. }), "{e}");

    // An image for another architecture.
    let arm = dir.path().join("arm");
    copy_layout(&built.layout, &arm);
    let image = format!("{}:latest", arm.display());
    run(
        "umoci",
        &["config", "--image", &image, "--architecture", "arm64"],
        dir.path(),
    );
    let e = read(&arm);
    assert!(e.to_string().contains("linux/arm64; workers run linux/amd64"), "{e}");

    // An index listing only other platforms.
    let list = dir.path().join("list");
    copy_layout(&built.layout, &list);
    let index_path = list.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let mut other = index["manifests"][0].clone();
    other["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
    let mut third = other.clone();
    third["platform"]["architecture"] = "ppc64le".into();
    index["manifests"] = serde_json::json!([other, third]);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let e = read(&list);
    assert!(
        e.to_string()
            .contains("no linux/amd64 manifest (it has: linux/arm64, linux/ppc64le)"),
        "{e}"
    );

    // Over the size limit.
    let small = ImageLimits {
        max_image_bytes: 1000,
        ..Default::default()
    };
    let e = oci::read_image(&built.layout, &small).unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");

    // Not an image at all.
    let e = read(dir.path().join("bundle").as_path());
    assert!(matches!(e, ImageError::NotAnImage(_)), "{e}");
}

// Deploying image functions: `image = "…"` in stoke.toml, read and uploaded
// by the CLI (layers and spec with PutBlob), named by the deploy.

mod deploying {
    use std::path::Path;

    use stoke_core::oci::ImageSpec;
    use stoke_core::package::{Limits, pack_dir};
    use stoke_proto::{BlobHeader, DeployHeader, DeployRequest, PutBlobRequest, deploy_request, put_blob_request};
    use stoke_tests::images::{busybox_image, run};
    use stoke_tests::{Nats, Platform, admin_client, count};

    use super::{blobs, copy_layout};

    const MANIFEST: &str = "name = \"bb\"\nimage = \"image-oci.tar\"\nmode = \"exec\"\n";

    /// A function directory with `manifest` and the file `image` copied in
    /// as `image-oci.tar`.
    fn function_dir(manifest: &str, image: Option<&Path>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stoke.toml"), manifest).unwrap();
        if let Some(image) = image {
            std::fs::copy(image, d.path().join("image-oci.tar")).unwrap();
        }
        d
    }

    fn deploy_json(p: &Platform, dir: &Path) -> serde_json::Value {
        let out = p.cli_ok(&["deploy", dir.to_str().unwrap(), "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    async fn stored(p: &Platform, digest: &str) -> Option<Vec<u8>> {
        sqlx::query_scalar("SELECT data FROM packages WHERE digest = ?")
            .bind(digest)
            .fetch_optional(&p.db().await)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_image_function_deploys_once_per_image() {
        let nats = Nats::start().await.unwrap();
        let p = Platform::start(&nats).await.unwrap();
        let images = tempfile::tempdir().unwrap();
        let built = busybox_image(images.path(), "cat", &[]);
        let f = function_dir(MANIFEST, Some(&built.oci_archive));

        let out = p.cli(&["deploy", f.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{}", p.log());
        assert!(
            stderr.contains("reading image")
                && stderr.contains("uploading layer 1/2")
                && stderr.contains("uploading layer 2/2"),
            "progress is shown: {stderr}"
        );
        let d = deploy_json(&p, f.path());
        assert_eq!(d["unchanged"], true, "the same image again is unchanged: {d}");
        let info = &d["function"];
        assert_eq!(info["version"], 1, "{d}");
        let image = info["image"].as_str().unwrap().to_string();
        assert_eq!(image.len(), 64, "{d}");
        // The image is not in the package: it went up as blobs.
        assert!(info["package_size"].as_u64().unwrap() < 4096, "{d}");

        // The spec and every layer it names are stored, by digest.
        let spec = ImageSpec::from_bytes(&stored(&p, &image).await.expect("spec stored")).unwrap();
        assert_eq!(spec.source, "image-oci.tar");
        assert_eq!(spec.argv, ["/bin/sh", "-c", "cat"]);
        assert_eq!(spec.layers.len(), 2);
        for layer in &spec.layers {
            let data = stored(&p, &layer.digest).await.expect("layer stored");
            assert_eq!(data.len() as u64, layer.size);
            assert_eq!(stoke_core::package::digest(&data), layer.digest);
        }

        // Another image (other content) under the same manifest: a new version.
        let other = tempfile::tempdir().unwrap();
        let rebuilt = busybox_image(other.path(), "cat", &[("srv/app.txt", "v2")]);
        std::fs::copy(&rebuilt.oci_archive, f.path().join("image-oci.tar")).unwrap();
        let d = deploy_json(&p, f.path());
        assert_eq!(
            (d["unchanged"].as_bool(), d["function"]["version"].as_u64()),
            (Some(false), Some(2)),
            "{d}"
        );
        let image2 = d["function"]["image"].as_str().unwrap();
        assert_ne!(image2, image);
        let fns: serde_json::Value = serde_json::from_str(&p.cli_ok(&["functions", "-o", "json"])).unwrap();
        assert_eq!(fns[0]["image"], image2, "{fns}");

        // A `docker save` tarball and a layout directory, by absolute path, deploy too.
        for path in [&rebuilt.docker_archive, &rebuilt.layout] {
            let manifest = format!("name = \"bb\"\nimage = {:?}\nmode = \"exec\"\n", path.to_str().unwrap());
            std::fs::write(f.path().join("stoke.toml"), manifest).unwrap();
            let d = deploy_json(&p, f.path());
            assert_eq!(d["unchanged"], false, "{path:?}: {d}");
        }
    }

    #[tokio::test]
    async fn bad_images_are_refused_at_deploy_and_nothing_is_recorded() {
        let nats = Nats::start().await.unwrap();
        let p = Platform::start(&nats).await.unwrap();
        let images = tempfile::tempdir().unwrap();
        let built = busybox_image(images.path(), "cat", &[]);
        let layout_fn = |name: &str| {
            let f = function_dir(&format!("name = \"bb\"\nimage = \"{name}\"\n"), None);
            copy_layout(&built.layout, &f.path().join(name));
            f
        };

        // A tampered layer.
        let f = layout_fn("layout");
        let (_, _, layers) = blobs(&f.path().join("layout"));
        let mut data = std::fs::read(&layers[0]).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&layers[0], data).unwrap();
        let err = p.cli_err(&["deploy", f.path().to_str().unwrap()]);
        assert!(err.contains("does not match its digest"), "{err}");

        // An image for another architecture.
        let f = layout_fn("arm");
        let image = format!("{}:latest", f.path().join("arm").display());
        run(
            "umoci",
            &["config", "--image", &image, "--architecture", "arm64"],
            f.path(),
        );
        let err = p.cli_err(&["deploy", f.path().to_str().unwrap()]);
        assert!(
            err.contains("the image is for linux/arm64; workers run linux/amd64"),
            "{err}"
        );

        // A path (`./…`) that is not there: the forms on disk and a
        // registry reference are named (a reference is pulled: registry.rs).
        let f = function_dir("name = \"bb\"\nimage = \"./no-such-image\"\n", None);
        let err = p.cli_err(&["deploy", f.path().to_str().unwrap()]);
        assert!(
            err.contains("does not exist")
                && err.contains("oci-archive")
                && err.contains("docker save")
                && err.contains("registry reference"),
            "{err}"
        );

        assert!(p.cli_ok(&["functions"]).contains("no functions deployed"));
        let db = p.db().await;
        assert_eq!(count(&db, "SELECT COUNT(*) FROM function_versions").await, 0);
    }

    fn deploy_parts(archive: &[u8], digest: &str, image: &str) -> Vec<DeployRequest> {
        vec![
            DeployRequest {
                part: Some(deploy_request::Part::Header(DeployHeader {
                    digest: digest.into(),
                    size: archive.len() as u64,
                    image: image.into(),
                    ..Default::default()
                })),
            },
            DeployRequest {
                part: Some(deploy_request::Part::Chunk(archive.to_vec())),
            },
        ]
    }

    fn blob_parts(digest: &str, data: &[u8]) -> Vec<PutBlobRequest> {
        vec![
            PutBlobRequest {
                part: Some(put_blob_request::Part::Header(BlobHeader {
                    digest: digest.into(),
                    size: data.len() as u64,
                })),
            },
            PutBlobRequest {
                part: Some(put_blob_request::Part::Chunk(data.to_vec())),
            },
        ]
    }

    /// What bypasses the CLI: an image manifest deployed without its image,
    /// or naming an image whose spec or layers were never uploaded; blobs
    /// that are not what their header says.
    #[tokio::test]
    async fn an_image_deploy_needs_its_blobs_uploaded_first() {
        let nats = Nats::start().await.unwrap();
        let p = Platform::start(&nats).await.unwrap();
        let mut admin = admin_client(&p, "").await;
        let f = function_dir(MANIFEST, None);
        let packed = pack_dir(f.path(), &Limits::default()).unwrap();
        let deploy = |image: &str| futures::stream::iter(deploy_parts(&packed.archive, &packed.digest, image));

        let e = admin.deploy(deploy("")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(
            e.message()
                .contains("deployed by the stoke CLI, which uploads the image"),
            "{e}"
        );

        let nowhere = "0".repeat(64);
        let e = admin.deploy(deploy(&nowhere)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(
            e.message().contains(&nowhere) && e.message().contains("upload it with PutBlob first"),
            "{e}"
        );

        // A spec whose layer was never uploaded.
        let layer = "1".repeat(64);
        let spec = ImageSpec::new(
            "test",
            &format!("sha256:{}", "2".repeat(64)),
            &Default::default(),
            vec![stoke_core::oci::LayerRef {
                digest: layer.clone(),
                size: 10,
            }],
        )
        .to_bytes();
        let spec_digest = stoke_core::package::digest(&spec);
        admin
            .put_blob(futures::stream::iter(blob_parts(&spec_digest, &spec)))
            .await
            .unwrap();
        let e = admin.deploy(deploy(&spec_digest)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        assert!(
            e.message().contains(&layer) && e.message().contains("upload it with PutBlob first"),
            "{e}"
        );

        // A plain manifest naming an image.
        let plain = function_dir("name = \"plain\"\ncommand = [\"cat\"]\n", None);
        let plain = pack_dir(plain.path(), &Limits::default()).unwrap();
        let e = admin
            .deploy(futures::stream::iter(deploy_parts(
                &plain.archive,
                &plain.digest,
                &spec_digest,
            )))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

        // Blobs are checked against their header.
        let e = admin
            .put_blob(futures::stream::iter(blob_parts(&"3".repeat(64), b"data")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("blob digest is"), "{e}");
        let e = admin
            .put_blob(futures::stream::iter(blob_parts("not-hex", b"data")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let mut big = blob_parts(&"4".repeat(64), b"");
        if let Some(put_blob_request::Part::Header(h)) = &mut big[0].part {
            h.size = 2 << 30;
        }
        let e = admin.put_blob(futures::stream::iter(big)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("over the"), "{e}");

        let db = p.db().await;
        assert_eq!(count(&db, "SELECT COUNT(*) FROM function_versions").await, 0);
    }
}
