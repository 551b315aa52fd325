//! Table-driven tests of the annotation contract, as ARCHITECTURE.md states it.

use serde_json::{Value, json};

use super::*;
use crate::core::lookup::ServiceAccountInfo;
use crate::core::patch;
use crate::fixtures::{
    CLIENT_ID as CLIENT, OTHER_CLIENT_ID as OTHER_CLIENT, TENANT_ID as TENANT, azure_pod, cluster,
    keywire_pod, pod_with as pod,
};

/// The v1.6 token volume of a pod named `p`: `azure-workload-identity-reserved-` and 30 hex
/// characters of sha256("p").
const TOKEN_VOLUME: &str = "azure-workload-identity-reserved-148de9c5a7a44d19e56cd9ae1a554b";

fn run(p: &Value) -> Decision {
    decide(p, "prod", &cluster("prod"), &Settings::default())
}

/// Applies the decision's patch, asserting it was allowed.
fn admitted(p: &Value) -> (Value, Vec<String>) {
    let d = run(p);
    assert!(d.is_allowed(), "denied: {:?}", d.outcome);
    let mut out = p.clone();
    patch::apply(&mut out, d.patch()).unwrap();
    (out, d.warnings)
}

fn denial(p: &Value) -> String {
    match run(p).outcome {
        Outcome::Denied(m) => m,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn token_volume(expiration: i64) -> Value {
    json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": "api://AzureADTokenExchange", "expirationSeconds": expiration, "path": "token/azure-identity-token"}}]}})
}

fn wi_env(client: &str) -> Vec<Value> {
    vec![
        json!({"name": "AZURE_CLIENT_ID", "value": client}),
        json!({"name": "AZURE_TENANT_ID", "value": TENANT}),
        json!({"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/wi/token/azure-identity-token"}),
        json!({"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}),
    ]
}

fn class_of(p: &Value) -> String {
    p["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pods_without_the_label_are_untouched() {
    let p = pod(json!({}), json!({}), json!({"containers": [{"name": "a"}]}));
    assert_eq!(
        run(&p),
        Decision {
            outcome: Outcome::Unchanged,
            warnings: vec![],
            violations: vec![],
        }
    );
    let p = pod(
        json!({"keywire.dev/inject": "false"}),
        json!({"keywire.dev/keyvault": "kv-a"}),
        json!({"containers": [{"name": "a"}]}),
    );
    assert_eq!(
        run(&p),
        Decision {
            outcome: Outcome::Unchanged,
            warnings: vec![
                "keywire.dev annotations are ignored without the label keywire.dev/inject=true"
                    .into()
            ],
            violations: vec![],
        }
    );
}

#[test]
fn inline_workload_identity_pod_is_wired_completely() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "secret/db-password"}),
    );
    let (out, warnings) = admitted(&p);
    assert!(warnings.is_empty());
    let class = class_of(&out);
    assert!(class.starts_with("keywire-kv-demo-"));
    let env = wi_env(CLIENT);
    assert_eq!(
        out,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"keywire.dev/inject": "true"},
                "annotations": {"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "secret/db-password",
                    "keywire.dev/status": "injected"}},
            "spec": {"serviceAccountName": "app",
                "containers": [{"name": "app", "image": "busybox",
                    "volumeMounts": [
                        {"name": "keywire-secrets-store", "mountPath": "/mnt/secrets-store", "readOnly": true},
                        {"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/azure/wi", "readOnly": true}],
                    "env": env}],
                "volumes": [
                    {"name": "keywire-secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                        "volumeAttributes": {"secretProviderClass": class}}},
                    token_volume(3600)]}})
    );
}

