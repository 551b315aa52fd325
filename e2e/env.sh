# env.sh — source me:  source e2e/env.sh
#
# Exports the paths of the control-plane binaries used by keywire's e2e tests,
# building them first if the cache is cold (see build-control-plane.sh):
#   KEYWIRE_CP_BIN   the cache bin dir (.../control-plane/k8s-<v>-etcd-<v>/bin)
#   KUBE_APISERVER   $KEYWIRE_CP_BIN/kube-apiserver
#   ETCD             $KEYWIRE_CP_BIN/etcd
#   KUBECTL          $KEYWIRE_CP_BIN/kubectl (same Kubernetes release); if it
#                    was not built (KEYWIRE_BUILD_KUBECTL=0), the kubectl on PATH
# Values already set in the environment win, so a caller can point any of
# KUBE_APISERVER / ETCD / KUBECTL at its own binary.
# Not `set -e` safe to leave on: this file is sourced, so it never exits.

_keywire_e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if _keywire_bin="$("$_keywire_e2e_dir/build-control-plane.sh" | tail -n 1)" && [[ -d "$_keywire_bin" ]]; then
  export KEYWIRE_CP_BIN="$_keywire_bin"
  export KUBE_APISERVER="${KUBE_APISERVER:-$KEYWIRE_CP_BIN/kube-apiserver}"
  export ETCD="${ETCD:-$KEYWIRE_CP_BIN/etcd}"
  if [[ -z "${KUBECTL:-}" ]]; then
    if [[ -x "$KEYWIRE_CP_BIN/kubectl" ]]; then
      export KUBECTL="$KEYWIRE_CP_BIN/kubectl"
    elif command -v kubectl >/dev/null 2>&1; then
      KUBECTL="$(command -v kubectl)"; export KUBECTL
    else
      echo "env.sh: no kubectl (set KEYWIRE_BUILD_KUBECTL=1 or KUBECTL)" >&2
    fi
  fi
else
  echo "env.sh: build-control-plane.sh failed" >&2
  unset _keywire_e2e_dir _keywire_bin
  return 1 2>/dev/null || exit 1
fi
unset _keywire_e2e_dir _keywire_bin
