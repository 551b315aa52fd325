//! CI reports of `keywire mutate`: a human table, JSON, JUnit XML, GitHub Actions annotations and
//! SARIF 2.1.0 (GitHub code scanning), all rendered from the same per-object results.

use serde::Serialize;

use crate::core::echo;
use crate::core::engine::Outcome;
use crate::core::policy::Enforcement;
use crate::core::workload::Mutated;

/// One manifest's verdict, as every report format shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    pub object: String,
    pub file: String,
    /// First line of the object's document in `file`, when the reader knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    pub warnings: Vec<String>,
    pub violations: Vec<ViolationRow>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationRow {
    pub policy: String,
    pub rule: String,
    pub field: String,
    pub enforcement: String,
    pub message: String,
}

impl ObjectResult {
    /// An object refused before any pod was judged (e.g. an input that redefines the platform's).
    pub fn refused(object: String, file: String, reason: String) -> Self {
        ObjectResult {
            object: shown(&object),
            file: shown(&file),
            line: None,
            allowed: false,
            denial: Some(shown(&reason)),
            warnings: Vec::new(),
            violations: Vec::new(),
        }
    }
}

/// Text from the input as every report shows it: control characters escaped (`core::echo`), so
/// no name can break a table row, forge a CI log line or an XML document.
fn shown(s: &str) -> String {
    echo::escape(s).into_owned()
}

/// The result for one object, if it carries a pod (template).
pub fn result(file: &str, m: &Mutated) -> Option<ObjectResult> {
    let d = m.decision.as_ref()?;
    Some(ObjectResult {
        object: shown(&m.reference()),
        file: shown(file),
        line: None,
        allowed: d.is_allowed(),
        denial: match &d.outcome {
            Outcome::Denied(reason) => Some(shown(reason)),
            _ => None,
        },
        warnings: d.warnings.iter().map(|w| shown(w)).collect(),
        violations: d
            .violations
            .iter()
            .map(|v| ViolationRow {
                policy: shown(&v.policy),
                rule: v.rule.to_string(),
                field: shown(&v.field),
                enforcement: v.enforcement.as_str().to_string(),
                message: shown(&v.message),
            })
            .collect(),
    })
}

/// Any violation that only warns or audits (what `--strict` turns into a failure).
pub fn has_soft_violations(results: &[ObjectResult]) -> bool {
    results.iter().flat_map(|r| &r.violations).any(|v| {
        v.enforcement == Enforcement::Warn.as_str() || v.enforcement == Enforcement::Audit.as_str()
    })
}

