//! Property tests over generated pods: the patch applies, yields a Pod, is idempotent,
//! loses nothing and never duplicates a name.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::core::patch;
use crate::fixtures::cluster;

const ENV_NAMES: &[&str] = &[
    "LOG",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "PASSWORD",
    "TOKEN",
];
const VOLUMES: &[&str] = &[
    "data",
    "cache",
    "keywire-secrets-store",
    "azure-identity-token",
];
const PATHS: &[&str] = &[
    "/data",
    "/cache",
    "/mnt/secrets-store",
    "/var/run/secrets/azure/tokens",
    "/etc/kv",
];

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        proptest::sample::subsequence(ENV_NAMES, 0..=3),
        proptest::sample::subsequence(&[0usize, 1][..], 0..=2),
        any::<bool>(),
        proptest::option::of("[a-z]{1,8}"),
    )
        .prop_map(move |(env, mounts, sidecar, extra)| {
            let mut c = json!({"name": name, "image": "img"});
            if !env.is_empty() {
                c["env"] = Value::Array(
                    env.iter()
                        .map(|n| json!({"name": n, "value": "user"}))
                        .collect(),
                );
            }
            if !mounts.is_empty() {
                c["volumeMounts"] = Value::Array(
                    mounts
                        .iter()
                        .map(|i| {
                            let name = ["data", "cache"][*i];
                            json!({"name": name, "mountPath": PATHS[*i]})
                        })
                        .collect(),
                );
            }
            if sidecar {
                c["restartPolicy"] = json!("Always");
            }
            if let Some(x) = extra {
                c["x-future-field"] = json!({"value": x});
            }
            c
        })
}

fn annotations() -> impl Strategy<Value = Value> {
    let source = prop_oneof![
        Just(
            json!({"keywire.dev/keyvault": "kv-one", "keywire.dev/objects": "secret/a, cert/b as b.pem"})
        ),
        Just(json!({"keywire.dev/keyvault": "KV-One", "keywire.dev/objects": "cert/b as b.pem,a"})),
        Just(json!({"keywire.dev/secret-provider-class": "mine"})),
        Just(json!({"keywire.dev/keyvault": "kv-one"})),
    ];
    (
        source,
        proptest::option::of(proptest::sample::select(vec![
            "workload",
            "service-principal",
            "managed-identity",
            "pod-identity",
            "bogus",
        ])),
        proptest::option::of(proptest::sample::select(vec![
            "PASSWORD=a",
            "A=a,B=b.pem",
            "X=missing",
        ])),
        proptest::option::of(proptest::sample::select(vec![
            "3600", "7200", "86400", "10", "x",
        ])),
        proptest::option::of(proptest::sample::select(vec![
            "/mnt/secrets-store",
            "/etc/kv",
            "/data",
        ])),
        proptest::option::of(proptest::sample::select(vec!["c0", "c1", "c0,c1", "nope"])),
        proptest::option::of(proptest::sample::select(vec!["i0", "nope"])),
    )
        .prop_map(
            |(source, identity, env, expiration, mount, containers, inits)| {
                let mut a = source;
                let set = |a: &mut Value, k: &str, v: Option<&str>| {
                    if let Some(v) = v {
                        a[k] = json!(v);
                    }
                };
                set(&mut a, "keywire.dev/identity", identity);
                set(&mut a, "keywire.dev/env", env);
                set(&mut a, "keywire.dev/token-expiration", expiration);
                set(&mut a, "keywire.dev/mount-path", mount);
                set(&mut a, "keywire.dev/containers", containers);
                set(&mut a, "keywire.dev/init-containers", inits);
                a
            },
        )
}

fn pods() -> impl Strategy<Value = Value> {
    (1usize..4, 0usize..3).prop_flat_map(|(n, m)| {
        (
            (0..n).map(|i| container(format!("c{i}"))).collect::<Vec<_>>(),
            (0..m).map(|i| container(format!("i{i}"))).collect::<Vec<_>>(),
            annotations(),
            any::<bool>(),
            any::<bool>(),
            proptest::sample::select(vec!["app", "bare", "missing"]),
            proptest::sample::subsequence(VOLUMES, 0..=2),
            any::<bool>(),
        )
            .prop_map(|(containers, inits, annotations, keywire, azure, sa, volumes, no_annotations)| {
                let mut labels = serde_json::Map::new();
                if keywire {
                    labels.insert("keywire.dev/inject".into(), json!("true"));
                }
                if azure {
                    labels.insert("azure.workload.identity/use".into(), json!("true"));
                }
                let mut pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "w-", "labels": labels, "annotations": annotations},
                    "spec": {"serviceAccountName": sa, "containers": containers, "x-new-spec-field": [1, 2]},
                });
                if no_annotations {
                    pod["metadata"].as_object_mut().unwrap().remove("annotations");
                }
                if !inits.is_empty() {
                    pod["spec"]["initContainers"] = Value::Array(inits);
                }
                let mut vols: Vec<Value> = vec![json!({"name": "data", "emptyDir": {}}), json!({"name": "cache", "emptyDir": {}})];
                vols.extend(volumes.iter().filter(|v| !["data", "cache"].contains(v)).map(|v| json!({"name": v, "emptyDir": {}})));
                pod["spec"]["volumes"] = Value::Array(vols);
                pod
            })
    })
}

fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, format!("{path}/{}", patch::escape(k)), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{path}/{i}"), out);
            }
        }
        _ => out.push((path, v.clone())),
    }
}

fn assert_unique(items: Option<&Value>, field: &str, what: &str) {
    let mut seen = HashSet::new();
    for i in items.and_then(Value::as_array).into_iter().flatten() {
        let key = i[field].to_string();
        assert!(seen.insert(key.clone()), "duplicate {what} {key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn admission_is_safe_idempotent_and_lossless(pod in pods()) {
        let s = cluster("ns");
        let settings = Settings::default();
        let decision = decide(&pod, "ns", &s, &settings);
        let mut out = pod.clone();
        if let Outcome::Patch(ops) = &decision.outcome {
            patch::apply(&mut out, ops).expect("patch applies");
            prop_assert!(ops.iter().all(|o| serde_json::to_value(o).unwrap()["op"] == "add"));
        }
        // Still a Pod.
        let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(out.clone());
        prop_assert!(typed.is_ok(), "{:?}", typed.err());
        // Nothing the user wrote is lost or changed.
        let mut original = Vec::new();
        leaves(&pod, String::new(), &mut original);
        for (path, value) in original {
            prop_assert_eq!(out.pointer(&path), Some(&value), "{} changed", path);
        }
        // No duplicates, ever.
        assert_unique(out["spec"].get("volumes"), "name", "volume");
        for field in ["containers", "initContainers"] {
            for c in out["spec"].get(field).and_then(Value::as_array).into_iter().flatten() {
                assert_unique(c.get("env"), "name", "env");
                assert_unique(c.get("volumeMounts"), "name", "mount name");
                assert_unique(c.get("volumeMounts"), "mountPath", "mount path");
            }
        }
        // Admitting the result again changes nothing.
        if decision.is_allowed() {
            let again = decide(&out, "ns", &s, &settings);
            prop_assert_eq!(again.outcome, Outcome::Unchanged);
        }
    }
}
