#!/usr/bin/env bash
# The apiserver's view: how much latency keywire's webhooks add to every pod create, as
# kube-apiserver sees it, and how many webhook calls each kind of pod costs.
#
# On the e2e control plane (e2e/up.sh: etcd + kube-apiserver on loopback, no kubelet, so pods
# stay Pending), it starts a release `keywire webhook` on 127.0.0.1 with its own certificates
# (`keywire certs`), and times POST /api/v1/namespaces/NS/pods over persistent HTTPS
# keep-alive connections (benches/apiserver_latency.py, Python standard library only):
#   pod kinds   opted-in  keywire.dev/inject=true, inline Key Vault annotations, SA `app` with
#                         workload-identity annotations (mutated by keywire)
#               plain     no keywire or Azure metadata (should cost 0 webhook calls)
#               plain-no-token  plain with automountServiceAccountToken: false, i.e. without
#                         the kube-api-access projected token volume the ServiceAccount
#                         admission plugin adds to every other pod
#   phases      none      no webhook configuration registered
#               both      the shipped webhook-config/mutating-webhook.yaml and
#                         validating-webhook.yaml, each webhook's clientConfig pointed at the
#                         loopback webhook as e2e/suite/harness.rs register() does (the
#                         configurations are named keywire-apiserver-latency, so a concurrent
#                         e2e run's `keywire` ones are left alone)
#   clients     1 and 4 concurrent connections (threads), N creates per batch split over them
# N creates per batch (after a few unmeasured warm-up creates), REPS repetitions, phases
# interleaved (order alternating per repetition). Webhook calls are counted from the webhook's
# /metrics (keywire_admission_requests_total by endpoint) before and after each batch.
#
# Prints a table (medians over the repetitions): pod kind, clients, webhooks, p50/p99/max ms,
# added p50/p99 vs none, creates/s, mutate and validate calls per create; writes
# $OUT_DIR/{results.json,samples.json,table.txt,webhook.log,apiserver-log.txt}.
# Run by hand (not by .ci/run); takes a few minutes with the defaults:
#
#   E2E_STATE_DIR=/tmp/kw-dev e2e/up.sh            # once, if the control plane is not up
#   bash benches/run-apiserver-latency.sh [--clients 1,4] [-n 300] [--reps 3] [--kinds opted-in,plain,plain-no-token]
#
# Environment:
#   E2E_STATE_DIR  control plane state dir (default /tmp/kw-dev)
#   KEYWIRE_BIN    keywire binary (default target/release/keywire; copied before use, so a
#                  rebuild during the run does not matter). Not built by this script.
#   N, REPS, CLIENTS, KINDS, WARMUP   defaults for -n, --reps, --clients, --kinds, --warmup
#                  (300, 3, "1,4", "opted-in,plain,plain-no-token", 5)
#   OUT_DIR        results (default /tmp/kw-apiserver-latency)
#   KEYWIRE_LOG    RUST_LOG of the webhook (default info: one line per review, as deployed)
#   KEEP_PODS=1    leave the measured pods in the namespace (default: deleted at the end; the
#                  namespace itself stays, as namespaces never finish deleting without a
#                  namespace controller)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
E2E_STATE_DIR="${E2E_STATE_DIR:-/tmp/kw-dev}"
N="${N:-300}"
REPS="${REPS:-3}"
CLIENTS="${CLIENTS:-1,4}"
KINDS="${KINDS:-opted-in,plain,plain-no-token}"
WARMUP="${WARMUP:-5}"
OUT_DIR="${OUT_DIR:-/tmp/kw-apiserver-latency}"
KEYWIRE_LOG="${KEYWIRE_LOG:-info}"
CONFIG_NAME=keywire-apiserver-latency

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --kinds) KINDS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# --- the control plane ----------------------------------------------------------------------
not_up() {
  die "no e2e control plane answers in $E2E_STATE_DIR ($1). Start one with:
    E2E_STATE_DIR=$E2E_STATE_DIR e2e/up.sh
  (if it is half dead: E2E_STATE_DIR=$E2E_STATE_DIR e2e/down.sh first)"
}
[[ -f "$E2E_STATE_DIR/env" ]] || not_up "no $E2E_STATE_DIR/env"
# shellcheck disable=SC1091
source "$E2E_STATE_DIR/env"
[[ "$(curl --noproxy '*' -sS --max-time 5 --cacert "$E2E_CA_FILE" \
        -H "Authorization: Bearer $(cat "$E2E_TOKEN_FILE")" "$E2E_APISERVER_URL/readyz" 2>/dev/null)" == ok ]] \
  || not_up "$E2E_APISERVER_URL/readyz is not ok"
