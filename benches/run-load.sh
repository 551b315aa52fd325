#!/usr/bin/env bash
# Load-tests a release `keywire webhook` on loopback with `keywire-load` and records latency,
# throughput and memory. Bounded in time (about 2 minutes plus the release build).
#
#   bash benches/run-load.sh
#
# Environment:
#   LOAD_SECONDS   seconds per load setting (default 15)
#   KEYWIRE_LOG    RUST_LOG for the webhook (default info: one JSON line per review, as deployed)
#   OUT_DIR        where logs and results go (default target/keywire-load/<timestamp>)
#   KEYWIRE_BIN    the webhook binary to measure (default: the release build)
#   PLOT_OUT       also copy the latency plot here (docs/img/load-latency.svg in docs/benchmarks.md)
#
# Results: a table on stdout, and $OUT_DIR/{summary.txt,server.log,load-*.txt,latency-*.csv,
# latency.svg,metrics.txt}.
set -euo pipefail

cd "$(dirname "$0")/.."
LOAD_SECONDS="${LOAD_SECONDS:-15}"
KEYWIRE_LOG="${KEYWIRE_LOG:-info}"
OUT_DIR="${OUT_DIR:-target/keywire-load/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

echo "== building (release)"
cargo build --release --features fixtures --bin keywire --bin keywire-load

KEYWIRE="${KEYWIRE_BIN:-$PWD/target/release/keywire}"
LOAD="$PWD/target/release/keywire-load"
TMP="$(mktemp -d)"
SERVER_PID=""
SAMPLER_PID=""

cleanup() {
  if [[ -n "$SAMPLER_PID" ]] && kill -0 "$SAMPLER_PID" 2>/dev/null; then
    kill "$SAMPLER_PID" 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# "VmRSS" or "VmHWM" of the server, in KiB.
mem_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# User+system CPU ticks of the server so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

echo "== certificates and cluster state in $TMP"
"$KEYWIRE" certs --out-dir "$TMP/certs" --host 127.0.0.1 >/dev/null
cat >"$TMP/cluster-state.yaml" <<'EOF'
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: prod
  annotations:
    azure.workload.identity/client-id: 11111111-2222-3333-4444-555555555555
    azure.workload.identity/tenant-id: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee
EOF

# Two free loopback ports (the OS picks them; they are released just before the webhook binds).
read -r PORT MPORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')
ADDR="127.0.0.1:$PORT"
MADDR="127.0.0.1:$MPORT"

echo "== starting the webhook (RUST_LOG=$KEYWIRE_LOG, log in $OUT_DIR/server.log)"
# As the chart deploys it (charts/keywire/templates/deployment.yaml sets the same variable).
MIMALLOC_ARENA_EAGER_COMMIT=0 RUST_LOG="$KEYWIRE_LOG" "$KEYWIRE" webhook \
  --listen "$ADDR" --metrics-listen "$MADDR" \
  --tls-cert-file "$TMP/certs/tls.crt" --tls-key-file "$TMP/certs/tls.key" \
  --cluster-state "$TMP/cluster-state.yaml" 2>"$OUT_DIR/server.log" &
SERVER_PID=$!

for _ in $(seq 1 100); do
  curl -fsS "http://$MADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "webhook exited:"; cat "$OUT_DIR/server.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://$MADDR/readyz" >/dev/null || { echo "webhook not ready"; cat "$OUT_DIR/server.log"; exit 1; }
echo "   webhook https://$ADDR/mutate, metrics http://$MADDR (pid $SERVER_PID)"

sleep 2
IDLE_RSS="$(mem_kib VmRSS)"
echo "   idle RSS $(mib "$IDLE_RSS") MiB"

SUMMARY="$OUT_DIR/summary.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "rustc: $(rustc --version)"
  echo "load seconds per setting: $LOAD_SECONDS; RUST_LOG=$KEYWIRE_LOG"
  echo "idle RSS: $(mib "$IDLE_RSS") MiB"
  echo
  printf '%-22s %8s %7s %9s %8s %8s %8s %8s %9s %9s %10s %10s %10s\n' \
    setting requests errors 'req/s' p50_ms p90_ms p99_ms max_ms srv_cpu% gen_cpu% rss_max_MiB rss_end_MiB req/cpu_s
} >"$SUMMARY"

FAILED=0
TICKS_PER_SEC="$(getconf CLK_TCK)"

