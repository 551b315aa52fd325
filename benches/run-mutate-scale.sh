#!/usr/bin/env bash
# Measures `keywire mutate` at scale (issue 14 #9): wall time, CPU seconds (user + sys) and peak
# RSS of a release binary on
#   1. 10,000 opted-in Deployments (inline Key Vault config as in docs/annotations.md), and
#   2. a ~50 MB input: the same kind of Deployments plus ConfigMaps, about 50 MB of YAML,
# each run with `-o yaml` and `-o json` and stdout to a file. Not part of .ci/run.
#
#   bash benches/run-mutate-scale.sh              # builds release first
#   KEYWIRE_BIN=target/release/keywire bash benches/run-mutate-scale.sh
#   RUNS=5 ...                                    # repetitions per case (default 3; the median is reported)
#   JOBS="1 default" ...                          # thread counts (-j) to run each case with (default:
#                                                 # one thread, then keywire's default, the CPUs available)
#
# Results: BENCH lines on stdout and in $OUT_DIR/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-target/keywire-mutate-scale}"
RUNS="${RUNS:-3}"
mkdir -p "$OUT_DIR"
if [[ -z "${KEYWIRE_BIN:-}" ]]; then
  cargo build --locked --release --bin keywire
  KEYWIRE_BIN=target/release/keywire
fi
[[ -x /usr/bin/time ]] || { echo "needs GNU time (/usr/bin/time -v)" >&2; exit 1; }

python3 - "$OUT_DIR" benches <<'PY'
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
from mutate_manifests import STATE, config_map, deployment

out = sys.argv[1]

open(f"{out}/state.yaml", "w").write(STATE)

with open(f"{out}/deployments-10k.yaml", "w") as f:
    f.write("---\n".join(deployment(i) for i in range(10_000)))

with open(f"{out}/input-50mb.yaml", "w") as f:
    i, size = 0, 0
    while size < 50_000_000:
        doc = deployment(i) + "---\n" + config_map(i)
        f.write(("---\n" if i else "") + doc)
        size += len(doc) + 4
        i += 1
PY

# One run: "wall_s cpu_s max_rss_kb" from GNU time.
measure() {
  local input="$1" format="$2" jobs="$3" log="$OUT_DIR/time.log" threads=()
  [[ "$jobs" == default ]] || threads=(-j "$jobs")
  /usr/bin/time -v "$KEYWIRE_BIN" mutate "${threads[@]}" -f "$input" --cluster-state "$OUT_DIR/state.yaml" \
    -n shop -o "$format" > "$OUT_DIR/out.$format" 2> "$log" || {
    echo "keywire mutate failed on $input:" >&2; tail -5 "$log" >&2; exit 1; }
  python3 - "$log" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def field(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
wall = 0.0
for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
    wall = wall * 60 + float(part)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
print(f"{wall:.2f} {cpu:.2f} {field('Maximum resident set size (kbytes)')}")
PY
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "binary: $KEYWIRE_BIN"
} > "$OUT_DIR/results.txt"
for input in deployments-10k input-50mb; do
  file="$OUT_DIR/$input.yaml"
  bytes=$(stat -c %s "$file")
  docs=$(grep -c '^kind: ' "$file")
  for jobs in ${JOBS:-1 default}; do
    for format in yaml json; do
      runs=()
      for _ in $(seq "$RUNS"); do runs+=("$(measure "$file" "$format" "$jobs")"); done
      # The run with the median wall time.
      median="$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")"
      read -r wall cpu rss <<<"$median"
      out_bytes=$(stat -c %s "$OUT_DIR/out.$format")
      echo "BENCH mutate input=$input bytes=$bytes objects=$docs threads=$jobs output=$format out_bytes=$out_bytes wall_s=$wall cpu_s=$cpu max_rss_mb=$(( rss / 1024 )) runs=$RUNS" \
        | tee -a "$OUT_DIR/results.txt"
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT_DIR/results.txt"
echo "results in $OUT_DIR/results.txt"