#[test]
fn csi_volume_attributes_hold_only_the_class() {
    for identity in [
        "workload",
        "service-principal",
        "managed-identity",
        "pod-identity",
    ] {
        let p = keywire_pod(
            json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
            "keywire.dev/identity": identity}),
        );
        let (out, _) = admitted(&p);
        let attrs = out["spec"]["volumes"][0]["csi"]["volumeAttributes"]
            .as_object()
            .unwrap();
        assert_eq!(
            attrs.keys().collect::<Vec<_>>(),
            vec!["secretProviderClass"],
            "{identity}"
        );
        assert_eq!(out["spec"]["volumes"][0]["csi"]["readOnly"], true);
    }
}

#[test]
fn client_id_annotation_overrides_the_service_account() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
        "keywire.dev/client-id": OTHER_CLIENT}),
    );
    let (out, _) = admitted(&p);
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!(wi_env(OTHER_CLIENT))
    );
}

#[test]
fn workload_identity_without_client_id_names_both_places() {
    let mut p = keywire_pod(json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"}));
    p["spec"]["serviceAccountName"] = json!("bare");
    assert_eq!(
        denial(&p),
        "keywire.dev/identity=workload needs a client id: set annotation keywire.dev/client-id on the pod or azure.workload.identity/client-id on ServiceAccount prod/bare"
    );
    p["spec"]["serviceAccountName"] = json!("ghost");
    assert_eq!(
        denial(&p),
        "keywire.dev/identity=workload needs a client id: set annotation keywire.dev/client-id on the pod or azure.workload.identity/client-id on ServiceAccount prod/ghost (ServiceAccount prod/ghost not found)"
    );
}

#[test]
fn missing_tenant_is_denied_unless_a_default_exists() {
    let mut p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
        "keywire.dev/client-id": CLIENT}),
    );
    p["spec"]["serviceAccountName"] = json!("bare");
    assert_eq!(
        denial(&p),
        "keywire.dev/identity=workload needs a tenant id: set annotation keywire.dev/tenant-id on the pod, azure.workload.identity/tenant-id on ServiceAccount prod/bare, or a cluster default"
    );
    let settings = Settings {
        default_tenant_id: Some(TENANT.into()),
        ..Settings::default()
    };
    let d = decide(&p, "prod", &cluster("prod"), &settings);
    assert!(d.is_allowed());
}

#[test]
fn service_principal_uses_node_publish_secret_ref_and_no_token() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
        "keywire.dev/identity": "service-principal"}),
    );
    let (out, _) = admitted(&p);
    assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(
        out["spec"]["volumes"][0]["csi"]["nodePublishSecretRef"],
        json!({"name": "secrets-store-creds"})
    );
    assert!(out["spec"]["containers"][0].get("env").is_none());

    let p = keywire_pod(json!({"keywire.dev/secret-provider-class": "mine",
        "keywire.dev/identity": "service-principal", "keywire.dev/credentials-secret": "sp-creds"}));
    let (out, _) = admitted(&p);
    assert_eq!(
        out["spec"]["volumes"][0],
        json!({"name": "keywire-secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
            "volumeAttributes": {"secretProviderClass": "mine"}, "nodePublishSecretRef": {"name": "sp-creds"}}})
    );
}

#[test]
fn managed_and_pod_identity_add_nothing_but_the_volume() {
    for (identity, warning) in [
        ("managed-identity", None),
        (
            "pod-identity",
            Some("identity pod-identity is deprecated (AAD Pod Identity is retired); use workload"),
        ),
    ] {
        let p = keywire_pod(
            json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
            "keywire.dev/identity": identity}),
        );
        let (out, warnings) = admitted(&p);
        assert_eq!(
            out["spec"]["volumes"].as_array().unwrap().len(),
            1,
            "{identity}"
        );
        assert!(
            out["spec"]["volumes"][0]["csi"]
                .get("nodePublishSecretRef")
                .is_none()
        );
        assert!(out["spec"]["containers"][0].get("env").is_none());
        assert_eq!(
            warnings,
            warning.map(|w| vec![w.to_string()]).unwrap_or_default()
        );
    }
}

