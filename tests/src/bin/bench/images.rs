//! P8, functions that bring an OCI image (examples/hello-image: Debian
//! bookworm + python3 as the base layer, awslambdaric and app.py on top;
//! ENTRYPOINT `python3 -m awslambdaric`, CMD `app.handler`).
//! - P8.cold: a cold start of the image function, its layers already on
//!   the worker, ÷ the same code (app.py, the same awslambdaric, the host's
//!   python3 of the same version) as a package; alternating, each after the
//!   previous sandbox is gone (P3's method). Goal: ratio ≤ 1.2.
//! - P8.first: the first start on a worker that has never seen the image
//!   (`stoke up` restarted with its worker's image cache wiped: layers
//!   fetched, checked, unpacked, the root made) less a cold start with the
//!   layers there, ÷ plain `tar -xzf` of the same layer blobs into an
//!   empty directory. Goal: ratio ≤ 1.5.
//! - P8.disk: the worker's image cache (`du`, hard links once) with ten
//!   functions on that base (nine add a small layer of their own) ÷ with
//!   one of them. Goal: ratio ≤ 1.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use stoke_tests::images::{lambda_python_image, run as tool};
use stoke_tests::measure::{percentile, sorted};
use stoke_tests::{Platform, pip_packages};

use crate::report::{Figure, Scenario};
use crate::{Scale, start_platform, wait_sandboxes};

/// Unmeasured cold starts of each function first.
const WARMUP: usize = 2;
/// Functions sharing the base image, for P8.disk.
const SHARING: usize = 10;

/// What P8 compares: an image function and the same code as a package.
struct Subject {
    /// The image as an oci-archive, and as an OCI layout.
    archive: PathBuf,
    layout: PathBuf,
    /// Manifest lines both functions share (their mode).
    extra: &'static str,
    package: tempfile::TempDir,
    /// In the command lines of the image's processes and the package's.
    image_needle: &'static str,
    package_needle: &'static str,
    what: &'static str,
    /// Keeps a smoke run's image files.
    _dir: Option<tempfile::TempDir>,
}

/// examples/hello-image against its app.py and awslambdaric as a package.
fn lambda_subject() -> anyhow::Result<Subject> {
    let cached = lambda_python_image();
    Ok(Subject {
        archive: cached.join("image.tar"),
        layout: cached.join("layout"),
        extra: "",
        package: package_function()?,
        image_needle: "app.handler",
        package_needle: "pkg_main.handler",
        what: "examples/hello-image (Debian bookworm + python3; awslambdaric 4.2.2 and app.py on top) against the \
               same app.py and awslambdaric as a package on the host's python3",
        _dir: None,
    })
}

/// A smoke run's (the harness only, in seconds): a busybox image in exec
/// mode against the same script as a package on the host's sh.
fn smoke_subject() -> anyhow::Result<Subject> {
    let dir = tempfile::tempdir()?;
    let built = stoke_tests::images::busybox_image(dir.path(), "read -r ev; /bin/busybox echo '{\"imgmark\":1}'", &[]);
    let package = tempfile::tempdir()?;
    std::fs::write(
        package.path().join("pkgmark.sh"),
        "read -r ev; echo '{\"pkgmark\":1}'\n",
    )?;
    std::fs::write(
        package.path().join("stoke.toml"),
        "name = \"pkg\"\ncommand = [\"/bin/sh\", \"./pkgmark.sh\"]\nmode = \"exec\"\n\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
    )?;
    Ok(Subject {
        archive: built.oci_archive,
        layout: built.layout,
        extra: "mode = \"exec\"\n",
        package,
        image_needle: "imgmark",
        package_needle: "pkgmark",
        what: "a busybox image in exec mode (smoke) against the same script as a package",
        _dir: Some(dir),
    })
}

/// A function directory deploying the image at `image` (a layout dir or
/// an archive) as `name`, with `extra` manifest lines.
fn image_function(name: &str, image: &Path, extra: &str) -> anyhow::Result<tempfile::TempDir> {
    let f = tempfile::tempdir()?;
    std::fs::write(
        f.path().join("stoke.toml"),
        format!(
            "name = \"{name}\"\nimage = \"{}\"\nmemory = 128\ntimeout = 30\n{extra}\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
            image.display()
        ),
    )?;
    Ok(f)
}

