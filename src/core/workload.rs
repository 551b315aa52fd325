//! Pods inside workloads: where each kind keeps its pod template, and running one object through
//! `engine::decide_at` with the patch moved under that template.

use serde_json::Value;

use crate::core::annotations;
use crate::core::engine::{self, Decision, Outcome};
use crate::core::lookup::Lookups;
use crate::core::patch;
use crate::core::plan::Settings;

/// Where the pod (template) sits inside an object of this kind, as a JSON pointer.
pub fn pod_pointer(object: &Value) -> Option<&'static str> {
    let api = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api, kind) {
        ("v1", "Pod") => Some(""),
        ("v1", "PodTemplate") => Some("/template"),
        ("v1", "ReplicationController") => Some("/spec/template"),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template")
        }
        ("batch/v1", "Job") => Some("/spec/template"),
        ("batch/v1", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Workload API versions the API server no longer serves, and what replaced them.
fn removed_api(object: &Value) -> Option<(&'static str, &'static str, &'static str)> {
    let api = object.get("apiVersion").and_then(Value::as_str)?;
    let kind = object.get("kind").and_then(Value::as_str)?;
    let (replacement, removed_in, pointer) = match (api, kind) {
        ("extensions/v1beta1", "Deployment" | "DaemonSet" | "ReplicaSet") => {
            ("apps/v1", "1.16", "/spec/template")
        }
        (
            "apps/v1beta1" | "apps/v1beta2",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet",
        ) => ("apps/v1", "1.16", "/spec/template"),
        ("batch/v1beta1" | "batch/v2alpha1", "CronJob") => {
            ("batch/v1", "1.25", "/spec/jobTemplate/spec/template")
        }
        _ => return None,
    };
    Some((replacement, removed_in, pointer))
}

/// One manifest after `keywire mutate`.
#[derive(Debug)]
pub struct Mutated {
    /// The object as it would be stored: patched, or as it came when nothing changed. Its kind,
    /// name and namespace are the original's (patches only touch the pod template).
    pub mutated: Value,
    /// `None` for objects that carry no pod template.
    pub decision: Option<Decision>,
}

impl Mutated {
    pub fn reference(&self) -> String {
        reference(&self.mutated)
    }
}

/// `Kind/name (namespace ns)`, as reports name an object.
pub fn reference(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let meta = object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("?");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind}/{name} (namespace {ns})"),
        None => format!("{kind}/{name}"),
    }
}

