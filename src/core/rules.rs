//! The policy rules: every selecting `KeywirePolicy` judged against the pod keywire would store,
//! as pure functions that return `Violation`s.

use std::fmt;

use serde_json::Value;

use crate::core::annotations::{self, IdentityMode};
use std::collections::BTreeMap;

use crate::core::lookup::Lookups;
use crate::core::plan::{self, AzurePlan, Identity, Plan, PodView, Settings};
use crate::core::policy::{Enforcement, Policy, glob};

/// One broken rule: which policy, which rule, which field, and how it is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub policy: String,
    pub rule: &'static str,
    /// Path of the offending field, relative to the pod (templates prefix it).
    pub field: String,
    pub enforcement: Enforcement,
    pub message: String,
}

impl Violation {
    pub fn under(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = format!("{prefix}.{}", self.field);
        }
        self
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeywirePolicy {} rule {} ({}): {}",
            self.policy, self.rule, self.field, self.message
        )
    }
}

fn annotation(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What a pod asks for and will get: the input of the rules.
pub struct Subject<'a> {
    pub view: &'a PodView,
    /// The pod as it will be stored (after keywire's patch).
    pub pod: &'a Value,
    pub namespace: &'a str,
    pub plan: Option<&'a Plan>,
    pub azure: Option<&'a AzurePlan>,
    /// The effective settings (policy defaults applied): audiences and the authority host.
    pub settings: &'a Settings,
    /// To see what a CSI volume's SecretProviderClass holds.
    pub lookups: &'a dyn Lookups,
    /// Judge every route in the pod (hand-written volumes, tokens, env), not only what keywire
    /// wires. The controller's question about a plan sets this false.
    pub whole_pod: bool,
}

/// Every SecretProviderClass a pod names: its CSI volumes' and `keywire.dev/secret-provider-class`.
/// The webhook fetches the ones its cache has not seen before judging.
pub fn classes_named(pod: &Value) -> Vec<String> {
    let mut out: Vec<String> = csi_volumes(pod)
        .filter_map(|(_, v)| {
            v.pointer("/csi/volumeAttributes/secretProviderClass")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if let Some(class) = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(annotations::SECRET_PROVIDER_CLASS))
        .and_then(Value::as_str)
    {
        out.push(class.to_string());
    }
    out.sort();
    out.dedup();
    out
}

fn csi_volumes(pod: &Value) -> impl Iterator<Item = (usize, &Value)> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, v)| v.pointer("/csi/driver").and_then(Value::as_str) == Some(plan::CSI_DRIVER))
}

/// One identity wiring keywire gives the pod: its own, or the Azure Workload Identity drop-in's.
/// A pod can have both; the rules judge each, naming the field that asked for it.
struct Grant<'a> {
    mode: IdentityMode,
    identity_field: String,
    tenant: Option<(&'a str, String)>,
    client_id: Option<(&'a str, String)>,
    /// The authority host its containers get (only with a token).
    authority_host: Option<&'a str>,
    token_expiration: Option<(i64, String)>,
    /// How the token is used, for messages: the custom token endpoint's audience, the proxy.
    detail: String,
}

/// A Secrets Store CSI volume, judged by what it points at, whoever wrote it: the class's
/// parameters overlaid with the volume's own attributes, as the driver reads them.
struct StoreVolume<'a> {
    field: String,
    name: &'a str,
    class: &'a str,
    /// keywire put it there: the pod's plan asks for exactly this volume.
    keywire: bool,
    /// keywire's volume for an inline config: its vault, tenant and identity are the plan's.
    own_inline: bool,
    /// `None` when the class is unknown (neither in the cluster nor in the input).
    parameters: Option<BTreeMap<String, String>>,
    provider: Option<String>,
    extra_attributes: Vec<&'a str>,
    node_publish_secret: bool,
}

