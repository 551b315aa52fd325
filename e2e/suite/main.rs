//! End-to-end on a real kube-apiserver + etcd (started by e2e/run.sh): the API server calls
//! keywire over TLS, and every assertion is on what the API server stored or answered.
//! Run with `--test-threads=1`: the tests share one webhook registration.

mod azure;
mod bench;
mod chart;
mod controller;
mod harness;
mod policy;
mod yaml;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::*;
use k8s_openapi::api::core::v1::ServiceAccount;
use keywire::fixtures;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const DEMO: &str = "keywire-demo";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// The webhook process and the CA the API server currently trusts for it.
pub(crate) struct Shared {
    pub(crate) webhook: Option<Webhook>,
    pub(crate) addr: String,
    pub(crate) ca: String,
    pub(crate) cert_dir: std::path::PathBuf,
}

pub(crate) static SHARED: tokio::sync::Mutex<Option<Shared>> = tokio::sync::Mutex::const_new(None);

/// Starts (once) and registers the webhook; returns a guard that serialises the tests.
pub(crate) async fn setup() -> (
    tokio::sync::MutexGuard<'static, Option<Shared>>,
    kube::Client,
) {
    let mut guard = SHARED.lock().await;
    let client = client().await;
    if guard.is_none() {
        ensure_namespace(&client, DEMO).await;
        ensure_service_account(&client, DEMO, "probe", json!({})).await;
        // The webhook watches KeywirePolicies: their CRD comes first. OpenReports' Report CRD
        // (from its Go module) is where the controller writes policy results.
        let openreports = std::process::Command::new(repo("e2e/crds/openreports.sh"))
            .output()
            .unwrap();
        assert!(
            openreports.status.success(),
            "{}",
            String::from_utf8_lossy(&openreports.stderr)
        );
        let openreports = String::from_utf8(openreports.stdout)
            .unwrap()
            .trim()
            .to_string();
        for crd in [
            repo("webhook-config/crd-keywirepolicy.yaml"),
            repo("e2e/manifests/secretproviderclass-crd.yaml"),
            std::path::PathBuf::from(openreports),
        ] {
            let text = std::fs::read_to_string(crd).unwrap();
            let out = kubectl(&["apply", "-f", "-"], Some(&text));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for name in [
            "keywirepolicies.keywire.dev",
            "secretproviderclasses.secrets-store.csi.x-k8s.io",
            "reports.openreports.io",
        ] {
            let out = kubectl(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{name}"),
                ],
                None,
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cert_dir = state_dir().join("webhook-certs");
        let ca = make_certs(&cert_dir);
        let webhook = Webhook::start(&cert_dir, "127.0.0.1:0");
        register(&client, &webhook.url(), &ca).await;
        wait_until_mutating(&client, DEMO, "probe").await;
        *guard = Some(Shared {
            addr: webhook.addr.clone(),
            webhook: Some(webhook),
            ca,
            cert_dir,
        });
    }
    (guard, client)
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// The pod the ReplicaSet controller would create from a workload's template.
fn pod_from_template(workload: &Value) -> Value {
    let template = workload
        .pointer(keywire::core::workload::pod_pointer(workload).unwrap())
        .unwrap();
    let mut meta = template["metadata"].clone();
    meta["generateName"] = json!(format!(
        "{}-",
        workload["metadata"]["name"].as_str().unwrap()
    ));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Point 1 (and 2 for the Deployments): every example is stored exactly as `keywire mutate` predicts.
#[tokio::test]
async fn examples_are_stored_as_keywire_mutate_predicts() {
    let (_guard, client) = setup().await;
    let discovery = discovery(&client).await;
    let mut compared = 0;
    let mut files: Vec<_> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let originals =
            keywire::cli::manifests::parse_documents(&std::fs::read_to_string(&file).unwrap())
                .unwrap();
        let predicted = keywire_mutate(&file);
        assert_eq!(originals.len(), predicted.len());
        for (original, predicted) in originals.iter().zip(&predicted) {
            let ns = original["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let (pod, predicted_pod) = match original["kind"].as_str().unwrap() {
                "Pod" => (original.clone(), predicted.clone()),
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" | "ReplicaSet" => {
                    apply_object(&client, &discovery, original).await;
                    (pod_from_template(original), pod_from_template(predicted))
                }
                _ => {
                    apply_object(&client, &discovery, original).await;
                    continue;
                }
            };
            let stored = create_pod(&client, ns, &pod, false)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let wired = stored["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| {
                    v["name"] == "keywire-secrets-store"
                        || v["name"].as_str().is_some_and(|n| {
                            n.starts_with(keywire::core::azure::RESERVED_VOLUME_PREFIX)
                        })
                });
            assert!(
                wired,
                "{}: the API server stored the pod unmutated",
                file.display()
            );
            // The offline prediction, defaulted by the same API server (the webhook is a no-op on it).
            // A dry run still checks names, so it goes in under another one; names are normalised away.
            let mut predicted_pod = predicted_pod;
            if let Some(name) = predicted_pod["metadata"]["name"].as_str() {
                predicted_pod["metadata"]["name"] = json!(format!("{name}-predicted"));
            }
            let expected = create_pod(&client, ns, &predicted_pod, true).await.unwrap();
            assert_eq!(
                compact(&normalise(&stored)),
                compact(&normalise(&expected)),
                "{}: stored pod differs from `keywire mutate`",
                file.display()
            );
            compared += 1;
        }
    }
    assert!(compared >= 6, "only {compared} pods compared");
}

/// Point 2: pods created with generateName from one template share one SecretProviderClass.
#[tokio::test]
async fn deployment_pods_share_one_secret_provider_class() {
    let (_guard, client) = setup().await;
    let file = repo("examples/azure-vote-deployment.yaml");
    let objects =
        keywire::cli::manifests::parse_documents(&std::fs::read_to_string(&file).unwrap()).unwrap();
    ensure_service_account(
        &client,
        DEMO,
        "azure-vote",
        objects[0]["metadata"]["annotations"].clone(),
    )
    .await;
    let front = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "azure-vote-front")
        .unwrap();
    let mut classes = Vec::new();
    let mut names = Vec::new();
    for _ in 0..3 {
        let stored = create_pod(&client, DEMO, &pod_from_template(front), false)
            .await
            .unwrap();
        names.push(stored["metadata"]["name"].as_str().unwrap().to_string());
        classes.push(
            stored["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "keywire-secrets-store")
                .unwrap()["csi"]["volumeAttributes"]["secretProviderClass"]
                .clone(),
        );
    }
    names.dedup();
    assert_eq!(names.len(), 3, "generateName gave distinct pods");
    assert!(classes.iter().all(|c| c == &classes[0]), "{classes:?}");
    assert!(
        classes[0]
            .as_str()
            .unwrap()
            .starts_with("keywire-kv-azure-vote-")
    );
}

/// Point 3: workload identity from a real ServiceAccount annotation, and a real TokenRequest.
#[tokio::test]
async fn workload_identity_from_service_account_and_token_request() {
    let (_guard, client) = setup().await;
    let client_id = "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e";
    ensure_service_account(&client, DEMO, "wi-app", json!({
        "azure.workload.identity/client-id": client_id, "azure.workload.identity/tenant-id": TENANT})).await;
    let pod = fixtures::pod("wi-app")
        .opted_in()
        .annotations(
            json!({"keywire.dev/keyvault": "kv-wi", "keywire.dev/objects": "secret/s1",
            "keywire.dev/token-expiration": "7200"}),
        )
        .service_account("wi-app")
        .build();
    let stored = create_pod(&client, DEMO, &pod, false).await.unwrap();
    let c = &stored["spec"]["containers"][0];
    let injected: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        injected,
        vec![
            ("AZURE_CLIENT_ID".into(), client_id.into()),
            ("AZURE_TENANT_ID".into(), TENANT.into()),
            (
                "AZURE_FEDERATED_TOKEN_FILE".into(),
                "/var/run/secrets/azure/wi/token/azure-identity-token".into()
            ),
            (
                "AZURE_AUTHORITY_HOST".into(),
                "https://login.microsoftonline.com/".into()
            ),
        ]
    );
    let volume_name = keywire::core::azure::Layout::V16.volume_name("wi-app");
    let token_volume = stored["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume_name.as_str())
        .unwrap();
    assert_eq!(
        token_volume["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "api://AzureADTokenExchange", "expirationSeconds": 7200, "path": "token/azure-identity-token"})
    );
    assert!(c["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": volume_name, "mountPath": "/var/run/secrets/azure/wi", "readOnly": true})
    ));

    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), DEMO);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["api://AzureADTokenExchange"], "expirationSeconds": 3600}});
    let answer: Value = sa
        .create_subresource("token", "wi-app", &PostParams::default(), &request)
        .await
        .unwrap();
    let jwt = answer["status"]["token"].as_str().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], env("E2E_ISSUER"));
    assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{DEMO}:wi-app")
    );
}

