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

pub trait Lookups {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo>;
    fn namespace(&self, name: &str) -> Option<NamespaceInfo>;
    /// Every KeywirePolicy in the cluster; the core selects by namespace.
    fn policies(&self) -> Arc<Vec<Policy>>;
}

/// Lookups served from a set of objects held in memory (`--cluster-state`, tests).
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    service_accounts: HashMap<(String, String), ServiceAccountInfo>,
    namespaces: HashMap<String, NamespaceInfo>,
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
