#!/usr/bin/env bash
# test.sh — the chart's offline tests (no cluster): lint, render every values set, validate every
# rendered object against the Kubernetes schemas, check the chart's promises, and check that
# webhook-config/ is a fresh render. `.ci/run` calls it. The apply to a real API server (dry run,
# then for real) and the self-managed certificate tests live in the e2e suite (e2e/suite/chart.rs).
#
#   charts/test.sh
#
# Tools (built/installed once from the package registries, cached; see charts/tools.sh):
# helm (Go module proxy), kubeconform (Go module proxy), the kubernetes-validate JSON schemas
# (PyPI), the cert-manager / prometheus-operator validators (npm).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
chart="$here/keywire"
cd "$root"

log() { printf '[charts/test] %s\n' "$*" >&2; }

helm="$("$here/tools.sh" helm | tail -n 1)"
kubeconform="$("$here/tools.sh" kubeconform | tail -n 1)"
schemas="$("$here/tools.sh" schemas | tail -n 1)"
models="$("$here/tools.sh" crd-models | tail -n 1)"
python="$(dirname "$schemas")/venv/bin/python"
"$helm" version --short >&2

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
step() { # name command...
  local name="$1"; shift
  if "$@" > "$tmp/step.log" 2>&1; then
    passed=$((passed + 1)); echo "ok    $name"
  else
    failed=$((failed + 1)); echo "FAIL  $name"; sed 's/^/      /' "$tmp/step.log"
  fi
}

# Kubernetes versions validated against: the oldest the chart supports (matchConditions GA) and
# the e2e API server's.
versions=(1.30.0 1.35.0)

