//! Manifests for `keywire mutate`: reading multi-document YAML/JSON, finding pod templates,
//! and running each through the same `engine::decide` the webhook uses.

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{self, Decision, Outcome};
use crate::lookup::Lookups;
use crate::patch;
use crate::plan::Settings;

/// Parses multi-document YAML or JSON, flattening `List`s. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        flatten(value, i + 1, &mut out)?;
    }
    Ok(out)
}

fn flatten(value: Value, doc: usize, out: &mut Vec<Value>) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map) => {
            let is_list = map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array);
            if is_list {
                if let Some(Value::Array(items)) = value.get("items").cloned() {
                    for item in items {
                        flatten(item, doc, out)?;
                    }
                }
                return Ok(());
            }
            if !map.contains_key("kind") {
                return Err(format!("document {doc}: not a Kubernetes object (no kind)"));
            }
            out.push(value);
            Ok(())
        }
        _ => Err(format!("document {doc}: not a Kubernetes object")),
    }
}

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

/// One manifest after `keywire mutate`.
#[derive(Debug)]
pub struct Mutated {
    pub original: Value,
    pub mutated: Value,
    /// `None` for objects that carry no pod template.
    pub decision: Option<Decision>,
}

impl Mutated {
    pub fn reference(&self) -> String {
        let kind = self
            .original
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let meta = self.original.get("metadata");
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
}

/// Runs one object through the engine, as the webhook would run the pods it creates.
pub fn mutate(
    object: &Value,
    default_namespace: &str,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Mutated {
    let Some(pointer) = pod_pointer(object) else {
        return Mutated {
            original: object.clone(),
            mutated: object.clone(),
            decision: None,
        };
    };
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(default_namespace);
    let pod = object.pointer(pointer).cloned().unwrap_or(Value::Null);
    let field_prefix = pointer.trim_start_matches('/').replace('/', ".");
    let mut decision = engine::decide_at(&pod, &field_prefix, namespace, lookups, settings);
    let mut mutated = object.clone();
    if let Outcome::Patch(ops) = &decision.outcome {
        let ops: Vec<_> = ops.iter().cloned().map(|op| op.under(pointer)).collect();
        if let Err(e) = patch::apply(&mut mutated, &ops) {
            // keywire only emits adds against paths it just read, so this is a bug, not bad input.
            decision.outcome = Outcome::Denied(format!("internal error applying patch: {e}"));
            mutated = object.clone();
        }
    }
    Mutated {
        original: object.clone(),
        mutated,
        decision: Some(decision),
    }
}

pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A `List` of the objects, with keywire's verdicts beside them under `report`.
pub fn to_json(
    objects: &[Value],
    results: &[crate::report::ObjectResult],
) -> Result<String, String> {
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
        "report": {"results": results},
    });
    serde_json::to_string_pretty(&value)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// A unified diff of one object's YAML before and after.
pub fn diff(m: &Mutated) -> String {
    let before = serde_yaml::to_string(&m.original).unwrap_or_default();
    let after = serde_yaml::to_string(&m.mutated).unwrap_or_default();
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("a/{}", m.reference()),
            &format!("b/{}", m.reference()),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::ClusterState;
    use serde_json::json;

    #[test]
    fn documents_lists_and_json_are_flattened() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: a}
---
---
{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}}]}
"#;
        let docs = parse_documents(text).unwrap();
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(
            parse_documents("- 1\n- 2\n").unwrap_err(),
            "document 1: not a Kubernetes object"
        );
        assert!(
            parse_documents("a: [\n")
                .unwrap_err()
                .starts_with("document 1:")
        );
        assert_eq!(
            parse_documents("metadata: {}\n").unwrap_err(),
            "document 1: not a Kubernetes object (no kind)"
        );
    }

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
            &cronjob,
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
}
