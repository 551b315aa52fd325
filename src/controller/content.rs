//! What a Key Vault object becomes in the synced Secret and in the SecretProviderClass, with the
//! CSI Azure provider's semantics: `secret` is the value (a PKCS#12-backed certificate secret
//! becomes PEM, key first, then the chain leaf to root), `cert` is the PEM certificate, `key` is
//! the PEM public key. Pure functions.

use std::collections::BTreeMap;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::core::annotations::{KeyVaultObject, ObjectType};

/// `contentType` of a certificate's secret holding a base64 PFX.
pub const CONTENT_TYPE_PKCS12: &str = "application/x-pkcs12";
/// `contentType` of a certificate's secret holding PEM (key and certificates).
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";

/// Why an object's content could not be turned into file bytes. Never carries the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the secret's contentType is {CONTENT_TYPE_PKCS12} but its value is not base64")]
    NotBase64,
    #[error("the PKCS#12 archive cannot be read: {0}")]
    Pkcs12(String),
    #[error("the PKCS#12 archive holds no private key")]
    NoPrivateKey,
    #[error("the certificate has no `cer` (DER) value")]
    NoCertificate,
    #[error("key type {0:?} is not supported (RSA and EC are)")]
    KeyType(String),
    #[error("curve {0:?} is not supported (P-256, P-384 and P-521 are)")]
    Curve(String),
    #[error("the key's {0} is missing")]
    KeyField(&'static str),
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A `secret` object: the value as stored, except a PFX-backed certificate secret, which becomes
/// PEM (PKCS#8 private key first, then the certificates from leaf to root).
pub fn secret_bytes(value: &str, content_type: Option<&str>) -> Result<Vec<u8>, ContentError> {
    if content_type != Some(CONTENT_TYPE_PKCS12) {
        return Ok(value.as_bytes().to_vec());
    }
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| ContentError::NotBase64)?;
    pkcs12_to_pem(&pfx).map(String::into_bytes)
}

/// PKCS#12 (Key Vault exports them without a password) to PEM: key first, then the chain.
pub fn pkcs12_to_pem(pfx: &[u8]) -> Result<String, ContentError> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(pfx, "")
        .map_err(|e| ContentError::Pkcs12(e.to_string()))?;
    let key = archive.keys.first().ok_or(ContentError::NoPrivateKey)?;
    let mut out = pem("PRIVATE KEY", key.key.as_der());
    let certs: Vec<&[u8]> = archive.certs.iter().map(|c| c.cert.as_der()).collect();
    // The leaf is the certificate bagged with the key; failing that, one that signs no other.
    let leaf = key
        .local_key_id
        .as_ref()
        .and_then(|id| {
            archive
                .certs
                .iter()
                .position(|c| c.local_key_id.as_deref() == Some(id.0.as_slice()))
        })
        .unwrap_or(0);
    for der in chain_from(leaf, &certs) {
        out.push_str(&pem("CERTIFICATE", der));
    }
    Ok(out)
}

/// Names a certificate by: subject and issuer (DER), and its key identifiers.
struct Names {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
}

fn names(der: &[u8]) -> Option<Names> {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut n = Names {
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        subject_key_id: None,
        authority_key_id: None,
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => n.subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                n.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    Some(n)
}

/// The certificates from `leaf` up through its issuers, then any the chain did not reach.
fn chain_from<'a>(leaf: usize, certs: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let parsed: Vec<Option<Names>> = certs.iter().map(|d| names(d)).collect();
    let issuer_of = |i: usize| -> Option<usize> {
        let me = parsed[i].as_ref()?;
        if me.subject == me.issuer {
            return None;
        }
        (0..certs.len()).find(|&j| {
            j != i
                && parsed[j].as_ref().is_some_and(|p| {
                    match (&me.authority_key_id, &p.subject_key_id) {
                        (Some(a), Some(s)) => a == s,
                        _ => p.subject == me.issuer,
                    }
                })
        })
    };
    let mut order: Vec<usize> = Vec::new();
    let mut at = Some(leaf).filter(|&l| l < certs.len());
    while let Some(i) = at {
        if order.contains(&i) {
            break;
        }
        order.push(i);
        at = issuer_of(i);
    }
    let rest: Vec<usize> = (0..certs.len()).filter(|i| !order.contains(i)).collect();
    order.extend(rest);
    order.into_iter().map(|i| certs[i]).collect()
}