mkdir -p "$tmp/render"
for values in "$chart"/ci/*-values.yaml; do
  set_name="$(basename "$values" -values.yaml)"
  step "helm lint --strict ($set_name)" "$helm" lint --strict "$chart" -f "$values"
  for v in "${versions[@]}"; do
    step "helm template ($set_name, k8s $v)" \
      bash -c '"$1" template keywire "$2" --namespace keywire --kube-version "$3" -f "$4" > "$5"' _ \
      "$helm" "$chart" "$v" "$values" "$tmp/render/$set_name@$v.yaml"
  done
done
# A release under another name and namespace renders too (names derive from both).
step "helm template (another release name and namespace)" \
  bash -c '"$1" template platform-secrets "$2" --namespace platform --kube-version 1.35.0 > "$3"' _ \
  "$helm" "$chart" "$tmp/render/renamed@1.35.0.yaml"
# Invalid values are refused by values.schema.json or the templates, with the field named.
refused() { # expected-text helm-args...
  local want="$1"; shift
  ! "$helm" template keywire "$chart" --kube-version 1.35.0 "$@" > "$tmp/refused.log" 2>&1 \
    && grep -q -- "$want" "$tmp/refused.log"
}
step "values: unknown field refused" refused "additional properties 'webhok'" --set webhok.replicas=1
step "values: bad failurePolicy refused" refused "/webhook/failurePolicy" --set webhook.failurePolicy=Maybe
step "values: unknown certificate mode refused" refused "/certificates/mode" --set certificates.mode=vault
step "values: provided mode needs a Secret and caBundle" refused "/certificates/provided" --set certificates.mode=provided
step "values: too old Kubernetes refused" refused "kubeVersion" --kube-version 1.29.0
step "values: custom token endpoint with the default audience refused" refused "workloadIdentity/customTokenEndpoint" --set workloadIdentity.customTokenEndpoint.annotationSuffix=x --set workloadIdentity.customTokenEndpoint.audience=api://AzureADTokenExchange

# Strict schemas for the CRDs the chart ships, so their objects validate like built-in ones.
step "CRD schemas from the chart's CRDs" "$python" "$here/chart_checks.py" crd-schemas \
  "$tmp/crd-schemas" "$tmp/render/everything@1.35.0.yaml" "$tmp/render/default@1.35.0.yaml"

custom_kinds="cert-manager.io/v1/Certificate,cert-manager.io/v1/Issuer,monitoring.coreos.com/v1/ServiceMonitor,monitoring.coreos.com/v1/PrometheusRule"
for f in "$tmp"/render/*.yaml; do
  name="$(basename "$f" .yaml)"
  v="${name##*@}"
  step "kubeconform -strict ($name)" "$kubeconform" -strict -summary -kubernetes-version "$v" \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$tmp/crd-schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    -skip "$custom_kinds" "$f"
done
# The repository's own manifests validate too: the examples (a SecretProviderClass among them,
# checked against the CRD the chart ships) and the KeywirePolicy fixtures (against the chart's CRD).
for f in examples/*.yaml tests/data/policies/*.yaml; do
  [[ -e "$f" ]] || continue
  step "kubeconform -strict ($f)" "$kubeconform" -strict -summary -kubernetes-version 1.35.0 \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$tmp/crd-schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" "$f"
done
# cert-manager and prometheus-operator objects: their projects' CRD validators (npm).
"$python" "$here/chart_checks.py" to-json "$tmp"/render/*@1.35.0.yaml \
  | grep -E '"apiVersion": "(cert-manager.io|monitoring.coreos.com)/' > "$tmp/custom.jsonl" || true
step "cert-manager / prometheus-operator objects ($(wc -l < "$tmp/custom.jsonl") rendered)" \
  node "$here/validate-custom-resources.mjs" "$models" < "$tmp/custom.jsonl"
grep -q '"kind": "Certificate"' "$tmp/custom.jsonl" && grep -q '"kind": "PrometheusRule"' "$tmp/custom.jsonl" \
  || { failed=$((failed + 1)); echo "FAIL  expected Certificate and PrometheusRule objects in the renders"; }

# What the chart promises (replicas, PDB, securityContext, webhook settings per certificate mode...).
mkdir -p "$tmp/contract"
cp "$tmp"/render/*@1.35.0.yaml "$tmp/contract/"
step "chart contract (chart_checks.py contract)" "$python" "$here/chart_checks.py" contract "$tmp/contract"
grep -E '^contract: ' "$tmp/step.log" >&2 || true

step "webhook-config/ equals a fresh render" env HELM="$helm" "$here/render-webhook-config.sh" --check

# keywire as a Helm post-renderer: an application chart (charts/testdata/orders-app) rendered
# through `keywire mutate`, so its pods are wired and judged at render time.
keywire="${KEYWIRE:-$root/target/debug/keywire}"
if [[ ! -x "$keywire" ]]; then
  log "building keywire for the post-renderer tests"
  cargo build --locked --quiet --bin keywire
fi
app="$here/testdata/orders-app"
post=(--post-renderer "$keywire" --post-renderer-args mutate --post-renderer-args -f
  --post-renderer-args - --post-renderer-args -n --post-renderer-args shop)
post_renders_wired() {
  "$helm" template orders "$app" --namespace shop "${post[@]}" > "$tmp/post.yaml"
  # The same as piping helm's output through keywire mutate by hand.
  "$helm" template orders "$app" --namespace shop | "$keywire" mutate -f - -n shop > "$tmp/piped.yaml"
  cmp "$tmp/post.yaml" "$tmp/piped.yaml"
  grep -q 'secretProviderClass: keywire-kv-prod-orders-' "$tmp/post.yaml"
  grep -q 'name: keywire-secrets-store' "$tmp/post.yaml"
  grep -q 'AZURE_FEDERATED_TOKEN_FILE' "$tmp/post.yaml"
  grep -A4 'name: DB_PASSWORD' "$tmp/post.yaml" | grep -q 'key: db-password'
  "$kubeconform" -strict -summary -kubernetes-version 1.35.0 \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$tmp/post.yaml"
}
step "helm --post-renderer keywire: the chart's pods are wired (and equal a piped render)" post_renders_wired
post_render_denied() {
  # The platform's policy (env=prod namespaces allow only kv-prod-*) fails the render.
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {env: prod}\n' > "$tmp/ns.yaml"
  ! "$helm" template orders "$app" --namespace shop --set keyVault=kv-dev-orders "${post[@]}" \
      --post-renderer-args --policy --post-renderer-args "$root/tests/data/policies/prod-baseline.yaml" \
      --post-renderer-args --cluster-state --post-renderer-args "$tmp/ns.yaml" > "$tmp/denied.log" 2>&1
  grep -q 'key vault kv-dev-orders is not allowed; allowed: kv-prod-\*' "$tmp/denied.log"
  # The compliant vault passes the same policy.
  "$helm" template orders "$app" --namespace shop "${post[@]}" \
    --post-renderer-args --policy --post-renderer-args "$root/tests/data/policies/prod-baseline.yaml" \
    --post-renderer-args --cluster-state --post-renderer-args "$tmp/ns.yaml" > /dev/null
}
step "helm --post-renderer keywire --policy: a forbidden vault fails the render" post_render_denied

echo "charts: ${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
