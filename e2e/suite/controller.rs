//! `keywire controller` on the real control plane, against Keycloak as Entra and the Key Vault
//! stand-in: the chain from a pod's ServiceAccount token to the synced Secret's bytes, and the
//! controller's lifecycle (Deployment first, rotation, fan-in, foreign Secrets, outages, garbage
//! collection, leader failover, policy).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::azure::Azure;
use crate::harness::*;
use keywire::fixtures;

/// Vaults the suite uses; each gets its own port on the stand-in and a --keyvault-endpoint.
const VAULTS: &[&str] = &[
    "kv-wi",
    "kv-sp",
    "kv-deploy",
    "kv-rotate",
    "kv-fanin",
    "kv-foreign",
    "kv-outage",
    "kv-throttle",
    "kv-gc",
    "kv-policy-ok",
    "kv-policy-bad",
    "kv-objects",
    "kv-leader",
];
/// Short intervals, so rotation, collection and failover happen within a test.
pub const ROTATION_SECONDS: u64 = 6;
pub const GC_GRACE_SECONDS: u64 = 8;
pub const LEASE_SECONDS: u64 = 6;

/// A `keywire controller` process talking to the e2e API server and the stand-ins.
pub struct Controller {
    pub child: Child,
    pub metrics_addr: String,
    pub identity: String,
    lines: mpsc::Receiver<String>,
}

/// A kubeconfig for the chart's own controller ServiceAccount and RBAC (release "keywire" in
/// namespace "default", where the controller's Lease lives): every controller test runs with
/// exactly the permissions the chart grants, so they prove the ClusterRole is enough.
fn chart_rbac_kubeconfig() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use crate::chart::{documents, kubectl_ok, render};
        let rendered = render("keywire", "default", &[]);
        let rbac: Vec<String> = documents(&rendered)
            .into_iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
                ) && d["metadata"]["name"].as_str().is_some_and(|n| n.contains("controller"))
            })
            .map(|d| d.to_string())
            .collect();
        assert_eq!(rbac.len(), 5, "the chart's controller SA, ClusterRole(+Binding), Role(+Binding)");
        kubectl_ok(&["apply", "-f", "-"], Some(&rbac.join("\n")));
        let token = kubectl_ok(
            &["create", "token", "keywire-controller", "-n", "default", "--duration", "3h"],
            None,
        );
        let path = state_dir().join("controller-rbac.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: controller\n  user:\n    token: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: controller}}\ncurrent-context: e2e\n",
                env("E2E_APISERVER_URL"),
                env("E2E_CA_FILE"),
                token.trim()
            ),
        )
        .unwrap();
        // Least privilege, checked as the API server sees it.
        for (verb, resource, subresource, allowed) in [
            ("patch", "secrets", "", "yes"),
            ("update", "secrets", "", "no"),
            ("create", "serviceaccounts", "token", "yes"),
            ("update", "serviceaccounts", "", "no"),
            ("delete", "pods", "", "no"),
            ("patch", "deployments.apps", "", "yes"),
        ] {
            let sub = format!("--subresource={subresource}");
            let mut args = vec![
                "auth", "can-i", verb, resource, "--all-namespaces",
                "--as=system:serviceaccount:default:keywire-controller",
            ];
            if !subresource.is_empty() {
                args.push(&sub);
            }
            let out = kubectl(&args, None);
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), allowed, "{verb} {resource}");
        }
        path
    })
    .clone()
}