/// Point 4: kubectl shows the specific denial.
#[tokio::test]
async fn kubectl_receives_the_denial() {
    let (_guard, _client) = setup().await;
    let pod = fixtures::managed_identity_pod("bad-expiry", "probe")
        .namespace(DEMO)
        .annotation("keywire.dev/secret-provider-class", "x")
        .annotation("keywire.dev/token-expiration", "60")
        .build()
        .to_string();
    let out = kubectl(&["create", "-f", "-"], Some(&pod));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"admission webhook "mutate.pods.keywire.dev" denied the request: annotation keywire.dev/token-expiration="60" is invalid: whole seconds from 3600 to 86400"#), "{stderr}");
    let get = kubectl(&["get", "pod", "-n", DEMO, "bad-expiry"], None);
    assert!(!get.status.success(), "a denied pod was stored");
}

/// Point 5: server-side dry run returns the mutated pod and stores nothing.
#[tokio::test]
async fn server_side_dry_run_returns_the_mutated_pod_and_stores_nothing() {
    let (_guard, _client) = setup().await;
    let pod = fixtures::managed_identity_pod("dry", "probe")
        .namespace(DEMO)
        .annotation("keywire.dev/identity", "service-principal")
        .build()
        .to_string();
    let out = kubectl(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&pod),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered: Value = serde_json::from_slice(&out.stdout).unwrap();
    let volume = answered["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "keywire-secrets-store")
        .unwrap();
    assert_eq!(
        volume["csi"],
        json!({"driver": "secrets-store.csi.k8s.io", "readOnly": true,
        "volumeAttributes": {"secretProviderClass": "mine"}, "nodePublishSecretRef": {"name": "secrets-store-creds"}})
    );
    assert_eq!(
        answered["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
    let get = kubectl(&["get", "pod", "-n", DEMO, "dry"], None);
    assert!(!get.status.success());
    assert!(String::from_utf8_lossy(&get.stderr).contains("NotFound"));
}

fn labelled_pod(name: &str, sa: &str) -> Value {
    fixtures::managed_identity_pod(name, sa).build()
}

/// Point 6: with the webhook down, only opted-in pods outside kube-system are refused; it then resumes.
#[tokio::test]
async fn availability_follows_failure_policy_and_recovers() {
    let (mut guard, client) = setup().await;
    let shared = guard.as_mut().unwrap();
    ensure_service_account(&client, "kube-system", "e2e", json!({})).await;
    shared.webhook.take().unwrap().stop();

    let refused = create_pod(&client, DEMO, &labelled_pod("while-down", "probe"), false)
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("failed calling webhook") && message.contains("mutate.pods.keywire.dev"),
        "{message}"
    );

    let plain = fixtures::pod(&controller::fresh("plain-while-down"))
        .service_account("probe")
        .containers(vec![fixtures::simple_container("c")])
        .build();
    let stored = create_pod(&client, DEMO, &plain, false).await.unwrap();
    assert!(
        stored["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("keywire.dev/status").is_none())
    );
    let system = create_pod(
        &client,
        "kube-system",
        &labelled_pod(&controller::fresh("system-while-down"), "e2e"),
        false,
    )
    .await
    .unwrap();
    assert!(
        system["metadata"]["annotations"]
            .get("keywire.dev/status")
            .is_none(),
        "kube-system must never be mutated"
    );

    // Restarted on the same address: service resumes with no re-registration.
    let webhook = Webhook::start(&shared.cert_dir, &shared.addr);
    wait_until_mutating(&client, DEMO, "probe").await;
    let stored = create_pod(
        &client,
        DEMO,
        &labelled_pod(&controller::fresh("after-restart"), "probe"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
    shared.webhook = Some(webhook);
}

/// Point 7: rotating the serving certificate under continuous pod creation fails no creation.
#[tokio::test]
async fn certificate_rotation_under_traffic_fails_nothing() {
    let (mut guard, client) = setup().await;
    let shared = guard.as_mut().unwrap();
    let url = format!("https://{}/mutate", shared.addr);
    let next_dir = state_dir().join("webhook-certs-next");
    let next_ca = make_certs(&next_dir);

    let created = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (client, created, failed, stop) = (
            client.clone(),
            created.clone(),
            failed.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match create_pod(
                    &client,
                    DEMO,
                    &labelled_pod(&format!("rotation-{i}"), "probe"),
                    false,
                )
                .await
                {
                    Ok(p) if p["metadata"]["annotations"]["keywire.dev/status"] == "injected" => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => failed
                        .lock()
                        .unwrap()
                        .push(format!("rotation-{i}: stored unmutated")),
                    Err(e) => failed.lock().unwrap().push(format!("rotation-{i}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 1. Trust both CAs. 2. Swap the serving pair atomically. 3. Trust only the new CA.
    register(&client, &url, &format!("{}{}", shared.ca, next_ca)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for f in ["tls.key", "tls.crt"] {
        let tmp = shared.cert_dir.join(format!(".{f}.new"));
        std::fs::copy(next_dir.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, shared.cert_dir.join(f)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    register(&client, &url, &next_ca).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    shared.ca = next_ca;

    let failures = failed.lock().unwrap().clone();
    let ok = created.load(Ordering::SeqCst);
    println!(
        "rotation under traffic: {ok} pods created, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok >= 30, "only {ok} pods created during rotation");
    let log = std::fs::read_to_string(state_dir().join("logs/webhook.log")).unwrap();
    assert!(
        log.contains("serving certificate reloaded"),
        "the webhook never reloaded"
    );
}

/// Point 8: a pod labelled for Azure Workload Identity is stored as that webhook would store it.
#[tokio::test]
async fn azure_workload_identity_drop_in() {
    let (_guard, client) = setup().await;
    let client_id = "8a9b0c1d-2e3f-4a5b-9c6d-7e8f9a0b1c2d";
    ensure_service_account(&client, DEMO, "awi", json!({
        "azure.workload.identity/client-id": client_id, "azure.workload.identity/tenant-id": TENANT})).await;
    let pod = fixtures::pod("awi")
        .azure_workload_identity()
        .annotation("azure.workload.identity/skip-containers", "sidecar")
        .service_account("awi")
        .init_containers(vec![fixtures::simple_container("init")])
        .containers(vec![
            json!({"name": "app", "image": "busybox", "env": [{"name": "AZURE_CLIENT_ID", "value": "own"}]}),
            fixtures::simple_container("sidecar"),
        ])
        .build();
    let stored = create_pod(&client, DEMO, &pod, false).await.unwrap();
    let wi_env = |client: &str| {
        json!([
        {"name": "AZURE_CLIENT_ID", "value": client},
        {"name": "AZURE_TENANT_ID", "value": TENANT},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/wi/token/azure-identity-token"},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}])
    };
    // v1.6.0's layout: the volume is named after the pod ("awi").
    let volume_name = keywire::core::azure::Layout::V16.volume_name("awi");
    let mount =
        json!({"name": volume_name, "mountPath": "/var/run/secrets/azure/wi", "readOnly": true});
    let spec = &stored["spec"];
    assert_eq!(spec["initContainers"][0]["env"], wi_env(client_id));
    assert!(
        spec["initContainers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&mount)
    );
    // The pod's own AZURE_CLIENT_ID wins; the others are appended after it.
    let app_env = spec["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        app_env[0],
        json!({"name": "AZURE_CLIENT_ID", "value": "own"})
    );
    assert_eq!(app_env[1..], wi_env(client_id).as_array().unwrap()[1..]);
    assert!(
        spec["containers"][1].get("env").is_none(),
        "skip-containers honoured"
    );
    assert!(
        !spec["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&mount)
    );
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume_name.as_str())
        .unwrap();
    assert_eq!(
        volume,
        &json!({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "token/azure-identity-token"}}]}})
    );
    assert!(
        stored["metadata"]["annotations"]
            .get("keywire.dev/status")
            .is_none(),
        "the drop-in adds no keywire marker"
    );
}

/// Issue 13: upstream v1.6.0's layout, the custom token endpoint with a ConfigMap CA, and the
/// proxy as a native sidecar (the API server is 1.35), for a pod and a Deployment's pod: the API
/// server stores exactly what `keywire mutate` predicts.
#[tokio::test]
async fn azure_workload_identity_v16_endpoint_and_proxy_are_stored_as_predicted() {
    let (_guard, client) = setup().await;
    let ns = "awi-v16-c";
    ensure_namespace(&client, ns).await;
    let client_id = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
    let sa = fixtures::service_account_object(
        ns,
        "bound",
        json!({"azure.workload.identity/client-id": client_id, "azure.workload.identity/tenant-id": TENANT}),
    );
    let pod = fixtures::pod("bound-app")
        .namespace(ns)
        .azure_workload_identity()
        .annotation("azure.workload.identity/use-identity-binding", "True")
        .annotation("azure.workload.identity/inject-proxy-sidecar", "true")
        .service_account("bound")
        .init_containers(vec![fixtures::simple_container("migrate")])
        .build();
    let mut template = pod.clone();
    template["metadata"] = json!({
        "labels": {"app": "bound", "azure.workload.identity/use": "true"},
        "annotations": pod["metadata"]["annotations"],
    });
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bound-web", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "bound"}}, "template": template}});
    let file = state_dir().join("awi-v16.yaml");
    std::fs::write(
        &file,
        [&sa, &pod, &deployment]
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    let predicted = keywire_mutate(&file);
    let discovery = discovery(&client).await;
    apply_object(&client, &discovery, &sa).await;
    let ca: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "not used: no pod runs here"}}),
    )
    .unwrap();
    let _ = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &ca)
        .await;

    for (original, prediction) in [
        (pod.clone(), predicted[1].clone()),
        (
            pod_from_template(&deployment),
            pod_from_template(&predicted[2]),
        ),
    ] {
        let stored = create_pod(&client, ns, &original, false).await.unwrap();
        let spec = &stored["spec"];
        // The shape, checked by hand once: reserved volume with the endpoint's audience and CA,
        // the proxy first among the init containers (native sidecar), its init container last.
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                v["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("azure-workload-identity-reserved-")
            })
            .unwrap();
        assert_eq!(volume["name"].as_str().unwrap().len(), 63);
        let sources = volume["projected"]["sources"].as_array().unwrap();
        assert_eq!(
            sources[0]["serviceAccountToken"]["audience"],
            "api://AKSIdentityBinding"
        );
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[1]["configMap"]["items"][0]["path"],
            "ca-cert/ca.crt"
        );
        let inits: Vec<&str> = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits, vec!["azwi-proxy", "migrate", "azwi-proxy-init"]);
        assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
        let env: Vec<&str> = spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            vec![
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_AUTHORITY_HOST",
                "AZURE_KUBERNETES_TOKEN_PROXY",
                "AZURE_KUBERNETES_SNI_NAME",
                "AZURE_KUBERNETES_CA_FILE"
            ]
        );
        // And the whole pod, against the prediction defaulted by the same API server.
        let mut prediction = prediction;
        if let Some(name) = prediction["metadata"]["name"].as_str() {
            prediction["metadata"]["name"] = json!(format!("{name}-predicted"));
        }
        let expected = create_pod(&client, ns, &prediction, true).await.unwrap();
        assert_eq!(compact(&normalise(&stored)), compact(&normalise(&expected)));
    }
}
