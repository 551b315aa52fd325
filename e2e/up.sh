#!/usr/bin/env bash
# up.sh — start a real, minimal Kubernetes control plane (etcd + kube-apiserver,
# no controller-manager, scheduler or kubelet) on 127.0.0.1 for keywire's e2e
# tests. Stop it with e2e/down.sh.
#
# Usage:   e2e/up.sh        then:  source "${E2E_STATE_DIR:-/tmp/keywire-e2e}/env"
#
# Environment (all optional):
#   E2E_STATE_DIR       state dir (default /tmp/keywire-e2e)
#   E2E_START_TIMEOUT   seconds to wait for etcd and for /readyz (default 120)
#   E2E_AZURE           1 (default) also starts the Azure stand-ins (Keycloak as Entra ID,
#                       nginx as its Entra-shaped front, the Key Vault stand-in) with
#                       azure/up.sh; 0 skips them (see azure/README.md)
#   KUBE_APISERVER, ETCD, KUBECTL   binaries; default: built/cached by
#                       build-control-plane.sh (see env.sh)
#
# Idempotent: if the control plane in E2E_STATE_DIR is already up and ready it
# only prints the hints again; leftovers of a dead one are cleaned up first.
#
# State dir layout:
#   env                 sourceable: exports KUBECONFIG and the E2E_* variables
#                       below (ports, URLs, paths)
#   kubeconfig          admin kubeconfig (bearer token, CA embedded)
#   pki/ca.crt|ca.key   the CA that signed every cert below (also client CA)
#   pki/apiserver.crt|.key   apiserver serving cert, SAN IP:127.0.0.1, DNS:localhost
#   pki/webhook.crt|.key     spare serving cert for a webhook on 127.0.0.1 /
#                            localhost, signed by the same CA (caBundle = ca.crt)
#   pki/sa.key|sa.pub   service-account token signing key pair (RSA 2048)
#   auth/admin.token    admin bearer token (user "admin", group system:masters)
#   auth/tokens.csv     --token-auth-file
#   ports               ETCD_PORT= ETCD_PEER_PORT= APISERVER_PORT=
#   etcd-data/          etcd data dir
#   logs/etcd.log, logs/kube-apiserver.log
#   pids/etcd.pid, pids/kube-apiserver.pid
#   azure/, pki/{keycloak,entra-proxy,keyvault}.*, logs/ and pids/ of keycloak, nginx,
#   keyvault-standin: the Azure stand-ins (azure/up.sh; E2E_AZURE=0 skips them)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${E2E_STATE_DIR:-/tmp/keywire-e2e}"
TIMEOUT="${E2E_START_TIMEOUT:-120}"
MARKER=".keywire-e2e-state"
AZURE="${E2E_AZURE:-1}"

log() { printf '[e2e up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
tail_log() { # file
  if [[ -f "$1" ]]; then
    log "---- last 40 lines of $1 ----"
    tail -n 40 "$1" >&2 || true
    log "---- end of $1 ----"
  fi
}
# alive PIDFILE: the recorded process exists and is not a zombie
alive() {
  [[ -s "$1" ]] || return 1
  local pid st
  pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null || return 1
  st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]]
}
# curl the apiserver on the loopback, never through a proxy
kcurl() { curl --noproxy '*' -sS --max-time 5 "$@"; }

print_hints() {
  # shellcheck disable=SC1091
  source "$STATE/env"
  cat <<EOF
# keywire e2e control plane is up (kube-apiserver $E2E_APISERVER_URL, pid $(cat "$STATE/pids/kube-apiserver.pid"))
# state dir: $STATE   stop with: $here/down.sh
export KUBECONFIG=$STATE/kubeconfig
# or, for every E2E_* variable as well:
#   source $STATE/env
EOF
}

# --- already running? -------------------------------------------------------
if [[ -f "$STATE/$MARKER" ]]; then
  if alive "$STATE/pids/kube-apiserver.pid" && alive "$STATE/pids/etcd.pid" && [[ -f "$STATE/env" ]] \
     && [[ "$(source "$STATE/env"; kcurl --cacert "$E2E_CA_FILE" \
              -H "Authorization: Bearer $(cat "$E2E_TOKEN_FILE")" "$E2E_APISERVER_URL/readyz" 2>/dev/null)" == ok ]] \
     && { [[ "$AZURE" == 0 ]] || E2E_STATE_DIR="$STATE" "$here/azure/up.sh" status; }; then
    log "already running"
    print_hints
    exit 0
  fi
  log "cleaning up a stale control plane in $STATE"
  E2E_STATE_DIR="$STATE" "$here/down.sh" >&2
