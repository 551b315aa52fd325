//! Criterion benchmarks of the pure decision path: `engine::decide` and `admission::review`.
//!
//! Run with `cargo bench --bench engine`; results land in `target/criterion/`.
//! Numbers are recorded in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

use keywire::admission::{self, Endpoint};
use keywire::engine::{self, Outcome};
use keywire::lookup::{ClusterState, ServiceAccountInfo};
use keywire::patch;
use keywire::plan::Settings;

const NAMESPACE: &str = "prod";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// The cluster the webhook would see: one ServiceAccount carrying the workload identity.
fn state() -> ClusterState {
    let mut s = ClusterState::new();
    s.add_service_account(ServiceAccountInfo {
        namespace: NAMESPACE.into(),
        name: "app".into(),
        annotations: [
            (
                "azure.workload.identity/client-id".to_string(),
                CLIENT.to_string(),
            ),
            (
                "azure.workload.identity/tenant-id".to_string(),
                TENANT.to_string(),
            ),
        ]
        .into(),
    });
    s
}

fn container(i: usize) -> Value {
    json!({
        "name": format!("app-{i}"),
        "image": format!("registry.example.com/team/app-{i}:1.2.3"),
        "ports": [{"containerPort": 8080 + i, "protocol": "TCP"}],
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
    })
}

/// An opted-in pod: inline Key Vault config, workload identity from the ServiceAccount,
/// two objects, one of them exposed through `keywire.dev/env`.
fn opted_in_pod(containers: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5", "keywire.dev/inject": "true"},
            "annotations": {
                "keywire.dev/keyvault": "kv-demo",
                "keywire.dev/objects": "secret/db-password, secret/api-key as api",
                "keywire.dev/env": "DB_PASSWORD=db-password"
            }
        },
        "spec": {
            "serviceAccountName": "app",
            "containers": (0..containers).map(container).collect::<Vec<_>>(),
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]
        }
    })
}

fn plain_pod() -> Value {
    let mut p = opted_in_pod(1);
    p["metadata"]["labels"] = json!({"app": "web", "pod-template-hash": "7d9f8c6b5"});
    p["metadata"]["annotations"] = json!({});
    p
}

/// The opted-in pod after the webhook's patch was applied (what a reinvocation sees).
fn injected_pod(state: &ClusterState, settings: &Settings) -> Value {
    let mut p = opted_in_pod(1);
    let decision = engine::decide(&p, NAMESPACE, state, settings);
    patch::apply(&mut p, decision.patch()).expect("patch applies");
    p
}

fn review_bytes(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("serialisable")
}

fn bench_engine(c: &mut Criterion) {
    let state = state();
    let settings = Settings::default();

    let cases = [
        ("decide/opted_in_1_container", opted_in_pod(1), true),
        ("decide/opted_in_20_containers", opted_in_pod(20), true),
        (
            "decide/already_injected",
            injected_pod(&state, &settings),
            false,
        ),
        ("decide/not_opted_in", plain_pod(), false),
    ];
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for (name, pod, patched) in &cases {
        // The benchmark is only meaningful if each case takes the path it claims to.
        let d = engine::decide(pod, NAMESPACE, &state, &settings);
        match (&d.outcome, patched) {
            (Outcome::Patch(ops), true) => assert!(!ops.is_empty(), "{name}"),
            (Outcome::Unchanged, false) => {}
            (other, _) => panic!("{name}: unexpected outcome {other:?}"),
        }
        assert!(d.warnings.is_empty(), "{name}: {:?}", d.warnings);
        group.bench_function(*name, |b| {
            b.iter(|| engine::decide(black_box(pod), NAMESPACE, &state, &settings))
        });
    }

    for (name, pod) in [
        ("review/opted_in_1_container", opted_in_pod(1)),
        ("review/opted_in_20_containers", opted_in_pod(20)),
    ] {
        let body = review_bytes(&pod);
        let out =
            admission::review(&body, Endpoint::Mutate, &state, &settings).expect("valid review");
        let v: Value = serde_json::from_slice(&out.body).expect("json response");
        assert_eq!(v["response"]["allowed"], true, "{name}");
        assert_eq!(v["response"]["patchType"], "JSONPatch", "{name}");
        eprintln!("{name}: AdmissionReview is {} bytes", body.len());
        group.bench_function(name, |b| {
            b.iter(|| admission::review(black_box(&body), Endpoint::Mutate, &state, &settings))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_engine
}
criterion_main!(benches);