#[test]
fn env_refers_to_the_synced_secret() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "redis-password as password",
        "keywire.dev/identity": "managed-identity", "keywire.dev/env": "REDIS_PWD=password"}),
    );
    let (out, _) = admitted(&p);
    let class = class_of(&out);
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "REDIS_PWD", "valueFrom": {"secretKeyRef": {"name": class, "key": "password"}}}])
    );

    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
        "keywire.dev/identity": "managed-identity", "keywire.dev/env": "A=a", "keywire.dev/sync-secret": "app-secrets"}),
    );
    let (out, _) = admitted(&p);
    assert_eq!(
        out["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "app-secrets"
    );

    let p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/env": "A=a"}),
    );
    let (out, _) = admitted(&p);
    let name = out["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .unwrap();
    assert!(name.starts_with("mine-keywire-"), "{name}");
}

#[test]
fn env_cannot_shadow_the_identity_variables() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a",
        "keywire.dev/env": "AZURE_CLIENT_ID=a"}),
    );
    assert_eq!(
        denial(&p),
        "annotation keywire.dev/env: AZURE_CLIENT_ID is set by keywire for workload identity; bind the object to another name"
    );
}

#[test]
fn containers_and_init_containers_are_targeted() {
    let p = pod(
        json!({"keywire.dev/inject": "true"}),
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
            "keywire.dev/containers": "web", "keywire.dev/init-containers": "migrate"}),
        json!({"initContainers": [{"name": "migrate"}, {"name": "other-init"}],
            "containers": [{"name": "web"}, {"name": "sidecar"}]}),
    );
    let (out, _) = admitted(&p);
    let mounted = |field: &str, i: usize| out["spec"][field][i].get("volumeMounts").is_some();
    assert!(mounted("initContainers", 0));
    assert!(!mounted("initContainers", 1));
    assert!(mounted("containers", 0));
    assert!(!mounted("containers", 1));

    // By default every regular container, and no init container.
    let p = pod(
        json!({"keywire.dev/inject": "true"}),
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity"}),
        json!({"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]}),
    );
    let (out, _) = admitted(&p);
    assert!(
        out["spec"]["initContainers"][0]
            .get("volumeMounts")
            .is_none()
    );
    assert!(out["spec"]["containers"][0].get("volumeMounts").is_some());
    assert!(out["spec"]["containers"][1].get("volumeMounts").is_some());
}

#[test]
fn unknown_target_container_is_denied_with_the_choices() {
    let p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/containers": "app,wbe"}),
    );
    assert_eq!(
        denial(&p),
        r#"annotation keywire.dev/containers="app,wbe" is invalid: the pod has no container named "wbe" (it has: app)"#
    );
    let p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/init-containers": "setup"}),
    );
    assert_eq!(
        denial(&p),
        r#"annotation keywire.dev/init-containers="setup" is invalid: the pod has no init container named "setup" (it has: none)"#
    );
}

#[test]
fn token_expiration_defaults_bounds_and_sources() {
    let base = json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"});
    let expiration = |extra: Value| -> Result<Value, String> {
        let mut a = base.clone();
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let p = keywire_pod(a);
        match run(&p).outcome {
            Outcome::Denied(m) => Err(m),
            _ => Ok(admitted(&p).0["spec"]["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"].clone()),
        }
    };
    assert_eq!(expiration(json!({})), Ok(json!(3600)));
    assert_eq!(
        expiration(json!({"keywire.dev/token-expiration": "86400"})),
        Ok(json!(86400))
    );
    assert_eq!(
        expiration(json!({"azure.workload.identity/service-account-token-expiration": "7200"})),
        Ok(json!(7200))
    );
    assert_eq!(
        expiration(json!({"keywire.dev/token-expiration": "3599"})),
        Err(r#"annotation keywire.dev/token-expiration="3599" is invalid: whole seconds from 3600 to 86400"#.into())
    );
    assert_eq!(
        expiration(json!({"keywire.dev/token-expiration": "1h"})),
        Err(r#"annotation keywire.dev/token-expiration="1h" is invalid: whole seconds from 3600 to 86400"#.into())
    );
}

#[test]
fn mount_path_is_honoured() {
    let p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/mount-path": "/etc/kv"}),
    );
    let (out, _) = admitted(&p);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/kv"
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
        true
    );
}