impl Controller {
    pub fn start(name: &str, endpoints: &[(String, String)]) -> Controller {
        let log_path = state_dir().join(format!("logs/controller-{name}.log"));
        let mut args: Vec<String> = [
            "controller",
            "--metrics-listen",
            "127.0.0.1:0",
            "--authority-host",
            &env("E2E_ENTRA_AUTHORITY"),
            "--ca-file",
            &env("E2E_CA_FILE"),
            "--lease-namespace",
            "default",
            "--identity",
            name,
            "--debounce-millis",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, value) in [
            ("--rotation-interval-seconds", ROTATION_SECONDS),
            ("--gc-grace-seconds", GC_GRACE_SECONDS),
            ("--retry-seconds", 3),
            ("--lease-duration-seconds", LEASE_SECONDS),
            ("--lease-renew-seconds", 2),
            ("--lease-retry-seconds", 1),
        ] {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
        for (vault, url) in endpoints {
            args.push("--keyvault-endpoint".into());
            args.push(format!("{vault}={url}"));
        }
        let mut child = Command::new(keywire())
            .args(&args)
            .env("RUST_LOG", "info")
            .env("KUBECONFIG", chart_rbac_kubeconfig())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start keywire controller");
        let pids = state_dir().join("pids");
        let _ = std::fs::create_dir_all(&pids);
        let _ = std::fs::write(
            pids.join(format!("keywire-controller-{}.pid", child.id())),
            child.id().to_string(),
        );
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        let mut c = Controller {
            child,
            metrics_addr: String::new(),
            identity: String::new(),
            lines: rx,
        };
        let line = c.wait_for_log("metrics listening", Duration::from_secs(20));
        let v: Value = serde_json::from_str(&line).unwrap();
        c.metrics_addr = v["fields"]["addr"].as_str().unwrap().to_string();
        c
    }

    /// Waits for a log line whose message is `message`; returns it.
    pub fn wait_for_log(&mut self, message: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("controller did not log {message:?} in {within:?}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["identity"].is_string() && self.identity.is_empty() {
                self.identity = v["fields"]["identity"].as_str().unwrap().to_string();
            }
            if v["fields"]["message"] == message {
                return line;
            }
        }
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Shared {
    pub controller: Option<Controller>,
    pub endpoints: Vec<(String, String)>,
    pub vaults: BTreeMap<String, String>,
}

static SHARED: tokio::sync::Mutex<Option<Shared>> = tokio::sync::Mutex::const_new(None);

/// The webhook (registered), one leading controller, the vaults, and the Azure harness.
pub(crate) async fn setup() -> (
    tokio::sync::MutexGuard<'static, Option<Shared>>,
    kube::Client,
    Azure,
) {
    let (webhook, client) = crate::setup().await;
    drop(webhook);
    let azure = Azure::from_env();
    let mut guard = SHARED.lock().await;
    if guard.is_none() {
        let mut vaults = BTreeMap::new();
        for v in VAULTS {
            vaults.insert(v.to_string(), azure.vault(v).await);
        }
        let endpoints: Vec<(String, String)> =
            vaults.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut controller = Controller::start("e2e-a", &endpoints);
        controller.wait_for_log("caches synced", Duration::from_secs(60));
        *guard = Some(Shared {
            controller: Some(controller),
            endpoints,
            vaults,
        });
    }
    (guard, client, azure)
}

/// A namespace name unique to this run of the suite, so a rerun against the same control plane
/// starts clean (namespaces are never really deleted without a controller-manager).
pub(crate) fn fresh(base: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| format!("{:04x}", fastrand::u16(..)));
    format!("{base}-{run}")
}

/// A fresh namespace and a ServiceAccount federated with a new Keycloak client.
pub(crate) async fn workload_identity_namespace(
    client: &kube::Client,
    azure: &Azure,
    namespace: &str,
    client_id: &str,
) {
    ensure_namespace(client, namespace).await;
    ensure_service_account(
        client,
        namespace,
        "app",
        json!({"azure.workload.identity/client-id": client_id, "azure.workload.identity/tenant-id": azure.tenant}),
    )
    .await;
    azure.federate(client_id, namespace, "app");
}

/// An opted-in pod reading `objects` of `vault` into env with workload identity.
pub(crate) fn wi_pod(name: &str, vault: &str, objects: &str, env: &str) -> Value {
    fixtures::pod(name)
        .opted_in()
        .annotations(
            json!({"keywire.dev/keyvault": vault, "keywire.dev/objects": objects,
            "keywire.dev/env": env}),
        )
        .service_account("app")
        .build()
}

/// Waits until `check` returns Some, or panics with `what` after `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Option<Vec<u8>> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    s.data?.get(key).map(|b| b.0.clone())
}

