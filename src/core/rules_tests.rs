//! Table-driven tests for each KeywirePolicy rule, for combining policies, and for defaults.

use serde_json::{Value, json};

use crate::core::engine::{Decision, Outcome, decide, decide_at};
use crate::core::plan::Settings;
use crate::core::policy::Enforcement;
use crate::fixtures::{
    CLIENT_ID as CLIENT, TENANT_ID as TENANT, app_spec, cluster_with_policies as state,
    keywire_pod as keywire, pod_with, policy,
};

fn run(policies: &[Value], p: &Value) -> Decision {
    decide(p, "prod", &state(policies), &Settings::default())
}

fn rules(d: &Decision) -> Vec<(&'static str, Enforcement)> {
    d.violations
        .iter()
        .map(|v| (v.rule, v.enforcement))
        .collect()
}

#[test]
fn each_rule_admits_the_compliant_and_flags_the_rest() {
    let inline = |kv: &str| json!({"keywire.dev/keyvault": kv, "keywire.dev/objects": "a"});
    let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
        (
            "identity allowed",
            json!({"identity": {"allowed": ["workload"]}}),
            keywire(inline("kv-prod-1")),
            vec![],
        ),
        (
            "identity refused",
            json!({"identity": {"allowed": ["workload"]}}),
            keywire(
                json!({"keywire.dev/keyvault": "kv-prod-1", "keywire.dev/objects": "a", "keywire.dev/identity": "service-principal"}),
            ),
            vec!["identity"],
        ),
        (
            "vault glob matches",
            json!({"keyVaults": {"allowed": ["kv-prod-*"]}}),
            keywire(inline("kv-prod-orders")),
            vec![],
        ),
        (
            "vault glob is case-insensitive",
            json!({"keyVaults": {"allowed": ["KV-PROD-*"]}}),
            keywire(inline("kv-prod-orders")),
            vec![],
        ),
        (
            "vault refused",
            json!({"keyVaults": {"allowed": ["kv-prod-*"]}}),
            keywire(inline("kv-dev-orders")),
            vec!["keyVaults"],
        ),
        (
            "tenant allowed",
            json!({"tenants": {"allowed": [TENANT]}}),
            keywire(inline("kv-a")),
            vec![],
        ),
        (
            "tenant refused",
            json!({"tenants": {"allowed": ["bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"]}}),
            keywire(inline("kv-a")),
            vec!["tenants"],
        ),
        (
            "class allowed",
            json!({"secretProviderClasses": {"allowed": ["team-*"]}}),
            keywire(json!({"keywire.dev/secret-provider-class": "team-orders"})),
            vec![],
        ),
        (
            "class refused",
            json!({"secretProviderClasses": {"allowed": ["team-*"]}}),
            keywire(json!({"keywire.dev/secret-provider-class": "other"})),
            vec!["secretProviderClasses"],
        ),
        (
            "inline refused",
            json!({"secretProviderClasses": {"allowed": ["team-*"], "allowInline": false}}),
            keywire(inline("kv-a")),
            vec!["secretProviderClasses"],
        ),
        (
            "inline allowed by default",
            json!({"secretProviderClasses": {"allowed": ["team-*"]}}),
            keywire(inline("kv-a")),
            vec![],
        ),
        (
            "token in bounds",
            json!({"tokenExpiration": {"max": 7200}}),
            keywire(
                json!({"keywire.dev/keyvault": "kv-a", "keywire.dev/objects": "a", "keywire.dev/token-expiration": "7200"}),
            ),
            vec![],
        ),
        (
            "token over bound",
            json!({"tokenExpiration": {"max": 7200}}),
            keywire(
                json!({"keywire.dev/keyvault": "kv-a", "keywire.dev/objects": "a", "keywire.dev/token-expiration": "7201"}),
            ),
            vec!["tokenExpiration"],
        ),
        (
            "token under bound",
            json!({"tokenExpiration": {"min": 7200}}),
            keywire(inline("kv-a")),
            vec!["tokenExpiration"],
        ),
        (
            "injection required",
            json!({"requireInjection": {}}),
            pod_with(json!({}), json!({}), app_spec()),
            vec!["requireInjection"],
        ),
        (
            "injection present",
            json!({"requireInjection": {}}),
            keywire(inline("kv-a")),
            vec![],
        ),
        (
            "injection rule disabled",
            json!({"requireInjection": {"enabled": false}}),
            pod_with(json!({}), json!({}), app_spec()),
            vec![],
        ),
    ];
    for (name, spec, p, want) in cases {
        let d = run(&[policy("p1", spec)], &p);
        let got: Vec<&str> = d.violations.iter().map(|v| v.rule).collect();
        assert_eq!(got, want, "{name}: {:?}", d.violations);
        assert_eq!(d.is_allowed(), want.is_empty(), "{name}");
    }
}

