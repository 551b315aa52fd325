#!/usr/bin/env bash
# azure/up.sh — start the Azure stand-ins of keywire's e2e suite next to the control plane:
# Keycloak (Entra ID), nginx (Entra's URL shape in front of Keycloak) and the Key Vault
# stand-in (keyvault_standin.py). Stopped by e2e/down.sh (pid files in $E2E_STATE_DIR/pids).
#
# Usage (e2e/up.sh calls the two phases itself; E2E_AZURE=0 skips all of this):
#   azure/up.sh start    certs, then start Keycloak (it takes 20-60 s, so e2e/up.sh calls this
#                        before etcd) and make sure the venv exists; needs $E2E_STATE_DIR/env
#                        (PKI) and $E2E_STATE_DIR/ports from e2e/up.sh
#   azure/up.sh finish   wait for Keycloak, start nginx and the stand-in, create the default
#                        tenant (realm), append the E2E_* variables below to $E2E_STATE_DIR/env;
#                        needs the apiserver up (the realm's identity provider is its issuer)
#   azure/up.sh          both, for a control plane that is already up (standalone use)
#   azure/up.sh status   exit 0 if all three processes run
#
# Appended to $E2E_STATE_DIR/env (the file is made mode 600: it holds the admin password):
#   E2E_KEYCLOAK_URL              https://127.0.0.1:<kc port>   (realm = tenant)
#   E2E_KEYCLOAK_ADMIN_USER / E2E_KEYCLOAK_ADMIN_PASSWORD   master-realm admin (random password)
#   E2E_ENTRA_AUTHORITY           https://127.0.0.1:<nginx port>  (Entra-shaped authority host)
#   E2E_KEYVAULT_URL              https://127.0.0.1:<stand-in port>  (path form: <that>/<vault>)
#   E2E_KEYVAULT_ADMIN            $E2E_KEYVAULT_URL/_standin
#   E2E_KEYVAULT_STATE_FILE       the stand-in's --state-file
#   E2E_PYTHON                    the venv python (python.sh)
#   E2E_AZURE_DIR                 this directory
#   E2E_TENANT                    the default tenant GUID (a realm with the apiserver as IdP)
# Layout in the state dir: azure/ (ports, keycloak-home/, nginx/, keyvault-state.json),
# pki/{keycloak,entra-proxy,keyvault}.{crt,key}, logs/{keycloak,nginx,keyvault-standin}.log,
# pids/{keycloak,keycloak-launcher,nginx,keyvault-standin}.pid.
#
# Environment: E2E_STATE_DIR (default /tmp/keywire-e2e), E2E_KEYCLOAK_TIMEOUT (default 240 s),
# KEYWIRE_CACHE_DIR, KEYCLOAK_JAVA_OPTS (heap etc.; default below).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$PATH:/usr/sbin"  # Debian's nginx
STATE="${E2E_STATE_DIR:-/tmp/keywire-e2e}"
KC_TIMEOUT="${E2E_KEYCLOAK_TIMEOUT:-240}"
AZ="$STATE/azure"
KEYCLOAK_TLS_NAME="keycloak.keywire-e2e.test"

log() { printf '[azure up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
tail_log() {
  if [[ -f "$1" ]]; then
    log "---- last 40 lines of $1 ----"; tail -n 40 "$1" >&2 || true; log "---- end of $1 ----"
  fi
}
alive() {
  [[ -s "$1" ]] || return 1
  local pid st
  pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null || return 1
  st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]]
}
lcurl() { curl --noproxy '*' -sS --max-time 5 "$@"; }
ms() { date +%s%3N; }
phase_t0=0
phase() { phase_t0=$(ms); log "$*"; }
phase_done() { log "$* in $(( ($(ms) - phase_t0) ))ms"; }

[[ -f "$STATE/env" ]] || die "$STATE/env not found: run e2e/up.sh (or set E2E_STATE_DIR)"
# shellcheck disable=SC1091
source "$STATE/env"

