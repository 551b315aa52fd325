#!/usr/bin/env bash
# tools.sh — the pinned tools the chart tests use, built or installed from the package
# registries once and cached like e2e/build-control-plane.sh caches the control plane.
#
# Usage:   charts/tools.sh helm|kubeconform|schemas|crd-models
#
# The LAST line printed on stdout is the path: the helm / kubeconform binary; for `schemas` the
# directory of offline Kubernetes JSON schemas (kubernetes-validate's `kubernetes-json-schema/`
# tree; `../venv/bin/python` beside it reads YAML); for `crd-models` the node_modules directory
# holding the cert-manager and prometheus-operator validators.
# Progress goes to stderr. Cache root: ${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools/.
#
#   helm          go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION           (Go module proxy)
#   kubeconform   go install github.com/yannh/kubeconform/cmd/kubeconform@... (Go module proxy)
#   schemas       pip install kubernetes-validate==...  into a venv          (PyPI)
#   crd-models    npm install @kubernetes-models/{cert-manager,prometheus-operator}   (npm)
#
# kubeconform normally downloads its schemas from GitHub, which is not reachable here; the
# kubernetes-validate wheel ships the same JSON schemas (one directory per Kubernetes minor),
# so validation is fully offline. Safe to run concurrently (flock).
set -euo pipefail

HELM_VERSION="v3.22.0"
KUBECONFORM_VERSION="v0.8.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# cert-manager and prometheus-operator kinds: validators generated from those projects' CRDs.
CERT_MANAGER_MODELS_VERSION="6.0.0"
PROMETHEUS_OPERATOR_MODELS_VERSION="6.0.0"

log() { printf '[charts/tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cache_root="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools"

# locked NAME VERSION CHECK BUILD-FUNCTION: unless $dir/CHECK exists, run BUILD-FUNCTION
# into $dir under a lock. Each build creates CHECK last, so an interrupted build is redone.
locked() {
  local name="$1" version="$2" check="$3" build="$4"
  local dir="$cache_root/$name-$version"
  if [[ ! -e "$dir/$check" ]]; then
    mkdir -p "$cache_root"
    exec 9>"$cache_root/.$name-$version.lock"
    flock 9
    if [[ ! -e "$dir/$check" ]]; then
      local t0=$SECONDS
      rm -rf "$dir"; mkdir -p "$dir"
      "$build" "$dir" "$version" || die "installing $name $version failed"
      [[ -e "$dir/$check" ]] || die "installing $name $version left no $check"
      log "$name $version ready in $((SECONDS - t0))s"
    fi
    exec 9>&-
  else
    log "cache hit: $name $version"
  fi
  echo "$dir/$check"
}

go_install() { # dir version package [extra ldflags]
  command -v go >/dev/null || die "Go is not installed (needed once to build the chart tools)"
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED="${CGO_ENABLED:-0}"
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
  log "go install $3@$2 (once; a few minutes on 2 cores)"
  GOBIN="$1/.bin" go install -trimpath -ldflags="-s -w ${4:-}" "$3@$2"
  mv "$1/.bin/$(basename "$3")" "$1/" && rmdir "$1/.bin"
}

# helm's Makefile stamps its version and the Kubernetes version its client libraries speak
# (the default .Capabilities.KubeVersion); `go install` alone leaves v1.20.0 there.
HELM_K8S_MINOR="37"   # helm v3.22 is built on k8s.io/client-go v0.37
build_helm() {
  local v=helm.sh/helm/v3
  go_install "$1" "$2" "$v/cmd/helm" "-X $v/internal/version.version=$2 \
    -X $v/internal/version.gitTreeState=clean \
    -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR \
    -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
  "$1/helm" version --short >&2
}

build_kubeconform() {
  go_install "$1" "$2" github.com/yannh/kubeconform/cmd/kubeconform
  "$1/kubeconform" -v >&2
}

build_schemas() { # dir version
  command -v python3 >/dev/null || die "python3 is required for the offline schemas"
  log "pip install kubernetes-validate==$2 (offline Kubernetes JSON schemas)"
  python3 -m venv "$1/venv"
  "$1/venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$2" "PyYAML>=6" >&2
  # kubernetes-validate's schemas name themselves https://kubernetes.io/api/... and reference
  # "/api/_definitions.json", which a validator resolves against that URL (the network). Make a
  # copy for kubeconform whose references stay on disk: drop "$id", make the reference relative.
  "$1/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/chart_checks.py" local-schemas \
    "$1/.kubernetes-json-schema"
  mv "$1/.kubernetes-json-schema" "$1/kubernetes-json-schema"
}

build_crd_models() { # dir version
  command -v npm >/dev/null || die "npm is required for the cert-manager/prometheus-operator validators"
  log "npm install @kubernetes-models/cert-manager@$CERT_MANAGER_MODELS_VERSION @kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION"
  mkdir -p "$1/.staging"
  (cd "$1/.staging" && echo '{"name": "keywire-chart-validators", "private": true}' > package.json \
    && npm install --no-audit --no-fund --loglevel=error --engine-strict=false \
      "@kubernetes-models/cert-manager@$CERT_MANAGER_MODELS_VERSION" \
      "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION" >&2)
  # node_modules appears only once complete (it is the cache's "done" marker).
  mv "$1/.staging/node_modules" "$1/node_modules" && rm -rf "$1/.staging"
}

case "${1:-}" in
  helm)        locked helm "$HELM_VERSION" helm build_helm ;;
  kubeconform) locked kubeconform "$KUBECONFORM_VERSION" kubeconform build_kubeconform ;;
  schemas)     locked kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" kubernetes-json-schema build_schemas ;;
  crd-models)  locked crd-models "cm$CERT_MANAGER_MODELS_VERSION-po$PROMETHEUS_OPERATOR_MODELS_VERSION" node_modules build_crd_models ;;
  *) die "usage: $0 helm|kubeconform|schemas|crd-models" ;;
esac
