//! CI reports of `keywire mutate`: a human table, JSON, JUnit XML and GitHub Actions annotations,
//! all rendered from the same per-object results.

use serde::Serialize;

use crate::engine::Outcome;
use crate::manifests::Mutated;
use crate::policy::Enforcement;

/// One manifest's verdict, as every report format shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    pub object: String,
    pub file: String,
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

/// Results for the objects that carry a pod (template); `file` names where each came from.
pub fn results(mutated: &[(String, Mutated)]) -> Vec<ObjectResult> {
    mutated
        .iter()
        .filter_map(|(file, m)| {
            let d = m.decision.as_ref()?;
            Some(ObjectResult {
                object: m.reference(),
                file: file.clone(),
                allowed: d.is_allowed(),
                denial: match &d.outcome {
                    Outcome::Denied(reason) => Some(reason.clone()),
                    _ => None,
                },
                warnings: d.warnings.clone(),
                violations: d
                    .violations
                    .iter()
                    .map(|v| ViolationRow {
                        policy: v.policy.clone(),
                        rule: v.rule.to_string(),
                        field: v.field.clone(),
                        enforcement: v.enforcement.as_str().to_string(),
                        message: v.message.clone(),
                    })
                    .collect(),
            })
        })
        .collect()
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

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ObjectResult> {
        vec![
            ObjectResult {
                object: "Deployment/web (namespace prod)".into(),
                file: "deploy.yaml".into(),
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
}