/// Runs one object through the engine, as the webhook would run the pods it creates. Only the
/// pod template is copied (the engine reads it, the patch is applied to it); the object itself
/// is moved through, so a caller that wants the object as it came (a diff) keeps its own copy.
pub fn mutate(
    mut object: Value,
    default_namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Mutated {
    let Some(pointer) = pod_pointer(&object) else {
        // The API server would refuse the object; say so rather than pass it over in silence.
        let decision = removed_api(&object).map(|(replacement, removed_in, pointer)| {
            let api = object["apiVersion"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let labels =
                annotations::string_map(object.pointer(&format!("{pointer}/metadata")), "labels");
            let asks = annotations::is_opted_in(&labels)
                || annotations::uses_azure_workload_identity(&labels);
            let message = format!(
                "{kind} {api} is not served since Kubernetes {removed_in}; use {replacement}"
            );
            if asks {
                Decision::new(
                    Outcome::Denied(format!(
                        "{message} (keywire cannot wire what the API server refuses)"
                    )),
                    Vec::new(),
                )
            } else {
                Decision::new(Outcome::Unchanged, vec![message])
            }
        });
        return Mutated {
            mutated: object,
            decision,
        };
    };
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(default_namespace);
    let mut pod = object.pointer(pointer).cloned().unwrap_or(Value::Null);
    // A template's pods are named after their workload (`<name>-...`): that is what the v1.6
    // token volume's name is hashed from, as for a pod created with that generateName. The
    // webhook keeps whichever reserved token volume a pod arrives with.
    let mut named = false;
    if !pointer.is_empty()
        && let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut)
        && !meta.contains_key("name")
        && !meta.contains_key("generateName")
        && let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
    {
        meta.insert("generateName".into(), Value::String(format!("{name}-")));
        named = true;
    }
    let field_prefix = pointer.trim_start_matches('/').replace('/', ".");
    let mut decision = engine::decide_at(&pod, &field_prefix, namespace, lookups, settings);
    if let Outcome::Patch(ops) = &decision.outcome {
        // The patch goes onto the template copy, which then replaces the template: on an error
        // the object is left as it came, never half-patched.
        if named && let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            // Inserted last, so removing it leaves the keys in their order.
            meta.shift_remove("generateName");
        }
        match patch::apply(&mut pod, ops) {
            // keywire only emits adds against paths it just read, so an error is a bug, not
            // bad input.
            Ok(()) => match object.pointer_mut(pointer) {
                Some(template) => *template = pod,
                None => {
                    decision.outcome = Outcome::Denied(format!(
                        "internal error applying patch: no pod template at {pointer}"
                    ))
                }
            },
            Err(e) => {
                decision.outcome = Outcome::Denied(format!("internal error applying patch: {e}"));
            }
        }
    }
    Mutated {
        mutated: object,
        decision: Some(decision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lookup::ClusterState;
    use serde_json::json;

    #[test]
    fn every_workload_kind_has_its_template_found() {
        let cases = [
            ("v1", "Pod", Some("")),
            ("apps/v1", "Deployment", Some("/spec/template")),
            ("apps/v1", "StatefulSet", Some("/spec/template")),
            ("apps/v1", "DaemonSet", Some("/spec/template")),
            ("apps/v1", "ReplicaSet", Some("/spec/template")),
            ("batch/v1", "Job", Some("/spec/template")),
            (
                "batch/v1",
                "CronJob",
                Some("/spec/jobTemplate/spec/template"),
            ),
            ("v1", "ConfigMap", None),
        ];
        for (api, kind, want) in cases {
            assert_eq!(
                pod_pointer(&json!({"apiVersion": api, "kind": kind})),
                want,
                "{kind}"
            );
        }
    }

    #[test]
    fn cronjob_template_is_patched_in_place() {
        let cronjob = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "jobs"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"keywire.dev/inject": "true"}, "annotations": {
                    "keywire.dev/secret-provider-class": "spc", "keywire.dev/identity": "managed-identity"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "job"}]}}}}}
        });
        let m = mutate(
            cronjob.clone(),
            "default",
            &ClusterState::new(),
            &Settings::default(),
        );
        assert_eq!(m.decision.as_ref().unwrap().outcome_label(), "patched");
        let tpl = &m.mutated["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(
            tpl["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"],
            "spc"
        );
        assert_eq!(
            tpl["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/mnt/secrets-store"
        );
        assert_eq!(
            tpl["metadata"]["annotations"]["keywire.dev/status"],
            "injected"
        );
        assert_eq!(m.mutated["spec"]["schedule"], "* * * * *");
    }

    #[test]
    fn removed_workload_apis_are_named_not_skipped() {
        let deployment = |labels: Value| {
            json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "a"}]}}}})
        };
        let m = mutate(
            deployment(json!({"keywire.dev/inject": "true"})),
            "default",
            &ClusterState::new(),
            &Settings::default(),
        );
        assert_eq!(
            m.decision.unwrap().outcome,
            Outcome::Denied("Deployment extensions/v1beta1 is not served since Kubernetes 1.16; use apps/v1 (keywire cannot wire what the API server refuses)".into())
        );
        let m = mutate(
            deployment(json!({})),
            "default",
            &ClusterState::new(),
            &Settings::default(),
        );
        let d = m.decision.unwrap();
        assert_eq!(d.outcome, Outcome::Unchanged);
        assert_eq!(
            d.warnings,
            vec![
                "Deployment extensions/v1beta1 is not served since Kubernetes 1.16; use apps/v1"
                    .to_string()
            ]
        );
        let cron = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {"azure.workload.identity/use": "true"}}}}}}});
        assert!(
            !mutate(cron, "default", &ClusterState::new(), &Settings::default())
                .decision
                .unwrap()
                .is_allowed()
        );
    }
}
