//! Certificates for the TLS tests: a throwaway CA, a server certificate it
//! signed for 127.0.0.1 and localhost, and a second, unrelated CA (one a
//! client must not trust), written as PEM files into a temp dir.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

pub struct TestCerts {
    pub dir: tempfile::TempDir,
    /// The CA that signed `cert`.
    pub ca: PathBuf,
    /// The server's certificate and its key (mode 0600).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA, and its key (a key that is not `cert`'s).
    pub other_ca: PathBuf,
    pub other_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate")
}

fn write(dir: &Path, name: &str, pem: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod PEM");
    path
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        let issuer = ca("stoke test CA");
        let other = ca("some other CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "stoke dispatcher");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        TestCerts {
            ca: write(dir.path(), "ca.pem", &issuer.pem(), 0o644),
            cert: write(dir.path(), "dispatcher.pem", &cert.pem(), 0o644),
            key: write(dir.path(), "dispatcher.key", &key.serialize_pem(), 0o600),
            other_ca: write(dir.path(), "other-ca.pem", &other.pem(), 0o644),
            other_key: write(dir.path(), "other.key", &other.key().serialize_pem(), 0o600),
            dir,
        }
    }

    /// The environment that gives a dispatcher this certificate.
    pub fn dispatcher_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "STOKE_DISPATCHER__TLS__CERT_FILE".into(),
                self.cert.display().to_string(),
            ),
            ("STOKE_DISPATCHER__TLS__KEY_FILE".into(), self.key.display().to_string()),
        ]
    }

    /// The environment that gives the HTTP gateway this certificate.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            ("STOKE_BROKER__TLS__CERT_FILE".into(), self.cert.display().to_string()),
            ("STOKE_BROKER__TLS__KEY_FILE".into(), self.key.display().to_string()),
        ]
    }
}
