//! Manifest files: reading multi-document YAML/JSON into objects, and writing objects back as
//! YAML, JSON or a diff.

use serde::Deserialize;
use serde_json::Value;

use crate::core::workload::Mutated;

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
    results: &[crate::cli::report::ObjectResult],
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
            &format!("a/{}", crate::core::echo::escape(&m.reference())),
            &format!("b/{}", crate::core::echo::escape(&m.reference())),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
