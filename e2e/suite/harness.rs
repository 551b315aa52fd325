//! The e2e harness: the control plane `e2e/up.sh` started, a `keywire webhook` process against
//! it, its registration, and helpers to create objects and read back what the API server stored.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use serde_json::{Value, json};

pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the suite through e2e/run.sh"))
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn state_dir() -> PathBuf {
    PathBuf::from(env("E2E_STATE_DIR"))
}

/// The keywire binary under test: this build's, or `KEYWIRE_BIN` (benchmarks use a release build).
pub fn keywire() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("KEYWIRE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keywire").to_string())
    })
}

pub async fn client() -> kube::Client {
    kube::Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

/// The shared webhook's workload-identity settings (and `keywire mutate`'s when it predicts
/// them): AKS identity bindings as upstream's own e2e configures them.
pub const WORKLOAD_IDENTITY_FLAGS: &[&str] = &[
    "--custom-token-endpoint-annotation-suffix=identity-binding",
    "--custom-token-endpoint-audience=api://AKSIdentityBinding",
    "--azure-kubernetes-token-proxy=https://kubernetes.default.svc",
    "--azure-kubernetes-sni-name=2183187515ff64fc2fff014fd0e749f92578a466dc345b",
    "--azure-kubernetes-ca-configmap-name=kube-root-ca.crt",
];

/// A `keywire webhook` process talking to the e2e API server, logging into the state dir.
pub struct Webhook {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
}

impl Webhook {
    /// Starts the webhook with certificates in `cert_dir`, on `listen` (use port 0 for any).
    pub fn start(cert_dir: &Path, listen: &str) -> Webhook {
        let log_path = state_dir().join("logs/webhook.log");
        let mut child = Command::new(keywire())
            .args([
                "webhook",
                "--listen",
                listen,
                "--metrics-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                cert_dir.join("tls.crt").to_str().unwrap(),
                "--tls-key-file",
                cert_dir.join("tls.key").to_str().unwrap(),
                "--cert-reload-seconds",
                "1",
            ])
            .args(WORKLOAD_IDENTITY_FLAGS)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start keywire webhook");
        // run.sh kills whatever is left: a webhook held in a static is never dropped.
        let pids = state_dir().join("pids");
        let _ = std::fs::create_dir_all(&pids);
        let _ = std::fs::write(
            pids.join(format!("keywire-webhook-{}.pid", child.id())),
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut addr, mut metrics_addr, mut ready) = (None, None, false);
        while addr.is_none() || metrics_addr.is_none() || !ready {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("webhook did not become ready (see logs/webhook.log)");
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            match v["fields"]["message"].as_str() {
                Some("webhook listening") => {
                    addr = v["fields"]["addr"].as_str().map(str::to_string)
                }
                Some("metrics listening") => {
                    metrics_addr = v["fields"]["addr"].as_str().map(str::to_string)
                }
                Some("ready") => ready = true,
                _ => {}
            }
        }
        // Keep draining so the pipe never fills.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Webhook {
            child,
            addr: addr.unwrap(),
            metrics_addr: metrics_addr.unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.addr)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "webhook exit status after SIGTERM");
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keywire certs` for 127.0.0.1 into `dir`; returns the CA PEM.
pub fn make_certs(dir: &Path) -> String {
    let out = Command::new(keywire())
        .args([
            "certs",
            "--out-dir",
            dir.to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

/// Registers the shipped `webhook-config/` mutating and validating configurations, pointed at
/// the webhook at `url` (its `/mutate`; `/validate` beside it) and trusting `ca_pem`.
pub async fn register(client: &kube::Client, url: &str, ca_pem: &str) {
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let base = url.trim_end_matches("/mutate");
    let load = |file: &str, path: &str| -> Value {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let mut config: Value = keywire::yaml::from_str(&text).unwrap().remove(0);
        for hook in config["webhooks"].as_array_mut().unwrap() {
            hook["clientConfig"] = json!({"url": format!("{base}{path}"), "caBundle": bundle});
        }
        config
    };
    let pp = PatchParams::apply("keywire-e2e").force();
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(load("webhook-config/mutating-webhook.yaml", "/mutate")).unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch("keywire", &pp, &Patch::Apply(&mutating))
        .await
        .expect("register the mutating webhook");
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(load("webhook-config/validating-webhook.yaml", "/validate"))
            .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch("keywire", &pp, &Patch::Apply(&validating))
        .await
        .expect("register the validating webhook");
}

pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.patch(name, &PatchParams::apply("keywire-e2e"), &Patch::Apply(&ns))
        .await
        .unwrap();
}

pub async fn ensure_service_account(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    annotations: Value,
) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": namespace, "annotations": annotations}}),
    )
    .unwrap();
    api.patch(name, &PatchParams::apply("keywire-e2e"), &Patch::Apply(&sa))
        .await
        .unwrap();
}

/// Creates any object (server-side apply for everything but Pods, which are created).
pub async fn apply_object(client: &kube::Client, discovery: &Discovery, object: &Value) -> Value {
    let obj: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let gvk = obj
        .types
        .as_ref()
        .map(|t| kube::api::GroupVersionKind::try_from(t).unwrap())
        .unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("unknown kind {gvk:?}"));
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().unwrap_or("default"),
            &ar,
        )
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let name = obj.metadata.name.clone().unwrap();
    let stored = api
        .patch(
            &name,
            &PatchParams::apply("keywire-e2e").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {gvk:?} {name}: {e}"));
    serde_json::to_value(stored).unwrap()
}

pub async fn discovery(client: &kube::Client) -> Discovery {
    Discovery::new(client.clone()).run().await.unwrap()
}

/// Creates a pod from raw JSON (so fields round-trip untouched) and returns what was stored.
pub async fn create_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &Value,
    dry_run: bool,
) -> Result<Value, kube::Error> {
    let ar = ApiResource::erase::<Pod>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let obj: DynamicObject = serde_json::from_value(pod.clone()).unwrap();
    let pp = PostParams {
        dry_run,
        ..PostParams::default()
    };
    api.create(&pp, &obj)
        .await
        .map(|o| serde_json::to_value(o).unwrap())
}

/// Removes what the API server sets on its own and what differs per pod by design.
pub fn normalise(pod: &Value) -> Value {
    let mut p = pod.clone();
    if let Some(meta) = p["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "name",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = p.as_object_mut() {
        o.remove("status");
    }
    // ServiceAccount admission adds a kube-api-access-<random> volume and its mounts.
    let is_api_access = |v: &Value| {
        v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    };
    if let Some(vols) = p["spec"]["volumes"].as_array_mut() {
        vols.retain(|v| !is_api_access(v));
    }
    for field in ["containers", "initContainers"] {
        if let Some(cs) = p["spec"][field].as_array_mut() {
            for c in cs {
                if let Some(ms) = c["volumeMounts"].as_array_mut() {
                    ms.retain(|m| !is_api_access(m));
                    if ms.is_empty() {
                        c.as_object_mut().unwrap().remove("volumeMounts");
                    }
                }
            }
        }
    }
    p
}

/// Runs `keywire mutate ARGS` with the workload-identity flags the webhook runs with, asserts
/// exit 0 and returns stdout.
pub fn run_keywire_mutate(args: &[&str]) -> Vec<u8> {
    let out = Command::new(keywire())
        .arg("mutate")
        .args(args)
        .args(WORKLOAD_IDENTITY_FLAGS)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `keywire mutate -o json` on a file and returns its objects.
pub fn keywire_mutate(file: &Path) -> Vec<Value> {
    let stdout = run_keywire_mutate(&["-o", "json", "-f", file.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&stdout).unwrap();
    match v["kind"].as_str() {
        Some("List") => v["items"].as_array().unwrap().clone(),
        _ => vec![v],
    }
}

pub fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Waits until the API server calls the webhook for a probe pod (config propagation is async).
pub async fn wait_until_mutating(client: &kube::Client, namespace: &str, sa: &str) {
    let probe = keywire::fixtures::managed_identity_pod("probe", sa)
        .generate_name("probe-")
        .annotation("keywire.dev/secret-provider-class", "probe")
        .build();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(p) = create_pod(client, namespace, &probe, true).await
            && p["metadata"]["annotations"]["keywire.dev/status"] == "injected"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server never called the webhook"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
