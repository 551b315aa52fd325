//! The pure part of self-managed certificates: what the Secret holds (`Material`), what a
//! certificate says about itself, and `decide`, the next step of a certificate's life.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::webhook::certs::{self, Bundle};

/// Set this annotation on the Secret to any new value to rotate now (`kubectl annotate`).
pub const ANNOTATION_ROTATE: &str = "keywire.dev/rotate";
pub(super) const ANNOTATION_ROTATED: &str = "keywire.dev/rotated";
pub(super) const ANNOTATION_GENERATION: &str = "keywire.dev/ca-generation";
pub(super) const ANNOTATION_STAGED_AT: &str = "keywire.dev/staged-at";
pub(super) const ANNOTATION_PROMOTED_AT: &str = "keywire.dev/promoted-at";

pub(super) const TLS_CRT: &str = "tls.crt";
pub(super) const TLS_KEY: &str = "tls.key";
pub(super) const CA_CRT: &str = "ca.crt";
pub(super) const CA_BUNDLE: &str = "ca-bundle.crt";
pub(super) const NEXT_CRT: &str = "next-tls.crt";
pub(super) const NEXT_KEY: &str = "next-tls.key";
pub(super) const NEXT_CA: &str = "next-ca.crt";

/// When and for what certificates are issued. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub hosts: Vec<String>,
    pub validity_days: i64,
    pub renew_before_secs: i64,
    pub overlap_secs: i64,
}

/// A serving pair and the CA that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl From<Bundle> for Pair {
    fn from(b: Bundle) -> Self {
        Pair {
            cert_pem: b.cert_pem,
            key_pem: b.key_pem,
            ca_pem: b.ca_pem,
        }
    }
}

/// Everything the Secret holds, as keywire reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Material {
    /// The pair every replica serves.
    pub current: Pair,
    /// Every CA the API server must trust now (PEM), the current one included.
    pub bundle_pem: String,
    /// A pair whose CA is already in the bundle, served once the overlap has passed.
    pub next: Option<Pair>,
    pub staged_at: Option<i64>,
    pub promoted_at: Option<i64>,
    /// `keywire.dev/rotate` as last set by an operator, and as last acted on.
    pub rotate_requested: Option<String>,
    pub rotate_done: Option<String>,
    /// Bumped on every write; publishing never goes backwards in it.
    pub generation: u64,
}

/// Why a new certificate is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Expiring,
    Requested,
    HostsChanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// Issue a new CA and pair; trust the CA beside the current one; serve it after the overlap.
    Stage(Reason),
    /// Serve the staged pair: its CA has been trusted for a whole overlap.
    Promote,
    /// Trust only the current CA: every replica has served the current pair for an overlap.
    Trim,
    /// The stored pair is unusable: serve a new one now (the old CAs stay trusted for an overlap).
    Replace,
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub der: Vec<u8>,
    pub not_after: i64,
    pub hosts: Vec<String>,
}

/// Every certificate in `pem`, parsed; unparseable blocks are skipped.
pub fn parse_certs(pem: &str) -> Vec<CertFacts> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let hosts = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|name| match name {
                            x509_parser::extensions::GeneralName::DNSName(d) => {
                                Some(d.to_ascii_lowercase())
                            }
                            x509_parser::extensions::GeneralName::IPAddress(b) => {
                                ip_from_bytes(b).map(|ip| ip.to_string())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(CertFacts {
                der: der.as_ref().to_vec(),
                not_after: cert.validity().not_after.timestamp(),
                hosts,
            })
        })
        .collect()
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `base` then `add`, without duplicates and without certificates expired at `now`.
pub fn merge_bundle(base: &str, add: &str, now: i64) -> String {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut out = String::new();
    for cert in parse_certs(base).into_iter().chain(parse_certs(add)) {
        if cert.not_after <= now || seen.contains(&cert.der) {
            continue;
        }
        out.push_str(&pem_encode(&cert.der));
        seen.push(cert.der);
    }
    out
}

/// Whether every CA in `required` is among the certificates of `bundle`.
pub fn bundle_trusts(bundle: &str, required: &str) -> bool {
    let have: Vec<Vec<u8>> = parse_certs(bundle).into_iter().map(|c| c.der).collect();
    let need = parse_certs(required);
    !need.is_empty() && need.iter().all(|c| have.contains(&c.der))
}

fn covers(cert_hosts: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|h| {
        let h = h.to_ascii_lowercase();
        let h = h.parse::<IpAddr>().map(|ip| ip.to_string()).unwrap_or(h);
        cert_hosts.contains(&h)
    })
}

fn key_parses(pem: &str) -> bool {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).is_ok()
}