impl StoreVolume<'_> {
    fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters
            .as_ref()?
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn is_azure(&self) -> bool {
        self.provider.as_deref().is_none_or(|p| p == "azure")
    }

    /// The identity the driver's Azure provider will use for this volume.
    fn identity(&self) -> Option<IdentityMode> {
        let yes = |k: &str| {
            self.parameter(k)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        if self.node_publish_secret {
            Some(IdentityMode::ServicePrincipal)
        } else if yes("usePodIdentity") {
            Some(IdentityMode::PodIdentity)
        } else if yes("useVMManagedIdentity") {
            Some(IdentityMode::ManagedIdentity)
        } else if self.parameter("clientID").is_some() {
            Some(IdentityMode::Workload)
        } else {
            None
        }
    }

    fn client_id(&self) -> Option<&str> {
        self.parameter("clientID")
            .or_else(|| self.parameter("userAssignedIdentityID"))
    }

    fn unknown(&self, namespace: &str) -> String {
        format!(
            "volume {} names SecretProviderClass {namespace}/{}, which was not found; what it reads cannot be checked",
            self.name, self.class
        )
    }
}

/// One `AZURE_*` variable a container sets itself, as the stored pod will run it.
struct EnvValue<'a> {
    field: String,
    container: &'a str,
    /// `None`: it comes from a ConfigMap or Secret (or may, through `envFrom`), unseen here.
    value: Option<&'a str>,
}

/// A hand-written projected token for Entra (keywire did not add it).
struct HandToken<'a> {
    field: String,
    volume: &'a str,
    expiration: i64,
}

const TENANT_ENV: &str = "AZURE_TENANT_ID";
const CLIENT_ENV: &str = "AZURE_CLIENT_ID";
const AUTHORITY_ENV: &str = "AZURE_AUTHORITY_HOST";
/// Variables that make the Azure SDKs sign in as a service principal.
const SECRET_ENV: [&str; 2] = ["AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"];

