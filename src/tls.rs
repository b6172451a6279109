//! TLS: the one crypto provider, the listener's certificate (swappable for hot reload), and
//! the trust roots for the upstream.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no PEM certificate in {0}")]
    NoCertificate(String),
    #[error("no usable PEM private key in {0}")]
    NoKey(String),
    #[error("certificate and key do not match: {0}")]
    Mismatch(String),
    #[error("the crypto provider cannot make a TLS config: {0}")]
    Provider(rustls::Error),
}

/// The one crypto provider (ring) every TLS config of otpgate's is built with, so no config
/// depends on a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Install [`provider`] as the process-wide default as well, for libraries that build their
/// own configs with `ClientConfig::builder()` (the Redis client). `main` calls this once;
/// as ring is the only provider compiled in, rustls would pick it by itself too.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = CryptoProvider::install_default((*provider()).clone());
}

/// The protocol versions otpgate speaks: TLS 1.3 and 1.2.
fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::DEFAULT_VERSIONS
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Load a certificate chain and its key from PEM files into a signing key.
pub(crate) fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.display().to_string()));
    }
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::NoKey(key_file.display().to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}

/// The listener's certificate, swappable at run time: new handshakes see a new certificate
/// at once, established connections keep theirs.
#[derive(Debug)]
pub(crate) struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub(crate) fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub(crate) fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A rustls server config offering HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A rustls client config for the upstream: the webpki roots plus, optionally, extra PEM
/// CA certificates (a private CA, or a test certificate).
pub(crate) fn upstream_client_config(
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = read(path)?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(TlsError::NoCertificate(path.display().to_string()));
        }
    }
    // ALPN (h2, http/1.1) is set by the connector from the protocols it enables.
    client_config(roots)
}

/// A rustls client config trusting `roots`, built with [`provider`].
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client config trusting the webpki roots, offering HTTP/2 and HTTP/1.1 by ALPN: the
/// provider clients'.
pub fn webpki_client_config() -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = client_config(roots)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