fn raw_volume(csi: Value) -> Value {
    let mut p = pod_with(json!({}), json!({}), app_spec());
    p["spec"]["volumes"] = json!([{"name": "secrets", "csi": csi}]);
    p
}

#[test]
fn unmanaged_secret_store_volumes_are_refused() {
    let forbid = policy("lock", json!({"forbidUnmanagedSecretStoreVolumes": {}}));
    let d = run(
        std::slice::from_ref(&forbid),
        &raw_volume(
            json!({"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "x"}}),
        ),
    );
    assert_eq!(
        d.outcome,
        Outcome::Denied("KeywirePolicy lock rule forbidUnmanagedSecretStoreVolumes (spec.volumes[0]): volume secrets uses secrets-store.csi.k8s.io directly; use keywire annotations instead".into())
    );

    // A hand-made volume under keywire's own name that overrides clientID is not keywire's.
    let mut p = keywire(
        json!({"keywire.dev/secret-provider-class": "team", "keywire.dev/identity": "managed-identity"}),
    );
    p["spec"]["volumes"] = json!([{"name": "keywire-secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
        "volumeAttributes": {"secretProviderClass": "team", "clientID": "00000000-0000-0000-0000-000000000000"}}}]);
    let d = decide(
        &p,
        "prod",
        &state(std::slice::from_ref(&forbid)),
        &Settings::default(),
    );
    assert!(!d.is_allowed(), "{d:?}");

    let mut p = raw_volume(
        json!({"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "x", "keyvaultName": "kv-a"},
        "nodePublishSecretRef": {"name": "creds"}}),
    );
    p["spec"]["volumes"][0]["name"] = json!("keywire-secrets-store");
    let d = run(&[forbid], &p);
    assert_eq!(
        d.outcome,
        Outcome::Denied("KeywirePolicy lock rule forbidUnmanagedSecretStoreVolumes (spec.volumes[0]): volume keywire-secrets-store uses secrets-store.csi.k8s.io directly (it is not the volume keywire wires for this pod; its volumeAttributes keyvaultName override the SecretProviderClass; it carries its own nodePublishSecretRef); use keywire annotations instead".into())
    );

    // Other CSI drivers are none of keywire's business.
    let allow = policy(
        "lock",
        json!({"forbidUnmanagedSecretStoreVolumes": {}, "identity": {"allowed": ["workload"]}}),
    );
    assert!(
        run(
            &[allow],
            &raw_volume(json!({"driver": "other.csi.example.com"}))
        )
        .violations
        .is_empty()
    );
}

/// A SecretProviderClass object in namespace prod.
fn class(name: &str, parameters: Value) -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {"provider": "azure", "parameters": parameters}})
}