/// The synced Secret (and class) name the webhook wired into a stored pod's env.
pub(crate) fn synced_secret_of(stored: &Value) -> String {
    stored["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
        .expect("a secretKeyRef in the stored pod")
        .to_string()
}

async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn wait_event(client: &kube::Client, ns: &str, reason: &str, kind: &str) -> Event {
    eventually(
        Duration::from_secs(30),
        &format!("a {reason} Event on a {kind}"),
        || async {
            events(client, ns, reason)
                .await
                .into_iter()
                .find(|e| e.involved_object.kind.as_deref() == Some(kind))
        },
    )
    .await
}

/// Point 1: the workload-identity chain, from the pod's ServiceAccount token through Keycloak's
/// federated exchange to the stand-in and the Secret's bytes; a wrong subject is refused.
#[tokio::test]
async fn controller_syncs_with_the_pods_workload_identity() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-wi"].clone();
    let ns = &fresh("ctl-wi");
    let client_id = "0a1b2c3d-1111-4222-8333-444455556666";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure
        .set_secret(&vault, "db-password", "correct horse battery staple")
        .await;

    let stored = create_pod(
        &client,
        ns,
        &wi_pod("api", "kv-wi", "secret/db-password as db", "DB_PASSWORD=db"),
        false,
    )
    .await
    .unwrap();
    let name = synced_secret_of(&stored);
    let bytes = eventually(Duration::from_secs(30), "the synced Secret", || {
        secret_value(&client, ns, &name, "db")
    })
    .await;
    assert_eq!(bytes, b"correct horse battery staple");

    // The SecretProviderClass keywire materialised, with the provider's parameters.
    let spc_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "secrets-store.csi.x-k8s.io",
                "v1",
                "SecretProviderClass",
            ),
            "secretproviderclasses",
        ),
    );
    let spc = spc_api.get(&name).await.unwrap();
    let p = &spc.data["spec"]["parameters"];
    assert_eq!(spc.data["spec"]["provider"], "azure");
    assert_eq!(p["keyvaultName"], "kv-wi");
    assert_eq!(p["tenantId"], azure.tenant.as_str());
    assert_eq!(p["clientID"], client_id);
    assert_eq!(p["cloudName"], "AzurePublicCloud");
    assert_eq!(
        p["objects"],
        "array:\n  - |\n    objectName: db-password\n    objectType: secret\n    objectVersion: \"\"\n    objectAlias: db\n"
    );
    assert_eq!(
        spc.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "keywire"
    );
    let managers: Vec<String> = spc
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, vec!["keywire".to_string()]);

    // Keycloak's own record: it validated a federated assertion for exactly this ServiceAccount.
    let logins = azure.events(client_id);
    let ok = logins
        .iter()
        .find(|e| e["type"] == "CLIENT_LOGIN")
        .unwrap_or_else(|| panic!("no CLIENT_LOGIN for {client_id}: {logins:?}"));
    assert_eq!(ok["details"]["client_auth_method"], "federated-jwt");
    assert_eq!(
        ok["details"]["client_assertion_sub"],
        format!("system:serviceaccount:{ns}:app")
    );
    assert_eq!(ok["details"]["client_assertion_issuer"], env("E2E_ISSUER"));
    assert_eq!(
        wait_event(&client, ns, "Synced", "Pod")
            .await
            .type_
            .as_deref(),
        Some("Normal")
    );

    // A ServiceAccount whose subject the client is not bound to is refused by Keycloak.
    let other = "0a1b2c3d-1111-4222-8333-777788889999";
    ensure_service_account(
        &client,
        ns,
        "intruder",
        json!({"azure.workload.identity/client-id": other, "azure.workload.identity/tenant-id": azure.tenant}),
    )
    .await;
    azure.federate(other, ns, "someone-else");
    let pod = fixtures::pod("intruder")
        .opted_in()
        .annotations(json!({"keywire.dev/keyvault": "kv-wi", "keywire.dev/objects": "secret/db-password as db",
            "keywire.dev/env": "DB_PASSWORD=db"}))
        .service_account("intruder")
        .build();
    let stored = create_pod(&client, ns, &pod, false).await.unwrap();
    let refused = synced_secret_of(&stored);
    let failed = eventually(
        Duration::from_secs(30),
        "a SyncFailed Event on the pod",
        || async {
            events(&client, ns, "SyncFailed")
                .await
                .into_iter()
                .find(|e| e.involved_object.name.as_deref() == Some("intruder"))
        },
    )
    .await;
    let note = failed.message.unwrap_or_default();
    assert!(note.contains("no Entra token for workload:"), "{note}");
    assert!(note.contains(&format!("@{ns}/intruder")), "{note}");
    assert!(
        azure
            .events(other)
            .iter()
            .any(|e| e["type"] == "CLIENT_LOGIN_ERROR"
                && e["details"]["client_assertion_sub"]
                    == format!("system:serviceaccount:{ns}:intruder")),
        "Keycloak has no refused login for the intruder"
    );
    assert!(secret_value(&client, ns, &refused, "db").await.is_none());
}

