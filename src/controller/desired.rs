//! The controller's desired state for one namespace, as a pure function: from the pods and pod
//! templates that use keywire (and what keywire already owns there) to the SecretProviderClasses
//! and synced Secrets that must exist, the consumers to tell why not, and what to collect.
//!
//! Every consumer is judged by `engine::judge`: the webhook's own parsing, resolution and policy
//! rules, applied to the object as it is now, so a config the namespace's KeywirePolicies forbid
//! is never materialised, whenever its annotations changed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::controller::content;
use crate::core::annotations::{self, KeyVaultObject};
use crate::core::engine;
use crate::core::lookup::Lookups;
use crate::core::plan::{Identity, InlineConfig, Settings};

/// Label on everything the controller creates; with the content-hash annotation it marks a Secret
/// as keywire's (anything without both is never adopted or overwritten).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "keywire";
/// Label naming the config (the SecretProviderClass) an owned object belongs to.
pub const CONFIG_LABEL: &str = "keywire.dev/config";
/// Annotation with the sha256 of an owned object's content; writes happen only when it changes.
pub const CONTENT_HASH: &str = "keywire.dev/content-hash";
/// Annotation set when an owned object lost its last consumer (Unix seconds); it is deleted once
/// the grace period has passed, and the annotation removed if a consumer returns.
pub const UNUSED_SINCE: &str = "keywire.dev/unused-since";
/// Pod-template annotation `kubectl rollout restart` sets; keywire stamps it on rotation.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// A pod or a workload's pod template that may use keywire.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The pod, or the pod template (`metadata` with labels and annotations, and `spec`).
    pub pod: Value,
    /// Other pods with exactly this content (one ReplicaSet's): judged once, counted each.
    pub duplicates: Vec<ConsumerRef>,
}

/// Names a consumer in Events and reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Consumer {
    pub fn reference(&self) -> ConsumerRef {
        ConsumerRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// This consumer and its duplicates.
    pub fn references(&self) -> impl Iterator<Item = ConsumerRef> + '_ {
        std::iter::once(self.reference()).chain(self.duplicates.iter().cloned())
    }

    fn wants_restart(&self) -> bool {
        self.kind != "Pod"
            && self
                .pod
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(annotations::RESTART_ON_ROTATION))
                .and_then(Value::as_str)
                == Some("true")
    }
}

impl std::fmt::Display for ConsumerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Which SecretProviderClass or Secret keywire owns in the namespace, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub name: String,
    pub content_hash: Option<String>,
    pub unused_since: Option<i64>,
}

/// The identity the controller reads Key Vault with: the pod's own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FetchIdentity {
    /// A TokenRequest for the ServiceAccount, exchanged at Entra for the client.
    Workload {
        tenant_id: String,
        client_id: String,
        service_account: String,
    },
    /// `clientid`/`clientsecret` of this Secret in the namespace.
    ServicePrincipal {
        tenant_id: String,
        credentials_secret: String,
    },
    /// The node's managed identity (IMDS), user-assigned when a client id is given.
    ManagedIdentity { client_id: Option<String> },
}

impl FetchIdentity {
    /// A stable key: the fan-in cache shares a read only between pods of the same identity.
    pub fn key(&self, namespace: &str) -> String {
        match self {
            FetchIdentity::Workload {
                tenant_id,
                client_id,
                service_account,
            } => format!("workload:{tenant_id}/{client_id}@{namespace}/{service_account}"),
            FetchIdentity::ServicePrincipal {
                tenant_id,
                credentials_secret,
            } => format!("service-principal:{tenant_id}@{namespace}/{credentials_secret}"),
            FetchIdentity::ManagedIdentity { client_id } => format!(
                "managed-identity:{}",
                client_id.as_deref().unwrap_or("system-assigned")
            ),
        }
    }
}

