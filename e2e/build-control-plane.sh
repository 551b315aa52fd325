#!/usr/bin/env bash
# build-control-plane.sh — build the real Kubernetes control plane binaries
# (kube-apiserver, etcd, kubectl) that keywire's end-to-end tests run against.
#
# Usage:   e2e/build-control-plane.sh            # or: source e2e/env.sh
#
# Inputs (environment, all optional):
#   KEYWIRE_CACHE_DIR      cache root (default: $HOME/.cache/keywire)
#   KEYWIRE_BUILD_KUBECTL  1 (default) builds kubectl from the same Kubernetes
#                          release; 0 skips it (env.sh then falls back to the
#                          kubectl on PATH, which must be >= 1.24 for
#                          `kubectl create token`).
#   GOPROXY / GOFLAGS / GOCACHE / GOMODCACHE are honoured as usual.
#
# Output:  the binaries go to
#   $KEYWIRE_CACHE_DIR/control-plane/k8s-<k8s version>-etcd-<etcd version>/bin/
#            kube-apiserver  etcd  kubectl
# and the LAST line printed on stdout is that bin directory (progress goes to
# stderr). The versions come from e2e/tools/go.mod, so bumping go.mod gives a
# new cache directory. When all binaries already exist the script only prints
# the path (no Go toolchain needed) and returns in well under a second.
#
# A cold build needs Go >= 1.25 (see e2e/tools/go.mod) and takes roughly
# 10-20 minutes on 2 cores; it is safe to run concurrently (flock) and to
# interrupt (binaries are moved into place only when complete).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"

log() { printf '[build-control-plane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- versions, straight from go.mod (no Go needed on a cache hit) ----------
modver() {
  awk -v m="$1" '$1 == m && $2 ~ /^v[0-9]/ { print $2; exit }' "$tools/go.mod"
}
K8S_VERSION="$(modver k8s.io/kubernetes)"
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" ]] || die "cannot find k8s.io/kubernetes in $tools/go.mod"
[[ -n "$ETCD_VERSION" ]] || die "cannot find go.etcd.io/etcd/server/v3 in $tools/go.mod"

cache_root="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}"
dir="$cache_root/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
bin="$dir/bin"
build_kubectl="${KEYWIRE_BUILD_KUBECTL:-1}"

wanted=(kube-apiserver etcd)
[[ "$build_kubectl" == 1 ]] && wanted+=(kubectl)

missing() {
  local out=() b
  for b in "${wanted[@]}"; do [[ -x "$bin/$b" ]] || out+=("$b"); done
  echo "${out[*]:-}"
}

todo="$(missing)"
if [[ -z "$todo" ]]; then
  log "cache hit: k8s $K8S_VERSION, etcd $ETCD_VERSION"
  echo "$bin"
  exit 0
fi

# --- cold path --------------------------------------------------------------
command -v go >/dev/null || die "Go is not installed (need go >= 1.25 to build the control plane)"
mkdir -p "$dir"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
  log "another build holds $dir/.build.lock; waiting for it..."
  flock 9
fi
todo="$(missing)"   # the other build may have done the work
if [[ -z "$todo" ]]; then
  echo "$bin"
  exit 0
fi

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED="${CGO_ENABLED:-0}"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
gover="$(cd "$tools" && go env GOVERSION)"
log "building with $gover: k8s $K8S_VERSION, etcd $ETCD_VERSION -> $bin (missing: $todo)"

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
vx=()
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  vx+=("-X '$pkg.gitVersion=$K8S_VERSION'" "-X '$pkg.gitMajor=1'"
       "-X '$pkg.gitMinor=$k8s_minor'" "-X '$pkg.gitCommit='"
       "-X '$pkg.gitTreeState=clean'")
done
ldflags="-s -w ${vx[*]}"

tmp="$dir/bin.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp" "$bin"
trap 'rm -rf "$tmp"' EXIT

build() { # name package
  local name="$1" pkg="$2" t0=$SECONDS
  log "go build $pkg"
  (cd "$tools" && go build -trimpath -ldflags="$ldflags" -o "$tmp/$name" "$pkg") \
    || die "go build $pkg failed"
  mv -f "$tmp/$name" "$bin/$name"
  log "built $name in $((SECONDS - t0))s ($(du -h "$bin/$name" | cut -f1))"
}

t_start=$SECONDS
for b in $todo; do
  case "$b" in
    kube-apiserver) build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver ;;
    etcd)           build etcd go.etcd.io/etcd/server/v3 ;;
    kubectl)        build kubectl k8s.io/kubernetes/cmd/kubectl ;;
  esac
done
"$bin/kube-apiserver" --version >&2
"$bin/etcd" --version | head -1 >&2
log "done in $((SECONDS - t_start))s"
echo "$bin"
