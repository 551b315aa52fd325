//! The Helm chart on the real API server, and self-managed certificates with the real binary.
//!
//! - every values set in charts/keywire/ci/ renders with helm, applies with
//!   `kubectl apply --dry-run=server`, then for real (Deployments stay Pending: no scheduler);
//! - `keywire webhook --self-managed-certs` bootstraps its Secret, publishes the caBundle to the
//!   chart's webhook configurations (registered by URL here), and pods are mutated through them;
//! - a forced rotation under continuous pod creation fails none;
//! - two replicas agree on one certificate.
//!
//! Self-managed webhooks serve only the namespace `keywire`, which the shared registration of
//! main.rs excludes, so every mutation checked here went through the webhook under test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};

use crate::harness::*;
use keywire::fixtures;

/// Pods of the self-managed tests live here: the shared registration excludes it.
const PODS: &str = "keywire";
/// The "release namespace" of the self-managed tests: their Secrets live here.
const RELEASE_NS: &str = "keywire-sm";

fn helm() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(repo("charts/tools.sh"))
            .arg("helm")
            .stderr(Stdio::inherit())
            .output()
            .expect("charts/tools.sh helm");
        assert!(out.status.success(), "charts/tools.sh helm failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    })
}

/// `helm template` of charts/keywire for the e2e API server's version.
pub(crate) fn render(release: &str, namespace: &str, extra: &[&str]) -> String {
    let out = Command::new(helm())
        .args(["template", release])
        .arg(repo("charts/keywire"))
        .args(["--namespace", namespace, "--kube-version", "1.35.4"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn documents(text: &str) -> Vec<Value> {
    keywire::cli::manifests::parse_documents(text).unwrap()
}

pub(crate) fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn apply_and_wait_for_crds(yaml: &str) {
    kubectl_ok(&["apply", "-f", "-"], Some(yaml));
    for crd in documents(yaml)
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        let name = format!("crd/{}", crd["metadata"]["name"].as_str().unwrap());
        kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &name,
            ],
            None,
        );
    }
}

/// Deletes webhook configurations when dropped, so a failed test never leaves the API server
/// calling a webhook that is gone (failurePolicy Fail would then refuse every later pod).
struct Registrations(Vec<String>);

impl Drop for Registrations {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = kubectl(&["delete", "--ignore-not-found", "--wait=false", r], None);
        }
    }
}

