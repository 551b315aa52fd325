//! Turning `Wiring` into JSON Patch `add` operations against the raw pod JSON.
//!
//! The raw JSON is patched (not a typed Pod) so fields unknown to k8s-openapi survive.
//! Only `add` is ever emitted; user content is never overwritten.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::core::plan::{self, ContainerKind, Wiring};

/// Names are short and come from one pod: a fast hash beats SipHash's flood resistance here,
/// and the pod's size is already bounded by the API server.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A JSON value keywire adds, serialised once when it is built: the same mount or env entry
/// goes to every container it wires as a shared copy, so a wide pod costs a pointer per
/// container, not a tree to clone and serialise again.
#[derive(Clone)]
pub struct Item(Arc<ItemData>);

struct ItemData {
    value: Value,
    json: Box<RawValue>,
    name: String,
}

impl Item {
    pub fn new(value: Value) -> Self {
        // Serialising a `Value` cannot fail: its keys are strings.
        let json =
            serde_json::value::to_raw_value(&value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Item(Arc::new(ItemData { value, json, name }))
    }

    pub fn value(&self) -> &Value {
        &self.0.value
    }

    /// The item's `name` field, empty if it has none.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl From<Value> for Item {
    fn from(value: Value) -> Self {
        Item::new(value)
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.value == other.0.value
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0.value, f)
    }
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(s)
    }
}

/// What an operation adds: one item, or a new array of items.
#[derive(Debug, Clone, PartialEq)]
enum Payload {
    One(Item),
    Many(Vec<Item>),
}

impl Payload {
    fn to_value(&self) -> Value {
        match self {
            Payload::One(item) => item.value().clone(),
            Payload::Many(items) => Value::Array(items.iter().map(|i| i.value().clone()).collect()),
        }
    }
}

/// One RFC 6902 operation: `add`, or `replace` for the v1.6 token volume and its mounts, whose
/// name the Azure Workload Identity webhook reserves. Never `remove`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    op: &'static str,
    pub path: String,
    value: Payload,
}

impl Serialize for PatchOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Items<'a>(&'a [Item]);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for item in self.0 {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("op", self.op)?;
        map.serialize_entry("path", &self.path)?;
        match &self.value {
            Payload::One(item) => map.serialize_entry("value", item)?,
            Payload::Many(items) => map.serialize_entry("value", &Items(items))?,
        }
        map.end()
    }
}

impl PatchOp {
    pub fn add(path: String, value: impl Into<Item>) -> Self {
        PatchOp {
            op: "add",
            path,
            value: Payload::One(value.into()),
        }
    }

    /// Adds a whole array of items at `path`.
    pub fn add_all(path: String, items: Vec<Item>) -> Self {
        PatchOp {
            op: "add",
            path,
            value: Payload::Many(items),
        }
    }

    pub fn replace(path: String, value: impl Into<Item>) -> Self {
        PatchOp {
            op: "replace",
            path,
            value: Payload::One(value.into()),
        }
    }

    /// The value the operation writes.
    pub fn value(&self) -> Value {
        self.value.to_value()
    }
}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Applies keywire's operations to a JSON document as RFC 6902 says (`add` inserts into an
/// array or sets a member, `replace` needs the target to exist). They are `add`s, bar the
/// reserved token volume's `replace`, so this cannot lose data. On an error the document is
/// half-patched: callers throw it away. Direct, not through `json_patch`, which copies the
/// document to undo on error and costs a serde round trip per call (`keywire mutate` applies
/// a patch per object).
pub fn apply(doc: &mut Value, ops: &[PatchOp]) -> Result<(), String> {
    for op in ops {
        apply_one(doc, op).map_err(|e| format!("{} {}: {e}", op.op, op.path))?;
    }
    Ok(())
}

