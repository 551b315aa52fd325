//! Cluster-wide `KeywirePolicy` (keywire.dev/v1alpha1): parsing, namespace selection, defaults,
//! and the rules, evaluated as pure functions over the pod keywire would store.
//!
//! Several policies may select one namespace. Each is evaluated on its own and every violation
//! counts, so the most restrictive policy wins rule by rule (an allow-list must admit the value
//! in every policy that has one; the tightest token bounds apply; any policy can forbid or
//! require). Defaults are taken per field from the first selecting policy by name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::annotations::{self, IdentityMode};
use crate::plan::{self, AzurePlan, Identity, Plan, PodView};

pub const API_VERSION: &str = "keywire.dev/v1alpha1";
pub const KIND: &str = "KeywirePolicy";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
pub enum Enforcement {
    /// Deny.
    #[default]
    Enforce,
    /// Admit with an admission warning.
    Warn,
    /// Admit; record an Event, a metric and an audit annotation.
    Audit,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "Enforce",
            Enforcement::Warn => "Warn",
            Enforcement::Audit => "Audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Kubernetes label-selector semantics; the empty selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowRule {
    #[serde(default)]
    pub allowed: Vec<String>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassRule {
    #[serde(default)]
    pub allowed: Vec<String>,
    pub allow_inline: Option<bool>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundsRule {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToggleRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub enforcement: Option<Enforcement>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    #[serde(rename = "tenantID")]
    pub tenant_id: Option<String>,
    pub authority_host: Option<String>,
    pub mount_path: Option<String>,
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub enforcement: Enforcement,
    pub identity: Option<AllowRule>,
    pub key_vaults: Option<AllowRule>,
    pub tenants: Option<AllowRule>,
    pub secret_provider_classes: Option<ClassRule>,
    pub token_expiration: Option<BoundsRule>,
    pub forbid_unmanaged_secret_store_volumes: Option<ToggleRule>,
    pub require_injection: Option<ToggleRule>,
    pub defaults: Option<Defaults>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub spec: PolicySpec,
}

impl Policy {
    /// Parses a `KeywirePolicy` object; the message names the policy and the bad field.
    pub fn from_object(object: &Value) -> Result<Policy, String> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or("KeywirePolicy without metadata.name")?
            .to_string();
        let spec: PolicySpec =
            serde_json::from_value(object.get("spec").cloned().unwrap_or(Value::Null))
                .map_err(|e| format!("KeywirePolicy {name}: spec: {e}"))?;
        let identities = spec.identity.iter().flat_map(|r| &r.allowed);
        let defaults = spec.defaults.iter().filter_map(|d| d.identity.as_ref());
        for mode in identities.chain(defaults) {
            if IdentityMode::parse(mode).is_none() {
                return Err(format!(
                    "KeywirePolicy {name}: identity {mode:?} is not one of workload, service-principal, managed-identity, pod-identity"
                ));
            }
        }
        Ok(Policy { name, spec })
    }

    pub fn is_policy(object: &Value) -> bool {
        object.get("kind").and_then(Value::as_str) == Some(KIND)
            && object.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
    }
}

/// Policies selecting a namespace, sorted by name.
pub fn selecting<'a>(
    policies: &'a [Policy],
    namespace_labels: &BTreeMap<String, String>,
) -> Vec<&'a Policy> {
    let mut out: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.spec.namespace_selector.matches(namespace_labels))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Defaults from the selecting policies: per field, the first policy (by name) that sets it.
pub fn defaults(selecting: &[&Policy]) -> Defaults {
    let mut d = Defaults::default();
    for p in selecting {
        if let Some(pd) = &p.spec.defaults {
            d.tenant_id = d.tenant_id.take().or_else(|| pd.tenant_id.clone());
            d.authority_host = d
                .authority_host
                .take()
                .or_else(|| pd.authority_host.clone());
            d.mount_path = d.mount_path.take().or_else(|| pd.mount_path.clone());
            d.identity = d.identity.take().or_else(|| pd.identity.clone());
        }
    }
    d
}

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

/// Shell-style glob with `*` and `?`, case-insensitive (Key Vault names are).
pub fn glob(pattern: &str, value: &str) -> bool {
    fn go(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], v) || (!v.is_empty() && go(p, &v[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), value.as_bytes())
}

fn annotation(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What a pod asks for and will get: the input of the rules.
pub struct Subject<'a> {
    pub view: &'a PodView,
    /// The pod as it will be stored (after keywire's patch).
    pub pod: &'a Value,
    pub plan: Option<&'a Plan>,
    pub azure: Option<&'a AzurePlan>,
}

impl Subject<'_> {
    fn identity(&self) -> Option<IdentityMode> {
        match (self.plan, self.azure) {
            (Some(p), _) => Some(p.identity.mode()),
            (None, Some(_)) => Some(IdentityMode::Workload),
            _ => None,
        }
    }

    fn tenant(&self) -> Option<&str> {
        if let Some(p) = self.plan {
            if let Identity::Workload { tenant_id, .. } = &p.identity {
                return Some(tenant_id);
            }
            return p.inline.as_ref().map(|i| i.tenant_id.as_str());
        }
        self.azure.and_then(|a| a.tenant_id.as_deref())
    }

    fn token_expiration(&self) -> Option<i64> {
        match (self.plan, self.azure) {
            (
                Some(Plan {
                    identity:
                        Identity::Workload {
                            token_expiration, ..
                        },
                    ..
                }),
                _,
            ) => Some(*token_expiration),
            (_, Some(a)) => Some(a.token_expiration),
            _ => None,
        }
    }
}

