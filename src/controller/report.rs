//! What policy looks like from outside keywire: one OpenReports `Report` (openreports.io/v1alpha1,
//! the successor of the Policy Working Group's PolicyReport) per namespace, so Policy Reporter and
//! Kyverno users see keywire beside their other engines; and each KeywirePolicy's `status`
//! (observed generation, a Ready condition, violation counts). Pure functions of what the
//! reconciles found.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::controller::content;
use crate::controller::desired::{CONTENT_HASH, Desired, MANAGED_BY, MANAGED_BY_LABEL};
use crate::core::policy::Enforcement;

pub const REPORT_API_VERSION: &str = "openreports.io/v1alpha1";
pub const REPORT_KIND: &str = "Report";
/// The Report's name in every namespace.
pub const REPORT_NAME: &str = "keywire-policy";
/// `results[].source`: how report readers tell keywire's results from other engines'.
pub const SOURCE: &str = "keywire";

fn result_of(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Warn => "warn",
        // Enforce on an object that already exists (the policy came later) and Audit both mean
        // "violates, and runs anyway".
        Enforcement::Enforce | Enforcement::Audit => "fail",
    }
}

fn severity_of(e: Enforcement) -> &'static str {
    match e {
        Enforcement::Enforce => "high",
        Enforcement::Audit => "medium",
        Enforcement::Warn => "low",
    }
}

/// The namespace's Report, and the hash of its content (timestamps excluded), or `None` when no
/// policy selects anything in it.
pub fn report(namespace: &str, desired: &Desired, now: i64) -> Option<(Value, String)> {
    if desired.audited == 0 {
        return None;
    }
    let mut results = Vec::new();
    let (mut fail, mut warn) = (0, 0);
    for finding in &desired.findings {
        for v in &finding.violations {
            match result_of(v.enforcement) {
                "warn" => warn += 1,
                _ => fail += 1,
            }
            results.push(json!({
                "policy": v.policy,
                "rule": v.rule,
                "result": result_of(v.enforcement),
                "severity": severity_of(v.enforcement),
                "scored": true,
                "source": SOURCE,
                "category": "Key Vault and Azure identity",
                "message": v.message,
                "properties": {"enforcement": v.enforcement.as_str(), "field": v.field},
                "resources": [{
                    "apiVersion": finding.consumer.api_version,
                    "kind": finding.consumer.kind,
                    "name": finding.consumer.name,
                    "namespace": namespace,
                    "uid": finding.consumer.uid,
                }],
            }));
        }
    }
    let summary = json!({
        "pass": desired.audited - desired.findings.len(),
        "fail": fail,
        "warn": warn,
        "error": 0,
        "skip": 0,
    });
    let hash = content::content_hash(
        &[
            (
                "results".to_string(),
                serde_json::to_vec(&results).unwrap_or_default(),
            ),
            (
                "summary".to_string(),
                serde_json::to_vec(&summary).unwrap_or_default(),
            ),
        ]
        .into(),
    );
    for r in &mut results {
        r["timestamp"] = json!({"seconds": now, "nanos": 0});
    }
    Some((
        json!({
            "apiVersion": REPORT_API_VERSION,
            "kind": REPORT_KIND,
            "metadata": {
                "name": REPORT_NAME,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {CONTENT_HASH: hash},
            },
            "source": SOURCE,
            "summary": summary,
            "results": results,
        }),
        hash,
    ))
}

/// Violations of one policy across the cluster, by enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub enforce: u64,
    pub warn: u64,
    pub audit: u64,
    pub namespaces: u64,
}

/// Adds up what every namespace found: policy name -> counts.
pub fn counts(per_namespace: &BTreeMap<String, Desired>) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for desired in per_namespace.values() {
        let mut seen = std::collections::BTreeSet::new();
        for v in desired.findings.iter().flat_map(|f| &f.violations) {
            let c = out.entry(v.policy.clone()).or_default();
            match v.enforcement {
                Enforcement::Enforce => c.enforce += 1,
                Enforcement::Warn => c.warn += 1,
                Enforcement::Audit => c.audit += 1,
            }
            if seen.insert(v.policy.clone()) {
                c.namespaces += 1;
            }
        }
    }
    out
}