#[test]
fn every_secret_store_volume_is_judged_by_what_it_reads() {
    // The platform's rules, without forbidUnmanagedSecretStoreVolumes: only content can catch these.
    let prod = policy(
        "prod",
        json!({"keyVaults": {"allowed": ["kv-prod-*"]}, "tenants": {"allowed": [TENANT]},
               "identity": {"allowed": ["workload"]},
               "secretProviderClasses": {"allowed": ["approved-*", "evil"]}}),
    );
    let mut cluster = state(std::slice::from_ref(&prod));
    cluster
        .insert_object(&class(
            "evil",
            json!({"keyvaultName": "kv-dev-loot", "tenantId": "other-tenant", "clientID": CLIENT}),
        ))
        .unwrap();
    cluster
        .insert_object(&class(
            "approved-orders",
            json!({"keyvaultName": "kv-prod-orders", "tenantId": TENANT, "clientID": CLIENT}),
        ))
        .unwrap();
    let volume = |class: &str, extra: Value| {
        let mut attributes = json!({"secretProviderClass": class});
        attributes
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"name": "keywire-secrets-store", "csi": {"driver": "secrets-store.csi.k8s.io",
            "readOnly": true, "volumeAttributes": attributes}})
    };
    let judge = |p: &Value| decide(p, "prod", &cluster, &Settings::default());

    // Keywire's own volume name, in a pod that never opted in: judged by the class it reads.
    let mut p = pod_with(json!({}), json!({}), app_spec());
    p["spec"]["volumes"] = json!([volume("evil", json!({}))]);
    assert_eq!(
        judge(&p).outcome,
        Outcome::Denied(
            [
                "KeywirePolicy prod rule keyVaults (spec.volumes[0]): volume keywire-secrets-store reads key vault kv-dev-loot (SecretProviderClass evil), which is not allowed; allowed: kv-prod-*",
                &format!("KeywirePolicy prod rule tenants (spec.volumes[0]): volume keywire-secrets-store signs in to tenant other-tenant (SecretProviderClass evil), which is not allowed; allowed: {TENANT}"),
            ]
            .join("; ")
        )
    );

    // An approved class, but the volume's attributes override its vault and identity.
    p["spec"]["volumes"] = json!([volume(
        "approved-orders",
        json!({"keyvaultName": "kv-dev-loot", "useVMManagedIdentity": "true"})
    )]);
    assert_eq!(
        rules(&judge(&p)),
        vec![
            ("identity", Enforcement::Enforce),
            ("keyVaults", Enforcement::Enforce)
        ]
    );
    // And a service principal's Secret on a hand-written volume is a service-principal identity.
    p["spec"]["volumes"] = json!([volume("approved-orders", json!({}))]);
    p["spec"]["volumes"][0]["csi"]["nodePublishSecretRef"] = json!({"name": "creds"});
    assert_eq!(
        judge(&p).violations[0].message,
        "volume keywire-secrets-store reads SecretProviderClass approved-orders as service-principal, which is not allowed; allowed: workload"
    );
    // A class nobody can see cannot be approved.
    p["spec"]["volumes"] = json!([volume("approved-ghost", json!({}))]);
    assert_eq!(
        judge(&p).violations[0].message,
        "volume keywire-secrets-store names SecretProviderClass prod/approved-ghost, which was not found; what it reads cannot be checked"
    );
    // The approved class as it is passes.
    p["spec"]["volumes"] = json!([volume("approved-orders", json!({}))]);
    assert_eq!(judge(&p).violations, vec![]);

    // The same volume in a Deployment template is judged the same way, named by its template path.
    let mut template = pod_with(json!({}), json!({}), app_spec());
    template["spec"]["volumes"] = json!([volume("evil", json!({}))]);
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"template": {"metadata": template["metadata"], "spec": template["spec"]}}});
    let judged = crate::core::workload::mutate(deployment, "prod", &cluster, &Settings::default());
    let fields: Vec<String> = judged
        .decision
        .unwrap()
        .violations
        .iter()
        .map(|v| format!("{} {}", v.rule, v.field))
        .collect();
    assert_eq!(
        fields,
        vec![
            "keyVaults spec.template.spec.volumes[0]",
            "tenants spec.template.spec.volumes[0]"
        ]
    );

    // keywire's existing-class wiring reads the class's vault too, not only its name.
    let p = keywire(json!({"keywire.dev/secret-provider-class": "evil"}));
    assert_eq!(
        judge(&p).violations[0].to_string(),
        "KeywirePolicy prod rule keyVaults (metadata.annotations[keywire.dev/secret-provider-class]): volume keywire-secrets-store reads key vault kv-dev-loot (SecretProviderClass evil), which is not allowed; allowed: kv-prod-*"
    );
}

