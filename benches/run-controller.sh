#!/usr/bin/env bash
# Measures `keywire controller` on the real control plane, against Keycloak and the Key Vault
# stand-in (e2e/azure): pod-create -> Secret-ready (p50/p95 over 25 new configs),
# Deployment-create -> Secret-ready, Key Vault reads per interval for 1,000 pods sharing 10
# configs, and the controller's memory with those 1,000 pods. Not part of .ci/run.
#
#   bash benches/run-controller.sh        # OUT_DIR=... to keep the results elsewhere
#   KEYWIRE_BIN=/path/to/keywire bash benches/run-controller.sh   # measure a prebuilt binary
#
# Results: the BENCH lines on stdout and in $OUT_DIR/results.txt, logs in $OUT_DIR/state/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-target/keywire-controller-bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
if [[ -z "${KEYWIRE_BIN:-}" ]]; then
  echo "== building keywire (release)"
  cargo build --locked --release --bin keywire
  export KEYWIRE_BIN="$PWD/target/release/keywire"
fi
# As the chart deploys it (charts/keywire/templates/controller.yaml).
export MIMALLOC_ARENA_EAGER_COMMIT=0
source e2e/env.sh
export E2E_STATE_DIR="$OUT_DIR/state"
cleanup() {
  for f in "$E2E_STATE_DIR"/pids/keywire-*.pid; do
    [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true
  done
  E2E_KEEP_STATE=1 e2e/down.sh || true
}
trap cleanup EXIT
e2e/up.sh
# shellcheck disable=SC1091
source "$E2E_STATE_DIR/env"
mkdir -p "$E2E_STATE_DIR/logs"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "controller: $KEYWIRE_BIN (release)"
} > "$OUT_DIR/results.txt"
cargo test --locked --features e2e --test e2e -- --ignored --nocapture --test-threads=1 bench:: 2>&1 \
  | tee "$OUT_DIR/suite.log" | grep '^BENCH' | tee -a "$OUT_DIR/results.txt"
echo "results in $OUT_DIR/results.txt"
