//! The one trait through which the core sees the cluster, and `ClusterState`, its in-memory
//! implementation.
//!
//! The webhook backs `Lookups` with watch caches; `review` and `mutate` fill a `ClusterState`
//! from `--cluster-state FILE` and the manifests. The core never does I/O itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::core::annotations;
use crate::core::policy::Policy;

/// What the core needs of a ServiceAccount: it is stored stripped to this.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountInfo {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

/// What the core needs of a Namespace (policies select namespaces by label).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What policy needs of a SecretProviderClass: its provider and string parameters (the Key
/// Vault, tenant and identity a volume that names it will use).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretProviderClassInfo {
    pub namespace: String,
    pub name: String,
    pub provider: String,
    pub parameters: BTreeMap<String, String>,
}

impl SecretProviderClassInfo {
    pub const API_VERSION: &str = "secrets-store.csi.x-k8s.io/v1";
    pub const KIND: &str = "SecretProviderClass";

    /// From a SecretProviderClass object; `objects` and other non-string parameters are dropped.
    pub fn from_object(object: &Value, default_namespace: &str) -> Self {
        let meta = object.get("metadata");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        SecretProviderClassInfo {
            namespace: meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(default_namespace)
                .to_string(),
            name: text(meta.and_then(|m| m.get("name"))),
            provider: text(object.pointer("/spec/provider")),
            parameters: object
                .pointer("/spec/parameters")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() != "objects")
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

pub trait Lookups {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo>;
    fn namespace(&self, name: &str) -> Option<NamespaceInfo>;
    fn secret_provider_class(&self, namespace: &str, name: &str)
    -> Option<SecretProviderClassInfo>;
    /// Every KeywirePolicy in the cluster; the core selects by namespace.
    fn policies(&self) -> Arc<Vec<Policy>>;
}

/// Lookups served from a set of objects held in memory (`--cluster-state`, tests).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    service_accounts: HashMap<(String, String), ServiceAccountInfo>,
    namespaces: HashMap<String, NamespaceInfo>,
    classes: HashMap<(String, String), SecretProviderClassInfo>,
    policies: Arc<Vec<Policy>>,
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a Kubernetes object; kinds the core does not look up are ignored.
    /// Only a malformed KeywirePolicy is an error.
    pub fn insert_object(&mut self, object: &Value) -> Result<(), String> {
        self.insert_object_in(object, "default")
    }

    /// `insert_object`, with namespaced objects that name no namespace placed in `namespace`
    /// (as `kubectl apply -n NAMESPACE` would place them).
    pub fn insert_object_in(&mut self, object: &Value, namespace: &str) -> Result<(), String> {
        if Policy::is_policy(object) {
            let policy = Policy::from_object(object)?;
            let mut all: Vec<Policy> = self
                .policies
                .iter()
                .filter(|p| p.name != policy.name)
                .cloned()
                .collect();
            all.push(policy);
            self.policies = Arc::new(all);
            return Ok(());
        }
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let meta = object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind {
            "ServiceAccount" => {
                let namespace = meta
                    .and_then(|m| m.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or(namespace)
                    .to_string();
                self.add_service_account(ServiceAccountInfo {
                    namespace,
                    name,
                    annotations: annotations::string_map(meta, "annotations"),
                });
            }
            "Namespace" => {
                self.add_namespace(NamespaceInfo {
                    name,
                    labels: annotations::string_map(meta, "labels"),
                });
            }
            SecretProviderClassInfo::KIND
                if object.get("apiVersion").and_then(Value::as_str)
                    == Some(SecretProviderClassInfo::API_VERSION) =>
            {
                self.add_secret_provider_class(SecretProviderClassInfo::from_object(
                    object, namespace,
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub fn add_service_account(&mut self, sa: ServiceAccountInfo) {
        self.service_accounts
            .insert((sa.namespace.clone(), sa.name.clone()), sa);
    }

    pub fn add_namespace(&mut self, ns: NamespaceInfo) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    /// The names of the Namespaces it holds.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    pub fn add_secret_provider_class(&mut self, class: SecretProviderClassInfo) {
        self.classes
            .insert((class.namespace.clone(), class.name.clone()), class);
    }
}

impl Lookups for ClusterState {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo> {
        self.service_accounts
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.namespaces.get(name).cloned()
    }

    fn secret_provider_class(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<SecretProviderClassInfo> {
        self.classes
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn policies(&self) -> Arc<Vec<Policy>> {
        self.policies.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_name_namespace_and_annotations() {
        let mut state = ClusterState::new();
        state
            .insert_object(&json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "app", "namespace": "prod",
                    "annotations": {"azure.workload.identity/client-id": "c"},
                    "labels": {"x": "y"}},
                "secrets": [{"name": "token"}]
            }))
            .unwrap();
        state
            .insert_object(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}),
            )
            .unwrap();
        let sa = state.service_account("prod", "app").unwrap();
        assert_eq!(
            sa,
            ServiceAccountInfo {
                namespace: "prod".into(),
                name: "app".into(),
                annotations: [(
                    "azure.workload.identity/client-id".to_string(),
                    "c".to_string()
                )]
                .into()
            }
        );
        assert_eq!(state.service_account("other", "app"), None);
    }
}