/// A `cert` object: the certificate's DER (`cer`) as PEM.
pub fn certificate_bytes(cer: Option<&[u8]>) -> Result<Vec<u8>, ContentError> {
    let der = cer
        .filter(|c| !c.is_empty())
        .ok_or(ContentError::NoCertificate)?;
    Ok(pem("CERTIFICATE", der).into_bytes())
}

/// The public part of a JSON Web Key, as Key Vault returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicJwk {
    pub kty: String,
    pub n: Option<Vec<u8>>,
    pub e: Option<Vec<u8>>,
    pub crv: Option<String>,
    pub x: Option<Vec<u8>>,
    pub y: Option<Vec<u8>>,
}

/// A `key` object: the public key as PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn public_key_bytes(jwk: &PublicJwk) -> Result<Vec<u8>, ContentError> {
    Ok(pem("PUBLIC KEY", &subject_public_key_info(jwk)?).into_bytes())
}

/// DER of a SubjectPublicKeyInfo for an RSA or EC JWK.
pub fn subject_public_key_info(jwk: &PublicJwk) -> Result<Vec<u8>, ContentError> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    match jwk.kty.as_str() {
        "RSA" | "RSA-HSM" => {
            let n = jwk
                .n
                .as_deref()
                .ok_or(ContentError::KeyField("modulus (n)"))?;
            let e = jwk
                .e
                .as_deref()
                .ok_or(ContentError::KeyField("exponent (e)"))?;
            let key = der(0x30, &[der_uint(n), der_uint(e)].concat());
            let algorithm = der(0x30, &[der(0x06, RSA), vec![0x05, 0x00]].concat());
            Ok(der(0x30, &[algorithm, bit_string(&key)].concat()))
        }
        "EC" | "EC-HSM" => {
            let crv = jwk
                .crv
                .as_deref()
                .ok_or(ContentError::KeyField("curve (crv)"))?;
            let (curve, size): (&[u8], usize) = match crv {
                "P-256" => (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], 32),
                "P-384" => (&[0x2b, 0x81, 0x04, 0x00, 0x22], 48),
                "P-521" => (&[0x2b, 0x81, 0x04, 0x00, 0x23], 66),
                other => return Err(ContentError::Curve(other.to_string())),
            };
            let x = jwk.x.as_deref().ok_or(ContentError::KeyField("x"))?;
            let y = jwk.y.as_deref().ok_or(ContentError::KeyField("y"))?;
            let mut point = vec![0x04];
            point.extend(left_pad(x, size));
            point.extend(left_pad(y, size));
            let algorithm = der(0x30, &[der(0x06, EC), der(0x06, curve)].concat());
            Ok(der(0x30, &[algorithm, bit_string(&point)].concat()))
        }
        other => Err(ContentError::KeyType(other.to_string())),
    }
}