fn apply_one(doc: &mut Value, op: &PatchOp) -> Result<(), &'static str> {
    let Some((parent, last)) = op.path.rsplit_once('/') else {
        if !op.path.is_empty() {
            return Err("a JSON pointer starts with /");
        }
        *doc = op.value();
        return Ok(());
    };
    let last = unescape(last);
    match walk_mut(doc, parent) {
        Some(Value::Object(map)) => {
            if op.op == "replace" && !map.contains_key(&*last) {
                return Err("no such member to replace");
            }
            map.insert(last.into_owned(), op.value());
            Ok(())
        }
        Some(Value::Array(items)) => {
            let len = items.len();
            let index = if op.op == "add" && last == "-" {
                len
            } else {
                array_index(&last).ok_or("not an array index")?
            };
            match (op.op, items.get_mut(index)) {
                ("add", _) if index <= len => items.insert(index, op.value()),
                ("replace", Some(item)) => *item = op.value(),
                _ => return Err("array index out of bounds"),
            }
            Ok(())
        }
        Some(_) => Err("the parent is neither an object nor an array"),
        None => Err("the parent does not exist"),
    }
}

/// An RFC 6901 reference token unescaped; borrowed when it holds no `~`.
fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// `Value::pointer_mut`, without copying each reference token (a patch walks a few hundred).
fn walk_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    if pointer.is_empty() {
        return Some(doc);
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .try_fold(doc, |target, token| match target {
            Value::Object(map) => map.get_mut(&*unescape(token)),
            Value::Array(items) => items.get_mut(array_index(token)?),
            _ => None,
        })
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// `desired` is contained in `actual`: the API server may have defaulted extra fields.
fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => d
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| is_subset(v, av))),
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(x, y)| is_subset(x, y))
        }
        _ => desired == actual,
    }
}

/// Index of the first item of each name in an array of named items (volumes, mounts, env),
/// so every lookup in a pod is O(1) and rendering stays linear in the pod's size.
fn by_name(items: Option<&Value>) -> HashMap<&str, (usize, &Value)> {
    let mut index = HashMap::default();
    for (i, item) in items
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            index.entry(name).or_insert((i, item));
        }
    }
    index
}

/// Appends `new` items to the array at `path`, or adds the array whole if it is missing.
fn append(ops: &mut Vec<PatchOp>, existing: Option<&Value>, path: &str, new: Vec<Item>) {
    if new.is_empty() {
        return;
    }
    if existing.is_some_and(Value::is_array) {
        let at = format!("{path}/-");
        ops.extend(new.into_iter().map(|v| PatchOp::add(at.clone(), v)));
    } else {
        ops.push(PatchOp::add_all(path.to_string(), new));
    }
}