impl<'a> Subject<'a> {
    fn grants(&self) -> Vec<Grant<'a>> {
        let mut out = Vec::new();
        let authority = self.settings.authority_host.as_str();
        if let Some(p) = self.plan {
            let (tenant, client, expiration) = match &p.identity {
                Identity::Workload {
                    tenant_id,
                    client_id,
                    token_expiration,
                } => (
                    Some(tenant_id.as_str()),
                    Some(client_id.as_str()),
                    Some(*token_expiration),
                ),
                Identity::ManagedIdentity { client_id } => (
                    p.inline.as_ref().map(|i| i.tenant_id.as_str()),
                    client_id.as_deref(),
                    None,
                ),
                _ => (p.inline.as_ref().map(|i| i.tenant_id.as_str()), None, None),
            };
            out.push(Grant {
                mode: p.identity.mode(),
                identity_field: annotation(annotations::IDENTITY),
                tenant: tenant.map(|t| (t, annotation(annotations::TENANT_ID))),
                client_id: client.map(|c| (c, annotation(annotations::CLIENT_ID))),
                authority_host: expiration.map(|_| authority),
                token_expiration: expiration
                    .map(|e| (e, annotation(annotations::TOKEN_EXPIRATION))),
                detail: String::new(),
            });
        }
        if let Some(a) = self.azure {
            let service_account = "spec.serviceAccountName".to_string();
            let expiration_field = if self
                .view
                .annotations
                .contains_key(annotations::azure::TOKEN_EXPIRATION)
            {
                annotation(annotations::azure::TOKEN_EXPIRATION)
            } else {
                service_account.clone()
            };
            let mut how = Vec::new();
            if a.custom_token_endpoint.is_some() {
                how.push(format!(
                    "token audience {} for the custom token endpoint",
                    a.audience
                ));
            }
            if let Some(port) = a.proxy_port {
                how.push(format!("through the proxy sidecar on port {port}"));
            }
            out.push(Grant {
                mode: IdentityMode::Workload,
                identity_field: format!("metadata.labels[{}]", annotations::azure::USE_LABEL),
                tenant: a.tenant_id.as_deref().map(|t| (t, service_account.clone())),
                client_id: a.client_id.as_deref().map(|c| (c, service_account)),
                authority_host: Some(authority),
                token_expiration: Some((a.token_expiration, expiration_field)),
                detail: if how.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", how.join(", "))
                },
            });
        }
        out
    }

    /// What the pod's Secrets Store volumes read: keywire's planned volume (whether or not the
    /// pod carries it yet, as a template does), then every other CSI volume in the pod.
    fn store_volumes(&self) -> Vec<StoreVolume<'a>> {
        let mut out = Vec::new();
        let own = self.plan.map(plan::csi_volume);
        if let Some(p) = self.plan {
            let (parameters, provider) = match &p.inline {
                // keywire's inline class is materialised by the controller from the plan.
                Some(inline) => (
                    Some(
                        [
                            ("keyvaultName".to_string(), inline.keyvault.clone()),
                            ("tenantId".to_string(), inline.tenant_id.clone()),
                        ]
                        .into(),
                    ),
                    Some("azure".to_string()),
                ),
                None => match self
                    .lookups
                    .secret_provider_class(self.namespace, &p.class_name)
                {
                    Some(c) => (Some(c.parameters), Some(c.provider)),
                    None => (None, None),
                },
            };
            out.push(StoreVolume {
                field: annotation(if p.inline.is_some() {
                    annotations::KEYVAULT
                } else {
                    annotations::SECRET_PROVIDER_CLASS
                }),
                name: plan::CSI_VOLUME,
                class: &p.class_name,
                keywire: true,
                own_inline: p.inline.is_some(),
                parameters,
                provider,
                extra_attributes: Vec::new(),
                node_publish_secret: matches!(p.identity, Identity::ServicePrincipal { .. }),
            });
        }
        if !self.whole_pod {
            return out;
        }
        for (i, v) in csi_volumes(self.pod) {
            if own
                .as_ref()
                .is_some_and(|o| o["name"] == v["name"] && o["csi"] == v["csi"])
            {
                continue;
            }
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            let attributes = v
                .pointer("/csi/volumeAttributes")
                .and_then(Value::as_object);
            let class = attributes
                .and_then(|a| a.get("secretProviderClass"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let found = self.lookups.secret_provider_class(self.namespace, class);
            let provider = found.as_ref().map(|c| c.provider.clone());
            let mut parameters = found.map(|c| c.parameters);
            // Volume attributes override the class's parameters in the driver.
            if let (Some(params), Some(attrs)) = (parameters.as_mut(), attributes) {
                for (k, value) in attrs {
                    if let (true, Some(value)) = (k != "secretProviderClass", value.as_str()) {
                        params.insert(k.clone(), value.to_string());
                    }
                }
            }
            out.push(StoreVolume {
                field: format!("spec.volumes[{i}]"),
                name,
                class,
                keywire: false,
                own_inline: false,
                parameters,
                provider,
                extra_attributes: attributes
                    .map(|a| {
                        a.keys()
                            .map(String::as_str)
                            .filter(|k| *k != "secretProviderClass")
                            .collect()
                    })
                    .unwrap_or_default(),
                node_publish_secret: v.pointer("/csi/nodePublishSecretRef").is_some(),
            });
        }
        out
    }

    /// Every container's own `AZURE_*` settings of `name`: literal values, values from
    /// elsewhere, and, where a container with an Azure token leaves it to `envFrom`, that.
    fn env_values(&self, name: &str) -> Vec<EnvValue<'a>> {
        let mut out = Vec::new();
        let token_volumes = self.token_volume_names();
        for field in ["initContainers", "containers", "ephemeralContainers"] {
            let list = self
                .pod
                .pointer(&format!("/spec/{field}"))
                .and_then(Value::as_array);
            for (ci, c) in list.into_iter().flatten().enumerate() {
                let container = c.get("name").and_then(Value::as_str).unwrap_or_default();
                let env = c.get("env").and_then(Value::as_array);
                let mut set = false;
                for (ei, e) in env.into_iter().flatten().enumerate() {
                    if e.get("name").and_then(Value::as_str) != Some(name) {
                        continue;
                    }
                    set = true;
                    out.push(EnvValue {
                        field: format!("spec.{field}[{ci}].env[{ei}]"),
                        container,
                        value: if e.get("valueFrom").is_some() {
                            None
                        } else {
                            Some(e.get("value").and_then(Value::as_str).unwrap_or_default())
                        },
                    });
                }
                let has_token = c
                    .get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("name").and_then(Value::as_str))
                    .any(|m| token_volumes.contains(&m));
                if !set && has_token && c.get("envFrom").is_some() {
                    out.push(EnvValue {
                        field: format!("spec.{field}[{ci}].envFrom"),
                        container,
                        value: None,
                    });
                }
            }
        }
        out
    }

    fn is_entra_audience(&self, audience: &str) -> bool {
        let wi = &self.settings.workload_identity;
        audience.starts_with(crate::core::azure::DEFAULT_AUDIENCE)
            || audience == wi.audience
            || wi
                .custom_token_endpoint
                .as_ref()
                .is_some_and(|e| e.audience == audience)
    }

    /// Volumes with a projected token for Entra: `(name, expiration, index)` of each source.
    fn entra_tokens(&self) -> Vec<(&'a str, i64, usize)> {
        let mut out = Vec::new();
        let volumes = self.pod.pointer("/spec/volumes").and_then(Value::as_array);
        for (i, v) in volumes.into_iter().flatten().enumerate() {
            let sources = v.pointer("/projected/sources").and_then(Value::as_array);
            for s in sources.into_iter().flatten() {
                let Some(token) = s.get("serviceAccountToken") else {
                    continue;
                };
                let audience = token
                    .get("audience")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if self.is_entra_audience(audience) {
                    out.push((
                        v.get("name").and_then(Value::as_str).unwrap_or_default(),
                        token
                            .get("expirationSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(annotations::DEFAULT_TOKEN_EXPIRATION),
                        i,
                    ));
                }
            }
        }
        out
    }

    fn token_volume_names(&self) -> Vec<&'a str> {
        self.entra_tokens().into_iter().map(|(n, _, _)| n).collect()
    }

    /// Entra tokens keywire did not add: its own is the layout's token volume, when it wired one.
    fn hand_tokens(&self) -> Vec<HandToken<'a>> {
        let own = (self
            .plan
            .is_some_and(|p| p.identity.mode() == IdentityMode::Workload)
            || self.azure.is_some())
        .then(|| {
            self.view
                .token_volume(self.settings.workload_identity.layout)
        });
        self.entra_tokens()
            .into_iter()
            .filter(|(name, _, _)| own.as_deref() != Some(*name))
            .map(|(volume, expiration, i)| HandToken {
                field: format!("spec.volumes[{i}]"),
                volume,
                expiration,
            })
            .collect()
    }
}

