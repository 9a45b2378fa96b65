#!/usr/bin/env bash
# civitai-dl beside the tools a user would pick instead (curl, aria2c), in the same run, against
# the same embedded fake Civitai on loopback, plus the disk's sustained fdatasync write speed
# (the physical limit of a verified, durable download).
#
# Workloads (the rows of the performance issue):
#   one    one SIZE-byte file, storage capped at BW bytes/s per connection:
#          curl (1 connection), aria2c -x4 -s4, civitai-dl sequential, civitai-dl --segments 4
#   far    the one-file row behind a storage host FAR_MS away (each request waits that long for
#          its first byte, as from a distant CDN): aria2c -x4 -s4, civitai-dl --segments 4
#   four   four SIZE-byte files, same cap: curl one after another, aria2c -j4 -x4 -s4,
#          civitai-dl 4 downloads x 4 segments
#   raw    one RAW_SIZE-byte file, no cap: curl -o, curl -o + sync, curl with the same
#          guarantees as civitai-dl (piped through tee and a SHA-256, then sync), civitai-dl
#   small  100 models of 64 KiB, 100 ms per API answer: curl 8 at a time, civitai-dl at the
#          default rate limit, and experimental with --rate-limit 100 and 8 at a time
# The segmented and raw rows also run civitai-dl with --rate-limit 50: at the default 5 requests/s its
# metadata, key check and resolves wait for the limiter (about 0.2 s each), which aria2c, handed
# resolved URLs, never does; the second row shows the transfer itself beside aria2c.
# Each is run ROUNDS times, alternating tools; the median time is printed with our speed as a
# ratio to each peer. A peer's time includes resolving the signed URLs (one request per file),
# as civitai-dl's includes its metadata and resolve requests. aria2c rows are skipped when it is not installed (apt-get install aria2).
# curl and aria2c verify nothing and do not fsync; civitai-dl checks SHA-256, fsyncs and renames.
#
#   bash benches/peers.sh                                  # 200 MiB files at 25 MB/s, 3 rounds
#   SIZE=52428800 BW=10000000 ROUNDS=1 bash benches/peers.sh
#   WORKLOADS="raw" RAW_SIZE=1073741824 bash benches/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-209715200}
BW=${BW:-25000000}
RAW_SIZE=${RAW_SIZE:-1073741824}
ROUNDS=${ROUNDS:-3}
FAR_MS=${FAR_MS:-100}
WORKLOADS=${WORKLOADS:-"one far four raw small"}
command -v curl >/dev/null || { echo "curl is needed for the comparison" >&2; exit 1; }
HAVE_ARIA=$(command -v aria2c >/dev/null && echo 1 || echo 0)
# The fastest SHA-256 at hand for the verified curl row: OpenSSL's uses the CPU's SHA
# instructions, as civitai-dl's does; coreutils' does not.
SHA256=$(command -v openssl >/dev/null && echo "openssl dgst -sha256" || echo sha256sum)

cargo build --release --quiet
BIN=$PWD/target/release/civitai-dl
WORK=$(mktemp -d)
SERVER=
trap 'stop_server; rm -rf "$WORK"' EXIT

stop_server() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  SERVER=
}

# start_server N FILE_SIZE [BANDWIDTH] [API_LATENCY_MS] [STORAGE_LATENCY_MS]: sets API and KEY
start_server() {
  stop_server
  local args=(fake-server --uniform "$1" --file-size "$2")
  [ -n "${3:-}" ] && args+=(--bandwidth "$3")
  [ -n "${4:-}" ] && args+=(--api-latency-ms "$4")
  [ -n "${5:-}" ] && args+=(--storage-latency-ms "$5")
  "$BIN" "${args[@]}" >"$WORK/server.txt" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 1200); do grep -q '^fake Civitai API' "$WORK/server.txt" 2>/dev/null && break; sleep 0.1; done
  API=$(awk '/^fake Civitai API/ {print $NF}' "$WORK/server.txt")
  KEY=$(awk '/^valid API key/ {print $NF}' "$WORK/server.txt")
  export API KEY
  [ -n "$API" ] || { cat "$WORK/server.txt"; echo "fake server did not start" >&2; exit 1; }
}