#[test]
fn rules_judge_the_values_the_pod_will_run_with() {
    let prod = policy(
        "prod",
        json!({"tenants": {"allowed": [TENANT]}, "clientIds": {"allowed": [CLIENT]},
               "authorityHosts": {"allowed": ["https://login.microsoftonline.com"]},
               "tokenExpiration": {"max": 7200}, "identity": {"allowed": ["workload"]}}),
    );
    let judge = |p: &Value| run(std::slice::from_ref(&prod), p);

    // keywire wires workload identity; the container overrides what the SDK will use.
    let mut p = keywire(json!({"keywire.dev/keyvault": "kv-prod", "keywire.dev/objects": "a"}));
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "AZURE_TENANT_ID", "value": "attacker-tenant"},
        {"name": "AZURE_CLIENT_ID", "valueFrom": {"configMapKeyRef": {"name": "ids", "key": "client"}}},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.attacker.example/"},
    ]);
    let d = judge(&p);
    assert_eq!(
        d.violations
            .iter()
            .map(|v| format!("{} {}: {}", v.rule, v.field, v.message))
            .collect::<Vec<_>>(),
        vec![
            format!("tenants spec.containers[0].env[0]: container \"app\" sets AZURE_TENANT_ID=attacker-tenant, which is not allowed; allowed: {TENANT}"),
            "clientIds spec.containers[0].env[1]: container \"app\" takes AZURE_CLIENT_ID from a ConfigMap or Secret; set it as a literal value so policy can check it".to_string(),
            "authorityHosts spec.containers[0].env[2]: container \"app\" sets AZURE_AUTHORITY_HOST=https://login.attacker.example/, which is not allowed; allowed: https://login.microsoftonline.com".to_string(),
        ]
    );
    assert!(!d.is_allowed());

    // The same values set by keywire pass: the trailing slash does not matter.
    let p = keywire(json!({"keywire.dev/keyvault": "kv-prod", "keywire.dev/objects": "a"}));
    assert_eq!(judge(&p).violations, vec![]);

    // A hand-written token for Entra, in a pod keywire never saw: tokenExpiration bounds it.
    let mut p = pod_with(json!({}), json!({}), app_spec());
    p["spec"]["volumes"] = json!([{"name": "my-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "api://AzureADTokenExchange", "expirationSeconds": 86400, "path": "t"}}]}}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "my-token", "mountPath": "/t"}]);
    p["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "azure"}}]);
    let d = judge(&p);
    assert_eq!(
        d.violations
            .iter()
            .map(|v| format!("{} {}: {}", v.rule, v.field, v.message))
            .collect::<Vec<_>>(),
        vec![
            "tenants spec.containers[0].envFrom: container \"app\" takes AZURE_TENANT_ID from a ConfigMap or Secret; set it as a literal value so policy can check it",
            "clientIds spec.containers[0].envFrom: container \"app\" takes AZURE_CLIENT_ID from a ConfigMap or Secret; set it as a literal value so policy can check it",
            "authorityHosts spec.containers[0].envFrom: container \"app\" takes AZURE_AUTHORITY_HOST from a ConfigMap or Secret; set it as a literal value so policy can check it",
            "tokenExpiration spec.volumes[0]: volume my-token projects a token for Entra that lasts 86400s, outside 3600..7200s",
        ]
    );

    // A client secret in the environment is a service principal, whatever keywire wires.
    let mut p = pod_with(json!({}), json!({}), app_spec());
    p["spec"]["containers"][0]["env"] = json!([{"name": "AZURE_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "sp", "key": "secret"}}}]);
    assert_eq!(
        judge(&p).violations[0].message,
        "container \"app\" sets AZURE_CLIENT_SECRET (identity service-principal), which is not allowed; allowed: workload"
    );
}

#[test]
fn keywire_own_volume_passes_the_unmanaged_volume_rule() {
    let forbid = policy("lock", json!({"forbidUnmanagedSecretStoreVolumes": {}}));
    let d = run(
        &[forbid],
        &keywire(
            json!({"keywire.dev/keyvault": "kv-a", "keywire.dev/objects": "a",
        "keywire.dev/identity": "service-principal"}),
        ),
    );
    assert!(d.is_allowed() && d.violations.is_empty(), "{d:?}");
}

#[test]
fn enforcement_modes_deny_warn_or_audit() {
    let p = keywire(json!({"keywire.dev/keyvault": "kv-dev", "keywire.dev/objects": "a"}));
    let d = run(
        &[policy(
            "vaults",
            json!({"enforcement": "Warn", "keyVaults": {"allowed": ["kv-prod-*"]}}),
        )],
        &p,
    );
    assert!(matches!(d.outcome, Outcome::Patch(_)));
    assert_eq!(
        d.warnings,
        vec!["vaults/keyVaults: key vault kv-dev is not allowed; allowed: kv-prod-*".to_string()]
    );

    let d = run(
        &[policy(
            "vaults",
            json!({"enforcement": "Audit", "keyVaults": {"allowed": ["kv-prod-*"]}}),
        )],
        &p,
    );
    assert!(matches!(d.outcome, Outcome::Patch(_)));
    assert!(d.warnings.is_empty());
    assert_eq!(
        d.audit_annotations(),
        [("vaults.keyVaults".to_string(),
          "KeywirePolicy vaults rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev is not allowed; allowed: kv-prod-*".to_string())].into()
    );

    // A rule's own enforcement overrides the policy's.
    let d = run(
        &[policy(
            "vaults",
            json!({"enforcement": "Audit", "keyVaults": {"allowed": ["kv-prod-*"], "enforcement": "Enforce"}}),
        )],
        &p,
    );
    assert_eq!(
        d.outcome,
        Outcome::Denied("KeywirePolicy vaults rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev is not allowed; allowed: kv-prod-*".into())
    );
}

#[test]
fn the_most_restrictive_policy_wins() {
    let p = keywire(
        json!({"keywire.dev/keyvault": "kv-prod-1", "keywire.dev/objects": "a", "keywire.dev/token-expiration": "7200"}),
    );
    let lax = policy(
        "a-lax",
        json!({"keyVaults": {"allowed": ["kv-*"]}, "tokenExpiration": {"max": 86400}, "enforcement": "Audit"}),
    );
    let strict = policy(
        "b-strict",
        json!({"keyVaults": {"allowed": ["kv-prod-*"]}, "tokenExpiration": {"max": 3600}}),
    );
    let d = run(&[lax.clone(), strict.clone()], &p);
    assert_eq!(
        d.outcome,
        Outcome::Denied("KeywirePolicy b-strict rule tokenExpiration (metadata.annotations[keywire.dev/token-expiration]): token expiration 7200s is outside 3600..3600s".into())
    );
    // Allow-lists intersect: a vault must pass every policy that lists vaults.
    let other = policy("c-other", json!({"keyVaults": {"allowed": ["kv-prod-2"]}}));
    let d = run(&[lax, other], &p);
    assert_eq!(rules(&d), vec![("keyVaults", Enforcement::Enforce)]);
    assert_eq!(d.violations[0].policy, "c-other");
}

#[test]
fn only_selected_namespaces_are_judged() {
    let dev_only = policy(
        "dev",
        json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}, "requireInjection": {}}),
    );
    assert!(
        run(
            std::slice::from_ref(&dev_only),
            &pod_with(json!({}), json!({}), app_spec())
        )
        .violations
        .is_empty()
    );
    let d = decide(
        &pod_with(json!({}), json!({}), app_spec()),
        "dev",
        &state(&[dev_only]),
        &Settings::default(),
    );
    assert_eq!(rules(&d), vec![("requireInjection", Enforcement::Enforce)]);

    let by_name = policy(
        "n",
        json!({"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["unlisted"]}]}, "requireInjection": {}}),
    );
    // A namespace the lookups do not know is matched by its name label, as the API server sets it.
    let d = decide(
        &pod_with(json!({}), json!({}), app_spec()),
        "unlisted",
        &state(&[by_name]),
        &Settings::default(),
    );
    assert_eq!(rules(&d), vec![("requireInjection", Enforcement::Enforce)]);
}

#[test]
fn defaults_fill_what_the_pod_leaves_out() {
    let defaults = policy(
        "defaults",
        json!({"defaults": {"tenantID": "cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee",
        "authorityHost": "https://login.microsoftonline.us/", "mountPath": "/var/secrets", "identity": "managed-identity"}}),
    );
    let p = keywire(json!({"keywire.dev/keyvault": "kv-a", "keywire.dev/objects": "a"}));
    let d = run(std::slice::from_ref(&defaults), &p);
    let mut out = p.clone();
    crate::core::patch::apply(&mut out, d.patch()).unwrap();
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/secrets"
    );
    assert!(
        out["spec"]["containers"][0].get("env").is_none(),
        "managed identity from the default adds no env"
    );

    // The pod's own annotations win over policy defaults; authority host and tenant come from the policy.
    let s = state(&[defaults]);
    let mut p = keywire(
        json!({"keywire.dev/keyvault": "kv-a", "keywire.dev/objects": "a", "keywire.dev/identity": "workload",
        "keywire.dev/client-id": CLIENT, "keywire.dev/mount-path": "/mine"}),
    );
    p["spec"]["serviceAccountName"] = json!("bare");
    let d = decide(&p, "prod", &s, &Settings::default());
    let mut out = p.clone();
    crate::core::patch::apply(&mut out, d.patch()).unwrap();
    let env = &out["spec"]["containers"][0]["env"];
    assert_eq!(
        env[1],
        json!({"name": "AZURE_TENANT_ID", "value": "cccccccc-bbbb-cccc-dddd-eeeeeeeeeeee"})
    );
    assert_eq!(
        env[3],
        json!({"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.us/"})
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/mine"
    );
}

#[test]
fn template_violations_name_the_template_field() {
    let strict = policy("prod", json!({"keyVaults": {"allowed": ["kv-prod-*"]}}));
    let template = keywire(json!({"keywire.dev/keyvault": "kv-dev", "keywire.dev/objects": "a"}));
    let d = decide_at(
        &template,
        "spec.template",
        "prod",
        &state(&[strict]),
        &Settings::default(),
    );
    assert_eq!(
        d.outcome,
        Outcome::Denied("KeywirePolicy prod rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault]): key vault kv-dev is not allowed; allowed: kv-prod-*".into())
    );
}

#[test]
fn azure_drop_in_pods_count_as_workload_identity() {
    let strict = policy(
        "only-sp",
        json!({"identity": {"allowed": ["service-principal"]}, "tokenExpiration": {"max": 3600}}),
    );
    let p = pod_with(
        json!({"azure.workload.identity/use": "true"}),
        json!({"azure.workload.identity/service-account-token-expiration": "7200"}),
        app_spec(),
    );
    let d = run(&[strict], &p);
    assert_eq!(
        rules(&d),
        vec![
            ("identity", Enforcement::Enforce),
            ("tokenExpiration", Enforcement::Enforce)
        ]
    );
}

#[test]
fn identity_bindings_and_the_proxy_are_judged_like_any_workload_identity() {
    use crate::core::azure::{CaSource, CustomTokenEndpoint};
    let mut settings = Settings::default();
    settings.workload_identity.custom_token_endpoint = Some(CustomTokenEndpoint {
        annotation_suffix: "identity-binding".into(),
        audience: "api://AKSIdentityBinding".into(),
        token_proxy: Some("https://proxy.example:443".into()),
        sni_name: None,
        ca: CaSource::None,
    });
    let strict = policy(
        "strict",
        json!({"identity": {"allowed": ["service-principal"]}, "tenants": {"allowed": ["other-*"]},
               "tokenExpiration": {"max": 3600}, "forbidProxySidecar": {}}),
    );
    let p = pod_with(
        json!({"azure.workload.identity/use": "true"}),
        json!({"azure.workload.identity/use-identity-binding": "true",
               "azure.workload.identity/inject-proxy-sidecar": "true",
               "azure.workload.identity/service-account-token-expiration": "7200"}),
        app_spec(),
    );
    let d = decide(&p, "prod", &state(&[strict]), &settings);
    let how = "(token audience api://AKSIdentityBinding for the custom token endpoint, through the proxy sidecar on port 8000)";
    assert_eq!(
        d.outcome,
        Outcome::Denied(format!(
            "KeywirePolicy strict rule identity (metadata.labels[azure.workload.identity/use]): identity workload {how} is not allowed; allowed: service-principal; \
             KeywirePolicy strict rule tenants (spec.serviceAccountName): tenant {TENANT} {how} is not allowed; allowed: other-*; \
             KeywirePolicy strict rule tokenExpiration (metadata.annotations[azure.workload.identity/service-account-token-expiration]): token expiration 7200s {how} is outside 3600..3600s; \
             KeywirePolicy strict rule forbidProxySidecar (metadata.annotations[azure.workload.identity/inject-proxy-sidecar]): the proxy sidecar (port 8000) needs the privileged init container azwi-proxy-init (root, NET_ADMIN); it is not allowed here"
        ))
    );

    // The proxy rule alone: a pod without the annotation passes, one with it is named.
    let only_proxy = policy(
        "no-proxy",
        json!({"forbidProxySidecar": {"enforcement": "Warn"}}),
    );
    let plain = pod_with(
        json!({"azure.workload.identity/use": "true"}),
        json!({}),
        app_spec(),
    );
    assert!(
        rules(&decide(
            &plain,
            "prod",
            &state(std::slice::from_ref(&only_proxy)),
            &settings
        ))
        .is_empty()
    );
    let d = decide(&p, "prod", &state(&[only_proxy]), &settings);
    assert_eq!(rules(&d), vec![("forbidProxySidecar", Enforcement::Warn)]);
    assert!(matches!(d.outcome, Outcome::Patch(_)));
}

#[test]
fn a_pod_with_both_wirings_is_judged_on_each() {
    let strict = policy("strict", json!({"tenants": {"allowed": ["only-this"]}}));
    let mut p = keywire(json!({"keywire.dev/keyvault": "kv-prod", "keywire.dev/objects": "a"}));
    p["metadata"]["labels"]["azure.workload.identity/use"] = json!("true");
    let d = run(&[strict], &p);
    let fields: Vec<&str> = d.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "metadata.annotations[keywire.dev/tenant-id]",
            "spec.serviceAccountName"
        ]
    );
}
