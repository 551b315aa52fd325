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
    replace_file(path, contents.as_bytes(), mode).map_err(|source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `contents` atomically, the file having `mode` from its creation: a new
/// file under a random name beside it (`create_new`, so nothing planted there, symlink or not, is
/// opened), synced, then renamed over `path`. A symlink at `path` is refused, never followed.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a symbolic link; refusing to write through or over it",
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        // The umask may have narrowed `mode` at creation; never widened it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_0600_from_creation_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = generate(&["127.0.0.1".into()], 1).unwrap();
        write_bundle(dir.path(), &bundle).unwrap();
        let key = dir.path().join("tls.key");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.path().join("tls.crt")), 0o644);
        // A reader holding the old file keeps the old contents: it was replaced, not rewritten.
        let old = std::fs::File::open(&key).unwrap();
        replace_file(&key, b"new key", 0o600).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"new key");
        assert_eq!(
            std::io::read_to_string(old).unwrap(),
            bundle.key_pem,
            "the old file was written in place"
        );
        assert_eq!(mode(&key), 0o600);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_destination_or_the_old_temporary_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "do not touch").unwrap();
        // The temporary path the old code used, planted as a symlink.
        std::os::unix::fs::symlink(&victim, dir.path().join("tls.tmp")).unwrap();
        write_bundle(dir.path(), &generate(&["127.0.0.1".into()], 1).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
        assert!(
            std::fs::symlink_metadata(dir.path().join("tls.key"))
                .unwrap()
                .is_file()
        );

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("tls.key")).unwrap();
        let err = write_bundle(&out, &generate(&["127.0.0.1".into()], 1).unwrap()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    }
}