elif [[ -e "$STATE" ]] && [[ -n "$(ls -A "$STATE" 2>/dev/null)" ]]; then
  die "$STATE exists, is not empty and was not made by up.sh; set E2E_STATE_DIR or remove it"
fi

# --- binaries ---------------------------------------------------------------
if [[ -z "${KUBE_APISERVER:-}" || -z "${ETCD:-}" || -z "${KUBECTL:-}" ]]; then
  # shellcheck disable=SC1091
  source "$here/env.sh" || die "could not get the control-plane binaries"
fi
for b in "$KUBE_APISERVER" "$ETCD" "$KUBECTL"; do
  [[ -x "$b" ]] || die "not executable: $b"
done
for t in openssl curl base64 setsid; do
  command -v "$t" >/dev/null || die "$t is required"
done

mkdir -p "$STATE"
touch "$STATE/$MARKER"
mkdir -p "$STATE/pki" "$STATE/auth" "$STATE/logs" "$STATE/pids" "$STATE/etcd-data"
chmod 700 "$STATE/pki" "$STATE/auth" "$STATE/etcd-data"

# If anything below fails, stop what was started so nothing is left behind.
started=0
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && $started -eq 1 ]]; then
    log "start-up failed; stopping what was started (state left in $STATE for inspection)"
    E2E_KEEP_STATE=1 E2E_STATE_DIR="$STATE" "$here/down.sh" >&2 || true
  fi
}
trap on_exit EXIT

# --- ports --------------------------------------------------------------------
# Random ports below the kernel's ephemeral range (so outgoing connections
# cannot take them), skipping any port that appears in /proc/net/tcp{,6}.
port_busy() {
  local hex
  hex="$(printf ':%04X' "$1")"
  awk -v h="$hex" 'NR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
picked=()
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ " ${picked[*]:-} " == *" $p "* ]] && continue
    port_busy "$p" && continue
    picked+=("$p")
    echo "$p"
    return 0
  done
  die "could not find a free port"
}
ETCD_PORT="$(free_port)"; picked+=("$ETCD_PORT")
ETCD_PEER_PORT="$(free_port)"; picked+=("$ETCD_PEER_PORT")
APISERVER_PORT="$(free_port)"; picked+=("$APISERVER_PORT")
cat > "$STATE/ports" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
EOF
ISSUER="https://127.0.0.1:$APISERVER_PORT"
API_URL="https://127.0.0.1:$APISERVER_PORT"

# --- PKI, tokens ----------------------------------------------------------------
pki="$STATE/pki"
ossl() { openssl "$@" 2>>"$STATE/logs/openssl.log" >/dev/null || { tail_log "$STATE/logs/openssl.log"; die "openssl $1 failed"; }; }
ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=keywire-e2e-ca" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -addext "subjectKeyIdentifier=hash"
serving_cert() { # name CN
  local name="$1" cn="$2" ext="$pki/$1.ext"
  cat > "$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
  ossl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$pki/$name.key" \
    -out "$pki/$name.csr" -subj "/CN=$cn"
  ossl x509 -req -sha256 -days 365 -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -extfile "$ext" -out "$pki/$name.crt"
  rm -f "$pki/$name.csr" "$ext"
}
serving_cert apiserver kube-apiserver
serving_cert webhook keywire-webhook
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

TOKEN="$(openssl rand -hex 32)"
printf '%s' "$TOKEN" > "$STATE/auth/admin.token"
printf '%s,admin,admin,system:masters\n' "$TOKEN" > "$STATE/auth/tokens.csv"
chmod 600 "$STATE/auth/admin.token" "$STATE/auth/tokens.csv"

# --- kubeconfig + env -----------------------------------------------------------
cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: keywire-e2e
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: keywire-e2e
  context:
    cluster: keywire-e2e
    user: admin
current-context: keywire-e2e
EOF
chmod 600 "$STATE/kubeconfig"

