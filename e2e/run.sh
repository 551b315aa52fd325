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
# Environment: E2E_STATE_DIR (default: a fresh temp dir), KEYWIRE_CACHE_DIR (binary cache),
# E2E_KEEP_STATE=1 to keep logs after the run, E2E_FILTER to run only matching tests.
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
  for f in "$E2E_STATE_DIR"/pids/keywire-webhook-*.pid; do
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
