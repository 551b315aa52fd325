#!/usr/bin/env bash
# system-packages.sh — the Debian packages the Azure stand-ins need, installed if missing:
# nginx (Entra's URL shape in front of Keycloak). Java 17 and Maven come with the machine.
#
#   e2e/azure/system-packages.sh
#
# Needs root (or passwordless sudo) only when something is missing; a no-op otherwise.
set -euo pipefail
log() { printf '[azure/packages] %s\n' "$*" >&2; }

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
((${#missing[@]})) || exit 0

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  log "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  exit 1
fi
log "installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/keywire-apt.log 2>&1; then
  "${sudo[@]}" apt-get update >>/tmp/keywire-apt.log 2>&1
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/keywire-apt.log 2>&1 \
    || { tail -n 20 /tmp/keywire-apt.log >&2; exit 1; }
fi
# The package's own service is not wanted: the suite runs nginx as its own process.
"${sudo[@]}" service nginx stop >/dev/null 2>&1 || true
log "installed ${missing[*]}"
