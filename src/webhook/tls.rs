//! Serving certificates that rotate without a restart: a rustls resolver over `ArcSwap<CertifiedKey>`,
//! refreshed when the files on disk change (kubelet swaps Secret volumes by symlink).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{cert} and {key} do not form a usable pair: {reason}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The certificate and key files, and the pair currently served from them.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    fingerprint: ArcSwap<[u8; 32]>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cert);
    h.update([0]);
    h.update(key);
    h.finalize().into()
}

fn parse_pair(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .ok()
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_path_buf(),
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // `from_der` lets an unknown consistency through; a pair must match to be served.
    certified.keys_match().map_err(|e| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(certified)
}

impl CertReloader {
    /// Loads the pair now; failing here is fatal (the webhook must not start without TLS).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let certified = parse_pair(cert_path, key_path, &cert_pem, &key_pem)?;
        Ok(Arc::new(CertReloader {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            fingerprint: ArcSwap::from_pointee(fingerprint(&cert_pem, &key_pem)),
        }))
    }

    /// Re-reads the files; swaps in the new pair only if it changed and is valid.
    /// Returns whether a new certificate is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        let fp = fingerprint(&cert_pem, &key_pem);
        if **self.fingerprint.load() == fp {
            return Ok(false);
        }
        let certified = parse_pair(&self.cert_path, &self.key_path, &cert_pem, &key_pem)?;
        self.current.store(Arc::new(certified));
        self.fingerprint.store(Arc::new(fp));
        Ok(true)
    }

    /// Polls the files every `interval`. A half-written or mismatched pair keeps the old one served.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn()) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    on_reload();
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one")
                }
            }
        }
    }

    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            rustls::ServerConfig::builder_with_protocol_versions(rustls::DEFAULT_VERSIONS)
        })
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs;

    #[test]
    fn reload_swaps_valid_pairs_and_keeps_the_old_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let first = certs::generate(&["127.0.0.1".into()], 1).unwrap();
        certs::write_bundle(dir.path(), &first).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let r = CertReloader::load(&cert, &key).unwrap();
        let served = |r: &CertReloader| r.current.load().cert[0].to_vec();
        let initial = served(&r);
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");

        // Only the certificate replaced: the key no longer matches, the old pair stays.
        let second = certs::generate(&["127.0.0.1".into()], 1).unwrap();
        std::fs::write(&cert, &second.cert_pem).unwrap();
        assert!(matches!(r.reload(), Err(TlsError::Pair { .. })));
        assert_eq!(served(&r), initial);

        std::fs::write(&key, &second.key_pem).unwrap();
        assert!(r.reload().unwrap());
        assert_ne!(served(&r), initial);

        std::fs::write(&key, "garbage").unwrap();
        assert!(matches!(r.reload(), Err(TlsError::NoKey { .. })));
        assert!(matches!(
            CertReloader::load(&dir.path().join("missing"), &key),
            Err(TlsError::Read { .. })
        ));
    }
}
