//! TLS on the gRPC port, which workers and the admin API share: the
//! dispatcher's certificate and key, and what its clients (workers, the
//! CLI) trust. PEM files; rustls with ring underneath (tonic's `tls-ring`).
//! An `https://` address turns TLS on at the client; an `http://` one (or
//! no scheme) is plaintext, as before.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// A server's certificate and key (both or neither; neither: plaintext).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM: the certificate (for the names and addresses clients dial),
    /// then any intermediates.
    pub cert_file: Option<PathBuf>,
    /// PEM: its private key (keep it mode 0600).
    pub key_file: Option<PathBuf>,
}

impl TlsOptions {
    /// The two files, None for plaintext; `table` names the config table
    /// in the error for one without the other.
    pub fn files(&self, table: &str) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                // Like the secrets key: a private key others can read is
                // worth a word.
                if let Ok(meta) = std::fs::metadata(key)
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
                {
                    tracing::warn!(key_file = %key.display(), "the TLS private key is readable by group or others: chmod 600 it");
                }
                Ok(Some((cert.as_path(), key.as_path())))
            }
            _ => Err(format!(
                "[{table}] needs both cert_file and key_file (or neither, for plaintext)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS {what} {path} is not a PEM file (no `-----BEGIN` line)")]
    NotPem { what: &'static str, path: PathBuf },
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    #[error("TLS for {0}: {1}")]
    Setup(String, String),
}

/// Fails unless `path` can be read and holds PEM (`what` names it in the
/// error).
pub fn check_pem(what: &'static str, path: &Path) -> Result<(), TlsError> {
    read_pem(what, path).map(drop)
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !pem.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// The server side: `cert` (the certificate, then any intermediates) and
/// its private `key`, both PEM. Whether they match is checked when the
/// server is built (`Server::tls_config`).
pub fn server(cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read_pem("certificate", cert)?, read_pem("private key", key)?);
    // A client that connects and never says hello is dropped, not kept.
    Ok(ServerTlsConfig::new()
        .identity(identity)
        .timeout(std::time::Duration::from_secs(10)))
}

/// An endpoint for `addr`: `https://host:port` verifies the server's
/// certificate (for `host`, a name or an IP address) against `ca` — a PEM
/// file of one or more CA certificates — or, without one, the system's
/// roots; `http://host:port` or a bare `host:port` is plaintext and
/// ignores `ca`.
pub fn endpoint(addr: &str, ca: Option<&Path>) -> Result<Endpoint, TlsError> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint =
        Endpoint::from_shared(url.clone()).map_err(|e| TlsError::Address(addr.to_string(), e.to_string()))?;
    match endpoint.uri().scheme_str() {
        // Asked to trust a CA, the caller wants TLS: never plaintext then
        // (a token would cross in clear).
        Some("http") if ca.is_some() => {
            return Err(TlsError::Address(
                addr.to_string(),
                "a CA file is given but the address is plaintext: use https://host:port".into(),
            ));
        }
        Some("http") => return Ok(endpoint),
        Some("https") => {}
        _ => {
            return Err(TlsError::Address(
                addr.to_string(),
                "expected http://host:port or https://host:port".into(),
            ));
        }
    }
    let tls = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("CA certificate", ca)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    endpoint
        .tls_config(tls)
        .map_err(|e| TlsError::Setup(addr.to_string(), chain(&e)))
}