#[test]
fn admitting_twice_changes_nothing() {
    let p = keywire_pod(
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a,b",
        "keywire.dev/env": "A=a"}),
    );
    let (once, _) = admitted(&p);
    let again = run(&once);
    assert_eq!(
        (again.outcome, again.warnings, again.violations),
        (Outcome::Unchanged, vec![], vec![])
    );
    // The controller still reads the same config from the admitted pod.
    assert_eq!(
        judge(&once, "prod", &cluster("prod"), &Settings::default()),
        judge(&p, "prod", &cluster("prod"), &Settings::default())
    );
    assert!(judge(&once, "prod", &cluster("prod"), &Settings::default()).is_ok());
}

#[test]
fn apiserver_defaults_do_not_break_idempotence() {
    let p = keywire_pod(json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"}));
    let (mut once, _) = admitted(&p);
    once["spec"]["volumes"][1]["projected"]["defaultMode"] = json!(420);
    once["spec"]["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
    assert_eq!(run(&once).outcome, Outcome::Unchanged);
}

#[test]
fn user_env_wins_with_warning() {
    let mut p = keywire_pod(json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"}));
    p["spec"]["containers"][0]["env"] = json!([{"name": "AZURE_TENANT_ID", "value": "mine"}]);
    let (out, warnings) = admitted(&p);
    let env = out["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env[0], json!({"name": "AZURE_TENANT_ID", "value": "mine"}));
    assert_eq!(
        env.iter()
            .filter(|e| e["name"] == "AZURE_TENANT_ID")
            .count(),
        1
    );
    assert_eq!(
        warnings,
        vec![
            r#"container "app" sets AZURE_TENANT_ID itself; keywire's value was not injected"#
                .to_string()
        ]
    );
}

#[test]
fn clashes_are_denied() {
    let mut p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity"}),
    );
    p["spec"]["volumes"] = json!([{"name": "keywire-secrets-store", "emptyDir": {}}]);
    assert_eq!(
        denial(&p),
        r#"volume name clash: the pod already has a volume named "keywire-secrets-store" that keywire did not inject"#
    );
    let mut p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity"}),
    );
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/mnt/secrets-store"}]);
    assert_eq!(
        denial(&p),
        r#"mount path clash: container "app" already mounts volume "data" at "/mnt/secrets-store""#
    );
}

#[test]
fn a_denial_names_every_clash_in_the_pod() {
    let mut p = keywire_pod(json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"}));
    p["spec"]["volumes"] = json!([
        {"name": "keywire-secrets-store", "emptyDir": {}},
        {"name": TOKEN_VOLUME, "emptyDir": {}},
        {"name": "data", "emptyDir": {}},
    ]);
    p["spec"]["containers"] = json!([
        {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/mnt/secrets-store"}]},
        {"name": "side", "volumeMounts": [
            {"name": "data", "mountPath": "/var/run/secrets/azure/wi"},
            {"name": "keywire-secrets-store", "mountPath": "/elsewhere"},
        ]},
    ]);
    assert_eq!(
        denial(&p),
        [
            r#"volume name clash: the pod already has a volume named "keywire-secrets-store" that keywire did not inject"#,
            r#"mount path clash: container "app" already mounts volume "data" at "/mnt/secrets-store""#,
            r#"volume mount clash: container "side" already mounts volume "keywire-secrets-store" at "/elsewhere""#,
            r#"mount path clash: container "side" already mounts volume "data" at "/var/run/secrets/azure/wi""#,
        ]
        .join("; ")
    );
}

#[test]
fn names_never_depend_on_the_pod() {
    let a = json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "b, a"});
    let mut p1 = keywire_pod(a);
    p1["metadata"]["name"] = json!(null);
    p1["metadata"]["generateName"] = json!("web-7d9f-");
    let mut p2 =
        keywire_pod(json!({"keywire.dev/keyvault": "KV-Demo", "keywire.dev/objects": "a,b"}));
    p2["metadata"]["name"] = json!("web-7d9f-xyz12");
    assert_eq!(class_of(&admitted(&p1).0), class_of(&admitted(&p2).0));
    let mut s = cluster("prod");
    let mut sa = s.service_account("prod", "app").unwrap();
    sa.namespace = "dev".into();
    s.add_service_account(sa);
    let other_ns = decide(&p2, "dev", &s, &Settings::default());
    assert!(other_ns.is_allowed(), "{other_ns:?}");
    let mut out = p2.clone();
    patch::apply(&mut out, other_ns.patch()).unwrap();
    assert_ne!(class_of(&out), class_of(&admitted(&p2).0));
}

#[test]
fn unknown_fields_survive() {
    let mut p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/init-containers": "proxy"}),
    );
    p["spec"]["initContainers"] =
        json!([{"name": "proxy", "restartPolicy": "Always", "futureField": {"x": 1}}]);
    p["spec"]["someNewPodField"] = json!(true);
    let (out, _) = admitted(&p);
    assert_eq!(out["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(
        out["spec"]["initContainers"][0]["futureField"],
        json!({"x": 1})
    );
    assert_eq!(out["spec"]["someNewPodField"], true);
}

#[test]
fn unknown_keywire_annotation_warns() {
    let p = keywire_pod(
        json!({"keywire.dev/secret-provider-class": "mine", "keywire.dev/identity": "managed-identity",
        "keywire.dev/mountpath": "/x"}),
    );
    let (_, warnings) = admitted(&p);
    assert_eq!(
        warnings,
        vec!["unknown annotation keywire.dev/mountpath is ignored".to_string()]
    );
}

#[test]
fn azure_workload_identity_drop_in_matches_that_webhook() {
    let p = azure_pod(
        json!({}),
        json!({"serviceAccountName": "app", "initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}),
    );
    let (out, warnings) = admitted(&p);
    assert!(warnings.is_empty());
    let mount =
        json!({"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/azure/wi", "readOnly": true});
    assert_eq!(
        out,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}, "annotations": {}},
            "spec": {"serviceAccountName": "app",
                "initContainers": [{"name": "init", "volumeMounts": [mount], "env": wi_env(CLIENT)}],
                "containers": [{"name": "app", "volumeMounts": [mount], "env": wi_env(CLIENT)}],
                "volumes": [token_volume(3600)]}})
    );
}

