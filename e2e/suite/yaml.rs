//! Issue 14 on the real control plane: `keywire mutate -o yaml` piped to `kubectl apply` becomes
//! exactly the objects `keywire mutate -o json` predicts, for YAML that YAML 1.1 (kubectl's
//! reader) reads differently from YAML 1.2: octal modes, quoted `on`/`yes`/`1_000`, merge keys,
//! `!!binary`, `0x1`, `1e3`.

use serde_json::{Value, json};

use crate::controller::fresh;
use crate::harness::*;
use crate::setup;

/// Runs `keywire mutate -n NAMESPACE -o FORMAT` on the round-trip manifest.
fn mutate(namespace: &str, format: &str) -> String {
    let file = repo("e2e/manifests/yaml-round-trip.yaml");
    let stdout = run_keywire_mutate(&["-n", namespace, "-o", format, "-f", file.to_str().unwrap()]);
    String::from_utf8(stdout).unwrap()
}

/// Where `predicted` is not inside `stored` (every key with the same value, arrays of the same
/// length element by element; the API server only adds defaults), as a JSON pointer.
fn not_contained(predicted: &Value, stored: &Value, at: &str) -> Option<String> {
    match (predicted, stored) {
        (Value::Object(p), Value::Object(s)) => p.iter().find_map(|(k, v)| match s.get(k) {
            Some(sv) => not_contained(v, sv, &format!("{at}/{k}")),
            None => Some(format!("{at}/{k}: missing, predicted {v}")),
        }),
        (Value::Array(p), Value::Array(s)) if p.len() == s.len() => p
            .iter()
            .zip(s)
            .enumerate()
            .find_map(|(i, (p, s))| not_contained(p, s, &format!("{at}/{i}"))),
        _ if predicted == stored => None,
        _ => Some(format!("{at}: predicted {predicted}, stored {stored}")),
    }
}

#[tokio::test]
async fn yaml_output_applied_by_kubectl_is_stored_as_predicted() {
    let (_guard, client) = setup().await;
    let namespace = fresh("yaml-round-trip");
    ensure_namespace(&client, &namespace).await;
    // Pods need their ServiceAccount before admission; the manifest applies it again.
    ensure_service_account(&client, &namespace, "app", json!({})).await;

    let predicted: Value = serde_json::from_str(&mutate(&namespace, "json")).unwrap();
    let predicted = predicted["items"].as_array().unwrap();
    let yaml = mutate(&namespace, "yaml");
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=keywire-e2e-yaml",
            "-n",
            &namespace,
            "-f",
            "-",
        ],
        Some(&yaml),
    );
    assert!(
        out.status.success(),
        "kubectl apply of keywire's YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let kinds: Vec<&str> = predicted
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ConfigMap", "Secret", "Deployment", "Pod"]
    );
    for object in predicted {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let out = kubectl(&["get", "-n", &namespace, kind, name, "-o", "json"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut stored: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut object = object.clone();
        if kind == "Pod" {
            // ServiceAccount admission adds its token volume; `normalise` drops it (and the name).
            stored = normalise(&stored);
            object["metadata"].as_object_mut().unwrap().remove("name");
        }
        if kind == "Secret" {
            // stringData is write-only: the API server stores it base64-encoded under data.
            let string_data = object
                .as_object_mut()
                .unwrap()
                .remove("stringData")
                .unwrap();
            for (key, value) in string_data.as_object().unwrap() {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(stored["data"][key].as_str().unwrap())
                    .unwrap();
                assert_eq!(Value::from(String::from_utf8(decoded).unwrap()), *value);
            }
        }
        assert_eq!(
            not_contained(&object, &stored, &format!("{kind}/{name}")),
            None,
            "stored object differs from `keywire mutate -o json`"
        );
    }

    // The values a YAML 1.2 writer would have broken, as the API server holds them.
    let get = |kind: &str, name: &str| -> Value {
        let out = kubectl(&["get", "-n", &namespace, kind, name, "-o", "json"], None);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let config = get("configmap", "flags");
    assert_eq!(config["data"]["feature"], "on");
    assert_eq!(config["data"]["legacy"], "no");
    assert_eq!(config["data"]["octal"], "0755");
    assert_eq!(config["metadata"]["annotations"]["count"], "1_000");
    assert_eq!(config["metadata"]["annotations"]["false"], "n");
    assert_eq!(config["metadata"]["labels"]["tier"], "on");
    let web = get("deployment", "web");
    assert_eq!(web["spec"]["replicas"], 1);
    assert_eq!(web["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(web["spec"]["progressDeadlineSeconds"], 1000);
    let pod = &web["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["configMap"]["defaultMode"], 420);
    assert_eq!(pod["volumes"][0]["configMap"]["items"][0]["mode"], 493);
    assert_eq!(pod["volumes"][1]["secret"]["defaultMode"], 256);
    assert_eq!(
        pod["containers"][0]["env"][0],
        json!({"name": "VERBOSE", "value": "on"})
    );
    let probe = get("pod", "probe");
    assert_eq!(probe["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        probe["spec"]["containers"][0]["env"][0],
        json!({"name": "on", "value": "off"})
    );
    assert_eq!(
        probe["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
}
