//! Images for the tests, built without Docker by the real tools (Debian's
//! `umoci` and `skopeo`; `scripts/deps.sh` installs them): a busybox image
//! of two layers (the second removes a file of the first, so it carries a
//! whiteout), as an OCI layout directory, an `oci-archive` and a `docker
//! save` tarball (`skopeo copy … docker-archive:`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a tool; panic with its output when it fails.
pub fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (apt-get install umoci skopeo): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox image under `dir`: the layout `dir/layout` (tag `latest`),
/// its rootfs as `first` (files: `path`, content) then `second` (the same
/// with `etc/gone` removed), and `config` flags for `umoci config`.
pub struct BusyboxImage {
    pub layout: PathBuf,
    pub oci_archive: PathBuf,
    pub docker_archive: PathBuf,
}

/// Build it in `dir`: layer 1 has /bin/busybox (the host's static one),
/// /bin/sh → busybox, /etc/gone and /etc/kept; layer 2 removes /etc/gone
/// and adds /etc/new and `extra` files. Entrypoint `/bin/sh -c`, Cmd
/// `cmd`, PATH=/bin, WorkingDir /srv.
pub fn busybox_image(dir: &Path, cmd: &str, extra: &[(&str, &str)]) -> BusyboxImage {
    let layout = dir.join("layout");
    let image = format!("{}:latest", layout.display());
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    run("umoci", &["init", "--layout", layout.to_str().unwrap()], dir);
    run("umoci", &["new", "--image", &image], dir);
    run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()], dir);
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("srv")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("etc/gone"), "from layer 1").unwrap();
    std::fs::write(rootfs.join("etc/kept"), "from layer 1").unwrap();
    let bundle_s = bundle.to_str().unwrap();
    run(
        "umoci",
        &["repack", "--refresh-bundle", "--image", &image, bundle_s],
        dir,
    );
    std::fs::remove_file(rootfs.join("etc/gone")).unwrap();
    std::fs::write(rootfs.join("etc/new"), "from layer 2").unwrap();
    for (path, content) in extra {
        let p = rootfs.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    run("umoci", &["repack", "--image", &image, bundle_s], dir);
    run(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            cmd,
            "--config.env",
            "PATH=/bin",
            "--config.workingdir",
            "/srv",
        ],
        dir,
    );
    let oci_archive = dir.join("image-oci.tar");
    let docker_archive = dir.join("image-docker.tar");
    let from = format!("oci:{image}");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &from,
            &format!("oci-archive:{}", oci_archive.display()),
        ],
        dir,
    );
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &from,
            &format!("docker-archive:{}:stoke/busybox:1", docker_archive.display()),
        ],
        dir,
    );
    BusyboxImage {
        layout,
        oci_archive,
        docker_archive,
    }
}

/// The Lambda-style Python image of `examples/hello-image` (its
/// `build.sh`: a real Debian bookworm root made by mmdebstrap as the base
/// layer, awslambdaric 4.2.2 from PyPI and app.py on top; ENTRYPOINT
/// `python3 -m awslambdaric`, CMD `app.handler`), built once per target dir
/// under `target/test-cache/lambda-python-image`: `image.tar` there is its
/// oci-archive, `layout` its OCI layout.
pub fn lambda_python_image() -> PathBuf {
    crate::cached_install("lambda-python-image", |dir| {
        Command::new(crate::workspace_root().join("examples/hello-image/build.sh"))
            .arg(dir)
            .output()
            .expect("run examples/hello-image/build.sh")
    })
}

/// examples/hello-image's layout with one more layer holding `files`
/// (host path → path under /var/task), cached under
/// `target/test-cache/<name>`; the OCI layout directory.
pub fn lambda_image_with(name: &str, files: &[(PathBuf, &str)]) -> PathBuf {
    let base = lambda_python_image().join("layout");
    let dir = crate::cached_install(name, |dir| {
        std::fs::create_dir_all(dir).unwrap();
        run(
            "cp",
            &["-r", base.to_str().unwrap(), dir.join("layout").to_str().unwrap()],
            dir,
        );
        let stage = dir.join("stage");
        for (from, to) in files {
            let dest = stage.join("var/task").join(to);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        }
        let tar = dir.join("top.tar");
        run(
            "tar",
            &["-C", stage.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."],
            dir,
        );
        let image = format!("{}:latest", dir.join("layout").display());
        run(
            "umoci",
            &["raw", "add-layer", "--image", &image, tar.to_str().unwrap()],
            dir,
        );
        std::fs::remove_file(&tar).unwrap();
        std::fs::remove_dir_all(&stage).unwrap();
        Command::new("true").output().unwrap()
    });
    dir.join("layout")
}
