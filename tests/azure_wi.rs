//! The Azure Workload Identity drop-in against upstream v1.6.0's own expectations: every case in
//! `tests/data/azure-wi-v1.6/` (input pod and ServiceAccounts, operator settings, and the pod as
//! upstream's webhook leaves it) run through the real `keywire mutate`.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{data, run};

/// Upstream's settings names, as `keywire` flags.
fn flags(settings: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut flag = |name: &str, value: Option<&Value>| {
        if let Some(v) = value.and_then(Value::as_str) {
            out.push(format!("--{name}={v}"));
        }
    };
    flag("tenant-id", settings.get("tenantID"));
    flag("authority-host", settings.get("authorityHost"));
    flag("workload-identity-audience", settings.get("audience"));
    flag("kubernetes-version", settings.get("kubernetesVersion"));
    flag("proxy-log-level", settings.get("logLevel"));
    flag("proxy-image", settings.get("proxyImage"));
    flag("proxy-init-image", settings.get("proxyInitImage"));
    if let Some(cte) = settings.get("customTokenEndpoint") {
        for (key, name) in [
            (
                "annotationSuffix",
                "custom-token-endpoint-annotation-suffix",
            ),
            ("audience", "custom-token-endpoint-audience"),
            ("azureKubernetesTokenProxy", "azure-kubernetes-token-proxy"),
            ("azureKubernetesSNIName", "azure-kubernetes-sni-name"),
            ("azureKubernetesCAData", "azure-kubernetes-ca-data"),
            (
                "azureKubernetesCAConfigMapName",
                "azure-kubernetes-ca-configmap-name",
            ),
            (
                "azureKubernetesCACTBSignerName",
                "azure-kubernetes-ca-ctb-signer-name",
            ),
            (
                "azureKubernetesCACTBLabelSelector",
                "azure-kubernetes-ca-ctb-label-selector",
            ),
        ] {
            flag(name, cte.get(key));
        }
    }
    out
}

fn read_pod(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    keywire::cli::manifests::parse_documents(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Pod")
        .unwrap()
}

/// What keywire's denial must name where upstream refuses (keywire's messages name the
/// annotation or field, the value and what is expected; upstream's are Go errors).
fn denial_must_name(case: &str) -> &'static [&'static str] {
    match case {
        "proxy-bad-port" => &[
            r#"azure.workload.identity/proxy-sidecar-port="invalid""#,
            "a port number",
        ],
        "proxy-host-network" => &["inject-proxy-sidecar", "hostNetwork: true"],
        "sa-not-found" => &["ServiceAccount ns1/sa was not found"],
        "token-expiration-out-of-range-pod" => &[
            r#"azure.workload.identity/service-account-token-expiration="3599""#,
            "from 3600 to 86400",
        ],
        "token-expiration-out-of-range-sa" => &[
            "ServiceAccount ns1/sa",
            r#"service-account-token-expiration="86401""#,
        ],
        "token-expiration-unparsable-pod" => &[r#"service-account-token-expiration="invalid""#],
        "token-expiration-unparsable-sa" => &[
            "ServiceAccount ns1/sa",
            r#"service-account-token-expiration="3600s""#,
        ],
        other => panic!("no expectation for the error case {other}"),
    }
}

/// Where keywire deliberately differs from upstream, and how.
const DIFFERENCES: &[(&str, &str)] = &[
    // Upstream appends a second mount at /var/run/secrets/azure/wi, which the API server then
    // refuses (duplicate mountPath); keywire refuses at admission and names the clash.
    (
        "mount-path-conflict-appended",
        "mount path clash: container \"container\" already mounts volume \"my-wi\" at \"/var/run/secrets/azure/wi\"",
    ),
];

#[test]
fn every_upstream_case_gives_upstreams_pod() {
    let dir = data("azure-wi-v1.6");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".input.yaml").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut checked = 0;
    for case in &cases {
        let input = dir.join(format!("{case}.input.yaml"));
        let settings: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{case}.settings.json"))).unwrap(),
        )
        .unwrap();
        let mut args = vec![
            "mutate".to_string(),
            "-o".into(),
            "json".into(),
            "-f".into(),
        ];
        args.push(input.display().to_string());
        args.extend(flags(&settings));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&argv, None);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let expected = dir.join(format!("{case}.expected.yaml"));
        if let Some((_, clash)) = DIFFERENCES.iter().find(|(c, _)| c == case) {
            assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
            assert!(stderr.contains(clash), "{case}: {stderr}");
        } else if expected.exists() {
            assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let pod = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["kind"] == "Pod")
                .unwrap()
                .clone();
            assert_eq!(pod, read_pod(&expected), "{case}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
            for fact in denial_must_name(case) {
                assert!(stderr.contains(fact), "{case}: {fact:?} not in {stderr}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

#[test]
fn v15_layout_keeps_the_old_paths() {
    let input = data("azure-wi-v1.6/basic-named-pod.input.yaml");
    let out = run(
        &[
            "mutate",
            "-o",
            "json",
            "--tenant-id",
            "tenantID",
            "--workload-identity-layout",
            "v1.5",
            "-f",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pod = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Pod")
        .unwrap();
    assert_eq!(pod["spec"]["volumes"][0]["name"], "azure-identity-token");
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/azure/tokens"
    );
    let file = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AZURE_FEDERATED_TOKEN_FILE")
        .unwrap();
    assert_eq!(
        file["value"],
        "/var/run/secrets/azure/tokens/azure-identity-token"
    );
}

#[test]
fn bad_workload_identity_settings_name_the_flag() {
    for (args, want) in [
        (
            vec!["--custom-token-endpoint-annotation-suffix", "x"],
            "--custom-token-endpoint-audience is needed",
        ),
        (
            vec![
                "--custom-token-endpoint-annotation-suffix",
                "x",
                "--custom-token-endpoint-audience",
                "API://AzureADTokenExchange",
            ],
            "must differ from api://AzureADTokenExchange",
        ),
        (
            vec![
                "--custom-token-endpoint-annotation-suffix",
                "x",
                "--custom-token-endpoint-audience",
                "api://b",
                "--azure-kubernetes-ca-data",
                "d",
                "--azure-kubernetes-ca-configmap-name",
                "c",
            ],
            "only one of",
        ),
        (
            vec!["--kubernetes-version", "latest"],
            "--kubernetes-version",
        ),
    ] {
        let mut full = vec!["mutate", "-f", "-"];
        full.extend(args);
        let out = run(&full, Some(b""));
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{stderr}");
    }
}