# --- the same start() as e2e/up.sh: own session, pid recorded, log in logs/ ---------------------
start() { # name binary args...
  local name="$1"; shift
  : > "$STATE/logs/$name.log"
  nohup setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE/pids/$name.pid" "$@" \
    >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 50); do [[ -s "$STATE/pids/$name.pid" ]] && return 0; sleep 0.1; done
  die "$name did not start"
}
wait_for() { # name timeout check-command...
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$STATE/pids/$name.pid"; then
      tail_log "$STATE/logs/$name.log"; die "$name exited during start-up (log: $STATE/logs/$name.log)"
    fi
    if (( SECONDS >= deadline )); then
      tail_log "$STATE/logs/$name.log"; die "$name not ready after ${timeout}s (log: $STATE/logs/$name.log)"
    fi
    sleep 0.25
  done
}

# --- ports: random, below the ephemeral range, not busy, not one of e2e/up.sh's ----------------
port_busy() {
  local hex; hex="$(printf ':%04X' "$1")"
  awk -v h="$hex" 'NR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
free_port() {
  local p i taken
  taken=" $(cat "$STATE/ports" "$AZ/ports" 2>/dev/null | cut -d= -f2 | tr '\n' ' ') ${picked:-} "
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ "$taken" == *" $p "* ]] && continue
    port_busy "$p" && continue
    picked="${picked:-} $p"
    echo "$p"; return 0
  done
  die "could not find a free port"
}

# --- serving certificates signed by the e2e CA ----------------------------------------------------
serving_cert() { # name CN extra-SANs
  local name="$1" cn="$2" sans="IP:127.0.0.1,DNS:localhost${3:+,$3}" pki="$STATE/pki"
  [[ -s "$pki/$name.crt" && -s "$pki/$name.key" ]] && return 0
  cat > "$pki/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$pki/$name.key" -out "$pki/$name.csr" \
    -subj "/CN=$cn" >/dev/null 2>>"$STATE/logs/openssl.log" || die "openssl req $name failed"
  openssl x509 -req -sha256 -days 365 -in "$pki/$name.csr" -CA "$E2E_CA_FILE" -CAkey "$E2E_CA_KEY_FILE" \
    -CAcreateserial -extfile "$pki/$name.ext" -out "$pki/$name.crt" >/dev/null 2>>"$STATE/logs/openssl.log" \
    || die "openssl x509 $name failed"
  rm -f "$pki/$name.csr" "$pki/$name.ext"
  chmod 600 "$pki/$name.key"
}

