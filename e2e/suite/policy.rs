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
        // A misspelled rule: kubectl's strict field validation refuses it (never a silent no-op).
        (
            json!({"keyVault": {"allowed": ["kv-prod-*"]}}),
            r#"unknown field "spec.keyVault""#,
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

/// Wait until the webhook's policy cache enforces e2e-prod in `ns`: a dry run of a forbidden pod.
async fn wait_for_enforcement(ns: &str) {
    let probe = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "namespace": ns, "labels": {"keywire.dev/inject": "true"},
            "annotations": {"keywire.dev/keyvault": "kv-dev-probe", "keywire.dev/objects": "a",
                "keywire.dev/identity": "managed-identity", "keywire.dev/tenant-id": "t.example.com"}},
        "spec": {"serviceAccountName": "shop", "containers": [{"name": "a", "image": "busybox"}]}});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&probe.to_string()),
        );
        if stderr(&out).contains("KeywirePolicy e2e-prod") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policies never took effect: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The routes around policy that need the API server: editing a running pod's annotations,
/// ReplicationController templates, and namespaces the webhook's cache has not seen yet.
#[tokio::test]
async fn policy_judges_pod_updates_replication_controllers_and_new_namespaces() {
    let (_guard, _client) = setup().await;
    let out = kubectl(
        &[
            "apply",
            "-f",
            policy_file("policies.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Unique per run: there is no namespace controller here to finish deleting old ones.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ns = &format!("integrity-{run}");
    let setup_objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"keywire-e2e/env": "prod"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop", "namespace": ns,
         "annotations": {"azure.workload.identity/client-id": "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e",
                         "azure.workload.identity/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}},
    ]});
    let out = kubectl(&["apply", "-f", "-"], Some(&setup_objects.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_enforcement(ns).await;

    // UPDATE: a compliant pod is admitted; pointing it at another vault afterwards is refused.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders", "namespace": ns, "labels": {"keywire.dev/inject": "true"},
            "annotations": {"keywire.dev/keyvault": "kv-prod-orders", "keywire.dev/objects": "secret/db"}},
        "spec": {"serviceAccountName": "shop", "containers": [{"name": "a", "image": "busybox"}]}});
    let out = kubectl(&["create", "-f", "-"], Some(&pod.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kubectl(
        &[
            "annotate",
            "pod",
            "orders",
            "-n",
            ns,
            "--overwrite",
            "keywire.dev/keyvault=kv-dev-loot",
        ],
        None,
    );
    assert!(!out.status.success(), "the edit was admitted");
    // Every broken rule is listed; the one that matters here is the vault.
    assert!(
        stderr(&out).contains(r#"admission webhook "validate.keywire.dev" denied the request: "#)
            && stderr(&out).contains("KeywirePolicy e2e-prod rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-loot is not allowed; allowed: kv-prod-*"),
        "{}",
        stderr(&out)
    );
    let stored = kubectl(&["get", "pod", "orders", "-n", ns, "-o", "json"], None);
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["keywire.dev/keyvault"],
        "kv-prod-orders"
    );
    // Other metadata stays editable.
    let out = kubectl(&["label", "pod", "orders", "-n", ns, "team=checkout"], None);
    assert!(out.status.success(), "{}", stderr(&out));

    // A ReplicationController's template is judged like a Deployment's.
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "legacy", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"app": "legacy"}, "template": {
            "metadata": {"labels": {"app": "legacy", "keywire.dev/inject": "true"},
                "annotations": {"keywire.dev/keyvault": "kv-dev-loot", "keywire.dev/objects": "secret/db"}},
            "spec": {"serviceAccountName": "shop", "containers": [{"name": "a", "image": "busybox"}]}}}});
    let out = kubectl(&["create", "-f", "-"], Some(&rc.to_string()));
    assert!(
        !out.status.success(),
        "the ReplicationController was admitted"
    );
    assert!(
        stderr(&out).contains(r#"admission webhook "validate.keywire.dev" denied the request: KeywirePolicy e2e-prod rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault])"#),
        "{}",
        stderr(&out)
    );

    // A namespace (and a SecretProviderClass) created a moment ago are judged as they are, every
    // time: a hand-written CSI volume under keywire's name, in a pod that never opted in, reading
    // a forbidden vault through its class.
    for i in 0..5 {
        let fresh = format!("integrity-fresh-{run}-{i}");
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": fresh, "labels": {"keywire-e2e/env": "prod"}}},
            // No controller-manager here: the ServiceAccount admission plugin needs the default one.
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": fresh}},
            {"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
             "metadata": {"name": "loot", "namespace": fresh},
             "spec": {"provider": "azure", "parameters": {"keyvaultName": "kv-dev-loot",
                "clientID": "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e", "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "raw", "namespace": fresh},
             "spec": {"containers": [{"name": "a", "image": "busybox",
                "volumeMounts": [{"name": "keywire-secrets-store", "mountPath": "/s"}]}],
              "volumes": [{"name": "keywire-secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io",
                "volumeAttributes": {"secretProviderClass": "loot"}}}]}},
        ]});
        let out = kubectl(&["create", "-f", "-"], Some(&objects.to_string()));
        assert!(!out.status.success(), "{fresh}: the pod was admitted");
        assert_eq!(
            stderr(&out).lines().last().unwrap_or_default(),
            r#"Error from server (Forbidden): error when creating "STDIN": admission webhook "validate.keywire.dev" denied the request: KeywirePolicy e2e-prod rule keyVaults (spec.volumes[0]): volume keywire-secrets-store reads key vault kv-dev-loot (SecretProviderClass loot), which is not allowed; allowed: kv-prod-*; KeywirePolicy e2e-prod rule forbidUnmanagedSecretStoreVolumes (spec.volumes[0]): volume keywire-secrets-store uses secrets-store.csi.k8s.io directly (it is not the volume keywire wires for this pod); use keywire annotations instead"#,
            "{fresh}"
        );
    }
}

