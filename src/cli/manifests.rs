//! Manifest files: the objects `kubectl apply -f` would send for a file (documents read by
//! [`crate::yaml`], kubectl's checks on each, Lists flattened), and objects written back as
//! YAML, JSON or a diff.

use std::collections::VecDeque;
use std::io::{Read, Write};

use serde_json::{Map, Value};

use crate::cli::report::ObjectResult;
use crate::yaml;

/// The objects of a manifest stream, one document at a time; stops after the first error.
/// Errors name the document (`document 3 (line 40): ...`), not the file.
pub struct Objects<'a> {
    documents: Box<dyn Iterator<Item = Result<yaml::Pending, String>> + 'a>,
    ready: VecDeque<Value>,
}

pub fn objects<'a>(input: impl Read + 'a) -> Objects<'a> {
    Objects {
        documents: Box::new(documents(input)),
        ready: VecDeque::new(),
    }
}

impl Iterator for Objects<'_> {
    type Item = Result<Value, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(object) = self.ready.pop_front() {
                return Some(Ok(object));
            }
            match self.documents.next()?.and_then(document_objects) {
                Ok(objects) => self.ready.extend(objects),
                Err(e) => {
                    // Nothing after a bad document is read, as kubectl stops the file there.
                    self.documents = Box::new(std::iter::empty());
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The documents of a manifest stream as cut, each to be made into objects by
/// [`document_objects`] on any thread; stops after the first error.
pub fn documents<'a>(
    input: impl Read + 'a,
) -> impl Iterator<Item = Result<yaml::Pending, String>> + 'a {
    let mut documents = yaml::Documents::new(input);
    std::iter::from_fn(move || {
        documents
            .next_pending()
            .map(|p| p.map_err(|e| e.to_string()))
    })
}

/// The objects of one document: it is parsed, checked as kubectl checks it and a List is
/// flattened. Errors name the document (`document 3 (line 40): ...`), not the file.
pub fn document_objects(pending: yaml::Pending) -> Result<Vec<Value>, String> {
    let Some(document) = pending.parse().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let name = match document.line {
        Some(line) => format!("document {} (line {line})", document.number),
        None => format!("document {}", document.number),
    };
    kubectl_objects(document.value).map_err(|e| format!("{name}: {e}"))
}

/// Every object of multi-document YAML or JSON, Lists flattened.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    objects(text.as_bytes()).collect()
}

/// What kubectl makes of one document: its checks (`apiVersion` and `kind` set, metadata of
/// the right types) and a document with a top-level `items` replaced by its items.
fn kubectl_objects(document: Value) -> Result<Vec<Value>, String> {
    let Value::Object(mut object) = document else {
        return Err(format!(
            "not a Kubernetes object ({})",
            type_name(&document)
        ));
    };
    let mut missing = Vec::new();
    match object.get("apiVersion") {
        None | Some(Value::Null) => missing.push("apiVersion not set".to_string()),
        Some(Value::String(v)) if v.matches('/').count() > 1 => {
            missing.push("apiVersion is not GROUP/VERSION".to_string())
        }
        Some(Value::String(_)) => {}
        Some(other) => missing.push(format!(
            "apiVersion is a {}, not a string",
            type_name(other)
        )),
    }
    match object.get("kind") {
        None | Some(Value::Null) => missing.push("kind not set".to_string()),
        Some(Value::String(k)) if k.is_empty() => missing.push("kind is empty".to_string()),
        Some(Value::String(_)) => {}
        Some(other) => missing.push(format!("kind is a {}, not a string", type_name(other))),
    }
    if !missing.is_empty() {
        return Err(format!("not a Kubernetes object: {}", missing.join(", ")));
    }
    check_metadata(&object)?;
    let Some(items) = object.remove("items") else {
        return Ok(vec![Value::Object(object)]);
    };
    let items = match items {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        other => return Err(format!("items is a {}, not a list", type_name(&other))),
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let item_kind = kind.strip_suffix("List").unwrap_or(kind);
    let api_version = object.get("apiVersion").cloned().unwrap_or(Value::Null);
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("items[{i}]");
            let mut item = match item {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                other => return Err(format!("{at} is a {}, not an object", type_name(&other))),
            };
            let text = |item: &Map<String, Value>, k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            // Typed lists (PodList) leave kind and apiVersion out of their items.
            if text(&item, "kind").is_empty() && text(&item, "apiVersion").is_empty() {
                item.insert("kind".into(), Value::from(item_kind));
                item.insert("apiVersion".into(), api_version.clone());
            }
            let api_version = text(&item, "apiVersion");
            let version = api_version.rsplit('/').next().unwrap_or("");
            if text(&item, "kind").is_empty()
                || version.is_empty()
                || api_version.matches('/').count() > 1
            {
                return Err(format!(
                    "{at} is not a Kubernetes object: it needs kind and apiVersion"
                ));
            }
            if item.get("items").is_some_and(Value::is_array) {
                return Err(format!("{at} is a list inside a list"));
            }
            Ok(Value::Object(item))
        })
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "mapping",
    }
}

