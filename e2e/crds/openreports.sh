#!/usr/bin/env bash
# openreports.sh — prints the path of OpenReports' Report CRD (openreports.io/v1alpha1), from the
# Go module pinned in e2e/crds/go.mod (fetched once from the Go module proxy into Go's module
# cache). The e2e suite applies it so `keywire controller` writes its policy Reports.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-mod=mod
dir="$(cd "$here" && go mod download -json github.com/openreports/reports-api \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
crd="$dir/config/crd/openreports.io_reports.yaml"
[[ -f "$crd" ]] || { echo "openreports.sh: no $crd" >&2; exit 1; }
echo "$crd"
