//! The built binary on the `examples/`: mutated output and exit codes.

mod support;

use serde_json::Value;
use support::{data, repo, run};

fn mutate(args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<Value>, String) {
    let mut full = vec!["mutate", "-o", "json"];
    full.extend_from_slice(args);
    let out = run(&full, stdin);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let docs = if stdout.trim().is_empty() {
        vec![]
    } else {
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        match v["kind"].as_str() {
            Some("List") => v["items"].as_array().unwrap().clone(),
            _ => vec![v],
        }
    };
    (out.status.code().unwrap(), docs, stderr)
}

fn example(name: &str) -> String {
    repo(&format!("examples/{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The `.yaml` files of `examples/`, sorted.
fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not in output"))
}

/// Every example, mutated, equals its golden file (regenerate with KEYWIRE_UPDATE_GOLDEN=1).
#[test]
fn examples_match_their_golden_output() {
    let names = example_names();
    assert!(names.len() >= 4);
    for name in names {
        let out = run(&["mutate", "-f", &example(&name)], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let golden = data(&format!(
            "golden/{}",
            name.replace(".yaml", ".mutated.yaml")
        ));
        if std::env::var_os("KEYWIRE_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &out.stdout).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{name}");
    }
}

#[test]
fn service_principal_example_is_wired() {
    let (code, docs, _) = mutate(&["-f", &example("busybox-service-principal.yaml")], None);
    assert_eq!(code, 0);
    let pod = find(&docs, "Pod", "busybox-secrets-store");
    let volume = &pod["spec"]["volumes"][0];
    assert_eq!(volume["csi"]["driver"], "secrets-store.csi.k8s.io");
    assert_eq!(
        volume["csi"]["nodePublishSecretRef"]["name"],
        "secrets-store-creds"
    );
    assert_eq!(
        volume["csi"]["volumeAttributes"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["secretProviderClass"]
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        serde_json::json!([{"name": "keywire-secrets-store", "mountPath": "/mnt/secrets-store", "readOnly": true}])
    );
    assert_eq!(
        pod["metadata"]["annotations"]["keywire.dev/status"],
        "injected"
    );
}

#[test]
fn deployments_share_one_class_and_env_reads_the_synced_secret() {
    let (code, docs, _) = mutate(&["-f", &example("azure-vote-deployment.yaml")], None);
    assert_eq!(code, 0);
    let class = |name: &str| {
        find(&docs, "Deployment", name)["spec"]["template"]["spec"]["volumes"][0]["csi"]["volumeAttributes"]
            ["secretProviderClass"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(class("azure-vote-back"), class("azure-vote-front"));
    let front =
        &find(&docs, "Deployment", "azure-vote-front")["spec"]["template"]["spec"]["containers"][0];
    let env = front["env"].as_array().unwrap();
    assert_eq!(env[0]["name"], "REDIS", "user env stays first");
    let pwd = env.iter().find(|e| e["name"] == "REDIS_PWD").unwrap();
    assert_eq!(
        pwd["valueFrom"]["secretKeyRef"]["name"],
        class("azure-vote-front").as_str()
    );
    assert_eq!(pwd["valueFrom"]["secretKeyRef"]["key"], "redis-password");
}

#[test]
fn denial_exits_one_and_names_object_and_reason() {
    let (code, docs, stderr) = mutate(
        &[
            "-f",
            data("manifests/invalid-token-expiration.yaml")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        r#"denied: Deployment/billing (namespace payments): annotation keywire.dev/token-expiration="90000" is invalid: whole seconds from 3600 to 86400"#
    );
    // The denied object is printed unchanged.
    let d = find(&docs, "Deployment", "billing");
    assert!(d["spec"]["template"]["spec"].get("volumes").is_none());
}

#[test]
fn bad_input_exits_two_with_one_line() {
    type Case<'a> = (Vec<&'a str>, Option<&'a [u8]>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["mutate", "-f", "/nonexistent/x.yaml"],
            None,
            "keywire mutate: cannot read /nonexistent/x.yaml: ",
        ),
        (
            vec!["mutate", "-f", "-"],
            Some(b"kind: [unclosed\n"),
            "keywire mutate: -: document 1, line 1, column 7: unclosed bracket '['",
        ),
        (
            vec!["mutate", "-f", "-"],
            Some(b"- just\n- a list\n"),
            "keywire mutate: -: document 1 (line 1): not a Kubernetes object (sequence)",
        ),
        (
            vec!["review", "-"],
            Some(b"{\"not\": \"a review\""),
            "keywire review: body is not JSON",
        ),
        (
            vec!["review", "/nonexistent.json"],
            None,
            "keywire review: cannot read /nonexistent.json",
        ),
        (
            vec![
                "mutate",
                "-f",
                "-",
                "--cluster-state",
                "/nonexistent-state.yaml",
            ],
            Some(b""),
            "keywire mutate: cannot read cluster state /nonexistent-state.yaml",
        ),
    ];
    for (args, stdin, want) in cases {
        let out = run(&args, stdin);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// Issue 14: what kubectl reads from tricky YAML is what keywire reads, and keywire's YAML
/// reads back as the same objects; what kubectl refuses is refused in one line naming the
/// file and document. (tests/yaml/conformance.sh checks the whole corpus against kubectl's code.)
#[test]
fn yaml_is_read_and_written_as_kubectl_does() {
    let input = b"\xEF\xBB\xBFapiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tricky\n  annotations: &a\n    a: 'on'\ndata:\n  <<: *a\n  b: \"yes\"\n  c: \"1_000\"\n  d: \"0644\"\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\nstringData: {x: !!binary aGk=}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i}]\n  volumes: [{name: v, secret: {secretName: s, defaultMode: 0644}}]\n  activeDeadlineSeconds: 1e3\n  terminationGracePeriodSeconds: 1_000\n";
    let (code, docs, stderr) = mutate(&["-f", "-"], Some(input));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        docs,
        vec![
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "tricky", "annotations": {"a": "on"}},
                "data": {"a": "on", "b": "yes", "c": "1_000", "d": "0644"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "type": "Opaque", "stringData": {"x": "hi"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "v", "secret": {"secretName": "s", "defaultMode": 420}}],
                    "activeDeadlineSeconds": 1000, "terminationGracePeriodSeconds": 1000}}),
        ]
    );
    let out = run(&["mutate", "-f", "-"], Some(input));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("data:\n  a: 'on'\n  b: 'yes'\n  c: '1_000'\n  d: '0644'\n---\n"),
        "{yaml}"
    );
    assert!(yaml.contains("      defaultMode: 420\n"), "{yaml}");
    // The YAML read back is the same objects.
    let (code, again, _) = mutate(&["-f", "-"], Some(yaml.as_bytes()));
    assert_eq!((code, again), (0, docs));
}

#[test]
fn yaml_kubectl_refuses_is_refused_in_one_line() {
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\ndata: {}\n",
        "[".repeat(100_000)
    );
    let cases: Vec<(String, &str)> = vec![
        (
            "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: ConfigMap\ndata: {a: .inf}\n"
                .into(),
            "keywire mutate: -: document 2, line 6, column 11: .inf has no JSON form (quote it if it is text)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: .NaN\n".into(),
            "keywire mutate: -: document 1, line 4, column 6: .nan has no JSON form (quote it if it is text)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n".into(),
            "keywire mutate: -: document 1, line 4, column 10: invalid map key: a mapping cannot be a key (this looks like an unrendered Helm template, `{{` on line 4: render it with `helm template` first)",
        ),
        (
            deep,
            "keywire mutate: -: document 1, line 3, column 135: nesting is deeper than keywire's limit of 128 levels",
        ),
    ];
    for (input, want) in cases {
        let started = std::time::Instant::now();
        let out = run(&["mutate", "-f", "-"], Some(input.as_bytes()));
        let took = started.elapsed();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr, format!("{want}\n"));
        assert!(out.stdout.is_empty());
        assert!(
            took < std::time::Duration::from_secs(2),
            "{want}: took {took:?}"
        );
    }
}