/// A SecretProviderClass keywire materialises for an inline config.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredClass {
    pub name: String,
    pub config: InlineConfig,
    pub identity: Identity,
    pub consumers: Vec<ConsumerRef>,
}

impl DesiredClass {
    /// The `parameters` of the Azure provider, one identity set.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = [
            ("keyvaultName", self.config.keyvault.clone()),
            ("tenantId", self.config.tenant_id.clone()),
            ("cloudName", self.config.cloud_name.clone()),
            ("objects", content::objects_parameter(&self.config.objects)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match &self.identity {
            Identity::Workload { client_id, .. } => {
                p.insert("clientID".into(), client_id.clone());
            }
            Identity::ManagedIdentity { client_id } => {
                p.insert("useVMManagedIdentity".into(), "true".into());
                p.insert(
                    "userAssignedIdentityID".into(),
                    client_id.clone().unwrap_or_default(),
                );
            }
            Identity::PodIdentity => {
                p.insert("usePodIdentity".into(), "true".into());
            }
            // The driver passes nodePublishSecretRef's credentials; the class names no identity.
            Identity::ServicePrincipal { .. } => {}
        }
        p
    }

    /// The object to server-side apply.
    pub fn object(&self, namespace: &str) -> Value {
        let parameters = self.parameters();
        let hash = content::content_hash(
            &parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect(),
        );
        json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, CONFIG_LABEL: self.name},
                "annotations": {CONTENT_HASH: hash},
            },
            "spec": {"provider": "azure", "parameters": parameters},
        })
    }
}

/// A Secret keywire fills from Key Vault for consumers that read objects through `env`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSecret {
    pub name: String,
    /// The SecretProviderClass the config is (its name, for Events and labels).
    pub class: String,
    pub keyvault: String,
    pub cloud_name: String,
    pub objects: Vec<KeyVaultObject>,
    pub identity: FetchIdentity,
    pub consumers: Vec<ConsumerRef>,
    /// Workloads that asked `keywire.dev/restart-on-rotation: "true"`.
    pub restart: Vec<ConsumerRef>,
}

/// A consumer keywire will not serve, and why (the webhook's own denial message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub consumer: ConsumerRef,
    pub reason: String,
}

/// What to do with an owned object no consumer wants, or wants again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// Record when it lost its last consumer.
    MarkUnused,
    /// A consumer came back: forget the mark.
    Unmark,
    /// Unused for the whole grace period.
    Delete,
}

/// A consumer's KeywirePolicy violations, for the namespace's policy report.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub consumer: ConsumerRef,
    pub violations: Vec<crate::core::rules::Violation>,
}

/// The whole desired state of a namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// Consumers some KeywirePolicy selects, and the violations of those that have any.
    pub audited: usize,
    pub findings: Vec<Finding>,
    pub classes: Vec<DesiredClass>,
    pub secrets: Vec<DesiredSecret>,
    pub rejected: Vec<Rejection>,
    /// (SecretProviderClass name, step) and (Secret name, step).
    pub collect_classes: Vec<(String, Collect)>,
    pub collect_secrets: Vec<(String, Collect)>,
    /// When the next collection step falls due (Unix seconds), if any is pending.
    pub next_collection: Option<i64>,
}

/// Everything `desired` reads.
pub struct Inputs<'a> {
    pub namespace: &'a str,
    pub consumers: &'a [Consumer],
    pub owned_classes: &'a [Owned],
    pub owned_secrets: &'a [Owned],
    pub lookups: &'a dyn Lookups,
    pub settings: &'a Settings,
    pub now: i64,
    pub grace_seconds: i64,
}