# signed_url N: the storage URL of uniform model N's file (0-based), resolved like a peer would
signed_url() {
  curl -s -o /dev/null -w '%{redirect_url}' -H "Authorization: Bearer $KEY" \
    "$API/api/download/models/$((2000 + $1))?fileId=$((3000 + $1))"
}
export -f signed_url

# peer TOOL ARGS... -- N...: resolve the files' signed URLs (as a user of the peer must, so its
# time covers the same Civitai request civitai-dl makes) and run TOOL with them appended
peer() {
  local tool=() urls=()
  while [ "$1" != -- ]; do tool+=("$1"); shift; done; shift
  for n in "$@"; do urls+=("$(signed_url "$n")"); done
  "${tool[@]}" "${urls[@]}"
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# timed NAME CMD...: appends the command's wall time to $WORK/NAME
timed() { local name=$1; shift; rm -rf "$WORK/dl"; mkdir -p "$WORK/dl"; local t0; t0=$(now)
  "$@" >/dev/null 2>&1 || { echo "$name failed" >&2; exit 1; }
  echo "$(now) $t0" | awk '{printf "%.3f\n", $1-$2}' >>"$WORK/$name"; }
ours() { "$BIN" --base-url "$API" --api-key "$KEY" --no-progress -q download --no-metadata -o "$WORK/dl" "$@"; }
EXP=(--enable-experimental-performance)

row() { # row LABEL NAME BYTES: median time and MB/s
  local t; t=$(median <"$WORK/$2")
  printf '  %-44s %8.2f s %9.1f MB/s\n' "$1" "$t" "$(echo "$3 $t" | awk '{print $1/$2/1e6}')"
  echo "$t" >"$WORK/$2.median"
}
ratio() { # ratio OURS PEER: our speed over the peer's (time of peer / our time)
  [ -s "$WORK/$2.median" ] || return 0
  printf '  civitai-dl (%s) / %s: %.2fx\n' "$1" "$2" "$(paste "$WORK/$2.median" "$WORK/$1.median" | awk '{print $1/$2}')"
}

echo "civitai-dl against its peers; $ROUNDS rounds each, medians; $(nproc) cores"
dd_speed=$(dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=512 conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
rm -f "$WORK/dd.bin"
echo "disk: 512 MiB written with fdatasync: $dd_speed (the limit of a durable download)"

for workload in $WORKLOADS; do
  case $workload in
  one)
    start_server 1 "$SIZE" "$BW"
    for _ in $(seq 1 "$ROUNDS"); do
      timed curl1 peer curl -s -o "$WORK/dl/f" -- 0
      if [ "$HAVE_ARIA" = 1 ]; then timed aria2c-x4 peer aria2c -q -x4 -s4 -d "$WORK/dl" -o f -- 0; fi
      timed seq ours 1000
      timed seg4 ours 1000 "${EXP[@]}" --segments 4
      timed seg4r ours 1000 "${EXP[@]}" --segments 4 --rate-limit 50
    done
    echo; echo "one file of $((SIZE / 1048576)) MiB, storage capped at $BW B/s per connection"
    row "curl (1 connection)" curl1 "$SIZE"
    if [ "$HAVE_ARIA" = 1 ]; then row "aria2c -x4 -s4" aria2c-x4 "$SIZE"; fi
    row "civitai-dl (sequential)" seq "$SIZE"
    row "civitai-dl --segments 4 (experimental)" seg4 "$SIZE"
    row "  the same with --rate-limit 50" seg4r "$SIZE"
    ratio seg4 aria2c-x4; ratio seg4r aria2c-x4; ratio seg4 seq
    ;;
  far)
    start_server 1 "$SIZE" "$BW" "" "$FAR_MS"
    for _ in $(seq 1 "$ROUNDS"); do
      if [ "$HAVE_ARIA" = 1 ]; then timed far-aria2c peer aria2c -q -x4 -s4 -d "$WORK/dl" -o f -- 0; fi
      timed far-seg4 ours 1000 "${EXP[@]}" --segments 4
      timed far-seg4r ours 1000 "${EXP[@]}" --segments 4 --rate-limit 50
    done
    echo; echo "one file of $((SIZE / 1048576)) MiB, same cap, storage answers after $FAR_MS ms"
    if [ "$HAVE_ARIA" = 1 ]; then row "aria2c -x4 -s4" far-aria2c "$SIZE"; fi
    row "civitai-dl --segments 4 (experimental)" far-seg4 "$SIZE"
    row "  the same with --rate-limit 50" far-seg4r "$SIZE"
    ratio far-seg4 far-aria2c; ratio far-seg4r far-aria2c
    ;;
  four)
    start_server 4 "$SIZE" "$BW"
    for _ in $(seq 1 "$ROUNDS"); do
      timed curl4 bash -c 'for n in 0 1 2 3; do curl -s -o "'"$WORK"'/dl/$n" "$(signed_url $n)"; done'
      if [ "$HAVE_ARIA" = 1 ]; then
        timed aria2c-j4 bash -c 'for n in 0 1 2 3; do signed_url $n; echo; done >"'"$WORK"'/urls.txt" &&
          aria2c -q -j4 -x4 -s4 -d "'"$WORK"'/dl" -i "'"$WORK"'/urls.txt"'
      fi
      timed exp4 ours 1000 1001 1002 1003 "${EXP[@]}" --max-concurrent-downloads 4 --segments 4
      timed exp4r ours 1000 1001 1002 1003 "${EXP[@]}" --max-concurrent-downloads 4 --segments 4 --rate-limit 50
    done
    echo; echo "four files of $((SIZE / 1048576)) MiB each, same cap"
    row "curl, one after another" curl4 $((4 * SIZE))
    if [ "$HAVE_ARIA" = 1 ]; then row "aria2c -j4 -x4 -s4 (16 connections)" aria2c-j4 $((4 * SIZE)); fi
    row "civitai-dl 4 downloads x 4 segments" exp4 $((4 * SIZE))
    row "  the same with --rate-limit 50" exp4r $((4 * SIZE))
    ratio exp4 aria2c-j4; ratio exp4r aria2c-j4; ratio exp4 curl4
    ;;
  raw)
    start_server 1 "$RAW_SIZE"
    for _ in $(seq 1 "$ROUNDS"); do
      timed curlraw peer curl -s -o "$WORK/dl/f" -- 0
      timed curlsync bash -c 'curl -s -o "$1" "$(signed_url 0)" && sync "$1"' _ "$WORK/dl/f"
      # shellcheck disable=SC2016
      timed curlverify bash -c 'curl -s "$(signed_url 0)" | tee "$1" | $2 >/dev/null && sync "$1"' _ "$WORK/dl/f" "$SHA256"
      timed raw ours 1000
      timed rawr ours 1000 --rate-limit 50
    done
    echo; echo "one file of $((RAW_SIZE / 1048576)) MiB, no cap (loopback)"
    row "curl -o" curlraw "$RAW_SIZE"
    row "curl -o; sync FILE" curlsync "$RAW_SIZE"
    row "curl | tee FILE | $SHA256; sync FILE" curlverify "$RAW_SIZE"
    row "civitai-dl (SHA-256, fsync, rename)" raw "$RAW_SIZE"
    row "  the same with --rate-limit 50" rawr "$RAW_SIZE"
    ratio raw curlraw; ratio raw curlsync; ratio raw curlverify
    ratio rawr curlraw; ratio rawr curlsync; ratio rawr curlverify
    ;;
  small)
    start_server 100 65536 "" 100
    ids=$(seq 1000 1099)
    for _ in $(seq 1 "$ROUNDS"); do
      # shellcheck disable=SC2016
      timed curl8 bash -c 'seq 0 99 | xargs -P8 -I{} bash -c '"'"'curl -s -o "$0/{}" "$(signed_url {})"'"'"' "$1"' _ "$WORK/dl"
      # shellcheck disable=SC2086
      timed smalldefault ours $ids
      # shellcheck disable=SC2086
      timed small8 ours $ids "${EXP[@]}" --rate-limit 100 --max-concurrent-api 8 --max-concurrent-downloads 8
    done
    echo; echo "100 models of 64 KiB, 100 ms per API answer"
    row "curl, 8 at a time (resolve + download)" curl8 $((100 * 65536))
    row "civitai-dl, default settings" smalldefault $((100 * 65536))
    row "civitai-dl --rate-limit 100, 8 at a time" small8 $((100 * 65536))
    ratio small8 curl8
    ;;
  *) echo "unknown workload $workload" >&2; exit 2 ;;
  esac
done
