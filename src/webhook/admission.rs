//! AdmissionReview v1 in, AdmissionReview v1 out: the envelope around `engine::decide`.
//!
//! Own serde types instead of kube's: kube-rs 5 serialises `patch` as a number array
//! (kube-rs #1781); the API documents a base64 string.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::core::echo;
use crate::core::engine::{self, Decision, Outcome};
use crate::core::lookup::Lookups;
use crate::core::plan::Settings;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not an AdmissionReview: {0}")]
    NotReview(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}; expected admission.k8s.io/v1")]
    Version(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before an UPDATE.
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

/// The request as it arrives: the objects stay raw until we know how much of them to read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    code: u16,
    message: String,
    reason: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut,
}

/// A parsed request and what was decided, for the caller's logs and metrics.
#[derive(Debug)]
pub struct Reviewed {
    pub request: AdmissionRequest,
    pub decision: Decision,
    /// The AdmissionReview response, serialised.
    pub body: Vec<u8>,
}

/// Parses a request with its objects whole.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    parse_as(body, false)
}

/// Parses a request for `lookups`: with no KeywirePolicy to judge the whole pod, a pod is read
/// only as far as the decision needs (see [`Shape`]), which keeps a wide pod cheap.
pub fn parse_for(body: &[u8], lookups: &dyn Lookups) -> Result<AdmissionRequest, ReviewError> {
    parse_as(body, lookups.policies().is_empty())
}

fn parse_as(body: &[u8], prune: bool) -> Result<AdmissionRequest, ReviewError> {
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ReviewError::NotReview(e.to_string()),
        _ => ReviewError::NotJson(e.to_string()),
    };
    let review: ReviewIn = serde_json::from_slice(body).map_err(classify)?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::Version(format!(
            "{}/{}",
            review.api_version, review.kind
        )));
    }
    let r = review.request.ok_or(ReviewError::NoRequest)?;
    let shape = if prune && r.kind.group.is_empty() && r.kind.kind == "Pod" {
        Shape::Pod
    } else {
        Shape::All
    };
    let read = |raw: Option<&RawValue>| -> Result<Option<Value>, ReviewError> {
        raw.map(|raw| {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            shape.deserialize(&mut de).map_err(classify)
        })
        .transpose()
    };
    Ok(AdmissionRequest {
        object: read(r.object)?,
        old_object: read(r.old_object)?,
        uid: r.uid,
        kind: r.kind,
        sub_resource: r.sub_resource,
        name: r.name,
        namespace: r.namespace,
        operation: r.operation,
        dry_run: r.dry_run,
    })
}

/// How much of a pod to read. Without policies the decision reads metadata, the spec's own
/// fields and volumes, and of each container only its name, mounts and env: the rest of a
/// container (image, ports, probes, resources...) is skipped without building a tree.
#[derive(Debug, Clone, Copy)]
enum Shape {
    All,
    Pod,
    Spec,
    Containers,
    Container,
}

impl Shape {
    /// The shape of a map's field, `None` to skip it.
    fn field(self, key: &str) -> Option<Shape> {
        match (self, key) {
            (Shape::Pod, "spec") => Some(Shape::Spec),
            (Shape::Spec, "containers" | "initContainers") => Some(Shape::Containers),
            (Shape::Container, "name" | "env" | "volumeMounts") => Some(Shape::All),
            (Shape::Container, _) => None,
            _ => Some(Shape::All),
        }
    }