/// Go types of `ObjectMeta` fields, which kubectl decodes from every document it sends.
#[derive(Clone, Copy)]
enum Field {
    String,
    Integer,
    Boolean,
    Time,
    StringMap,
    StringList,
    Any,
    OwnerReferences,
    ManagedFields,
}

fn check_metadata(object: &Map<String, Value>) -> Result<(), String> {
    let meta = match object.get("metadata") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(format!("metadata is a {}, not a mapping", type_name(other))),
    };
    check_fields(meta, "metadata", |name| match name {
        "name" | "generateName" | "namespace" | "selfLink" | "uid" | "resourceVersion" => {
            Some(Field::String)
        }
        "generation" | "deletionGracePeriodSeconds" => Some(Field::Integer),
        "creationTimestamp" | "deletionTimestamp" => Some(Field::Time),
        "labels" | "annotations" => Some(Field::StringMap),
        "finalizers" => Some(Field::StringList),
        "ownerReferences" => Some(Field::OwnerReferences),
        "managedFields" => Some(Field::ManagedFields),
        _ => None,
    })
}

fn check_fields(
    map: &Map<String, Value>,
    path: &str,
    field: impl Fn(&str) -> Option<Field>,
) -> Result<(), String> {
    for (name, value) in map {
        if let Some(f) = field(name) {
            check_field(value, f, &format!("{path}.{name}"))?;
        }
    }
    Ok(())
}

fn check_field(value: &Value, field: Field, path: &str) -> Result<(), String> {
    let wrong = |want: &str| {
        let hint = match value {
            Value::Bool(_) if want == "a string" => {
                ": quote it (YAML 1.1 reads yes, no, on, off, y, n, true and false unquoted as booleans)"
            }
            Value::Number(_) if want == "a string" => ": quote it",
            _ => "",
        };
        Err(format!(
            "{path} must be {want}, not a {}{hint}",
            type_name(value)
        ))
    };
    let each = |want: &str, check: &dyn Fn(&Value, &str) -> Result<(), String>| match value {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check(v, &format!("{path}[{i}]"))),
        _ => wrong(want),
    };
    match (field, value) {
        (_, Value::Null) | (Field::Any, _) => Ok(()),
        (Field::String, Value::String(_)) | (Field::Boolean, Value::Bool(_)) => Ok(()),
        (Field::Integer, Value::Number(n)) if n.is_i64() => Ok(()),
        (Field::Time, Value::String(s)) if is_rfc3339(s) => Ok(()),
        (Field::String, _) => wrong("a string"),
        (Field::Integer, _) => wrong("an integer"),
        (Field::Boolean, _) => wrong("a boolean"),
        (Field::Time, _) => wrong("an RFC 3339 time"),
        (Field::StringMap, Value::Object(m)) => m
            .iter()
            .try_for_each(|(k, v)| check_field(v, Field::String, &format!("{path}[{k:?}]"))),
        (Field::StringMap, _) => wrong("a mapping of strings"),
        (Field::StringList, _) => each("a list of strings", &|v, at| {
            check_field(v, Field::String, at)
        }),
        (Field::OwnerReferences, _) => each("a list of owner references", &|v, at| match v {
            Value::Null => Ok(()),
            Value::Object(m) => check_fields(m, at, |name| match name {
                "apiVersion" | "kind" | "name" | "uid" => Some(Field::String),
                "controller" | "blockOwnerDeletion" => Some(Field::Boolean),
                _ => None,
            }),
            _ => check_field(v, Field::StringMap, at),
        }),
        (Field::ManagedFields, _) => each("a list of managed fields entries", &|v, at| match v {
            Value::Null => Ok(()),
            Value::Object(m) => check_fields(m, at, |name| match name {
                "manager" | "operation" | "apiVersion" | "fieldsType" | "subresource" => {
                    Some(Field::String)
                }
                "time" => Some(Field::Time),
                "fieldsV1" => Some(Field::Any),
                _ => None,
            }),
            _ => check_field(v, Field::StringMap, at),
        }),
    }
}

