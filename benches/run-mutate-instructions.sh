#!/usr/bin/env bash
# Instructions per object of `keywire mutate`, counted by valgrind's callgrind: stable from run
# to run on a shared machine, where wall-clock time is not (docs/benchmarks.md).
#   benches/run-mutate-instructions.sh            # builds release first
#   KEYWIRE_BIN=target/release/keywire benches/run-mutate-instructions.sh
# Each case runs `keywire mutate -j 1 -o yaml` on 1 and on 201 objects of one kind and reports
# (I_201 - I_1) / 200, so start-up cancels out. Cases: an opted-in Pod with 1 and with 20
# containers (issue 15's targets: 0.2 M and 1 M), and the opted-in Deployment of
# benches/run-mutate-scale.sh. With -j 1 all the work is on one thread, and the count is what
# every thread count pays in total.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "run-mutate-instructions.sh: valgrind is not installed" >&2; exit 1; }
if [[ -z "${KEYWIRE_BIN:-}" ]]; then
  cargo build --locked --release --bin keywire
  KEYWIRE_BIN=target/release/keywire
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$work" benches <<'PY'
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
from mutate_manifests import STATE, deployment, pod

out = sys.argv[1]
open(f"{out}/state.yaml", "w").write(STATE)

cases = {
    "pod-1c": lambda i: pod(i, 1),
    "pod-20c": lambda i: pod(i, 20),
    "deployment": deployment,
}
for name, make in cases.items():
    for n in (1, 201):
        with open(f"{out}/{name}-{n}.yaml", "w") as f:
            f.write("---\n".join(make(i) for i in range(n)))
PY

count() { # file -> instructions
  local log="$work/callgrind.log"
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$KEYWIRE_BIN" mutate -j 1 -o yaml \
    -f "$1" --cluster-state "$work/state.yaml" -n shop 2>"$log" >"$work/out.yaml" || {
    echo "keywire mutate failed on $1:" >&2; grep -v '^==' "$log" >&2; exit 1; }
  grep -q 'keywire.dev/status: injected' "$work/out.yaml" || { echo "$1: nothing was injected" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log"
}

printf '%-12s %16s\n' case "instr/object"
for name in pod-1c pod-20c deployment; do
  i1="$(count "$work/$name-1.yaml")"
  i201="$(count "$work/$name-201.yaml")"
  per=$(( (i201 - i1) / 200 ))
  printf '%-12s %16s\n' "$name" "$per"
  echo "BENCH mutate-instructions case=$name per_object=$per" >&2
done