/// Evaluates every rule of every selecting policy.
pub fn evaluate(selecting: &[&Policy], subject: &Subject<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    if selecting.is_empty() {
        return out;
    }
    let whole = subject.whole_pod;
    let env = |name: &str| {
        if whole {
            subject.env_values(name)
        } else {
            Vec::new()
        }
    };
    let facts = Facts {
        grants: subject.grants(),
        volumes: subject.store_volumes(),
        hand_tokens: if whole {
            subject.hand_tokens()
        } else {
            Vec::new()
        },
        tenants: env(TENANT_ENV),
        clients: env(CLIENT_ENV),
        authorities: env(AUTHORITY_ENV),
        secrets: SECRET_ENV
            .iter()
            // Only what a container sets itself: `envFrom` may hold anything.
            .flat_map(|n| {
                env(n)
                    .into_iter()
                    .filter(|e| !e.field.ends_with(".envFrom"))
                    .map(move |e| (*n, e))
            })
            .collect(),
    };
    for policy in selecting {
        evaluate_one(policy, subject, &facts, &mut out);
    }
    out
}

/// What the rules look at, gathered once per pod.
struct Facts<'a> {
    grants: Vec<Grant<'a>>,
    volumes: Vec<StoreVolume<'a>>,
    hand_tokens: Vec<HandToken<'a>>,
    tenants: Vec<EnvValue<'a>>,
    clients: Vec<EnvValue<'a>>,
    authorities: Vec<EnvValue<'a>>,
    secrets: Vec<(&'static str, EnvValue<'a>)>,
}

fn allowed_list(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    }
}

