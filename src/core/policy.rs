//! The `KeywirePolicy` resource (keywire.dev/v1alpha1) as admins write it: its types, parsing,
//! namespace selection and defaults. The rules that judge a pod against it are in `rules`.
//!
//! Several policies may select one namespace. Each is evaluated on its own and every violation
//! counts, so the most restrictive policy wins rule by rule (an allow-list must admit the value
//! in every policy that has one; the tightest token bounds apply; any policy can forbid or
//! require). Defaults are taken per field from the first selecting policy by name.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::core::annotations::IdentityMode;

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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowRule {
    #[serde(default)]
    pub allowed: Vec<String>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassRule {
    #[serde(default)]
    pub allowed: Vec<String>,
    pub allow_inline: Option<bool>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundsRule {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToggleRule {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub enforcement: Option<Enforcement>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    #[serde(rename = "tenantID")]
    pub tenant_id: Option<String>,
    pub authority_host: Option<String>,
    pub mount_path: Option<String>,
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub enforcement: Enforcement,
    pub identity: Option<AllowRule>,
    pub key_vaults: Option<AllowRule>,
    pub tenants: Option<AllowRule>,
    pub client_ids: Option<AllowRule>,
    pub authority_hosts: Option<AllowRule>,
    pub secret_provider_classes: Option<ClassRule>,
    pub token_expiration: Option<BoundsRule>,
    pub forbid_unmanaged_secret_store_volumes: Option<ToggleRule>,
    pub require_injection: Option<ToggleRule>,
    pub forbid_proxy_sidecar: Option<ToggleRule>,
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
        // Unknown fields are errors naming their path, as `kubectl apply` with strict field
        // validation reports them: a misspelled rule must not pass as no rule.
        let spec = object.get("spec").unwrap_or(&Value::Null);
        let spec: PolicySpec = serde_path_to_error::deserialize(spec).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(".{path}")
            };
            format!("KeywirePolicy {name}: spec{at}: {}", e.into_inner())
        })?;
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

/// Shell-style glob with `*` and `?`, case-insensitive (Key Vault names are).
///
/// Greedy, remembering only the last `*`: at most (|pattern| + 1) x (|value| + 1) steps, never
/// the exponential backtracking of a recursive matcher, whatever an admin writes.
pub fn glob(pattern: &str, value: &str) -> bool {
    glob_steps(pattern.as_bytes(), value.as_bytes()).0
}

/// `glob`, and how many steps it took (tests hold it to the bound above).
fn glob_steps(p: &[u8], v: &[u8]) -> (bool, usize) {
    let (mut pi, mut vi, mut steps) = (0, 0, 0);
    // Where the last `*` was, and the value position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        steps += 1;
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(c) if *c == b'?' || c.eq_ignore_ascii_case(&v[vi]) => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte, and retry what follows it.
                Some((sp, sv)) => {
                    star = Some((sp, sv + 1));
                    pi = sp + 1;
                    vi = sv + 1;
                }
                None => return (false, steps),
            },
        }
    }
    while p.get(pi) == Some(&b'*') {
        pi += 1;
        steps += 1;
    }
    (pi == p.len(), steps)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::policy;

    #[test]
    fn label_selector_operators() {
        let labels: std::collections::BTreeMap<String, String> =
            [("env".to_string(), "prod".to_string())].into();
        let sel = |e: Value| -> LabelSelector {
            serde_json::from_value(json!({"matchExpressions": [e]})).unwrap()
        };
        assert!(sel(json!({"key": "env", "operator": "In", "values": ["prod"]})).matches(&labels));
        assert!(
            !sel(json!({"key": "env", "operator": "NotIn", "values": ["prod"]})).matches(&labels)
        );
        assert!(sel(json!({"key": "tier", "operator": "NotIn", "values": ["x"]})).matches(&labels));
        assert!(sel(json!({"key": "env", "operator": "Exists"})).matches(&labels));
        assert!(!sel(json!({"key": "env", "operator": "DoesNotExist"})).matches(&labels));
        assert!(!sel(json!({"key": "env", "operator": "Bogus"})).matches(&labels));
        assert!(LabelSelector::default().matches(&labels));
    }

    #[test]
    fn globs() {
        for (p, v, want) in [
            ("kv-*", "kv-a", true),
            ("kv-?", "kv-ab", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("kv-prod-*", "kv-dev-1", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("KV-*", "kv-prod", true),
            ("*-prod", "kv-prod-prod", true),
            ("*?", "", false),
            ("a*", "", false),
            ("**", "", true),
            ("*a*b", "aaab", true),
            ("*a*b", "aaaba", false),
        ] {
            assert_eq!(glob(p, v), want, "{p} {v}");
        }
    }

    #[test]
    fn globs_take_bounded_steps_whatever_the_pattern() {
        // The pattern that took a recursive matcher over 20 s: many stars, a long near-miss.
        let pattern = format!("{}b", "*a".repeat(60));
        let value = "a".repeat(4096);
        let (matched, steps) = glob_steps(pattern.as_bytes(), value.as_bytes());
        assert!(!matched);
        assert!(
            steps <= (pattern.len() + 1) * (value.len() + 1),
            "{steps} steps"
        );
        let (matched, _) = glob_steps(format!("{}a", "*a".repeat(60)).as_bytes(), value.as_bytes());
        assert!(matched);
    }

    #[test]
    fn first_policy_by_name_sets_each_default() {
        let a =
            Policy::from_object(&policy("a", json!({"defaults": {"mountPath": "/a"}}))).unwrap();
        let b = Policy::from_object(&policy(
            "b",
            json!({"defaults": {"mountPath": "/b", "tenantID": "t-b"}}),
        ))
        .unwrap();
        let d = defaults(&[&a, &b]);
        assert_eq!(d.mount_path.as_deref(), Some("/a"));
        assert_eq!(d.tenant_id.as_deref(), Some("t-b"));
    }

    #[test]
    fn malformed_policies_are_named() {
        let err = Policy::from_object(&policy("bad", json!({"identity": {"allowed": ["magic"]}})))
            .unwrap_err();
        assert_eq!(
            err,
            r#"KeywirePolicy bad: identity "magic" is not one of workload, service-principal, managed-identity, pod-identity"#
        );
        let err =
            Policy::from_object(&policy("bad", json!({"enforcement": "Sometimes"}))).unwrap_err();
        assert!(
            err.starts_with("KeywirePolicy bad: spec.enforcement: unknown variant `Sometimes`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_errors_naming_the_field() {
        for (spec, want) in [
            (
                json!({"keyVault": {"allowed": ["kv-*"]}}),
                "KeywirePolicy typo: spec.keyVault: unknown field `keyVault`, expected one of",
            ),
            (
                json!({"keyVaults": {"allow": ["kv-*"]}}),
                "KeywirePolicy typo: spec.keyVaults.allow: unknown field `allow`, expected `allowed` or `enforcement`",
            ),
            (
                json!({"namespaceSelector": {"matchLabel": {"env": "prod"}}}),
                "KeywirePolicy typo: spec.namespaceSelector.matchLabel: unknown field `matchLabel`",
            ),
            (
                json!({"defaults": {"tenantId": "t"}}),
                "KeywirePolicy typo: spec.defaults.tenantId: unknown field `tenantId`",
            ),
        ] {
            let err = Policy::from_object(&policy("typo", spec)).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