/// The next step for the material in the Secret at `now`.
pub fn decide(m: &Material, rotation: &Rotation, now: i64) -> Step {
    let serving = parse_certs(&m.current.cert_pem).into_iter().next();
    let ca = parse_certs(&m.current.ca_pem).into_iter().next();
    let (Some(serving), Some(ca)) = (serving, ca) else {
        return Step::Replace;
    };
    if !key_parses(&m.current.key_pem) {
        return Step::Replace;
    }
    if m.next.is_some() {
        return if now >= m.staged_at.unwrap_or(0) + rotation.overlap_secs {
            Step::Promote
        } else {
            Step::Keep
        };
    }
    if m.rotate_requested.is_some() && m.rotate_requested != m.rotate_done {
        return Step::Stage(Reason::Requested);
    }
    if !covers(&serving.hosts, &rotation.hosts) {
        return Step::Stage(Reason::HostsChanged);
    }
    if serving.not_after.min(ca.not_after) - now <= rotation.renew_before_secs {
        return Step::Stage(Reason::Expiring);
    }
    let extra_cas = parse_certs(&m.bundle_pem)
        .iter()
        .any(|c| c.der != ca.der || c.not_after <= now);
    if extra_cas && now >= m.promoted_at.unwrap_or(0) + rotation.overlap_secs {
        return Step::Trim;
    }
    Step::Keep
}

impl Material {
    /// The first material: a fresh pair, trusted beside any CA the configurations still hold.
    pub fn initial(fresh: Pair, still_trusted: &str, now: i64) -> Material {
        Material {
            bundle_pem: merge_bundle(still_trusted, &fresh.ca_pem, now),
            current: fresh,
            promoted_at: Some(now),
            generation: 1,
            ..Material::default()
        }
    }

    /// The material after `step`. `issue` makes a fresh pair; it is called only when one is needed.
    pub fn advance(
        &self,
        step: Step,
        now: i64,
        issue: impl FnOnce() -> Result<Pair, certs::CertsError>,
    ) -> Result<Material, certs::CertsError> {
        let mut m = self.clone();
        match step {
            Step::Keep => return Ok(m),
            Step::Stage(_) => {
                let fresh = issue()?;
                m.bundle_pem = merge_bundle(&m.bundle_pem, &fresh.ca_pem, now);
                m.next = Some(fresh);
                m.staged_at = Some(now);
                m.rotate_done = m.rotate_requested.clone();
            }
            Step::Promote => {
                if let Some(next) = m.next.take() {
                    m.bundle_pem = merge_bundle(&m.bundle_pem, &next.ca_pem, now);
                    m.current = next;
                }
                m.staged_at = None;
                m.promoted_at = Some(now);
            }
            Step::Trim => m.bundle_pem = merge_bundle("", &m.current.ca_pem, now),
            Step::Replace => {
                let fresh = issue()?;
                m.bundle_pem = merge_bundle(&m.bundle_pem, &fresh.ca_pem, now);
                m.current = fresh;
                m.next = None;
                m.staged_at = None;
                m.promoted_at = Some(now);
                m.rotate_done = m.rotate_requested.clone();
            }
        }
        m.generation += 1;
        Ok(m)
    }

