//! TLS on the peer port: mutual TLS between the nodes of a mesh. Every node holds a
//! certificate and key signed by the mesh's CA; the peer server accepts only clients that
//! present such a certificate, and peer clients accept only servers whose certificate the CA
//! signed for the address they dialled (an IP or DNS subject alternative name). The cluster
//! token is still checked on every request inside the tunnel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;

/// PEM files of a node's peer TLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsFiles {
    /// This node's certificate chain (leaf first), signed by `ca`; its subject alternative
    /// names must include the address other nodes dial (`advertise`, or `listen`).
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The mesh's CA certificate(s): the only issuers peers' certificates are accepted from.
    pub ca: PathBuf,
}

/// Loaded peer TLS: the server side, and the PEM a client presents and trusts.
#[derive(Clone)]
pub struct PeerTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    ca_pem: Vec<u8>,
    identity_pem: (Vec<u8>, Vec<u8>),
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ConsensusError> {
    std::fs::read(path)
        .map_err(|e| ConsensusError::config(format!("tls {what} {}: {e}", path.display())))
}

fn certs(
    what: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConsensusError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConsensusError::config(format!("tls {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConsensusError::config(format!(
            "tls {what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl PeerTls {
    /// Reads and checks the three files; every problem is a configuration error naming the
    /// file.
    pub fn load(files: &PeerTlsFiles) -> Result<Self, ConsensusError> {
        let cert_pem = read("cert", &files.cert)?;
        let key_pem = read("key", &files.key)?;
        let ca_pem = read("ca", &files.ca)?;
        let chain = certs("cert", &files.cert, &cert_pem)?;
        let ca = certs("ca", &files.ca, &ca_pem)?;
        let key = || {
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                ConsensusError::config(format!("tls key {}: {e}", files.key.display()))
            })
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| {
                ConsensusError::config(format!("tls ca {}: {e}", files.ca.display()))
            })?;
        }
        let roots = Arc::new(roots);
        let bad = |e: rustls::Error| ConsensusError::config(format!("tls: {e}"));
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            provider(),
        )
        .build()
        .map_err(|e| ConsensusError::config(format!("tls ca {}: {e}", files.ca.display())))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key()?)
            .map_err(|e| {
                ConsensusError::config(format!(
                    "tls cert {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
        // gRPC (the peer Flight service) needs h2; the Raft client speaks HTTP/1.1
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key()?)
            .map_err(bad)?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            ca_pem,
            identity_pem: (cert_pem, key_pem),
        })
    }

    /// The server side, for [`serve`].
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.server))
    }

    /// The client side for HTTP/1.1 peer requests (Raft, forwarded interns, join/leave).
    pub fn client_config(&self) -> rustls::ClientConfig {
        (*self.client).clone()
    }

    /// The CA certificate(s) a client trusts, as PEM (for gRPC clients that take PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// This node's certificate chain and key, as PEM.
    pub fn identity_pem(&self) -> (&[u8], &[u8]) {
        (&self.identity_pem.0, &self.identity_pem.1)
    }
}

/// Serves `router` over TLS on `listener` until `cancel`: a failed handshake (a client
/// without a certificate from the mesh's CA, or not speaking TLS) closes that connection
/// and is counted in `refused`; it never stops the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    cancel: tokio_util::sync::CancellationToken,
    refused: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // out of descriptors and the like: back off instead of spinning
                    tracing::warn!(%error, "peer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let router = router.clone();
        let refused = Arc::clone(&refused);
        connections.spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%remote, %error, "peer TLS handshake refused");
                    return;
                }
                Err(_) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%remote, "peer TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            let served =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "peer connection ended");
            }
        });
    }
    // open connections end with the server
    connections.abort_all();
}
