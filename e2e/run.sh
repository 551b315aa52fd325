#!/usr/bin/env bash
# run.sh — the whole end-to-end suite on a real control plane, in one command.
#
#   e2e/run.sh
#
# Builds (once, cached) kube-apiserver, etcd and kubectl from the Go module proxy, starts them
# on 127.0.0.1, runs the Rust suite in e2e/suite/ (which starts `keywire webhook`, registers it
# by URL with the caBundle from `keywire certs`, and asserts on what the API server stores),
# prints "N passed, M failed", and tears everything down. On failure it prints the API server
# and webhook logs.
#
# With the Azure stand-ins (default; E2E_AZURE=0 skips them) it first runs the SDK proof
# (azure/test_sdk_proof.py: Microsoft's Python SDKs against Keycloak-as-Entra and the Key Vault
# stand-in) and stops with a failure if that fails, before building the Rust suite.
#
# Environment: E2E_STATE_DIR (default: a fresh temp dir), KEYWIRE_CACHE_DIR (binary cache),
# E2E_KEEP_STATE=1 to keep logs after the run, E2E_FILTER to run only matching tests,
# E2E_AZURE=0 to run without the Azure stand-ins.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

log() { printf '[e2e] %s\n' "$*" >&2; }

start=$(date +%s)
# shellcheck source=env.sh
source "$here/env.sh"
log "control plane binaries: $KEYWIRE_CP_BIN ($(( $(date +%s) - start ))s)"

export E2E_STATE_DIR="${E2E_STATE_DIR:-$(mktemp -d /tmp/keywire-e2e.XXXXXX)}"
rmdir "$E2E_STATE_DIR" 2>/dev/null || true  # up.sh creates and marks it
cleanup() {
  # Webhook processes the suite started (one held in a static is never dropped).
  for f in "$E2E_STATE_DIR"/pids/keywire-*.pid; do
    [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  "$here/down.sh" || true
}
trap cleanup EXIT

"$here/up.sh"
# shellcheck disable=SC1091
source "$E2E_STATE_DIR/env"
mkdir -p "$E2E_STATE_DIR/logs"

if [[ "${E2E_AZURE:-1}" != 0 ]]; then
  log "SDK proof of the Azure stand-ins (azure/test_sdk_proof.py)"
  proof_log="$E2E_STATE_DIR/logs/sdk-proof.log"
  set +e
  PYTHONDONTWRITEBYTECODE=1 "$E2E_PYTHON" -m pytest -q -p no:cacheprovider "$here/azure/test_sdk_proof.py" \
    2>&1 | tee "$proof_log"
  proof_status=${PIPESTATUS[0]}
  set -e
  # pytest's closing line, e.g. "1 failed, 12 passed, 1 error in 14.2s"
  proof_summary=$(grep -E '[0-9]+ (passed|failed|errors?)[ ,].* in [0-9.]+s|[0-9]+ (passed|failed|errors?) in [0-9.]+s' \
                  "$proof_log" | tail -n 1 || true)
  proof_passed=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^passed/) n += $(i-1) } END { print n + 0 }' <<<"$proof_summary")
  proof_failed=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^(failed|error)/) n += $(i-1) } END { print n + 0 }' <<<"$proof_summary")
  if [[ $proof_status -ne 0 && $proof_failed -eq 0 ]]; then proof_failed=1; fi
  log "SDK proof: ${proof_passed} passed, ${proof_failed} failed"
  if [[ $proof_status -ne 0 ]]; then
    for f in keyvault-standin keycloak nginx-error; do
      log "---- $f log (last 40 lines) ----"
      tail -n 40 "$E2E_STATE_DIR/logs/$f.log" >&2 || true
    done
    log "SDK proof failed; not running the Rust suite"
    echo "sdk-proof: ${proof_passed} passed, ${proof_failed} failed"
    exit "$proof_status"
  fi
fi

log "building the suite"
cargo build --locked --features e2e --tests --bins 2>&1 | tail -n 3 >&2

suite_log="$E2E_STATE_DIR/logs/suite.log"
set +e
cargo test --locked --features e2e --test e2e -- --test-threads=1 --nocapture ${E2E_FILTER:-} 2>&1 | tee "$suite_log"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$suite_log" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '[0-9]+ failed;' "$suite_log" | grep -Eo '[0-9]+' || echo 0)
[[ -n "$passed" ]] || passed=0
[[ -n "$failed" ]] || failed=0
if [[ $status -ne 0 && $failed -eq 0 ]]; then failed=1; fi

if [[ $status -ne 0 ]]; then
  log "---- kube-apiserver log (last 80 lines) ----"
  tail -n 80 "$E2E_STATE_DIR/logs/kube-apiserver.log" >&2 || true
  log "---- webhook log (last 80 lines) ----"
  tail -n 80 "$E2E_STATE_DIR/logs/webhook.log" >&2 || true
fi
log "suite wall time: $(( $(date +%s) - start ))s"
echo "e2e: ${passed} passed, ${failed} failed"
exit "$status"