#[test]
fn stdin_and_diff_views() {
    let manifest = std::fs::read(example("existing-secret-provider-class.yaml")).unwrap();
    let out = run(&["mutate", "-f", "-", "--diff"], Some(&manifest));
    assert_eq!(out.status.code(), Some(0));
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(diff.starts_with("--- a/Pod/reports-worker (namespace keywire-demo)\n+++ b/Pod/reports-worker (namespace keywire-demo)\n"), "{diff}");
    assert!(
        diff.contains("+    keywire.dev/status: injected\n"),
        "{diff}"
    );
    assert!(
        diff.contains("+        secretProviderClass: reports-keyvault\n"),
        "{diff}"
    );
    assert!(
        !diff.contains("ServiceAccount/"),
        "unchanged objects have no diff: {diff}"
    );
}

#[test]
fn review_answers_and_denials_exit_zero() {
    for (file, allowed) in [
        ("reviews/workload-identity-inline.json", true),
        ("reviews/denied-token-expiration.json", false),
    ] {
        let out = run(
            &[
                "review",
                "--cluster-state",
                data("cluster-state.yaml").to_str().unwrap(),
                data(file).to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(0));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["response"]["allowed"], allowed, "{file}");
        assert_eq!(v["response"]["uid"].as_str().unwrap().len(), 36);
    }
}

