//! Test fixtures: the one place a test pod, ServiceAccount, policy or AdmissionReview is written.
//!
//! Unit tests, integration tests, benches, the load generator and the e2e suite all build their
//! inputs here (compiled for `cfg(test)` and the `fixtures` feature only).

use serde_json::{Value, json};

use crate::core::annotations;
use crate::core::lookup::{ClusterState, NamespaceInfo, ServiceAccountInfo};

/// The workload identity every fixture ServiceAccount carries.
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const TENANT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// A second client id, for "the pod's annotation wins" cases.
pub const OTHER_CLIENT_ID: &str = "99999999-2222-3333-4444-555555555555";
/// The namespace most fixtures live in.
pub const NAMESPACE: &str = "prod";

/// A pod under construction. `build` gives the JSON the API server would receive.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    pod: Value,
}

/// A pod named `name` with one container `app` (busybox) and no labels or annotations.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }),
    }
}

impl PodBuilder {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.pod["metadata"]["namespace"] = json!(namespace);
        self
    }

    /// `metadata.generateName` instead of `metadata.name`, as a ReplicaSet's pods have.
    pub fn generate_name(mut self, prefix: &str) -> Self {
        if let Some(meta) = self.pod["metadata"].as_object_mut() {
            meta.remove("name");
            meta.insert("generateName".into(), json!(prefix));
        }
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Replaces every label (`json!({})` for none).
    pub fn labels(mut self, labels: Value) -> Self {
        self.pod["metadata"]["labels"] = labels;
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Merges a JSON object of annotations into the pod's (`json!({})` gives an empty map).
    pub fn annotations(mut self, annotations: Value) -> Self {
        if let Value::Object(map) = annotations {
            if !self.pod["metadata"]["annotations"].is_object() {
                self.pod["metadata"]["annotations"] = json!({});
            }
            for (k, v) in map {
                self.pod["metadata"]["annotations"][k.as_str()] = v;
            }
        }
        self
    }

    /// The opt-in label `keywire.dev/inject: "true"`.
    pub fn opted_in(self) -> Self {
        self.label(annotations::INJECT_LABEL, "true")
    }

    /// The Azure Workload Identity webhook's label `azure.workload.identity/use: "true"`.
    pub fn azure_workload_identity(self) -> Self {
        self.label(annotations::azure::USE_LABEL, "true")
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.pod["spec"]["serviceAccountName"] = json!(name);
        self
    }

    /// Replaces the whole spec.
    pub fn spec(mut self, spec: Value) -> Self {
        self.pod["spec"] = spec;
        self
    }

    /// Replaces the containers with these.
    pub fn containers(mut self, containers: Vec<Value>) -> Self {
        self.pod["spec"]["containers"] = Value::Array(containers);
        self
    }

    /// Replaces the containers with `n` realistic ones (`container(i)`).
    pub fn realistic_containers(self, n: usize) -> Self {
        self.containers((0..n).map(container).collect())
    }

    pub fn init_containers(mut self, containers: Vec<Value>) -> Self {
        self.pod["spec"]["initContainers"] = Value::Array(containers);
        self
    }

    pub fn volumes(mut self, volumes: Vec<Value>) -> Self {
        self.pod["spec"]["volumes"] = Value::Array(volumes);
        self
    }

    pub fn build(self) -> Value {
        self.pod
    }
}

/// A container with the fields a real one carries: image, port, env, resources, a mount.
pub fn container(i: usize) -> Value {
    json!({
        "name": format!("app-{i}"),
        "image": format!("registry.example.com/team/app-{i}:1.2.3"),
        "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
    })
}

/// A plain container named `name` (busybox).
pub fn simple_container(name: &str) -> Value {
    json!({"name": name, "image": "busybox"})
}

/// Pod `p` with exactly these labels, annotations and spec.
pub fn pod_with(labels: Value, annotations: Value, spec: Value) -> Value {
    pod("p")
        .labels(labels)
        .annotations(annotations)
        .spec(spec)
        .build()
}

/// The spec most fixture pods have: ServiceAccount `app`, one container `app` (busybox).
pub fn app_spec() -> Value {
    json!({"serviceAccountName": "app", "containers": [simple_container("app")]})
}

/// A keywire pod named `p`: opted in, ServiceAccount `app`, one container, these annotations.
pub fn keywire_pod(annotations: Value) -> Value {
    pod("p")
        .opted_in()
        .annotations(annotations)
        .service_account("app")
        .build()
}

/// An opted-in pod mounting the existing SecretProviderClass `mine` with managed identity: the
/// smallest pod keywire mutates with no lookups. One container `c`.
pub fn managed_identity_pod(name: &str, service_account: &str) -> PodBuilder {
    pod(name)
        .opted_in()
        .annotation(annotations::SECRET_PROVIDER_CLASS, "mine")
        .annotation(annotations::IDENTITY, "managed-identity")
        .service_account(service_account)
        .containers(vec![simple_container("c")])
}

/// An Azure Workload Identity pod named `p` with these annotations and this spec.
pub fn azure_pod(annotations: Value, spec: Value) -> Value {
    pod("p")
        .azure_workload_identity()
        .annotations(annotations)
        .spec(spec)
        .build()
}

/// The payload of the benchmarks: a ReplicaSet's pod with inline Key Vault config, workload
/// identity from the ServiceAccount `app`, `keywire.dev/env`, and `containers` realistic containers.
pub fn replica_pod(containers: usize) -> Value {
    pod("unused")
        .generate_name("web-7d9f8c6b5-")
        .labels(
            json!({"app": "web", "pod-template-hash": "7d9f8c6b5", "keywire.dev/inject": "true"}),
        )
        .annotations(json!({
            "keywire.dev/keyvault": "kv-demo",
            "keywire.dev/objects": "secret/db-password, secret/api-key as api",
            "keywire.dev/env": "DB_PASSWORD=db-password"
        }))
        .service_account("app")
        .realistic_containers(containers)
        .volumes(vec![
            json!({"name": "config", "configMap": {"name": "web-config"}}),
        ])
        .build()
}

/// `replica_pod(1)` without keywire's label and annotations.
pub fn plain_replica_pod() -> Value {
    let mut p = replica_pod(1);
    p["metadata"]["labels"] = json!({"app": "web", "pod-template-hash": "7d9f8c6b5"});
    p["metadata"]["annotations"] = json!({});
    p
}

/// A ServiceAccount carrying `azure.workload.identity/client-id` and `tenant-id`.
pub fn workload_identity_sa(namespace: &str, name: &str, client_id: &str) -> ServiceAccountInfo {
    ServiceAccountInfo {
        namespace: namespace.into(),
        name: name.into(),
        annotations: [
            (
                annotations::azure::CLIENT_ID.to_string(),
                client_id.to_string(),
            ),
            (
                annotations::azure::TENANT_ID.to_string(),
                TENANT_ID.to_string(),
            ),
        ]
        .into(),
    }
}

/// A ServiceAccount with no annotations.
pub fn bare_sa(namespace: &str, name: &str) -> ServiceAccountInfo {
    ServiceAccountInfo {
        namespace: namespace.into(),
        name: name.into(),
        annotations: Default::default(),
    }
}

/// The cluster most tests see: in `namespace`, ServiceAccount `app` with the workload identity
/// and `bare` without; Namespaces `prod` (`env=prod`) and `dev` (`env=dev`).
pub fn cluster(namespace: &str) -> ClusterState {
    let mut s = ClusterState::new();
    s.add_service_account(workload_identity_sa(namespace, "app", CLIENT_ID));
    s.add_service_account(bare_sa(namespace, "bare"));
    for env in ["prod", "dev"] {
        s.add_namespace(NamespaceInfo {
            name: env.into(),
            labels: [("env".to_string(), env.to_string())].into(),
        });
    }
    s
}

/// `cluster(NAMESPACE)` plus these KeywirePolicy objects.
pub fn cluster_with_policies(policies: &[Value]) -> ClusterState {
    let mut s = cluster(NAMESPACE);
    for p in policies {
        s.insert_object(p).expect("fixture policy parses");
    }
    s
}

/// A KeywirePolicy object.
pub fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": crate::core::policy::API_VERSION, "kind": crate::core::policy::KIND,
        "metadata": {"name": name}, "spec": spec})
}

/// A ServiceAccount object, as `kubectl apply` would send it.
pub fn service_account_object(namespace: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations}})
}

/// An AdmissionReview request, as the API server sends it for `object` in `namespace`.
pub fn admission_review(uid: &str, namespace: &str, operation: &str, object: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let (group, version) = match object["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap_or("v1").to_string(),
        ),
    };
    let resource = format!("{}s", kind.to_ascii_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// `admission_review` for a pod CREATE, serialised.
pub fn pod_review_bytes(uid: &str, namespace: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&admission_review(uid, namespace, "CREATE", pod)).unwrap_or_default()
}
