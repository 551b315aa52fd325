#!/usr/bin/env bash
# run.sh — mutational fuzzing of the parsers and the decision path (see docs/fuzzing.md).
#
#   fuzz/run.sh                       # every target, 10 million executions each
#   fuzz/run.sh admission 1000000     # one target, N executions
#   FUZZ_SEED=7 fuzz/run.sh           # another seed (default 1: a run is reproducible)
#
# Each execution has a time limit (FUZZ_MAX_EXEC_MS, default 1000 ms) and the process an
# address-space limit (FUZZ_MAX_AS_MB, default 2048 MiB). A panic or a breach exits non-zero
# and leaves the input in fuzz/crashes/. `.ci/run` runs a few seconds of it as a smoke test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets=(admission annotations policy manifests)
if [[ $# -ge 1 ]]; then targets=("$1"); fi
execs="${2:-10000000}"
seed="${FUZZ_SEED:-1}"
cargo build --release --features fixtures --bin keywire-fuzz >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/keywire-fuzz"
for t in "${targets[@]}"; do
  prlimit --as=$(( ${FUZZ_MAX_AS_MB:-2048} * 1024 * 1024 )) -- \
    "$bin" "$t" --execs "$execs" --seed "$seed" --max-exec-ms "${FUZZ_MAX_EXEC_MS:-1000}"
done
