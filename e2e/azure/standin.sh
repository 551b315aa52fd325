#!/usr/bin/env bash
# standin.sh — start, stop or restart the Key Vault stand-in of an e2e state dir.
#
#   e2e/azure/standin.sh start|stop|restart|status
#
# Uses $E2E_STATE_DIR (default /tmp/keywire-e2e): its env (written by e2e/up.sh and
# azure/up.sh), azure/ports and pki/keyvault.{crt,key}. The stand-in keeps its vaults in
# $E2E_KEYVAULT_STATE_FILE, and every vault's port is part of that state, so `stop` then
# `start` is an outage after which all vault URLs answer again with the same data.
# pid: $E2E_STATE_DIR/pids/keyvault-standin.pid, log: logs/keyvault-standin.log (appended).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${E2E_STATE_DIR:-/tmp/keywire-e2e}"
log() { printf '[keyvault-standin] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -f "$STATE/env" && -f "$STATE/azure/ports" ]] || die "no e2e state in $STATE"
# shellcheck disable=SC1091
source "$STATE/env"
# shellcheck disable=SC1091
source "$STATE/azure/ports"
pidfile="$STATE/pids/keyvault-standin.pid"
logfile="$STATE/logs/keyvault-standin.log"

running() {
  [[ -s "$pidfile" ]] || return 1
  local pid st; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]] || return 1
  [[ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || echo '?')")" == python3* ]]
}
healthy() {
  [[ "$(curl --noproxy '*' -sS --max-time 2 --cacert "$E2E_CA_FILE" "$E2E_KEYVAULT_ADMIN/healthz" 2>/dev/null)" == *'"ok"'* ]]
}

do_start() {
  if running; then log "already running (pid $(cat "$pidfile"))"; return 0; fi
  local t0; t0=$(date +%s%3N)
  rm -f "$pidfile"
  nohup setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" \
    "$E2E_PYTHON" -u "$here/keyvault_standin.py" \
      --port "$KEYVAULT_PORT" \
      --cert "$STATE/pki/keyvault.crt" --key "$STATE/pki/keyvault.key" \
      --keycloak-url "$E2E_KEYCLOAK_URL" --authority "$E2E_ENTRA_AUTHORITY" \
      --ca-file "$E2E_CA_FILE" --state-file "$E2E_KEYVAULT_STATE_FILE" \
    >>"$logfile" 2>&1 </dev/null &
  local i
  for i in $(seq 1 200); do
    if healthy; then
      log "up on $E2E_KEYVAULT_URL (pid $(cat "$pidfile")) in $(( $(date +%s%3N) - t0 ))ms"
      return 0
    fi
    if [[ -s "$pidfile" ]] && ! running; then
      tail -n 20 "$logfile" >&2; die "exited during start-up (log: $logfile)"
    fi
    sleep 0.1
  done
  tail -n 20 "$logfile" >&2
  die "not healthy after 20s (log: $logfile)"
}

do_stop() { # [signal]
  running || { rm -f "$pidfile"; log "not running"; return 0; }
  local pid i; pid="$(cat "$pidfile")"
  kill "-${1:-TERM}" "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    running || { rm -f "$pidfile"; log "stopped (pid $pid, SIG${1:-TERM})"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
  rm -f "$pidfile"
  log "killed (pid $pid)"
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop TERM ;;
  kill) do_stop KILL ;;
  restart) do_stop TERM; do_start ;;
  status) if running && healthy; then echo running; else echo stopped; exit 1; fi ;;
  *) die "usage: $0 start|stop|kill|restart|status" ;;
esac