/// Authority hosts compare without a trailing slash.
fn host_matches(pattern: &str, host: &str) -> bool {
    glob(pattern.trim_end_matches('/'), host.trim_end_matches('/'))
}

fn evaluate_one(policy: &Policy, s: &Subject<'_>, f: &Facts<'_>, out: &mut Vec<Violation>) {
    let spec = &policy.spec;
    let mut push =
        |rule: &'static str, enforcement: Option<Enforcement>, field: String, message: String| {
            out.push(Violation {
                policy: policy.name.clone(),
                rule,
                field,
                enforcement: enforcement.unwrap_or(spec.enforcement),
                message,
            })
        };

    if let Some(rule) = &spec.require_injection
        && rule.enabled
        && !annotations::is_opted_in(&s.view.labels)
    {
        push(
            "requireInjection",
            rule.enforcement,
            format!("metadata.labels[{}]", annotations::INJECT_LABEL),
            format!(
                "pods in this namespace must be labelled {}=true",
                annotations::INJECT_LABEL
            ),
        );
    }

    if let Some(rule) = &spec.identity {
        let allowed = |mode: IdentityMode| rule.allowed.iter().any(|a| a == mode.as_str());
        let listed = rule.allowed.join(", ");
        for g in f.grants.iter().filter(|g| !allowed(g.mode)) {
            push(
                "identity",
                rule.enforcement,
                g.identity_field.clone(),
                format!(
                    "identity {}{} is not allowed; allowed: {listed}",
                    g.mode, g.detail
                ),
            );
        }
        for v in f.volumes.iter().filter(|v| !v.own_inline) {
            match (v.identity(), v.parameters.is_some()) {
                (Some(mode), _) if !allowed(mode) => push(
                    "identity",
                    rule.enforcement,
                    v.field.clone(),
                    format!(
                        "volume {} reads SecretProviderClass {} as {mode}, which is not allowed; allowed: {listed}",
                        v.name, v.class
                    ),
                ),
                (None, false) if !v.keywire && v.is_azure() => push(
                    "identity",
                    rule.enforcement,
                    v.field.clone(),
                    v.unknown(s.namespace),
                ),
                _ => {}
            }
        }
        if !allowed(IdentityMode::Workload) {
            for t in &f.hand_tokens {
                push(
                    "identity",
                    rule.enforcement,
                    t.field.clone(),
                    format!(
                        "volume {} projects a token for Entra (identity workload), which is not allowed; allowed: {listed}",
                        t.volume
                    ),
                );
            }
        }
        if !allowed(IdentityMode::ServicePrincipal) {
            for (name, e) in &f.secrets {
                push(
                    "identity",
                    rule.enforcement,
                    e.field.clone(),
                    format!(
                        "container {:?} sets {name} (identity service-principal), which is not allowed; allowed: {listed}",
                        e.container
                    ),
                );
            }
        }
    }

    if let Some(rule) = &spec.key_vaults {
        let listed = rule.allowed.join(", ");
        for v in f.volumes.iter().filter(|v| v.is_azure()) {
            match v.parameter("keyvaultName") {
                Some(vault) if !rule.allowed.iter().any(|g| glob(g, vault)) => push(
                    "keyVaults",
                    rule.enforcement,
                    v.field.clone(),
                    if v.own_inline {
                        format!("key vault {vault} is not allowed; allowed: {listed}")
                    } else {
                        format!(
                            "volume {} reads key vault {vault} (SecretProviderClass {}), which is not allowed; allowed: {listed}",
                            v.name, v.class
                        )
                    },
                ),
                None if v.parameters.is_none() => push(
                    "keyVaults",
                    rule.enforcement,
                    v.field.clone(),
                    v.unknown(s.namespace),
                ),
                _ => {}
            }
        }
    }

    if let Some(rule) = &spec.tenants {
        let ok = |t: &str| rule.allowed.iter().any(|a| glob(a, t));
        let listed = rule.allowed.join(", ");
        let shown = |t: &str| {
            if t.is_empty() {
                "(empty)".to_string()
            } else {
                t.to_string()
            }
        };
        for g in &f.grants {
            if let Some((tenant, field)) = &g.tenant
                && !ok(tenant)
            {
                push(
                    "tenants",
                    rule.enforcement,
                    field.clone(),
                    format!(
                        "tenant {}{} is not allowed; allowed: {listed}",
                        shown(tenant),
                        g.detail
                    ),
                );
            }
        }
        for v in f.volumes.iter().filter(|v| !v.own_inline && v.is_azure()) {
            match v.parameter("tenantId").or_else(|| v.parameter("tenantID")) {
                Some(t) if !ok(t) => push(
                    "tenants",
                    rule.enforcement,
                    v.field.clone(),
                    format!(
                        "volume {} signs in to tenant {t} (SecretProviderClass {}), which is not allowed; allowed: {listed}",
                        v.name, v.class
                    ),
                ),
                None if v.parameters.is_none() => push(
                    "tenants",
                    rule.enforcement,
                    v.field.clone(),
                    v.unknown(s.namespace),
                ),
                _ => {}
            }
        }
        let granted: Vec<&str> = f
            .grants
            .iter()
            .filter_map(|g| g.tenant.as_ref().map(|(t, _)| *t))
            .collect();
        env_rule(
            &f.tenants,
            TENANT_ENV,
            &granted,
            ok,
            |field, message| push("tenants", rule.enforcement, field, message),
            &listed,
        );
    }

    if let Some(rule) = &spec.client_ids {
        let ok = |c: &str| rule.allowed.iter().any(|a| glob(a, c));
        let listed = allowed_list(&rule.allowed);
        for g in &f.grants {
            if let Some((client, field)) = &g.client_id
                && !ok(client)
            {
                push(
                    "clientIds",
                    rule.enforcement,
                    field.clone(),
                    format!(
                        "client id {client}{} is not allowed; allowed: {listed}",
                        g.detail
                    ),
                );
            }
        }
        for v in f.volumes.iter().filter(|v| v.is_azure()) {
            if let Some(c) = v.client_id()
                && !ok(c)
            {
                push(
                    "clientIds",
                    rule.enforcement,
                    v.field.clone(),
                    format!(
                        "volume {} signs in as client id {c} (SecretProviderClass {}), which is not allowed; allowed: {listed}",
                        v.name, v.class
                    ),
                );
            }
        }
        let granted: Vec<&str> = f
            .grants
            .iter()
            .filter_map(|g| g.client_id.as_ref().map(|(c, _)| *c))
            .collect();
        env_rule(
            &f.clients,
            CLIENT_ENV,
            &granted,
            ok,
            |field, message| push("clientIds", rule.enforcement, field, message),
            &listed,
        );
    }

    if let Some(rule) = &spec.authority_hosts {
        let ok = |h: &str| rule.allowed.iter().any(|a| host_matches(a, h));
        let listed = allowed_list(&rule.allowed);
        let granted: Vec<&str> = f.grants.iter().filter_map(|g| g.authority_host).collect();
        if let Some(host) = granted.first()
            && !ok(host)
        {
            push(
                "authorityHosts",
                rule.enforcement,
                "spec.containers[*].env[AZURE_AUTHORITY_HOST]".to_string(),
                format!(
                    "authority host {host} (keywire's setting) is not allowed; allowed: {listed}"
                ),
            );
        }
        env_rule(
            &f.authorities,
            AUTHORITY_ENV,
            &granted,
            ok,
            |field, message| push("authorityHosts", rule.enforcement, field, message),
            &listed,
        );
    }

    if let Some(rule) = &spec.secret_provider_classes {
        let listed = allowed_list(&rule.allowed);
        if let Some(plan) = s.plan {
            match &plan.inline {
                None if !rule.allowed.iter().any(|g| glob(g, &plan.class_name)) => push(
                    "secretProviderClasses",
                    rule.enforcement,
                    annotation(annotations::SECRET_PROVIDER_CLASS),
                    format!(
                        "SecretProviderClass {} is not allowed; allowed: {listed}",
                        plan.class_name
                    ),
                ),
                Some(_) if rule.allow_inline == Some(false) => push(
                    "secretProviderClasses",
                    rule.enforcement,
                    annotation(annotations::KEYVAULT),
                    format!(
                        "inline Key Vault configs are not allowed; use {} with an approved class",
                        annotations::SECRET_PROVIDER_CLASS
                    ),
                ),
                _ => {}
            }
        }
        for v in f.volumes.iter().filter(|v| !v.keywire) {
            if !rule.allowed.iter().any(|g| glob(g, v.class)) {
                push(
                    "secretProviderClasses",
                    rule.enforcement,
                    format!("{}.csi.volumeAttributes.secretProviderClass", v.field),
                    format!(
                        "volume {} names SecretProviderClass {}, which is not allowed; allowed: {listed}",
                        v.name, v.class
                    ),
                );
            }
        }
    }

    if let Some(rule) = &spec.token_expiration {
        let (min, max) = (
            rule.min.unwrap_or(annotations::MIN_TOKEN_EXPIRATION),
            rule.max.unwrap_or(annotations::MAX_TOKEN_EXPIRATION),
        );
        for g in &f.grants {
            let Some((seconds, field)) = &g.token_expiration else {
                continue;
            };
            if !(min..=max).contains(seconds) {
                push(
                    "tokenExpiration",
                    rule.enforcement,
                    field.clone(),
                    format!(
                        "token expiration {seconds}s{} is outside {min}..{max}s",
                        g.detail
                    ),
                );
            }
        }
        for t in f
            .hand_tokens
            .iter()
            .filter(|t| !(min..=max).contains(&t.expiration))
        {
            push(
                "tokenExpiration",
                rule.enforcement,
                t.field.clone(),
                format!(
                    "volume {} projects a token for Entra that lasts {}s, outside {min}..{max}s",
                    t.volume, t.expiration
                ),
            );
        }
    }

    if let Some(rule) = &spec.forbid_proxy_sidecar
        && rule.enabled
        && let Some(port) = s.azure.and_then(|a| a.proxy_port)
    {
        push(
            "forbidProxySidecar",
            rule.enforcement,
            annotation(annotations::azure::INJECT_PROXY_SIDECAR),
            format!(
                "the proxy sidecar (port {port}) needs the privileged init container azwi-proxy-init (root, NET_ADMIN); it is not allowed here"
            ),
        );
    }

    if let Some(rule) = &spec.forbid_unmanaged_secret_store_volumes
        && rule.enabled
    {
        for v in f.volumes.iter().filter(|v| !v.keywire) {
            let mut why = Vec::new();
            if v.name == plan::CSI_VOLUME {
                why.push("it is not the volume keywire wires for this pod".to_string());
            }
            if !v.extra_attributes.is_empty() {
                why.push(format!(
                    "its volumeAttributes {} override the SecretProviderClass",
                    v.extra_attributes.join(", ")
                ));
            }
            if v.node_publish_secret {
                why.push("it carries its own nodePublishSecretRef".to_string());
            }
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            };
            push(
                "forbidUnmanagedSecretStoreVolumes",
                rule.enforcement,
                v.field.clone(),
                format!(
                    "volume {} uses {} directly{why}; use keywire annotations instead",
                    v.name,
                    plan::CSI_DRIVER
                ),
            );
        }
    }
}

/// Judges the values containers set themselves for one variable: each literal value keywire did
/// not resolve (those are judged where they came from), and each value this rule cannot see.
fn env_rule(
    values: &[EnvValue<'_>],
    variable: &str,
    granted: &[&str],
    ok: impl Fn(&str) -> bool,
    mut push: impl FnMut(String, String),
    listed: &str,
) {
    for e in values {
        match e.value {
            Some(v) if granted.contains(&v) => {}
            Some(v) if !ok(v) => push(
                e.field.clone(),
                format!(
                    "container {:?} sets {variable}={v}, which is not allowed; allowed: {listed}",
                    e.container
                ),
            ),
            Some(_) => {}
            None => push(
                e.field.clone(),
                format!(
                    "container {:?} takes {variable} from a ConfigMap or Secret; set it as a literal value so policy can check it",
                    e.container
                ),
            ),
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