/// Sum of `keywire_admission_requests_total` for one endpoint, from the shared webhook.
async fn reviews(metrics_addr: &str, endpoint: &str) -> f64 {
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = "keywire_admission_requests_total{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("endpoint=\"{endpoint}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The validating webhook's match condition: pods and templates that touch neither Key Vault
/// nor an Azure identity are never sent (0 calls), while every route policy judges still is: a
/// hand-written client secret in a pod that never opted in is refused.
#[tokio::test]
async fn pods_that_touch_no_azure_identity_never_reach_the_validating_webhook() {
    let (guard, _client) = setup().await;
    let metrics = guard
        .as_ref()
        .and_then(|s| s.webhook.as_ref())
        .map(|w| w.metrics_addr.clone())
        .unwrap();
    let out = kubectl(
        &[
            "apply",
            "-f",
            policy_file("policies.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let ns = &format!("quiet-{run}");
    let setup_objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"keywire-e2e/env": "prod"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "shop", "namespace": ns}},
    ]});
    let out = kubectl(&["apply", "-f", "-"], Some(&setup_objects.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_enforcement(ns).await;

    // A plain pod (it gets the API server's own projected token, which has no audience) and a
    // plain Deployment: no call to either webhook.
    let before = (
        reviews(&metrics, "mutate").await,
        reviews(&metrics, "validate").await,
    );
    let plain = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": ns},
         "spec": {"containers": [{"name": "a", "image": "busybox", "env": [{"name": "LOG", "value": "1"}]}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain", "namespace": ns},
         "spec": {"selector": {"matchLabels": {"app": "plain"}}, "template": {
            "metadata": {"labels": {"app": "plain"}},
            "spec": {"containers": [{"name": "a", "image": "busybox"}]}}}},
    ]});
    let out = kubectl(&["create", "-f", "-"], Some(&plain.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = (
        reviews(&metrics, "mutate").await,
        reviews(&metrics, "validate").await,
    );
    assert_eq!(
        after, before,
        "plain objects reached keywire (mutate, validate)"
    );

    // An AZURE_* variable is a route to Entra: sent, judged and refused (service principal).
    let secret = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sp", "namespace": ns},
        "spec": {"containers": [{"name": "a", "image": "busybox",
            "env": [{"name": "AZURE_CLIENT_SECRET", "value": "not-a-real-secret"}]}]}});
    let out = kubectl(&["create", "-f", "-"], Some(&secret.to_string()));
    assert!(!out.status.success(), "the client-secret pod was admitted");
    assert!(
        stderr(&out).contains(r#"admission webhook "validate.keywire.dev" denied the request: KeywirePolicy e2e-prod rule identity"#),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("not-a-real-secret"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        reviews(&metrics, "validate").await,
        before.1 + 1.0,
        "one validating review for the client-secret pod"
    );
}