# run NAME PAYLOAD CONCURRENCY RATE
run() {
  local name="$1" payload="$2" conc="$3" rate="$4"
  local log="$OUT_DIR/load-$name.txt"
  echo "== $name: payload $payload, concurrency $conc, rate $([[ $rate == 0 ]] && echo unlimited || echo "$rate/s"), ${LOAD_SECONDS}s"
  # Peak RSS while the load runs, sampled every 100 ms.
  (
    peak=0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
      r="$(mem_kib VmRSS || echo 0)"
      ((r > peak)) && peak=$r && echo "$peak" >"$TMP/peak"
      sleep 0.1
    done
  ) &
  SAMPLER_PID=$!
  local t0 c0 t1 c1 rc=0
  t0="$(date +%s.%N)"
  c0="$(cpu_ticks)"
  TIMEFORMAT='gen_cpu_seconds %U %S'
  { time timeout $((LOAD_SECONDS + 30)) "$LOAD" --url "https://$ADDR/mutate" \
      --ca-file "$TMP/certs/ca.crt" --concurrency "$conc" --rate "$rate" \
      --duration-seconds "$LOAD_SECONDS" --payload "$payload" --label "$name" \
      --latency-out "$OUT_DIR/latency-$name.csv"; } >"$log" 2>&1 || rc=$?
  c1="$(cpu_ticks)"
  t1="$(date +%s.%N)"
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=""
  sed -n '/^keywire-load:/,/^RESULT/p' "$log" | grep -v '^RESULT' | sed 's/^/   /'
  [[ $rc -eq 0 ]] || { echo "   keywire-load exited $rc"; FAILED=1; }
  local rss_end peak srv gen line
  sleep 1
  rss_end="$(mem_kib VmRSS)"
  peak="$(cat "$TMP/peak" 2>/dev/null || echo 0)"
  rm -f "$TMP/peak"
  srv="$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$TICKS_PER_SEC" \
    'BEGIN { printf "%.0f", 100 * (b - a) / hz / (t1 - t0) }')"
  gen="$(awk -v t0="$t0" -v t1="$t1" '/^gen_cpu_seconds/ { printf "%.0f", 100 * ($2 + $3) / (t1 - t0) }' "$log")"
  line="$(grep '^RESULT' "$log" || true)"
  if [[ -z "$line" ]]; then
    echo "   no RESULT line; see $log"
    FAILED=1
    return
  fi
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  # Requests per CPU-second of the webhook (user + system from /proc): the generator shares the
  # cores, so this is steadier than raw req/s.
  local per_cpu
  per_cpu="$(awk -v a="$c0" -v b="$c1" -v hz="$TICKS_PER_SEC" -v n="$(field requests)" \
    'BEGIN { s = (b - a) / hz; if (s > 0) printf "%.0f", n / s; else print "-" }')"
  printf '%-22s %8s %7s %9s %8s %8s %8s %8s %9s %9s %10s %10s %10s\n' \
    "$name" "$(field requests)" "$(field errors)" "$(field rps)" "$(field p50_ms)" "$(field p90_ms)" \
    "$(field p99_ms)" "$(field max_ms)" "$srv" "$gen" "$(mib "$peak")" "$(mib "$rss_end")" "$per_cpu" >>"$SUMMARY"
}

run small-r1000-c4 small 4 1000
run small-r1000-c16 small 16 1000
run large-r1000-c8 large 8 1000
run large-r2000-c8 large 8 2000
run small-max-c8 small 8 0
run large-max-c8 large 8 0

curl -fsS "http://$MADDR/metrics" >"$OUT_DIR/metrics.txt" || true

PLOT_ARGS=()
for csv in "$OUT_DIR"/latency-*.csv; do
  [[ -f "$csv" ]] || continue
  name="$(basename "$csv" .csv)"
  PLOT_ARGS+=("${name#latency-}=$csv")
done
if ((${#PLOT_ARGS[@]})); then
  python3 benches/plot-latency.py "$OUT_DIR/latency.svg" \
    "keywire webhook latency, $(nproc) cores, ${LOAD_SECONDS}s per setting" "${PLOT_ARGS[@]}"
  echo "== latency plot: $OUT_DIR/latency.svg"
  if [[ -n "${PLOT_OUT:-}" ]]; then
    mkdir -p "$(dirname "$PLOT_OUT")"
    cp "$OUT_DIR/latency.svg" "$PLOT_OUT"
    echo "   copied to $PLOT_OUT"
  fi
fi
HWM="$(mem_kib VmHWM)"

echo "== SIGTERM"
kill -TERM "$SERVER_PID"
EXIT_RC=""
for _ in $(seq 1 250); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    EXIT_RC=0
    wait "$SERVER_PID" || EXIT_RC=$?
    break
  fi
  sleep 0.1
done
if [[ -z "$EXIT_RC" ]]; then
  echo "   webhook still running 25 s after SIGTERM"
  FAILED=1
  EXIT_RC="none (killed)"
elif [[ "$EXIT_RC" != 0 ]]; then
  FAILED=1
fi
SERVER_PID_DONE="$SERVER_PID"
SERVER_PID=""

REVIEWS="$(grep -c '"message":"admission review"' "$OUT_DIR/server.log" || true)"
ERRLINES="$(grep -c -E '"level":"(ERROR|WARN)"' "$OUT_DIR/server.log" || true)"
{
  echo
  echo "peak RSS over the whole run (VmHWM): $(mib "$HWM") MiB"
  echo "webhook (pid $SERVER_PID_DONE) exit status after SIGTERM: $EXIT_RC"
  echo "admission reviews logged: $REVIEWS; WARN/ERROR log lines: $ERRLINES"
  echo "srv_cpu%/gen_cpu%: CPU used by the webhook / by keywire-load over the setting (200% = both cores)"
} >>"$SUMMARY"

echo
cat "$SUMMARY"
echo
echo "details in $OUT_DIR"
exit "$FAILED"