#[test]
fn certs_writes_files_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "certs",
            "--out-dir",
            dir.path().to_str().unwrap(),
            "--host",
            "keywire.keywire.svc",
        ],
        None,
    );
    assert!(out.status.success());
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    use base64::Engine as _;
    let printed = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(out.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(printed, ca.as_bytes());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

fn policy_args() -> Vec<String> {
    vec![
        "--policy".into(),
        data("policies/prod-baseline.yaml").to_str().unwrap().into(),
        "-f".into(),
        data("manifests/prod-workloads.yaml")
            .to_str()
            .unwrap()
            .into(),
    ]
}

#[test]
fn policy_violations_print_a_table_and_enforce_exits_one() {
    let args = policy_args();
    let mut full: Vec<&str> = vec!["mutate"];
    full.extend(args.iter().map(String::as_str));
    let out = run(&full, None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[1],
        "warning: Job/report (namespace shop): prod-baseline/tokenExpiration: token expiration 86400s is outside 3600..7200s"
    );
    assert_eq!(
        lines[0],
        "denied: Deployment/checkout (namespace shop): KeywirePolicy prod-baseline rule keyVaults (spec.template.metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-shop is not allowed; allowed: kv-prod-*"
    );
    assert!(
        lines[2].starts_with("OBJECT")
            && lines[2].contains("POLICY")
            && lines[2].ends_with("MESSAGE"),
        "{stderr}"
    );
    assert!(
        lines[3].starts_with("Deployment/checkout (namespace shop)  prod-baseline  keyVaults"),
        "{stderr}"
    );
    assert!(
        lines[4].starts_with("Job/report (namespace shop)") && lines[4].contains("Warn"),
        "{stderr}"
    );
    assert_eq!(lines.len(), 5, "{stderr}");
}

#[test]
fn warn_and_audit_exit_zero_unless_strict() {
    let manifest = std::fs::read_to_string(data("manifests/prod-workloads.yaml")).unwrap();
    // Only the compliant Deployment and the warned Job: Warn does not fail the run.
    let docs: Vec<&str> = manifest
        .split("\n---\n")
        .filter(|d| !d.contains("name: checkout"))
        .collect();
    let input = docs.join("\n---\n");
    let policy = data("policies/prod-baseline.yaml");
    let audit = data("policies/audit-inline.yaml");
    let base = [
        "mutate",
        "-f",
        "-",
        "--policy",
        policy.to_str().unwrap(),
        "--policy",
        audit.to_str().unwrap(),
    ];
    let out = run(&base, Some(input.as_bytes()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("audit-inline   secretProviderClasses  Audit"),
        "{stderr}"
    );
    let mut strict = base.to_vec();
    strict.push("--strict");
    assert_eq!(run(&strict, Some(input.as_bytes())).status.code(), Some(1));
}

#[test]
fn json_report_junit_and_github_formats() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("keywire.xml");
    let junit_arg = format!("junit={}", junit.display());
    let sarif = dir.path().join("keywire.sarif");
    let sarif_arg = format!("sarif={}", sarif.display());
    let args = policy_args();
    let mut full: Vec<&str> = vec![
        "mutate", "-o", "json", "--report", &junit_arg, "--report", "github", "--report",
        &sarif_arg,
    ];
    full.extend(args.iter().map(String::as_str));
    let out = run(&full, None);
    assert_eq!(out.status.code(), Some(1));

    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    let results = v["report"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let checkout = results
        .iter()
        .find(|r| r["object"] == "Deployment/checkout (namespace shop)")
        .unwrap();
    assert_eq!(checkout["allowed"], false);
    assert_eq!(checkout["violations"][0]["rule"], "keyVaults");
    assert_eq!(
        checkout["violations"][0]["field"],
        "spec.template.metadata.annotations[keywire.dev/keyvault]"
    );
    assert_eq!(checkout["violations"][0]["enforcement"], "Enforce");
    let cart = results
        .iter()
        .find(|r| r["object"] == "Deployment/cart (namespace shop)")
        .unwrap();
    assert_eq!(cart["allowed"], true);
    assert_eq!(cart["violations"], serde_json::json!([]));

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuites name="keywire" tests="3" failures="1">"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"name="Deployment/checkout (namespace shop)">"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="KeywirePolicy prod-baseline rule keyVaults"#),
        "{xml}"
    );

    let log: Value = serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    let denied: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["ruleId"].as_str().unwrap(), r["level"].as_str().unwrap()))
        .collect();
    assert!(
        denied.contains(&("KeywirePolicy/keyVaults", "error"))
            && denied.contains(&("KeywirePolicy/tokenExpiration", "warning")),
        "{denied:?}"
    );

    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = data("manifests/prod-workloads.yaml").display().to_string();
    assert!(stderr.contains(&format!("::error file={file},title=keywire denied Deployment/checkout (namespace shop)::KeywirePolicy prod-baseline rule keyVaults")), "{stderr}");
    assert!(stderr.contains(&format!("::warning file={file},title=keywire Warn prod-baseline/tokenExpiration Job/report (namespace shop)::")), "{stderr}");
}

