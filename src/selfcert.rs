//! Self-managed webhook certificates: a CA and serving pair kept in one Secret, written to the
//! files every replica's `CertReloader` serves from, published as the webhook configurations'
//! `caBundle` (server-side apply, field manager `keywire`), and rotated ahead of expiry.
//!
//! Rotation never breaks admission: a new CA is trusted beside the old one for a whole overlap
//! before any replica serves a certificate it signed (`Stage`, then `Promote`), and the old CA is
//! dropped only one overlap after that (`Trim`). Every replica runs the same loop; writes to the
//! Secret are optimistic (`resourceVersion`), so one writer wins each step and the others read
//! its result. Publishing carries the Secret's generation, so a replica that read an older
//! Secret never overwrites a newer bundle.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::certs::{self, Bundle};

/// Field manager of every write keywire makes to webhook configurations.
pub const FIELD_MANAGER: &str = "keywire";
/// Set this annotation on the Secret to any new value to rotate now (`kubectl annotate`).
pub const ANNOTATION_ROTATE: &str = "keywire.dev/rotate";
const ANNOTATION_ROTATED: &str = "keywire.dev/rotated";
const ANNOTATION_GENERATION: &str = "keywire.dev/ca-generation";
const ANNOTATION_STAGED_AT: &str = "keywire.dev/staged-at";
const ANNOTATION_PROMOTED_AT: &str = "keywire.dev/promoted-at";

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_BUNDLE: &str = "ca-bundle.crt";
const NEXT_CRT: &str = "next-tls.crt";
const NEXT_KEY: &str = "next-tls.key";
const NEXT_CA: &str = "next-ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum SelfCertError {
    #[error("--cert-secret must be NAMESPACE/NAME, got {0:?}")]
    SecretName(String),
    #[error("--self-managed-certs needs {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Timing(String),
    #[error("no Kubernetes client configuration: {0}")]
    Client(#[source] kube::Error),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `keywire webhook` flags for self-managed certificates (flattened into its arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelfCertArgs {
    /// Bootstrap, rotate and publish the webhook's own CA and serving certificate. keywire then
    /// writes --tls-cert-file and --tls-key-file itself (point them at an emptyDir).
    #[arg(long)]
    pub self_managed_certs: bool,
    /// NAMESPACE/NAME of the Secret holding the CA and serving pair; created if absent.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub cert_secret: Option<String>,
    /// MutatingWebhookConfiguration whose caBundle keywire keeps current. Repeatable.
    #[arg(long = "webhook-config", value_name = "NAME")]
    pub mutating_configs: Vec<String>,
    /// ValidatingWebhookConfiguration whose caBundle keywire keeps current. Repeatable.
    #[arg(long = "validating-webhook-config", value_name = "NAME")]
    pub validating_configs: Vec<String>,
    /// DNS name or IP address the serving certificate is for (the Service's names). Repeatable.
    #[arg(long = "service-host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Lifetime of each CA and serving certificate.
    #[arg(long, default_value_t = 365)]
    pub cert_validity_days: i64,
    /// Rotate when the serving certificate or its CA has less than this left.
    #[arg(long, default_value_t = 30)]
    pub cert_renew_before_days: i64,
    /// How long a new CA is trusted before it is served, and the old one after.
    #[arg(long, default_value_t = 300)]
    pub cert_overlap_seconds: u64,
    /// How often each replica re-reads the Secret and the webhook configurations.
    #[arg(long, default_value_t = 5)]
    pub cert_check_seconds: u64,
}

/// Where the certificate lives, who trusts it, and when it rotates.
#[derive(Debug, Clone)]
pub struct SelfCertConfig {
    pub secret_namespace: String,
    pub secret_name: String,
    pub mutating_configs: Vec<String>,
    pub validating_configs: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub rotation: Rotation,
    pub check_interval: Duration,
}

