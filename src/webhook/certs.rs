//! `keywire certs`: a CA and a serving certificate for the webhook, made with rcgen.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("at least one --host is required")]
    NoHosts,
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// PEM material for a webhook: the CA that signs, and the serving pair.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Bundle {
    /// The `caBundle` value for a webhook configuration.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
}

/// A fresh CA and a serving certificate for `hosts` (DNS names or IP addresses).
pub fn generate(hosts: &[String], days: i64) -> Result<Bundle, CertsError> {
    if hosts.is_empty() {
        return Err(CertsError::NoHosts);
    }
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keywire webhook CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params, days);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer)?;

    Ok(Bundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Write beside, then rename: a watcher never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`.
pub fn write_bundle(dir: &Path, bundle: &Bundle) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write(&dir.join("ca.crt"), &bundle.ca_pem, 0o644)?;
    write(&dir.join("tls.key"), &bundle.key_pem, 0o600)?;
    write(&dir.join("tls.crt"), &bundle.cert_pem, 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_cert_verifies_for_every_host_under_the_ca_only() {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let hosts = ["127.0.0.1".to_string(), "keywire.keywire.svc".to_string()];
        let bundle = generate(&hosts, 30).unwrap();
        let cert = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let verifier_for = |ca_pem: &str| {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(ca.unwrap()).unwrap();
            }
            WebPkiServerVerifier::builder(roots.into()).build().unwrap()
        };
        let verifier = verifier_for(&bundle.ca_pem);
        for host in hosts.iter().chain(["other.example".to_string()].iter()) {
            let name = ServerName::try_from(host.clone()).unwrap();
            let ok = verifier
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok();
            assert_eq!(ok, host != "other.example", "{host}");
        }
        let stranger = generate(&["127.0.0.1".into()], 30).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(
            verifier_for(&stranger.ca_pem)
                .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_err()
        );
        assert!(bundle.key_pem.contains("PRIVATE KEY"));
        assert!(matches!(generate(&[], 1), Err(CertsError::NoHosts)));
    }
}