/// Point 2: a service principal from the namespace's credentials Secret.
#[tokio::test]
async fn controller_syncs_with_a_service_principal() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-sp"].clone();
    let ns = &fresh("ctl-sp");
    ensure_namespace(&client, ns).await;
    ensure_service_account(&client, ns, "app", json!({})).await;
    azure.service_principal("e2e-sp-orders", "sp-secret-5b1e");
    let creds: Secret = serde_json::from_value(json!({"metadata": {"name": "orders-sp"},
        "stringData": {"clientid": "e2e-sp-orders", "clientsecret": "sp-secret-5b1e"}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &creds)
        .await
        .unwrap();
    azure.set_secret(&vault, "api-key", "sp-read-value").await;
    let pod = fixtures::pod("api")
        .opted_in()
        .annotations(
            json!({"keywire.dev/keyvault": "kv-sp", "keywire.dev/objects": "api-key",
            "keywire.dev/env": "API_KEY=api-key", "keywire.dev/identity": "service-principal",
            "keywire.dev/credentials-secret": "orders-sp", "keywire.dev/tenant-id": azure.tenant}),
        )
        .service_account("app")
        .build();
    let stored = create_pod(&client, ns, &pod, false).await.unwrap();
    let csi = stored["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "keywire-secrets-store")
        .unwrap();
    assert_eq!(csi["csi"]["nodePublishSecretRef"]["name"], "orders-sp");
    let name = synced_secret_of(&stored);
    let bytes = eventually(Duration::from_secs(30), "the synced Secret", || {
        secret_value(&client, ns, &name, "api-key")
    })
    .await;
    assert_eq!(bytes, b"sp-read-value");
}

/// Every object type, with the CSI provider's semantics: PFX-backed secret as PEM (key first),
/// PEM certificate, PEM public key; a pinned version stays pinned.
#[tokio::test]
async fn controller_writes_each_object_type_as_the_csi_provider_does() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-objects"].clone();
    let ns = &fresh("ctl-objects");
    let client_id = "0a1b2c3d-1111-4222-8333-aaaabbbbcccc";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    let pfx = std::fs::read(repo("tests/data/pkcs12/modern.pfx")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pfx);
    azure
        .import_certificate(&vault, "tls", &b64, "application/x-pkcs12")
        .await;
    let key = azure
        .create_key(&vault, "signing", json!({"kty": "EC", "crv": "P-256"}))
        .await;
    let v1 = azure.set_secret(&vault, "pinned", "pinned-value-1").await;
    azure.set_secret(&vault, "pinned", "pinned-value-2").await;

    let objects = format!(
        "secret/tls as tls.pem, cert/tls as tls.crt, key/signing as signing.pub, secret/pinned@{v1} as pinned"
    );
    let pod = wi_pod("api", "kv-objects", &objects, "PINNED=pinned");
    let stored = create_pod(&client, ns, &pod, false).await.unwrap();
    let name = synced_secret_of(&stored);
    let data = eventually(Duration::from_secs(30), "the synced Secret", || async {
        Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&name)
            .await
            .ok()??
            .data
    })
    .await;
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let pem = text("tls.pem");
    let key_at = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .expect("private key");
    let cert_at = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate");
    assert!(key_at < cert_at, "key first, then the chain");
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    let leaf = std::fs::read_to_string(repo("tests/data/pkcs12/leaf.crt")).unwrap();
    assert_eq!(text("tls.crt"), leaf, "cert is the leaf's PEM");
    assert!(pem.contains(leaf.trim()), "the PEM bundle holds the leaf");
    let public = text("signing.pub");
    assert!(
        public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{public}"
    );
    assert!(key["key"]["x"].is_string());
    assert_eq!(text("pinned"), "pinned-value-1");
}

/// Point 3: a Deployment yields its Secret before any pod exists.
#[tokio::test]
async fn controller_materialises_a_deployments_secret_before_its_pods() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-deploy"].clone();
    let ns = &fresh("ctl-deploy");
    let client_id = "0a1b2c3d-1111-4222-8333-ddddeeeeffff";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure
        .set_secret(&vault, "redis-password", "redis-pass-1")
        .await;
    let template = wi_pod(
        "unused",
        "kv-deploy",
        "secret/redis-password",
        "REDIS_PASSWORD=redis-password",
    );
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "vote"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "vote"}},
            "template": {"metadata": {"labels": {"app": "vote", "keywire.dev/inject": "true"},
                "annotations": template["metadata"]["annotations"]},
                "spec": template["spec"]}}
    }))
    .unwrap();
    let started = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // The Secret is named after the config alone: find it by its label.
    let secret = eventually(
        Duration::from_secs(30),
        "the Deployment's Secret",
        || async {
            Api::<Secret>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keywire"))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(secret.data.unwrap()["redis-password"].0, b"redis-pass-1");
    assert!(
        Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    println!("deployment-create -> Secret-ready: {} ms", took.as_millis());
    assert_eq!(
        wait_event(&client, ns, "Synced", "Deployment")
            .await
            .type_
            .as_deref(),
        Some("Normal")
    );
}

/// Point 4: a new version updates the Secret within one interval; restart-on-rotation stamps the
/// template as `kubectl rollout restart` does.
#[tokio::test]
async fn rotation_updates_the_secret_and_restarts_the_workload() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-rotate"].clone();
    let ns = &fresh("ctl-rotate");
    let client_id = "0a1b2c3d-1111-4222-8333-000011112222";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure.set_secret(&vault, "token", "rotate-value-1").await;
    let template = wi_pod("unused", "kv-rotate", "secret/token", "TOKEN=token");
    let mut annotations = template["metadata"]["annotations"].clone();
    annotations["keywire.dev/restart-on-rotation"] = json!("true");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {"selector": {"matchLabels": {"app": "worker"}},
            "template": {"metadata": {"labels": {"app": "worker", "keywire.dev/inject": "true"},
                "annotations": annotations}, "spec": template["spec"]}}
    }))
    .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let name = eventually(Duration::from_secs(30), "the first sync", || async {
        let s = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keywire"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        (s.data.as_ref()?.get("token")?.0 == b"rotate-value-1")
            .then(|| s.metadata.name.clone().unwrap())
    })
    .await;
    let before = deployments.get("worker").await.unwrap();
    assert!(
        before
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .get("kubectl.kubernetes.io/restartedAt")
            .is_none()
    );

    azure.set_secret(&vault, "token", "rotate-value-2").await;
    let changed = Instant::now();
    eventually(
        Duration::from_secs(ROTATION_SECONDS * 2 + 5),
        "the rotated value",
        || async {
            (secret_value(&client, ns, &name, "token").await? == b"rotate-value-2").then_some(())
        },
    )
    .await;
    let took = changed.elapsed();
    assert!(
        took <= Duration::from_secs_f64(ROTATION_SECONDS as f64 * 1.1 + 3.0),
        "rotated after {took:?}, interval {ROTATION_SECONDS}s (+10% jitter)"
    );
    let stamped = eventually(Duration::from_secs(10), "the restart stamp", || async {
        deployments
            .get("worker")
            .await
            .ok()?
            .spec?
            .template
            .metadata?
            .annotations?
            .get("kubectl.kubernetes.io/restartedAt")
            .cloned()
    })
    .await;
    assert!(stamped.contains('T'), "{stamped}");
    assert_eq!(
        wait_event(&client, ns, "Rotated", "Deployment")
            .await
            .type_
            .as_deref(),
        Some("Normal")
    );
}