/// Go's `time.Parse(time.RFC3339, s)`: `2006-01-02T15:04:05Z07:00`, fractions allowed.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
        || !matches!(b[10], b'T' | b't')
        || !(digits(11..13) && b[13] == b':' && digits(14..16) && b[16] == b':' && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// How mutated objects are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Documents separated by `---`.
    Yaml,
    /// A `List` of the objects, with keywire's verdicts beside them under `report`.
    Json,
    /// A unified diff of each changed object.
    Diff,
}

/// One object's part of the output, on its own: what [`Output::push`] writes after the
/// separator. Rendering needs nothing but the object, so it can run on any thread. A diff
/// compares with `original` (the object as read), and is empty when nothing changed.
pub fn render(format: Format, original: Option<&Value>, mutated: &Value) -> Result<String, String> {
    Ok(match format {
        Format::Yaml => yaml::to_string(mutated),
        Format::Json => {
            let text = yaml::number::to_json_pretty(mutated).map_err(|e| e.to_string())?;
            let mut out = String::with_capacity(text.len() + text.len() / 8);
            for line in text.lines() {
                out.push_str("\n    ");
                out.push_str(line);
            }
            out
        }
        Format::Diff => diff(original.unwrap_or(mutated), mutated),
    })
}

/// Writes rendered objects one at a time, in order, so memory holds one object, not the
/// output. JSON is the same text `serde_json`'s pretty printer would give the whole `List`,
/// with floats spelled as kubectl spells them.
pub struct Output<W: Write> {
    out: W,
    format: Format,
    written: usize,
}

impl<W: Write> Output<W> {
    pub fn new(out: W, format: Format) -> Self {
        Output {
            out,
            format,
            written: 0,
        }
    }

    /// Writes the next object, as [`render`] gave it.
    pub fn push(&mut self, rendered: &str) -> std::io::Result<()> {
        match self.format {
            Format::Yaml if self.written > 0 => self.out.write_all(b"---\n")?,
            Format::Json => self.out.write_all(if self.written == 0 {
                JSON_HEAD.as_bytes()
            } else {
                b","
            })?,
            _ => {}
        }
        self.out.write_all(rendered.as_bytes())?;
        self.written += 1;
        Ok(())
    }

    /// Ends the output; JSON closes the `List` with the verdicts.
    pub fn finish(mut self, results: &[ObjectResult]) -> std::io::Result<()> {
        if self.format == Format::Json {
            if self.written == 0 {
                self.out.write_all(JSON_HEAD.as_bytes())?;
                self.out.write_all(b"]")?;
            } else {
                self.out.write_all(b"\n  ]")?;
            }
            self.out.write_all(b",\n  \"report\": ")?;
            let report = yaml::number::to_json_pretty(&serde_json::json!({"results": results}))
                .map_err(std::io::Error::other)?;
            for (i, line) in report.lines().enumerate() {
                if i > 0 {
                    self.out.write_all(b"\n  ")?;
                }
                self.out.write_all(line.as_bytes())?;
            }
            self.out.write_all(b"\n}\n")?;
        }
        self.out.flush()
    }
}