/// A KeywirePolicy's status: `Ready` when keywire parsed and enforces it, else `False` with the
/// reason; with the violation counts.
pub fn policy_status(generation: i64, error: Option<&str>, counts: Counts, now: &str) -> Value {
    let (status, reason, message) = match error {
        None => (
            "True",
            "Enforced",
            "keywire's webhooks and controller enforce this policy".to_string(),
        ),
        Some(e) => (
            "False",
            "Invalid",
            format!("keywire ignores this policy: {e}"),
        ),
    };
    json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": now,
        }],
        "violations": {
            "enforce": counts.enforce,
            "warn": counts.warn,
            "audit": counts.audit,
            "namespaces": counts.namespaces,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::desired::{ConsumerRef, Finding};
    use crate::core::rules::Violation;

    fn finding(name: &str, policy: &str, enforcement: Enforcement) -> Finding {
        Finding {
            consumer: ConsumerRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            violations: vec![Violation {
                policy: policy.into(),
                rule: "keyVaults",
                field: "spec.template.metadata.annotations[keywire.dev/keyvault]".into(),
                enforcement,
                message: "key vault kv-dev is not allowed; allowed: kv-prod-*".into(),
            }],
        }
    }

    #[test]
    fn the_report_has_one_result_per_violation_and_a_summary() {
        let desired = Desired {
            audited: 3,
            findings: vec![
                finding("a", "prod", Enforcement::Audit),
                finding("b", "prod", Enforcement::Warn),
            ],
            ..Desired::default()
        };
        let (report, hash) = report("shop", &desired, 1_700_000_000).unwrap();
        assert_eq!(report["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(report["metadata"]["name"], "keywire-policy");
        assert_eq!(
            report["summary"],
            json!({"pass": 1, "fail": 1, "warn": 1, "error": 0, "skip": 0})
        );
        let r = &report["results"][0];
        assert_eq!(r["policy"], "prod");
        assert_eq!(r["rule"], "keyVaults");
        assert_eq!(r["result"], "fail");
        assert_eq!(r["source"], "keywire");
        assert_eq!(r["properties"]["enforcement"], "Audit");
        assert_eq!(r["resources"][0]["kind"], "Deployment");
        assert_eq!(r["resources"][0]["namespace"], "shop");
        assert_eq!(r["timestamp"]["seconds"], 1_700_000_000);
        assert_eq!(report["results"][1]["result"], "warn");
        // The hash ignores the time, so an unchanged report is not rewritten.
        assert_eq!(
            super::report("shop", &desired, 1_800_000_000).unwrap().1,
            hash
        );
        assert!(super::report("shop", &Desired::default(), 0).is_none());
    }

    #[test]
    fn counts_add_up_across_namespaces_and_status_says_ready_or_invalid() {
        let one = Desired {
            audited: 2,
            findings: vec![
                finding("a", "prod", Enforcement::Audit),
                finding("b", "prod", Enforcement::Audit),
            ],
            ..Desired::default()
        };
        let two = Desired {
            audited: 1,
            findings: vec![finding("c", "prod", Enforcement::Enforce)],
            ..Desired::default()
        };
        let all: BTreeMap<String, Desired> =
            [("x".to_string(), one), ("y".to_string(), two)].into();
        let c = counts(&all)["prod"];
        assert_eq!(
            c,
            Counts {
                enforce: 1,
                warn: 0,
                audit: 2,
                namespaces: 2
            }
        );
        let ok = policy_status(3, None, c, "2026-12-02T00:00:00Z");
        assert_eq!(ok["observedGeneration"], 3);
        assert_eq!(ok["conditions"][0]["status"], "True");
        assert_eq!(ok["violations"]["audit"], 2);
        let bad = policy_status(
            4,
            Some("spec: unknown field `keyVault`"),
            Counts::default(),
            "t",
        );
        assert_eq!(bad["conditions"][0]["reason"], "Invalid");
        assert!(
            bad["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field `keyVault`")
        );
    }
}