/// The same code as a package: app.py (as pkg_main.py, for a process name
/// of its own) beside awslambdaric 4.2.2 from PyPI, on the host's python3.
fn package_function() -> anyhow::Result<tempfile::TempDir> {
    let f = tempfile::tempdir()?;
    let site = pip_packages("awslambdaric-4.2.2", &["awslambdaric==4.2.2"]);
    let out = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", site.display()))
        .arg(f.path())
        .output()?;
    if !out.status.success() {
        bail!("copy awslambdaric: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_file(f.path().join(".installed"));
    std::fs::copy(
        stoke_tests::workspace_root().join("examples/hello-image/app.py"),
        f.path().join("pkg_main.py"),
    )?;
    std::fs::write(
        f.path().join("stoke.toml"),
        "name = \"pkg\"\ncommand = [\"python3\", \"-m\", \"awslambdaric\", \"pkg_main.handler\"]\nmemory = 128\n\
         timeout = 30\n\n[[triggers]]\nhttp = true\nevent = \"body\"\n",
    )?;
    Ok(f)
}

/// A cold invoke of `name` once its previous sandbox (`needle`) is gone;
/// request → response, ms.
async fn cold_invoke(p: &Platform, name: &str, needle: &str) -> anyhow::Result<f64> {
    wait_sandboxes(p, needle, "the previous sandbox to stop", |n| n == 0).await?;
    let t = Instant::now();
    let r = p.post(name, "{}").await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if r.status != 200 {
        bail!("{name}: {} {}\n{}", r.status, r.text(), p.log());
    }
    Ok(ms)
}

/// Bytes under `dir`, each file once however many links it has (`du`).
fn disk_bytes(dir: &Path) -> anyhow::Result<f64> {
    let out = Command::new("du").arg("-s").arg("--bytes").arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("du {}: {text}", dir.display()))
}

/// The layer blobs of the OCI layout `layout`'s image, bottom first.
fn layer_blobs(layout: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let json = |p: &Path| -> anyhow::Result<serde_json::Value> { Ok(serde_json::from_slice(&std::fs::read(p)?)?) };
    let blob = |d: &serde_json::Value| -> anyhow::Result<PathBuf> {
        let d = d.as_str().context("a digest")?;
        Ok(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:")))
    };
    let index = json(&layout.join("index.json"))?;
    let manifest = json(&blob(&index["manifests"][0]["digest"])?)?;
    manifest["layers"]
        .as_array()
        .context("layers")?
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect()
}

/// Write back what is dirty, so that a timed step does not pay for the
/// one before.
fn sync() {
    let _ = Command::new("sync").status();
}

/// Plain `tar -xzf` of `layers` into a fresh directory, ms.
fn tar_extract(layers: &[PathBuf]) -> anyhow::Result<f64> {
    let dest = tempfile::tempdir()?;
    let t = Instant::now();
    for l in layers {
        tool(
            "tar",
            &[
                "-xzf",
                l.to_str().context("utf-8")?,
                "-C",
                dest.path().to_str().context("utf-8")?,
            ],
            dest.path(),
        );
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// `n` layouts of the image at `layout`, each with a small layer of its own
/// on top, under `dir`.
fn sharing_layouts(layout: &Path, dir: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let copy = dir.join(format!("layout{i}"));
        tool(
            "cp",
            &["-r", layout.to_str().context("utf-8")?, copy.to_str().context("utf-8")?],
            dir,
        );
        let stage = dir.join(format!("stage{i}"));
        std::fs::create_dir_all(stage.join("var/task"))?;
        std::fs::write(stage.join("var/task/which.txt"), format!("function {i}\n"))?;
        let tar = dir.join(format!("top{i}.tar"));
        tool(
            "tar",
            &[
                "-C",
                stage.to_str().context("utf-8")?,
                "-cf",
                tar.to_str().context("utf-8")?,
                ".",
            ],
            dir,
        );
        let image = format!("{}:latest", copy.display());
        tool(
            "umoci",
            &["raw", "add-layer", "--image", &image, tar.to_str().context("utf-8")?],
            dir,
        );
        out.push(copy);
    }
    Ok(out)
}

pub async fn run(scale: &Scale) -> anyhow::Result<Scenario> {
    let subject = if scale.smoke {
        smoke_subject()?
    } else {
        lambda_subject()?
    };
    let sharing = if scale.smoke { 2 } else { SHARING };
    let (layout, extra) = (&subject.layout, subject.extra);
    let (image_needle, package_needle) = (subject.image_needle, subject.package_needle);
    let (nats, mut p) = start_platform(0.05, &[]).await?;
    let image_fn = image_function("img", &subject.archive, extra)?;
    p.deploy(image_fn.path());
    p.deploy(subject.package.path());

    // P8.cold
    for _ in 0..WARMUP {
        cold_invoke(&p, "img", image_needle).await?;
        cold_invoke(&p, "pkg", package_needle).await?;
    }
    let (mut image_ms, mut package_ms) = (Vec::new(), Vec::new());
    for round in 0..scale.rounds {
        for _ in 0..scale.p3_cold {
            if round % 2 == 0 {
                image_ms.push(cold_invoke(&p, "img", image_needle).await?);
                package_ms.push(cold_invoke(&p, "pkg", package_needle).await?);
            } else {
                package_ms.push(cold_invoke(&p, "pkg", package_needle).await?);
                image_ms.push(cold_invoke(&p, "img", image_needle).await?);
            }
        }
        eprintln!(
            "  round {round}: cold image {:.1} ms, package {:.1} ms (last)",
            image_ms.last().unwrap_or(&f64::NAN),
            package_ms.last().unwrap_or(&f64::NAN)
        );
    }
    let (image_ms, package_ms) = (sorted(image_ms), sorted(package_ms));
    let image_cold = percentile(&image_ms, 0.5);

    // P8.disk: the cache holds one function's image now (img); nine more
    // sharing its base make ten.
    let images_dir = p.data_dir.path().join("worker/images");
    let one = disk_bytes(&images_dir)?;
    let work = tempfile::tempdir()?;
    let layouts = sharing_layouts(layout, work.path(), sharing - 1)?;
    let mut dirs = Vec::new();
    for (i, l) in layouts.iter().enumerate() {
        let f = image_function(&format!("share{i}"), l, extra)?;
        p.deploy(f.path());
        dirs.push(f);
        let r = p.post(&format!("share{i}"), "{}").await;
        if r.status != 200 {
            bail!("share{i}: {} {}", r.status, r.text());
        }
    }
    let ten = disk_bytes(&images_dir)?;

    // P8.first: restarted with the image cache wiped, against tar -x.
    let blobs = layer_blobs(layout)?;
    let (mut first_ms, mut tar_ms) = (Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        p.interrupt_and_wait(std::time::Duration::from_secs(30));
        std::fs::remove_dir_all(&images_dir).context("wipe the worker's image cache")?;
        p.restart(&nats).await?;
        // Both timed steps start with nothing dirty to write back: what the
        // one before wrote would slow the next (it did, by seconds).
        sync();
        let t = Instant::now();
        let r = p.post("img", "{}").await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if r.status != 200 {
            bail!("img after a restart: {} {}\n{}", r.status, r.text(), p.log());
        }
        first_ms.push(ms);
        sync();
        tar_ms.push(tar_extract(&blobs)?);
        eprintln!(
            "  first start {ms:.0} ms (cold with layers there {image_cold:.0} ms), tar -x {:.0} ms",
            tar_ms.last().unwrap_or(&f64::NAN)
        );
    }
    let (first_ms, tar_ms) = (sorted(first_ms), sorted(tar_ms));
    let first = percentile(&first_ms, 0.5);
    let tar = percentile(&tar_ms, 0.5);

    let layer_bytes: u64 = blobs.iter().map(|b| std::fs::metadata(b).map_or(0, |m| m.len())).sum();
    let mut metrics = BTreeMap::new();
    metrics.insert("cold image p50 (ms)".into(), image_cold);
    metrics.insert("cold image p99 (ms)".into(), percentile(&image_ms, 0.99));
    metrics.insert("cold package p50 (ms)".into(), percentile(&package_ms, 0.5));
    metrics.insert("cold package p99 (ms)".into(), percentile(&package_ms, 0.99));
    metrics.insert("cold invokes per function".into(), image_ms.len() as f64);
    metrics.insert("first start p50 (ms)".into(), first);
    metrics.insert("tar -xzf of the layers p50 (ms)".into(), tar);
    metrics.insert("image layer blobs (MB)".into(), layer_bytes as f64 / 1e6);
    metrics.insert("image cache, one function (MB)".into(), one / 1e6);
    metrics.insert(
        format!("image cache, {sharing} functions sharing its base (MB)"),
        ten / 1e6,
    );
    let figures = vec![
        Figure::new(
            "P8.cold",
            "cold start p50, image function (layers on the worker)",
            "ms",
            image_cold,
            "the same code as a package",
            percentile(&package_ms, 0.5),
        )
        .ratio_at_most(1.2),
        Figure::new(
            "P8.first",
            "first start's extra time on a worker new to the image (fetch, check, unpack, root), p50",
            "ms",
            first - image_cold,
            "plain `tar -xzf` of the same layers, p50",
            tar,
        )
        .ratio_at_most(1.5),
        Figure::new(
            "P8.disk",
            &format!("worker disk for {sharing} functions sharing a base image"),
            "MB",
            ten / 1e6,
            "for one of them",
            one / 1e6,
        )
        .ratio_at_most(1.1),
    ];
    Ok(Scenario {
        id: "P8".into(),
        name: "image functions: cold start, first start, disk".into(),
        setup: format!(
            "{} ({:.1} MB of layer blobs); one `stoke up`, 50 ms idle TTL. Cold: {} round(s) of {} alternating cold invokes each, after {WARMUP} unmeasured; \
             request → response. First start: {} restart(s) with the worker's image cache wiped, the first \
             invoke's time less the cold p50 above, against `tar -xzf` of the same blobs (`sync` before each). Disk: `du` of the \
             worker's image cache (hard links counted once) with {sharing} functions on that base (all but one \
             add a small layer each), against with one.",
            subject.what,
            layer_bytes as f64 / 1e6,
            scale.rounds,
            scale.p3_cold,
            scale.rounds
        ),
        figures,
        metrics,
        plots: Vec::new(),
    })
}