impl SelfCertArgs {
    /// `None` unless --self-managed-certs; the files are the webhook's --tls-cert/key-file.
    pub fn config(
        &self,
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<Option<SelfCertConfig>, SelfCertError> {
        if !self.self_managed_certs {
            return Ok(None);
        }
        let secret = self
            .cert_secret
            .as_deref()
            .ok_or(SelfCertError::Missing("--cert-secret NAMESPACE/NAME"))?;
        let (namespace, name) = secret
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| SelfCertError::SecretName(secret.to_string()))?;
        if self.hosts.is_empty() {
            return Err(SelfCertError::Missing("at least one --service-host"));
        }
        if self.mutating_configs.is_empty() && self.validating_configs.is_empty() {
            return Err(SelfCertError::Missing(
                "--webhook-config or --validating-webhook-config",
            ));
        }
        let check = self.cert_check_seconds.max(1);
        if self.cert_overlap_seconds < 3 * check {
            return Err(SelfCertError::Timing(format!(
                "--cert-overlap-seconds ({}) must be at least 3 x --cert-check-seconds ({check}): \
                 every replica must see each step before the next one",
                self.cert_overlap_seconds
            )));
        }
        if self.cert_renew_before_days < 0 || self.cert_renew_before_days >= self.cert_validity_days
        {
            return Err(SelfCertError::Timing(format!(
                "--cert-renew-before-days ({}) must be from 0 to below --cert-validity-days ({})",
                self.cert_renew_before_days, self.cert_validity_days
            )));
        }
        Ok(Some(SelfCertConfig {
            secret_namespace: namespace.to_string(),
            secret_name: name.to_string(),
            mutating_configs: self.mutating_configs.clone(),
            validating_configs: self.validating_configs.clone(),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            rotation: Rotation {
                hosts: self.hosts.clone(),
                validity_days: self.cert_validity_days,
                renew_before_secs: self.cert_renew_before_days * 86_400,
                overlap_secs: self.cert_overlap_seconds as i64,
            },
            check_interval: Duration::from_secs(check),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// The pure part: what the Secret holds, and the next step of its life.

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
    rustls_pemfile::certs(&mut pem.as_bytes())
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
    matches!(
        rustls_pemfile::private_key(&mut pem.as_bytes()),
        Ok(Some(_))
    )
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

// ---------------------------------------------------------------------------------------------
// The I/O: the Secret, the webhook configurations and the files.

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[derive(Debug, Clone, Copy)]
enum ConfigKind {
    Mutating,
    Validating,
}

impl ConfigKind {
    fn resource(self) -> ApiResource {
        match self {
            ConfigKind::Mutating => ApiResource::erase::<MutatingWebhookConfiguration>(&()),
            ConfigKind::Validating => ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
        }
    }
}

/// How one webhook configuration stands after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// Every webhook in it trusts the CA being served.
    Trusted,
    Missing,
    Pending,
}

/// One replica's view: the clients and the configuration.
pub struct SelfManaged {
    config: SelfCertConfig,
    client: kube::Client,
    secrets: Api<Secret>,
}

impl SelfManaged {
    pub async fn new(config: SelfCertConfig) -> Result<SelfManaged, SelfCertError> {
        let client = kube::Client::try_default()
            .await
            .map_err(SelfCertError::Client)?;
        Ok(Self::with_client(config, client))
    }

    pub fn with_client(config: SelfCertConfig, client: kube::Client) -> SelfManaged {
        let secrets = Api::namespaced(client.clone(), &config.secret_namespace);
        SelfManaged {
            config,
            client,
            secrets,
        }
    }

    fn kube_err(&self, what: impl Into<String>) -> impl FnOnce(kube::Error) -> SelfCertError {
        let what = what.into();
        move |source| SelfCertError::Kube { what, source }
    }

    fn secret_ref(&self) -> String {
        format!(
            "Secret {}/{}",
            self.config.secret_namespace, self.config.secret_name
        )
    }

    fn configs(&self) -> impl Iterator<Item = (ConfigKind, &String)> {
        self.config
            .mutating_configs
            .iter()
            .map(|n| (ConfigKind::Mutating, n))
            .chain(
                self.config
                    .validating_configs
                    .iter()
                    .map(|n| (ConfigKind::Validating, n)),
            )
    }

    fn issue(&self) -> Result<Pair, certs::CertsError> {
        certs::generate(
            &self.config.rotation.hosts,
            self.config.rotation.validity_days,
        )
        .map(Pair::from)
    }

    /// The CAs the webhook configurations hold now, so a new Secret keeps them trusted.
    async fn published_cas(&self) -> String {
        let mut pem = String::new();
        for (kind, name) in self.configs() {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource());
            if let Ok(Some(obj)) = api.get_opt(name).await {
                for hook in obj.data["webhooks"].as_array().into_iter().flatten() {
                    let decoded = hook["clientConfig"]["caBundle"]
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .unwrap_or_default();
                    pem.push_str(&String::from_utf8_lossy(&decoded));
                    pem.push('\n');
                }
            }
        }
        pem
    }

    /// Reads the Secret, creating it if absent; a replica that loses the create race reads the winner's.
    async fn load(&self) -> Result<(Secret, Material), SelfCertError> {
        let name = &self.config.secret_name;
        if let Some(s) = self
            .secrets
            .get_opt(name)
            .await
            .map_err(self.kube_err(format!("cannot read {}", self.secret_ref())))?
        {
            let m = Material::from_secret(&s);
            return Ok((s, m));
        }
        let material = Material::initial(self.issue()?, &self.published_cas().await, now());
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.clone());
        secret.metadata.namespace = Some(self.config.secret_namespace.clone());
        material.write_into(&mut secret);
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(created) => {
                tracing::info!(secret = %self.secret_ref(), "self-managed certificate: created the CA and serving certificate");
                Ok((created, material))
            }
            Err(e) if is_status(&e, 409) => {
                tracing::info!(secret = %self.secret_ref(), "self-managed certificate: another replica created it first; using theirs");
                let s = self
                    .secrets
                    .get(name)
                    .await
                    .map_err(self.kube_err(format!("cannot read {}", self.secret_ref())))?;
                let m = Material::from_secret(&s);
                Ok((s, m))
            }
            Err(e) => Err(self
                .kube_err(format!("cannot create {}", self.secret_ref()))(
                e
            )),
        }
    }

    /// Takes the Secret one step further if one is due. On a write conflict another replica
    /// moved first: its result is read back and used.
    async fn step(&self, secret: Secret, m: Material) -> Result<Material, SelfCertError> {
        let t = now();
        let step = decide(&m, &self.config.rotation, t);
        if step == Step::Keep {
            return Ok(m);
        }
        let next = m.advance(step, t, || self.issue())?;
        let mut updated = secret;
        next.write_into(&mut updated);
        match self
            .secrets
            .replace(&self.config.secret_name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %self.secret_ref(), step = ?step, generation = next.generation, "self-managed certificate: rotation step");
                Ok(next)
            }
            Err(e) if is_status(&e, 409) => {
                let s = self
                    .secrets
                    .get(&self.config.secret_name)
                    .await
                    .map_err(self.kube_err(format!("cannot read {}", self.secret_ref())))?;
                Ok(Material::from_secret(&s))
            }
            Err(e) => Err(self
                .kube_err(format!("cannot update {}", self.secret_ref()))(
                e
            )),
        }
    }

    /// Keeps one configuration's caBundle equal to the material's bundle.
    async fn publish(
        &self,
        kind: ConfigKind,
        name: &str,
        m: &Material,
    ) -> Result<Trust, SelfCertError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource());
        let what = || format!("{kind:?}WebhookConfiguration {name}");
        let Some(live) = api
            .get_opt(name)
            .await
            .map_err(self.kube_err(format!("cannot read {}", what())))?
        else {
            return Ok(Trust::Missing);
        };
        let trusts = |obj: &DynamicObject| {
            obj.data["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|hook| {
                    let bundle = hook["clientConfig"]["caBundle"]
                        .as_str()
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .unwrap_or_default();
                    bundle_trusts(&String::from_utf8_lossy(&bundle), &m.current.ca_pem)
                })
        };
        let desired = m.ca_bundle_base64();
        let hooks: Vec<String> = live.data["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["name"].as_str().map(str::to_string))
            .collect();
        let current = live.data["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|h| h["clientConfig"]["caBundle"].as_str() == Some(desired.as_str()));
        let published_generation: u64 = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_GENERATION))
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        if current || m.generation < published_generation {
            // Up to date, or another replica already published newer material.
            return Ok(if trusts(&live) {
                Trust::Trusted
            } else {
                Trust::Pending
            });
        }
        let resource = kind.resource();
        // resourceVersion makes the apply conditional: a configuration changed since it was
        // read (say, by a replica with newer material) is left alone until the next tick.
        let body = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {
                "name": name,
                "resourceVersion": live.metadata.resource_version,
                "annotations": {ANNOTATION_GENERATION: m.generation.to_string()},
            },
            "webhooks": hooks.iter().map(|h| json!({"name": h, "clientConfig": {"caBundle": desired}})).collect::<Vec<Value>>(),
        });
        match api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(applied) => {
                tracing::info!(config = %what(), generation = m.generation, webhooks = hooks.len(), "self-managed certificate: caBundle published");
                Ok(if trusts(&applied) {
                    Trust::Trusted
                } else {
                    Trust::Pending
                })
            }
            Err(e) if is_status(&e, 409) => Ok(Trust::Pending),
            Err(e) => Err(self
                .kube_err(format!("cannot apply the caBundle to {}", what()))(
                e
            )),
        }
    }

    /// One pass: Secret -> next step -> publish -> files. Returns whether every configuration
    /// trusts the CA of the pair now being served, and which ones are missing.
    pub async fn tick(&self) -> Result<TickReport, SelfCertError> {
        let (secret, m) = self.load().await?;
        let m = self.step(secret, m).await?;
        let mut report = TickReport::default();
        for (kind, name) in self.configs() {
            match self.publish(kind, name, &m).await? {
                Trust::Trusted => {}
                Trust::Missing => report.missing.push(name.clone()),
                Trust::Pending => report.untrusted.push(name.clone()),
            }
        }
        // Files last: the bundle holding this pair's CA went out first.
        report.reloaded = sync_file(&self.config.key_file, &m.current.key_pem, 0o600)?
            | sync_file(&self.config.cert_file, &m.current.cert_pem, 0o644)?;
        if let Some(dir) = self.config.cert_file.parent() {
            sync_file(&dir.join(CA_CRT), &m.bundle_pem, 0o644)?;
        }
        report.generation = m.generation;
        Ok(report)
    }

    /// Ticks until the serving files exist and every configuration trusts them.
    pub async fn bootstrap(&self) {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.tick().await {
                Ok(r) if r.trusted() => {
                    tracing::info!(
                        generation = r.generation,
                        "self-managed certificate: serving certificate ready and trusted"
                    );
                    return;
                }
                Ok(r) => {
                    tracing::info!(attempt, missing = ?r.missing, untrusted = ?r.untrusted, "self-managed certificate: waiting for the webhook configurations")
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "self-managed certificate: bootstrap step failed; retrying")
                }
            }
            tokio::time::sleep(self.config.check_interval).await;
        }
    }

    /// Ticks forever (every replica; the Secret's resourceVersion picks one writer per step).
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.tick().await {
                Ok(r) if !r.missing.is_empty() => {
                    tracing::warn!(missing = ?r.missing, "self-managed certificate: webhook configuration not found")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "self-managed certificate: step failed; retrying")
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct TickReport {
    pub missing: Vec<String>,
    pub untrusted: Vec<String>,
    pub reloaded: bool,
    pub generation: u64,
}

impl TickReport {
    pub fn trusted(&self) -> bool {
        self.missing.is_empty() && self.untrusted.is_empty()
    }
}

/// Writes `contents` to `path` if it differs (beside, then rename). Returns whether it wrote.
fn sync_file(path: &Path, contents: &str, mode: u32) -> Result<bool, SelfCertError> {
    if std::fs::read(path).is_ok_and(|on_disk| on_disk == contents.as_bytes()) {
        return Ok(false);
    }
    let err = |source| SelfCertError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".keywire-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(true)
}

/// Bootstraps (until the pair is on disk and trusted), then keeps rotating in the background.
pub async fn start(config: SelfCertConfig) -> Result<tokio::task::JoinHandle<()>, SelfCertError> {
    tracing::info!(
        secret = %format!("{}/{}", config.secret_namespace, config.secret_name),
        hosts = ?config.rotation.hosts,
        mutating = ?config.mutating_configs,
        validating = ?config.validating_configs,
        "self-managed certificate: starting"
    );
    let manager = SelfManaged::new(config).await?;
    manager.bootstrap().await;
    Ok(tokio::spawn(manager.run()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn flags_become_a_config_and_bad_ones_name_the_flag() {
        let args = SelfCertArgs {
            self_managed_certs: true,
            cert_secret: Some("keywire/keywire-webhook-tls".into()),
            mutating_configs: vec!["keywire".into()],
            hosts: vec!["keywire.keywire.svc".into()],
            cert_validity_days: 365,
            cert_renew_before_days: 30,
            cert_overlap_seconds: 300,
            cert_check_seconds: 5,
            ..SelfCertArgs::default()
        };
        let (c, k) = (Path::new("/certs/tls.crt"), Path::new("/certs/tls.key"));
        let config = args.config(c, k).unwrap().unwrap();
        assert_eq!(config.secret_namespace, "keywire");
        assert_eq!(config.secret_name, "keywire-webhook-tls");
        assert_eq!(config.rotation.renew_before_secs, 30 * DAY);
        assert!(SelfCertArgs::default().config(c, k).unwrap().is_none());
        let bad = |f: fn(&mut SelfCertArgs)| {
            let mut a = args.clone();
            f(&mut a);
            a.config(c, k).unwrap_err().to_string()
        };
        assert!(bad(|a| a.cert_secret = Some("no-namespace".into())).contains("NAMESPACE/NAME"));
        assert!(bad(|a| a.cert_secret = None).contains("--cert-secret"));
        assert!(bad(|a| a.hosts.clear()).contains("--service-host"));
        assert!(bad(|a| a.mutating_configs.clear()).contains("--webhook-config"));
        assert!(bad(|a| a.cert_overlap_seconds = 10).contains("--cert-overlap-seconds"));
        assert!(bad(|a| a.cert_renew_before_days = 365).contains("--cert-renew-before-days"));
    }
}
