#!/usr/bin/env bash
# validate.sh — `keywire mutate --report sarif=FILE` against the official SARIF 2.1.0 JSON schema.
#
#   tests/sarif/validate.sh            # KEYWIRE=path/to/keywire to use another binary
#
# The schema is OASIS's sarif-schema-2.1.0.json as the Go module github.com/owenrumney/go-sarif/v3
# ships it (pinned in validator/go.mod, fetched from the Go module proxy); the validator is
# gojsonschema (draft-04, the schema's own dialect). Both are built/extracted once and cached under
# ${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools/sarif-validator-<hash>/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { printf '[sarif] %s\n' "$*" >&2; }

src="$here/validator"
hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
cache="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/tools/sarif-validator-$hash"
if [[ ! -x "$cache/sarif-validator" || ! -s "$cache/sarif-schema-2.1.0.json" ]]; then
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  flock 9
  if [[ ! -x "$cache/sarif-validator" || ! -s "$cache/sarif-schema-2.1.0.json" ]]; then
    command -v go >/dev/null || { log "Go is needed once to build the validator"; exit 1; }
    log "building the validator and extracting the schema into $cache"
    export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS=-mod=mod
    (cd "$src" && go build -trimpath -o "$cache/sarif-validator.tmp" .)
    dir="$(cd "$src" && go list -m -f '{{.Dir}}' github.com/owenrumney/go-sarif/v3)"
    # The schema is the raw string literal `const schema = \`...\`` in the module's schema.go.
    python3 - "$dir/pkg/report/v210/sarif/schema.go" "$cache/sarif-schema-2.1.0.json.tmp" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
start = text.index("const schema = `") + len("const schema = `")
schema = text[start:text.index("`", start)]
parsed = json.loads(schema)
assert parsed["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0"), parsed["title"]
open(sys.argv[2], "w").write(schema)
PY
    mv "$cache/sarif-schema-2.1.0.json.tmp" "$cache/sarif-schema-2.1.0.json"
    mv "$cache/sarif-validator.tmp" "$cache/sarif-validator"
  fi
  exec 9>&-
fi

keywire="${KEYWIRE:-$root/target/debug/keywire}"
if [[ ! -x "$keywire" ]]; then
  log "building keywire"
  (cd "$root" && cargo build --locked --quiet --bin keywire)
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Reports with every kind of result (Enforce, Warn and Audit violations, a contract denial) and
# one with no result at all. Exit codes 0 and 1 are both reports; 2 would be bad input.
report() { # name mutate-args...
  local name="$1"; shift
  local rc=0
  "$keywire" mutate "$@" --report "sarif=$tmp/$name.sarif" >/dev/null 2>"$tmp/$name.err" || rc=$?
  if [[ $rc -gt 1 ]]; then
    log "keywire mutate exited $rc for $name:"; cat "$tmp/$name.err" >&2; exit 1
  fi
}
report policies -f "$root/tests/data/manifests/prod-workloads.yaml" \
  --policy "$root/tests/data/policies/prod-baseline.yaml" \
  --policy "$root/tests/data/policies/audit-inline.yaml"
report denied -f "$root/tests/data/manifests/invalid-token-expiration.yaml"
report clean -f "$root/examples/workload-identity-pod.yaml"
python3 - "$tmp" <<'PY'
import json, sys, os
d = sys.argv[1]
levels = {r["level"] for f in ("policies", "denied")
          for r in json.load(open(os.path.join(d, f + ".sarif")))["runs"][0]["results"]}
assert {"error", "warning"} <= levels, levels
assert json.load(open(os.path.join(d, "clean.sarif")))["runs"][0]["results"] == []
PY
"$cache/sarif-validator" "$cache/sarif-schema-2.1.0.json" "$tmp"/*.sarif
# The check can fail: a level outside the schema's enum is refused.
sed 's/"level": "error"/"level": "severe"/' "$tmp/policies.sarif" > "$tmp/broken.json"
if "$cache/sarif-validator" "$cache/sarif-schema-2.1.0.json" "$tmp/broken.json" 2>/dev/null; then
  log "the validator accepted an invalid level"; exit 1
fi
rm -f "$tmp/broken.json"
echo "sarif: $(ls "$tmp"/*.sarif | wc -l) reports valid against SARIF 2.1.0"