/// Evaluates every rule of every selecting policy.
pub fn evaluate(selecting: &[&Policy], subject: &Subject<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for policy in selecting {
        evaluate_one(policy, subject, &mut out);
    }
    out
}

fn evaluate_one(policy: &Policy, s: &Subject<'_>, out: &mut Vec<Violation>) {
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

    if let (Some(rule), Some(mode)) = (&spec.identity, s.identity())
        && !rule.allowed.iter().any(|a| a == mode.as_str())
    {
        push(
            "identity",
            rule.enforcement,
            annotation(annotations::IDENTITY),
            format!(
                "identity {mode} is not allowed; allowed: {}",
                rule.allowed.join(", ")
            ),
        );
    }

    if let (Some(rule), Some(inline)) = (&spec.key_vaults, s.plan.and_then(|p| p.inline.as_ref()))
        && !rule.allowed.iter().any(|g| glob(g, &inline.keyvault))
    {
        push(
            "keyVaults",
            rule.enforcement,
            annotation(annotations::KEYVAULT),
            format!(
                "key vault {} is not allowed; allowed: {}",
                inline.keyvault,
                rule.allowed.join(", ")
            ),
        );
    }

    if let (Some(rule), Some(tenant)) = (&spec.tenants, s.tenant())
        && !rule.allowed.iter().any(|g| glob(g, tenant))
    {
        push(
            "tenants",
            rule.enforcement,
            annotation(annotations::TENANT_ID),
            format!(
                "tenant {tenant} is not allowed; allowed: {}",
                rule.allowed.join(", ")
            ),
        );
    }

    if let (Some(rule), Some(plan)) = (&spec.secret_provider_classes, s.plan) {
        match &plan.inline {
            None if !rule.allowed.iter().any(|g| glob(g, &plan.class_name)) => push(
                "secretProviderClasses",
                rule.enforcement,
                annotation(annotations::SECRET_PROVIDER_CLASS),
                format!(
                    "SecretProviderClass {} is not allowed; allowed: {}",
                    plan.class_name,
                    if rule.allowed.is_empty() {
                        "none".to_string()
                    } else {
                        rule.allowed.join(", ")
                    }
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

    if let (Some(rule), Some(seconds)) = (&spec.token_expiration, s.token_expiration()) {
        let (min, max) = (
            rule.min.unwrap_or(annotations::MIN_TOKEN_EXPIRATION),
            rule.max.unwrap_or(annotations::MAX_TOKEN_EXPIRATION),
        );
        if !(min..=max).contains(&seconds) {
            push(
                "tokenExpiration",
                rule.enforcement,
                annotation(annotations::TOKEN_EXPIRATION),
                format!("token expiration {seconds}s is outside {min}..{max}s"),
            );
        }
    }

    if let Some(rule) = &spec.forbid_unmanaged_secret_store_volumes
        && rule.enabled
    {
        let service_principal_allowed = spec.identity.as_ref().is_none_or(|r| {
            r.allowed
                .iter()
                .any(|a| a == IdentityMode::ServicePrincipal.as_str())
        });
        let volumes = s.pod.pointer("/spec/volumes").and_then(Value::as_array);
        for (i, v) in volumes.into_iter().flatten().enumerate() {
            let Some(csi) = v
                .get("csi")
                .filter(|c| c.get("driver").and_then(Value::as_str) == Some(plan::CSI_DRIVER))
            else {
                continue;
            };
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            if name != plan::CSI_VOLUME {
                push(
                    "forbidUnmanagedSecretStoreVolumes",
                    rule.enforcement,
                    format!("spec.volumes[{i}]"),
                    format!(
                        "volume {name} uses {} directly; use keywire annotations instead",
                        plan::CSI_DRIVER
                    ),
                );
                continue;
            }
            let extra: Vec<&String> = csi
                .get("volumeAttributes")
                .and_then(Value::as_object)
                .map(|m| m.keys().filter(|k| *k != "secretProviderClass").collect())
                .unwrap_or_default();
            if !extra.is_empty() {
                push(
                    "forbidUnmanagedSecretStoreVolumes",
                    rule.enforcement,
                    format!("spec.volumes[{i}].csi.volumeAttributes"),
                    format!(
                        "volumeAttributes {} override the SecretProviderClass; only secretProviderClass is allowed",
                        extra
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if csi.get("nodePublishSecretRef").is_some() && !service_principal_allowed {
                push(
                    "forbidUnmanagedSecretStoreVolumes",
                    rule.enforcement,
                    format!("spec.volumes[{i}].csi.nodePublishSecretRef"),
                    "nodePublishSecretRef is not allowed: the policy does not allow service-principal".to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