/// Point 5: fifty pods sharing one config cause one Key Vault read per object per interval.
#[tokio::test]
async fn fifty_pods_share_one_read_per_interval() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-fanin"].clone();
    let ns = &fresh("ctl-fanin");
    let client_id = "0a1b2c3d-1111-4222-8333-333344445555";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    let object = fresh("shared");
    azure.set_secret(&vault, &object, "one value for all").await;
    let started = Instant::now();
    let mut name = String::new();
    for i in 0..50 {
        let pod = wi_pod(
            &format!("web-{i}"),
            "kv-fanin",
            &format!("secret/{object} as shared"),
            "SHARED=shared",
        );
        name = synced_secret_of(&create_pod(&client, ns, &pod, false).await.unwrap());
    }
    eventually(Duration::from_secs(30), "the shared Secret", || {
        secret_value(&client, ns, &name, "shared")
    })
    .await;
    // Stay for two more intervals: at most one read per interval started, whatever the pod count.
    tokio::time::sleep(Duration::from_secs(ROTATION_SECONDS * 2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let reads = azure.secret_reads("kv-fanin", &object).await;
    // One read at the first sync, then at most one per interval that has passed since.
    let allowed = 1 + (elapsed / ROTATION_SECONDS as f64).floor() as u64;
    println!(
        "fan-in: 50 pods, {reads} reads of the object in {elapsed:.1}s (at most {allowed} allowed)"
    );
    assert!(
        reads >= 1 && reads <= allowed,
        "{reads} reads in {elapsed:.1}s"
    );
}

/// Point 6: a Secret keywire did not create is left untouched, with a Warning Event.
#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-foreign"].clone();
    let ns = &fresh("ctl-foreign");
    let client_id = "0a1b2c3d-1111-4222-8333-555566667777";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure.set_secret(&vault, "db", "from-vault").await;
    // The team's own Secret, under the name the config is given with keywire.dev/sync-secret.
    let theirs: Secret = serde_json::from_value(json!({"metadata": {"name": "orders-db"},
        "stringData": {"db": "hand-made"}}))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let pod = fixtures::pod("api")
        .opted_in()
        .annotations(
            json!({"keywire.dev/keyvault": "kv-foreign", "keywire.dev/objects": "db",
            "keywire.dev/env": "DB=db", "keywire.dev/sync-secret": "orders-db"}),
        )
        .service_account("app")
        .build();
    create_pod(&client, ns, &pod, false).await.unwrap();
    let warning = wait_event(&client, ns, "ForeignSecret", "Pod").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .message
            .unwrap()
            .contains("orders-db exists and is not keywire's")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = secrets.get("orders-db").await.unwrap();
    assert_eq!(after.data.unwrap()["db"].0, b"hand-made");
    assert!(after.metadata.labels.is_none());
}