# ==================================================================================================
do_start() {
  "$here/system-packages.sh" || die "could not install the system packages (see above)"
  for t in openssl curl setsid java nginx flock; do command -v "$t" >/dev/null || die "$t is required"; done
  mkdir -p "$AZ" "$STATE/logs" "$STATE/pids"
  chmod 700 "$AZ"
  if [[ -f "$AZ/ports" ]]; then
    # shellcheck disable=SC1091
    source "$AZ/ports"
  else
    KEYCLOAK_PORT="$(free_port)"; NGINX_PORT="$(free_port)"; KEYVAULT_PORT="$(free_port)"
    printf 'KEYCLOAK_PORT=%s\nNGINX_PORT=%s\nKEYVAULT_PORT=%s\n' \
      "$KEYCLOAK_PORT" "$NGINX_PORT" "$KEYVAULT_PORT" > "$AZ/ports"
  fi
  if [[ ! -s "$AZ/keycloak-admin.password" ]]; then
    ( umask 077; openssl rand -hex 24 > "$AZ/keycloak-admin.password" )
  fi

  phase "serving certificates (Keycloak, Entra proxy, Key Vault stand-in)"
  serving_cert keycloak keycloak "DNS:$KEYCLOAK_TLS_NAME"
  serving_cert entra-proxy entra-proxy "DNS:entra-proxy.keywire-e2e.test"
  serving_cert keyvault keyvault-standin "DNS:keyvault.keywire-e2e.test"
  phase_done "certificates"

  phase "Keycloak distribution (cached)"
  local kc_home
  kc_home="$("$here/keycloak.sh" | tail -n 1)" || die "keycloak.sh failed"
  [[ -x "$kc_home/bin/kc.sh" ]] || die "keycloak.sh printed no usable home ($kc_home)"
  phase_done "Keycloak distribution at $kc_home"

  # A private overlay of the cached, built home: own bin/ (kc.sh derives the home from its own
  # path), conf/ and data/ (H2 database, truststore, transaction logs); lib/ providers/ themes/
  # are symlinks, read-only in `start --optimized`.
  local home="$AZ/keycloak-home"
  rm -rf "$home"
  mkdir -p "$home/data"
  cp -r "$kc_home/bin" "$kc_home/conf" "$home/"
  local d; for d in lib providers themes; do ln -s "$kc_home/$d" "$home/$d"; done
  cp "$kc_home/version.txt" "$home/" 2>/dev/null || true

  phase "starting Keycloak on https://127.0.0.1:$KEYCLOAK_PORT"
  KC_BOOTSTRAP_ADMIN_USERNAME=admin \
  KC_BOOTSTRAP_ADMIN_PASSWORD="$(cat "$AZ/keycloak-admin.password")" \
  JAVA_OPTS_KC_HEAP="${KEYCLOAK_JAVA_OPTS:--Xms128m -Xmx768m -XX:TieredStopAtLevel=1}" \
  start keycloak "$home/bin/kc.sh" start --optimized \
    --http-enabled=false --http-host=127.0.0.1 --https-port="$KEYCLOAK_PORT" \
    --hostname="https://127.0.0.1:$KEYCLOAK_PORT" \
    --https-certificate-file="$STATE/pki/keycloak.crt" \
    --https-certificate-key-file="$STATE/pki/keycloak.key" \
    --truststore-paths="$E2E_CA_FILE"
  # kc.sh stays as the parent of java: keycloak.pid gets java's pid (down.sh checks the binary),
  # keycloak-launcher.pid the shell's.
  local launcher i jpid=""
  launcher="$(cat "$STATE/pids/keycloak.pid")"
  echo "$launcher" > "$STATE/pids/keycloak-launcher.pid"
  for i in $(seq 1 100); do
    jpid="$(pgrep -P "$launcher" -x java || true)"
    [[ -n "$jpid" ]] && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$jpid" ]] || { tail_log "$STATE/logs/keycloak.log"; die "Keycloak's java did not start"; }
  echo "$jpid" > "$STATE/pids/keycloak.pid"
  date +%s%3N > "$AZ/keycloak.started-at"
  log "Keycloak java pid $jpid (log: $STATE/logs/keycloak.log)"

  phase "Python venv (cached)"
  "$here/python.sh" | tail -n 1 > "$AZ/python" || die "python.sh failed"
  phase_done "venv $(cat "$AZ/python")"
}

