//! The policy rules: every selecting `KeywirePolicy` judged against the pod keywire would store,
//! as pure functions that return `Violation`s.

use std::fmt;

use serde_json::Value;

use crate::core::annotations::{self, IdentityMode};
use crate::core::plan::{self, AzurePlan, Identity, Plan, PodView};
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
    pub plan: Option<&'a Plan>,
    pub azure: Option<&'a AzurePlan>,
}

/// One identity wiring the pod gets: keywire's own, or the Azure Workload Identity drop-in's.
/// A pod can have both; the rules judge each, naming the field that asked for it.
struct Grant<'a> {
    mode: IdentityMode,
    identity_field: String,
    tenant: Option<(&'a str, String)>,
    token_expiration: Option<(i64, String)>,
    /// How the token is used, for messages: the custom token endpoint's audience, the proxy.
    detail: String,
}

impl<'a> Subject<'a> {
    fn grants(&self) -> Vec<Grant<'a>> {
        let mut out = Vec::new();
        if let Some(p) = self.plan {
            let (tenant, expiration) = match &p.identity {
                Identity::Workload {
                    tenant_id,
                    token_expiration,
                    ..
                } => (Some(tenant_id.as_str()), Some(*token_expiration)),
                _ => (p.inline.as_ref().map(|i| i.tenant_id.as_str()), None),
            };
            out.push(Grant {
                mode: p.identity.mode(),
                identity_field: annotation(annotations::IDENTITY),
                tenant: tenant.map(|t| (t, annotation(annotations::TENANT_ID))),
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
                tenant: a.tenant_id.as_deref().map(|t| (t, service_account)),
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

    let grants = s.grants();
    if let Some(rule) = &spec.identity {
        for g in &grants {
            if !rule.allowed.iter().any(|a| a == g.mode.as_str()) {
                push(
                    "identity",
                    rule.enforcement,
                    g.identity_field.clone(),
                    format!(
                        "identity {}{} is not allowed; allowed: {}",
                        g.mode,
                        g.detail,
                        rule.allowed.join(", ")
                    ),
                );
            }
        }
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

    if let Some(rule) = &spec.tenants {
        for g in &grants {
            let Some((tenant, field)) = &g.tenant else {
                continue;
            };
            if !rule.allowed.iter().any(|a| glob(a, tenant)) {
                push(
                    "tenants",
                    rule.enforcement,
                    field.clone(),
                    format!(
                        "tenant {}{} is not allowed; allowed: {}",
                        if tenant.is_empty() { "(empty)" } else { tenant },
                        g.detail,
                        rule.allowed.join(", ")
                    ),
                );
            }
        }
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

    if let Some(rule) = &spec.token_expiration {
        let (min, max) = (
            rule.min.unwrap_or(annotations::MIN_TOKEN_EXPIRATION),
            rule.max.unwrap_or(annotations::MAX_TOKEN_EXPIRATION),
        );
        for g in &grants {
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
#[path = "rules_tests.rs"]
mod tests;