cat > "$STATE/env" <<EOF
# Generated by e2e/up.sh. Source me.
export KUBECONFIG=$STATE/kubeconfig
export E2E_STATE_DIR=$STATE
export E2E_APISERVER_URL=$API_URL
export E2E_APISERVER_PORT=$APISERVER_PORT
export E2E_ETCD_URL=http://127.0.0.1:$ETCD_PORT
export E2E_ISSUER=$ISSUER
export E2E_JWKS_URI=$ISSUER/openid/v1/jwks
export E2E_CA_FILE=$pki/ca.crt
export E2E_CA_KEY_FILE=$pki/ca.key
export E2E_TOKEN_FILE=$STATE/auth/admin.token
export E2E_WEBHOOK_CERT_FILE=$pki/webhook.crt
export E2E_WEBHOOK_KEY_FILE=$pki/webhook.key
export E2E_SA_SIGNING_KEY_FILE=$pki/sa.key
export E2E_SA_PUBLIC_KEY_FILE=$pki/sa.pub
export KUBECTL=$KUBECTL
EOF

# --- start a daemon in its own session, with its pid recorded ------------------
start() { # name binary args...
  local name="$1"; shift
  : > "$STATE/logs/$name.log"
  # The inner shell records its own pid and then execs the binary, so the pid
  # file holds the daemon's pid whether or not setsid had to fork.
  nohup setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE/pids/$name.pid" "$@" \
    >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  started=1
  local i
  for i in $(seq 1 50); do [[ -s "$STATE/pids/$name.pid" ]] && return 0; sleep 0.1; done
  die "$name did not start"
}

wait_for() { # name check-command...
  local name="$1"; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$STATE/pids/$name.pid"; then
      tail_log "$STATE/logs/$name.log"
      die "$name exited during start-up (log: $STATE/logs/$name.log)"
    fi
    if (( SECONDS >= deadline )); then
      tail_log "$STATE/logs/$name.log"
      die "$name not ready after ${TIMEOUT}s (log: $STATE/logs/$name.log)"
    fi
    sleep 0.5
  done
}

# Keycloak takes 20-60 s to start: start it now and wait for it at the end.
if [[ "$AZURE" != 0 ]]; then
  started=1
  t_az=$SECONDS
  E2E_STATE_DIR="$STATE" "$here/azure/up.sh" start || die "azure/up.sh start failed"
  log "Azure stand-ins: Keycloak starting ($((SECONDS - t_az))s)"
fi

t_cp=$SECONDS
log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$ETCD" \
  --name=keywire-e2e \
  --data-dir="$STATE/etcd-data" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="keywire-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state=new \
  --unsafe-no-fsync=true \
  --log-level=warn
etcd_healthy() { [[ "$(kcurl "http://127.0.0.1:$ETCD_PORT/health")" == *'"health":"true"'* ]]; }
wait_for etcd etcd_healthy

log "starting kube-apiserver on $API_URL"
start kube-apiserver "$KUBE_APISERVER" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --cert-dir="$STATE/pki/apiserver-generated" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --token-auth-file="$STATE/auth/tokens.csv" \
  --anonymous-auth=true \
  --authorization-mode=Node,RBAC \
  --service-account-issuer="$ISSUER" \
  --service-account-jwks-uri="$ISSUER/openid/v1/jwks" \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --api-audiences="$ISSUER" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --profiling=false
apiserver_ready() {
  [[ "$(kcurl --cacert "$pki/ca.crt" -H "Authorization: Bearer $TOKEN" "$API_URL/readyz")" == ok ]]
}
wait_for kube-apiserver apiserver_ready

# --- post-start setup -------------------------------------------------------------
export KUBECONFIG="$STATE/kubeconfig"
kc() { "$KUBECTL" --kubeconfig "$STATE/kubeconfig" --request-timeout=20s "$@"; }
# Let anyone (as on AKS/EKS/GKE) read /.well-known/openid-configuration and
# /openid/v1/jwks; by default only service accounts may.
kc create clusterrolebinding keywire-e2e:service-account-issuer-discovery \
  --clusterrole=system:service-account-issuer-discovery \
  --group=system:unauthenticated --group=system:authenticated \
  --dry-run=client -o yaml | kc apply -f - >&2 \
  || { tail_log "$STATE/logs/kube-apiserver.log"; die "could not create the issuer-discovery ClusterRoleBinding"; }
kc get ns >&2 || { tail_log "$STATE/logs/kube-apiserver.log"; die "kubectl get ns failed"; }
log "control plane ready ($((SECONDS - t_cp))s for etcd + kube-apiserver)"

if [[ "$AZURE" != 0 ]]; then
  t_az=$SECONDS
  E2E_STATE_DIR="$STATE" "$here/azure/up.sh" finish || die "azure/up.sh finish failed"
  log "Azure stand-ins ready ($((SECONDS - t_az))s after the control plane)"
fi

log "ready in ${SECONDS}s"
print_hints