const JSON_HEAD: &str = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [";

/// A unified diff of one object's YAML before and after.
pub fn diff(original: &Value, mutated: &Value) -> String {
    let before = yaml::to_string(original);
    let after = yaml::to_string(mutated);
    if before == after {
        return String::new();
    }
    let reference = crate::core::workload::reference(original);
    let reference = crate::core::echo::escape(&reference);
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{reference}"), &format!("b/{reference}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }

    #[test]
    fn kubectls_checks_refuse_what_kubectl_refuses() {
        let err = |text: &str| parse_documents(text).unwrap_err();
        assert_eq!(
            err("- 1\n- 2\n"),
            "document 1 (line 1): not a Kubernetes object (sequence)"
        );
        assert_eq!(
            err("metadata: {}\n"),
            "document 1 (line 1): not a Kubernetes object: apiVersion not set, kind not set"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: \"\"\n"),
            "document 2 (line 4): not a Kubernetes object: kind is empty"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    keywire.dev/inject: yes\n"),
            "document 1 (line 1): metadata.labels[\"keywire.dev/inject\"] must be a string, not a boolean: quote it (YAML 1.1 reads yes, no, on, off, y, n, true and false unquoted as booleans)"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Pod\nmetadata:\n  name: 0644\n"),
            "document 1 (line 1): metadata.name must be a string, not a number: quote it"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: yesterday\n"),
            "document 1 (line 1): metadata.creationTimestamp must be an RFC 3339 time, not a string"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: List\nitems:\n- metadata: {name: x}\n"),
            "document 1 (line 1): items[0] is not a Kubernetes object: it needs kind and apiVersion"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List, items: []}\n"),
            "document 1 (line 1): items[0] is a list inside a list"
        );
        assert_eq!(
            err("a: [\n"),
            "document 1, line 1, column 4: unclosed bracket '['"
        );
    }

    #[test]
    fn lists_and_metadata_as_kubectl_reads_them() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n- null\n---\n\
             apiVersion: v1\nkind: Pod\nitems: [{apiVersion: v1, kind: ConfigMap}]\n---\n\
             apiVersion: v1\nkind: List\nitems: null\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  generation: 2\n  labels: {a: null}\n  finalizers: [x]\n",
        )
        .unwrap();
        assert_eq!(
            docs,
            vec![
                json!({"metadata": {"name": "a"}, "kind": "Pod", "apiVersion": "v1"}),
                json!({"kind": "Pod", "apiVersion": "v1"}),
                json!({"apiVersion": "v1", "kind": "ConfigMap"}),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "creationTimestamp": null, "generation": 2, "labels": {"a": null}, "finalizers": ["x"]}}),
            ]
        );
        assert!(is_rfc3339("2024-01-02T03:04:05Z"));
        assert!(is_rfc3339("2024-01-02T03:04:05.123+02:00"));
        assert!(!is_rfc3339("2024-01-02 03:04:05Z"));
    }

    fn render(format: Format, objects: &[Value], results: &[ObjectResult]) -> String {
        let mut text = Vec::new();
        let mut out = Output::new(&mut text, format);
        for o in objects {
            out.push(&super::render(format, Some(o), o).unwrap())
                .unwrap();
        }
        out.finish(results).unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn output_is_yaml_and_json_as_kubectl_reads_them() {
        let objects = vec![
            json!({"kind": "A", "v": "on"}),
            json!({"kind": "B", "n": 1.8446744073709552e19}),
        ];
        // `n` is a YAML 1.1 boolean, as a key too.
        assert_eq!(
            render(Format::Yaml, &objects, &[]),
            "kind: A\nv: 'on'\n---\nkind: B\n'n': 18446744073709552000\n"
        );
        let json = render(Format::Json, &objects[1..], &[]);
        assert!(json.contains("\"n\": 18446744073709552000\n"), "{json}");
    }

    /// The streamed `List` is, byte for byte, what the pretty printer makes of the whole.
    #[test]
    fn streamed_json_is_the_whole_list_pretty_printed() {
        let objects = [
            json!({"kind": "A", "metadata": {"name": "a", "labels": {}}, "spec": {"x": [1, [], {"y": "z\nw"}]}}),
            json!({"kind": "B", "data": {}}),
            json!({}),
        ];
        let results = [ObjectResult::refused(
            "Namespace/x".into(),
            "f.yaml".into(),
            "redefines \"it\"".into(),
        )];
        for n in 0..=objects.len() {
            for results in [&results[..], &[]] {
                let whole = serde_json::to_string_pretty(&json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objects[..n],
                    "report": {"results": results},
                }))
                .unwrap()
                    + "\n";
                assert_eq!(render(Format::Json, &objects[..n], results), whole);
            }
        }
    }
}
