#!/usr/bin/env bash
# down.sh — stop the control plane started by e2e/up.sh and remove its state dir.
#
# Usage:   e2e/down.sh
# Environment (optional):
#   E2E_STATE_DIR    state dir (default /tmp/keywire-e2e)
#   E2E_KEEP_STATE   1 = stop the processes but keep the state dir (logs etc.)
#
# Safe to run when nothing is up. It kills only the pids recorded in
# $E2E_STATE_DIR/pids/*.pid, and only if that pid still runs the same binary
# (guards against pid reuse); it deletes the state dir only if up.sh made it.
set -euo pipefail

STATE="${E2E_STATE_DIR:-/tmp/keywire-e2e}"
MARKER=".keywire-e2e-state"
log() { printf '[e2e down] %s\n' "$*" >&2; }
# running PID: exists and is not a zombie (a killed daemon whose parent is gone
# may linger as a zombie until init reaps it).
running() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]]
}

if [[ ! -e "$STATE" ]]; then
  log "nothing to do: $STATE does not exist"
  exit 0
fi
if [[ ! -f "$STATE/$MARKER" ]]; then
  log "ERROR: $STATE was not made by up.sh (no $MARKER); not touching it"
  exit 1
fi

stop() { # name expected-binary-basename (a glob pattern)
  local name="$1" exe="$2" pidfile="$STATE/pids/$1.pid" pid i
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if ! running "$pid"; then
    rm -f "$pidfile"; return 0
  fi
  # shellcheck disable=SC2053  # $exe is a pattern on purpose (python3*)
  if [[ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || echo '?')")" != $exe ]]; then
    log "pid $pid from $pidfile is not $exe any more; leaving it alone"
    rm -f "$pidfile"; return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    running "$pid" || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) did not exit after 10s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    running "$pid" || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  log "ERROR: could not stop $name (pid $pid)"
  return 1
}

rc=0
# Azure stand-ins (e2e/azure/up.sh), if they were started
stop keyvault-standin 'python3*' || rc=1
stop nginx nginx || rc=1
stop keycloak java || rc=1
stop keycloak-launcher '*sh' || rc=1   # kc.sh exits with its java; only a leftover is stopped
stop kube-apiserver kube-apiserver || rc=1
stop etcd etcd || rc=1

if [[ $rc -ne 0 ]]; then
  log "keeping $STATE because a process could not be stopped"
  exit 1
fi
if [[ "${E2E_KEEP_STATE:-0}" == 1 ]]; then
  log "stopped; state kept in $STATE"
else
  rm -rf -- "$STATE"
  log "stopped; removed $STATE"
fi