/// Point 7: an outage keeps the last good Secret and recovers; a 429's Retry-After is honoured.
#[tokio::test]
async fn outages_keep_the_last_good_secret_and_429_is_honoured() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-outage"].clone();
    let throttle_vault = guard.as_ref().unwrap().vaults["kv-throttle"].clone();
    let ns = &fresh("ctl-outage");
    let client_id = "0a1b2c3d-1111-4222-8333-777788880000";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure.set_secret(&vault, "db", "outage-value-1").await;
    let name = synced_secret_of(
        &create_pod(
            &client,
            ns,
            &wi_pod("api", "kv-outage", "db", "DB=db"),
            false,
        )
        .await
        .unwrap(),
    );
    eventually(Duration::from_secs(30), "the first sync", || async {
        (secret_value(&client, ns, &name, "db").await? == b"outage-value-1").then_some(())
    })
    .await;

    azure.standin("kill");
    let down = wait_event(&client, ns, "ProviderError", "Pod").await;
    assert!(down.message.unwrap().contains("is unavailable"));
    assert_eq!(
        secret_value(&client, ns, &name, "db").await.unwrap(),
        b"outage-value-1"
    );
    azure.standin("start");
    azure.set_secret(&vault, "db", "outage-value-2").await;
    eventually(
        Duration::from_secs(ROTATION_SECONDS * 3),
        "recovery",
        || async {
            (secret_value(&client, ns, &name, "db").await? == b"outage-value-2").then_some(())
        },
    )
    .await;

    // 429 with Retry-After: 8 s. While it holds, the controller sends nothing to that vault.
    let ns2 = &fresh("ctl-throttle");
    let client2 = "0a1b2c3d-1111-4222-8333-9999aaaa0000";
    workload_identity_namespace(&client, &azure, ns2, client2).await;
    azure
        .set_secret(&throttle_vault, "db", "throttle-value-1")
        .await;
    let name2 = synced_secret_of(
        &create_pod(
            &client,
            ns2,
            &wi_pod("api", "kv-throttle", "db", "DB=db"),
            false,
        )
        .await
        .unwrap(),
    );
    eventually(Duration::from_secs(30), "the first sync", || async {
        (secret_value(&client, ns2, &name2, "db").await? == b"throttle-value-1").then_some(())
    })
    .await;
    azure
        .set_secret(&throttle_vault, "db", "throttle-value-2")
        .await;
    // Every data-plane request to the vault now gets 429 with Retry-After: 8. The controller
    // must leave the vault alone for 8 s after each one: the stand-in counts what it refused.
    let faulted = || async {
        azure.stats("kv-throttle").await["faulted"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = faulted().await;
    azure
        .faults(json!({"mode": "429", "retry_after": 8, "vault": "kv-throttle"}))
        .await;
    let first = eventually(
        Duration::from_secs(ROTATION_SECONDS * 2 + 5),
        "the first 429",
        || async {
            let n = faulted().await;
            (n > before).then_some(n)
        },
    )
    .await;
    let first_at = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the retry after the hold",
        || async { (faulted().await > first).then_some(()) },
    )
    .await;
    let held = first_at.elapsed();
    assert!(
        held >= Duration::from_millis(7500),
        "the vault was asked again after {held:?}, Retry-After was 8s"
    );
    let throttled = wait_event(&client, ns2, "ProviderError", "Pod").await;
    let note = throttled.message.unwrap();
    assert!(
        note.contains("throttled the request (429); retrying after"),
        "{note}"
    );
    assert_eq!(
        secret_value(&client, ns2, &name2, "db").await.unwrap(),
        b"throttle-value-1",
        "last good value kept"
    );
    azure.faults(json!({"mode": "none"})).await;
    eventually(
        Duration::from_secs(30),
        "the sync after the hold",
        || async {
            (secret_value(&client, ns2, &name2, "db").await? == b"throttle-value-2").then_some(())
        },
    )
    .await;
}

/// Point 8: objects go when the last consumer has gone for the grace period, not before.
#[tokio::test]
async fn unused_configs_are_collected_after_the_grace_period() {
    let (guard, client, azure) = setup().await;
    let vault = guard.as_ref().unwrap().vaults["kv-gc"].clone();
    let ns = &fresh("ctl-gc");
    let client_id = "0a1b2c3d-1111-4222-8333-bbbbcccc0000";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure.set_secret(&vault, "db", "gc-value").await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let name = synced_secret_of(
        &create_pod(&client, ns, &wi_pod("a", "kv-gc", "db", "DB=db"), false)
            .await
            .unwrap(),
    );
    create_pod(&client, ns, &wi_pod("b", "kv-gc", "db", "DB=db"), false)
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the Secret", || {
        secret_value(&client, ns, &name, "db")
    })
    .await;

    pods.delete("a", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(GC_GRACE_SECONDS + 4)).await;
    assert!(
        secret_value(&client, ns, &name, "db").await.is_some(),
        "collected while b uses it"
    );

    pods.delete("b", &DeleteParams::default()).await.unwrap();
    let gone = Instant::now();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    eventually(
        Duration::from_secs(GC_GRACE_SECONDS * 3),
        "the Secret's deletion",
        || async { secrets.get_opt(&name).await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        gone.elapsed() >= Duration::from_secs(GC_GRACE_SECONDS - 1),
        "deleted before the grace period"
    );
    let spc = kubectl(
        &["get", "secretproviderclasses", "-n", ns, "-o", "name"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&spc.stdout).trim(), "");
}