/// A fixed-width table of every violation; empty when there is none.
pub fn table(results: &[ObjectResult]) -> String {
    let header = [
        "OBJECT",
        "POLICY",
        "RULE",
        "ENFORCEMENT",
        "FIELD",
        "MESSAGE",
    ];
    let rows: Vec<[String; 6]> = results
        .iter()
        .flat_map(|r| {
            r.violations.iter().map(move |v| {
                [
                    r.object.clone(),
                    v.policy.clone(),
                    v.rule.clone(),
                    v.enforcement.clone(),
                    v.field.clone(),
                    v.message.clone(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Text and attribute content for XML 1.0: markup escaped, line breaks and tabs as character
/// references (kept, even in attributes), and characters XML cannot carry at all (other
/// controls, U+FFFE, U+FFFF) written as visible escapes, so the document is always well-formed.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                out.extend(c.escape_default())
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test case per object; denials and Enforce violations are failures.
pub fn junit(results: &[ObjectResult], strict: bool) -> String {
    let failed = |r: &ObjectResult| !r.allowed || (strict && !r.violations.is_empty());
    let failures = results.iter().filter(|r| failed(r)).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"keywire\" tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"keywire mutate\" tests=\"{}\" failures=\"{failures}\">\n",
        results.len(),
        results.len()
    ));
    for r in results {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(&r.file),
            xml_escape(&r.object)
        ));
        let details: Vec<String> = r
            .denial
            .iter()
            .cloned()
            .chain(
                r.violations
                    .iter()
                    .filter(|v| v.enforcement != Enforcement::Enforce.as_str())
                    .map(|v| {
                        format!(
                            "{} KeywirePolicy {} rule {} ({}): {}",
                            v.enforcement, v.policy, v.rule, v.field, v.message
                        )
                    }),
            )
            .collect();
        if details.is_empty() && r.warnings.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        if failed(r) {
            let message = r.denial.clone().unwrap_or_else(|| details.join("; "));
            out.push_str(&format!(
                "      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                xml_escape(&message),
                if r.allowed {
                    "PolicyViolation"
                } else {
                    "Denied"
                },
                xml_escape(&details.join("\n"))
            ));
        }
        let notes: Vec<&String> = r.warnings.iter().collect();
        if !notes.is_empty() || (!failed(r) && !details.is_empty()) {
            let mut text: Vec<String> = notes.iter().map(|w| format!("warning: {w}")).collect();
            if !failed(r) {
                text.extend(details.iter().cloned());
            }
            out.push_str(&format!(
                "      <system-out>{}</system-out>\n",
                xml_escape(&text.join("\n"))
            ));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_property(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: `::error` for denials, `::warning` for Warn/Audit violations.
pub fn github(results: &[ObjectResult]) -> String {
    let mut out = String::new();
    for r in results {
        let file = gh_escape_property(&r.file);
        if let Some(denial) = &r.denial {
            out.push_str(&format!(
                "::error file={file},title={}::{}\n",
                gh_escape_property(&format!("keywire denied {}", r.object)),
                gh_escape_data(denial)
            ));
        }
        for v in r
            .violations
            .iter()
            .filter(|v| v.enforcement != Enforcement::Enforce.as_str())
        {
            out.push_str(&format!(
                "::warning file={file},title={}::{}\n",
                gh_escape_property(&format!(
                    "keywire {} {}/{} {}",
                    v.enforcement, v.policy, v.rule, r.object
                )),
                gh_escape_data(&format!("{}: {}", v.field, v.message))
            ));
        }
    }
    out
}

/// The rule id of a denial that no policy made (a malformed annotation, a clash).
pub const SARIF_DENIED_RULE: &str = "keywire/denied";

fn sarif_rule_id(rule: &str) -> String {
    format!("KeywirePolicy/{rule}")
}

fn sarif_level(enforcement: &str) -> &'static str {
    match enforcement {
        "Enforce" => "error",
        "Warn" => "warning",
        _ => "note",
    }
}

/// SARIF 2.1.0 for GitHub code scanning: one result per denial and per policy violation, located
/// at the manifest file (and the document's first line when known), with a stable fingerprint.
pub fn sarif(results: &[ObjectResult]) -> String {
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    let mut rule_ids: Vec<String> = Vec::new();
    let mut rule_index = |id: &str| -> usize {
        match rule_ids.iter().position(|r| r == id) {
            Some(i) => i,
            None => {
                rule_ids.push(id.to_string());
                rule_ids.len() - 1
            }
        }
    };
    let mut out: Vec<Value> = Vec::new();
    for r in results {
        let location = |field: Option<&str>| {
            let mut physical = json!({"artifactLocation": {"uri": r.file}});
            if let Some(line) = r.line {
                physical["region"] = json!({"startLine": line});
            }
            let name = match field {
                Some(f) => format!("{}.{f}", r.object),
                None => r.object.clone(),
            };
            json!([{"physicalLocation": physical,
                "logicalLocations": [{"fullyQualifiedName": name, "kind": "object"}]}])
        };
        let fingerprint = |parts: &[&str]| {
            let digest = Sha256::digest(parts.join("\n").as_bytes());
            digest
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let policy_denial = r.violations.iter().any(|v| v.enforcement == "Enforce");
        if let (Some(denial), false) = (&r.denial, policy_denial) {
            out.push(json!({
                "ruleId": SARIF_DENIED_RULE,
                "ruleIndex": rule_index(SARIF_DENIED_RULE),
                "level": "error",
                "message": {"text": format!("{} is denied: {denial}", r.object)},
                "locations": location(None),
                "partialFingerprints": {"keywire/v1": fingerprint(&[&r.file, &r.object, SARIF_DENIED_RULE])},
            }));
        }
        for v in &r.violations {
            let id = sarif_rule_id(&v.rule);
            out.push(json!({
                "ruleId": id,
                "ruleIndex": rule_index(&id),
                "level": sarif_level(&v.enforcement),
                "message": {"text": format!("{}: KeywirePolicy {} ({}): {}", r.object, v.policy, v.enforcement, v.message)},
                "locations": location(Some(&v.field)),
                "partialFingerprints": {"keywire/v1": fingerprint(&[&r.file, &r.object, &v.policy, &v.rule, &v.field])},
                "properties": {"policy": v.policy, "enforcement": v.enforcement, "field": v.field},
            }));
        }
    }
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            let text = if id == SARIF_DENIED_RULE {
                "keywire would deny this object at admission".to_string()
            } else {
                format!(
                    "KeywirePolicy rule {}",
                    id.trim_start_matches("KeywirePolicy/")
                )
            };
            json!({"id": id, "name": id.replace('/', "_"), "shortDescription": {"text": text},
                "helpUri": "https://github.com/keywire/keywire/blob/main/docs/policy.md"})
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "keywire",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/keywire/keywire",
                "rules": rules,
            }},
            "results": out,
        }],
    });
    serde_json::to_string_pretty(&log).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ObjectResult> {
        vec![
            ObjectResult {
                object: "Deployment/web (namespace prod)".into(),
                file: "deploy.yaml".into(),
                line: Some(3),
                allowed: false,
                denial: Some("KeywirePolicy prod rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault]): key vault kv-dev is not allowed; allowed: kv-prod-*".into()),
                warnings: vec![],
                violations: vec![ViolationRow {
                    policy: "prod".into(),
                    rule: "keyVaults".into(),
                    field: "spec.template.metadata.annotations[keywire.dev/keyvault]".into(),
                    enforcement: "Enforce".into(),
                    message: "key vault kv-dev is not allowed; allowed: kv-prod-*".into(),
                }],
            },
            ObjectResult {
                object: "Pod/ok (namespace prod)".into(),
                file: "pod.yaml".into(),
                line: None,
                allowed: true,
                denial: None,
                warnings: vec!["audit/tokenExpiration: token expiration 7200s is outside 3600..3600s".into()],
                violations: vec![ViolationRow {
                    policy: "audit".into(),
                    rule: "tokenExpiration".into(),
                    field: "metadata.annotations[keywire.dev/token-expiration]".into(),
                    enforcement: "Warn".into(),
                    message: "token expiration 7200s is outside 3600..3600s".into(),
                }],
            },
        ]
    }

    #[test]
    fn table_lists_every_violation() {
        let t = table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(
            "OBJECT                           POLICY  RULE             ENFORCEMENT  FIELD"
        ));
        assert!(lines[1].starts_with("Deployment/web (namespace prod)  prod    keyVaults        Enforce      spec.template.metadata.annotations[keywire.dev/keyvault]"));
        assert!(lines[2].ends_with("token expiration 7200s is outside 3600..3600s"));
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn junit_marks_denials_and_strict_failures() {
        let x = junit(&sample(), false);
        assert!(
            x.contains(r#"<testsuites name="keywire" tests="2" failures="1">"#),
            "{x}"
        );
        assert!(
            x.contains(
                r#"<testcase classname="deploy.yaml" name="Deployment/web (namespace prod)">"#
            ),
            "{x}"
        );
        assert!(
            x.contains(r#"<failure message="KeywirePolicy prod rule keyVaults"#),
            "{x}"
        );
        assert!(
            x.contains("<system-out>warning: audit/tokenExpiration"),
            "{x}"
        );
        let strict = junit(&sample(), true);
        assert!(strict.contains(r#"failures="2""#), "{strict}");
        assert!(strict.contains(r#"type="PolicyViolation""#), "{strict}");
    }

    #[test]
    fn github_annotations_escape_properties() {
        let g = github(&sample());
        assert_eq!(
            g.lines().collect::<Vec<_>>(),
            vec![
                "::error file=deploy.yaml,title=keywire denied Deployment/web (namespace prod)::KeywirePolicy prod rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault]): key vault kv-dev is not allowed; allowed: kv-prod-*",
                "::warning file=pod.yaml,title=keywire Warn audit/tokenExpiration Pod/ok (namespace prod)::metadata.annotations[keywire.dev/token-expiration]: token expiration 7200s is outside 3600..3600s",
            ]
        );
        assert_eq!(gh_escape_property("a:b,c\nd"), "a%3Ab%2Cc%0Ad");
    }

    #[test]
    fn sarif_has_one_result_per_violation_with_rules_and_locations() {
        let log: serde_json::Value = serde_json::from_str(&sarif(&sample())).unwrap();
        assert_eq!(log["version"], "2.1.0");
        let run = &log["runs"][0];
        assert_eq!(run["tool"]["driver"]["name"], "keywire");
        let rules: Vec<&str> = run["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            vec!["KeywirePolicy/keyVaults", "KeywirePolicy/tokenExpiration"]
        );
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[0]["level"], "error");
        assert_eq!(results[0]["ruleIndex"], 0);
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"],
            serde_json::json!({"artifactLocation": {"uri": "deploy.yaml"}, "region": {"startLine": 3}})
        );
        assert_eq!(
            results[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            "Deployment/web (namespace prod).spec.template.metadata.annotations[keywire.dev/keyvault]"
        );
        assert_eq!(results[1]["level"], "warning");
        assert_eq!(results[1]["ruleIndex"], 1);
        assert!(
            results[1]["locations"][0]["physicalLocation"]
                .get("region")
                .is_none()
        );
        // A denial no policy made is its own rule; fingerprints are stable and distinct.
        let mut contract = sample()[0].clone();
        contract.violations.clear();
        contract.denial = Some("annotation keywire.dev/identity=\"magic\" is invalid".into());
        let log: serde_json::Value = serde_json::from_str(&sarif(&[contract.clone()])).unwrap();
        let result = &log["runs"][0]["results"][0];
        assert_eq!(result["ruleId"], SARIF_DENIED_RULE);
        assert_eq!(
            result["partialFingerprints"],
            serde_json::from_str::<serde_json::Value>(&sarif(&[contract])).unwrap()["runs"][0]["results"]
                [0]["partialFingerprints"]
        );
    }

    #[test]
    fn junit_is_well_formed_whatever_the_names_carry() {
        let mut results = sample();
        // Raw, as a caller that did not go through `results` would pass them.
        results[0].object =
            "Deployment/a\u{1}\u{8}\u{1b}[2J\u{b}\u{c}\u{fffe}<&>\"'\r\n::error::x".into();
        results[0].denial = Some("denied\u{0}\u{1f}\ttab".into());
        results[1].warnings = vec!["w\u{7}".into()];
        let xml = junit(&results, true);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase"))
            .unwrap();
        assert_eq!(
            case.attribute("name"),
            Some("Deployment/a\\u{1}\\u{8}\\u{1b}[2J\\u{b}\\u{c}\\u{fffe}<&>\"'\r\n::error::x")
        );
        let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(
            failure.attribute("message"),
            Some("denied\\u{0}\\u{1f}\ttab")
        );
    }

    #[test]
    fn results_escape_what_the_manifest_says() {
        let r = ObjectResult::refused(
            "Namespace/a\nb".into(),
            "f.yaml".into(),
            "redefines Namespace a\n::error::x".into(),
        );
        assert_eq!(r.object, "Namespace/a\\nb");
        assert_eq!(
            r.denial.as_deref(),
            Some("redefines Namespace a\\n::error::x")
        );
        let gh = github(&[r]);
        assert_eq!(gh.lines().count(), 1, "{gh}");
    }
}