#[test]
fn azure_drop_in_skips_containers_and_reads_expiration_pod_first() {
    let mut s = cluster("prod");
    s.add_service_account(ServiceAccountInfo {
        namespace: "prod".into(),
        name: "long".into(),
        annotations: [
            (
                "azure.workload.identity/client-id".to_string(),
                CLIENT.to_string(),
            ),
            (
                "azure.workload.identity/service-account-token-expiration".to_string(),
                "7200".to_string(),
            ),
        ]
        .into(),
    });
    let spec = json!({"serviceAccountName": "long", "containers": [{"name": "app"}, {"name": "istio-proxy"}]});
    let p = azure_pod(
        json!({"azure.workload.identity/skip-containers": "istio-proxy"}),
        spec.clone(),
    );
    let d = decide(&p, "prod", &s, &Settings::default());
    let mut out = p.clone();
    patch::apply(&mut out, d.patch()).unwrap();
    assert!(out["spec"]["containers"][1].get("env").is_none());
    assert_eq!(out["spec"]["volumes"][0], token_volume(7200));
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // No tenant on the ServiceAccount and no default: AZURE_TENANT_ID is left out, as upstream does.
    let names: Vec<&str> = out["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST"
        ]
    );

    let p = azure_pod(
        json!({"azure.workload.identity/service-account-token-expiration": "4000"}),
        spec.clone(),
    );
    let d = decide(&p, "prod", &s, &Settings::default());
    let mut out = p.clone();
    patch::apply(&mut out, d.patch()).unwrap();
    assert_eq!(out["spec"]["volumes"][0], token_volume(4000));

    let p = azure_pod(
        json!({"azure.workload.identity/service-account-token-expiration": "100"}),
        spec,
    );
    assert_eq!(
        decide(&p, "prod", &s, &Settings::default()).outcome,
        Outcome::Denied(r#"annotation azure.workload.identity/service-account-token-expiration="100" is invalid: whole seconds from 3600 to 86400"#.into())
    );
}