[[ -x "${KUBECTL:-}" ]] || die "KUBECTL from $E2E_STATE_DIR/env is not executable: ${KUBECTL:-unset}"
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=30s "$@"; }
command -v python3 >/dev/null || die "python3 is required"

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
TMP="$(mktemp -d /tmp/kw-apiserver-latency.XXXXXX)"
WEBHOOK_PID=""
cleanup() {
  local rc=$?
  set +e
  kc delete mutatingwebhookconfiguration "$CONFIG_NAME" --ignore-not-found --wait=false >/dev/null 2>&1
  kc delete validatingwebhookconfiguration "$CONFIG_NAME" --ignore-not-found --wait=false >/dev/null 2>&1
  if [[ -n "$WEBHOOK_PID" ]] && kill -0 "$WEBHOOK_PID" 2>/dev/null; then
    kill -TERM "$WEBHOOK_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$WEBHOOK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$WEBHOOK_PID" 2>/dev/null && kill -KILL "$WEBHOOK_PID" 2>/dev/null
    wait "$WEBHOOK_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEYWIRE_SRC="${KEYWIRE_BIN:-$REPO/target/release/keywire}"
[[ -x "$KEYWIRE_SRC" ]] || die "no keywire binary at $KEYWIRE_SRC (cargo build --release, or set KEYWIRE_BIN)"
cp "$KEYWIRE_SRC" "$TMP/keywire"
KEYWIRE="$TMP/keywire"
log "keywire: $KEYWIRE_SRC ($("$KEYWIRE" --version)), control plane $E2E_APISERVER_URL"

# Other webhook configurations would be called in the "none" phase too.
others="$(kc get mutatingwebhookconfigurations,validatingwebhookconfigurations -o name \
  | grep -v "/$CONFIG_NAME\$" || true)"
[[ -z "$others" ]] || die "other webhook configurations are registered; they would distort the
  baseline (delete them, or use a control plane of your own):
$others"

# --- CRDs the webhook watches (as the e2e suite installs them) -------------------------------
log "CRDs: KeywirePolicy, SecretProviderClass"
kc apply -f webhook-config/crd-keywirepolicy.yaml -f e2e/manifests/secretproviderclass-crd.yaml >/dev/null
kc wait --for=condition=Established --timeout=60s \
  crd/keywirepolicies.keywire.dev crd/secretproviderclasses.secrets-store.csi.x-k8s.io >/dev/null

# --- the webhook ------------------------------------------------------------------------------
"$KEYWIRE" certs --out-dir "$TMP/certs" --host 127.0.0.1 >/dev/null
: >"$OUT_DIR/webhook.log"
log "starting keywire webhook on 127.0.0.1 (log $OUT_DIR/webhook.log)"
KUBECONFIG="$KUBECONFIG" RUST_LOG="$KEYWIRE_LOG" "$KEYWIRE" webhook \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --tls-cert-file "$TMP/certs/tls.crt" --tls-key-file "$TMP/certs/tls.key" \
  --shutdown-grace-seconds 2 >/dev/null 2>>"$OUT_DIR/webhook.log" &
WEBHOOK_PID=$!
# "webhook listening" / "metrics listening" log lines carry the bound addresses.
addr_of() { # message
  python3 - "$OUT_DIR/webhook.log" "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("message") == sys.argv[2] and f.get("addr"):
        print(f["addr"]); break
EOF
}
ADDR="" MADDR="" deadline=$((SECONDS + 60))
until [[ -n "$MADDR" ]] && curl -fsS --noproxy '*' --max-time 2 "http://$MADDR/readyz" >/dev/null 2>&1; do
  kill -0 "$WEBHOOK_PID" 2>/dev/null || { tail -n 20 "$OUT_DIR/webhook.log" >&2; die "the webhook exited"; }
  ((SECONDS < deadline)) || { tail -n 20 "$OUT_DIR/webhook.log" >&2; die "the webhook is not ready after 60s"; }
  [[ -n "$ADDR" ]] || ADDR="$(addr_of "webhook listening")"
  [[ -n "$MADDR" ]] || MADDR="$(addr_of "metrics listening")"
  sleep 0.2
done
[[ -n "$ADDR" ]] || ADDR="$(addr_of "webhook listening")"
[[ -n "$ADDR" ]] || die "no 'webhook listening' address in $OUT_DIR/webhook.log"
log "webhook https://$ADDR, metrics http://$MADDR (pid $WEBHOOK_PID)"

# --- namespace and ServiceAccounts --------------------------------------------------------------
NS="kw-lat-$(date +%H%M%S)-$RANDOM"
log "namespace $NS (ServiceAccounts default and app)"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: $NS
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: $NS
  annotations:
    azure.workload.identity/client-id: 00000000-0000-0000-0000-000000000001
    azure.workload.identity/tenant-id: 00000000-0000-0000-0000-0000000000aa
EOF
deadline=$((SECONDS + 30))
until kc get -n "$NS" serviceaccount default app >/dev/null 2>&1; do
  ((SECONDS < deadline)) || die "ServiceAccounts in $NS did not appear"
  sleep 0.2
done

# --- the shipped webhook configurations as JSON (no YAML parser needed) -------------------------
kc create --dry-run=client -o json -f webhook-config/mutating-webhook.yaml >"$TMP/mutating.json"
kc create --dry-run=client -o json -f webhook-config/validating-webhook.yaml >"$TMP/validating.json"
kc delete mutatingwebhookconfiguration,validatingwebhookconfiguration "$CONFIG_NAME" \
  --ignore-not-found >/dev/null

APISERVER_LOG="$E2E_STATE_DIR/logs/kube-apiserver.log"
log_lines_before="$(wc -l <"$APISERVER_LOG" 2>/dev/null || echo 0)"
log "measuring: N=$N, reps=$REPS, clients=$CLIENTS, kinds=$KINDS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
cleanup_pods=(--cleanup-pods)
[[ "${KEEP_PODS:-0}" == 1 ]] && cleanup_pods=()
python3 "$REPO/benches/apiserver_latency.py" \
  --server "$E2E_APISERVER_URL" --ca-file "$E2E_CA_FILE" --token-file "$E2E_TOKEN_FILE" \
  --namespace "$NS" --metrics "$MADDR" --webhook-url "https://$ADDR" \
  --ca-bundle "$TMP/certs/ca.crt" --mutating-json "$TMP/mutating.json" \
  --validating-json "$TMP/validating.json" --config-name "$CONFIG_NAME" \
  -n "$N" --reps "$REPS" --clients "$CLIENTS" --kinds "$KINDS" --warmup "$WARMUP" \
  --out-dir "$OUT_DIR" "${cleanup_pods[@]}"

# What the API server said about webhooks during the run (CEL errors, timeouts, rejections).
tail -n +"$((log_lines_before + 1))" "$APISERVER_LOG" 2>/dev/null \
  | grep -iE 'webhook|admission|matchcondition|cel' >"$OUT_DIR/apiserver-log.txt" || true
n_log="$(wc -l <"$OUT_DIR/apiserver-log.txt")"
if ((n_log > 0)); then
  echo "kube-apiserver logged $n_log webhook/admission line(s) during the run: $OUT_DIR/apiserver-log.txt"
  head -n 5 "$OUT_DIR/apiserver-log.txt" | cut -c1-300
else
  echo "kube-apiserver logged no webhook/admission errors during the run"
fi
ERRLINES="$(grep -c -E '"level":"(ERROR|WARN)"' "$OUT_DIR/webhook.log" || true)"
echo "webhook WARN/ERROR log lines: $ERRLINES ($OUT_DIR/webhook.log)"
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