/// Point 10: a config the namespace's KeywirePolicy forbids is never materialised, also when a
/// pod's annotations are changed after admission.
#[tokio::test]
async fn policy_forbidden_configs_are_never_materialised() {
    let (guard, client, azure) = setup().await;
    let ok_vault = guard.as_ref().unwrap().vaults["kv-policy-ok"].clone();
    let bad_vault = guard.as_ref().unwrap().vaults["kv-policy-bad"].clone();
    let ns = &fresh("ctl-policy");
    let client_id = "0a1b2c3d-1111-4222-8333-ccccdddd0000";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    kubectl(
        &[
            "label",
            "namespace",
            ns,
            "keywire-e2e-policy=ctl",
            "--overwrite",
        ],
        None,
    );
    let object = fresh("db");
    azure
        .set_secret(&ok_vault, &object, "policy-value-ok")
        .await;
    azure
        .set_secret(&bad_vault, &object, "policy-value-bad")
        .await;
    let objects = format!("{object} as db");
    let policy = fixtures::policy(
        "ctl-only-ok-vault",
        json!({"namespaceSelector": {"matchLabels": {"keywire-e2e-policy": "ctl"}},
            "keyVaults": {"allowed": ["kv-policy-ok"]}}),
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&policy.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stored = create_pod(
        &client,
        ns,
        &wi_pod("api", "kv-policy-ok", &objects, "DB=db"),
        false,
    )
    .await
    .unwrap();
    let ok_name = synced_secret_of(&stored);
    eventually(Duration::from_secs(30), "the allowed Secret", || {
        secret_value(&client, ns, &ok_name, "db")
    })
    .await;

    // The annotation is changed after admission, as if the validating webhook were down.
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let removed = kubectl(
        &["delete", "validatingwebhookconfiguration", "keywire"],
        None,
    );
    let patch = json!({"metadata": {"annotations": {"keywire.dev/keyvault": "kv-policy-bad"}}});
    let updated = pods
        .patch("api", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    if removed.status.success() {
        let shared = crate::SHARED.lock().await;
        let s = shared.as_ref().unwrap();
        register(&client, &format!("https://{}/mutate", s.addr), &s.ca).await;
    }
    updated.unwrap();
    let refused = wait_event(&client, ns, "SyncFailed", "Pod").await;
    assert!(
        refused
            .message
            .unwrap()
            .contains("key vault kv-policy-bad is not allowed"),
        "policy reason in the Event"
    );
    tokio::time::sleep(Duration::from_secs(ROTATION_SECONDS)).await;
    let managed: Vec<String> = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keywire"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(
        managed
            .iter()
            .all(|n| n.starts_with("keywire-kv-policy-ok-")),
        "a kv-policy-bad config was materialised: {managed:?}"
    );
    assert_eq!(azure.secret_reads("kv-policy-bad", &object).await, 0);
    kubectl(&["delete", "keywirepolicy", "ctl-only-ok-vault"], None);
}

/// Policy results outside keywire: an OpenReports Report per namespace (Audit and Warn results,
/// with the resource), and each KeywirePolicy's status (Ready, observed generation, counts).
#[tokio::test]
async fn policy_reports_and_status_show_audit_and_warn_results() {
    let (_guard, client, azure) = setup().await;
    let ns = &fresh("ctl-report");
    workload_identity_namespace(&client, &azure, ns, "0a1b2c3d-1111-4222-8333-dddd00001111").await;
    kubectl(
        &[
            "label",
            "namespace",
            ns,
            &format!("keywire-e2e-report={ns}"),
            "--overwrite",
        ],
        None,
    );
    let name = fresh("ctl-report-audit");
    let policy = fixtures::policy(
        &name,
        json!({"namespaceSelector": {"matchLabels": {"keywire-e2e-report": ns}},
            "keyVaults": {"allowed": ["kv-report-*"], "enforcement": "Audit"},
            "requireInjection": {"enforcement": "Warn"}}),
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&policy.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let template = wi_pod("unused", "kv-wi", "db", "DB=db");
    for (d, opted_in) in [("audited", true), ("plain", false)] {
        let mut labels = json!({"app": d});
        if opted_in {
            labels["keywire.dev/inject"] = json!("true");
        }
        let annotations = if opted_in {
            template["metadata"]["annotations"].clone()
        } else {
            json!({})
        };
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": d},
            "spec": {"selector": {"matchLabels": {"app": d}},
                "template": {"metadata": {"labels": labels, "annotations": annotations},
                    "spec": template["spec"]}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    }
    let reports: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
            "reports",
        ),
    );
    let report = eventually(
        Duration::from_secs(30),
        "the Report with both results",
        || async {
            let r = reports.get_opt("keywire-policy").await.ok()??;
            (r.data["results"].as_array()?.len() == 2).then_some(r)
        },
    )
    .await;
    assert_eq!(
        report.data["summary"],
        json!({"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 0})
    );
    let results = report.data["results"].as_array().unwrap();
    let audited = results.iter().find(|r| r["rule"] == "keyVaults").unwrap();
    assert_eq!(audited["policy"], name.as_str());
    assert_eq!(audited["result"], "fail");
    assert_eq!(audited["source"], "keywire");
    assert_eq!(audited["properties"]["enforcement"], "Audit");
    assert_eq!(audited["resources"][0]["kind"], "Deployment");
    assert_eq!(audited["resources"][0]["name"], "audited");
    let warned = results
        .iter()
        .find(|r| r["rule"] == "requireInjection")
        .unwrap();
    assert_eq!(warned["result"], "warn");
    assert_eq!(warned["resources"][0]["name"], "plain");

    let policies: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("keywire.dev", "v1alpha1", "KeywirePolicy"),
            "keywirepolicies",
        ),
    );
    let stored = eventually(Duration::from_secs(30), "the policy's status", || async {
        let p = policies.get(&name).await.ok()?;
        (p.data["status"]["violations"]["warn"] == 1).then_some(p)
    })
    .await;
    let status = &stored.data["status"];
    assert_eq!(
        status["observedGeneration"],
        json!(stored.metadata.generation.unwrap())
    );
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(
        status["violations"],
        json!({"enforce": 0, "warn": 1, "audit": 1, "namespaces": 1})
    );

    // Fixed: the Report follows.
    deployments
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the Report without the warning",
        || async {
            let r = reports.get_opt("keywire-policy").await.ok()??;
            (r.data["summary"]["warn"] == 0 && r.data["summary"]["fail"] == 1).then_some(())
        },
    )
    .await;
    kubectl(&["delete", "keywirepolicy", &name], None);
}

