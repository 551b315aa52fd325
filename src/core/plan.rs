//! From a parsed request plus lookups to a resolved `Plan`, and from a plan to the `Wiring` a pod needs.
//!
//! Deterministic names live here: the controller calls the same functions to find the
//! SecretProviderClass and Secret it must materialise.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::annotations::{
    self, AzureWorkloadIdentityRequest, EnvBinding, IdentityMode, InjectionRequest, KeyVaultObject,
    Source,
};
use crate::core::azure::{self, CustomTokenEndpoint, Layout};
use crate::core::lookup::{Lookups, ServiceAccountInfo};

pub const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";
pub const CSI_VOLUME: &str = "keywire-secrets-store";
pub const TOKEN_AUDIENCE: &str = azure::DEFAULT_AUDIENCE;
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
pub const DEFAULT_CLOUD_NAME: &str = "AzurePublicCloud";

/// Cluster-wide defaults a front door is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub default_tenant_id: Option<String>,
    pub authority_host: String,
    pub cloud_name: String,
    /// From policy defaults: used when the pod does not say.
    pub default_mount_path: Option<String>,
    pub default_identity: Option<IdentityMode>,
    /// The token layout, custom token endpoint and proxy sidecar settings.
    pub workload_identity: azure::Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_tenant_id: None,
            authority_host: DEFAULT_AUTHORITY_HOST.to_string(),
            cloud_name: DEFAULT_CLOUD_NAME.to_string(),
            default_mount_path: None,
            default_identity: None,
            workload_identity: azure::Settings::default(),
        }
    }
}

/// The identity a pod uses, with everything resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Workload {
        client_id: String,
        tenant_id: String,
        token_expiration: i64,
    },
    ServicePrincipal {
        credentials_secret: String,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    PodIdentity,
}

impl Identity {
    pub fn mode(&self) -> IdentityMode {
        match self {
            Identity::Workload { .. } => IdentityMode::Workload,
            Identity::ServicePrincipal { .. } => IdentityMode::ServicePrincipal,
            Identity::ManagedIdentity { .. } => IdentityMode::ManagedIdentity,
            Identity::PodIdentity => IdentityMode::PodIdentity,
        }
    }
}

/// An inline config the controller turns into a SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineConfig {
    pub keyvault: String,
    pub tenant_id: String,
    pub cloud_name: String,
    /// Sorted, so that annotation order does not change names.
    pub objects: Vec<KeyVaultObject>,
}

/// A keywire-opted-in pod's resolved request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub namespace: String,
    pub service_account: String,
    pub class_name: String,
    pub inline: Option<InlineConfig>,
    pub identity: Identity,
    pub mount_path: String,
    pub sync_secret: Option<String>,
    pub env: Vec<EnvBinding>,
    pub containers: Vec<String>,
    pub init_containers: Vec<String>,
}

/// What the Azure Workload Identity drop-in gives a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzurePlan {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub token_expiration: i64,
    pub containers: Vec<String>,
    pub init_containers: Vec<String>,
    /// The token's audience: the custom token endpoint's, when the pod asked for it.
    pub audience: String,
    pub custom_token_endpoint: Option<CustomTokenEndpoint>,
    /// The proxy sidecar's port, when `inject-proxy-sidecar` is present.
    pub proxy_port: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContainerKind {
    Init,
    Regular,
}

impl ContainerKind {
    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Init => "initContainers",
            ContainerKind::Regular => "containers",
        }
    }
}

/// Everything keywire adds to one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerWiring {
    pub kind: ContainerKind,
    pub name: String,
    pub mounts: Vec<Value>,
    pub env: Vec<Value>,
}

/// A container keywire adds (the proxy sidecar and its init container), env and mounts included.
#[derive(Debug, Clone, PartialEq)]
pub struct NewContainer {
    pub kind: ContainerKind,
    /// First in its list (the sidecar), else last.
    pub first: bool,
    pub container: Value,
}

/// Everything keywire adds to a pod: the input of `patch::render`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wiring {
    pub annotations: Vec<(String, String)>,
    pub volumes: Vec<Value>,
    pub containers: Vec<ContainerWiring>,
    /// Names whose existing volume and mounts keywire replaces instead of refusing: the v1.6
    /// token volume, whose name upstream reserves.
    pub replaceable: Vec<String>,
    pub new_containers: Vec<NewContainer>,
}

