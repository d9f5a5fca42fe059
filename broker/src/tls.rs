//! HTTPS on the gateway (`[broker.tls]`): the certificate and key as PEM
//! files, and a listener that does each TLS handshake in a task of its own
//! (a slow or silent client holds up nobody) before axum sees the
//! connection. The options themselves ([`TlsOptions`]) are shared with the
//! dispatcher's `[dispatcher.tls]` and live in `stoke_proto::tls`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use stoke_proto::tls::TlsOptions;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, rustls};

/// The gateway's TLS set-up from `opts`, checked (files read, key matching
/// the certificate); None for plaintext.
pub fn acceptor(opts: &TlsOptions) -> Result<Option<TlsAcceptor>, String> {
    let Some((cert, key)) = opts.files("broker.tls")? else {
        return Ok(None);
    };
    // The same messages as the dispatcher's for a missing or non-PEM file.
    stoke_proto::tls::check_pem("certificate", cert).map_err(|e| e.to_string())?;
    stoke_proto::tls::check_pem("private key", key).map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate {} holds no CERTIFICATE block (are cert_file and key_file swapped?)",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("the private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "{} with {}: {e} (is the key the certificate's?)",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Handshakes in progress at most: each holds a file descriptor and a task
/// for up to 10 s, so clients that connect and say nothing must not be
/// able to take every descriptor of the process.
const MAX_HANDSHAKES: usize = 1024;

/// A TCP listener that hands axum only connections whose TLS handshake
/// finished (within 10 s); failed handshakes are logged at debug and
/// dropped, as are connections beyond `MAX_HANDSHAKES` in progress.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        TlsListener {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                            tracing::debug!(%addr, "{MAX_HANDSHAKES} TLS handshakes in progress: connection dropped");
                            continue;
                        };
                        // See `Broker::run`: no Nagle on the gateway.
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            let _slot = slot;
                            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    // One connection's failure: go on at once, as axum does.
                    Err(e) if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) => {}
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::error!(error = %e, "accept failed; waiting 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The error of a set-up that must fail.
    fn refused(opts: &TlsOptions) -> String {
        match acceptor(opts) {
            Ok(_) => panic!("accepted: {opts:?}"),
            Err(e) => e,
        }
    }

    fn opts(cert: &Path, key: &Path) -> TlsOptions {
        TlsOptions {
            cert_file: Some(cert.to_path_buf()),
            key_file: Some(key.to_path_buf()),
        }
    }

    #[test]
    fn the_gateway_certificate_is_checked_at_start_with_the_fix_in_the_error() {
        let certs = stoke_store::test_certs::TestCerts::generate();
        assert!(acceptor(&TlsOptions::default()).unwrap().is_none());
        assert!(acceptor(&opts(&certs.cert, &certs.key)).unwrap().is_some());
        let half = TlsOptions {
            cert_file: Some(certs.cert.clone()),
            key_file: None,
        };
        assert!(refused(&half).contains("needs both"));
        let swapped = refused(&opts(&certs.key, &certs.cert));
        assert!(swapped.contains("no CERTIFICATE block"), "{swapped}");
        let foreign = refused(&opts(&certs.cert, &certs.other_key));
        assert!(foreign.contains("is the key the certificate's?"), "{foreign}");
        let missing = refused(&opts(&certs.dir.path().join("nope.pem"), &certs.key));
        assert!(missing.contains("nope.pem"), "{missing}");
    }
}