/// A failed connection to `addr`, said whole: [`chain`], and a [`hint`]
/// when one fits.
pub fn describe(addr: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let text = chain(error);
    match hint(addr, &text) {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

/// An error with its causes, `: `-separated (tonic's own transport error
/// says only "transport error").
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// Why a connection failed, when TLS is the likely reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate chains to no CA the client trusts.
    Untrusted,
    /// The certificate does not name the host dialled.
    WrongName,
    /// The client spoke TLS; the server answered in plaintext.
    ServerNotTls,
    /// The client spoke plaintext; the server (likely TLS) dropped it.
    ServerMaybeTls,
}

impl TlsFailure {
    /// A failure's cause from its text (`chain`): `tls` is whether the
    /// client spoke TLS. One classifier for the gRPC clients and NATS.
    pub fn classify(tls: bool, error: &str) -> Option<TlsFailure> {
        let e = error.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| e.contains(w));
        if tls {
            if any(&["notvalidforname", "not valid for name"]) {
                Some(TlsFailure::WrongName)
            } else if any(&[
                "unknownissuer",
                "unknown issuer",
                "invalid peer certificate",
                "badsignature",
            ]) {
                Some(TlsFailure::Untrusted)
            } else if any(&["corrupt message", "invalidcontenttype", "wrong version"]) {
                Some(TlsFailure::ServerNotTls)
            } else {
                None
            }
        } else if any(&[
            // A TLS server drops a plaintext HTTP/2 client's connection at
            // once; how the client words that varies from call to call.
            "connection reset",
            "broken pipe",
            "h2 protocol",
            "operation was canceled",
            "connection closed",
            "unexpected eof",
            "unexpected end of file",
        ]) {
            Some(TlsFailure::ServerMaybeTls)
        } else {
            None
        }
    }
}

/// What to add to a failed connection's message to `addr` (a gRPC
/// address) when the likely cause is TLS on one side only, or a
/// certificate the client does not accept.
pub fn hint(addr: &str, error: &str) -> Option<&'static str> {
    Some(match TlsFailure::classify(addr.starts_with("https://"), error)? {
        TlsFailure::Untrusted => {
            "the server's certificate is not trusted: give the CA that signed it (ca_file / --ca-file)"
        }
        TlsFailure::WrongName => {
            "the server's certificate does not name the host dialled: dial a name or address it lists"
        }
        TlsFailure::ServerNotTls => "the server did not answer in TLS: use http:// if it serves plaintext",
        TlsFailure::ServerMaybeTls => "if the server serves TLS ([dispatcher.tls]), use https://",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_stay_plain_and_bad_ones_say_why() {
        assert_eq!(
            endpoint("127.0.0.1:50051", None).unwrap().uri().scheme_str(),
            Some("http")
        );
        // A CA given for a plaintext address: the caller wanted TLS.
        let missing = Path::new("/nonexistent/ca.pem");
        let err = endpoint("127.0.0.1:1", Some(missing)).unwrap_err().to_string();
        assert!(err.contains("use https://"), "{err}");
        let err = endpoint("https://127.0.0.1:1", Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = endpoint("ftp://x:1", None).unwrap_err().to_string();
        assert!(err.contains("https://host:port"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01]).unwrap();
        let err = endpoint("https://127.0.0.1:1", Some(&der)).unwrap_err().to_string();
        assert!(err.contains("not a PEM file"), "{err}");
        let err = server(&der, &der).unwrap_err().to_string();
        assert!(err.contains("certificate") && err.contains("not a PEM file"), "{err}");
    }

    #[test]
    fn failures_are_told_apart_by_side() {
        let tls = |e| TlsFailure::classify(true, e);
        assert_eq!(
            tls("invalid peer certificate: UnknownIssuer"),
            Some(TlsFailure::Untrusted)
        );
        assert_eq!(
            tls("invalid peer certificate: NotValidForName"),
            Some(TlsFailure::WrongName)
        );
        assert_eq!(
            tls("received corrupt message of type InvalidContentType"),
            Some(TlsFailure::ServerNotTls)
        );
        assert_eq!(tls("Connection refused (os error 111)"), None);
        assert_eq!(
            TlsFailure::classify(false, "h2 protocol error"),
            Some(TlsFailure::ServerMaybeTls)
        );
        assert_eq!(TlsFailure::classify(false, "invalid peer certificate"), None);
        assert!(hint("http://x:1", "broken pipe").unwrap().contains("use https://"));
        assert_eq!(hint("https://x:1", "broken pipe"), None);
    }
}
