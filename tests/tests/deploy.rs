//! Deploy refusals: malformed manifests, missing files, oversized or
//! tampered packages — refused by the CLI before upload and by the server
//! for anything that bypasses the CLI, each error naming the field or file.

use std::path::Path;

use stoke_core::package::{Limits, pack_dir};
use stoke_proto::admin_service_client::AdminServiceClient;
use stoke_proto::{DeployHeader, DeployRequest, ListFunctionsRequest, deploy_request};
use stoke_tests::{Nats, Platform};

fn function_dir(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("stoke.toml"), manifest).unwrap();
    for (name, body) in files {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    d
}

fn deploy_err(p: &Platform, dir: &Path) -> String {
    let out = p.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success(), "deploy of {} should fail", dir.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn raw_deploy(p: &Platform, parts: Vec<DeployRequest>) -> Result<(), tonic::Status> {
    let mut client = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap()
        .max_encoding_message_size(128 << 20);
    client.deploy(futures::stream::iter(parts)).await.map(|_| ())
}

fn header(digest: &str, size: u64) -> DeployRequest {
    DeployRequest {
        part: Some(deploy_request::Part::Header(DeployHeader {
            digest: digest.into(),
            size,
            ..Default::default()
        })),
    }
}

fn chunk(data: &[u8]) -> DeployRequest {
    DeployRequest {
        part: Some(deploy_request::Part::Chunk(data.to_vec())),
    }
}

#[tokio::test]
async fn cli_refuses_bad_manifests_naming_the_field_or_file() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();

    let d = function_dir("name = \"ok\"\ncommand = [\"python3\"]\nmemory = 1\n", &[]);
    let err = deploy_err(&p, d.path());
    assert!(err.contains("`memory`"), "{err}");

    let d = function_dir("name = \"Bad_Name\"\ncommand = [\"python3\"]\n", &[]);
    let err = deploy_err(&p, d.path());
    assert!(err.contains("`name`"), "{err}");

    let d = function_dir("name = \"ok\"\ncommand = [\"python3\"]\nmemroy = 128\n", &[]);
    let err = deploy_err(&p, d.path());
    assert!(err.contains("memroy"), "{err}");

    let d = function_dir("name = \"ok\"\ncommand = [\"./missing.sh\"]\n", &[]);
    let err = deploy_err(&p, d.path());
    assert!(err.contains("missing.sh"), "{err}");

    let d = tempfile::tempdir().unwrap();
    let err = deploy_err(&p, d.path());
    assert!(err.contains("stoke.toml"), "{err}");

    // Nothing was recorded.
    let out = p.cli(&["functions"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no functions deployed"));
}

#[tokio::test]
async fn cli_refuses_an_oversized_package_naming_the_limit() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let d = function_dir("name = \"big\"\ncommand = [\"./run\"]\n", &[("run", "#!/bin/sh\n")]);
    // Incompressible data over the 64 MiB archive limit.
    let mut noise = vec![0u8; 65 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(d.path().join("blob.bin"), &noise).unwrap();
    let err = deploy_err(&p, d.path());
    assert!(err.contains("limit"), "{err}");
}

#[tokio::test]
async fn server_refuses_what_bypasses_the_cli() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();

    // An invalid manifest inside a well-formed package.
    let d = function_dir("name = \"srv\"\ncommand = [\"python3\"]\ntimeout = 100000\n", &[]);
    let packed = pack_dir(d.path(), &Limits::default()).unwrap();
    let err = raw_deploy(
        &p,
        vec![
            header(&packed.digest, packed.archive.len() as u64),
            chunk(&packed.archive),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`timeout`"), "{}", err.message());

    // A package whose bytes do not match its digest.
    let d = function_dir("name = \"srv\"\ncommand = [\"python3\"]\n", &[]);
    let packed = pack_dir(d.path(), &Limits::default()).unwrap();
    let mut tampered = packed.archive.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let err = raw_deploy(
        &p,
        vec![header(&packed.digest, tampered.len() as u64), chunk(&tampered)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("digest"), "{}", err.message());

    // A declared size over the limit is refused before any upload.
    let err = raw_deploy(&p, vec![header(&packed.digest, 65 << 20)])
        .await
        .unwrap_err();
    assert!(err.message().contains("limit"), "{}", err.message());

    // Not a tar at all.
    let junk = b"not a gzipped tar".to_vec();
    let err = raw_deploy(
        &p,
        vec![
            header(&stoke_core::package::digest(&junk), junk.len() as u64),
            chunk(&junk),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());

    // Chunks without a header.
    let err = raw_deploy(&p, vec![chunk(b"x")]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let mut client = AdminServiceClient::connect(format!("http://{}", p.admin))
        .await
        .unwrap();
    let listed = client
        .list_functions(ListFunctionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.functions.is_empty(), "nothing deployed: {listed:?}");

    // The good package deploys, and redeploying it is reported unchanged.
    raw_deploy(
        &p,
        vec![
            header(&packed.digest, packed.archive.len() as u64),
            chunk(&packed.archive),
        ],
    )
    .await
    .unwrap();
    let out = p.cli(&["deploy", d.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged (version 1"),
        "{out:?}"
    );
}

/// A gzipped tar whose entries are written as an attacker would, without the
/// tar crate's own path checks: (path, symlink target or file content).
fn hostile_archive(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (path, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(target).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
            }
        }
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn archives_that_escape_the_package_are_refused_and_write_nothing_outside() {
    let nats = Nats::start().await.unwrap();
    let p = Platform::start(&nats).await.unwrap();
    let manifest = b"name = \"evil\"\ncommand = [\"python3\"]\n";
    let marker = format!("stoke-escape-{}", std::process::id());
    let outside = std::env::temp_dir().join(&marker);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            hostile_archive(&[
                ("stoke.toml", None, manifest),
                (&format!("../../../../../../tmp/{marker}"), None, b"pwned"),
            ]),
            "..",
        ),
        (
            "absolute",
            hostile_archive(&[
                ("stoke.toml", None, manifest),
                (outside.to_str().unwrap(), None, b"pwned"),
            ]),
            "absolute",
        ),
        (
            "symlink escape",
            hostile_archive(&[
                ("stoke.toml", None, manifest),
                ("out", Some("/tmp"), b""),
                (&format!("out/{marker}"), None, b"pwned"),
            ]),
            "leaves the package",
        ),
    ];
    for (what, archive, says) in cases {
        let digest = stoke_core::package::digest(&archive);
        let err = raw_deploy(&p, vec![header(&digest, archive.len() as u64), chunk(&archive)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {}", err.message());
        assert!(err.message().contains(says), "{what}: {}", err.message());
        assert!(!outside.exists(), "{what} wrote {}", outside.display());
        println!("{what}: {}", err.message());
    }
}