#[test]
fn azure_drop_in_without_client_id_warns() {
    let p = azure_pod(
        json!({}),
        json!({"serviceAccountName": "bare", "containers": [{"name": "app"}]}),
    );
    let d = run(&p);
    assert!(d.is_allowed());
    assert_eq!(
        d.warnings,
        vec!["ServiceAccount prod/bare has no azure.workload.identity/client-id; AZURE_CLIENT_ID not injected".to_string()]
    );
}

#[test]
fn azure_drop_in_needs_the_service_account() {
    let p = azure_pod(
        json!({}),
        json!({"serviceAccountName": "ghost", "containers": [{"name": "app"}]}),
    );
    assert_eq!(
        denial(&p),
        "pod is labelled azure.workload.identity/use=true but its ServiceAccount prod/ghost was not found"
    );
}

#[test]
fn both_labels_share_one_token_volume() {
    let p = pod(
        json!({"keywire.dev/inject": "true", "azure.workload.identity/use": "true"}),
        json!({"keywire.dev/keyvault": "kv-demo", "keywire.dev/objects": "a"}),
        json!({"serviceAccountName": "app", "initContainers": [{"name": "i"}], "containers": [{"name": "app"}]}),
    );
    let (out, _) = admitted(&p);
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, vec!["keywire-secrets-store", TOKEN_VOLUME]);
    assert_eq!(out["spec"]["containers"][0]["env"], json!(wi_env(CLIENT)));
    assert_eq!(
        out["spec"]["initContainers"][0]["env"],
        json!(wi_env(CLIENT))
    );
    assert_eq!(run(&out).outcome, Outcome::Unchanged);
}

#[test]
fn warnings_are_clipped() {
    let long = "x".repeat(300);
    let w = clip(long);
    assert_eq!(w.chars().count(), MAX_WARNING_LEN);
    assert!(w.ends_with("..."));
}

#[test]
fn proxy_annotation_injects_whatever_its_value_and_says_so() {
    for value in ["false", "no", ""] {
        let p = azure_pod(
            json!({"azure.workload.identity/inject-proxy-sidecar": value}),
            json!({"serviceAccountName": "app", "containers": [{"name": "app"}]}),
        );
        let (out, warnings) = admitted(&p);
        let inits: Vec<&str> = out["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            inits,
            vec!["azwi-proxy", "azwi-proxy-init"],
            "value {value:?}"
        );
        let expected = format!(
            "azure.workload.identity/inject-proxy-sidecar={value:?} still injects the proxy sidecar (only the key counts)"
        );
        assert!(expected.len() <= 120, "{expected}");
        assert_eq!(warnings, vec![expected]);
    }
    let p = azure_pod(
        json!({"azure.workload.identity/inject-proxy-sidecar": "true"}),
        json!({"serviceAccountName": "app", "containers": [{"name": "app"}]}),
    );
    assert_eq!(admitted(&p).1, Vec::<String>::new());
}