/// Every values set renders, applies with a server-side dry run, then for real.
#[tokio::test]
async fn chart_values_sets_apply_to_the_api_server() {
    let client = client().await;
    apply_and_wait_for_crds(
        &std::fs::read_to_string(repo("e2e/manifests/stand-in-crds.yaml")).unwrap(),
    );
    let mut sets: Vec<PathBuf> = std::fs::read_dir(repo("charts/keywire/ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    sets.sort();
    assert!(sets.len() >= 4, "values sets missing: {sets:?}");
    for values in &sets {
        let set = values
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches("-values.yaml")
            .to_string();
        let (release, namespace) = (format!("e2e-{set}"), format!("chart-{set}"));
        ensure_namespace(&client, &namespace).await;
        let text = render(&release, &namespace, &["-f", values.to_str().unwrap()]);
        let objects = documents(&text);
        let guard = Registrations(
            objects
                .iter()
                .filter(|o| {
                    o["kind"]
                        .as_str()
                        .unwrap()
                        .ends_with("WebhookConfiguration")
                })
                .map(|o| {
                    format!(
                        "{}/{}",
                        o["kind"].as_str().unwrap().to_lowercase(),
                        o["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect(),
        );

        let dry = kubectl_ok(&["apply", "--dry-run=server", "-f", "-"], Some(&text));
        let accepted = dry
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(accepted, objects.len(), "{set}: dry run answered\n{dry}");

        kubectl_ok(&["apply", "-f", "-"], Some(&text));
        // Everything is stored as rendered (kubectl get -f fails on any missing object).
        let stored: Value =
            serde_json::from_str(&kubectl_ok(&["get", "-o", "json", "-f", "-"], Some(&text)))
                .unwrap();
        let items = stored["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![stored.clone()]);
        assert_eq!(items.len(), objects.len(), "{set}");
        for item in &items {
            if item["kind"] == "Deployment" {
                assert!(item["spec"]["replicas"].as_i64().unwrap() >= 2, "{set}");
                assert!(
                    item["status"].get("readyReplicas").is_none(),
                    "{set}: no scheduler here, the Deployment must stay Pending"
                );
            }
            if item["kind"] == "MutatingWebhookConfiguration" {
                for hook in item["webhooks"].as_array().unwrap() {
                    assert_eq!(hook["matchConditions"][0]["name"], "exclude-mirror-pods");
                }
            }
        }
        println!("chart values set {set}: {} objects applied", objects.len());
        drop(guard);
    }
}

/// `auto` renders the SecretProviderClass CRD only when the cluster has none it does not own:
/// helm's lookup against the real API server, which has the (CSI driver's) CRD installed.
#[tokio::test]
async fn chart_leaves_an_existing_secret_provider_class_crd_alone() {
    apply_and_wait_for_crds(
        &std::fs::read_to_string(repo("e2e/manifests/secretproviderclass-crd.yaml")).unwrap(),
    );
    let spc = "name: secretproviderclasses.secrets-store.csi.x-k8s.io";
    let offline = render("e2e-lookup", "chart-lookup", &[]);
    assert!(
        offline.contains(spc),
        "no cluster to look at: auto installs it"
    );
    let live = render("e2e-lookup", "chart-lookup", &["--dry-run=server"]);
    assert!(
        !live.contains(spc),
        "auto must not take over the cluster's CRD"
    );
    let forced = render(
        "e2e-lookup",
        "chart-lookup",
        &[
            "--dry-run=server",
            "--set",
            "secretProviderClassCRD.install=true",
        ],
    );
    assert!(forced.contains(spc));
}

/// A free port on 127.0.0.1 (the webhook must know its URL before it can listen).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `keywire webhook --self-managed-certs`, logging to logs/<name>.log in the state dir.
struct SelfManaged {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl SelfManaged {
    fn spawn(name: &str, secret: &str, mutating: &str, validating: Option<&str>) -> SelfManaged {
        let dir = state_dir().join(format!("self-managed/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = state_dir().join(format!("logs/{name}.log"));
        let port = free_port();
        let mut args: Vec<String> = [
            "webhook",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-key-file",
            dir.join("tls.key").to_str().unwrap(),
            "--cert-reload-seconds",
            "1",
            "--self-managed-certs",
            "--cert-secret",
            &format!("{RELEASE_NS}/{secret}"),
            "--webhook-config",
            mutating,
            "--service-host",
            "127.0.0.1",
            "--cert-overlap-seconds",
            "4",
            "--cert-check-seconds",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(v) = validating {
            args.extend(["--validating-webhook-config".to_string(), v.to_string()]);
        }
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(keywire())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        SelfManaged { child, log, port }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Messages the process has logged (its JSON log lines' `fields.message`).
    fn messages(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    fn wait_for(&self, message: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.messages().iter().any(|m| m == message) {
            assert!(
                Instant::now() < deadline,
                "no {message:?} within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SelfManaged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chart's webhook configurations, renamed for one test, pointed at `urls` (one per webhook
/// in order; the last repeats) with no caBundle, and limited to the namespace `keywire`.
fn registrations(
    test: &str,
    mutate_urls: &[String],
    validate_url: Option<String>,
) -> (Vec<Value>, Registrations) {
    let text = render("sm", RELEASE_NS, &[]);
    let mut out = Vec::new();
    let mut names = Vec::new();
    for mut doc in documents(&text) {
        let (kind, urls) = match doc["kind"].as_str().unwrap() {
            "MutatingWebhookConfiguration" => {
                ("mutatingwebhookconfiguration", mutate_urls.to_vec())
            }
            "ValidatingWebhookConfiguration" => match &validate_url {
                Some(u) => ("validatingwebhookconfiguration", vec![u.clone()]),
                None => continue,
            },
            _ => continue,
        };
        let name = format!("{test}-{}", &kind[..kind.find("webhook").unwrap()]);
        doc["metadata"]["name"] = json!(name);
        for (i, hook) in doc["webhooks"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "self-managed: the chart must not render a caBundle"
            );
            let url = urls.get(i).or(urls.last()).unwrap();
            hook["clientConfig"] = json!({ "url": url });
            hook["namespaceSelector"]["matchExpressions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [PODS]}));
        }
        names.push(format!("{kind}/{name}"));
        out.push(doc);
    }
    (out, Registrations(names))
}

fn create_registrations(docs: &[Value]) {
    for d in docs {
        kubectl_ok(
            &["apply", "-f", "-"],
            Some(&serde_json::to_string(d).unwrap()),
        );
    }
}

async fn secret(client: &kube::Client, name: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NS);
    api.get(name).await.unwrap()
}

fn data(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn ca_bundles(kind: &str, name: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&kubectl_ok(&["get", kind, name, "-o", "json"], None)).unwrap();
    v["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let b64 = h["clientConfig"]["caBundle"].as_str().unwrap_or_default();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        })
        .collect()
}

/// The certificate a server presents, and whether it verifies against `bundle` for 127.0.0.1.
async fn served_certificate(port: u16, bundle: &str) -> Result<Vec<u8>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].to_vec())
}

fn opted_in(name: &str) -> Value {
    fixtures::managed_identity_pod(name, "probe").build()
}

async fn prepare(client: &kube::Client) {
    ensure_namespace(client, PODS).await;
    ensure_namespace(client, RELEASE_NS).await;
    ensure_service_account(client, PODS, "probe", json!({})).await;
    // The chart's CRDs: the webhooks watch KeywirePolicies (--policies defaults to true).
    let crds: String = documents(&render("sm", RELEASE_NS, &[]))
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| format!("---\n{}\n", serde_json::to_string(&d).unwrap()))
        .collect();
    apply_and_wait_for_crds(&crds);
}

/// (a) caBundle written to both webhook configurations, readiness held until then, pods mutated.
#[tokio::test]
async fn chart_self_managed_certificates_publish_the_ca_bundle_and_mutate() {
    let client = client().await;
    prepare(&client).await;
    let secret_name = "sm-single-tls";
    let webhook = SelfManaged::spawn(
        "self-managed-single",
        secret_name,
        "sm-single-mutating",
        Some("sm-single-validating"),
    );
    // No webhook configuration yet: the Secret is made, but nothing is served or ready.
    std::thread::sleep(Duration::from_secs(3));
    let messages = webhook.messages();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("waiting for the webhook configurations")),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| m == "webhook listening" || m == "ready"),
        "served before the API server could trust it: {messages:?}"
    );

    let (docs, _registered) = registrations(
        "sm-single",
        &[webhook.url("/mutate")],
        Some(webhook.url("/validate")),
    );
    create_registrations(&docs);
    webhook.wait_for("ready", Duration::from_secs(30));

    let stored = secret(&client, secret_name).await;
    let bundle = data(&stored, "ca-bundle.crt");
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "sm-single-mutating"),
        ("validatingwebhookconfiguration", "sm-single-validating"),
    ] {
        let bundles = ca_bundles(kind, name);
        assert!(!bundles.is_empty());
        assert!(bundles.iter().all(|b| b == &bundle), "{kind}/{name}");
        let managers = kubectl_ok(
            &[
                "get",
                kind,
                name,
                "--show-managed-fields",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
            ],
            None,
        );
        assert!(
            managers.split_whitespace().any(|m| m == "keywire"),
            "{managers}"
        );
    }
    let served = served_certificate(webhook.port, &bundle).await.unwrap();
    assert_eq!(
        served,
        keywire::webhook::selfcert::parse_certs(&data(&stored, "tls.crt"))[0].der
    );

    let pod = create_pod(&client, PODS, &opted_in("self-managed-a"), false)
        .await
        .unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
    assert!(
        webhook.messages().iter().any(|m| m == "admission review"),
        "the pod was mutated by another webhook"
    );
}

/// (b) A forced rotation (annotation keywire.dev/rotate) under continuous pod creation fails none.
#[tokio::test]
async fn chart_self_managed_rotation_under_pod_creation_fails_none() {
    let client = client().await;
    prepare(&client).await;
    let secret_name = "sm-rotation-tls";
    let webhook = SelfManaged::spawn(
        "self-managed-rotation",
        secret_name,
        "sm-rotation-mutating",
        None,
    );
    let (docs, _registered) = registrations("sm-rotation", &[webhook.url("/mutate")], None);
    create_registrations(&docs);
    webhook.wait_for("ready", Duration::from_secs(30));
    let before = secret(&client, secret_name).await;
    let old_ca = data(&before, "ca.crt");

    let created = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (client, created, failures, stop) = (
            client.clone(),
            created.clone(),
            failures.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = format!("rotating-{i}");
                match create_pod(&client, PODS, &opted_in(&name), false).await {
                    Ok(p) if p["metadata"]["annotations"]["keywire.dev/status"] == "injected" => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{name}: stored unmutated")),
                    Err(e) => failures.lock().unwrap().push(format!("{name}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    kubectl_ok(
        &[
            "annotate",
            "--overwrite",
            "-n",
            RELEASE_NS,
            &format!("secret/{secret_name}"),
            &format!(
                "{}=e2e-{}",
                keywire::webhook::selfcert::ANNOTATION_ROTATE,
                std::process::id()
            ),
        ],
        None,
    );
    // Staged, promoted after the 4 s overlap, old CA trimmed 4 s later.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (new_ca, bundle) = loop {
        let s = secret(&client, secret_name).await;
        let (ca, bundle) = (data(&s, "ca.crt"), data(&s, "ca-bundle.crt"));
        if ca != old_ca && keywire::webhook::selfcert::parse_certs(&bundle).len() == 1 {
            break (ca, bundle);
        }
        assert!(Instant::now() < deadline, "rotation never completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Keep creating pods through the trimmed bundle for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    let n = created.load(Ordering::SeqCst);
    println!(
        "self-managed rotation under load: pods created: {n}, failures: {}",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(n >= 30, "only {n} pods created during the rotation");
    assert_eq!(bundle, new_ca.trim_end().to_string() + "\n");
    assert!(
        ca_bundles("mutatingwebhookconfiguration", "sm-rotation-mutating")
            .iter()
            .all(|b| b == &bundle)
    );
    let served = served_certificate(webhook.port, &bundle).await.unwrap();
    assert!(keywire::webhook::selfcert::bundle_trusts(&bundle, &new_ca));
    assert_eq!(
        served,
        keywire::webhook::selfcert::parse_certs(&data(
            &secret(&client, secret_name).await,
            "tls.crt"
        ))[0]
            .der
    );
    assert!(
        served_certificate(webhook.port, &old_ca).await.is_err(),
        "the old CA still verifies"
    );
    let messages = webhook.messages();
    for step in [
        "self-managed certificate: rotation step",
        "serving certificate reloaded",
    ] {
        assert!(
            messages.iter().any(|m| m == step),
            "no {step:?}: {messages:?}"
        );
    }
}

/// (c) Two replicas (two processes) started together agree on one certificate.
#[tokio::test]
async fn chart_self_managed_replicas_agree_on_one_certificate() {
    let client = client().await;
    prepare(&client).await;
    ensure_service_account(
        &client,
        PODS,
        "awi",
        json!({"azure.workload.identity/client-id": "8a9b0c1d-2e3f-4a5b-9c6d-7e8f9a0b1c2d",
               "azure.workload.identity/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}),
    )
    .await;
    let secret_name = "sm-pair-tls";
    let a = SelfManaged::spawn(
        "self-managed-replica-a",
        secret_name,
        "sm-pair-mutating",
        None,
    );
    let b = SelfManaged::spawn(
        "self-managed-replica-b",
        secret_name,
        "sm-pair-mutating",
        None,
    );
    // Webhook 1 (keywire opt-in) calls replica a, webhook 2 (Azure Workload Identity) replica b.
    let (docs, _registered) = registrations("sm-pair", &[a.url("/mutate"), b.url("/mutate")], None);
    create_registrations(&docs);
    a.wait_for("ready", Duration::from_secs(30));
    b.wait_for("ready", Duration::from_secs(30));

    let creators = [&a, &b]
        .iter()
        .filter(|w| {
            w.messages()
                .iter()
                .any(|m| m == "self-managed certificate: created the CA and serving certificate")
        })
        .count();
    assert_eq!(creators, 1, "exactly one replica creates the Secret");
    let stored = secret(&client, secret_name).await;
    let bundle = data(&stored, "ca-bundle.crt");
    let leaf = keywire::webhook::selfcert::parse_certs(&data(&stored, "tls.crt"))[0]
        .der
        .clone();
    for w in [&a, &b] {
        assert_eq!(served_certificate(w.port, &bundle).await.unwrap(), leaf);
    }
    assert!(
        ca_bundles("mutatingwebhookconfiguration", "sm-pair-mutating")
            .iter()
            .all(|x| x == &bundle)
    );

    let via_a = create_pod(&client, PODS, &opted_in("replica-a"), false)
        .await
        .unwrap();
    assert_eq!(
        via_a["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
    let awi = fixtures::pod("replica-b")
        .azure_workload_identity()
        .service_account("awi")
        .containers(vec![fixtures::simple_container("c")])
        .build();
    let via_b = create_pod(&client, PODS, &awi, false).await.unwrap();
    assert!(
        via_b["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"]
                == keywire::core::azure::Layout::V16
                    .volume_name("replica-b")
                    .as_str()),
        "replica b did not mutate"
    );
    for w in [&a, &b] {
        assert!(
            w.messages().iter().any(|m| m == "admission review"),
            "{} never answered an admission",
            w.log.display()
        );
    }
}