/// Point 9: two controllers; only the leader writes, each Secret once; killing the leader hands
/// over within the Lease duration. (Runs last by name: it replaces the shared controller.)
#[tokio::test]
async fn z_leader_failover_hands_over_within_the_lease() {
    let (mut guard, client, azure) = setup().await;
    let shared = guard.as_mut().unwrap();
    let vault = shared.vaults["kv-leader"].clone();
    let ns = &fresh("ctl-leader");
    let client_id = "0a1b2c3d-1111-4222-8333-eeeeffff0000";
    workload_identity_namespace(&client, &azure, ns, client_id).await;
    azure.set_secret(&vault, "db", "leader-value-1").await;

    let mut standby = Controller::start("e2e-b", &shared.endpoints);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = shared.controller.take().unwrap();
    assert_eq!(leader.metric("keywire_controller_leader").await, 1.0);
    assert_eq!(standby.metric("keywire_controller_leader").await, 0.0);

    let name = synced_secret_of(
        &create_pod(&client, ns, &wi_pod("a", "kv-leader", "db", "DB=db"), false)
            .await
            .unwrap(),
    );
    eventually(Duration::from_secs(30), "the Secret", || {
        secret_value(&client, ns, &name, "db")
    })
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let written = secrets.get(&name).await.unwrap().metadata.resource_version;

    let killed = Instant::now();
    leader.kill();
    standby.wait_for_log("caches synced", Duration::from_secs(LEASE_SECONDS * 3));
    let took = killed.elapsed();
    println!(
        "leader failover: standby leading and synced {} ms after the kill",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + 8),
        "took {took:?}"
    );
    assert_eq!(standby.metric("keywire_controller_leader").await, 1.0);

    // The new leader serves new configs, and rewrites nothing that is already right.
    let second = synced_secret_of(
        &create_pod(&client, ns, &wi_pod("b", "kv-leader", "db", "DB=db"), false)
            .await
            .unwrap(),
    );
    assert_eq!(second, name, "same config, same Secret");
    let other = synced_secret_of(
        &create_pod(
            &client,
            ns,
            &wi_pod("c", "kv-leader", "db as copy", "DB=copy"),
            false,
        )
        .await
        .unwrap(),
    );
    assert_ne!(other, name);
    let copy = eventually(Duration::from_secs(30), "the new leader's Secret", || {
        secret_value(&client, ns, &other, "copy")
    })
    .await;
    assert_eq!(copy, b"leader-value-1");
    assert_eq!(
        secrets.get(&name).await.unwrap().metadata.resource_version,
        written,
        "rewritten after failover"
    );
    shared.controller = Some(standby);
}

/// Values read from the stand-in, credentials and tokens never reach keywire's logs or Events.
/// (Last by name: it reads what every controller test left behind.)
#[tokio::test]
async fn zz_no_value_or_token_in_logs_or_events() {
    let (_guard, client, _azure) = setup().await;
    let secrets = [
        "correct horse battery staple",
        "sp-read-value",
        "sp-secret-5b1e",
        "redis-pass-1",
        "rotate-value-1",
        "rotate-value-2",
        "one value for all",
        "from-vault",
        "outage-value-1",
        "outage-value-2",
        "throttle-value-1",
        "throttle-value-2",
        "gc-value",
        "pinned-value-1",
        "policy-value-ok",
        "policy-value-bad",
        "leader-value-1",
        // A JWT (ServiceAccount token or Entra access token) starts with a base64 "{\"".
        "eyJ",
    ];
    let mut texts: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(state_dir().join("logs"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("controller-") || name.starts_with("webhook") {
            texts.push((
                name,
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            ));
        }
    }
    assert!(
        texts.iter().any(|(n, _)| n.starts_with("controller-")),
        "no controller log"
    );
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty());
    for e in events.items {
        texts.push((
            format!(
                "Event {}/{}",
                e.metadata.namespace.unwrap_or_default(),
                e.metadata.name.unwrap_or_default()
            ),
            e.message.unwrap_or_default(),
        ));
    }
    for (source, text) in &texts {
        for s in secrets {
            assert!(!text.contains(s), "{s:?} appears in {source}");
        }
    }
}
