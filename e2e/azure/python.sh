#!/usr/bin/env bash
# python.sh — the Python venv for keywire's Azure e2e stand-ins and the SDK proof.
#
# Usage:   PY="$(e2e/azure/python.sh | tail -n 1)"
#
# Creates (once) a venv with the pinned e2e/azure/requirements.txt under
#   ${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/python/py<major.minor>-<sha256(requirements.txt)[:16]>/
# and prints its python as the LAST stdout line (progress goes to stderr). A changed
# requirements.txt gives a new directory. Safe to run concurrently (flock); a venv counts
# only once its .complete marker exists (an interrupted build is redone from scratch).
# Environment: PYTHON (the interpreter to build the venv from; default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
log() { printf '[azure python] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

base_py="${PYTHON:-python3}"
command -v "$base_py" >/dev/null || die "$base_py not found"
pyver="$("$base_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
hash="$(sha256sum "$req" | cut -c1-16)"
cache_root="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}"
dir="$cache_root/python/py$pyver-$hash"
py="$dir/bin/python"

if [[ -x "$py" && -f "$dir/.complete" ]]; then
  echo "$py"; exit 0
fi

mkdir -p "$cache_root/python"
exec 9>"$cache_root/python/.py$pyver-$hash.lock"
if ! flock -n 9; then
  log "another run is building $dir; waiting..."
  flock 9
fi
if [[ -x "$py" && -f "$dir/.complete" ]]; then
  echo "$py"; exit 0
fi

t0=$SECONDS
rm -rf "$dir"   # venvs embed their own path, so build in place; .complete marks it done
log "creating venv $dir (python $pyver)"
"$base_py" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2 \
  || { rm -rf "$dir"; die "pip install -r $req failed"; }
"$dir/bin/python" -c 'import azure.identity, azure.keyvault.secrets, azure.keyvault.certificates, azure.keyvault.keys, jwt, cryptography, pytest, requests' \
  || { rm -rf "$dir"; die "venv import check failed"; }
touch "$dir/.complete"
log "venv ready in $((SECONDS - t0))s"
echo "$py"
