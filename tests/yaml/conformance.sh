#!/usr/bin/env bash
# YAML conformance of `keywire mutate` against kubectl's reader (tests/yaml/README.md).
#   tests/yaml/conformance.sh [--only NAME]...
# KEYWIRE: the keywire binary (default ${CARGO_TARGET_DIR:-target}/debug/keywire). KUBECTL_READER: a prebuilt reader
# (default: built and cached by tests/yaml/reader.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
reader="${KUBECTL_READER:-$("$here/reader.sh" | tail -n1)}"
if [[ -n "${KEYWIRE:-}" ]]; then
  keywire="$(realpath -m "$KEYWIRE")"
else
  keywire="${CARGO_TARGET_DIR:-$root/target}/debug/keywire"
fi
exec python3 "$here/conformance.py" --reader "$reader" --keywire "$keywire" \
  --corpus "$root/tests/data/yaml" "$@"