fn fetch_identity(identity: &Identity, config: &InlineConfig, sa: &str) -> Option<FetchIdentity> {
    Some(match identity {
        Identity::Workload {
            client_id,
            tenant_id,
            ..
        } => FetchIdentity::Workload {
            tenant_id: tenant_id.clone(),
            client_id: client_id.clone(),
            service_account: sa.to_string(),
        },
        Identity::ServicePrincipal { credentials_secret } => FetchIdentity::ServicePrincipal {
            tenant_id: config.tenant_id.clone(),
            credentials_secret: credentials_secret.clone(),
        },
        Identity::ManagedIdentity { client_id } => FetchIdentity::ManagedIdentity {
            client_id: client_id.clone(),
        },
        Identity::PodIdentity => return None,
    })
}

/// `consumer` and its duplicates are not served, for `reason`.
fn reject(rejected: &mut Vec<Rejection>, consumer: &Consumer, reason: String) {
    for c in consumer.references() {
        rejected.push(Rejection {
            consumer: c,
            reason: reason.clone(),
        });
    }
}

/// The desired state of one namespace.
pub fn desired(inputs: &Inputs<'_>) -> Desired {
    let mut consumers: Vec<&Consumer> = inputs.consumers.iter().collect();
    consumers.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));

    let mut classes: BTreeMap<String, DesiredClass> = BTreeMap::new();
    let mut secrets: BTreeMap<String, DesiredSecret> = BTreeMap::new();
    let mut rejected = Vec::new();
    let mut audited = 0;
    let mut findings = Vec::new();
    for consumer in consumers {
        if let Some(violations) = engine::audit(
            &consumer.pod,
            inputs.namespace,
            inputs.lookups,
            inputs.settings,
        ) {
            audited += 1;
            if !violations.is_empty() {
                findings.push(Finding {
                    consumer: consumer.reference(),
                    violations,
                });
            }
        }
        let labels = annotations::string_map(consumer.pod.get("metadata"), "labels");
        if !annotations::is_opted_in(&labels) {
            continue;
        }
        let reference = consumer.reference();
        let plan = match engine::judge(
            &consumer.pod,
            inputs.namespace,
            inputs.lookups,
            inputs.settings,
        ) {
            Ok(plan) => plan,
            Err(reason) => {
                reject(&mut rejected, consumer, reason);
                continue;
            }
        };
        let Some(config) = &plan.inline else {
            if plan.sync_secret.is_some() {
                reject(
                    &mut rejected,
                    consumer,
                    format!(
                        "SecretProviderClass {} is the team's own: keywire syncs Secrets only for configs it materialises ({} and {})",
                        plan.class_name,
                        annotations::KEYVAULT,
                        annotations::OBJECTS
                    ),
                );
            }
            continue;
        };
        classes
            .entry(plan.class_name.clone())
            .or_insert_with(|| DesiredClass {
                name: plan.class_name.clone(),
                config: config.clone(),
                identity: plan.identity.clone(),
                consumers: Vec::new(),
            })
            .consumers
            .extend(consumer.references());
        let Some(secret_name) = &plan.sync_secret else {
            continue;
        };
        let Some(identity) = fetch_identity(&plan.identity, config, &plan.service_account) else {
            reject(
                &mut rejected,
                consumer,
                format!(
                    "{}=pod-identity cannot be used to sync {secret_name}: AAD Pod Identity is retired; use workload",
                    annotations::IDENTITY
                ),
            );
            continue;
        };
        let entry = secrets
            .entry(secret_name.clone())
            .or_insert_with(|| DesiredSecret {
                name: secret_name.clone(),
                class: plan.class_name.clone(),
                keyvault: config.keyvault.clone(),
                cloud_name: config.cloud_name.clone(),
                objects: config.objects.clone(),
                identity,
                consumers: Vec::new(),
                restart: Vec::new(),
            });
        if entry.class != plan.class_name {
            // Two configs name one Secret with keywire.dev/sync-secret: the first (by kind and
            // name) keeps it.
            reject(
                &mut rejected,
                consumer,
                format!(
                    "{}={secret_name} is already the synced Secret of another config ({})",
                    annotations::SYNC_SECRET,
                    entry.class
                ),
            );
            continue;
        }
        entry.consumers.extend(consumer.references());
        if consumer.wants_restart() {
            entry.restart.push(reference);
        }
    }

    let mut out = Desired {
        audited,
        findings,
        classes: classes.into_values().collect(),
        secrets: secrets.into_values().collect(),
        rejected,
        ..Desired::default()
    };
    let wanted_classes: BTreeSet<&str> = out.classes.iter().map(|c| c.name.as_str()).collect();
    let wanted_secrets: BTreeSet<&str> = out.secrets.iter().map(|s| s.name.as_str()).collect();
    let mut next = None;
    let mut plan_collection =
        |owned: &[Owned], wanted: &BTreeSet<&str>| -> Vec<(String, Collect)> {
            let mut steps = Vec::new();
            for o in owned {
                let step = match (wanted.contains(o.name.as_str()), o.unused_since) {
                    (true, Some(_)) => Some(Collect::Unmark),
                    (true, None) => None,
                    (false, None) => {
                        let due = inputs.now + inputs.grace_seconds;
                        next = Some(next.map_or(due, |n: i64| n.min(due)));
                        Some(Collect::MarkUnused)
                    }
                    (false, Some(since)) if inputs.now - since >= inputs.grace_seconds => {
                        Some(Collect::Delete)
                    }
                    (false, Some(since)) => {
                        let due = since + inputs.grace_seconds;
                        next = Some(next.map_or(due, |n: i64| n.min(due)));
                        None
                    }
                };
                if let Some(step) = step {
                    steps.push((o.name.clone(), step));
                }
            }
            steps
        };
    out.collect_classes = plan_collection(inputs.owned_classes, &wanted_classes);
    out.collect_secrets = plan_collection(inputs.owned_secrets, &wanted_secrets);
    out.next_collection = next;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::annotations::ObjectType;
    use crate::fixtures::{self, CLIENT_ID, TENANT_ID, cluster, cluster_with_policies, policy};

    fn consumer(kind: &str, name: &str, pod: Value) -> Consumer {
        Consumer {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            pod,
            duplicates: Vec::new(),
        }
    }

    fn inline(extra: Value) -> Value {
        let mut a = json!({"keywire.dev/keyvault": "kv-orders",
            "keywire.dev/objects": "secret/db-password as db, cert/tls", "keywire.dev/env": "DB=db"});
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        fixtures::keywire_pod(a)
    }

    fn run(consumers: &[Consumer], lookups: &dyn Lookups) -> Desired {
        desired(&Inputs {
            namespace: fixtures::NAMESPACE,
            consumers,
            owned_classes: &[],
            owned_secrets: &[],
            lookups,
            settings: &Settings::default(),
            now: 1_000,
            grace_seconds: 300,
        })
    }

    #[test]
    fn one_class_and_one_secret_per_config_however_many_consumers() {
        let state = cluster(fixtures::NAMESPACE);
        let pods: Vec<Consumer> = (0..50)
            .map(|i| consumer("Pod", &format!("web-{i}"), inline(json!({}))))
            .chain([consumer("Deployment", "web", inline(json!({})))])
            .collect();
        let d = run(&pods, &state);
        assert_eq!(d.classes.len(), 1, "{:?}", d.rejected);
        assert_eq!(d.secrets.len(), 1);
        assert!(d.rejected.is_empty());
        let class = &d.classes[0];
        assert!(class.name.starts_with("keywire-kv-orders-"));
        assert_eq!(class.consumers.len(), 51);
        let secret = &d.secrets[0];
        assert_eq!(secret.name, class.name);
        assert_eq!(
            secret.identity,
            FetchIdentity::Workload {
                tenant_id: TENANT_ID.into(),
                client_id: CLIENT_ID.into(),
                service_account: "app".into()
            }
        );
        assert_eq!(
            secret
                .objects
                .iter()
                .map(|o| (o.object_type, o.file_name().to_string()))
                .collect::<Vec<_>>(),
            vec![
                (ObjectType::Secret, "db".to_string()),
                (ObjectType::Cert, "tls".to_string())
            ]
        );
    }

    #[test]
    fn duplicates_are_judged_once_and_counted_each() {
        let state = cluster(fixtures::NAMESPACE);
        let mut c = consumer("Pod", "web-0", inline(json!({})));
        c.duplicates = (1..50)
            .map(|i| consumer("Pod", &format!("web-{i}"), Value::Null).reference())
            .collect();
        let d = run(std::slice::from_ref(&c), &state);
        assert_eq!(d.classes[0].consumers.len(), 50);
        assert_eq!(d.secrets[0].consumers.len(), 50);
        let mut bad = consumer(
            "Pod",
            "bad-0",
            inline(json!({"keywire.dev/identity": "magic"})),
        );
        bad.duplicates = vec![consumer("Pod", "bad-1", Value::Null).reference()];
        let names: Vec<String> = run(&[bad], &state)
            .rejected
            .iter()
            .map(|r| r.consumer.name.clone())
            .collect();
        assert_eq!(names, vec!["bad-0", "bad-1"]);
    }

    #[test]
    fn the_class_holds_the_providers_parameters_and_one_identity() {
        let state = cluster(fixtures::NAMESPACE);
        let d = run(&[consumer("Pod", "p", inline(json!({})))], &state);
        let object = d.classes[0].object("prod");
        assert_eq!(object["spec"]["provider"], "azure");
        let p = &object["spec"]["parameters"];
        assert_eq!(p["keyvaultName"], "kv-orders");
        assert_eq!(p["tenantId"], TENANT_ID);
        assert_eq!(p["clientID"], CLIENT_ID);
        assert_eq!(p["cloudName"], "AzurePublicCloud");
        assert!(p.get("useVMManagedIdentity").is_none() && p.get("usePodIdentity").is_none());
        assert!(
            p["objects"]
                .as_str()
                .unwrap()
                .contains("objectName: db-password\n    objectType: secret")
        );
        assert_eq!(object["metadata"]["labels"][MANAGED_BY_LABEL], "keywire");
        assert_eq!(
            object["metadata"]["annotations"][CONTENT_HASH]
                .as_str()
                .unwrap()
                .len(),
            64
        );

        let mi = run(
            &[consumer(
                "Pod",
                "p",
                inline(
                    json!({"keywire.dev/identity": "managed-identity", "keywire.dev/client-id": CLIENT_ID}),
                ),
            )],
            &state,
        );
        let p = mi.classes[0].parameters();
        assert_eq!(p["useVMManagedIdentity"], "true");
        assert_eq!(p["userAssignedIdentityID"], CLIENT_ID);
        assert!(!p.contains_key("clientID"));
        let sp = run(
            &[consumer(
                "Pod",
                "p",
                inline(json!({"keywire.dev/identity": "service-principal"})),
            )],
            &state,
        );
        let p = sp.classes[0].parameters();
        assert!(!p.contains_key("clientID") && !p.contains_key("useVMManagedIdentity"));
        assert_eq!(
            sp.secrets[0].identity,
            FetchIdentity::ServicePrincipal {
                tenant_id: TENANT_ID.into(),
                credentials_secret: "secrets-store-creds".into()
            }
        );
    }

    #[test]
    fn without_env_there_is_a_class_but_no_secret() {
        let state = cluster(fixtures::NAMESPACE);
        let p = fixtures::keywire_pod(
            json!({"keywire.dev/keyvault": "kv-orders", "keywire.dev/objects": "secret/a"}),
        );
        let d = run(&[consumer("Pod", "p", p)], &state);
        assert_eq!((d.classes.len(), d.secrets.len()), (1, 0));
    }

    #[test]
    fn forbidden_and_broken_configs_are_rejected_with_the_webhooks_message() {
        let deny_vault = policy(
            "prod",
            json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}, "keyVaults": {"allowed": ["kv-prod-*"]}}),
        );
        let state = cluster_with_policies(&[deny_vault]);
        let d = run(
            &[
                consumer("Deployment", "bad", inline(json!({}))),
                consumer(
                    "Pod",
                    "typo",
                    inline(json!({"keywire.dev/identity": "magic"})),
                ),
                consumer(
                    "Pod",
                    "ok",
                    inline(json!({"keywire.dev/keyvault": "kv-prod-orders"})),
                ),
            ],
            &state,
        );
        assert_eq!(d.classes.len(), 1);
        assert!(d.classes[0].name.starts_with("keywire-kv-prod-orders-"));
        let reasons: Vec<(String, &str)> = d
            .rejected
            .iter()
            .map(|r| (r.consumer.to_string(), r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    "Deployment/bad".to_string(),
                    "KeywirePolicy prod rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-orders is not allowed; allowed: kv-prod-*"
                ),
                (
                    "Pod/typo".to_string(),
                    r#"annotation keywire.dev/identity="magic" is invalid: one of workload, service-principal, managed-identity, pod-identity"#
                ),
            ]
        );
    }

    #[test]
    fn every_consumer_in_a_selected_namespace_is_audited() {
        let audit = policy(
            "prod",
            json!({"namespaceSelector": {"matchLabels": {"env": "prod"}},
                "keyVaults": {"allowed": ["kv-prod-*"], "enforcement": "Audit"},
                "requireInjection": {"enforcement": "Warn"}}),
        );
        let state = cluster_with_policies(&[audit]);
        let d = run(
            &[
                consumer("Deployment", "audited", inline(json!({}))),
                consumer(
                    "Deployment",
                    "clean",
                    inline(json!({"keywire.dev/keyvault": "kv-prod-a"})),
                ),
                consumer("Deployment", "plain", fixtures::pod("x").build()),
            ],
            &state,
        );
        assert_eq!(d.audited, 3);
        let found: Vec<(String, Vec<&str>)> = d
            .findings
            .iter()
            .map(|f| {
                (
                    f.consumer.name.clone(),
                    f.violations.iter().map(|v| v.rule).collect(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("audited".to_string(), vec!["keyVaults"]),
                ("plain".to_string(), vec!["requireInjection"]),
            ]
        );
        // An Audit violation still materialises the config.
        assert_eq!(d.classes.len(), 2);
        // No policy for the namespace: nothing audited.
        assert_eq!(
            run(
                &[consumer("Pod", "p", inline(json!({})))],
                &cluster(fixtures::NAMESPACE)
            )
            .audited,
            0
        );
    }

    #[test]
    fn an_admitted_pod_whose_annotations_changed_is_judged_again() {
        let deny_vault = policy(
            "prod",
            json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}, "keyVaults": {"allowed": ["kv-prod-*"]}}),
        );
        let state = cluster_with_policies(&[deny_vault]);
        let mut pod = inline(json!({"keywire.dev/keyvault": "kv-prod-orders"}));
        let decision = engine::decide(&pod, fixtures::NAMESPACE, &state, &Settings::default());
        crate::core::patch::apply(&mut pod, decision.patch()).unwrap();
        assert_eq!(
            run(&[consumer("Pod", "p", pod.clone())], &state)
                .classes
                .len(),
            1
        );
        // Edited after admission: the webhook's wiring still points at the old class.
        pod["metadata"]["annotations"]["keywire.dev/keyvault"] = json!("kv-dev-orders");
        let d = run(&[consumer("Pod", "p", pod)], &state);
        assert!(d.classes.is_empty() && d.secrets.is_empty());
        assert_eq!(
            d.rejected[0].reason,
            "KeywirePolicy prod rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-orders is not allowed; allowed: kv-prod-*"
        );
    }

    #[test]
    fn pods_not_opted_in_and_existing_classes_materialise_nothing() {
        let state = cluster(fixtures::NAMESPACE);
        let plain = fixtures::pod("plain").build();
        let existing = fixtures::keywire_pod(
            json!({"keywire.dev/secret-provider-class": "team-spc", "keywire.dev/identity": "managed-identity"}),
        );
        let existing_env =
            fixtures::keywire_pod(json!({"keywire.dev/secret-provider-class": "team-spc",
            "keywire.dev/identity": "managed-identity", "keywire.dev/env": "A=a"}));
        let d = run(
            &[
                consumer("Pod", "plain", plain),
                consumer("Pod", "existing", existing),
                consumer("Pod", "existing-env", existing_env),
            ],
            &state,
        );
        assert!(d.classes.is_empty() && d.secrets.is_empty());
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].consumer.name, "existing-env");
    }

    #[test]
    fn restart_targets_are_the_workloads_that_ask() {
        let state = cluster(fixtures::NAMESPACE);
        let asks = inline(json!({"keywire.dev/restart-on-rotation": "true"}));
        let d = run(
            &[
                consumer("Deployment", "web", asks.clone()),
                consumer("Pod", "web-1", asks),
                consumer("StatefulSet", "db", inline(json!({}))),
            ],
            &state,
        );
        let restart: Vec<String> = d.secrets[0]
            .restart
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(restart, vec!["Deployment/web"]);
    }

    #[test]
    fn unused_owned_objects_are_marked_then_collected_after_the_grace_period() {
        let state = cluster(fixtures::NAMESPACE);
        let used = consumer("Pod", "p", inline(json!({})));
        let name = run(std::slice::from_ref(&used), &state).classes[0]
            .name
            .clone();
        let owned = |n: &str, since: Option<i64>| Owned {
            name: n.into(),
            content_hash: None,
            unused_since: since,
        };
        let at = |now: i64, consumers: &[Consumer], owned: &[Owned]| {
            desired(&Inputs {
                namespace: fixtures::NAMESPACE,
                consumers,
                owned_classes: owned,
                owned_secrets: owned,
                lookups: &state,
                settings: &Settings::default(),
                now,
                grace_seconds: 300,
            })
        };
        // Still used: nothing to collect; used again after a mark: unmark.
        let d = at(1_000, std::slice::from_ref(&used), &[owned(&name, None)]);
        assert!(d.collect_classes.is_empty() && d.next_collection.is_none());
        let d = at(
            1_000,
            std::slice::from_ref(&used),
            &[owned(&name, Some(900))],
        );
        assert_eq!(d.collect_classes, vec![(name.clone(), Collect::Unmark)]);
        // Unused: marked now, kept during the grace period, deleted once it has passed.
        let d = at(1_000, &[], &[owned(&name, None)]);
        assert_eq!(d.collect_classes, vec![(name.clone(), Collect::MarkUnused)]);
        assert_eq!(d.collect_secrets, vec![(name.clone(), Collect::MarkUnused)]);
        assert_eq!(d.next_collection, Some(1_300));
        let d = at(1_299, &[], &[owned(&name, Some(1_000))]);
        assert!(d.collect_classes.is_empty());
        assert_eq!(d.next_collection, Some(1_300));
        let d = at(1_300, &[], &[owned(&name, Some(1_000))]);
        assert_eq!(d.collect_classes, vec![(name.clone(), Collect::Delete)]);
    }

    #[test]
    fn identity_keys_separate_service_accounts() {
        let a = FetchIdentity::Workload {
            tenant_id: "t".into(),
            client_id: "c".into(),
            service_account: "a".into(),
        };
        let b = FetchIdentity::Workload {
            tenant_id: "t".into(),
            client_id: "c".into(),
            service_account: "b".into(),
        };
        assert_ne!(a.key("ns"), b.key("ns"));
        assert_ne!(a.key("ns"), a.key("other"));
        assert_eq!(a.key("ns"), "workload:t/c@ns/a");
    }
}
