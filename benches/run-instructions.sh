#!/usr/bin/env bash
# Instructions per admission review, counted by valgrind's callgrind: stable from run to run on
# a shared machine, where wall-clock time is not (docs/benchmarks.md).
#   benches/run-instructions.sh [CASE...]     CASE: plain | <containers> (default: plain 1 20 100 10000 30000)
# Each case runs the benchmark program twice, with 0 and with N reviews in one process, and
# reports (I_N - I_0) / N, so start-up and fixture building cancel out.
# Builds with the release profile, the one that ships (PROFILE=profiling for a quicker rebuild
# with line tables, to read the profile with callgrind_annotate; its counts differ a little).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v valgrind >/dev/null || { echo "run-instructions.sh: valgrind is not installed" >&2; exit 1; }
cases=("$@")
[[ ${#cases[@]} -gt 0 ]] || cases=(plain 1 20 100 10000 30000)

profile="${PROFILE:-release}"
bin="$(cargo build --profile "$profile" --features fixtures --bench instructions --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$bin" ]] || { echo "run-instructions.sh: build failed (cargo build --profile $profile --features fixtures --bench instructions)" >&2; exit 1; }

count() { # args... -> instructions
  local out
  out="$(mktemp)"
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>"$out" >/dev/null
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out"
  rm -f "$out"
}

printf '%-22s %10s %8s %16s %14s\n' case "body bytes" reviews "instr/review" "instr/container"
for c in "${cases[@]}"; do
  if [[ "$c" == plain ]]; then
    args=(plain); n=2000
  else
    args=(review "$c"); n=$(( c >= 10000 ? 3 : (c >= 100 ? 50 : 1000) ))
  fi
  i0="$(count "${args[@]}" 0)"
  i1="$(count "${args[@]}" "$n")"
  bytes="$("$bin" "${args[@]}" 0 2>&1 | sed -n 's/^\([0-9]*\) bytes.*/\1/p')"
  per=$(( (i1 - i0) / n ))
  percont="-"
  [[ "$c" == plain ]] || percont=$(( per / c ))
  printf '%-22s %10s %8s %16s %14s\n' "review $c" "$bytes" "$n" "$per" "$percont"
done
