#!/usr/bin/env bash
# How a run's cost grows with the number of targets (the "Scale: 100,000 targets" section of
# docs/benchmarks.md): N pinned versions (`https://civitai.com/models/M?modelVersionId=V`) against
# the embedded fake Civitai serving N uniform 1 KiB models, three runs on one output folder:
#
#   full     the whole list, --rate-limit 5000 --rate-burst 200 (the limiter is not what is measured)
#   present  a rerun with every file present: no request at all for a trusted pinned version
#   deleted  a rerun after 1% of the files were deleted, at the default rate (5 requests/s): how
#            soon the first download starts when 99% of the run is done
#
# Each run is timed by /usr/bin/time -v (wall time, peak RSS) and every stderr line is stamped
# with the seconds since the run started, so the first "downloaded" line gives the time to the
# first download. The state file's size is printed after each run. Opt-in (not called by .ci/run):
# a 100,000-target run takes about ten minutes and 400 MB of small files.
#
#   bash benches/scale.sh                 # 100,000 targets
#   bash benches/scale.sh 10000           # 10,000 targets
#   JSON=1 bash benches/scale.sh 10000    # with --json (the report of every file on stdout)
#   RUNS="full present" bash benches/scale.sh 10000
#   BIN=/path/to/civitai-dl bash benches/scale.sh   # another build, e.g. the one before a change
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
RUNS=${RUNS:-"full present deleted"}
JSON=${JSON:-0}
command -v perl >/dev/null || { echo "perl is needed to timestamp the stderr lines" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/civitai-dl
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/civitai-dl-scale-bench.XXXXXX")
SERVER=
trap 'if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

"$BIN" fake-server --uniform "$N" --file-size 1024 >"$WORK/server.txt" 2>&1 &
SERVER=$!
for _ in $(seq 1 3000); do grep -q '^fake Civitai API' "$WORK/server.txt" 2>/dev/null && break; sleep 0.1; done
API=$(awk '/^fake Civitai API/ {print $NF}' "$WORK/server.txt")
KEY=$(awk '/^valid API key/ {print $NF}' "$WORK/server.txt")
[ -n "$API" ] || { cat "$WORK/server.txt"; echo "fake server did not start" >&2; exit 1; }

# Uniform model i has id 1000+i and its one version 2000+i (Catalog::uniform).
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "https://civitai.com/models/%d?modelVersionId=%d\n", 1000 + i, 2000 + i }' >"$WORK/list.txt"
OUT=$WORK/out
STATE=$OUT/.civitai-dl/state.json

# run NAME ARGS...: one download of the list with ARGS, measured
run() {
  local name=$1; shift
  local args=(--base-url "$API" --api-key "$KEY" download --from-file "$WORK/list.txt" -o "$OUT" --no-metadata "$@")
  local stdout=/dev/null
  if [ "$JSON" = 1 ]; then args=(--json "${args[@]}"); stdout=$WORK/$name.json; fi
  T0=$(date +%s.%N) && export T0
  set +e
  { /usr/bin/time -v -o "$WORK/$name.time" "$BIN" "${args[@]}" 2>&1 >"$stdout"; } |
    perl -MTime::HiRes=time -ne 'BEGIN { $| = 1 } printf "%8.3f %s", time - $ENV{T0}, $_' >"$WORK/$name.err"
  local status=${PIPESTATUS[0]}
  set -e
  local wall rss first state json=""
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$WORK/$name.time")
  first=$(awk '/ downloaded / {print $1 " s"; exit}' "$WORK/$name.err")
  state=$(du -cb "$STATE" "$STATE.journal" 2>/dev/null | awk 'END {printf "%.1f MB", $1 / 1e6}')
  [ "$JSON" = 1 ] && json=", --json $(du -b "$stdout" | awk '{printf "%.1f MB", $1 / 1e6}')"
  printf '%-8s exit %s, wall %s, peak RSS %s MiB, first download %s, state %s%s\n' \
    "$name" "$status" "$wall" "$rss" "${first:-none}" "$state" "$json"
  tail -n 1 "$WORK/$name.err" | sed 's/^/         last line: /'
}

echo "$N pinned versions, fake at $API, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for name in $RUNS; do
  case $name in
    full) run full --rate-limit 5000 --rate-burst 200 ;;
    present) run present ;;
    deleted)
      awk -v n="$N" -v out="$OUT" 'BEGIN { for (i = 0; i < n; i += 100) print out "/uniform_lora_" i ".safetensors" }' |
        xargs rm -f
      run deleted ;;
    *) echo "unknown run $name (full, present, deleted)" >&2; exit 1 ;;
  esac
done
