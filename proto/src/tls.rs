//! TLS on the gRPC port, which workers and the admin API share: the
//! dispatcher's certificate and key, and what its clients (workers, the
//! CLI) trust. PEM files; rustls with ring underneath (tonic's `tls-ring`).
//! An `https://` address turns TLS on at the client; an `http://` one (or
//! no scheme) is plaintext, as before.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

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
    Ok(ServerTlsConfig::new().identity(identity))
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
        .map_err(|e| TlsError::Setup(addr.to_string(), e.to_string()))
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

/// What to add to a failed connection's message to `addr` when the likely
/// cause is TLS on one side only, or a certificate the client does not
/// trust.
pub fn hint(addr: &str, error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let https = addr.starts_with("https://");
    if https && (e.contains("certificate") || e.contains("unknownissuer") || e.contains("unknown issuer")) {
        Some("the server's certificate is not trusted: give the CA that signed it (ca_file / --ca-file)")
    } else if https
        && (e.contains("corrupt message") || e.contains("invalidcontenttype") || e.contains("wrong version"))
    {
        Some("the server did not answer in TLS: use http:// if it serves plaintext")
    } else if !https
        && [
            "connection reset",
            "broken pipe",
            "h2 protocol",
            "operation was canceled",
            "connection closed",
            "unexpected eof",
            "unexpected end of file",
        ]
        .iter()
        .any(|s| e.contains(s))
    {
        // A TLS server drops a plaintext HTTP/2 client's connection at
        // once; how the client words that varies from call to call.
        Some("if the server serves TLS ([dispatcher.tls]), use https://")
    } else {
        None
    }
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
        // A CA given for a plaintext address is not read.
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(endpoint("http://127.0.0.1:1", Some(missing)).is_ok());
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
}
