#!/usr/bin/env bash
# Builds the kubectl reference reader (tests/yaml/kubectl-reader) once and prints the path of the
# binary as the last line of stdout. The binary is cached under
#   ${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools/kubectl-reader-<hash>/kubectl-reader
# where <hash> covers go.mod, go.sum and main.go, so any change rebuilds it and a cache hit costs
# nothing. Needs Go (the local toolchain, GOTOOLCHAIN=local) and the Go module proxy on a cache miss.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/kubectl-reader" && pwd)"
cache="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools"
hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
dir="$cache/kubectl-reader-$hash"
bin="$dir/kubectl-reader"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/kubectl-reader.lock"
flock 9
if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null || { echo "reader.sh: go is not installed" >&2; exit 1; }
  echo "reader.sh: building the kubectl reference reader (k8s.io/cli-runtime v0.35.4); this takes a few minutes once" >&2
  mkdir -p "$dir"
  tmp="$(mktemp "$dir/.kubectl-reader.XXXXXX")"
  trap 'rm -f "$tmp"' EXIT
  # The machine's Go (>= 1.25, go.mod's) unless GOTOOLCHAIN says otherwise; GOPROXY, GOFLAGS,
  # GOCACHE and GOMODCACHE are honoured; go.sum pins every module.
  (cd "$src" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 \
    GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}" GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" \
    go build -trimpath -o "$tmp" .) >&2
  chmod +x "$tmp"
  mv -f "$tmp" "$bin"
  trap - EXIT
fi
echo "$bin"