    pub fn ca_bundle_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bundle_pem.as_bytes())
    }

    pub fn from_secret(secret: &Secret) -> Material {
        let data = secret.data.clone().unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let note = |k: &str| annotations.get(k).cloned();
        let time = |k: &str| note(k).and_then(|v| v.parse::<i64>().ok());
        let next = Pair {
            cert_pem: text(NEXT_CRT),
            key_pem: text(NEXT_KEY),
            ca_pem: text(NEXT_CA),
        };
        Material {
            current: Pair {
                cert_pem: text(TLS_CRT),
                key_pem: text(TLS_KEY),
                ca_pem: text(CA_CRT),
            },
            bundle_pem: text(CA_BUNDLE),
            next: (!next.cert_pem.is_empty()).then_some(next),
            staged_at: time(ANNOTATION_STAGED_AT),
            promoted_at: time(ANNOTATION_PROMOTED_AT),
            rotate_requested: note(ANNOTATION_ROTATE),
            rotate_done: note(ANNOTATION_ROTATED),
            generation: note(ANNOTATION_GENERATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Writes this material into `secret`, keeping everything keywire does not own.
    pub fn write_into(&self, secret: &mut Secret) {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut data = BTreeMap::new();
        data.insert(TLS_CRT.to_string(), bytes(&self.current.cert_pem));
        data.insert(TLS_KEY.to_string(), bytes(&self.current.key_pem));
        data.insert(CA_CRT.to_string(), bytes(&self.current.ca_pem));
        data.insert(CA_BUNDLE.to_string(), bytes(&self.bundle_pem));
        if let Some(next) = &self.next {
            data.insert(NEXT_CRT.to_string(), bytes(&next.cert_pem));
            data.insert(NEXT_KEY.to_string(), bytes(&next.key_pem));
            data.insert(NEXT_CA.to_string(), bytes(&next.ca_pem));
        }
        secret.data = Some(data);
        secret.string_data = None;
        secret.type_ = Some("kubernetes.io/tls".to_string());
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        let mut set = |k: &str, v: Option<String>| match v {
            Some(v) => {
                annotations.insert(k.to_string(), v);
            }
            None => {
                annotations.remove(k);
            }
        };
        set(ANNOTATION_GENERATION, Some(self.generation.to_string()));
        set(ANNOTATION_STAGED_AT, self.staged_at.map(|t| t.to_string()));
        set(
            ANNOTATION_PROMOTED_AT,
            self.promoted_at.map(|t| t.to_string()),
        );
        set(ANNOTATION_ROTATED, self.rotate_done.clone());
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                "app.kubernetes.io/managed-by".to_string(),
                "keywire".to_string(),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::selfcert::now;

    const DAY: i64 = 86_400;

    fn rotation() -> Rotation {
        Rotation {
            hosts: vec!["keywire.keywire.svc".into(), "127.0.0.1".into()],
            validity_days: 30,
            renew_before_secs: 10 * DAY,
            overlap_secs: 300,
        }
    }

    fn pair(hosts: &[&str]) -> Pair {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        certs::generate(&hosts, 30).unwrap().into()
    }

    fn fresh() -> Pair {
        pair(&["keywire.keywire.svc", "127.0.0.1"])
    }

    fn not_after(pem: &str) -> i64 {
        parse_certs(pem)[0].not_after
    }

    #[test]
    fn bundle_merge_keeps_order_drops_duplicates_and_expired() {
        let (a, b) = (fresh(), fresh());
        let t = now();
        let ab = merge_bundle(&a.ca_pem, &b.ca_pem, t);
        assert_eq!(parse_certs(&ab).len(), 2);
        assert!(bundle_trusts(&ab, &a.ca_pem) && bundle_trusts(&ab, &b.ca_pem));
        assert_eq!(parse_certs(&ab)[0].der, parse_certs(&a.ca_pem)[0].der);
        // Adding what is there already changes nothing; garbage and the placeholder are ignored.
        assert_eq!(merge_bundle(&ab, &a.ca_pem, t), ab);
        assert_eq!(merge_bundle("\n", "not a certificate", t), "");
        assert_eq!(merge_bundle(&format!("{ab}garbage\n"), "", t), ab);
        // At a's expiry only b (same lifetime, made later) may remain.
        let later = not_after(&a.ca_pem);
        let kept = parse_certs(&merge_bundle(&ab, "", later));
        assert!(kept.iter().all(|c| c.not_after > later));
        assert_eq!(merge_bundle(&ab, "", later + 31 * DAY), "");
        assert!(!bundle_trusts("", &a.ca_pem));
        assert!(!bundle_trusts(&a.ca_pem, ""));
    }

    #[test]
    fn certificate_facts_list_dns_and_ip_hosts() {
        let p = pair(&["Keywire.Keywire.svc", "127.0.0.1", "::1"]);
        let facts = &parse_certs(&p.cert_pem)[0];
        assert_eq!(facts.hosts, vec!["keywire.keywire.svc", "127.0.0.1", "::1"]);
        assert!(covers(
            &facts.hosts,
            &["KEYWIRE.keywire.svc".into(), "0:0:0:0:0:0:0:1".into()]
        ));
        assert!(!covers(&facts.hosts, &["other.svc".into()]));
    }

    #[test]
    fn rotation_is_decided_by_expiry_request_and_hosts() {
        let r = rotation();
        let t0 = now();
        let m = Material::initial(fresh(), "", t0);
        let expiry = not_after(&m.current.cert_pem);
        let cases = [
            // (seconds before expiry, expected step)
            (20 * DAY, Step::Keep),
            (10 * DAY + 1, Step::Keep),
            (10 * DAY, Step::Stage(Reason::Expiring)),
            (DAY, Step::Stage(Reason::Expiring)),
            (-DAY, Step::Stage(Reason::Expiring)),
        ];
        for (before, want) in cases {
            assert_eq!(
                decide(&m, &r, expiry - before),
                want,
                "{before}s before expiry"
            );
        }

        let mut asked = m.clone();
        asked.rotate_requested = Some("2026-11-23".into());
        assert_eq!(decide(&asked, &r, t0), Step::Stage(Reason::Requested));
        asked.rotate_done = asked.rotate_requested.clone();
        assert_eq!(
            decide(&asked, &r, t0),
            Step::Keep,
            "a request is acted on once"
        );

        let mut moved = r.clone();
        moved.hosts.push("keywire.other.svc".into());
        assert_eq!(decide(&m, &moved, t0), Step::Stage(Reason::HostsChanged));

        let mut broken = m.clone();
        broken.current.key_pem = "garbage".into();
        assert_eq!(decide(&broken, &r, t0), Step::Replace);
        assert_eq!(decide(&Material::default(), &r, t0), Step::Replace);
    }

    #[test]
    fn a_rotation_trusts_the_new_ca_an_overlap_before_serving_it_and_the_old_one_after() {
        let r = rotation();
        let t0 = now();
        let first = Material::initial(fresh(), "", t0);
        let old_ca = first.current.ca_pem.clone();
        let mut m = first.clone();
        m.rotate_requested = Some("now".into());

        let step = decide(&m, &r, t0);
        assert_eq!(step, Step::Stage(Reason::Requested));
        let staged = m.advance(step, t0, || Ok(fresh())).unwrap();
        let new_ca = staged.next.as_ref().unwrap().ca_pem.clone();
        assert_eq!(staged.current, first.current, "staging serves nothing new");
        assert!(
            bundle_trusts(&staged.bundle_pem, &old_ca)
                && bundle_trusts(&staged.bundle_pem, &new_ca)
        );
        assert_eq!(staged.generation, first.generation + 1);

        assert_eq!(decide(&staged, &r, t0 + r.overlap_secs - 1), Step::Keep);
        let t1 = t0 + r.overlap_secs;
        assert_eq!(decide(&staged, &r, t1), Step::Promote);
        let promoted = staged
            .advance(Step::Promote, t1, || panic!("promote issues nothing"))
            .unwrap();
        assert_eq!(promoted.current.ca_pem, new_ca);
        assert!(promoted.next.is_none());
        assert!(
            bundle_trusts(&promoted.bundle_pem, &old_ca),
            "old CA kept for stragglers"
        );

        assert_eq!(decide(&promoted, &r, t1 + r.overlap_secs - 1), Step::Keep);
        let t2 = t1 + r.overlap_secs;
        assert_eq!(decide(&promoted, &r, t2), Step::Trim);
        let trimmed = promoted
            .advance(Step::Trim, t2, || panic!("trim issues nothing"))
            .unwrap();
        assert!(bundle_trusts(&trimmed.bundle_pem, &new_ca));
        assert!(!bundle_trusts(&trimmed.bundle_pem, &old_ca));
        assert_eq!(decide(&trimmed, &r, t2), Step::Keep);
        assert_eq!(trimmed.generation, first.generation + 3);
    }

    #[test]
    fn a_new_secret_keeps_the_cas_already_published_trusted() {
        let r = rotation();
        let t0 = now();
        let (previous, new) = (fresh(), fresh());
        let m = Material::initial(new.clone(), &format!("{}\n", previous.ca_pem), t0);
        assert!(bundle_trusts(&m.bundle_pem, &previous.ca_pem));
        assert!(bundle_trusts(&m.bundle_pem, &new.ca_pem));
        assert_eq!(decide(&m, &r, t0 + 1), Step::Keep);
        assert_eq!(decide(&m, &r, t0 + r.overlap_secs), Step::Trim);
        let replaced = m.advance(Step::Replace, t0, || Ok(fresh())).unwrap();
        assert!(
            bundle_trusts(&replaced.bundle_pem, &new.ca_pem),
            "replaced CA stays trusted"
        );
    }

    #[test]
    fn material_round_trips_through_the_secret_and_keeps_foreign_metadata() {
        let t0 = now();
        let mut m = Material::initial(fresh(), "", t0);
        m.rotate_requested = Some("x".into());
        let m = m
            .advance(Step::Stage(Reason::Requested), t0, || Ok(fresh()))
            .unwrap();
        let mut secret = Secret::default();
        secret.metadata.annotations = Some(BTreeMap::from([
            ("team".to_string(), "platform".to_string()),
            (ANNOTATION_ROTATE.to_string(), "x".to_string()),
        ]));
        m.write_into(&mut secret);
        assert_eq!(Material::from_secret(&secret), m);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let notes = secret.metadata.annotations.clone().unwrap();
        assert_eq!(notes["team"], "platform");
        // Promoting removes the staged keys and annotation.
        let promoted = m.advance(Step::Promote, t0 + 300, || panic!()).unwrap();
        promoted.write_into(&mut secret);
        assert!(!secret.data.as_ref().unwrap().contains_key(NEXT_CRT));
        assert!(
            !secret
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(ANNOTATION_STAGED_AT)
        );
        assert_eq!(Material::from_secret(&secret), promoted);
    }
}