#[test]
fn bad_policy_and_report_arguments_exit_two() {
    let out = run(&["mutate", "-f", "-", "--report", "xml"], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "keywire mutate: --report \"xml\": expected junit=FILE, sarif=FILE or github\n"
    );
    let out = run(
        &[
            "mutate",
            "-f",
            "-",
            "--policy",
            data("cluster-state.yaml").to_str().unwrap(),
        ],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .ends_with("cluster-state.yaml: no KeywirePolicy in the file\n")
    );
}

/// Namespaced objects without a namespace belong to `-n`, as `kubectl apply -n` would place them:
/// a ServiceAccount in the input answers the lookups of pods in that namespace.
#[test]
fn input_objects_without_a_namespace_belong_to_dash_n() {
    let manifests = br#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: orders
  annotations:
    azure.workload.identity/client-id: 4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e
    azure.workload.identity/tenant-id: 72f988bf-86f1-41af-91ab-2d7cd011db47
---
apiVersion: v1
kind: Pod
metadata:
  name: api
  labels: {keywire.dev/inject: "true"}
  annotations: {keywire.dev/keyvault: kv-orders, keywire.dev/objects: secret/db}
spec:
  serviceAccountName: orders
  containers: [{name: api, image: busybox}]
"#;
    let (code, docs, stderr) = mutate(&["-f", "-", "-n", "shop"], Some(manifests));
    assert_eq!(code, 0, "{stderr}");
    let env = &find(&docs, "Pod", "api")["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "AZURE_CLIENT_ID");
    assert_eq!(env[0]["value"], "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e");
}

/// The CI gate: a manifest cannot replace the platform's Namespace labels or policies.
#[test]
fn manifests_cannot_redefine_the_platforms_namespaces_or_policies() {
    let manifests = br#"
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {env: dev}
---
apiVersion: keywire.dev/v1alpha1
kind: KeywirePolicy
metadata:
  name: prod-baseline
spec:
  namespaceSelector: {matchLabels: {env: nowhere}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: prod
  annotations:
    azure.workload.identity/client-id: 11111111-2222-3333-4444-555555555555
    azure.workload.identity/tenant-id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee
---
apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: prod
  labels: {keywire.dev/inject: "true"}
  annotations: {keywire.dev/keyvault: kv-dev-loot, keywire.dev/objects: secret/db}
spec:
  serviceAccountName: app
  containers: [{name: api, image: busybox}]
"#;
    let state = data("cluster-state.yaml");
    let policy = data("policies/prod-baseline.yaml");
    let out = run(
        &[
            "mutate",
            "-f",
            "-",
            "--cluster-state",
            state.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        Some(manifests),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "note: ServiceAccount prod/app from - replaces the one in the cluster state".to_string(),
            // The pod is judged with the platform's labels and policy, not the manifest's.
            "denied: Pod/api (namespace prod): KeywirePolicy prod-baseline rule keyVaults (metadata.annotations[keywire.dev/keyvault]): key vault kv-dev-loot is not allowed; allowed: kv-prod-*".to_string(),
            format!("denied: Namespace/prod: redefines Namespace prod from --cluster-state {}; the platform's definition is used", state.display()),
            format!("denied: KeywirePolicy/prod-baseline: redefines KeywirePolicy prod-baseline from --policy {}; the platform's definition is used", policy.display()),
        ],
        "{stderr}"
    );

    // The same definitions as the platform's are fine.
    let same = format!(
        "{}\n---\n{}",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {env: prod}}",
        std::fs::read_to_string(&policy).unwrap()
    );
    let out = run(
        &[
            "mutate",
            "-f",
            "-",
            "--cluster-state",
            state.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        Some(same.as_bytes()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A misspelled rule is an error naming it, not a policy without that rule.
#[test]
fn policy_files_with_unknown_fields_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: keywire.dev/v1alpha1\nkind: KeywirePolicy\nmetadata: {name: typo}\nspec:\n  keyVault: {allowed: [kv-prod-*]}\n",
    )
    .unwrap();
    let out = run(
        &["mutate", "-f", "-", "--policy", file.to_str().unwrap()],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "keywire mutate: --policy {}: KeywirePolicy typo: spec.keyVault: unknown field `keyVault`, expected one of",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

/// A name carrying line breaks and escapes: no output keywire writes (stderr lines, the table,
/// GitHub workflow commands, the diff, JUnit) lets it start a line of its own or break the XML.
#[test]
fn a_forged_name_cannot_forge_output_lines_or_break_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("keywire.xml");
    let junit_arg = format!("junit={}", junit.display());
    let policy = data("policies/prod-baseline.yaml");
    let manifest = data("manifests/forged-name.yaml");
    let (policy, manifest) = (policy.to_str().unwrap(), manifest.to_str().unwrap());
    for extra in [&["-o", "json"][..], &["--diff"][..]] {
        let mut args = vec![
            "mutate", "--policy", policy, "-f", manifest, "--report", "github", "--report",
            &junit_arg,
        ];
        args.extend_from_slice(extra);
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        for line in stderr.lines().chain(stdout.lines()) {
            assert!(
                !line.contains('\u{1b}') && !line.contains('\r') && !line.contains('\u{7}'),
                "raw control character in {line:?}"
            );
            if line.trim_start().starts_with("::") {
                assert!(
                    line.starts_with("::error file=") || line.starts_with("::warning file="),
                    "forged workflow command: {line:?}\n{stderr}"
                );
                assert!(
                    !line.starts_with("::error file=forged.yaml"),
                    "forged: {line:?}"
                );
            }
        }
        assert!(
            stderr.contains(r"denied: Deployment/web\n::error file=forged.yaml::forged\n::stop-commands::pwned\r\n\u{1b}[2Jbell\u{7}\u{1}"),
            "{stderr}"
        );
        // The GitHub annotation keeps the escaped name visible and one line long.
        assert!(
            stderr.contains(r"::error file=")
                && stderr.contains(
                    r"title=keywire denied Deployment/web\n%3A%3Aerror file=forged.yaml%3A%3Aforged"
                ),
            "{stderr}"
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase"))
        .unwrap();
    assert!(
        case.attribute("name")
            .unwrap()
            .starts_with(r"Deployment/web\n::error file=forged.yaml"),
        "{xml}"
    );
    assert!(doc.descendants().any(|n| n.has_tag_name("failure")));
}

/// `-j` changes how many threads parse and mutate, never what comes out: output, notes,
/// warnings and verdicts are those of one thread, and of a bad stream the first bad document
/// is named and nothing is written.
#[test]
fn output_is_the_same_for_any_number_of_threads() {
    let names = example_names();
    let texts: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(example(n)).unwrap())
        .collect();
    // Several hundred documents: many batches for every worker.
    let mut stream = String::new();
    for _ in 0..40 {
        for text in &texts {
            stream.push_str("---\n");
            stream.push_str(text);
            stream.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, &stream).unwrap();
    let good = good.to_str().unwrap();
    let documents = stream.matches("\n---\n").count() + 1;
    assert!(documents > 300, "{documents}");

    let outputs = |args: &[&str]| {
        ["1", "2", "3", "8"].map(|j| {
            let mut full = vec!["mutate", "-j", j];
            full.extend_from_slice(args);
            let out = run(&full, None);
            (
                out.status.code(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        })
    };
    for format in [&["-o", "yaml"][..], &["-o", "json"], &["--diff"]] {
        let mut args = vec!["-f", good, "-f", good];
        args.extend_from_slice(format);
        let [one, rest @ ..] = outputs(&args);
        assert_eq!(one.0, Some(0), "{}", one.2);
        assert!(one.1.len() > 100_000, "{format:?}: {} bytes", one.1.len());
        for other in rest {
            assert_eq!(other, one, "{format:?}");
        }
    }

    // Two bad documents far apart: the first is named, whichever thread reads it first.
    let mut lines: Vec<String> = stream
        .split_inclusive("\n---\n")
        .map(String::from)
        .collect();
    lines[150] = "kind: [unclosed\n---\n".to_string();
    lines[290] = "kind: Pod\napiVersion: 7: 8\n---\n".to_string();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, lines.concat()).unwrap();
    let [one, rest @ ..] = outputs(&["-f", good, "-f", bad.to_str().unwrap()]);
    assert_eq!(one.0, Some(2));
    assert_eq!(one.1, "", "nothing is written");
    // Notes of the objects read before it (ServiceAccounts shipped twice), then the one line.
    let (before, last) = one.2.trim_end().rsplit_once('\n').unwrap();
    assert!(before.lines().all(|l| l.starts_with("note: ")), "{before}");
    assert_eq!(
        last,
        format!(
            "keywire mutate: {}: document 151, line 2636, column 7: unclosed bracket '['",
            bad.display()
        )
    );
    for other in rest {
        assert_eq!(other, one);
    }
}