# ==================================================================================================
do_finish() {
  # shellcheck disable=SC1091
  source "$AZ/ports"
  local py; py="$(cat "$AZ/python" 2>/dev/null || true)"
  [[ -x "$py" ]] || py="$("$here/python.sh" | tail -n 1)"
  local kc_url="https://127.0.0.1:$KEYCLOAK_PORT" nginx_url="https://127.0.0.1:$NGINX_PORT"
  local kv_url="https://127.0.0.1:$KEYVAULT_PORT"

  # nginx first: it does not need Keycloak to be up.
  phase "starting nginx (Entra proxy) on $nginx_url"
  local nd="$AZ/nginx"
  mkdir -p "$nd/tmp"
  sed -e "s#@USER@#$(id -un) $(id -gn)#g" -e "s#@NGINX_DIR@#$nd#g" -e "s#@LOG_DIR@#$STATE/logs#g" \
      -e "s#@KEYCLOAK_PORT@#$KEYCLOAK_PORT#g" -e "s#@NGINX_PORT@#$NGINX_PORT#g" \
      -e "s#@KEYCLOAK_URL@#$kc_url#g" -e "s#@NGINX_URL@#$nginx_url#g" \
      -e "s#@CERT@#$STATE/pki/entra-proxy.crt#g" -e "s#@KEY@#$STATE/pki/entra-proxy.key#g" \
      -e "s#@CA@#$E2E_CA_FILE#g" -e "s#@KEYCLOAK_TLS_NAME@#$KEYCLOAK_TLS_NAME#g" \
      "$here/entra-proxy.conf.tmpl" > "$nd/nginx.conf"
  nginx -t -q -p "$nd" -e "$STATE/logs/nginx-error.log" -c "$nd/nginx.conf" 2>>"$STATE/logs/nginx.log" \
    || { tail_log "$STATE/logs/nginx.log"; die "nginx -t failed for $nd/nginx.conf"; }
  start nginx nginx -p "$nd" -e "$STATE/logs/nginx-error.log" -c "$nd/nginx.conf"
  nginx_up() { [[ "$(lcurl --cacert "$E2E_CA_FILE" "$nginx_url/healthz")" == *ok* ]]; }
  wait_for nginx 30 nginx_up
  phase_done "nginx ready"

  phase "waiting for Keycloak"
  kc_up() { lcurl --cacert "$E2E_CA_FILE" -o /dev/null -f "$kc_url/realms/master/.well-known/openid-configuration"; }
  wait_for keycloak "$KC_TIMEOUT" kc_up
  local t_kc=$(( $(ms) - $(cat "$AZ/keycloak.started-at") ))
  phase_done "Keycloak ready $((t_kc / 1000)).$(( (t_kc % 1000) / 100 ))s after its start; waited"

  # env first (entra.py reads it), then the default tenant
  local tenant
  tenant="$(cat "$AZ/tenant" 2>/dev/null || cat /proc/sys/kernel/random/uuid)"
  echo "$tenant" > "$AZ/tenant"
  if ! grep -q '^export E2E_KEYCLOAK_URL=' "$STATE/env"; then
    chmod 600 "$STATE/env"
    cat >> "$STATE/env" <<EOF
# Azure stand-ins (e2e/azure/up.sh)
export E2E_KEYCLOAK_URL=$kc_url
export E2E_KEYCLOAK_ADMIN_USER=admin
export E2E_KEYCLOAK_ADMIN_PASSWORD=$(cat "$AZ/keycloak-admin.password")
export E2E_ENTRA_AUTHORITY=$nginx_url
export E2E_KEYVAULT_URL=$kv_url
export E2E_KEYVAULT_ADMIN=$kv_url/_standin
export E2E_KEYVAULT_STATE_FILE=$AZ/keyvault-state.json
export E2E_PYTHON=$py
export E2E_AZURE_DIR=$here
export E2E_TENANT=$tenant
EOF
  fi

  phase "starting the Key Vault stand-in on $kv_url"
  "$here/standin.sh" start || die "the Key Vault stand-in did not start"
  phase_done "stand-in ready"

  phase "default tenant $tenant (realm, identity provider for $E2E_ISSUER, vault scope)"
  E2E_STATE_DIR="$STATE" "$py" "$here/entra.py" realm "$tenant" 2>>"$STATE/logs/entra.log" \
    || { tail_log "$STATE/logs/entra.log"; die "entra.py realm failed"; }
  local disco
  disco="$(lcurl --cacert "$E2E_CA_FILE" "$nginx_url/$tenant/v2.0/.well-known/openid-configuration")" \
    || die "Entra discovery through nginx failed"
  [[ "$disco" == *"\"token_endpoint\":\"$nginx_url/$tenant/oauth2/v2.0/token\""* ]] \
    || { tail_log "$STATE/logs/nginx-error.log"; die "nginx did not rewrite token_endpoint"; }
  phase_done "tenant ready (discovery through the Entra proxy checked)"
}

do_status() {
  local n
  for n in keycloak nginx keyvault-standin; do alive "$STATE/pids/$n.pid" || return 1; done
  grep -q '^export E2E_KEYCLOAK_URL=' "$STATE/env"
}

t_all=$(ms)
case "${1:-all}" in
  start)  do_start ;;
  finish) do_finish ;;
  all)    do_start; do_finish ;;
  status) do_status; exit $? ;;
  *) die "usage: $0 [start|finish|status]" ;;
esac
log "azure ${1:-all} done in $(( ($(ms) - t_all) ))ms"
