//! The server certificate, read from PEM files and read again when they change, so that a
//! renewed certificate (cert-manager, a rotated Secret) is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::{ConfigError, HttpConfig};

/// The certificate files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read the certificate chain {0}: {1}")]
    Certificate(PathBuf, rustls::pki_types::pem::Error),
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("cannot read the private key {0}: {1}")]
    Key(PathBuf, rustls::pki_types::pem::Error),
    #[error("the key {key} does not fit the certificate {certificate}: {error}")]
    Mismatch {
        certificate: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
}

/// Checks that the configured certificate and key load and belong together (for
/// `check-config`, naming the key at fault).
pub fn check_tls_files(config: &HttpConfig) -> Result<(), ConfigError> {
    let (Some(certificate), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(());
    };
    load(&provider(), certificate, key).map(drop).map_err(|e| {
        let key = match e {
            TlsFileError::Certificate(..) | TlsFileError::NoCertificate(_) => "http.tls_cert_file",
            TlsFileError::Key(..) | TlsFileError::Mismatch { .. } => "http.tls_key_file",
        };
        ConfigError::Invalid {
            key: key.to_owned(),
            message: e.to_string(),
        }
    })
}

/// The acceptor of `config`'s certificate, if TLS is configured: TLS 1.2 and 1.3 with
/// rustls' default cipher suites, HTTP/1.1 offered by ALPN.
pub fn acceptor(config: &HttpConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(certificate), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let provider = Arc::new(provider());
    let files = CertificateFiles::open(provider.clone(), certificate.clone(), key.clone())?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(files));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn load(
    provider: &CryptoProvider,
    certificate: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsFileError::Certificate(certificate.to_owned(), e))?;
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate(certificate.to_owned()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsFileError::Key(key.to_owned(), e))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|error| TlsFileError::Mismatch {
        certificate: certificate.to_owned(),
        key: key.to_owned(),
        error,
    })
}

/// Modification times of the two files; a change of either means a new certificate.
type Stamp = [Option<SystemTime>; 2];

/// The certificate of the files, loaded again on the first handshake after they change.
#[derive(Debug)]
struct CertificateFiles {
    provider: Arc<CryptoProvider>,
    certificate: PathBuf,
    key: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl CertificateFiles {
    fn open(
        provider: Arc<CryptoProvider>,
        certificate: PathBuf,
        key: PathBuf,
    ) -> Result<Self, TlsFileError> {
        let stamp = stamp(&certificate, &key);
        let loaded = Arc::new(load(&provider, &certificate, &key)?);
        Ok(CertificateFiles {
            provider,
            certificate,
            key,
            current: Mutex::new((stamp, loaded)),
        })
    }
}

fn stamp(certificate: &Path, key: &Path) -> Stamp {
    [certificate, key].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Two stat calls per handshake: far less than the handshake itself.
        let now = stamp(&self.certificate, &self.key);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if now != current.0 {
            // A half-written pair fails to load; the old certificate stays until the files
            // change again, and the failure is logged once per change.
            current.0 = now;
            match load(&self.provider, &self.certificate, &self.key) {
                Ok(loaded) => {
                    info!(file = %self.certificate.display(), "serving the renewed certificate");
                    current.1 = Arc::new(loaded);
                }
                Err(e) => warn!(error = %e, "keeping the previous certificate"),
            }
        }
        Some(current.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a self-signed certificate and its key under `dir` with `name`.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn check(cert: &Path, key: &Path) -> Result<(), String> {
        let config = HttpConfig {
            tls_cert_file: Some(cert.to_owned()),
            tls_key_file: Some(key.to_owned()),
            ..HttpConfig::default()
        };
        check_tls_files(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pair_loads_and_a_wrong_one_names_the_key_at_fault() {
        let dir = std::env::temp_dir().join(format!("kpi-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = pair(&dir, "a");
        let (_, other_key) = pair(&dir, "b");
        assert_eq!(check(&cert, &key), Ok(()));
        let mismatch = check(&cert, &other_key).unwrap_err();
        assert!(mismatch.contains("http.tls_key_file"), "{mismatch}");
        let missing = check(&dir.join("none.crt"), &key).unwrap_err();
        assert!(missing.contains("http.tls_cert_file"), "{missing}");
        // A key file where the certificate should be holds no certificate.
        let swapped = check(&key, &key).unwrap_err();
        assert!(swapped.contains("http.tls_cert_file"), "{swapped}");
        let not_a_key = check(&cert, &cert).unwrap_err();
        assert!(not_a_key.contains("http.tls_key_file"), "{not_a_key}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