fn left_pad(v: &[u8], size: usize) -> Vec<u8> {
    let v = &v[v.len().saturating_sub(size)..];
    let mut out = vec![0u8; size - v.len()];
    out.extend_from_slice(v);
    out
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER: no leading zeros, one zero byte when the high bit is set.
fn der_uint(v: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if v.first().is_none_or(|b| b & 0x80 != 0) {
        vec![0]
    } else {
        Vec::new()
    };
    content.extend(v);
    der(0x02, &content)
}

fn bit_string(v: &[u8]) -> Vec<u8> {
    der(0x03, &[&[0u8][..], v].concat())
}

/// The `objects` parameter of a SecretProviderClass, in the Azure provider's format: a YAML map
/// with `array:`, each item a YAML string holding one object.
pub fn objects_parameter(objects: &[KeyVaultObject]) -> String {
    let mut out = String::from("array:\n");
    for o in objects {
        out.push_str("  - |\n");
        out.push_str(&format!("    objectName: {}\n", o.name));
        out.push_str(&format!("    objectType: {}\n", o.object_type.as_str()));
        out.push_str(&format!(
            "    objectVersion: \"{}\"\n",
            o.version.as_deref().unwrap_or_default()
        ));
        if let Some(alias) = &o.alias {
            out.push_str(&format!("    objectAlias: {alias}\n"));
        }
    }
    out
}

/// The content hash of a Secret's data: sha256 over sorted keys and values, hex.
pub fn content_hash(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an object once fetched, as its type says.
pub fn object_type_label(t: ObjectType) -> &'static str {
    match t {
        ObjectType::Secret => "secret",
        ObjectType::Key => "key",
        ObjectType::Cert => "certificate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/pkcs12")
                .join(name),
        )
        .unwrap()
    }

    fn pems(text: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut label = None;
        let mut body = String::new();
        for line in text.lines() {
            if let Some(l) = line.strip_prefix("-----BEGIN ") {
                label = Some(l.trim_end_matches('-').to_string());
                body.clear();
            } else if line.starts_with("-----END ") {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .unwrap();
                out.push((label.take().unwrap(), der));
            } else {
                body.push_str(line);
            }
        }
        out
    }

    #[test]
    fn plain_and_pem_secrets_are_the_value() {
        assert_eq!(secret_bytes("s3cret", None).unwrap(), b"s3cret");
        assert_eq!(
            secret_bytes("s3cret", Some("text/plain")).unwrap(),
            b"s3cret"
        );
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            secret_bytes(pem, Some(CONTENT_TYPE_PEM)).unwrap(),
            pem.as_bytes()
        );
    }

    #[test]
    fn pkcs12_secret_becomes_key_then_chain_leaf_to_root() {
        let want_key = pems(&String::from_utf8(data("leaf.pk8.pem")).unwrap())[0]
            .1
            .clone();
        let chain: Vec<Vec<u8>> = ["leaf.crt", "int.crt", "root.crt"]
            .iter()
            .map(|f| pems(&String::from_utf8(data(f)).unwrap())[0].1.clone())
            .collect();
        for file in ["modern.pfx", "legacy.pfx"] {
            let value = base64::engine::general_purpose::STANDARD.encode(data(file));
            let out = String::from_utf8(secret_bytes(&value, Some(CONTENT_TYPE_PKCS12)).unwrap())
                .unwrap();
            let blocks = pems(&out);
            assert_eq!(blocks.len(), 4, "{file}");
            assert_eq!(
                blocks[0],
                ("PRIVATE KEY".to_string(), want_key.clone()),
                "{file}"
            );
            for (i, der) in chain.iter().enumerate() {
                assert_eq!(&blocks[i + 1].0, "CERTIFICATE", "{file}");
                assert_eq!(&blocks[i + 1].1, der, "{file} certificate {i}");
            }
        }
        assert_eq!(
            secret_bytes("%%%", Some(CONTENT_TYPE_PKCS12)).unwrap_err(),
            ContentError::NotBase64
        );
        assert!(matches!(
            secret_bytes("AAAA", Some(CONTENT_TYPE_PKCS12)).unwrap_err(),
            ContentError::Pkcs12(_)
        ));
    }

    #[test]
    fn certificate_is_its_der_as_pem() {
        let der = pems(&String::from_utf8(data("leaf.crt")).unwrap())[0]
            .1
            .clone();
        let out = String::from_utf8(certificate_bytes(Some(&der)).unwrap()).unwrap();
        assert_eq!(pems(&out), vec![("CERTIFICATE".to_string(), der)]);
        assert_eq!(
            certificate_bytes(None).unwrap_err(),
            ContentError::NoCertificate
        );
    }

    #[test]
    fn rsa_public_key_matches_openssl() {
        // `openssl rsa -pubout` of a 1024-bit test key, and the key's modulus as Key Vault's `n`.
        let want = "-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCnw6JbXSKQ793/aFvaa2ULC0NR\n\
PdcHDE6xyWTDrg5Wqvx3IcL2DsbLKXpr2E2SLnligc9+xv4tYSbGVnosQIUzEo8y\n\
+n3M9FmqndPI9cyvkXtc8jdxFGaewNBaEepg5B0LN4UjHMWYraAAHFOjFDTFgSik\n\
kbtWDv/Y8zRvYdXdmQIDAQAB\n\
-----END PUBLIC KEY-----\n";
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("p8OiW10ikO_d_2hb2mtlCwtDUT3XBwxOsclkw64OVqr8dyHC9g7Gyyl6a9hNki55YoHPfsb-LWEmxlZ6LECFMxKPMvp9zPRZqp3TyPXMr5F7XPI3cRRmnsDQWhHqYOQdCzeFIxzFmK2gABxToxQ0xYEopJG7Vg7_2PM0b2HV3Zk")
            .unwrap();
        let jwk = PublicJwk {
            kty: "RSA".into(),
            n: Some(n),
            e: Some(vec![1, 0, 1]),
            ..PublicJwk::default()
        };
        assert_eq!(
            String::from_utf8(public_key_bytes(&jwk).unwrap()).unwrap(),
            want
        );
    }

    #[test]
    fn ec_public_key_matches_the_certificate_key() {
        // The leaf certificate's own SubjectPublicKeyInfo is the reference for P-256.
        let der = pems(&String::from_utf8(data("leaf.crt")).unwrap())[0]
            .1
            .clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let spki = cert.public_key();
        let point = spki.subject_public_key.data.to_vec();
        assert_eq!(point[0], 0x04);
        let jwk = PublicJwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(point[1..33].to_vec()),
            y: Some(point[33..].to_vec()),
            ..PublicJwk::default()
        };
        assert_eq!(subject_public_key_info(&jwk).unwrap(), spki.raw.to_vec());
        let bad = PublicJwk {
            kty: "oct".into(),
            ..PublicJwk::default()
        };
        assert_eq!(
            public_key_bytes(&bad).unwrap_err(),
            ContentError::KeyType("oct".into())
        );
    }

    #[test]
    fn objects_parameter_is_the_providers_array_format() {
        let objects = vec![
            KeyVaultObject {
                object_type: ObjectType::Secret,
                name: "db-password".into(),
                version: None,
                alias: Some("db".into()),
            },
            KeyVaultObject {
                object_type: ObjectType::Cert,
                name: "tls".into(),
                version: Some("0123abcd".into()),
                alias: None,
            },
        ];
        assert_eq!(
            objects_parameter(&objects),
            "array:\n  - |\n    objectName: db-password\n    objectType: secret\n    objectVersion: \"\"\n    objectAlias: db\n  - |\n    objectName: tls\n    objectType: cert\n    objectVersion: \"0123abcd\"\n"
        );
    }

    #[test]
    fn content_hash_changes_with_any_key_or_value() {
        let a: BTreeMap<String, Vec<u8>> = [("a".to_string(), b"1".to_vec())].into();
        let b: BTreeMap<String, Vec<u8>> = [("a".to_string(), b"2".to_vec())].into();
        let c: BTreeMap<String, Vec<u8>> = [("b".to_string(), b"1".to_vec())].into();
        // Lengths are framed, so moving a byte between key and value changes the hash too.
        let d: BTreeMap<String, Vec<u8>> = [("a1".to_string(), b"".to_vec())].into();
        let hashes = [&a, &b, &c, &d].map(content_hash);
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(hashes[i] == hashes[j], i == j);
            }
        }
        assert_eq!(content_hash(&a), content_hash(&a.clone()));
        assert_eq!(hashes[0].len(), 64);
    }
}
