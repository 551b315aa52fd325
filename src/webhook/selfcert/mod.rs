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

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::webhook::certs;

mod rotation;
pub use rotation::*;

/// Field manager of every write keywire makes to webhook configurations.
pub const FIELD_MANAGER: &str = "keywire";
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
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

/// Writes `contents` to `path` if it differs (`certs::replace_file`: created with `mode`, no
/// symlinks, renamed into place). Returns whether it wrote.
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
    crate::webhook::certs::replace_file(path, contents.as_bytes(), mode).map_err(err)?;
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_file_is_0600_and_a_planted_temporary_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "do not touch").unwrap();
        let key = dir.path().join("certs/tls.key");
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        // The temporary path the old code wrote through.
        std::os::unix::fs::symlink(&victim, dir.path().join("certs/tls.key.keywire-tmp")).unwrap();
        assert!(sync_file(&key, "KEY", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !sync_file(&key, "KEY", 0o600).unwrap(),
            "unchanged: not rewritten"
        );
        assert!(sync_file(&key, "KEY2", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY2");
    }
}
