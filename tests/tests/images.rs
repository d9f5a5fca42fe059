//! OCI images read from disk, as `umoci` and `skopeo` write them: an OCI
//! layout directory, an `oci-archive` and a `docker save` tarball; every
//! blob checked; the layers made into a root with their whiteouts applied;
//! bad images refused naming what is wrong.

use std::path::{Path, PathBuf};

use stoke_core::oci::{self, ImageError, ImageLimits, ImageSpec, LayerRef, layer};
use stoke_core::package::Limits;
use stoke_tests::images::{busybox_image, run};

/// The root `image`'s layers make, in `dir`.
fn root_of(image: &oci::Image, dir: &Path) -> PathBuf {
    let mut layers = Vec::new();
    for (i, blob) in image.layers.iter().enumerate() {
        let d = dir.join(format!("layer{i}"));
        std::fs::create_dir(&d).unwrap();
        layer::unpack_layer(&blob.data, &d, &Limits::default()).unwrap();
        layers.push(d);
    }
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    layer::flatten(&layers, &root).unwrap();
    root
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
        roots.push(root_of(&image, &work));
    }
    for root in &roots {
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap(),
            "{root:?}"
        );
        assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert!(!root.join("etc/gone").exists(), "{root:?}: layer 2's whiteout applies");
        assert_eq!(std::fs::read_to_string(root.join("etc/kept")).unwrap(), "from layer 1");
        assert_eq!(std::fs::read_to_string(root.join("etc/new")).unwrap(), "from layer 2");
        assert_eq!(std::fs::read_to_string(root.join("srv/app.txt")).unwrap(), "hello");
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