    fn element(self) -> Shape {
        match self {
            Shape::Containers => Shape::Container,
            _ => Shape::All,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self {
            Shape::All => Value::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(self.element())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.field(&key) {
                Some(shape) => {
                    let v = map.next_value_seed(shape)?;
                    out.insert(key, v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Workload kinds whose pod templates the validating webhook judges.
fn is_workload(kind: &GroupVersionKind) -> bool {
    matches!(
        (kind.group.as_str(), kind.kind.as_str()),
        (
            "apps",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        ) | ("batch", "Job" | "CronJob")
            | ("", "ReplicationController")
    )
}

/// The validating webhook's verdict: the same engine and policies, never a patch.
/// Pods (CREATE, and the ephemeralcontainers subresource) and workload templates (CREATE/UPDATE).
pub fn validate(
    request: &AdmissionRequest,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Decision {
    let namespace = request.namespace.as_deref().unwrap_or("default");
    let sub = request.sub_resource.as_deref().unwrap_or_default();
    let pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let mut decision = match &request.object {
        Some(object) if pod && request.operation == "CREATE" && sub.is_empty() => {
            engine::decide(object, namespace, lookups, settings)
        }
        Some(object) if pod && request.operation == "UPDATE" && sub == "ephemeralcontainers" => {
            engine::decide(object, namespace, lookups, settings)
        }
        // Annotations and labels stay mutable after creation: a change to what keywire or the
        // drop-in reads is judged like a new pod would be (the controller acts on it).
        Some(object)
            if pod
                && request.operation == "UPDATE"
                && sub.is_empty()
                && contract_changed(request.old_object.as_ref(), object) =>
        {
            engine::judge_as_is(object, namespace, lookups, settings)
        }
        Some(object)
            if is_workload(&request.kind)
                && matches!(request.operation.as_str(), "CREATE" | "UPDATE")
                && sub.is_empty() =>
        {
            let mut object = object.clone();
            // The request's GVK is authoritative; the object may omit apiVersion/kind.
            if object.get("apiVersion").is_none() {
                let group = &request.kind.group;
                object["apiVersion"] = Value::String(if group.is_empty() {
                    request.kind.version.clone()
                } else {
                    format!("{group}/{}", request.kind.version)
                });
                object["kind"] = Value::String(request.kind.kind.clone());
            }
            crate::core::workload::mutate(object, namespace, lookups, settings)
                .decision
                .unwrap_or_else(unchanged)
        }
        _ => unchanged(),
    };
    if let Outcome::Patch(_) = decision.outcome {
        decision.outcome = Outcome::Unchanged;
    }
    decision
}

/// Whether an UPDATE changes a `keywire.dev/*` or `azure.workload.identity/*` label or
/// annotation (added, removed or edited).
fn contract_changed(old: Option<&Value>, new: &Value) -> bool {
    fn ours(object: Option<&Value>, field: &str) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = object
            .and_then(|o| o.pointer(&format!("/metadata/{field}")))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                k.starts_with("keywire.dev/") || k.starts_with("azure.workload.identity/")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
    ["labels", "annotations"]
        .iter()
        .any(|f| ours(old, f) != ours(Some(new), f))
}

fn unchanged() -> Decision {
    Decision::unchanged()
}

/// Only pod CREATE is mutated; everything else is allowed untouched.
fn in_scope(request: &AdmissionRequest) -> bool {
    request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == "CREATE"
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

pub fn decide(request: &AdmissionRequest, lookups: &dyn Lookups, settings: &Settings) -> Decision {
    match (&request.object, in_scope(request)) {
        (Some(pod), true) => engine::decide(
            pod,
            request.namespace.as_deref().unwrap_or("default"),
            lookups,
            settings,
        ),
        _ => unchanged(),
    }
}

pub fn respond(uid: &str, decision: &Decision) -> Vec<u8> {
    let (allowed, status, patch) = match &decision.outcome {
        Outcome::Unchanged => (true, None, None),
        Outcome::Patch(ops) => {
            // A wired container is a few hundred bytes of patch; size the buffer once.
            let mut json = Vec::with_capacity(64 + ops.len() * 160);
            let _ = serde_json::to_writer(&mut json, ops);
            // Base64 never needs escaping: the quoted text goes into the body as it is, not
            // through serde_json's per-byte string escaper.
            let mut quoted = String::with_capacity(json.len() * 4 / 3 + 8);
            quoted.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(&json, &mut quoted);
            quoted.push('"');
            (true, None, RawValue::from_string(quoted).ok())
        }
        Outcome::Denied(message) => (
            false,
            Some(Status {
                code: 403,
                message: echo::escape(message).into_owned(),
                reason: "Forbidden",
            }),
            None,
        ),
    };
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: uid.to_string(),
            allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: decision
                .warnings
                .iter()
                .map(|w| echo::escape(w).into_owned())
                .collect(),
            audit_annotations: decision.audit_annotations(),
        },
    };
    let mut body =
        Vec::with_capacity(256 + out.response.patch.as_ref().map_or(0, |p| p.get().len()));
    match serde_json::to_writer(&mut body, &out) {
        Ok(()) => body,
        Err(_) => Vec::new(),
    }
}

/// Which webhook a review is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn decide(
        self,
        request: &AdmissionRequest,
        lookups: &dyn Lookups,
        settings: &Settings,
    ) -> Decision {
        match self {
            Endpoint::Mutate => decide(request, lookups, settings),
            Endpoint::Validate => validate(request, lookups, settings),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// The whole front door: bytes in, bytes out. The webhook and `keywire review` both call this.
pub fn review(
    body: &[u8],
    endpoint: Endpoint,
    lookups: &dyn Lookups,
    settings: &Settings,
) -> Result<Reviewed, ReviewError> {
    let request = parse_for(body, lookups)?;
    let decision = endpoint.decide(&request, lookups, settings);
    let body = respond(&request.uid, &decision);
    Ok(Reviewed {
        request,
        decision,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lookup::ClusterState;
    use serde_json::json;

    /// Without policies a pod is read pruned (container names, mounts and env only): the
    /// decision, patch and response must be exactly those of the whole pod.
    #[test]
    fn a_pruned_pod_is_decided_exactly_like_the_whole_pod() {
        use crate::fixtures::{self, NAMESPACE};
        let state = fixtures::cluster(NAMESPACE);
        let settings = Settings::default();
        let mut clash = fixtures::replica_pod(2);
        clash["spec"]["containers"][1]["env"] =
            json!([{"name": "DB_PASSWORD", "value": "mine"}, {"name": "X", "value": "1"}]);
        clash["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "other", "mountPath": "/mnt/secrets-store"}]);
        let mut bare = fixtures::replica_pod(3);
        for c in bare["spec"]["containers"].as_array_mut().unwrap() {
            let c = c.as_object_mut().unwrap();
            c.remove("env");
            c.remove("volumeMounts");
        }
        let mut init = fixtures::replica_pod(1);
        init["spec"]["initContainers"] = json!([fixtures::container(7)]);
        init["metadata"]["annotations"]["keywire.dev/init-containers"] = json!("app-7");
        for pod in [
            fixtures::replica_pod(1),
            fixtures::replica_pod(20),
            fixtures::plain_replica_pod(),
            clash,
            bare,
            init,
        ] {
            let body = fixtures::pod_review_bytes("u", NAMESPACE, &pod);
            let whole = parse_as(&body, false).unwrap();
            let pruned = parse_as(&body, true).unwrap();
            assert_eq!(whole.object.as_ref(), Some(&pod));
            assert_ne!(
                pruned.object, whole.object,
                "the pruned pod drops container fields"
            );
            let (a, b) = (
                decide(&whole, &state, &settings),
                decide(&pruned, &state, &settings),
            );
            assert_eq!(a, b);
            assert_eq!(respond("u", &a), respond("u", &b));
            let via_review = review(&body, Endpoint::Mutate, &state, &settings).unwrap();
            assert_eq!(via_review.body, respond("u", &a));
        }
    }

    fn review_of(request: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}),
        )
        .unwrap()
    }

    fn pod() -> Value {
        json!({
            "metadata": {"labels": {"keywire.dev/inject": "true"},
                "annotations": {"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "service-principal"}},
            "spec": {"containers": [{"name": "app"}]}
        })
    }

    #[test]
    fn patch_is_a_base64_string_with_patch_type() {
        let body = review_of(
            json!({"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "ns", "object": pod()}),
        );
        let out = review(
            &body,
            Endpoint::Mutate,
            &ClusterState::new(),
            &Settings::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/volumes");
    }

    #[test]
    fn out_of_scope_requests_are_allowed_untouched() {
        for (kind, op, sub) in [
            ("Pod", "UPDATE", None),
            ("Pod", "CREATE", Some("ephemeralcontainers")),
            ("Deployment", "CREATE", None),
        ] {
            let body = review_of(
                json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": kind},
                "operation": op, "subResource": sub, "namespace": "ns", "object": pod()}),
            );
            let out = review(
                &body,
                Endpoint::Mutate,
                &ClusterState::new(),
                &Settings::default(),
            )
            .unwrap();
            let v: Value = serde_json::from_slice(&out.body).unwrap();
            assert_eq!(
                v,
                json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": "u", "allowed": true}}),
                "{kind} {op} {sub:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_response() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "body is not JSON"),
            (br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}"#, "unsupported AdmissionReview apiVersion"),
            (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#, "AdmissionReview has no request"),
            (br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 5}}"#, "body is not an AdmissionReview"),
        ];
        for (body, want) in cases {
            let err = review(
                body,
                Endpoint::Mutate,
                &ClusterState::new(),
                &Settings::default(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn denial_carries_the_message() {
        let mut p = pod();
        p["metadata"]["annotations"]["keywire.dev/identity"] = json!("magic");
        let body = review_of(
            json!({"uid": "u2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": "ns", "object": p}),
        );
        let out = review(
            &body,
            Endpoint::Mutate,
            &ClusterState::new(),
            &Settings::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(
            v["response"]["status"]["message"],
            r#"annotation keywire.dev/identity="magic" is invalid: one of workload, service-principal, managed-identity, pod-identity"#
        );
        assert!(v["response"].get("patch").is_none());
    }

    #[test]
    fn updates_that_change_keywire_metadata_are_judged() {
        let state = crate::fixtures::cluster_with_policies(&[crate::fixtures::policy(
            "prod",
            json!({"keyVaults": {"allowed": ["kv-prod-*"]}}),
        )]);
        let admitted = {
            let mut p = pod();
            p["metadata"]["annotations"] =
                json!({"keywire.dev/keyvault": "kv-prod-a", "keywire.dev/objects": "a"});
            p["spec"]["serviceAccountName"] = json!("app");
            p
        };
        let update = |old: &Value, new: &Value| {
            let body = review_of(
                json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "UPDATE", "namespace": "prod", "object": new, "oldObject": old}),
            );
            let out = review(&body, Endpoint::Validate, &state, &Settings::default()).unwrap();
            serde_json::from_slice::<Value>(&out.body).unwrap()["response"].clone()
        };
        // Pointing a running pod at another vault: the controller would follow it, so it is denied.
        let mut edited = admitted.clone();
        edited["metadata"]["annotations"]["keywire.dev/keyvault"] = json!("kv-dev-b");
        let response = update(&admitted, &edited);
        assert_eq!(response["allowed"], false);
        assert_eq!(
            response["status"]["message"],
            "KeywirePolicy prod rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-b is not allowed; allowed: kv-prod-*"
        );
        // Opting in a running pod is a change too.
        let mut plain = edited.clone();
        plain["metadata"]["labels"] = json!({});
        assert_eq!(update(&plain, &edited)["allowed"], false);
        // Other metadata changes are not keywire's to judge, even on a pod policy would refuse now.
        let mut relabelled = edited.clone();
        relabelled["metadata"]["labels"]["team"] = json!("a");
        assert_eq!(update(&edited, &relabelled)["allowed"], true);
        // The mutating webhook still only sees CREATE.
        let body = review_of(
            json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "UPDATE", "namespace": "prod", "object": edited, "oldObject": admitted}),
        );
        let out = review(&body, Endpoint::Mutate, &state, &Settings::default()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out.body).unwrap()["response"]["allowed"],
            true
        );
    }
}
