//! KeywirePolicy on the real API server: the CRD's schema, Enforce/Warn/Audit through both
//! webhooks, unselected namespaces, the clientID-override volume, and parity with
//! `keywire mutate --policy` on the same manifests.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::setup;

fn policy_file(name: &str) -> std::path::PathBuf {
    repo(&format!("e2e/data/policy/{name}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn policy_crd_applies_and_its_schema_rejects_invalid_policies() {
    let (_guard, _client) = setup().await;
    let cases = [
        (
            json!({"enforcement": "Sometimes"}),
            r#"Unsupported value: "Sometimes""#,
        ),
        (
            json!({"tokenExpiration": {"min": 7200, "max": 3600}}),
            "min must not exceed max",
        ),
        (
            json!({"identity": {"allowed": ["magic"]}}),
            r#"Unsupported value: "magic""#,
        ),
        (
            json!({"identity": {"allowed": ["workload"]}, "defaults": {"identity": "service-principal"}}),
            "defaults.identity must be one of identity.allowed",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            "In and NotIn need values",
        ),
    ];
    for (spec, want) in cases {
        let policy = keywire::fixtures::policy("invalid", spec);
        let out = kubectl(&["create", "-f", "-"], Some(&policy.to_string()));
        assert!(!out.status.success(), "accepted: {policy}");
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
    let valid = std::fs::read_to_string(policy_file("policies.yaml")).unwrap();
    let out = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&valid));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// What the cluster answered for one object.
struct Verdict {
    object: String,
    created: bool,
    stderr: String,
}

#[tokio::test]
async fn policies_judge_pods_and_workloads_as_keywire_mutate_does() {
    let (guard, _client) = setup().await;
    let metrics_addr = guard
        .as_ref()
        .unwrap()
        .webhook
        .as_ref()
        .unwrap()
        .metrics_addr
        .clone();
    let manifests = keywire::cli::manifests::parse_documents(
        &std::fs::read_to_string(policy_file("workloads.yaml")).unwrap(),
    )
    .unwrap();
    let (setup_objects, judged): (Vec<&Value>, Vec<&Value>) = manifests
        .iter()
        .partition(|o| matches!(o["kind"].as_str(), Some("Namespace" | "ServiceAccount")));
    for o in setup_objects {
        let out = kubectl(&["apply", "-f", "-"], Some(&o.to_string()));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = kubectl(
        &[
            "apply",
            "-f",
            policy_file("policies.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The webhook's policy watch is eventually consistent: wait until it enforces.
    let probe = judged
        .iter()
        .find(|o| o["metadata"]["name"] == "checkout-debug")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&probe.to_string()),
        );
        if stderr(&out).contains("KeywirePolicy e2e-prod") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policies never took effect: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut verdicts = Vec::new();
    for o in &judged {
        let out = kubectl(&["create", "-f", "-"], Some(&o.to_string()));
        verdicts.push(Verdict {
            object: format!(
                "{}/{} (namespace {})",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap()
            ),
            created: out.status.success(),
            stderr: stderr(&out),
        });
    }
    let verdict = |name: &str| {
        verdicts
            .iter()
            .find(|v| v.object.contains(&format!("/{name} ")))
            .unwrap()
    };

    // Enforce: a Deployment is refused at apply time, by the validating webhook, naming rule, field and policy.
    assert!(!verdict("checkout").created);
    assert!(verdict("checkout").stderr.contains(
        r#"admission webhook "validate.keywire.dev" denied the request: KeywirePolicy e2e-prod rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-shop is not allowed; allowed: kv-prod-*"#),
        "{}", verdict("checkout").stderr);
    // ... and a pod, already by the mutating webhook.
    assert!(verdict("checkout-debug").stderr.contains(
        r#"admission webhook "mutate.pods.keywire.dev" denied the request: KeywirePolicy e2e-prod rule keyVaults (metadata.annotations[keywire.dev/keyvault])"#),
        "{}", verdict("checkout-debug").stderr);
    // The clientID-overriding volume.
    assert!(!verdict("raw-csi").created);
    assert!(verdict("raw-csi").stderr.contains(
        "KeywirePolicy e2e-prod rule forbidUnmanagedSecretStoreVolumes (spec.volumes[0]): volume secrets uses secrets-store.csi.k8s.io directly"),
        "{}", verdict("raw-csi").stderr);
    // Warn: admitted, and kubectl shows the warning.
    assert!(verdict("report").created, "{}", verdict("report").stderr);
    assert!(
        verdict("report").stderr.contains(
            "Warning: e2e-prod/tokenExpiration: token expiration 86400s is outside 3600..7200s"
        ),
        "{}",
        verdict("report").stderr
    );
    // Unselected namespace: untouched by the policies.
    assert!(
        verdict("checkout-dev").created,
        "{}",
        verdict("checkout-dev").stderr
    );
    assert!(!verdict("checkout-dev").stderr.contains("KeywirePolicy"));
    // Audit: admitted, with an Event and a metric.
    assert!(verdict("cart").created, "{}", verdict("cart").stderr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = kubectl(
            &[
                "get",
                "events",
                "-n",
                "policy-prod",
                "--field-selector",
                "reason=PolicyAudit",
                "-o",
                "json",
            ],
            None,
        );
        let events: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let found = events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["kind"] == "Deployment"
                && e["involvedObject"]["name"] == "cart"
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("KeywirePolicy e2e-audit rule secretProviderClasses")
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PolicyAudit Event for Deployment/cart: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(r#"keywire_policy_violations_total{policy="e2e-audit",rule="secretProviderClasses",enforcement="Audit"}"#)),
        "{metrics}"
    );

    // The CI dry run reaches the same verdicts on the same manifests.
    let out = Command::new(keywire())
        .args([
            "mutate",
            "-o",
            "json",
            "--policy",
            policy_file("policies.yaml").to_str().unwrap(),
            "-f",
            policy_file("workloads.yaml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "Enforce violations exit 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["report"]["results"].as_array().unwrap();
    assert_eq!(results.len(), verdicts.len());
    for v in &verdicts {
        let r = results
            .iter()
            .find(|r| r["object"] == v.object.as_str())
            .unwrap_or_else(|| panic!("{} not reported", v.object));
        assert_eq!(
            r["allowed"].as_bool(),
            Some(v.created),
            "{}: cluster and CLI disagree",
            v.object
        );
        if let Some(denial) = r["denial"].as_str() {
            assert!(
                v.stderr.contains(denial),
                "{}: CLI denial {denial:?} not what kubectl saw: {}",
                v.object,
                v.stderr
            );
        }
        for w in r["warnings"].as_array().unwrap() {
            assert!(
                v.stderr
                    .contains(&format!("Warning: {}", w.as_str().unwrap())),
                "{}: {}",
                v.object,
                v.stderr
            );
        }
    }
}