/// The few pod fields planning needs.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<String>,
    pub init_containers: Vec<String>,
    /// What upstream hashes into the v1.6 token volume's name: the pod's name, or its
    /// generateName followed by " (prefix)".
    pub hash_name: String,
    pub host_network: bool,
    /// Token volumes the pod already has, per layout (a pod from a template keywire wired).
    pub token_volume_v16: Option<String>,
    pub token_volume_v15: bool,
}

impl PodView {
    pub fn from_json(pod: &Value) -> PodView {
        let meta = pod.get("metadata");
        let spec = pod.get("spec");
        let names = |field: &str| -> Vec<String> {
            spec.and_then(|s| s.get(field))
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let service_account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|f| spec.and_then(|s| s.get(*f)).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let text = |field: &str| meta.and_then(|m| m.get(field)).and_then(Value::as_str);
        let hash_name = match text("name").filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => format!("{} (prefix)", text("generateName").unwrap_or_default()),
        };
        let volumes = spec
            .and_then(|s| s.get("volumes"))
            .and_then(Value::as_array);
        let token_volume_v16 = volumes
            .into_iter()
            .flatten()
            .find(|v| Layout::V16.is_token_volume(v))
            .and_then(|v| v["name"].as_str())
            .map(str::to_string);
        let token_volume_v15 = volumes
            .into_iter()
            .flatten()
            .any(|v| Layout::V15.is_token_volume(v));
        PodView {
            labels: annotations::string_map(meta, "labels"),
            annotations: annotations::string_map(meta, "annotations"),
            service_account,
            containers: names("containers"),
            init_containers: names("initContainers"),
            hash_name,
            host_network: spec
                .and_then(|s| s.get("hostNetwork"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            token_volume_v16,
            token_volume_v15,
        }
    }

    /// The token volume's name under `layout`: the one the pod has, else upstream's.
    pub fn token_volume(&self, layout: Layout) -> String {
        match (layout, &self.token_volume_v16) {
            (Layout::V16, Some(existing)) => existing.clone(),
            _ => layout.volume_name(&self.hash_name),
        }
    }
}

/// Resolves a keywire request against the pod, its ServiceAccount and the cluster defaults.
pub fn resolve(
    request: &InjectionRequest,
    pod: &PodView,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Result<Plan, String> {
    let sa = lookups.service_account(namespace, &pod.service_account);
    let sa_annotation = |key: &str| {
        sa.as_ref()
            .and_then(|sa| sa.annotations.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let sa_ref = format!("{namespace}/{}", pod.service_account);
    let sa_missing = if sa.is_none() {
        format!(" (ServiceAccount {sa_ref} not found)")
    } else {
        String::new()
    };

    let tenant_id = request
        .tenant_id
        .clone()
        .or_else(|| sa_annotation(annotations::azure::TENANT_ID))
        .or_else(|| settings.default_tenant_id.clone());
    let missing_tenant = |why: &str| {
        format!(
            "{why} needs a tenant id: set annotation {} on the pod, {} on ServiceAccount {sa_ref}{sa_missing}, or a cluster default",
            annotations::TENANT_ID,
            annotations::azure::TENANT_ID
        )
    };

    let mode = request
        .identity
        .or(settings.default_identity)
        .unwrap_or(IdentityMode::Workload);
    let client_id = request
        .client_id
        .clone()
        .or_else(|| sa_annotation(annotations::azure::CLIENT_ID));
    let identity = match mode {
        IdentityMode::Workload => {
            let Some(client_id) = client_id else {
                return Err(format!(
                    "{}={} needs a client id: set annotation {} on the pod or {} on ServiceAccount {sa_ref}{sa_missing}",
                    annotations::IDENTITY,
                    mode,
                    annotations::CLIENT_ID,
                    annotations::azure::CLIENT_ID
                ));
            };
            let Some(tenant_id) = tenant_id.clone() else {
                return Err(missing_tenant(&format!("{}={mode}", annotations::IDENTITY)));
            };
            Identity::Workload {
                client_id,
                tenant_id,
                token_expiration: token_expiration(request.token_expiration, pod, sa.as_ref())?,
            }
        }
        IdentityMode::ServicePrincipal => Identity::ServicePrincipal {
            credentials_secret: request
                .credentials_secret
                .clone()
                .unwrap_or_else(|| annotations::DEFAULT_CREDENTIALS_SECRET.to_string()),
        },
        IdentityMode::ManagedIdentity => Identity::ManagedIdentity { client_id },
        IdentityMode::PodIdentity => Identity::PodIdentity,
    };

    let containers = targets(
        request.containers.as_ref(),
        &pod.containers,
        annotations::CONTAINERS,
        "container",
    )?
    .unwrap_or_else(|| pod.containers.clone());
    let init_containers = targets(
        request.init_containers.as_ref(),
        &pod.init_containers,
        annotations::INIT_CONTAINERS,
        "init container",
    )?
    .unwrap_or_default();

    let (class_name, inline) = match &request.source {
        Source::Existing(name) => (name.clone(), None),
        Source::Inline { keyvault, objects } => {
            let Some(tenant_id) = tenant_id else {
                return Err(missing_tenant(&format!(
                    "{}={keyvault}",
                    annotations::KEYVAULT
                )));
            };
            let mut objects = objects.clone();
            objects.sort();
            let config = InlineConfig {
                keyvault: keyvault.clone(),
                tenant_id,
                cloud_name: settings.cloud_name.clone(),
                objects,
            };
            (
                inline_class_name(namespace, &config, &identity),
                Some(config),
            )
        }
    };

    if let Identity::Workload { .. } = identity
        && let Some(clash) = request
            .env
            .iter()
            .find(|b| IDENTITY_ENV.contains(&b.env_name.as_str()))
    {
        return Err(format!(
            "annotation {}: {} is set by keywire for workload identity; bind the object to another name",
            annotations::ENV,
            clash.env_name
        ));
    }

    let sync_secret = match (&request.sync_secret, request.env.is_empty()) {
        (Some(name), _) => Some(name.clone()),
        (None, false) => Some(synced_secret_name(&class_name, inline.is_some())),
        (None, true) => None,
    };

    Ok(Plan {
        namespace: namespace.to_string(),
        service_account: pod.service_account.clone(),
        class_name,
        inline,
        identity,
        mount_path: request
            .mount_path
            .clone()
            .or_else(|| settings.default_mount_path.clone())
            .unwrap_or_else(|| annotations::DEFAULT_MOUNT_PATH.to_string()),
        sync_secret,
        env: request.env.clone(),
        containers,
        init_containers,
    })
}

/// Resolves the Azure Workload Identity drop-in, exactly as that webhook reads its inputs.
pub fn resolve_azure(
    request: &AzureWorkloadIdentityRequest,
    pod: &PodView,
    namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Result<AzurePlan, String> {
    let Some(sa) = lookups.service_account(namespace, &pod.service_account) else {
        return Err(format!(
            "pod is labelled {}=true but its ServiceAccount {namespace}/{} was not found",
            annotations::azure::USE_LABEL,
            pod.service_account
        ));
    };
    if request.proxy_port.is_some() && pod.host_network {
        return Err(format!(
            "annotation {} asks for the proxy sidecar, but the pod has hostNetwork: true (the proxy redirects the pod's own network traffic)",
            annotations::azure::INJECT_PROXY_SIDECAR
        ));
    }
    let token_expiration = match request.token_expiration {
        Some(n) => n,
        None => sa_token_expiration(&sa)?,
    };
    let skip = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| !request.skip_containers.contains(n))
            .cloned()
            .collect()
    };
    let wi = &settings.workload_identity;
    let endpoint = wi.custom_token_endpoint.as_ref().filter(|e| {
        pod.annotations
            .get(&e.annotation())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    });
    Ok(AzurePlan {
        client_id: sa
            .annotations
            .get(annotations::azure::CLIENT_ID)
            .filter(|v| !v.is_empty())
            .cloned(),
        // Upstream: the ServiceAccount's annotation wins when present, even empty.
        tenant_id: match sa.annotations.get(annotations::azure::TENANT_ID) {
            Some(t) => Some(t.clone()),
            None => settings.default_tenant_id.clone(),
        },
        token_expiration,
        containers: skip(&pod.containers),
        init_containers: skip(&pod.init_containers),
        audience: endpoint.map_or_else(|| wi.audience.clone(), |e| e.audience.clone()),
        custom_token_endpoint: endpoint.cloned(),
        proxy_port: request.proxy_port,
    })
}

/// `keywire.dev/token-expiration`, then the Azure Workload Identity pod and ServiceAccount annotations.
fn token_expiration(
    explicit: Option<i64>,
    pod: &PodView,
    sa: Option<&ServiceAccountInfo>,
) -> Result<i64, String> {
    if let Some(n) = explicit {
        return Ok(n);
    }
    if let Some(v) = pod
        .annotations
        .get(annotations::azure::TOKEN_EXPIRATION)
        .filter(|v| !v.is_empty())
    {
        return annotations::token_expiration(annotations::azure::TOKEN_EXPIRATION, v)
            .map_err(|e| e.to_string());
    }
    match sa {
        Some(sa) => sa_token_expiration(sa),
        None => Ok(annotations::DEFAULT_TOKEN_EXPIRATION),
    }
}

fn sa_token_expiration(sa: &ServiceAccountInfo) -> Result<i64, String> {
    match sa
        .annotations
        .get(annotations::azure::TOKEN_EXPIRATION)
        .filter(|v| !v.is_empty())
    {
        Some(v) => annotations::token_expiration(annotations::azure::TOKEN_EXPIRATION, v)
            .map_err(|e| format!("ServiceAccount {}/{}: {e}", sa.namespace, sa.name)),
        None => Ok(annotations::DEFAULT_TOKEN_EXPIRATION),
    }
}

fn targets(
    requested: Option<&Vec<String>>,
    present: &[String],
    key: &str,
    what: &str,
) -> Result<Option<Vec<String>>, String> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    for name in requested {
        if !present.contains(name) {
            return Err(format!(
                "annotation {key}={:?} is invalid: the pod has no {what} named {name:?} (it has: {})",
                requested.join(","),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ));
        }
    }
    Ok(Some(requested.clone()))
}

/// `keywire-<vault>-<hash>`: from the namespace and the normalised config only, never the pod.
pub fn inline_class_name(namespace: &str, config: &InlineConfig, identity: &Identity) -> String {
    let mut canonical = format!(
        "v1\nnamespace={namespace}\nkeyvault={}\ntenant={}\ncloud={}\nidentity={}\n",
        config.keyvault,
        config.tenant_id,
        config.cloud_name,
        identity.mode()
    );
    match identity {
        Identity::Workload { client_id, .. } => {
            canonical.push_str(&format!("client={client_id}\n"))
        }
        Identity::ManagedIdentity { client_id } => canonical.push_str(&format!(
            "client={}\n",
            client_id.as_deref().unwrap_or_default()
        )),
        Identity::ServicePrincipal { credentials_secret } => {
            canonical.push_str(&format!("credentials={credentials_secret}\n"))
        }
        Identity::PodIdentity => {}
    }
    for o in &config.objects {
        canonical.push_str(&format!(
            "object={}/{}@{} as {}\n",
            o.object_type.as_str(),
            o.name,
            o.version.as_deref().unwrap_or_default(),
            o.file_name()
        ));
    }
    format!("keywire-{}-{}", config.keyvault, short_hash(&canonical))
}

/// The synced Secret of a class: the class name for inline configs, derived for existing classes.
pub fn synced_secret_name(class_name: &str, inline: bool) -> String {
    if inline {
        class_name.to_string()
    } else {
        let prefix: String = class_name.chars().take(40).collect();
        format!(
            "{}-keywire-{}",
            prefix.trim_end_matches(['-', '.']),
            short_hash(class_name)
        )
    }
}

fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The CSI volume keywire wires for a plan (rules recognise keywire's own volume by it).
pub fn csi_volume(plan: &Plan) -> Value {
    let mut csi = json!({
        "driver": CSI_DRIVER,
        "readOnly": true,
        "volumeAttributes": {"secretProviderClass": plan.class_name},
    });
    if let Identity::ServicePrincipal { credentials_secret } = &plan.identity {
        csi["nodePublishSecretRef"] = json!({"name": credentials_secret});
    }
    json!({"name": CSI_VOLUME, "csi": csi})
}

fn mount(name: &str, path: &str) -> Value {
    json!({"name": name, "mountPath": path, "readOnly": true})
}

/// The variables keywire's workload identity sets (a user's `keywire.dev/env` may not).
const IDENTITY_ENV: [&str; 4] = azure::IDENTITY_ENV;

impl Wiring {
    fn container(&mut self, kind: ContainerKind, name: &str) -> &mut ContainerWiring {
        let pos = match self
            .containers
            .iter()
            .position(|c| c.kind == kind && c.name == name)
        {
            Some(pos) => pos,
            None => {
                self.containers.push(ContainerWiring {
                    kind,
                    name: name.to_string(),
                    mounts: Vec::new(),
                    env: Vec::new(),
                });
                self.containers.len() - 1
            }
        };
        &mut self.containers[pos]
    }

    /// Adds items by name; the first wiring of a name wins, so keywire's own wiring takes precedence.
    fn add_volume(&mut self, volume: Value) {
        if !self.volumes.iter().any(|v| v["name"] == volume["name"]) {
            self.volumes.push(volume);
        }
    }

    fn add_to(&mut self, kind: ContainerKind, name: &str, mounts: &[Value], env: &[Value]) {
        let c = self.container(kind, name);
        for m in mounts {
            if !c.mounts.iter().any(|x| x["name"] == m["name"]) {
                c.mounts.push(m.clone());
            }
        }
        for e in env {
            if !c.env.iter().any(|x| x["name"] == e["name"]) {
                c.env.push(e.clone());
            }
        }
    }

    fn targets<'a>(
        containers: &'a [String],
        init_containers: &'a [String],
    ) -> impl Iterator<Item = (ContainerKind, &'a String)> {
        init_containers
            .iter()
            .map(|n| (ContainerKind::Init, n))
            .chain(containers.iter().map(|n| (ContainerKind::Regular, n)))
    }

    /// The token volume and its mount, under the configured layout.
    fn add_token(
        &mut self,
        view: &PodView,
        settings: &Settings,
        audience: &str,
        expiration: i64,
        ca: &azure::CaSource,
    ) -> Value {
        let layout = settings.workload_identity.layout;
        let name = view.token_volume(layout);
        self.add_volume(azure::token_volume(&name, layout, audience, expiration, ca));
        if layout == Layout::V16 && !self.replaceable.contains(&name) {
            self.replaceable.push(name.clone());
        }
        mount(&name, layout.mount_path())
    }

    /// keywire's own wiring for a resolved plan.
    pub fn add_plan(&mut self, plan: &Plan, view: &PodView, settings: &Settings) {
        self.add_volume(csi_volume(plan));
        let mut mounts = vec![mount(CSI_VOLUME, &plan.mount_path)];
        let mut env = Vec::new();
        if let Identity::Workload {
            client_id,
            tenant_id,
            token_expiration,
        } = &plan.identity
        {
            let wi = &settings.workload_identity;
            mounts.push(self.add_token(
                view,
                settings,
                &wi.audience,
                *token_expiration,
                &azure::CaSource::None,
            ));
            env.extend(azure::identity_env(
                Some(client_id),
                Some(tenant_id),
                wi.layout,
                &settings.authority_host,
                None,
            ));
        }
        if let Some(secret) = &plan.sync_secret {
            env.extend(plan.env.iter().map(|b| {
                json!({"name": b.env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": b.object}}})
            }));
        }
        for (kind, name) in Self::targets(&plan.containers, &plan.init_containers) {
            self.add_to(kind, name, &mounts, &env);
        }
        self.annotations.push((
            annotations::STATUS.to_string(),
            annotations::STATUS_INJECTED.to_string(),
        ));
    }

    /// What the Azure Workload Identity webhook (v1.6.0) would add.
    pub fn add_azure(&mut self, plan: &AzurePlan, view: &PodView, settings: &Settings) {
        let wi = &settings.workload_identity;
        let ca = plan
            .custom_token_endpoint
            .as_ref()
            .map(|e| e.ca.clone())
            .unwrap_or_default();
        let token_mount =
            self.add_token(view, settings, &plan.audience, plan.token_expiration, &ca);
        let env = azure::identity_env(
            plan.client_id.as_deref(),
            plan.tenant_id.as_deref(),
            wi.layout,
            &settings.authority_host,
            plan.custom_token_endpoint.as_ref(),
        );
        let mounts = [token_mount.clone()];
        for (kind, name) in Self::targets(&plan.containers, &plan.init_containers) {
            self.add_to(kind, name, &mounts, &env);
        }
        let Some(port) = plan.proxy_port else {
            return;
        };
        // The proxy containers are wired like every other container (upstream injects them
        // first, then mutates all): their own env first, then the identity's, and the mount.
        let wire = |mut c: Value| -> Value {
            let mut all_env: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
            for e in &env {
                if !all_env.iter().any(|x| x["name"] == e["name"]) {
                    all_env.push(e.clone());
                }
            }
            if !all_env.is_empty() {
                c["env"] = Value::Array(all_env);
            }
            c["volumeMounts"] = json!([token_mount]);
            c
        };
        if !view
            .init_containers
            .iter()
            .any(|n| n == azure::PROXY_INIT_CONTAINER)
        {
            self.new_containers.push(NewContainer {
                kind: ContainerKind::Init,
                first: false,
                container: wire(azure::proxy_init_container(&wi.proxy, port)),
            });
        }
        let (kind, existing) = if wi.native_sidecars {
            (ContainerKind::Init, &view.init_containers)
        } else {
            (ContainerKind::Regular, &view.containers)
        };
        if !existing.iter().any(|n| n == azure::PROXY_CONTAINER) {
            self.new_containers.push(NewContainer {
                kind,
                first: true,
                container: wire(azure::proxy_container(&wi.proxy, port, wi.native_sidecars)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::annotations::ObjectType;

    fn config(objects: Vec<KeyVaultObject>) -> InlineConfig {
        InlineConfig {
            keyvault: "kv-demo".into(),
            tenant_id: "t".into(),
            cloud_name: DEFAULT_CLOUD_NAME.into(),
            objects,
        }
    }

    fn object(name: &str) -> KeyVaultObject {
        KeyVaultObject {
            object_type: ObjectType::Secret,
            name: name.into(),
            version: None,
            alias: None,
        }
    }

    #[test]
    fn class_name_depends_on_namespace_and_config_only() {
        let wi = Identity::Workload {
            client_id: "c".into(),
            tenant_id: "t".into(),
            token_expiration: 3600,
        };
        let a = inline_class_name("prod", &config(vec![object("a")]), &wi);
        assert_eq!(
            a,
            inline_class_name("prod", &config(vec![object("a")]), &wi)
        );
        assert!(a.starts_with("keywire-kv-demo-") && a.len() == "keywire-kv-demo-".len() + 10);
        assert_ne!(a, inline_class_name("dev", &config(vec![object("a")]), &wi));
        assert_ne!(
            a,
            inline_class_name("prod", &config(vec![object("b")]), &wi)
        );
        let other_client = Identity::Workload {
            client_id: "d".into(),
            tenant_id: "t".into(),
            token_expiration: 3600,
        };
        assert_ne!(
            a,
            inline_class_name("prod", &config(vec![object("a")]), &other_client)
        );
        // The token lifetime is pod wiring, not SecretProviderClass config.
        let longer = Identity::Workload {
            client_id: "c".into(),
            tenant_id: "t".into(),
            token_expiration: 7200,
        };
        assert_eq!(
            a,
            inline_class_name("prod", &config(vec![object("a")]), &longer)
        );
    }

    #[test]
    fn synced_secret_of_existing_class_is_derived_and_valid() {
        let name = synced_secret_name("my-spc", false);
        assert!(name.starts_with("my-spc-keywire-"), "{name}");
        assert!(annotations::is_dns_subdomain(&name));
        let long = "a".repeat(200);
        assert!(synced_secret_name(&long, false).len() <= 63);
        // A hand-made class that looks like keywire's never shares its Secret name.
        assert_ne!(
            synced_secret_name("keywire-kv-x-0123456789", false),
            "keywire-kv-x-0123456789"
        );
        assert_eq!(
            synced_secret_name("keywire-kv-x-0123456789", true),
            "keywire-kv-x-0123456789"
        );
    }
}