/// Renders the operations that give `pod` its `wiring`, plus warnings; or the reason to deny,
/// naming every clash in the pod (each volume name and each container's mount), not only the
/// first.
pub fn render(pod: &Value, wiring: &Wiring) -> Result<(Vec<PatchOp>, Vec<String>), String> {
    let Some(spec) = pod.get("spec").filter(|s| s.is_object()) else {
        return Err("the pod has no spec object".to_string());
    };
    let mut ops = Vec::new();
    let mut warnings = Vec::new();
    let mut clashes = Vec::new();

    let volumes = spec.get("volumes");
    let existing_volumes = by_name(volumes);
    let mut new_volumes = Vec::new();
    let replaceable = |name: &str| wiring.replaceable.iter().any(|r| r == name);
    for item in &wiring.volumes {
        let volume = item.value();
        let name = item.name();
        match existing_volumes.get(name) {
            // CSI attributes override the SecretProviderClass in the driver: they must match exactly.
            Some((_, existing))
                if is_subset(volume, existing)
                    && (volume.get("csi").is_none()
                        || existing.get("csi") == volume.get("csi")) => {}
            Some((i, _)) if replaceable(name) => {
                ops.push(PatchOp::replace(
                    format!("/spec/volumes/{i}"),
                    item.clone(),
                ));
            }
            Some(_) => clashes.push(format!(
                "volume name clash: the pod already has a volume named {} that keywire did not inject",
                volume["name"]
            )),
            None => new_volumes.push(item.clone()),
        }
    }
    append(&mut ops, volumes, "/spec/volumes", new_volumes);

    for kind in [ContainerKind::Init, ContainerKind::Regular] {
        let containers = by_name(spec.get(kind.field()));
        for wired in wiring.containers.iter().filter(|c| c.kind == kind) {
            let Some(&(index, container)) = containers.get(wired.name.as_str()) else {
                return Err(format!(
                    "the pod has no {} named {:?}",
                    kind.field(),
                    wired.name
                ));
            };
            let base = format!("/spec/{}/{index}", kind.field());

            let mounts = container.get("volumeMounts");
            let mounts_by_name = by_name(mounts);
            let mut mounts_by_path: HashMap<&str, &Value> = HashMap::default();
            for m in mounts.and_then(Value::as_array).into_iter().flatten() {
                if let Some(path) = m.get("mountPath").and_then(Value::as_str) {
                    mounts_by_path.entry(path).or_insert(m);
                }
            }
            let mut new_mounts = Vec::new();
            for item in &wired.mounts {
                let m = item.value();
                let name = item.name();
                if let Some(&(i, existing)) = mounts_by_name.get(name) {
                    if is_subset(m, existing) {
                        continue;
                    }
                    if replaceable(name) {
                        ops.push(PatchOp::replace(
                            format!("{base}/volumeMounts/{i}"),
                            item.clone(),
                        ));
                        continue;
                    }
                    clashes.push(format!(
                        "volume mount clash: container {:?} already mounts volume {} at {}",
                        wired.name, m["name"], existing["mountPath"]
                    ));
                    continue;
                }
                let path = m["mountPath"].as_str().unwrap_or_default();
                if let Some(other) = mounts_by_path.get(path) {
                    clashes.push(format!(
                        "mount path clash: container {:?} already mounts volume {} at {}",
                        wired.name, other["name"], m["mountPath"]
                    ));
                    continue;
                }
                new_mounts.push(item.clone());
            }
            append(
                &mut ops,
                mounts,
                &format!("{base}/volumeMounts"),
                new_mounts,
            );

            let env = container.get("env");
            let env_by_name = by_name(env);
            let mut new_env = Vec::new();
            for item in &wired.env {
                let name = item.name();
                match env_by_name.get(name) {
                    Some((_, existing)) if is_subset(item.value(), existing) => {}
                    Some(_) => warnings.push(format!(
                        "container {:?} sets {name} itself; keywire's value was not injected",
                        wired.name,
                    )),
                    None => new_env.push(item.clone()),
                }
            }
            append(&mut ops, env, &format!("{base}/env"), new_env);
        }
    }
    if !clashes.is_empty() {
        return Err(clashes.join("; "));
    }

    // New containers go in after every operation that addresses existing ones by index.
    for kind in [ContainerKind::Init, ContainerKind::Regular] {
        let path = format!("/spec/{}", kind.field());
        let new: Vec<&plan::NewContainer> = wiring
            .new_containers
            .iter()
            .filter(|c| c.kind == kind)
            .collect();
        if new.is_empty() {
            continue;
        }
        if spec.get(kind.field()).is_some_and(Value::is_array) {
            for c in &new {
                let at = if c.first { "0" } else { "-" };
                ops.push(PatchOp::add(format!("{path}/{at}"), c.container.clone()));
            }
        } else {
            let ordered: Vec<Item> = new
                .iter()
                .filter(|c| c.first)
                .chain(new.iter().filter(|c| !c.first))
                .map(|c| c.container.clone())
                .collect();
            ops.push(PatchOp::add_all(path, ordered));
        }
    }

    let annotations = pod.get("metadata").and_then(|m| m.get("annotations"));
    let missing: Vec<&(String, String)> = wiring
        .annotations
        .iter()
        .filter(|(k, _)| annotations.and_then(|a| a.get(k)).is_none())
        .collect();
    if !missing.is_empty() {
        if pod.get("metadata").is_none_or(|m| !m.is_object()) {
            let map: serde_json::Map<String, Value> = missing
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            ops.push(PatchOp::add(
                "/metadata".to_string(),
                serde_json::json!({ "annotations": map }),
            ));
        } else if annotations.is_some_and(Value::is_object) {
            for (k, v) in missing {
                ops.push(PatchOp::add(
                    format!("/metadata/annotations/{}", escape(k)),
                    Value::String(v.clone()),
                ));
            }
        } else {
            let map: serde_json::Map<String, Value> = missing
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            ops.push(PatchOp::add(
                "/metadata/annotations".to_string(),
                Value::Object(map),
            ));
        }
    }
    Ok((ops, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::ContainerWiring;
    use serde_json::json;

    /// `apply` does what the `json_patch` crate (RFC 6902) does, and refuses what it refuses.
    #[test]
    fn apply_is_rfc_6902() {
        let doc = json!({"a": {"b~/c": 1, "list": [1, 2]}, "e": []});
        let cases = vec![
            vec![PatchOp::add("/a/x".into(), json!({"y": 1}))],
            vec![PatchOp::add("/a/b~0~1c".into(), json!(2))],
            vec![PatchOp::add("/a/list/-".into(), json!(3))],
            vec![PatchOp::add("/a/list/0".into(), json!(0))],
            vec![PatchOp::add("/a/list/2".into(), json!(9))],
            vec![
                PatchOp::add("/e/0".into(), json!("first")),
                PatchOp::add("/e/-".into(), json!("next")),
            ],
            vec![PatchOp::replace("/a/list/1".into(), json!("r"))],
            vec![PatchOp::replace("/a/b~0~1c".into(), json!(null))],
            vec![PatchOp::add("".into(), json!([1]))],
            vec![PatchOp::add("/a/list/3".into(), json!(1))],
            vec![PatchOp::add("/a/list/01".into(), json!(1))],
            vec![PatchOp::add("/a/list/x".into(), json!(1))],
            vec![PatchOp::replace("/a/list/2".into(), json!(1))],
            vec![PatchOp::replace("/a/missing".into(), json!(1))],
            vec![PatchOp::replace("/a/list/-".into(), json!(1))],
            vec![PatchOp::add("/nowhere/x".into(), json!(1))],
            vec![PatchOp::add("/a/b~0~1c/x".into(), json!(1))],
            vec![PatchOp::add("a".into(), json!(1))],
        ];
        for ops in cases {
            let mut ours = doc.clone();
            let ours = apply(&mut ours, &ops).map(|()| ours);
            let mut theirs = doc.clone();
            let theirs = serde_json::from_value::<json_patch::Patch>(json!(ops))
                .map_err(|e| e.to_string())
                .and_then(|patch| json_patch::patch(&mut theirs, &patch).map_err(|e| e.to_string()))
                .map(|()| theirs);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{ops:?}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{ops:?}: ours {a:?}, json_patch {b:?}"),
            }
        }
    }

    fn wiring() -> Wiring {
        Wiring {
            annotations: vec![("keywire.dev/status".into(), "injected".into())],
            volumes: vec![Item::new(json!({"name": "v", "csi": {"driver": "d"}}))],
            containers: vec![ContainerWiring {
                kind: ContainerKind::Regular,
                name: "app".into(),
                mounts: vec![Item::new(
                    json!({"name": "v", "mountPath": "/m", "readOnly": true}),
                )],
                env: vec![Item::new(json!({"name": "E", "value": "1"}))],
            }],
            ..Wiring::default()
        }
    }

    #[test]
    fn missing_arrays_and_maps_are_added_whole() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        let (ops, warnings) = render(&pod, &wiring()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            json!([
                {"op": "add", "path": "/spec/volumes", "value": [{"name": "v", "csi": {"driver": "d"}}]},
                {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [{"name": "v", "mountPath": "/m", "readOnly": true}]},
                {"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "E", "value": "1"}]},
                {"op": "add", "path": "/metadata/annotations", "value": {"keywire.dev/status": "injected"}},
            ])
        );
    }

    #[test]
    fn existing_arrays_are_appended_and_keys_escaped() {
        let pod = json!({
            "metadata": {"annotations": {"a": "b"}},
            "spec": {"volumes": [{"name": "x"}], "containers": [{"name": "app", "env": [], "volumeMounts": []}]}
        });
        let (ops, _) = render(&pod, &wiring()).unwrap();
        let paths: Vec<&str> = ops.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/spec/volumes/-",
                "/spec/containers/0/volumeMounts/-",
                "/spec/containers/0/env/-",
                "/metadata/annotations/keywire.dev~1status"
            ]
        );
    }

    #[test]
    fn user_env_wins_with_a_warning() {
        let pod = json!({"spec": {"containers": [{"name": "app", "env": [{"name": "E", "value": "mine"}]}]}});
        let (ops, warnings) = render(&pod, &wiring()).unwrap();
        assert!(
            ops.iter()
                .all(|o| !o.path.ends_with("/env") && !o.path.ends_with("/env/-"))
        );
        assert_eq!(
            warnings,
            vec![r#"container "app" sets E itself; keywire's value was not injected"#.to_string()]
        );
    }

    #[test]
    fn clashes_are_denied_with_the_clash_named() {
        let pod = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}], "containers": [{"name": "app"}]}});
        assert_eq!(
            render(&pod, &wiring()).unwrap_err(),
            r#"volume name clash: the pod already has a volume named "v" that keywire did not inject"#
        );
        let pod = json!({"spec": {"containers": [{"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/m"}]}]}});
        assert_eq!(
            render(&pod, &wiring()).unwrap_err(),
            r#"mount path clash: container "app" already mounts volume "data" at "/m""#
        );
    }

    #[test]
    fn a_csi_volume_with_extra_attributes_is_not_keywires() {
        let pod = json!({"spec": {
            "volumes": [{"name": "v", "csi": {"driver": "d", "volumeAttributes": {"clientID": "x"}}}],
            "containers": [{"name": "app"}]}});
        assert_eq!(
            render(&pod, &wiring()).unwrap_err(),
            r#"volume name clash: the pod already has a volume named "v" that keywire did not inject"#
        );
    }

    #[test]
    fn defaulted_fields_still_count_as_injected() {
        let pod = json!({
            "metadata": {"annotations": {"keywire.dev/status": "injected"}},
            "spec": {
                "volumes": [{"name": "v", "csi": {"driver": "d"}}],
                "containers": [{"name": "app", "terminationMessagePath": "/dev/termination-log",
                    "volumeMounts": [{"name": "v", "mountPath": "/m", "readOnly": true, "mountPropagation": "None"}],
                    "env": [{"name": "E", "value": "1"}]}]
            }
        });
        let (ops, warnings) = render(&pod, &wiring()).unwrap();
        assert!(
            ops.is_empty() && warnings.is_empty(),
            "{ops:?} {warnings:?}"
        );
    }

    #[test]
    fn apply_runs_the_operations() {
        let mut pod = json!({"spec": {"containers": [{"name": "app"}]}});
        let (ops, _) = render(&pod, &wiring()).unwrap();
        apply(&mut pod, &ops).unwrap();
        assert_eq!(
            pod["metadata"]["annotations"]["keywire.dev/status"],
            "injected"
        );
        assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "E");
    }

    #[test]
    fn reserved_names_are_replaced_and_new_containers_go_in_last() {
        let mut w = wiring();
        w.replaceable = vec!["v".into()];
        w.new_containers = vec![
            plan::NewContainer {
                kind: ContainerKind::Init,
                first: false,
                container: Item::new(json!({"name": "last"})),
            },
            plan::NewContainer {
                kind: ContainerKind::Init,
                first: true,
                container: Item::new(json!({"name": "first"})),
            },
        ];
        let pod = json!({"spec": {
            "volumes": [{"name": "x"}, {"name": "v", "emptyDir": {}}],
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "app", "volumeMounts": [{"name": "v", "mountPath": "/old"}]}]}});
        let (ops, _) = render(&pod, &w).unwrap();
        let shown: Vec<(String, String)> = serde_json::to_value(&ops)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["op"].as_str().unwrap().to_string(),
                    o["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = shown
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("replace", "/spec/volumes/1"),
                ("replace", "/spec/containers/0/volumeMounts/0"),
                ("add", "/spec/containers/0/env"),
                ("add", "/spec/initContainers/-"),
                ("add", "/spec/initContainers/0"),
                ("add", "/metadata"),
            ]
        );
        let mut out = pod.clone();
        apply(&mut out, &ops).unwrap();
        let inits: Vec<&str> = out["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits, vec!["first", "i", "last"]);
        assert_eq!(
            out["spec"]["volumes"][1],
            json!({"name": "v", "csi": {"driver": "d"}})
        );
        // Without the reservation the same pod is a clash.
        assert!(render(&pod, &wiring()).is_err());
    }
}
